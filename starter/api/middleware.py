"""ASGI middleware of the HTTP API: request ids, the body-size limit, security headers.

Pure ASGI (not ``BaseHTTPMiddleware``) so Server-Sent Events stream through unbuffered and the
body limit applies while the body is read, before it is all in memory.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import structlog
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from starter.api.problems import PROBLEM_JSON

log = structlog.get_logger("chorus.api")

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
"""A caller's request id is kept when it is 1-128 of these characters; otherwise a new one."""

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
API_CSP = b"default-src 'none'; frame-ancestors 'none'"
"""Content-Security-Policy of JSON and event-stream responses: they load nothing."""
PAGE_CSP = (
    b"default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    b"img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
"""Content-Security-Policy of the drafts page: its own script and style, no inline code."""
DOCS_CSP = (
    b"default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    b"style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; img-src 'self' data: "
    b"https://fastapi.tiangolo.com; frame-ancestors 'none'"
)
"""Content-Security-Policy of ``/docs`` and ``/redoc``: FastAPI's pages load Swagger UI and
ReDoc from jsDelivr and start them with an inline script."""


class ApiMiddleware:
    """Request id, access log line, body-size limit and security headers for every request.

    - ``X-Request-ID``: the caller's (when 1-128 of ``[A-Za-z0-9._:-]``) or a new UUID; bound
      to the structlog context of the request, returned on the response and put in problem
      documents.
    - Body limit: a ``Content-Length`` over ``max_body_bytes`` is refused with 413 before
      anything is read; a chunked body is counted as it arrives and refused the moment it
      passes the limit.
    - Security headers on every response; ``Cache-Control: no-store`` on API responses.

    Args:
        app: The wrapped ASGI app.
        max_body_bytes: ``CHORUS_API_MAX_BODY_BYTES``.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection (HTTP requests; others pass through)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        given = headers.get("x-request-id", "")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        path: str = scope["path"]
        started = time.perf_counter()
        status_seen: dict[str, int] = {"status": 0}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_seen["status"] = message["status"]
                raw = list(message.get("headers", []))
                names = {k.lower() for k, _ in raw}
                raw.append((b"x-request-id", request_id.encode()))
                raw.extend(h for h in SECURITY_HEADERS if h[0] not in names)
                if b"content-security-policy" not in names:
                    if path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
                        csp = DOCS_CSP
                    elif path.startswith("/drafts") or path.startswith("/static"):
                        csp = PAGE_CSP
                    else:
                        csp = API_CSP
                    raw.append((b"content-security-policy", csp))
                if path.startswith("/v1/") and b"cache-control" not in names:
                    raw.append((b"cache-control", b"no-store"))
                message = {**message, "headers": raw}
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            declared = headers.get("content-length")
            if declared is not None and (
                not declared.isdigit() or int(declared) > self.max_body_bytes
            ):
                await self._too_large(send_with_headers, path, request_id, declared)
                self._log(scope, 413, started)
                return
            received = 0

            async def limited_receive() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > self.max_body_bytes:
                        raise BodyTooLarge(
                            f"body: more than {self.max_body_bytes} bytes, the limit is "
                            f"{self.max_body_bytes} bytes (CHORUS_API_MAX_BODY_BYTES)"
                        )
                return message

            try:
                await self.app(scope, limited_receive, send_with_headers)
            except BodyTooLarge:
                if status_seen["status"] == 0:
                    await self._too_large(send_with_headers, path, request_id, f">{received}")
                    status_seen["status"] = 413
            self._log(scope, status_seen["status"], started)

    def _log(self, scope: Scope, status: int, started: float) -> None:
        log.info(
            "api.request",
            method=scope.get("method"),
            path=scope.get("path"),
            status=status,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )

    async def _too_large(self, send: Send, path: str, request_id: str, size: str) -> None:
        import json

        body: dict[str, Any] = {
            "type": "https://chorus.dev/problems/body-too-large",
            "title": "Request body too large",
            "status": 413,
            "detail": (
                f"body: {size} bytes, the limit is {self.max_body_bytes} bytes "
                "(CHORUS_API_MAX_BODY_BYTES)"
            ),
            "code": "BodyTooLarge",
            "instance": path,
            "request_id": request_id,
        }
        data = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", PROBLEM_JSON.encode()),
                    (b"content-length", str(len(data)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": data})


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes the limit (an HTTP 413).

    An ``HTTPException`` so FastAPI's body reader passes it on as it is (it turns other
    exceptions into a 400) and the problem handler answers 413.
    """

    def __init__(self, detail: str) -> None:
        super().__init__(413, detail)
