"""Codec server: lets the Temporal UI and CLI show encrypted Chorus payloads decoded.

It implements the Temporal codec server protocol (docs.temporal.io, "Codec Server"):
``POST /encode`` and ``POST /decode`` take and return ``{"payloads": [{"metadata": {name:
base64}, "data": base64}]}`` (the protobuf JSON form of ``temporal.api.common.v1.Payloads``),
running them through :class:`chorus.runtime.codec.EncryptionCodec` with the keys in
``CHORUS_CODEC_KEYS``. Ported from temporalio/samples-python ``encryption/codec_server.py``
(aiohttp) to Starlette.

The browser calls it directly from the UI's origin, so CORS allows only
``CHORUS_CODEC_SERVER_CORS_ORIGINS``, with credentials and the ``X-Namespace`` and
``Authorization`` headers the UI sends. With ``CHORUS_CODEC_SERVER_TOKEN`` set, ``/encode`` and
``/decode`` require ``Authorization: Bearer <token>`` (the CLI's ``--codec-auth``). Anyone who can
call ``/decode`` can read every run, so bind it to localhost or put it behind your SSO proxy.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence

import structlog
import uvicorn
from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from temporalio.api.common.v1 import Payload, Payloads

from chorus.config.settings import Settings
from chorus.runtime.codec import KEYS_ENV, CodecError, EncryptionCodec

log = structlog.get_logger("chorus.codec_server")

ALLOWED_HEADERS = ("Content-Type", "X-Namespace", "Authorization")
"""Request headers the Temporal UI sends to a codec server."""

_Transform = Callable[[Sequence[Payload]], Awaitable[list[Payload]]]


def _origins(settings: Settings) -> list[str]:
    return [
        o.strip().rstrip("/") for o in settings.codec_server_cors_origins.split(",") if o.strip()
    ]


def build_app(settings: Settings) -> Starlette:
    """Build the codec server's ASGI app.

    Args:
        settings: ``codec_keys`` (required), ``codec_server_cors_origins`` and
            ``codec_server_token`` are read.

    Returns:
        A Starlette app serving ``POST /encode``, ``POST /decode`` and ``GET /healthz``.

    Raises:
        chorus.runtime.codec.CodecError: ``CHORUS_CODEC_KEYS`` is unset or malformed.

    """
    spec = settings.codec_keys.get_secret_value().strip() if settings.codec_keys else ""
    if not spec:
        raise CodecError(f"{KEYS_ENV} is not set: the codec server has no key to decode with")
    codec = EncryptionCodec.from_spec(spec)
    token = settings.codec_server_token.get_secret_value() if settings.codec_server_token else ""
    expected = f"Bearer {token}".encode()

    def authorized(request: Request) -> bool:
        if not token:
            return True
        return hmac.compare_digest(request.headers.get("authorization", "").encode(), expected)

    async def apply(request: Request, transform: _Transform) -> Response:
        if not authorized(request):
            log.warning("codec request rejected", path=request.url.path, reason="bad token")
            return JSONResponse(
                {"error": "missing or wrong bearer token"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        try:
            payloads = json_format.Parse(
                await request.body(), Payloads(), ignore_unknown_fields=True
            )
        except json_format.ParseError:
            return JSONResponse(
                {"error": 'body must be {"payloads": [{"metadata": {...}, "data": "<base64>"}]}'},
                status_code=400,
            )
        try:
            result = await transform(payloads.payloads)
        except CodecError as exc:
            # Messages name key ids and the failed rule only, never keys or payload contents.
            log.warning("codec request failed", path=request.url.path, error=str(exc))
            return JSONResponse({"error": str(exc)}, status_code=400)
        # Built by hand so an empty batch is {"payloads": []}, not {} (MessageToJson drops it).
        return JSONResponse({"payloads": [json_format.MessageToDict(p) for p in result]})

    async def encode(request: Request) -> Response:
        return await apply(request, codec.encode)

    async def decode(request: Request) -> Response:
        return await apply(request, codec.decode)

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/encode", encode, methods=["POST"]),
            Route("/decode", decode, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        middleware=[
            Middleware(
                CORSMiddleware,
                allow_origins=_origins(settings),
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=ALLOWED_HEADERS,
                # The UI's "Include cross-origin credentials" option sends cookies.
                allow_credentials=True,
                # A hosted UI (public origin) calling a codec server on localhost sends a Private
                # Network Access preflight; still limited to the allowed origins above.
                allow_private_network=True,
            )
        ],
    )


def serve(settings: Settings, host: str = "127.0.0.1", port: int | None = None) -> None:
    """Run the codec server in the foreground with uvicorn until Ctrl-C/SIGTERM.

    Logging is left to the caller (``chorus.observability.logs.configure_logging``): uvicorn's own
    log
    configuration is disabled so its lines go through the JSON bridge. Access lines carry the
    path and status only, never bodies or headers.

    Args:
        settings: See :func:`build_app`.
        host: Interface to bind; the default keeps it on this machine.
        port: TCP port; default ``settings.codec_server_port`` (``CHORUS_CODEC_SERVER_PORT``).

    Raises:
        chorus.runtime.codec.CodecError: ``CHORUS_CODEC_KEYS`` is unset or malformed.

    """
    app = build_app(settings)
    port = port or settings.codec_server_port
    log.info(
        "codec server starting",
        url=f"http://{host}:{port}",
        cors_origins=_origins(settings),
        token_required=bool(
            settings.codec_server_token and settings.codec_server_token.get_secret_value()
        ),
    )
    uvicorn.run(app, host=host, port=port, log_config=None)
