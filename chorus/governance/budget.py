"""Budgets that hold across every worker: reserve before a paid LLM call, settle after it.

Before each priced LLM call the ``chorus.call_llm`` activity **reserves** the call's worst-case
cost in PostgreSQL, in one transaction that locks the budget periods involved, so concurrent
calls on any number of workers can never together pass a limit:

- worst case = the prompt's UTF-8 size in bytes as input tokens (a byte-level BPE token, as
  used by OpenAI and Anthropic models, covers at least one byte) plus
  ``WORST_CASE_OVERHEAD_TOKENS`` for the chat template, and the request's ``max_tokens`` as
  output tokens, priced with :mod:`chorus.governance.pricing`;
- after the call the reservation is **settled** to the real cost (provider-reported tokens);
  when the call fails it is **released**; a retry of the same activity re-reserves.

Budgets (USD; any may be unset): ``daily`` (all spend per UTC day, with an alert threshold),
``run`` (each top-level run), ``agent:<name>`` (one agent per UTC day) and ``key:<name>`` (the
runs one API key started, per UTC day). Limits live in the ``budgets`` table (``chorus budget
set``); ``CHORUS_DAILY_BUDGET_USD``, ``CHORUS_BUDGET_ALERT_USD`` and ``CHORUS_RUN_BUDGET_USD``
are the defaults when no row exists. A ``key:<name>`` limit is the ``budget_daily_usd`` of the
API key of that name (``chorus keys create --budget-daily``, :mod:`chorus.governance.api_keys`),
read by the same reserve statement; the period follows the name, so a rotated key keeps the
day's spend.

Unpriced models (local servers, or models missing from the price table) cost 0 and are never
refused; their calls are not reserved.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import asyncpg
from pydantic import BaseModel

from chorus.config.settings import Settings
from chorus.contracts.errors import ChorusRefusedError
from chorus.governance.pricing import cost_usd
from chorus.storage import api_key_rows, budget_ledger
from chorus.storage.budget_ledger import Conn

WORST_CASE_OVERHEAD_TOKENS = 32
"""Tokens added to the prompt's byte count for chat-template markup (OpenAI documents ~3 per
message plus 3 per reply; Anthropic a similar few)."""
STALE_SWEEP_INTERVAL_S = 60.0
"""How often (at most) a process looks for stale reservations, in seconds."""
STALE_RESERVATION_MINUTES = 60
"""A reservation left ``reserved`` this long (its worker died between call and settle, and the
activity was never retried) is released by the next sweep (``STALE_SWEEP_INTERVAL_S``)."""


class BudgetExceededError(ChorusRefusedError):
    """A call would pass a budget.

    Attributes:
        budget: The budget's scope (``daily``, ``run``, ``agent:<name>``, ``key:<name>``).
        period: The period it applies to (``day:2026-11-21``, ``run:<workflow id>``...).
        limit_usd: The limit.
        committed_usd: Spent plus reserved in that period before this request.
        request_usd: This call's worst-case cost.
    """

    def __init__(
        self,
        budget: str,
        period: str,
        limit_usd: float,
        committed_usd: float,
        request_usd: float,
        what: str,
    ) -> None:
        self.budget = budget
        self.period = period
        self.limit_usd = limit_usd
        self.committed_usd = committed_usd
        self.request_usd = request_usd
        whose = (
            f" (the daily budget of API key {budget[4:]!r})" if budget.startswith("key:") else ""
        )
        super().__init__(
            f"budget {budget!r}{whose} ({period}) would be exceeded: limit ${limit_usd:.6f}, "
            f"already spent or reserved ${committed_usd:.6f}, this request (${request_usd:.6f} "
            f"worst case) is {what}"
        )


@dataclass(frozen=True)
class Limit:
    """One budget: its scope, limit and (daily only) alert threshold, in USD."""

    scope: str
    limit_usd: float
    alert_usd: float | None = None


class BudgetLine(BaseModel):
    """One budget's standing in its current period (``chorus budget show``)."""

    scope: str
    period: str
    limit_usd: float | None
    alert_usd: float | None
    spent_usd: float
    reserved_usd: float
    remaining_usd: float | None


@dataclass(frozen=True)
class Reservation:
    """What ``reserve`` did: the amount held, and whether a settle/release is due."""

    amount_usd: float
    held: bool
    already_settled: bool = False


