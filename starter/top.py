"""``chorus top``: one snapshot of the fleet — runs in flight, recent failures, spend, providers.

The providers' circuit breakers (``chorus.providers``, PostgreSQL) are one line under the
provider table: every breaker that is not closed, with its failures and next probe.

Sources, all read through the SDK (``chorus.fleet``, ``chorus.spend``): runs in flight come
from Temporal visibility (open Chorus workflows, with their ``ChorusPattern``/``ChorusAgents``
search attributes); failures, spend and provider latency come from PostgreSQL (``runs``, the
budget ledger, ``messages``). ``messages`` holds one row per
*successful* LLM call, so provider figures are successes only: failed attempts are not recorded
per call (they show up as failed runs and in the worker's Prometheus metrics).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydantic import BaseModel
from rich.console import Group
from rich.table import Table
from rich.text import Text

from chorus.governance.circuit_breaker import BreakerStatus
from starter.sdk import BudgetLine, ChorusClient, ProviderHealth, RecentFailure, RunInFlight

FAILURE_WINDOW = timedelta(hours=1)
"""Failed runs shown: those that ended this recently."""
PROVIDER_WINDOW = timedelta(minutes=15)
"""Provider latency is computed over the LLM calls of this window."""
MAX_ROWS = 20
"""Rows shown per section at most."""


class TopSnapshot(BaseModel):
    """Everything ``chorus top`` shows in one frame."""

    taken_at: datetime
    in_flight: list[RunInFlight]
    failures: list[RecentFailure]
    budgets: list[BudgetLine]
    providers: list[ProviderHealth]
    breakers: list[BreakerStatus] = []
    """Circuit breakers with a row (providers without one are closed)."""


async def snapshot(chorus: ChorusClient) -> TopSnapshot:
    """Gather one frame from Temporal visibility and PostgreSQL.

    Raises:
        temporalio.service.RPCError: Temporal is unreachable.
        asyncpg.PostgresError: PostgreSQL is unreachable or not migrated.
    """
    now = datetime.now(UTC)
    return TopSnapshot(
        taken_at=now,
        in_flight=await chorus.fleet.in_flight(MAX_ROWS),
        failures=await chorus.fleet.recent_failures(now - FAILURE_WINDOW, MAX_ROWS),
        budgets=await chorus.spend.budgets(),
        providers=await chorus.fleet.provider_latency(now - PROVIDER_WINDOW),
        breakers=await chorus.providers.breakers(),
    )


def _age(then: datetime | None, now: datetime) -> str:
    if then is None:
        return "-"
    seconds = max(0, int((now - then).total_seconds()))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def render(snap: TopSnapshot) -> Group:
    """Rich renderable of one snapshot: four tables under a header line, then the breakers."""
    now = snap.taken_at
    runs = Table(title=f"Runs in flight ({len(snap.in_flight)})", title_justify="left")
    for col in ("workflow id", "pattern", "agents", "running for"):
        runs.add_column(col)
    for r in snap.in_flight:
        indent = "  └ " if r.parent_id else ""
        runs.add_row(
            indent + r.workflow_id, r.pattern or "?", ", ".join(r.agents), _age(r.started_at, now)
        )
    failures = Table(title=f"Failures, last hour ({len(snap.failures)})", title_justify="left")
    for col in ("workflow id", "pattern", "ago", "cost USD", "reason"):
        failures.add_column(col)
    for f in snap.failures:
        failures.add_row(
            f.workflow_id,
            f.pattern,
            _age(f.finished_at, now),
            f"{f.cost_usd:.4f}",
            (f.error or "")[:100],
        )
    spend = Table(title="Spend today (UTC) against budgets", title_justify="left")
    for col in ("scope", "spent USD", "reserved USD", "limit USD", "remaining USD"):
        spend.add_column(col)
    for b in snap.budgets:
        over = b.limit_usd is not None and b.spent_usd >= b.limit_usd
        spend.add_row(
            b.scope,
            Text(f"{b.spent_usd:.4f}", style="bold red" if over else ""),
            f"{b.reserved_usd:.4f}",
            "-" if b.limit_usd is None else f"{b.limit_usd:.2f}",
            "-" if b.remaining_usd is None else f"{b.remaining_usd:.4f}",
        )
    providers = Table(title="Providers, last 15 min (successful calls only)", title_justify="left")
    for col in ("provider", "model", "calls", "p50 ms", "p95 ms", "last call"):
        providers.add_column(col)
    for p in snap.providers:
        providers.add_row(
            p.provider,
            p.model,
            str(p.calls),
            f"{p.p50_ms:.0f}",
            f"{p.p95_ms:.0f}",
            _age(p.last_call_at, now) + " ago",
        )
    tripped = [c for c in snap.breakers if c.state != "closed"]
    breakers = Text("Circuit breakers: ", style="bold")
    if not tripped:
        breakers.append("all closed", style="green")
    for n, c in enumerate(tripped):
        name = f"{c.provider}:{c.model}" if c.model else c.provider
        if c.state == "open":
            what = f"{name} open ({c.failures} failures, probe in {c.probe_in_s or 0:.0f} s)"
        else:
            what = f"{name} half-open (probe in flight)"
        breakers.append(("; " if n else "") + what, style="bold red")
    header = Text(f"chorus top — {now:%Y-%m-%d %H:%M:%S} UTC (Ctrl-C to quit)", style="bold")
    return Group(header, runs, failures, spend, providers, breakers)
