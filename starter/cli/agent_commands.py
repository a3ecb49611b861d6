"""``chorus agents``: inspect and change the agent catalog (versioned in PostgreSQL)."""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from chorus.config.catalog import load_catalog
from chorus.contracts.models import AgentSpec
from starter.cli.support import JsonOpt, default_author, out, with_chorus
from starter.sdk import AgentConfigError, ChorusClient

agents_app = typer.Typer(help="Inspect the agent catalog.", no_args_is_help=True)

AuthorOpt = Annotated[str | None, typer.Option(help="Recorded as the change's author.")]


@agents_app.command("list")
def agents_list(as_json: JsonOpt = False) -> None:
    """List the current version of every agent (from PostgreSQL)."""

    async def go(chorus: ChorusClient) -> None:
        agents = await chorus.catalog.current()
        if as_json:
            out.print_json(json.dumps({n: a.model_dump(mode="json") for n, a in agents.items()}))
            return
        table = Table()
        for col in ("agent", "version", "providers", "max tokens", "description"):
            table.add_column(col)
        for a in agents.values():
            table.add_row(
                a.name,
                str(a.version),
                " → ".join(str(p) for p in a.providers),
                str(a.max_tokens),
                a.description,
            )
        out.print(table)

    with_chorus(go, as_json)


@agents_app.command("show")
def agents_show(
    name: str,
    version: Annotated[int | None, typer.Option(help="A kept version; default current.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one agent's configuration (current, or --version N)."""

    async def go(chorus: ChorusClient) -> None:
        history = await chorus.catalog.history(name)
        chosen = (
            history[0]
            if version is None
            else next((h for h in history if h.version == version), None)
        )
        if chosen is None:
            kept = ", ".join(str(h.version) for h in history)
            raise AgentConfigError(f"agent {name!r} has no version {version}; kept: {kept}")
        spec = chosen.spec
        if as_json:
            out.print_json(chosen.model_dump_json())
            return
        out.print(
            Panel(
                spec.instructions.strip(), title=f"{spec.name} v{spec.version}", title_align="left"
            )
        )
        out.print(f"providers: {' → '.join(str(p) for p in spec.providers)}", highlight=False)
        out.print(
            f"temperature {spec.temperature}, max_tokens {spec.max_tokens}, "
            f"timeout {spec.timeout_s} s"
        )
        if spec.tools:
            out.print(
                f"tools ({spec.tool_choice}, at most {spec.max_tool_calls} calls per step): "
                + ", ".join(t.name for t in spec.tools),
                highlight=False,
            )
        out.print(
            f"set by {chosen.author} at {chosen.created_at:%Y-%m-%d %H:%M:%S %Z}"
            + (f" — {chosen.comment}" if chosen.comment else ""),
            highlight=False,
        )
        if spec.output_schema:
            out.print_json(json.dumps(spec.output_schema))

    with_chorus(go, as_json)


@agents_app.command("set")
def agents_set(
    file: Annotated[Path, typer.Argument(help="YAML file with an 'agents:' list.")],
    author: AuthorOpt = None,
    comment: Annotated[str, typer.Option(help="Why the change was made.")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Validate a YAML file of agents and store a new version of each changed one.

    All or nothing: if any agent fails validation nothing is stored. Running workflows keep
    the versions they pinned; new runs use the new versions at once (no worker restart).
    """

    async def go(chorus: ChorusClient) -> None:
        specs = load_catalog(file)  # CatalogError names the agent, field and rule
        results = await chorus.catalog.set(
            list(specs.values()), author=author or default_author(), comment=comment
        )
        if as_json:
            out.print_json(
                json.dumps([{"agent": n, "version": v, "changed": c} for n, v, c in results])
            )
            return
        for name, version, changed in results:
            out.print(f"{name}: v{version} " + ("[green]stored[/]" if changed else "(unchanged)"))

    with_chorus(go, as_json)


@agents_app.command("history")
def agents_history(name: str, as_json: JsonOpt = False) -> None:
    """List the kept versions of an agent with author, time and comment (audit trail)."""

    async def go(chorus: ChorusClient) -> None:
        history = await chorus.catalog.history(name)
        if as_json:
            out.print_json(json.dumps([h.model_dump(mode="json") for h in history]))
            return
        table = Table(title=f"{name}: {len(history)} version(s) kept", title_justify="left")
        for col in ("version", "created", "author", "comment", "providers"):
            table.add_column(col)
        for h in history:
            table.add_row(
                str(h.version),
                f"{h.created_at:%Y-%m-%d %H:%M:%S}",
                h.author,
                h.comment,
                " → ".join(str(p) for p in h.spec.providers),
            )
        out.print(table)

    with_chorus(go, as_json)


@agents_app.command("diff")
def agents_diff(name: str, v1: int, v2: int, as_json: JsonOpt = False) -> None:
    """Show what changed between two versions of an agent (unified diff of their YAML)."""

    async def go(chorus: ChorusClient) -> None:
        a = await chorus.catalog.version(name, v1)
        b = await chorus.catalog.version(name, v2)
        lines = list(
            difflib.unified_diff(
                _spec_yaml(a.spec).splitlines(),
                _spec_yaml(b.spec).splitlines(),
                f"{name} v{v1}",
                f"{name} v{v2}",
                lineterm="",
            )
        )
        if as_json:
            out.print_json(json.dumps({"agent": name, "from": v1, "to": v2, "diff": lines}))
            return
        if not lines:
            out.print(f"{name} v{v1} and v{v2} are identical")
        for line in lines:
            style = "green" if line.startswith("+") else "red" if line.startswith("-") else None
            out.print(Text(line, style=style or ""))

    with_chorus(go, as_json)


def _spec_yaml(spec: AgentSpec) -> str:
    return yaml.safe_dump(spec.model_dump(mode="json", exclude={"version"}), sort_keys=True)


@agents_app.command("rollback")
def agents_rollback(
    name: str, version: int, author: AuthorOpt = None, as_json: JsonOpt = False
) -> None:
    """Make an earlier version current again; recorded as a new version (audit trail)."""

    async def go(chorus: ChorusClient) -> None:
        current = await chorus.catalog.rollback(name, version, author=author or default_author())
        if as_json:
            out.print_json(current.model_dump_json())
        else:
            out.print(f"{name}: v{current.version} is now current (configuration of v{version})")

    with_chorus(go, as_json)
