"""SQL of the budget ledger: limits, spend per period and reservations of paid LLM calls.

Tables: ``budgets`` (limits), ``budget_spend`` (spent and reserved USD per period) and
``budget_reservations`` (one row per paid call).

The policy (what to reserve, which periods a call counts against, what a refusal means) is in
:mod:`chorus.governance.budget`; these functions only run its statements. Every statement that
changes ``budget_spend`` locks the period rows in period order first (:func:`lock_periods`, or
the same order inside ``chorus_budget_reserve``/``chorus_budget_settle``, migration 0006), the
one order every transaction uses, so concurrent reserves, settles and releases never deadlock.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

Conn = asyncpg.Connection | PoolConnectionProxy
"""A connection, pooled or not (transactions are the caller's)."""


async def budget_rows(conn: Conn | asyncpg.Pool) -> list[asyncpg.Record]:
    """Every row of ``budgets``: ``scope``, ``limit_usd``, ``alert_usd`` (USD, ``Decimal``)."""
    return await conn.fetch("SELECT scope, limit_usd, alert_usd FROM budgets")


async def reserve_call(
    pool: asyncpg.Pool,
    *,
    workflow_id: str,
    activity_id: str,
    scopes: list[str],
    periods: list[str],
    default_limits: list[Decimal | None],
    agent: str,
    provider: str,
    model: str,
    amount: Decimal,
) -> asyncpg.Record | None:
    """Reserve ``amount`` USD in one round trip (``chorus_budget_reserve``, migration 0006).

    The function locks the period rows in order, checks every limit and records the
    reservation in the statement's transaction.

    Args:
        pool: Chorus's PostgreSQL pool.
        workflow_id: Workflow of the call.
        activity_id: Activity of the call.
        scopes: Budget scopes the call counts toward, aligned with ``periods``.
        periods: The period row of each scope.
        default_limits: Each scope's limit from the settings (USD), used where ``budgets``
            has no row; ``None`` for none.
        agent: Agent name, recorded with the reservation.
        provider: Provider name, recorded with the reservation.
        model: Model name, recorded with the reservation.
        amount: Worst-case cost in USD.

    Returns:
        The function's row: ``o_outcome`` (``reserved``, ``settled``, ``unlimited`` or
        ``refused``), ``o_amount``, and for a refusal ``o_scope``, ``o_period``, ``o_limit``,
        ``o_committed``.
    """
    return await pool.fetchrow(
        "SELECT * FROM chorus_budget_reserve($1, $2, $3::text[], $4::text[], $5::numeric[],"
        " $6, $7, $8, $9)",
        workflow_id,
        activity_id,
        scopes,
        periods,
        default_limits,
        agent,
        provider,
        model,
        amount,
    )


async def begin_call(
    pool: asyncpg.Pool,
    *,
    rate_key: str,
    interval_s: float,
    tolerance_s: float,
    max_wait_s: float,
    reservation: Mapping[str, Any] | None,
    run_id: str | None = None,
) -> asyncpg.Record:
    """The rate start, when it is now the reservation, and the run's watchers: one round trip.

    Runs ``chorus_call_begin`` (migration 0015): the GCRA step of ``rate_key``'s
    ``llm_rate_limits`` row (see :func:`chorus.storage.provider_rates.reserve_start`), then,
    if the call may start at once, :func:`reserve_call`'s ``chorus_budget_reserve`` in the same
    transaction.

    Args:
        pool: Chorus's PostgreSQL pool.
        rate_key: The provider's rate row.
        interval_s: Seconds between starts, ``60 / rpm``.
        tolerance_s: Burst tolerance in seconds.
        max_wait_s: Longest wait accepted, in seconds.
        reservation: :func:`reserve_call`'s keyword arguments
            (:func:`chorus.governance.budget.reservation_request`); ``None`` reserves nothing
            (a free call, or an unpriced one the settings allow).
        run_id: The run whose readers (``stream_watchers``) to look for; ``None``: none.

    Returns:
        ``o_wait_s`` (``None``: refused by the rate, nothing changed; > 0: sleep that long, no
        budget reserved, ``o_outcome`` ``wait``; 0: started) and :func:`reserve_call`'s
        columns (``o_outcome`` ``skipped`` when ``reservation`` is ``None``), and
        ``o_watched``.
    """
    r = reservation or {}
    row: asyncpg.Record | None = await pool.fetchrow(
        "SELECT * FROM chorus_call_begin($1, $2, $3, $4, $5, $6, $7::text[], $8::text[],"
        " $9::numeric[], $10, $11, $12, $13, $14)",
        rate_key,
        interval_s,
        tolerance_s,
        max_wait_s,
        r.get("workflow_id"),
        r.get("activity_id"),
        r.get("scopes"),
        r.get("periods"),
        r.get("default_limits"),
        r.get("agent"),
        r.get("provider"),
        r.get("model"),
        r.get("amount"),
        run_id,
    )
    if row is None:  # pragma: no cover - the function always returns one row
        raise RuntimeError("chorus_call_begin returned no row")
    return row


async def settle_call(
    pool: asyncpg.Pool,
    *,
    workflow_id: str,
    activity_id: str,
    cost: Decimal,
    alert: Decimal | None,
    periods: list[str],
    agent: str,
    provider: str,
    model: str,
) -> str | None:
    """Settle a call at its real cost (``chorus_budget_settle``, migration 0006).

    Replaces a held reservation, or counts the cost once per ``(workflow_id, activity_id)``
    when none was held.

    Args:
        pool: Chorus's PostgreSQL pool.
        workflow_id: Workflow of the call.
        activity_id: Activity of the call.
        cost: Real cost in USD.
        alert: The daily alert threshold in USD from the settings (a ``budgets`` row wins).
        periods: The period rows the call counts against.
        agent: Agent name, recorded with the spend.
        provider: Provider name, recorded with the spend.
        model: Model name, recorded with the spend.

    Returns:
        The period whose alert threshold this settlement crossed first, else ``None``.
    """
    crossed: str | None = await pool.fetchval(
        "SELECT chorus_budget_settle($1, $2, $3, $4::numeric, $5::text[], $6, $7, $8)",
        workflow_id,
        activity_id,
        cost,
        alert,
        periods,
        agent,
        provider,
        model,
    )
    return crossed


async def release_reservation(conn: Conn, workflow_id: str, activity_id: str) -> None:
    """Give back a reservation still held, inside the caller's transaction.

    Marks it ``released`` and takes its amount off the reserved USD of its periods (locked in
    period order first); a reservation already settled or released is left alone.
    """
    row = await conn.fetchrow(
        "UPDATE budget_reservations SET state = 'released', updated_at = now()"
        " WHERE workflow_id = $1 AND activity_id = $2 AND state = 'reserved'"
        " RETURNING periods, reserved_usd",
        workflow_id,
        activity_id,
    )
    if row is not None:
        await lock_periods(conn, row["periods"])
        await conn.execute(
            "UPDATE budget_spend SET reserved_usd = reserved_usd - $2"
            " WHERE period = ANY($1::text[])",
            row["periods"],
            row["reserved_usd"],
        )


async def lock_periods(conn: Conn, periods: list[str]) -> None:
    """Lock budget rows in period order, the one order every transaction uses (no deadlock)."""
    await conn.execute(
        "SELECT 1 FROM budget_spend WHERE period = ANY($1::text[]) ORDER BY period FOR UPDATE",
        periods,
    )


async def stale_reservations(conn: Conn, older_than_minutes: int) -> list[asyncpg.Record]:
    """Reservations left ``reserved`` longer than ``older_than_minutes``, locked for release.

    Rows another transaction holds are skipped (``SKIP LOCKED``): that one is settling or
    releasing them. Each row has ``workflow_id``, ``activity_id`` and ``periods``.
    """
    return await conn.fetch(
        "SELECT workflow_id, activity_id, periods FROM budget_reservations"
        " WHERE state = 'reserved'"
        f" AND updated_at < now() - interval '{int(older_than_minutes)} minutes'"
        " FOR UPDATE SKIP LOCKED"
    )


async def delete_budget(pool: asyncpg.Pool, scope: str) -> None:
    """Remove the ``budgets`` row of ``scope`` (the settings' default applies again)."""
    await pool.execute("DELETE FROM budgets WHERE scope = $1", scope)


async def upsert_budget(
    pool: asyncpg.Pool,
    scope: str,
    limit_usd: Decimal,
    alert_usd: Decimal | None,
    author: str,
) -> None:
    """Insert or replace the ``budgets`` row of ``scope`` (USD amounts), noting who set it."""
    await pool.execute(
        "INSERT INTO budgets (scope, limit_usd, alert_usd, updated_by) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (scope) DO UPDATE SET limit_usd = EXCLUDED.limit_usd,"
        " alert_usd = EXCLUDED.alert_usd, updated_by = EXCLUDED.updated_by, updated_at = now()",
        scope,
        limit_usd,
        alert_usd,
        author,
    )


async def period_spend(pool: asyncpg.Pool, period: str) -> asyncpg.Record | None:
    """``reserved_usd`` and ``spent_usd`` of one period row, or ``None`` before its first call."""
    return await pool.fetchrow(
        "SELECT reserved_usd, spent_usd FROM budget_spend WHERE period = $1", period
    )
