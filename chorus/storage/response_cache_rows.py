"""SQL of the response cache: the ``llm_response_cache`` table (migration 0013).

What is cached and when is :mod:`activities.response_cache`'s business; these functions only
run its statements. Every lookup compares ``expires_at`` with the database clock, which every
worker shares, so an expired row is never returned whatever the workers' clocks say.
"""

from __future__ import annotations

from typing import Any

import asyncpg

SWEEP_BATCH = 100
"""Expired rows deleted by each store, at most (the index on ``expires_at`` finds them)."""

_LOOKUP = """
UPDATE llm_response_cache SET hits = hits + 1
WHERE key = $1 AND expires_at > clock_timestamp()
RETURNING completion
"""

# One round trip: a few expired rows go, then the new completion is stored (a later identical
# call that raced this one replaces it and restarts the TTL).
_STORE = f"""
WITH swept AS (
    DELETE FROM llm_response_cache WHERE key IN (
        SELECT key FROM llm_response_cache WHERE expires_at <= clock_timestamp()
        ORDER BY expires_at LIMIT {SWEEP_BATCH} FOR UPDATE SKIP LOCKED
    ) AND key <> $1
)
INSERT INTO llm_response_cache (key, provider, model, completion, expires_at)
VALUES ($1, $2, $3, $4, clock_timestamp() + make_interval(secs => $5::float8))
ON CONFLICT (key) DO UPDATE SET provider = EXCLUDED.provider, model = EXCLUDED.model,
    completion = EXCLUDED.completion, hits = 0, created_at = EXCLUDED.created_at,
    expires_at = EXCLUDED.expires_at
"""


async def lookup(pool: asyncpg.Pool, key: bytes) -> dict[str, Any] | None:
    """The completion stored under ``key`` if it has not expired (counting the hit), or ``None``.

    Raises:
        asyncpg.PostgresError, OSError: PostgreSQL did not answer (the caller treats it as a miss).
    """
    value = await pool.fetchval(_LOOKUP, key)
    return dict(value) if value is not None else None


async def store(
    pool: asyncpg.Pool,
    key: bytes,
    *,
    provider: str,
    model: str,
    completion: dict[str, Any],
    ttl_s: float,
) -> None:
    """Store ``completion`` under ``key`` for ``ttl_s`` seconds, sweeping a few expired rows.

    Args:
        pool: Chorus's PostgreSQL pool.
        key: SHA-256 digest of the request (32 bytes).
        provider: Provider that answered.
        model: Model the provider reported.
        completion: The completion as JSON (output, tool calls, usage).
        ttl_s: Time to live in seconds.

    Raises:
        asyncpg.PostgresError, OSError: PostgreSQL did not answer.
    """
    await pool.execute(_STORE, key, provider, model, completion, float(ttl_s))
