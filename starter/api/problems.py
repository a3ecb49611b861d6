"""Errors as ``application/problem+json`` (RFC 9457), with the CLI's messages and error types.

Every error the API returns has the same shape::

    {"type": "https://chorus.dev/problems/invalid-input", "title": "Invalid input",
     "status": 422, "detail": "task: 40001 characters, the limit is 40000 (CHORUS_MAX_TASK_CHARS)",
     "code": "InvalidInput", "request_id": "6f1c...", "errors": [...]}

``detail`` is the message ``chorus`` prints for the same mistake (the SDK raises it; the CLI
and the API only present it), ``code`` the error-type string (:mod:`chorus.contracts.errors`:
``InvalidInput``, ``EditConflict``, ``GateRejected``...), and ``errors`` (validation failures
only) one entry per field with its location and message.

The mapping from exceptions to HTTP status codes:

======================================================  ======
exception                                               status
======================================================  ======
malformed JSON, a body that is not an object            400
:class:`ChorusInputError` (and catalog/agent errors),   422
request validation (wrong types, missing fields)
:class:`~starter.api.auth.Unauthenticated`              401
:class:`PermissionError`, a missing scope               403
:class:`LookupError` (no such run, draft, gate...)      404
:class:`~starter.sdk.DraftRefusedError`                 409 (403 for ``PermissionDenied``)
a request body over ``CHORUS_API_MAX_BODY_BYTES``       413
a per-key request rate                                  429 (with ``Retry-After``)
:class:`ChorusUnavailableError`, Temporal unreachable   503
======================================================  ======
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from chorus.contracts.errors import ChorusError, ChorusInputError, ChorusUnavailableError
from starter.sdk import DraftRefusedError

log = structlog.get_logger("chorus.api")

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://chorus.dev/problems/"
"""Prefix of each problem's ``type`` URI (an identifier, not a page that must resolve)."""


class ApiProblem(Exception):
    """An error the API returns as a problem document.

    Args:
        status: HTTP status code.
        code: Error-type string (``InvalidInput``, ``IdempotencyKeyReused``...).
        detail: Human-readable message naming the field and the limit or rule.
        headers: Extra response headers (``Retry-After``, ``WWW-Authenticate``).
        errors: Per-field validation errors.
    """

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}
        self.errors = errors


_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Invalid input",
    429: "Too many requests",
    500: "Internal error",
    503: "Service unavailable",
}


def _slug(code: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", code).lower()


def problem_response(
    request: Request | None,
    status: int,
    code: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> JSONResponse:
    """Build the ``application/problem+json`` response for one error.

    Args:
        request: The request (its ``request_id`` and path go in the body); ``None`` outside one.
        status: HTTP status code.
        code: Error-type string.
        detail: The message.
        headers: Extra headers.
        errors: Per-field validation errors.
    """
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + _slug(code),
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "code": code,
    }
    if request is not None:
        body["instance"] = request.url.path
        body["request_id"] = getattr(request.state, "request_id", None)
    if errors:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def _field(loc: Sequence[int | str]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def validation_errors(exc: RequestValidationError) -> tuple[str, list[dict[str, Any]]]:
    """The first error as a CLI-style message, and every error as ``{field, message}``."""
    errors: list[dict[str, Any]] = []
    for e in exc.errors():
        loc = tuple(e.get("loc", ()))
        if e.get("type") == "json_invalid":
            ctx = e.get("ctx") or {}
            return f"body: invalid JSON ({ctx.get('error', e.get('msg'))})", []
        errors.append(
            {"field": _field(loc), "message": str(e.get("msg", "")), "type": e.get("type")}
        )
    first = errors[0] if errors else {"field": "body", "message": "invalid"}
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{first['field']}: {first['message']}{more}", errors


def install(app: FastAPI) -> None:
    """Register the exception handlers that turn every error into a problem document."""

    @app.exception_handler(ApiProblem)
    async def _problem(request: Request, exc: ApiProblem) -> JSONResponse:
        return problem_response(
            request, exc.status, exc.code, exc.detail, headers=exc.headers, errors=exc.errors
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail, errors = validation_errors(exc)
        if detail.startswith("body: invalid JSON"):
            return problem_response(request, 400, "MalformedJson", detail)
        return problem_response(request, 422, "InvalidInput", detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "NotFound", 405: "MethodNotAllowed", 413: "BodyTooLarge"}.get(
            exc.status_code, "HttpError"
        )
        return problem_response(
            request, exc.status_code, code, str(exc.detail), headers=dict(exc.headers or {})
        )

    @app.exception_handler(DraftRefusedError)
    async def _draft_refused(request: Request, exc: DraftRefusedError) -> JSONResponse:
        status = {"PermissionDenied": 403, "Busy": 503}.get(exc.error_type, 409)
        return problem_response(request, status, exc.error_type, str(exc))

    @app.exception_handler(ChorusInputError)
    async def _input(request: Request, exc: ChorusInputError) -> JSONResponse:
        return problem_response(request, 422, exc.error_type, str(exc))

    @app.exception_handler(PermissionError)
    async def _forbidden(request: Request, exc: PermissionError) -> JSONResponse:
        return problem_response(request, 403, "PermissionDenied", str(exc))

    @app.exception_handler(LookupError)
    async def _missing(request: Request, exc: LookupError) -> JSONResponse:
        return problem_response(request, 404, "NotFound", str(exc.args[0] if exc.args else exc))

    @app.exception_handler(ChorusUnavailableError)
    async def _unavailable(request: Request, exc: ChorusUnavailableError) -> JSONResponse:
        return problem_response(request, 503, exc.error_type, str(exc))

    @app.exception_handler(ChorusError)
    async def _refused(request: Request, exc: ChorusError) -> JSONResponse:
        return problem_response(request, 409, exc.error_type, str(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("api.unhandled_error", path=request.url.path)
        return problem_response(
            request,
            500,
            "InternalError",
            f"internal error ({type(exc).__name__}); the request id is in the server's log",
        )
