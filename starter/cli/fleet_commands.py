"""``chorus health`` and ``chorus top``: is every part up, and what is the fleet doing."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.live import Live
from rich.table import Table
from rich.text import Text

from chorus.config.settings import get_settings
from starter.cli.support import JsonOpt, out, with_chorus
from starter.health import check_health
from starter.sdk import ChorusClient


def health(as_json: JsonOpt = False) -> None:
    """Check Temporal, PostgreSQL and every configured LLM provider, with latencies.

    Exit code 0 when healthy, 1 when degraded or unhealthy.
    """
    report = asyncio.run(check_health(get_settings()))
    if as_json:
        out.print_json(report.model_dump_json())
    else:
        styles = {"healthy": "green", "degraded": "yellow", "unhealthy": "red"}
        table = Table(
            title=Text(f"overall: {report.status}", style=styles[report.status]),
            title_justify="left",
        )
        for col in ("check", "status", "latency ms", "detail"):
            table.add_column(col)
        for c in report.checks:
            table.add_row(
                c.name,
                Text(c.status, style=styles[c.status]),
                f"{c.latency_ms:.0f}" if c.latency_ms is not None else "-",
                c.detail,
            )
        out.print(table)
        for reason in report.reasons:
            out.print(f"- {reason}", highlight=False)
    if report.status != "healthy":
        raise typer.Exit(1)


def top(
    once: Annotated[bool, typer.Option("--once", help="Print one frame and exit.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes.")] = 2.0,
    as_json: JsonOpt = False,
) -> None:
    """Live view: runs in flight, failures of the last hour, spend today, provider latency.

    Refreshes every ``--interval`` seconds until Ctrl-C; ``--once`` (implied by ``--json``)
    prints a single frame. Provider figures cover successful calls only (see starter/top.py).
    """
    from starter import top as top_module

    async def go(chorus: ChorusClient) -> None:
        snap = await top_module.snapshot(chorus)
        if as_json:
            out.print_json(snap.model_dump_json())
            return
        if once:
            out.print(top_module.render(snap))
            return
        with Live(top_module.render(snap), console=out, screen=False) as live:
            try:
                while True:
                    await asyncio.sleep(interval)
                    live.update(top_module.render(await top_module.snapshot(chorus)))
            except (KeyboardInterrupt, asyncio.CancelledError):
                return

    with_chorus(go, as_json)
