"""``chorus providers``: the provider registry and each provider's circuit breaker (list, reset).

``list`` shows every provider this process knows (the built-ins and ``CHORUS_PROVIDERS_FILE``'s
entries, configured or not) with its fleet-wide circuit breaker: state, failures counted,
when it opened and when the next probe call may go. ``reset NAME`` closes a breaker by hand.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from starter.cli.support import JsonOpt, out, with_chorus
from starter.sdk import ChorusClient, ProviderStatus

providers_app = typer.Typer(
    help="Providers (registry entries) and their fleet-wide circuit breakers.",
    no_args_is_help=True,
)

STATE_STYLE = {"closed": "green", "half_open": "yellow", "open": "bold red"}


def breaker_text(status: ProviderStatus) -> str:
    """One provider's breaker in a few words, e.g. ``open (5 failures, probe in 12 s)``.

    Used by ``chorus providers list`` and ``chorus top``.
    """
    parts = []
    for breaker in status.breakers:
        if breaker.state == "closed":
            continue
        where = f"{breaker.model}: " if breaker.model else ""
        counted = f"{breaker.failures} failures"
        if breaker.rate_limits:
            counted += f", {breaker.rate_limits} 429s"
        if breaker.state == "open":
            parts.append(f"{where}open ({counted}, probe in {breaker.probe_in_s or 0:.0f} s)")
        else:
            parts.append(f"{where}half-open (probe in flight)")
    if parts:
        return "; ".join(parts)
    recent = sum(b.failures + b.rate_limits for b in status.breakers)
    return f"closed ({recent} recent failures)" if recent else "closed"


@providers_app.command("list")
def providers_list(as_json: JsonOpt = False) -> None:
    """List providers: kind, endpoint, configured, limits, and circuit breaker state."""

    async def go(chorus: ChorusClient) -> None:
        providers = await chorus.providers.list()
        if as_json:
            out.print_json(json.dumps([p.model_dump(mode="json") for p in providers]))
            return
        table = Table(title="Providers", title_justify="left")
        for col in ("name", "kind", "endpoint", "configured", "limits", "breaker", "opened"):
            table.add_column(col)
        for p in providers:
            entry = p.entry
            limits = entry.get("limits") or {}
            limit_text = ", ".join(
                f"{k} {v:g}" for k, v in limits.items() if isinstance(v, int | float) and v
            )
            configured = entry.get("configured")
            opened = [b.opened_at for b in p.breakers if b.opened_at is not None]
            table.add_row(
                escape(p.name),
                escape(str(entry.get("kind", "-"))),
                escape(str(entry.get("endpoint") or "-")),
                "-"
                if configured is None
                else ("yes" if configured else f"no: {escape(str(entry.get('reason', '')))}"),
                limit_text or "unlimited",
                f"[{STATE_STYLE.get(p.state, '')}]{escape(breaker_text(p))}[/]",
                f"{max(opened):%Y-%m-%d %H:%M:%S}" if opened else "-",
            )
        out.print(table)

    with_chorus(go, as_json)


@providers_app.command("reset")
def providers_reset(
    name: Annotated[str, typer.Argument(help="Provider name, e.g. openai.")],
    model: Annotated[
        str | None,
        typer.Option(help="Only this model's breaker (with CHORUS_CIRCUIT_PER_MODEL)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Close a provider's circuit breaker by hand (calls reach it again at once)."""

    async def go(chorus: ChorusClient) -> None:
        before = await chorus.providers.reset(name, model)
        if as_json:
            out.print_json(json.dumps({"provider": name, "reset": before}))
            return
        changed = {m: s for m, s in before.items() if s != "closed"}
        if not changed:
            out.print(f"circuit breaker of {escape(name)} was already closed", highlight=False)
            return
        for breaker_model, state in changed.items():
            label = f"{name}:{breaker_model}" if breaker_model else name
            out.print(
                f"circuit breaker of {escape(label)}: {state.replace('_', '-')} -> closed",
                highlight=False,
            )

    with_chorus(go, as_json)
