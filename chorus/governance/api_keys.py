"""API keys of the HTTP API: issue, check, limit, revoke and rotate them (issue 16).

**Format.** ``chorus_<id>_<secret>``: ``id`` is 16 lower-case hex characters (64 random bits,
public: it names the row, like an access key id), ``secret`` 64 hex characters (256 bits from
:mod:`secrets`). Hex keeps the key one double-click-selectable word with no ``_`` inside the
parts, so it splits unambiguously. The key is printed once, at creation or rotation.

**Hashing.** PostgreSQL stores only ``HMAC-SHA256(server secret, key)`` (32 bytes), where the
server secret is ``CHORUS_API_KEY_SECRET``. Why HMAC and not argon2/scrypt: those are slow on
purpose so that a low-entropy *password* resists guessing once its hash leaks, but a 256-bit
random secret cannot be guessed at any speed, so a slow hash would buy nothing and cost ~50-100
ms of CPU on every request (argon2id at OWASP's recommended parameters). The keyed hash still
means a dump of the database alone cannot check a single guess: the server secret lives in the
environment, not in PostgreSQL. Verification is one primary-key lookup by ``id`` and
:func:`hmac.compare_digest` of the hashes (constant time); an unknown id is compared against a
dummy hash, so unknown id, wrong secret, revoked key and malformed key take the same path to
one message, "invalid or revoked API key" (no oracle). Several server secrets may be given,
comma-separated, newest first: keys hashed with an older one still authenticate and are
re-hashed with the newest on their next use, so the server secret can be rotated without
re-issuing keys (drop the old one once ``last_used_at`` of every key is past the change).

**Scopes.** :data:`SCOPES`; a key holds a subset, checked per endpoint by :func:`require_scope`.
No scope implies another.

**Limits.** ``rpm``: requests per minute, the same fleet-wide GCRA statement as the provider
limits (:mod:`chorus.governance.provider_limits`, row ``apikey:<id>`` of ``llm_rate_limits``),
with a burst of :data:`BURST_SECONDS` seconds' worth of requests, refusing (with the seconds to
wait) instead of waiting. ``budget_daily_usd``: a ``key:<name>`` budget in
:mod:`chorus.governance.budget`, reserved by every priced LLM call of the runs the key started,
per UTC day, across every worker; it follows the name, so rotation keeps the day's spend.

**Rotation.** :func:`rotate_key` issues a new id and secret with the same name, scopes and
limits and revokes the old key in the same transaction; with ``overlap_s`` the old key keeps
working that many seconds (at most :data:`MAX_OVERLAP_S`), so clients can switch without a
failed request. The default is no overlap.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import math
import os
import re
import secrets
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Final

import asyncpg
from pydantic import BaseModel

from chorus.config.settings import Settings
from chorus.contracts.errors import ChorusInputError, ChorusRefusedError, ChorusUnavailableError
from chorus.contracts.models import API_KEY_NAME_PATTERN
from chorus.storage import api_key_rows, provider_rates

SCOPES: Final[dict[str, str]] = {
    "runs:read": "read runs: status, progress, results, transcripts, the list of runs",
    "runs:write": "start and cancel runs (runs started this way record the key's name)",
    "drafts:read": "read drafts and their saved revisions",
    "drafts:edit": "start drafts and edit, comment on or close them",
    "approvals:decide": "list the gates waiting for a decision and approve, reject or edit them",
    "costs:read": "read the cost ledger and today's standing against every budget",
    "agents:read": "read the agent catalog and its versions",
    "keys:admin": "create, list, revoke and rotate API keys",
}
"""Every scope a key may hold, with what it grants (the HTTP API checks one per endpoint)."""

KEY_PREFIX: Final = "chorus"
ID_HEX_CHARS: Final = 16
"""Hex characters of a key id (64 random bits: unique, not secret)."""
SECRET_BYTES: Final = 32
"""Random bytes of a key's secret (256 bits), written as 64 hex characters."""
MIN_SERVER_SECRET_CHARS: Final = 32
"""Shortest ``CHORUS_API_KEY_SECRET`` accepted (``secrets.token_urlsafe(32)`` gives 43)."""
MAX_BUDGET_USD: Final = 99_999_999.0
"""Largest daily budget a key may have (the column is ``numeric(14, 6)``)."""
MAX_RPM: Final = 1_000_000
"""Largest ``rpm`` a key may have."""
BURST_SECONDS: Final = 10.0
"""A key idle for a while may send this many seconds' worth of requests at once
(``ceil(rpm * BURST_SECONDS / 60)``, at least 1); sustained, ``rpm`` per minute. A client that
starts a run and reads it back at once must not be refused by a one-request burst."""
MAX_OVERLAP_S: Final = 86_400.0
"""Longest overlap window of a rotation, in seconds (one day)."""
DEV_SECRET_FILE: Final = "api-key-secret"
"""File name of the generated development secret in ``<data dir>/run`` (see
:func:`ensure_dev_secret`)."""

