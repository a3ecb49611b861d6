"""SQL of the ``api_keys`` table (migration 0010): issue, find, revoke and rotate API keys.

The policy (key format, hashing, scopes, limits, what a refusal says) is in
:mod:`chorus.governance.api_keys`; these functions only run its statements. Every function
returns ``asyncpg.Record`` rows with the columns of :data:`COLUMNS` plus, where noted,
``active`` (the key authenticates now, on the database clock) and ``touch_due`` (its
``last_used_at`` is unset or more than a minute old).
"""

from __future__ import annotations

from decimal import Decimal

import asyncpg

COLUMNS = (
    "id, name, scopes, budget_daily_usd, rpm, created_at, created_by, revoked_at, revoked_by,"
    " last_used_at, rotated_from"
)
"""Columns every function returns (never ``hash``, except :func:`key_for_auth`)."""

_ACTIVE = "(revoked_at IS NULL OR revoked_at > now())"
"""A key authenticates until its ``revoked_at`` (a rotation's overlap window ends then)."""

TOUCH_INTERVAL_S = 60
"""``last_used_at`` is written at most once per this many seconds per key."""
_TOUCH_DUE = (
    f"(last_used_at IS NULL OR last_used_at < now() - make_interval(secs => {TOUCH_INTERVAL_S}))"
)


class NameTakenError(Exception):
    """Another key that is not revoked already has this name."""


async def insert_key(
    pool: asyncpg.Pool,
    *,
    key_id: str,
    name: str,
    key_hash: bytes,
    scopes: list[str],
    budget_daily_usd: Decimal | None,
    rpm: int | None,
    created_by: str,
) -> asyncpg.Record:
    """Insert a new key row.

    Args:
        pool: Chorus's PostgreSQL pool.
        key_id: The key's public id (primary key).
        name: Its name (unique among keys not revoked).
        key_hash: HMAC-SHA256 of the whole key, 32 bytes.
        scopes: Granted scopes.
        budget_daily_usd: Daily budget in USD, or ``None``.
        rpm: Requests per minute, or ``None``.
        created_by: Who created it.

    Returns:
        The new row (:data:`COLUMNS`).

    Raises:
        NameTakenError: A key that is not revoked has this name.
    """
    try:
        row = await pool.fetchrow(
            "INSERT INTO api_keys (id, name, hash, scopes, budget_daily_usd, rpm, created_by)"
            f" VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}",
            key_id,
            name,
            key_hash,
            scopes,
            budget_daily_usd,
            rpm,
            created_by,
        )
    except asyncpg.UniqueViolationError as exc:
        raise NameTakenError(name) from exc
    assert row is not None
    return row


async def key_for_auth(pool: asyncpg.Pool, key_id: str) -> asyncpg.Record | None:
    """The row of ``key_id`` with its ``hash``, ``active`` and ``touch_due``; ``None`` if unknown.

    One indexed lookup by primary key: the one statement of every authentication.
    """
    return await pool.fetchrow(
        f"SELECT {COLUMNS}, hash, {_ACTIVE} AS active, {_TOUCH_DUE} AS touch_due"
        " FROM api_keys WHERE id = $1",
        key_id,
    )


async def touch(pool: asyncpg.Pool, key_id: str) -> None:
    """Set ``last_used_at`` to now unless it was set less than a minute ago (by any process)."""
    await pool.execute(
        f"UPDATE api_keys SET last_used_at = now() WHERE id = $1 AND {_TOUCH_DUE}",
        key_id,
    )


async def rehash(pool: asyncpg.Pool, key_id: str, old_hash: bytes, new_hash: bytes) -> None:
    """Replace a key's hash (made with a retired server secret) by one made with the current.

    Compare-and-set on ``old_hash``: a concurrent rehash or rotation is left alone.
    """
    await pool.execute(
        "UPDATE api_keys SET hash = $3 WHERE id = $1 AND hash = $2", key_id, old_hash, new_hash
    )


