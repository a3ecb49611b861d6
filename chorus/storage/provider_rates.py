"""SQL of the fleet-wide provider limits: the GCRA rate table and the concurrency-slot locks.

The policy (limits, burst, how long to wait) is in :mod:`chorus.governance.provider_limits`;
these functions only run its statements.

- Requests per minute: one row per provider in ``llm_rate_limits`` (migration 0005) holding the
  theoretical arrival time (``tat``) of its next call, GCRA's virtual-scheduling form.
- Concurrency: slot ``n`` of a provider is the session advisory lock
  ``(hashtext('chorus.llm.<provider>'), n)``, held on one pooled connection.
"""

from __future__ import annotations

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from chorus.storage.db import clear_session_state, mark_session_state

# One statement per call. With T = 60 / rpm seconds between starts and tau = (burst - 1) * T of
# tolerance, a call arriving at `now` may start at max(now, tat - tau), and moves the
# theoretical arrival time to max(tat, now) + T; the WHERE refuses it (no row returned, tat
# unchanged) when that start is more than max_wait seconds away. clock_timestamp() is read
# after the row lock is taken, so concurrent workers are ordered by the database's clock.
_RESERVE_START = """
INSERT INTO llm_rate_limits AS r (provider, tat)
VALUES ($1, clock_timestamp() + make_interval(secs => $2::float8))
ON CONFLICT (provider) DO UPDATE
    SET tat = greatest(r.tat, clock_timestamp()) + make_interval(secs => $2::float8)
    WHERE r.tat - make_interval(secs => $3::float8)
        <= clock_timestamp() + make_interval(secs => $4::float8)
RETURNING greatest(0, extract(epoch FROM r.tat - clock_timestamp()) - $2::float8 - $3::float8)
    ::float8 AS wait_s
"""
# Seconds until a call arriving now would start without waiting.
_NEXT_START = """
SELECT greatest(0, extract(epoch FROM tat - clock_timestamp()) - $2::float8)::float8
FROM llm_rate_limits WHERE provider = $1
"""

# Tokens per minute give back what a call reserved and did not use: its theoretical arrival
# time moves back by the unused tokens' share (GCRA credit). A time already in the past stays
# harmless: the next reservation starts from max(tat, now).
_GIVE_BACK = """
UPDATE llm_rate_limits SET tat = tat - make_interval(secs => $2::float8) WHERE provider = $1
"""

_TRY_LOCK = "SELECT pg_try_advisory_lock(hashtext($1), $2)"
_UNLOCK = "SELECT pg_advisory_unlock(hashtext($1), $2)"


async def reserve_start(
    pool: asyncpg.Pool, provider: str, interval_s: float, tolerance_s: float, max_wait_s: float
) -> float | None:
    """Reserve the provider's next call start on the database clock (one GCRA step).

    Args:
        pool: Chorus's PostgreSQL pool.
        provider: Provider name (the row's key).
        interval_s: Seconds between starts, ``60 / rpm``.
        tolerance_s: Burst tolerance in seconds, ``(burst - 1) * interval_s``.
        max_wait_s: Longest wait accepted, in seconds.

    Returns:
        Seconds to sleep before the call may start, or ``None`` when the start would be more
        than ``max_wait_s`` away (nothing was reserved then).
    """
    wait_s = await pool.fetchval(_RESERVE_START, provider, interval_s, tolerance_s, max_wait_s)
    return None if wait_s is None else float(wait_s)


async def next_start(pool: asyncpg.Pool, provider: str, tolerance_s: float) -> float | None:
    """Seconds until a call to ``provider`` arriving now would start without waiting.

    Returns:
        The delay in seconds, or ``None`` when the provider has no row yet.
    """
    wait_s = await pool.fetchval(_NEXT_START, provider, tolerance_s)
    return None if wait_s is None else float(wait_s)


async def give_back(pool: asyncpg.Pool, key: str, seconds: float) -> None:
    """Move row ``key``'s theoretical arrival time back by ``seconds`` (unused reservation)."""
    await pool.execute(_GIVE_BACK, key, seconds)


def _slot_key(provider: str) -> str:
    return f"chorus.llm.{provider}"


async def try_lock_slot(conn: PoolConnectionProxy, provider: str, slot: int) -> bool:
    """Take concurrency slot ``slot`` of ``provider`` on ``conn``'s session, without waiting.

    Returns:
        Whether the slot was free (and is now held by this session).
    """
    mark_session_state(conn)  # back in the pool, the session's locks are dropped
    return bool(await conn.fetchval(_TRY_LOCK, _slot_key(provider), slot))


async def unlock_slot(conn: PoolConnectionProxy, provider: str, slot: int) -> None:
    """Give back concurrency slot ``slot`` of ``provider`` held on ``conn``'s session."""
    await conn.fetchval(_UNLOCK, _slot_key(provider), slot)


async def unlock_all_slots(conn: PoolConnectionProxy) -> None:
    """Give back every advisory lock of ``conn``'s session.

    That is the last slot it held, and any a cancelled :func:`try_lock_slot` may have taken
    unseen; the pool then skips its reset.
    """
    await conn.fetchval("SELECT pg_advisory_unlock_all()")
    clear_session_state(conn)