_KEY_RE = re.compile(
    rf"^{KEY_PREFIX}_(?P<id>[0-9a-f]{{{ID_HEX_CHARS}}})_(?P<secret>[0-9a-f]{{{SECRET_BYTES * 2}}})$"
)
_INVALID = "invalid or revoked API key"
_DUMMY_HASH = bytes(32)


class ApiKey(BaseModel):
    """An API key as Chorus shows it: never its secret or its hash.

    Attributes:
        id: Public id (the ``<id>`` of ``chorus_<id>_<secret>``).
        name: Name, unique among keys not revoked; what runs and budgets record.
        scopes: Granted scopes (:data:`SCOPES`).
        budget_daily_usd: Daily budget in USD (UTC day) of the LLM calls of runs it starts.
        rpm: Requests per minute across the fleet, or ``None`` for no limit.
        created_at: When it was issued.
        created_by: Who issued it.
        revoked_at: When it stopped (or, in a rotation's overlap window, will stop) working.
        last_used_at: Last successful authentication, to the minute.
        rotated_from: Id of the key this one replaced, if it came from a rotation.
    """

    id: str
    name: str
    scopes: list[str]
    budget_daily_usd: float | None = None
    rpm: int | None = None
    created_at: datetime
    created_by: str
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None
    rotated_from: str | None = None


class ApiKeyInvalid(ChorusRefusedError):
    """The presented key is unknown, malformed, wrong or revoked (one message for all: HTTP 401)."""

    error_type = "ApiKeyInvalid"

    def __init__(self) -> None:
        super().__init__(_INVALID)


class ApiKeyScopeError(ChorusRefusedError):
    """The key lacks the scope an operation needs (HTTP 403).

    Attributes:
        scope: The missing scope.
    """

    error_type = "ApiKeyScope"

    def __init__(self, key: ApiKey, scope: str) -> None:
        self.scope = scope
        super().__init__(
            f"API key {key.name!r} lacks the scope {scope!r} (it has: {', '.join(key.scopes)})"
        )


class ApiKeyRateLimited(ChorusRefusedError):
    """The key sent more requests than its ``rpm`` allows (HTTP 429).

    Attributes:
        retry_after_s: Seconds until a request would be admitted (for ``Retry-After``).
    """

    error_type = "ApiKeyRateLimited"

    def __init__(self, key: ApiKey, retry_after_s: float) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(
            f"API key {key.name!r}: more than {key.rpm} requests per minute; retry in "
            f"{retry_after_s:.1f} s"
        )


class ApiKeyNotFound(ChorusInputError, LookupError):
    """No key that is not revoked has that name or id (revoke, rotate)."""


class ApiKeySecretMissing(ChorusUnavailableError):
    """``CHORUS_API_KEY_SECRET`` is not set (nor a development one written), or is too short."""


# --- The server secret ---------------------------------------------------------------------


def dev_secret_file(settings: Settings) -> Path:
    """Where ``chorus dev up`` keeps the development server secret: ``<data dir>/run/...``."""
    return settings.data_dir / "run" / DEV_SECRET_FILE