async def list_keys(pool: asyncpg.Pool, *, include_revoked: bool) -> list[asyncpg.Record]:
    """Keys by name, then newest first; only those that authenticate unless ``include_revoked``.

    Each row also has ``active``.
    """
    return await pool.fetch(
        f"SELECT {COLUMNS}, {_ACTIVE} AS active FROM api_keys"
        f" WHERE $1::boolean OR {_ACTIVE} ORDER BY name, created_at DESC",
        include_revoked,
    )


async def find_key(pool: asyncpg.Pool, name_or_id: str) -> asyncpg.Record | None:
    """The key with id ``name_or_id``, else the non-revoked key with that name; else ``None``.

    A key in a rotation's overlap window is found by its id only (its name belongs to the key
    that replaced it). The row also has ``active``.
    """
    return await pool.fetchrow(
        f"SELECT {COLUMNS}, {_ACTIVE} AS active FROM api_keys"
        " WHERE id = $1 OR (name = $1 AND revoked_at IS NULL)"
        " ORDER BY (id = $1) DESC LIMIT 1",
        name_or_id,
    )


async def revoke(pool: asyncpg.Pool, key_id: str, *, revoked_by: str) -> asyncpg.Record | None:
    """Revoke a key now (also one in a rotation's overlap window); ``None`` if unknown.

    A key already revoked in the past keeps its ``revoked_at`` and ``revoked_by``.
    """
    return await pool.fetchrow(
        "UPDATE api_keys SET revoked_at = now(), revoked_by = $2"
        f" WHERE id = $1 AND {_ACTIVE} RETURNING {COLUMNS}, false AS active",
        key_id,
        revoked_by,
    )


async def rotate(
    pool: asyncpg.Pool,
    *,
    old_id: str,
    new_id: str,
    new_hash: bytes,
    overlap_s: float,
    author: str,
) -> asyncpg.Record | None:
    """Replace a key not revoked by a new one with the same name, scopes and limits, atomically.

    The old key's ``revoked_at`` becomes now plus ``overlap_s`` seconds (it authenticates until
    then) in the same transaction that inserts the new key, which records ``rotated_from``.

    Args:
        pool: Chorus's PostgreSQL pool.
        old_id: Id of the key to replace (must not be revoked, overlap included).
        new_id: The new key's id.
        new_hash: HMAC-SHA256 of the new key.
        overlap_s: Seconds the old key keeps working (0: revoked at once).
        author: Who rotated it (``revoked_by`` of the old key, ``created_by`` of the new).

    Returns:
        The new key's row (:data:`COLUMNS`), or ``None`` when ``old_id`` is unknown, revoked
        or already rotated.
    """
    async with pool.acquire() as conn, conn.transaction():
        old = await conn.fetchrow(
            "UPDATE api_keys SET revoked_at = now() + make_interval(secs => $2::float8),"
            " revoked_by = $3 WHERE id = $1 AND revoked_at IS NULL"
            " RETURNING name, scopes, budget_daily_usd, rpm",
            old_id,
            overlap_s,
            author,
        )
        if old is None:
            return None
        new: asyncpg.Record | None = await conn.fetchrow(
            "INSERT INTO api_keys (id, name, hash, scopes, budget_daily_usd, rpm, created_by,"
            f" rotated_from) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {COLUMNS}",
            new_id,
            old["name"],
            new_hash,
            old["scopes"],
            old["budget_daily_usd"],
            old["rpm"],
            author,
            old_id,
        )
        return new


async def key_budgets(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    """``name`` and ``budget_daily_usd`` (USD, ``Decimal``) of every non-revoked key with one."""
    return await pool.fetch(
        "SELECT name, budget_daily_usd FROM api_keys"
        " WHERE revoked_at IS NULL AND budget_daily_usd IS NOT NULL ORDER BY name"
    )
