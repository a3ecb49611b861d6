"""``chorus serve``: the HTTP API (:mod:`starter.api`) under uvicorn."""

from __future__ import annotations

import ipaddress
from typing import Annotated

import typer

from chorus.config.settings import get_settings
from chorus.observability.logs import configure_logging
from starter.cli.support import fail


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    host: Annotated[
        str | None, typer.Option(help="Interface to bind (default CHORUS_API_HOST, 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default CHORUS_API_PORT, 8000).")] = None,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Processes (the API is stateless; each has a pool).")
    ] = 1,
    keep_alive_s: Annotated[
        int,
        typer.Option(
            min=1,
            help="Seconds an idle keep-alive connection stays open; keep it above the idle "
            "timeout of any load balancer in front (AWS ALB: 60), or clients reusing a "
            "connection the server just closed see reset requests.",
        ),
    ] = 75,
) -> None:
    """Serve the HTTP API: /v1 (runs, drafts, approvals, costs, agents), /docs, /drafts/{id}."""
    import uvicorn

    settings = get_settings()
    configure_logging(settings.log_level)
    host = host or settings.api_host
    port = port or settings.api_port
    if not settings.api_auth and not _loopback(host):
        fail(
            f"CHORUS_API_AUTH=false serves every request without a key: bind it to a loopback "
            f"address only, not {host}"
        )
    if settings.api_auth:
        from chorus.governance import api_keys

        try:
            api_keys.server_secrets(settings)  # fail now, not on the first request
        except api_keys.ApiKeySecretMissing as exc:
            fail(str(exc))
    if workers > 1:
        uvicorn.run(
            "starter.api:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_config=None,
            proxy_headers=True,
            timeout_keep_alive=keep_alive_s,
        )
        return
    from starter.api import build_app

    uvicorn.run(
        build_app(settings),
        host=host,
        port=port,
        log_config=None,
        proxy_headers=True,
        timeout_keep_alive=keep_alive_s,
    )
