"""``chorus budget`` and ``chorus costs``: budgets and the cost ledger, in USD."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

import typer
from rich.table import Table

from starter.cli.support import JsonOpt, default_author, fail, out, with_chorus
from starter.sdk import ChorusClient

budget_app = typer.Typer(
    help="Budgets in USD enforced across all workers (daily, per run, per agent).",
    no_args_is_help=True,
)


class CostBy(StrEnum):
    """Groupings of ``chorus costs``."""

    agent = "agent"
    provider = "provider"
    model = "model"
    day = "day"


def costs(
    since: Annotated[
        str | None, typer.Option(help="Only calls from this date/time on (ISO, e.g. 2026-11-01).")
    ] = None,
    by: Annotated[
        CostBy, typer.Option(help="Group by agent, provider, model or day.")
    ] = CostBy.agent,
    as_json: JsonOpt = False,
) -> None:
    """Usage statistics from the cost ledger: calls, tokens and USD."""
    since_at = None
    if since:
        try:
            since_at = datetime.fromisoformat(since)
        except ValueError:
            fail(f"--since: {since!r} is not an ISO date, e.g. 2026-11-01", as_json=as_json)
        if since_at.tzinfo is None:
            since_at = since_at.replace(tzinfo=UTC)

    async def go(chorus: ChorusClient) -> None:
        rows = await chorus.spend.costs(by=by.value, since=since_at)
        if as_json:
            out.print_json(json.dumps([r.model_dump() for r in rows]))
            return
        table = Table(
            title=f"costs by {by.value}"
            + (f" since {since_at:%Y-%m-%d %H:%M %Z}" if since_at else ""),
            title_justify="left",
        )
        for col in (by.value, "calls", "tokens in", "tokens out", "cost USD", "unpriced calls"):
            table.add_column(col, justify="left" if col == by.value else "right")
        for r in rows:
            table.add_row(
                r.key,
                str(r.calls),
                str(r.input_tokens),
                str(r.output_tokens),
                f"{r.cost_usd:.6f}",
                str(r.unpriced_calls),
            )
        table.add_row(
            "[bold]total[/]",
            str(sum(r.calls for r in rows)),
            str(sum(r.input_tokens for r in rows)),
            str(sum(r.output_tokens for r in rows)),
            f"{sum(r.cost_usd for r in rows):.6f}",
            str(sum(r.unpriced_calls for r in rows)),
        )
        out.print(table)

    with_chorus(go, as_json)


@budget_app.command("show")
def budget_show(as_json: JsonOpt = False) -> None:
    """Today's spend (UTC) against each budget: limit, spent, reserved, remaining."""

    async def go(chorus: ChorusClient) -> None:
        lines = await chorus.spend.budgets()
        if as_json:
            out.print_json(json.dumps([line.model_dump() for line in lines]))
            return
        table = Table(title="budgets (USD)", title_justify="left")
        for col in ("budget", "period", "limit", "alert at", "spent", "reserved", "remaining"):
            table.add_column(col, justify="left" if col in ("budget", "period") else "right")

        def usd(value: float | None) -> str:
            return "-" if value is None else f"{value:.6f}"

        for line in lines:
            table.add_row(
                line.scope,
                line.period,
                usd(line.limit_usd),
                usd(line.alert_usd),
                usd(line.spent_usd),
                usd(line.reserved_usd),
                usd(line.remaining_usd),
            )
        out.print(table)

    with_chorus(go, as_json)


@budget_app.command("set")
def budget_set(
    daily: Annotated[float | None, typer.Option(help="Daily limit, USD (UTC day).")] = None,
    alert: Annotated[
        float | None, typer.Option(help="Daily spend that fires the alert, USD.")
    ] = None,
    run: Annotated[float | None, typer.Option(help="Limit of each top-level run, USD.")] = None,
    agent: Annotated[
        list[str] | None, typer.Option(help="Per-agent daily limit, NAME=USD (repeatable).")
    ] = None,
    remove: Annotated[
        list[str] | None, typer.Option(help="Remove a budget: daily, run or agent:NAME.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Set or remove budgets (stored in PostgreSQL; every worker enforces them at once)."""
    changes: list[tuple[str, float | None, float | None]] = []
    if daily is not None or alert is not None:
        if daily is None:
            fail("--alert needs --daily (the alert belongs to the daily budget)", as_json=as_json)
        changes.append(("daily", daily, alert))
    if run is not None:
        changes.append(("run", run, None))
    for item in agent or []:
        name, sep, amount = item.partition("=")
        try:
            changes.append((f"agent:{name.strip()}", float(amount), None))
        except ValueError:
            fail(f"--agent: {item!r} is not NAME=USD", as_json=as_json)
        if not sep or not name.strip():
            fail(f"--agent: {item!r} is not NAME=USD", as_json=as_json)
    changes += [(scope, None, None) for scope in remove or []]
    if not changes:
        fail("nothing to set: give --daily, --run, --agent or --remove", as_json=as_json)

    async def go(chorus: ChorusClient) -> None:
        for scope, limit, alert_at in changes:
            await chorus.spend.set_budget(scope, limit, alert_usd=alert_at, author=default_author())
        if as_json:
            out.print_json(json.dumps([line.model_dump() for line in await chorus.spend.budgets()]))
        else:
            out.print(f"budgets updated: {', '.join(c[0] for c in changes)}")

    with_chorus(go, as_json)