def ensure_dev_secret(path: Path) -> str:
    """Return the development server secret kept in ``path``, creating it on first use.

    For ``chorus dev up``: the file is created with mode 0600 (exclusively, so two processes
    agree on one secret) holding ``secrets.token_urlsafe(32)`` (256 bits). Processes whose
    ``CHORUS_API_KEY_SECRET`` is unset use the file at :func:`dev_secret_file`.

    Args:
        path: The file (its directory is created).

    Returns:
        The secret (43 URL-safe characters when generated here).

    Raises:
        OSError: The file cannot be read or written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        existing = path.read_text(encoding="utf-8").strip()
        if existing:
            return existing
    secret = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="utf-8").strip()
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secret + "\n")
    return secret


def server_secrets(settings: Settings) -> list[bytes]:
    """The server secrets keys are hashed with, newest first.

    ``CHORUS_API_KEY_SECRET`` (comma-separated), else the development file of
    :func:`dev_secret_file`.

    Raises:
        ApiKeySecretMissing: Neither is set, or a secret is shorter than
            :data:`MIN_SERVER_SECRET_CHARS` characters; the message names the variable.
    """
    if settings.api_key_secret is not None:
        raw = settings.api_key_secret.get_secret_value()
        source = "CHORUS_API_KEY_SECRET"
    else:
        try:
            raw = dev_secret_file(settings).read_text(encoding="utf-8")
        except OSError:
            raise ApiKeySecretMissing(
                "CHORUS_API_KEY_SECRET is not set: API keys cannot be created or checked "
                "without the server secret they are hashed with; set it to a random string "
                f"of at least {MIN_SERVER_SECRET_CHARS} characters (python -c 'import secrets;"
                " print(secrets.token_urlsafe(32))'), the same on every process that creates "
                "or checks keys"
            ) from None
        source = f"CHORUS_API_KEY_SECRET (unset; read from {dev_secret_file(settings)})"
    found = [part.strip() for part in raw.split(",") if part.strip()]
    if not found or any(len(part) < MIN_SERVER_SECRET_CHARS for part in found):
        raise ApiKeySecretMissing(
            f"{source}: every secret must have at least {MIN_SERVER_SECRET_CHARS} characters"
        )
    return [part.encode("utf-8") for part in found]


def _hash(secret: bytes, key: str) -> bytes:
    """HMAC-SHA256 of the whole key (id included, so a hash cannot move to another row)."""
    return hmac.new(secret, key.encode("ascii"), hashlib.sha256).digest()


# --- Issuing, listing, revoking, rotating --------------------------------------------------


def _new_key() -> tuple[str, str]:
    key_id = secrets.token_hex(ID_HEX_CHARS // 2)
    return key_id, f"{KEY_PREFIX}_{key_id}_{secrets.token_hex(SECRET_BYTES)}"


def _to_model(row: asyncpg.Record) -> ApiKey:
    budget = row["budget_daily_usd"]
    return ApiKey(
        id=row["id"],
        name=row["name"],
        scopes=list(row["scopes"]),
        budget_daily_usd=float(budget) if budget is not None else None,
        rpm=row["rpm"],
        created_at=row["created_at"],
        created_by=row["created_by"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
        rotated_from=row["rotated_from"],
    )


def check_key_fields(
    *, name: str, scopes: Sequence[str], budget_daily_usd: float | None, rpm: int | None
) -> list[str]:
    """Validate a new key's fields; return the scopes, deduplicated, in :data:`SCOPES` order.

    Raises:
        ChorusInputError: The message names the field and the rule: ``name`` must match
            :data:`~chorus.contracts.models.API_KEY_NAME_PATTERN`; ``scopes`` must be a
            non-empty subset of :data:`SCOPES`; ``budget_daily_usd`` between 0 and
            :data:`MAX_BUDGET_USD`; ``rpm`` between 1 and :data:`MAX_RPM`.
    """
    if not re.fullmatch(API_KEY_NAME_PATTERN, name):
        raise ChorusInputError(
            f"name: {name!r} must match {API_KEY_NAME_PATTERN} (a lower-case letter, then up "
            "to 63 lower-case letters, digits, '_' or '-')"
        )
    wanted = [s.strip() for s in scopes if s.strip()]
    unknown = [s for s in wanted if s not in SCOPES]
    if unknown:
        raise ChorusInputError(
            f"scopes: unknown scope(s) {', '.join(map(repr, unknown))}; known: {', '.join(SCOPES)}"
        )
    if not wanted:
        raise ChorusInputError(f"scopes: give at least one of {', '.join(SCOPES)}")
    if budget_daily_usd is not None and not (
        math.isfinite(budget_daily_usd) and 0 <= budget_daily_usd <= MAX_BUDGET_USD
    ):
        raise ChorusInputError(
            f"budget_daily_usd: must be between 0 and {MAX_BUDGET_USD:.0f} USD, "
            f"got {budget_daily_usd}"
        )
    if rpm is not None and not 1 <= rpm <= MAX_RPM:
        raise ChorusInputError(f"rpm: must be between 1 and {MAX_RPM}, got {rpm}")
    return [s for s in SCOPES if s in wanted]


async def create_key(
    pool: asyncpg.Pool,
    settings: Settings,
    *,
    name: str,
    scopes: Sequence[str],
    budget_daily_usd: float | None = None,
    rpm: int | None = None,
    author: str,
) -> tuple[ApiKey, str]:
    """Issue a new key.

    Args:
        pool: Chorus's PostgreSQL pool.
        settings: The server secret (``CHORUS_API_KEY_SECRET``).
        name: Unique among keys not revoked (:data:`~chorus.contracts.models.API_KEY_NAME_PATTERN`).
        scopes: Scopes to grant (a subset of :data:`SCOPES`).
        budget_daily_usd: Daily budget in USD of the LLM calls of runs it starts (UTC day).
        rpm: Requests per minute across the fleet (``None``: no limit).
        author: Who issued it (recorded).

    Returns:
        The key's record and the key itself (``chorus_<id>_<secret>``): the only time it is
        ever returned.

    Raises:
        ChorusInputError: A field breaks its rule (see :func:`check_key_fields`), or a key
            that is not revoked already has this name.
        ApiKeySecretMissing: No server secret is configured.
    """
    granted = check_key_fields(name=name, scopes=scopes, budget_daily_usd=budget_daily_usd, rpm=rpm)
    secret = server_secrets(settings)[0]
    key_id, plaintext = _new_key()
    try:
        row = await api_key_rows.insert_key(
            pool,
            key_id=key_id,
            name=name,
            key_hash=_hash(secret, plaintext),
            scopes=granted,
            budget_daily_usd=None if budget_daily_usd is None else Decimal(str(budget_daily_usd)),
            rpm=rpm,
            created_by=author,
        )
    except api_key_rows.NameTakenError:
        raise ChorusInputError(
            f"name: an API key named {name!r} already exists; revoke or rotate it, or choose "
            "another name"
        ) from None
    return _to_model(row), plaintext


async def list_keys(pool: asyncpg.Pool, include_revoked: bool = False) -> list[ApiKey]:
    """Keys by name, newest first within a name; revoked ones only with ``include_revoked``.

    A key in a rotation's overlap window still authenticates, so it is listed.
    """
    rows = await api_key_rows.list_keys(pool, include_revoked=include_revoked)
    return [_to_model(r) for r in rows]


async def _find(pool: asyncpg.Pool, name_or_id: str) -> asyncpg.Record:
    row = await api_key_rows.find_key(pool, name_or_id)
    if row is None or not row["active"]:
        raise ApiKeyNotFound(f"no API key named {name_or_id!r} (or with that id) is active")
    return row


async def revoke_key(pool: asyncpg.Pool, name_or_id: str, *, author: str) -> ApiKey:
    """Revoke a key at once: its next request gets "invalid or revoked API key".

    Runs it started go on (their LLM calls still count against its budget).

    Args:
        pool: Chorus's PostgreSQL pool.
        name_or_id: The key's name, or its id (a key in a rotation's overlap window is
            revoked by its id; its name belongs to its successor).
        author: Who revoked it (recorded).

    Raises:
        ApiKeyNotFound: No active key has that name or id.
    """
    row = await _find(pool, name_or_id)
    revoked = await api_key_rows.revoke(pool, row["id"], revoked_by=author)
    if revoked is None:  # revoked meanwhile by another caller
        raise ApiKeyNotFound(f"no API key named {name_or_id!r} (or with that id) is active")
    return _to_model(revoked)


async def rotate_key(
    pool: asyncpg.Pool,
    settings: Settings,
    name_or_id: str,
    *,
    author: str,
    overlap_s: float = 0.0,
) -> tuple[ApiKey, str]:
    """Replace a key by a new id and secret with the same name, scopes and limits.

    One transaction revokes the old key and issues the new one, which records
    ``rotated_from``. The daily budget follows the name, so the day's spend carries over.

    Args:
        pool: Chorus's PostgreSQL pool.
        settings: The server secret.
        name_or_id: The key to replace, by name or id.
        author: Who rotated it (recorded).
        overlap_s: Seconds the old key keeps working (0, the default: revoked at once; at
            most :data:`MAX_OVERLAP_S`).

    Returns:
        The new key's record and the new key, returned only this once.

    Raises:
        ApiKeyNotFound: No active, not yet rotated key has that name or id.
        ChorusInputError: ``overlap_s`` out of range.
        ApiKeySecretMissing: No server secret is configured.
    """
    if not (math.isfinite(overlap_s) and 0 <= overlap_s <= MAX_OVERLAP_S):
        raise ChorusInputError(
            f"overlap_s: must be between 0 and {MAX_OVERLAP_S:.0f} seconds, got {overlap_s}"
        )
    secret = server_secrets(settings)[0]
    row = await _find(pool, name_or_id)
    key_id, plaintext = _new_key()
    new = await api_key_rows.rotate(
        pool,
        old_id=row["id"],
        new_id=key_id,
        new_hash=_hash(secret, plaintext),
        overlap_s=overlap_s,
        author=author,
    )
    if new is None:
        raise ApiKeyNotFound(
            f"API key {name_or_id!r} is being revoked or was already rotated; rotate the key "
            "that replaced it"
        )
    return _to_model(new), plaintext


# --- Checking a request --------------------------------------------------------------------


async def authenticate(pool: asyncpg.Pool, settings: Settings, presented: str) -> ApiKey:
    """Check a presented key; return its record.

    One primary-key lookup; the hash comparison is :func:`hmac.compare_digest` (constant
    time). ``last_used_at`` is written at most once a minute per key, fleet-wide.

    Args:
        pool: Chorus's PostgreSQL pool.
        settings: The server secret(s).
        presented: The key as the client sent it (``chorus_<id>_<secret>``).

    Raises:
        ApiKeyInvalid: Malformed, unknown id, wrong secret or revoked: one message for all.
        ApiKeySecretMissing: No server secret is configured.
    """
    secrets_ = server_secrets(settings)
    match = _KEY_RE.fullmatch(presented.strip())
    if match is None:
        raise ApiKeyInvalid
    key = match.group(0)
    row = await api_key_rows.key_for_auth(pool, match.group("id"))
    stored = bytes(row["hash"]) if row is not None else _DUMMY_HASH
    matched = [hmac.compare_digest(_hash(s, key), stored) for s in secrets_]
    if row is None or not row["active"] or not any(matched):
        raise ApiKeyInvalid
    if not matched[0]:  # hashed with a retired server secret: re-hash with the newest
        await api_key_rows.rehash(pool, row["id"], stored, _hash(secrets_[0], key))
    if row["touch_due"]:
        await api_key_rows.touch(pool, row["id"])
    return _to_model(row)


def require_scope(key: ApiKey, scope: str) -> None:
    """Refuse an operation the key has no scope for.

    Args:
        key: An authenticated key.
        scope: The scope the operation needs (one of :data:`SCOPES`).

    Raises:
        ApiKeyScopeError: The key lacks ``scope`` (the message names it).
        ValueError: ``scope`` is not one of :data:`SCOPES` (a programming error).
    """
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; known: {', '.join(SCOPES)}")
    if scope not in key.scopes:
        raise ApiKeyScopeError(key, scope)


def rate_row(key: ApiKey) -> str:
    """The key's row in the fleet-wide rate table (``llm_rate_limits``): ``apikey:<id>``."""
    return f"apikey:{key.id}"


def burst(rpm: int) -> int:
    """Requests a key with ``rpm`` may send at once after idling (:data:`BURST_SECONDS`)."""
    return max(1, math.ceil(rpm * BURST_SECONDS / 60))


async def admit_request(pool: asyncpg.Pool, key: ApiKey) -> None:
    """Count one request against the key's ``rpm`` across the fleet, or refuse it.

    The GCRA statement of the provider limits (:mod:`chorus.storage.provider_rates`) on the
    row :func:`rate_row`, with zero accepted wait: a request over the rate is refused, never
    delayed, and refusals count nothing. Keys without ``rpm`` run no query.

    Raises:
        ApiKeyRateLimited: Over the rate; ``retry_after_s`` says when a request would pass.
    """
    if key.rpm is None:
        return
    interval_s = 60.0 / key.rpm
    tolerance_s = (burst(key.rpm) - 1) * interval_s
    row = rate_row(key)
    wait_s = await provider_rates.reserve_start(pool, row, interval_s, tolerance_s, 0.0)
    if wait_s is not None:
        return
    retry_after_s = await provider_rates.next_start(pool, row, tolerance_s)
    raise ApiKeyRateLimited(key, max(retry_after_s or 0.0, 0.001))