def worst_case_usd(
    provider: str, model: str, prompt_bytes: int, max_tokens: int
) -> tuple[float, bool]:
    """Worst-case cost of one call, and whether the model is priced.

    Args:
        provider: ``openai``, ``anthropic`` or ``local``.
        model: Model name (priced by :mod:`chorus.governance.pricing`).
        prompt_bytes: UTF-8 size of system + user prompt.
        max_tokens: The request's output-token cap.

    Returns:
        ``(USD, priced)``; unpriced models give ``(0.0, False)``.
    """
    return cost_usd(provider, model, prompt_bytes + WORST_CASE_OVERHEAD_TOKENS, max_tokens)


def periods_for(
    agent: str, root_workflow_id: str, day: date, api_key: str | None = None
) -> dict[str, str]:
    """Budget scope -> the period row a call counts against.

    Args:
        agent: The calling agent.
        root_workflow_id: The top-level run.
        day: The UTC day.
        api_key: Name of the API key that started the run, if any (scope ``key:<name>``).
    """
    periods = {
        "daily": f"day:{day.isoformat()}",
        "run": f"run:{root_workflow_id}",
        f"agent:{agent}": f"agent:{agent}:{day.isoformat()}",
    }
    if api_key:
        periods[f"key:{api_key}"] = f"key:{api_key}:{day.isoformat()}"
    return periods


def _default_limits(settings: Settings) -> dict[str, Decimal]:
    """Limits from the settings, in USD, used where the budgets table has no row."""
    found: dict[str, Decimal] = {}
    if settings.daily_budget_usd is not None:
        found["daily"] = Decimal(str(settings.daily_budget_usd))
    if settings.run_budget_usd is not None:
        found["run"] = Decimal(str(settings.run_budget_usd))
    return found


async def limits(conn: Conn | asyncpg.Pool, settings: Settings) -> dict[str, Limit]:
    """Configured budgets: rows of ``budgets``, else the settings' defaults."""
    found: dict[str, Limit] = {}
    if settings.daily_budget_usd is not None:
        found["daily"] = Limit("daily", settings.daily_budget_usd, settings.budget_alert_usd)
    if settings.run_budget_usd is not None:
        found["run"] = Limit("run", settings.run_budget_usd)
    for row in await budget_ledger.budget_rows(conn):
        alert = float(row["alert_usd"]) if row["alert_usd"] is not None else None
        found[row["scope"]] = Limit(row["scope"], float(row["limit_usd"]), alert)
    return found


async def reserve(
    pool: asyncpg.Pool,
    settings: Settings,
    *,
    workflow_id: str,
    activity_id: str,
    root_workflow_id: str,
    agent: str,
    provider: str,
    model: str,
    amount_usd: float,
    api_key: str | None = None,
    now: datetime | None = None,
) -> Reservation:
    """Hold ``amount_usd`` against every budget the call counts toward, or refuse.

    ``api_key`` is the name of the API key that started the run (``RunSubject.api_key``): the
    call then also counts against that key's daily budget (``key:<name>``).

    Idempotent per ``(workflow_id, activity_id)``: a reservation still held (a retry after a
    crash) is reused; a settled one means the call was already paid for. When no budget limits
    any of the call's periods, nothing is held, written or locked (``held=False``);
    :func:`settle` then counts the cost after the call. A budget set meanwhile therefore
    applies to calls that start after it.

    Raises:
        BudgetExceededError: Spent + reserved + ``amount_usd`` would pass a limit (the first
            such budget is named). Nothing is held then.
    """
    if amount_usd <= 0:
        return Reservation(0.0, held=False)
    request = await reservation_request(
        pool,
        settings,
        workflow_id=workflow_id,
        activity_id=activity_id,
        root_workflow_id=root_workflow_id,
        agent=agent,
        provider=provider,
        model=model,
        amount_usd=amount_usd,
        api_key=api_key,
        now=now,
    )
    # One round trip: chorus_budget_reserve (migration 0006) locks the period rows in order,
    # checks every limit and records the reservation in the statement's transaction.
    row = await budget_ledger.reserve_call(pool, **request)
    if row is None:  # pragma: no cover - the function always returns one row
        raise RuntimeError("chorus_budget_reserve returned no row")
    return reservation_of(row, amount_usd, f"{agent} via {provider}:{model}")


