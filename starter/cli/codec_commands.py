"""``chorus codec``: encrypted history's keys and the codec server."""

from __future__ import annotations

from typing import Annotated

import typer

from chorus.config.settings import get_settings
from chorus.observability.logs import configure_logging
from starter.cli.support import fail

codec_app = typer.Typer(
    help="Encrypted history: the payload codec's keys and codec server.", no_args_is_help=True
)


@codec_app.command("serve")
def codec_serve(
    port: Annotated[
        int | None, typer.Option(help="Port (default CHORUS_CODEC_SERVER_PORT, 8081).")
    ] = None,
    host: Annotated[
        str, typer.Option(help="Interface to bind; keep 127.0.0.1 unless behind a proxy.")
    ] = "127.0.0.1",
) -> None:
    """Serve /encode and /decode so the Temporal UI and CLI show encrypted payloads decoded."""
    from chorus.runtime.codec import CodecError
    from starter.codec_server import serve

    settings = get_settings()
    configure_logging(settings.log_level)
    try:
        serve(settings, host=host, port=port)
    except CodecError as exc:
        fail(str(exc))


@codec_app.command("keygen")
def codec_keygen(
    key_id: Annotated[str, typer.Option(help="Id stored in each payload's metadata.")] = "k1",
) -> None:
    """Print a new ``<id>:<base64 32-byte key>`` entry for CHORUS_CODEC_KEYS (first = active)."""
    from chorus.runtime.codec import generate_key

    typer.echo(f"{key_id}:{generate_key()}")
