"""Who is calling: API keys on every ``/v1`` request, scopes per endpoint, per-key rates.

A key arrives as ``Authorization: Bearer chorus_<id>_<secret>`` or ``X-API-Key:
chorus_<id>_<secret>``. :func:`chorus.governance.api_keys.authenticate` checks it against the
HMAC stored in PostgreSQL (constant-time); :func:`~chorus.governance.api_keys.require_scope`
checks the endpoint's scope; :func:`~chorus.governance.api_keys.admit_request` applies the
key's requests-per-minute limit with the fleet-wide GCRA table the provider limits use, so
every replica of ``chorus serve`` shares one count.

No key or a wrong/revoked key → 401 (``WWW-Authenticate: Bearer``); a key without the scope →
403; over its rate → 429 with ``Retry-After``. With ``CHORUS_API_AUTH=false`` (loopback
development servers only) every request acts as :data:`ANONYMOUS` with every scope.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import Request

from chorus.governance import api_keys
from starter.api.problems import ApiProblem


@dataclass(frozen=True)
class Caller:
    """The authenticated caller of one request.

    Attributes:
        key_id: The API key's public id (``None`` when auth is off).
        key_name: The key's name, recorded on every run it starts (``None`` when auth is off).
        scopes: The key's scopes.
    """

    key_id: str | None
    key_name: str | None
    scopes: frozenset[str]


ANONYMOUS = Caller(key_id=None, key_name=None, scopes=frozenset(api_keys.SCOPES))
"""The caller of every request when ``CHORUS_API_AUTH=false``."""


def presented_key(request: Request) -> str | None:
    """The key in ``Authorization: Bearer ...`` or ``X-API-Key``, if any."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    given = request.headers.get("x-api-key", "").strip()
    return given or None


def requires(scope: str) -> Callable[[Request], Awaitable[Caller]]:
    """A FastAPI dependency: authenticate the request and require ``scope``.

    Args:
        scope: One of :data:`chorus.governance.api_keys.SCOPES` (e.g. ``runs:write``).

    Raises:
        ApiProblem: 401 (no, malformed, unknown or revoked key), 403 (scope missing),
            429 (the key's requests per minute, with ``Retry-After`` in whole seconds).
    """
    if scope not in api_keys.SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    async def dependency(request: Request) -> Caller:
        state = request.app.state.chorus_api
        if not state.settings.api_auth:
            return ANONYMOUS
        key = presented_key(request)
        if key is None:
            raise ApiProblem(
                401,
                "Unauthenticated",
                "no API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>' "
                "(create one with `chorus keys create`)",
                headers={"WWW-Authenticate": 'Bearer realm="chorus"'},
            )
        pool = await state.chorus.pool()
        try:
            found = await api_keys.authenticate(pool, state.settings, key)
        except api_keys.ApiKeyInvalid as exc:
            raise ApiProblem(
                401,
                "Unauthenticated",
                str(exc),
                headers={"WWW-Authenticate": 'Bearer realm="chorus", error="invalid_token"'},
            ) from None
        try:
            api_keys.require_scope(found, scope)
        except api_keys.ApiKeyScopeError as exc:
            raise ApiProblem(403, "ScopeMissing", str(exc)) from None
        try:
            await api_keys.admit_request(pool, found)
        except api_keys.ApiKeyRateLimited as exc:
            raise ApiProblem(
                429,
                "RateLimited",
                str(exc),
                headers={"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))},
            ) from None
        caller = Caller(key_id=found.id, key_name=found.name, scopes=frozenset(found.scopes))
        request.state.caller = caller
        return caller

    return dependency