async def reservation_request(
    pool: asyncpg.Pool,
    settings: Settings,
    *,
    workflow_id: str,
    activity_id: str,
    root_workflow_id: str,
    agent: str,
    provider: str,
    model: str,
    amount_usd: float,
    api_key: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The keyword arguments of :func:`budget_ledger.reserve_call` for one call.

    See :func:`reserve` for the arguments. Sweeps stale reservations at most once a minute.
    """
    day = (now or datetime.now(UTC)).date()
    periods = periods_for(agent, root_workflow_id, day, api_key)
    await _sweep_stale(pool)
    defaults = _default_limits(settings)
    return {
        "workflow_id": workflow_id,
        "activity_id": activity_id,
        "scopes": list(periods),
        "periods": list(periods.values()),
        "default_limits": [defaults.get(scope) for scope in periods],
        "agent": agent,
        "provider": provider,
        "model": model,
        "amount": Decimal(str(round(amount_usd, 8))),
    }


def reservation_of(
    row: asyncpg.Record | Mapping[str, Any], amount_usd: float, caller: str
) -> Reservation:
    """What a ``chorus_budget_reserve`` row means (also ``chorus_call_begin``'s).

    Args:
        row: ``o_outcome``, ``o_amount`` and for a refusal ``o_scope``, ``o_period``,
            ``o_limit``, ``o_committed``.
        amount_usd: The amount asked for, in USD.
        caller: ``<agent> via <provider>:<model>``, for the refusal's message.

    Raises:
        BudgetExceededError: The row is a refusal.
    """
    if row["o_outcome"] == "settled":
        return Reservation(0.0, held=False, already_settled=True)
    if row["o_outcome"] == "unlimited":
        return Reservation(0.0, held=False)
    if row["o_outcome"] == "refused":
        raise BudgetExceededError(
            row["o_scope"],
            row["o_period"],
            float(row["o_limit"]),
            float(row["o_committed"]),
            amount_usd,
            caller,
        )
    return Reservation(float(row["o_amount"]), held=True)


async def settle(
    pool: asyncpg.Pool,
    settings: Settings,
    *,
    workflow_id: str,
    activity_id: str,
    cost_usd: float,
    root_workflow_id: str | None = None,
    agent: str = "",
    provider: str = "",
    model: str = "",
    api_key: str | None = None,
    now: datetime | None = None,
) -> list[str]:
    """Replace a held reservation by the call's real cost, or count the cost without one.

    A call that no budget limited (:func:`reserve` returned without holding) is counted
    against its periods here, once per ``(workflow_id, activity_id)`` however often this is
    retried; so ``chorus budget show`` and a budget set later see every call's spend.

    Args:
        pool: Chorus's PostgreSQL pool.
        settings: Default daily alert threshold.
        workflow_id: Workflow of the call.
        activity_id: Activity of the call.
        cost_usd: Real cost of the call, in USD.
        root_workflow_id: Top-level run (run budget period); default ``workflow_id``.
        agent: Agent name (agent budget period).
        provider: Provider name, recorded with the spend.
        model: Model name, recorded with the spend.
        api_key: Name of the API key that started the run (its ``key:<name>`` period).
        now: Clock for the UTC day (tests).

    Returns:
        Periods whose alert threshold this settlement crossed (first crossing only, so each
        alert fires once per period).
    """
    cost = Decimal(str(round(cost_usd, 8)))
    alert, periods = settlement(
        settings,
        workflow_id=workflow_id,
        root_workflow_id=root_workflow_id,
        agent=agent,
        api_key=api_key,
        now=now,
    )
    crossed = await budget_ledger.settle_call(
        pool,
        workflow_id=workflow_id,
        activity_id=activity_id,
        cost=cost,
        alert=alert,
        periods=periods,
        agent=agent,
        provider=provider,
        model=model,
    )
    return [crossed] if crossed else []


def settlement(
    settings: Settings,
    *,
    workflow_id: str,
    root_workflow_id: str | None = None,
    agent: str = "",
    api_key: str | None = None,
    now: datetime | None = None,
) -> tuple[Decimal | None, list[str]]:
    """What :func:`settle` settles a call against.

    Returns the daily alert threshold from the settings (``None`` without a daily budget) and
    the call's period rows. :func:`chorus.storage.db.record_call` takes both to record and
    settle a call in one statement (the LLM activity's path); the arguments are
    :func:`settle`'s.
    """
    alert = settings.budget_alert_usd if settings.daily_budget_usd is not None else None
    day = (now or datetime.now(UTC)).date()
    periods = periods_for(agent, root_workflow_id or workflow_id, day, api_key)
    return (Decimal(str(alert)) if alert is not None else None), list(periods.values())


async def release(pool: asyncpg.Pool, *, workflow_id: str, activity_id: str) -> None:
    """Give back a held reservation (the call failed; nothing was spent)."""
    async with pool.acquire() as conn, conn.transaction():
        await budget_ledger.release_reservation(conn, workflow_id, activity_id)


_last_sweep = 0.0


async def _sweep_stale(pool: asyncpg.Pool) -> None:
    """Release stale reservations, at most once a minute per process (off the hot path)."""
    global _last_sweep
    if time.monotonic() - _last_sweep < STALE_SWEEP_INTERVAL_S:
        return
    _last_sweep = time.monotonic()
    async with pool.acquire() as conn, conn.transaction():
        await _release_stale(conn)


async def _release_stale(conn: Conn) -> None:
    stale = await budget_ledger.stale_reservations(conn, STALE_RESERVATION_MINUTES)
    if not stale:
        return
    # Lock every period involved at once, in period order: releasing reservation by
    # reservation would take them out of order across reservations and could deadlock with
    # a concurrent reserve or settle.
    await budget_ledger.lock_periods(conn, sorted({p for row in stale for p in row["periods"]}))
    for row in stale:
        await budget_ledger.release_reservation(conn, row["workflow_id"], row["activity_id"])


async def set_limit(
    pool: asyncpg.Pool,
    scope: str,
    limit_usd: float | None,
    *,
    alert_usd: float | None = None,
    author: str = "",
) -> None:
    """Set (or with ``limit_usd=None`` remove) a budget.

    Args:
        pool: Chorus's PostgreSQL pool.
        scope: ``daily``, ``run`` or ``agent:<name>``.
        limit_usd: Limit in USD (>= 0), or ``None`` to remove the row.
        alert_usd: Daily only: spend at which the alert fires (<= the limit).
        author: Who changed it.

    Raises:
        ValueError: Unknown scope, negative amount, or an alert on a non-daily budget or above
            the limit (the message names the field). An API key's budget (``key:<name>``) is
            set on the key, not here.
    """
    if scope.startswith("key:"):
        raise ValueError(
            f"scope: {scope!r} is an API key's daily budget; set it with "
            "`chorus keys create --budget-daily` (rotation keeps it)"
        )
    if scope not in ("daily", "run") and not (scope.startswith("agent:") and len(scope) > 6):
        raise ValueError(f"scope: {scope!r} is not 'daily', 'run' or 'agent:<name>'")
    if limit_usd is None:
        await budget_ledger.delete_budget(pool, scope)
        return
    if limit_usd < 0:
        raise ValueError(f"limit_usd: must be >= 0, got {limit_usd}")
    if alert_usd is not None:
        if scope != "daily":
            raise ValueError("alert_usd: only the daily budget has an alert threshold")
        if not 0 <= alert_usd <= limit_usd:
            raise ValueError(f"alert_usd: must be between 0 and the limit ({limit_usd})")
    await budget_ledger.upsert_budget(
        pool,
        scope,
        Decimal(str(limit_usd)),
        None if alert_usd is None else Decimal(str(alert_usd)),
        author,
    )


async def standing(
    pool: asyncpg.Pool, settings: Settings, *, now: datetime | None = None
) -> list[BudgetLine]:
    """Every configured budget (plus today's total) with spent, reserved and remaining USD.

    API keys with a daily budget are listed as ``key:<name>``.
    """
    day = (now or datetime.now(UTC)).date().isoformat()
    configured = await limits(pool, settings)
    for key_row in await api_key_rows.key_budgets(pool):
        key_scope = f"key:{key_row['name']}"
        configured[key_scope] = Limit(key_scope, float(key_row["budget_daily_usd"]))
    scopes = sorted({"daily", *configured} - {"run"})
    lines = []
    for scope in scopes:
        period = f"day:{day}" if scope == "daily" else f"{scope}:{day}"
        row = await budget_ledger.period_spend(pool, period)
        spent = float(row["spent_usd"]) if row else 0.0
        reserved = float(row["reserved_usd"]) if row else 0.0
        limit = configured.get(scope)
        lines.append(
            BudgetLine(
                scope=scope,
                period=period,
                limit_usd=limit.limit_usd if limit else None,
                alert_usd=limit.alert_usd if limit else None,
                spent_usd=round(spent, 8),
                reserved_usd=round(reserved, 8),
                remaining_usd=None
                if limit is None
                else round(limit.limit_usd - spent - reserved, 8),
            )
        )
    if "run" in configured:
        lines.append(
            BudgetLine(
                scope="run",
                period="each top-level run",
                limit_usd=configured["run"].limit_usd,
                alert_usd=None,
                spent_usd=0.0,
                reserved_usd=0.0,
                remaining_usd=None,
            )
        )
    return lines
