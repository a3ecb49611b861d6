"""The ``stream_events`` table: live events of runs for their readers (issue 16).

Written by the LLM activity's publisher (:mod:`chorus.streaming.publisher`) and by
``chorus.finish_run`` (through :func:`chorus.storage.db.record_run_finished`), read by
:mod:`chorus.streaming.reader`. The table and ``chorus_stream_append`` are created by
``migrations/0011_stream_events.sql``, which explains why every write goes through that function
or ``chorus_stream_write`` (its body, keeping the caller's synchronous commit: migration 0016):
per run, ids become visible in id order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import asyncpg

from chorus.storage.db import mark_session_state

STREAM_CHANNEL = "chorus_stream"
"""The ``LISTEN``/``NOTIFY`` channel; each notification's payload is a run id."""

STALE_FACTOR = 7
"""Rows of a run that never recorded ``run_finished`` are deleted after this many retention
periods (a run terminated from the Temporal CLI never runs ``chorus.finish_run``)."""

_COLUMNS = "id, run_id, workflow_id, step, agent, attempt, kind, text, created_at"


async def append(
    pool: asyncpg.Pool,
    *,
    run_id: str,
    workflow_id: str,
    step: str | None,
    agent: str | None,
    activity_id: str | None,
    attempt: int | None,
    kinds: Sequence[str],
    texts: Sequence[str],
) -> int:
    """Append events in order, then notify the run's readers; one round trip.

    Args:
        pool: PostgreSQL pool.
        run_id: Top-level workflow id.
        workflow_id: Workflow that made the LLM call (the run itself for ``run_finished``).
        step: The LLM call's key in the run (``None`` for run-level events).
        agent: Agent name (``None`` for run-level events).
        activity_id: Temporal activity id of the call (``None`` for run-level events).
        attempt: Activity attempt, from 1 (``None`` for run-level events).
        kinds: Event kinds, one per event (see the table's CHECK constraint).
        texts: Event texts, one per event.

    Returns:
        The id of the last event written.

    Raises:
        ValueError: ``kinds`` and ``texts`` differ in length, or are empty.
        asyncpg.PostgresError: The statement failed.
        OSError: PostgreSQL cannot be reached.
    """
    if len(kinds) != len(texts) or not kinds:
        raise ValueError("append needs as many texts as kinds, at least one")
    value = await pool.fetchval(
        "SELECT chorus_stream_append($1, $2, $3, $4, $5, $6, $7::text[], $8::text[])",
        run_id,
        workflow_id,
        step,
        agent,
        activity_id,
        attempt,
        list(kinds),
        list(texts),
    )
    return int(value)


async def events_after(
    pool: asyncpg.Pool, run_id: str, after_id: int, limit: int = 1000
) -> list[asyncpg.Record]:
    """A run's events with ``id > after_id``, oldest first, at most ``limit``.

    Each record has ``id, run_id, workflow_id, step, agent, attempt, kind, text, created_at``.

    Raises:
        asyncpg.PostgresError: The query failed.
        OSError: PostgreSQL cannot be reached.
    """
    rows: list[asyncpg.Record] = await pool.fetch(
        f"SELECT {_COLUMNS} FROM stream_events WHERE run_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        run_id,
        after_id,
        limit,
    )
    return rows


async def watch(pool: asyncpg.Pool, run_id: str, ttl: timedelta) -> int:
    """Mark ``run_id`` as read live for ``ttl``; return the id of its latest event (0: none).

    One round trip: the reader's position and its registration together. While a run is
    watched its LLM calls stream tokens (:func:`watched`).

    Raises:
        asyncpg.PostgresError: The statement failed.
        OSError: PostgreSQL cannot be reached.
    """
    value = await pool.fetchval(
        "WITH w AS (INSERT INTO stream_watchers (run_id, until) VALUES ($1, now() + $2) "
        "ON CONFLICT (run_id) DO UPDATE SET until = GREATEST(stream_watchers.until, "
        "EXCLUDED.until)) "
        "SELECT coalesce(max(id), 0) FROM stream_events WHERE run_id = $1",
        run_id,
        ttl,
    )
    return int(value)


async def watched(pool: asyncpg.Pool, run_id: str) -> bool:
    """Whether a reader watches ``run_id`` now (:func:`watch`).

    Raises:
        asyncpg.PostgresError: The query failed.
        OSError: PostgreSQL cannot be reached.
    """
    return bool(
        await pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM stream_watchers WHERE run_id = $1 AND until > now())",
            run_id,
        )
    )


async def last_id(pool: asyncpg.Pool, run_id: str) -> int:
    """The id of a run's latest event, 0 when it has none.

    Raises:
        asyncpg.PostgresError: The query failed.
        OSError: PostgreSQL cannot be reached.
    """
    value = await pool.fetchval(
        "SELECT coalesce(max(id), 0) FROM stream_events WHERE run_id = $1", run_id
    )
    return int(value)


async def delete_expired(pool: asyncpg.Pool, retention: timedelta) -> int:
    """Delete the events of runs that finished more than ``retention`` ago.

    Also deletes rows older than ``STALE_FACTOR`` x ``retention`` whatever their run (runs that
    never recorded ``run_finished``).

    Args:
        pool: PostgreSQL pool.
        retention: How long a finished run's events are kept (CHORUS_STREAM_RETENTION_HOURS).

    Returns:
        Rows deleted.

    Raises:
        asyncpg.PostgresError: The statement failed.
        OSError: PostgreSQL cannot be reached.
    """
    async with pool.acquire() as conn, conn.transaction():
        finished = await conn.execute(
            "DELETE FROM stream_events WHERE run_id IN (SELECT run_id FROM stream_events"
            " WHERE kind = 'run_finished' AND created_at <= now() - $1::interval)",
            retention,
        )
        stale = await conn.execute(
            "DELETE FROM stream_events WHERE created_at <= now() - $1::interval",
            retention * STALE_FACTOR,
        )
        await conn.execute("DELETE FROM stream_watchers WHERE until <= now()")
    return _count(finished) + _count(stale)


def _count(status: str) -> int:
    """Rows of a ``DELETE n`` command status."""
    return int(status.rsplit(" ", 1)[-1])


NotifyCallback = Callable[[Any, int, str, str], object]
"""asyncpg's listener signature: ``(connection, server pid, channel, payload)``."""


async def listen(conn: Any, callback: NotifyCallback) -> None:
    """``LISTEN`` on :data:`STREAM_CHANNEL` with ``conn``; ``callback`` gets each run id.

    Args:
        conn: A connection held for as long as the listening lasts (a pool's connection
            proxy or a plain ``asyncpg.Connection``).
        callback: Called in the event loop for each notification.

    Raises:
        asyncpg.PostgresError: The statement failed.
        OSError: PostgreSQL cannot be reached.
    """
    mark_session_state(conn)  # back in the pool, the session's LISTEN is dropped
    await conn.add_listener(STREAM_CHANNEL, callback)


async def unlisten(conn: Any, callback: NotifyCallback) -> None:
    """Stop a :func:`listen` (``UNLISTEN``); a broken connection is left as it is."""
    if not conn.is_closed():
        await conn.remove_listener(STREAM_CHANNEL, callback)


async def ping(conn: Any, timeout_s: float) -> None:
    """Check that ``conn`` still answers.

    Raises:
        TimeoutError: No answer in ``timeout_s`` seconds.
        asyncpg.PostgresError: The statement failed.
        OSError: The connection is gone.
    """
    await conn.fetchval("SELECT 1", timeout=timeout_s)
