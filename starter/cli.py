"""The ``chorus`` command line (typer + rich).

Every command takes ``--json`` for machine-readable output. Exit codes: 0 success, 1 the run
failed or was cancelled, 2 bad input or an unreachable service.
"""

from __future__ import annotations

import asyncio
import difflib
import getpass
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
import yaml
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from chorus.config.catalog import CatalogError, load_catalog
from chorus.config.settings import get_settings
from chorus.contracts import validation
from chorus.contracts.drafting import (
    CollaboratorRequest,
    CommentRequest,
    EditRequest,
    RevisionRequest,
    Role,
    TextEdit,
    UserRequest,
)
from chorus.contracts.models import AgentSpec, RunProgress, RunResult, StepResult
from chorus.observability.logs import configure_logging
from chorus.storage import db
from starter import dev
from starter.export import load_template, render, template_names
from starter.health import check_health
from starter.plan import Plan, load_plan, parse_agents
from starter.sdk import ChorusClient, ChorusInputError, RunFailedError, RunHandle

app = typer.Typer(
    help="Chorus: durable multi-agent LLM orchestration on Temporal.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
agents_app = typer.Typer(help="Inspect the agent catalog.", no_args_is_help=True)
dev_app = typer.Typer(
    help="The embedded stack: Temporal dev server, local LLM, worker.", no_args_is_help=True
)
app.add_typer(agents_app, name="agents")
draft_app = typer.Typer(
    help="Collaborative drafts: one long-lived workflow per draft.", no_args_is_help=True
)
app.add_typer(dev_app, name="dev")
app.add_typer(draft_app, name="draft")
budget_app = typer.Typer(
    help="Budgets in USD enforced across all workers (daily, per run, per agent).",
    no_args_is_help=True,
)
app.add_typer(budget_app, name="budget")

out = Console()
err = Console(stderr=True, soft_wrap=True)  # never split an error message across lines
T = TypeVar("T")

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


class Pattern(StrEnum):
    """Orchestration patterns."""

    sequential = "sequential"
    parallel = "parallel"


def _fail(message: str, code: int = 2, as_json: bool = False, **extra: Any) -> NoReturn:
    if as_json:
        out.print_json(json.dumps({"error": message, **extra}, default=str))
    else:
        err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def _run(coro: Coroutine[Any, Any, T], as_json: bool = False) -> T:
    try:
        return asyncio.run(coro)
    except (ChorusInputError, CatalogError, db.AgentConfigError, PermissionError) as exc:
        _fail(str(exc), 2, as_json)
    except LookupError as exc:
        _fail(str(exc.args[0] if exc.args else exc), 2, as_json)
    except dev.DevStackError as exc:
        _fail(str(exc), 2, as_json)
    except RuntimeError as exc:
        if isinstance(exc, RunFailedError):
            raise
        _fail(str(exc), 2, as_json)


def _with_chorus(fn: Callable[[ChorusClient], Coroutine[Any, Any, None]], as_json: bool) -> None:
    """Run ``fn`` with a connected client, closing its PostgreSQL pool afterwards."""

    async def go() -> None:
        chorus = await ChorusClient.connect()
        try:
            await fn(chorus)
        finally:
            await chorus.close()

    _run_reporting_failures(go(), as_json)


# --- run ---------------------------------------------------------------------------------


@app.command()
def run(
    pattern: Annotated[Pattern, typer.Argument(help="sequential or parallel")],
    task: Annotated[str, typer.Option("--task", "-t", help="What the agents should do.")],
    agents: Annotated[
        str | None,
        typer.Option(
            "--agents",
            "-a",
            help="Comma-separated steps; 'a>b' is a sequential group, 'a|b' a parallel group.",
        ),
    ] = None,
    input_file: Annotated[
        Path | None,
        typer.Option("--input", "-i", help="Input document (UTF-8 text file; - for stdin)."),
    ] = None,
    plan_file: Annotated[
        Path | None, typer.Option("--plan", help="YAML plan file for arbitrary nesting.")
    ] = None,
    aggregator: Annotated[
        str, typer.Option(help="Agent that merges parallel outputs; 'none' joins them.")
    ] = "aggregator",
    min_successes: Annotated[int, typer.Option(help="Parallel: branches that must succeed.")] = 1,
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Print the workflow id and UI link, don't wait.")
    ] = False,
    workflow_id: Annotated[str | None, typer.Option(help="Use this workflow id.")] = None,
    callback_url: Annotated[
        str | None,
        typer.Option(
            "--callback-url",
            help="POST the signed result here when the run ends (the worker needs "
            "CHORUS_CALLBACK_SECRET).",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Start a run and wait for its result with live progress (or --detach)."""
    agg = None if aggregator.lower() == "none" else aggregator
    if plan_file is not None:
        if agents:
            _fail("give either --agents or --plan, not both", as_json=as_json)
        plan = _run(_async(lambda: load_plan(plan_file)), as_json)
        if plan.pattern != pattern.value:
            _fail(
                f"--plan: {plan_file} is a {plan.pattern} plan, not {pattern.value}",
                as_json=as_json,
            )
    elif agents:
        steps = _run(_async(lambda: parse_agents(agents, pattern.value, agg)), as_json)
        plan = Plan(pattern.value, steps, agg, min_successes)
    else:
        _fail(
            "--agents or --plan is required, e.g. --agents analyst,writer,critic", as_json=as_json
        )
    document, document_name = "", None
    if input_file is not None and str(input_file) == "-":
        document, document_name = sys.stdin.read(), "stdin"
    elif input_file is not None:
        try:
            document = input_file.read_text(encoding="utf-8")
        except OSError as exc:
            _fail(f"--input: cannot read {input_file}: {exc.strerror}", as_json=as_json)
        except UnicodeDecodeError:
            _fail(f"--input: {input_file} is not UTF-8 text", as_json=as_json)
        document_name = input_file.name

    async def go(chorus: ChorusClient) -> None:
        if plan.pattern == "sequential":
            handle = await chorus.start_sequential(
                task,
                plan.steps,
                document=document,
                document_name=document_name,
                workflow_id=workflow_id,
                callback_url=callback_url,
            )
        else:
            handle = await chorus.start_parallel(
                task,
                plan.steps,
                aggregator=plan.aggregator,
                min_successes=plan.min_successes,
                document=document,
                document_name=document_name,
                workflow_id=workflow_id,
                callback_url=callback_url,
            )
        if detach:
            if as_json:
                out.print_json(
                    json.dumps(
                        {
                            "workflow_id": handle.workflow_id,
                            "run_id": handle.run_id,
                            "ui_url": handle.ui_url,
                        }
                    )
                )
            else:
                out.print(f"started [bold]{handle.workflow_id}[/]")
                out.print(f"Temporal UI: {handle.ui_url}", highlight=False)
            return
        if not await chorus.task_queue_pollers():
            err.print(
                f"[yellow]warning:[/] no worker polls task queue {chorus.settings.task_queue!r}; "
                "the run waits, durably, until one does (start one with `chorus dev up` or "
                "`chorus worker`)",
                highlight=False,
            )
        if not as_json:
            err.print(f"started [bold]{handle.workflow_id}[/] — {handle.ui_url}", highlight=False)
        result = await _wait_with_progress(handle, show=not as_json)
        _print_result(result, handle.ui_url, as_json)

    _with_chorus(go, as_json)


def _async(fn: Callable[[], T]) -> Coroutine[Any, Any, T]:
    async def wrapper() -> T:
        return fn()

    return wrapper()


def _run_reporting_failures(coro: Coroutine[Any, Any, None], as_json: bool) -> None:
    try:
        _run(coro, as_json)
    except RunFailedError as exc:
        if as_json:
            out.print_json(
                json.dumps(
                    {
                        "workflow_id": exc.workflow_id,
                        "status": exc.status,
                        "error": str(exc),
                        "partial": exc.partial.model_dump(mode="json") if exc.partial else None,
                    }
                )
            )
        else:
            if exc.partial and exc.partial.steps:
                out.print(_steps_table(exc.partial.steps))
            err.print(f"[bold red]{escape(str(exc))}[/]", highlight=False)
        raise typer.Exit(1) from None


async def _wait_with_progress(handle: RunHandle, *, show: bool) -> RunResult:
    result_task = asyncio.ensure_future(handle.result())
    started = time.monotonic()
    if not show:
        return await result_task
    last: RunProgress | None = None

    async def poll() -> RunProgress | None:
        try:
            return await handle.progress()
        except Exception:  # best effort: no worker yet, or a transient RPC error
            return last

    if err.is_terminal:
        with Live(console=err, refresh_per_second=4, transient=True) as live:
            while not result_task.done():
                last = await poll()
                live.update(_progress_view(last, time.monotonic() - started))
                await asyncio.wait({result_task}, timeout=0.5)
    else:
        seen: dict[str, str] = {}
        while not result_task.done():
            last = await poll()
            for step in last.steps if last else []:
                key = f"{step.status}:{step.provider}"
                if seen.get(step.name) != key:
                    seen[step.name] = key
                    via = f" via {step.provider}" if step.provider else ""
                    err.print(
                        f"[{time.monotonic() - started:6.1f}s] {step.name}: {step.status}{via}",
                        highlight=False,
                    )
            await asyncio.wait({result_task}, timeout=0.5)
    return await result_task


def _progress_view(progress: RunProgress | None, elapsed: float) -> Table:
    table = Table(title=f"running… {elapsed:5.1f} s", title_justify="left")
    for col in ("#", "step", "kind", "status", "provider", "time"):
        table.add_column(col)
    styles = {"pending": "dim", "running": "yellow", "succeeded": "green", "failed": "red"}
    for i, step in enumerate(progress.steps if progress else [], 1):
        if step.started_at and step.finished_at:
            took = f"{(step.finished_at - step.started_at).total_seconds():.1f} s"
        else:
            took = ""
        table.add_row(
            str(i),
            step.name,
            step.kind,
            Text(step.status, style=styles[step.status]),
            step.provider or "",
            took,
        )
    return table


def _steps_table(steps: list[StepResult]) -> Table:
    table = Table(show_lines=False)
    for col in (
        "#",
        "step",
        "provider:model",
        "tokens in/out",
        "cost USD",
        "latency ms",
        "attempts",
        "status",
    ):
        table.add_column(
            col,
            justify="right"
            if col in ("tokens in/out", "cost USD", "latency ms", "attempts")
            else "left",
        )

    def add(step: StepResult, number: str, depth: int) -> None:
        fallbacks = [t for t in step.providers_tried if t.status == "failed"]
        provider = (
            f"{step.provider}:{step.model}"
            if step.provider
            else ("child workflow" if step.kind != "agent" else "")
        )
        if fallbacks:
            provider += f" (after {len(fallbacks)} fallback{'s' * (len(fallbacks) > 1)})"
        status = Text(step.status, style="green" if step.status == "succeeded" else "red")
        table.add_row(
            number,
            "  " * depth + step.name,
            provider,
            f"{step.input_tokens}/{step.output_tokens}",
            f"{step.cost_usd:.6f}",
            f"{step.latency_ms:.0f}",
            str(step.attempts),
            status,
        )
        for j, child in enumerate(step.steps, 1):
            add(child, f"{number}.{j}", depth + 1)

    for i, step in enumerate(steps, 1):
        add(step, str(i), 0)
    return table


def _print_result(result: RunResult, ui_url: str, as_json: bool) -> None:
    if as_json:
        out.print_json(
            json.dumps(
                {"ui_url": ui_url, "status": "succeeded", "result": result.model_dump(mode="json")}
            )
        )
        return
    t = result.totals
    out.print(_steps_table(result.steps))
    for branch in result.failed_branches:
        error = escape(branch.error or "")
        out.print(f"[red]failed branch[/] {branch.name}: {error}", highlight=False)
    out.print(
        Panel(
            result.output or "(empty output)", title=f"{result.pattern} result", title_align="left"
        )
    )
    out.print(
        f"totals: {t.llm_calls} LLM calls, {t.attempts} attempts, "
        f"{t.input_tokens} tokens in / {t.output_tokens} out, ${t.cost_usd:.6f}, "
        f"wall {t.wall_ms / 1000:.1f} s",
        highlight=False,
    )
    out.print(f"workflow id: {result.workflow_id}", highlight=False)
    out.print(f"Temporal UI: {ui_url}", highlight=False)


# --- status / result / cancel / list -------------------------------------------------------


@app.command()
def status(workflow_id: str, as_json: JsonOpt = False) -> None:
    """Show a run's status and live step progress."""

    async def go(chorus: ChorusClient) -> None:
        st = await chorus.status(workflow_id)
        if as_json:
            out.print_json(
                json.dumps(
                    {
                        "workflow_id": st.workflow_id,
                        "run_id": st.run_id,
                        "type": st.workflow_type,
                        "status": st.status,
                        "started_at": st.started_at,
                        "closed_at": st.closed_at,
                        "summary": st.summary,
                        "error": st.error,
                        "error_type": st.error_type,
                        "ui_url": st.ui_url,
                        "progress": st.progress.model_dump(mode="json") if st.progress else None,
                    },
                    default=str,
                )
            )
            return
        out.print(f"[bold]{st.workflow_id}[/] ({st.workflow_type}): [bold]{st.status}[/]")
        if st.summary:
            out.print(st.summary, highlight=False)
        if st.error:
            out.print(f"[red]failed:[/] {escape(st.error)}", highlight=False)
        out.print(f"started {st.started_at}  closed {st.closed_at or '-'}", highlight=False)
        if st.progress:
            elapsed = ((st.closed_at or datetime.now(UTC)) - st.progress.started_at).total_seconds()
            out.print(_progress_view(st.progress, elapsed))
        out.print(f"Temporal UI: {st.ui_url}", highlight=False)

    _with_chorus(go, as_json)


@app.command()
def result(workflow_id: str, as_json: JsonOpt = False) -> None:
    """Wait for a run to end and print its result."""

    async def go(chorus: ChorusClient) -> None:
        res = await chorus.result(workflow_id)
        _print_result(res, chorus.ui_url(workflow_id), as_json)

    _with_chorus(go, as_json)


@app.command()
def cancel(workflow_id: str, as_json: JsonOpt = False) -> None:
    """Cancel a running run (in-flight LLM calls are cancelled too)."""

    async def go(chorus: ChorusClient) -> None:
        await chorus.cancel(workflow_id)
        if as_json:
            out.print_json(json.dumps({"workflow_id": workflow_id, "cancel_requested": True}))
        else:
            out.print(f"cancellation requested for {workflow_id}")

    _with_chorus(go, as_json)


@app.command("list")
def list_runs(
    limit: Annotated[int, typer.Option(help="Rows to show.")] = 20,
    query: Annotated[
        str | None, typer.Option(help="Extra visibility query, e.g. \"ExecutionStatus='Running'\".")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List recent runs, newest first."""

    async def go(chorus: ChorusClient) -> None:
        rows = await chorus.list_runs(limit, query)
        if as_json:
            out.print_json(json.dumps([r.__dict__ for r in rows], default=str))
            return
        table = Table()
        for col in ("workflow id", "type", "status", "started", "closed", "parent"):
            table.add_column(col)
        for r in rows:
            table.add_row(
                r.workflow_id,
                r.workflow_type,
                r.status,
                r.started_at.strftime("%Y-%m-%d %H:%M:%S") if r.started_at else "",
                r.closed_at.strftime("%H:%M:%S") if r.closed_at else "",
                r.parent_id or "",
            )
        out.print(table)

    _with_chorus(go, as_json)


# --- agents ------------------------------------------------------------------------------


def _default_author() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


AuthorOpt = Annotated[str | None, typer.Option(help="Recorded as the change's author.")]


@agents_app.command("list")
def agents_list(as_json: JsonOpt = False) -> None:
    """List the current version of every agent (from PostgreSQL)."""

    async def go(chorus: ChorusClient) -> None:
        agents = await chorus.agents()
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

    _with_chorus(go, as_json)


@agents_app.command("show")
def agents_show(
    name: str,
    version: Annotated[int | None, typer.Option(help="A kept version; default current.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one agent's configuration (current, or --version N)."""

    async def go(chorus: ChorusClient) -> None:
        history = await chorus.agent_history(name)
        chosen = (
            history[0]
            if version is None
            else next((h for h in history if h.version == version), None)
        )
        if chosen is None:
            kept = ", ".join(str(h.version) for h in history)
            raise db.AgentConfigError(f"agent {name!r} has no version {version}; kept: {kept}")
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
        out.print(
            f"set by {chosen.author} at {chosen.created_at:%Y-%m-%d %H:%M:%S %Z}"
            + (f" — {chosen.comment}" if chosen.comment else ""),
            highlight=False,
        )
        if spec.output_schema:
            out.print_json(json.dumps(spec.output_schema))

    _with_chorus(go, as_json)


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
        results = await chorus.set_agents(
            list(specs.values()), author=author or _default_author(), comment=comment
        )
        if as_json:
            out.print_json(
                json.dumps([{"agent": n, "version": v, "changed": c} for n, v, c in results])
            )
            return
        for name, version, changed in results:
            out.print(f"{name}: v{version} " + ("[green]stored[/]" if changed else "(unchanged)"))

    _with_chorus(go, as_json)


@agents_app.command("history")
def agents_history(name: str, as_json: JsonOpt = False) -> None:
    """List the kept versions of an agent with author, time and comment (audit trail)."""

    async def go(chorus: ChorusClient) -> None:
        history = await chorus.agent_history(name)
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

    _with_chorus(go, as_json)


@agents_app.command("diff")
def agents_diff(name: str, v1: int, v2: int, as_json: JsonOpt = False) -> None:
    """Show what changed between two versions of an agent (unified diff of their YAML)."""

    async def go(chorus: ChorusClient) -> None:
        pool = await chorus.pool()
        a = await db.agent_version(pool, name, v1)
        b = await db.agent_version(pool, name, v2)
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

    _with_chorus(go, as_json)


def _spec_yaml(spec: AgentSpec) -> str:
    return yaml.safe_dump(spec.model_dump(mode="json", exclude={"version"}), sort_keys=True)


@agents_app.command("rollback")
def agents_rollback(
    name: str, version: int, author: AuthorOpt = None, as_json: JsonOpt = False
) -> None:
    """Make an earlier version current again; recorded as a new version (audit trail)."""

    async def go(chorus: ChorusClient) -> None:
        current = await chorus.rollback_agent(name, version, author=author or _default_author())
        if as_json:
            out.print_json(current.model_dump_json())
        else:
            out.print(f"{name}: v{current.version} is now current (configuration of v{version})")

    _with_chorus(go, as_json)


# --- record: costs, history, health --------------------------------------------------------


class CostBy(StrEnum):
    """Groupings of ``chorus costs``."""

    agent = "agent"
    provider = "provider"
    model = "model"
    day = "day"


@app.command()
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
            _fail(f"--since: {since!r} is not an ISO date, e.g. 2026-11-01", as_json=as_json)
        if since_at.tzinfo is None:
            since_at = since_at.replace(tzinfo=UTC)

    async def go(chorus: ChorusClient) -> None:
        rows = await chorus.costs(by=by.value, since=since_at)
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

    _with_chorus(go, as_json)


@budget_app.command("show")
def budget_show(as_json: JsonOpt = False) -> None:
    """Today's spend (UTC) against each budget: limit, spent, reserved, remaining."""

    async def go(chorus: ChorusClient) -> None:
        lines = await chorus.budgets()
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

    _with_chorus(go, as_json)


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
            _fail("--alert needs --daily (the alert belongs to the daily budget)", as_json=as_json)
        changes.append(("daily", daily, alert))
    if run is not None:
        changes.append(("run", run, None))
    for item in agent or []:
        name, sep, amount = item.partition("=")
        try:
            changes.append((f"agent:{name.strip()}", float(amount), None))
        except ValueError:
            _fail(f"--agent: {item!r} is not NAME=USD", as_json=as_json)
        if not sep or not name.strip():
            _fail(f"--agent: {item!r} is not NAME=USD", as_json=as_json)
    changes += [(scope, None, None) for scope in remove or []]
    if not changes:
        _fail("nothing to set: give --daily, --run, --agent or --remove", as_json=as_json)

    async def go(chorus: ChorusClient) -> None:
        for scope, limit, alert_at in changes:
            await chorus.set_budget(scope, limit, alert_usd=alert_at, author=_default_author())
        if as_json:
            out.print_json(json.dumps([line.model_dump() for line in await chorus.budgets()]))
        else:
            out.print(f"budgets updated: {', '.join(c[0] for c in changes)}")

    _with_chorus(go, as_json)


@app.command()
def history(
    workflow_id: str,
    full: Annotated[bool, typer.Option(help="Print whole prompts, not their first lines.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Print a run's transcript (every agent call, with its children's) from PostgreSQL."""

    async def go(chorus: ChorusClient) -> None:
        entries = await chorus.transcript(workflow_id)
        if as_json:
            out.print_json(json.dumps(entries, default=str))
            return
        if not entries:
            out.print(f"{workflow_id}: no agent calls recorded")
        for n, e in enumerate(entries, 1):
            head = (
                f"[{n}] {e['agent']} v{e['agent_version']} via {e['provider']}:{e['model']}"
                f" — {e['input_tokens']}/{e['output_tokens']} tokens, ${e['cost_usd']:.6f},"
                f" {e['latency_ms']:.0f} ms, attempt {e['attempt']}"
            )
            out.print(Text(head, style="bold"))
            if e["workflow_id"] != workflow_id:
                out.print(Text(f"    in child workflow {e['workflow_id']}", style="dim"))
            prompt = e["user_prompt"] if full else _first_lines(e["user_prompt"], 6)
            out.print(Panel(prompt, title="prompt", title_align="left", style="dim"))
            out.print(Panel(e["completion"] or "(empty)", title="completion", title_align="left"))

    _with_chorus(go, as_json)


def _first_lines(text: str, n: int) -> str:
    lines = text.splitlines()
    return "\n".join(lines[:n]) + (
        f"\n… ({len(lines) - n} more lines; --full)" if len(lines) > n else ""
    )


codec_app = typer.Typer(
    help="Encrypted history: the payload codec's keys and codec server.", no_args_is_help=True
)
app.add_typer(codec_app, name="codec")


@codec_app.command("serve")
def codec_serve(
    port: Annotated[
        int | None, typer.Option(help="Port (default CHORUS_CODEC_SERVER_PORT, 8081).")
    ] = None,
    host: Annotated[
        str, typer.Option(help="Interface to bind; keep 127.0.0.1 unless behind a proxy.")
    ] = "127.0.0.1",
) -> None:
    """Serve /encode and /decode so the Temporal UI and CLI show encrypted payloads decoded."""
    from chorus.runtime.codec import CodecError
    from starter.codec_server import serve

    settings = get_settings()
    configure_logging(settings.log_level)
    try:
        serve(settings, host=host, port=port)
    except CodecError as exc:
        _fail(str(exc))


@codec_app.command("keygen")
def codec_keygen(
    key_id: Annotated[str, typer.Option(help="Id stored in each payload's metadata.")] = "k1",
) -> None:
    """Print a new ``<id>:<base64 32-byte key>`` entry for CHORUS_CODEC_KEYS (first = active)."""
    from chorus.runtime.codec import generate_key

    typer.echo(f"{key_id}:{generate_key()}")


callbacks_app = typer.Typer(help="Signed run callbacks (Standard Webhooks).", no_args_is_help=True)
app.add_typer(callbacks_app, name="callbacks")


@callbacks_app.command("secret")
def callbacks_secret() -> None:
    """Print a new Standard Webhooks secret (``whsec_…``) for CHORUS_CALLBACK_SECRET."""
    from chorus.integrations.webhooks import new_secret

    typer.echo(new_secret())


@app.command()
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


# --- drafts ------------------------------------------------------------------------------

UserOpt = Annotated[str, typer.Option("--user", "-u", help="Who acts (a collaborator id).")]
ReaderOpt = Annotated[
    str,
    typer.Option(
        "--user",
        "-u",
        envvar="CHORUS_USER",
        help="Who reads (a collaborator id; default $CHORUS_USER).",
    ),
]
ROLES = ("owner", "editor", "reviewer", "viewer")


def _parse_collaborators(items: list[str] | None) -> dict[str, Role]:
    found: dict[str, Role] = {}
    for item in items or []:
        user, sep, role = item.partition("=")
        if not sep or role not in ROLES:
            raise ChorusInputError(
                f"--collaborator {item!r}: write user=role, role one of owner, editor, "
                "reviewer, viewer"
            )
        found[user] = role  # type: ignore[assignment]
    return found


@draft_app.command("new")
def draft_new(
    title: Annotated[str, typer.Option(help="Draft title.")],
    user: UserOpt,
    template: Annotated[
        str | None, typer.Option(help=f"Start from a template: {', '.join(template_names())}.")
    ] = None,
    brief: Annotated[str | None, typer.Option(help="Let the writer agent write v1.")] = None,
    content_file: Annotated[Path | None, typer.Option(help="Start from this text file.")] = None,
    collaborator: Annotated[
        list[str] | None, typer.Option(help="user=role (editor, reviewer, viewer); repeatable.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Start a draft (a long-lived workflow) from a template, a brief or a file."""
    sources = [x for x in (template, brief, content_file) if x is not None]
    if len(sources) > 1:
        _fail("give at most one of --template, --brief, --content-file", as_json=as_json)

    async def go(chorus: ChorusClient) -> None:
        content = ""
        if template:
            try:
                content = load_template(template)
            except ValueError as exc:
                raise ChorusInputError(f"--template: {exc}") from exc
        elif content_file:
            content = content_file.read_text(encoding="utf-8")
        draft_id = await chorus.start_draft(
            title,
            user,
            content=content,
            brief=brief,
            collaborators=_parse_collaborators(collaborator),
        )
        if as_json:
            out.print_json(json.dumps({"draft_id": draft_id, "ui_url": chorus.ui_url(draft_id)}))
        else:
            out.print(f"draft [bold]{draft_id}[/] — {chorus.ui_url(draft_id)}", highlight=False)

    _with_chorus(go, as_json)


@draft_app.command("show")
def draft_show(draft_id: str, user: ReaderOpt, as_json: JsonOpt = False) -> None:
    """Show a draft's current text, version, status and collaborators (collaborators only)."""

    async def go(chorus: ChorusClient) -> None:
        view = await chorus.draft(draft_id, user=user)
        if as_json:
            out.print_json(view.model_dump_json())
            return
        out.print(
            Panel(
                validation.for_display(view.content or "(empty)"),
                title=f"{view.title} — v{view.version}, {view.status}",
                title_align="left",
            )
        )
        people = ", ".join(f"{u} ({r})" for u, r in view.collaborators.items())
        out.print(f"collaborators: {people}; open comments: {view.open_comments}", highlight=False)

    _with_chorus(go, as_json)


def _draft_update(draft_id: str, update: str, request: Any, as_json: bool) -> None:
    async def go(chorus: ChorusClient) -> None:
        result = await chorus.draft_update(draft_id, update, request)
        if as_json:
            out.print_json(result.model_dump_json())
        else:
            rebased = f" (rebased from v{result.rebased_from})" if result.rebased_from else ""
            out.print(f"{draft_id}: {update} accepted, now version {result.version}{rebased}")

    _with_chorus(go, as_json)


@draft_app.command("edit")
def draft_edit(
    draft_id: str,
    user: UserOpt,
    base: Annotated[int, typer.Option(help="Version your edit is based on.")],
    content_file: Annotated[Path | None, typer.Option(help="Replace the whole text.")] = None,
    start: Annotated[int | None, typer.Option(help="Range start (characters).")] = None,
    end: Annotated[int | None, typer.Option(help="Range end (characters).")] = None,
    text: Annotated[str | None, typer.Option(help="Text for the range.")] = None,
    summary: Annotated[str, typer.Option(help="What the change does.")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Edit a draft: the whole text (--content-file) or a range (--start --end --text)."""
    try:
        if content_file is not None:
            request = EditRequest(
                user=user,
                base_version=base,
                content=content_file.read_text(encoding="utf-8"),
                summary=summary,
            )
        else:
            if start is None or end is None or text is None:
                raise ChorusInputError("give --content-file, or all of --start, --end and --text")
            request = EditRequest(
                user=user,
                base_version=base,
                summary=summary,
                edit=TextEdit(start=start, end=end, text=text),
            )
    except ValueError as exc:
        _fail(f"edit: {exc}", as_json=as_json)
    _draft_update(draft_id, "edit", request, as_json)


@draft_app.command("revise")
def draft_revise(
    draft_id: str,
    user: UserOpt,
    base: Annotated[int, typer.Option(help="Version the instruction refers to (current).")],
    instruction: Annotated[str, typer.Option(help="e.g. 'friendlier tone', 'half as long'.")],
    agent: Annotated[str, typer.Option(help="Agent that rewrites.")] = "writer",
    as_json: JsonOpt = False,
) -> None:
    """Have an agent rewrite the draft per an instruction (a new revision by the agent)."""
    _draft_update(
        draft_id,
        "request_revision",
        RevisionRequest(user=user, base_version=base, instruction=instruction, agent=agent),
        as_json,
    )


def _lifecycle(update: str) -> Callable[..., None]:
    def command(draft_id: str, user: UserOpt, as_json: JsonOpt = False) -> None:
        _draft_update(draft_id, update, UserRequest(user=user), as_json)

    command.__doc__ = {
        "submit": "Send the draft for review (drafting → in_review).",
        "approve": "Approve the draft (a reviewer who did not make the last edit).",
        "publish": "Publish an approved draft; it becomes read-only.",
        "archive": "Archive the draft; its workflow ends.",
    }[update]
    return command


for _name in ("submit", "approve", "publish", "archive"):
    draft_app.command(_name)(_lifecycle(_name))


@draft_app.command("comment")
def draft_comment(
    draft_id: str,
    user: UserOpt,
    text: Annotated[str, typer.Option(help="The comment.")],
    start: Annotated[int, typer.Option(help="Anchor start (characters).")] = 0,
    end: Annotated[int, typer.Option(help="Anchor end (characters).")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Comment on a range of the draft (a signal: fire and forget)."""
    _send_signal(
        draft_id, "comment", CommentRequest(user=user, text=text, start=start, end=end), as_json
    )


def _send_signal(
    draft_id: str,
    signal: str,
    request: CommentRequest | CollaboratorRequest,
    as_json: bool,
) -> None:
    async def go(chorus: ChorusClient) -> None:
        await chorus.draft_signal(draft_id, signal, request)
        if as_json:
            out.print_json(json.dumps({"draft_id": draft_id, "sent": signal}))
        else:
            out.print(f"{signal} sent to {draft_id}")

    _with_chorus(go, as_json)


@draft_app.command("add-collaborator")
def draft_add_collaborator(
    draft_id: str,
    user: UserOpt,
    collaborator: Annotated[str, typer.Option(help="User to add.")],
    role: Annotated[str, typer.Option(help="owner, editor, reviewer or viewer.")] = "editor",
    as_json: JsonOpt = False,
) -> None:
    """Add a collaborator (owners only; a signal)."""
    if role not in ROLES:
        _fail(f"--role: {role!r} is not one of {', '.join(ROLES)}", as_json=as_json)
    request = CollaboratorRequest(user=user, collaborator=collaborator, role=role)
    _send_signal(draft_id, "add_collaborator", request, as_json)


class ExportFormatOpt(StrEnum):
    """Export formats."""

    md = "md"
    html = "html"
    json = "json"


@draft_app.command("export")
def draft_export(
    draft_id: str,
    user: ReaderOpt,
    fmt: Annotated[ExportFormatOpt, typer.Option("--format", help="md, html or json.")],
    output: Annotated[Path | None, typer.Option(help="Write to this file, not stdout.")] = None,
) -> None:
    """Render the saved draft as Markdown, HTML (Markdown rendered, raw HTML off) or JSON."""

    async def go(chorus: ChorusClient) -> None:
        await chorus.check_reader(draft_id, user)
        pool = await chorus.pool()
        text = render(
            await db.draft_row(pool, draft_id), await db.draft_revisions(pool, draft_id), fmt.value
        )
        if output:
            output.write_text(text, encoding="utf-8")
        else:
            sys.stdout.write(text)

    _with_chorus(go, False)


@draft_app.command("history")
def draft_history(
    draft_id: str,
    user: ReaderOpt,
    diff: Annotated[bool, typer.Option(help="Print each revision's diff.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """List the draft's revisions saved in PostgreSQL (author, time, base, summary)."""

    async def go(chorus: ChorusClient) -> None:
        await chorus.check_reader(draft_id, user)
        revisions = await db.draft_revisions(await chorus.pool(), draft_id)
        if as_json:
            out.print_json(
                json.dumps(
                    [{k: v for k, v in r.items() if k != "content_after"} for r in revisions],
                    default=str,
                )
            )
            return
        for r in revisions:
            _print_revision(r, diff)

    _with_chorus(go, as_json)


def _print_revision(r: dict[str, Any], diff: bool) -> None:
    out.print(
        f"v{r['version']}  {r['created_at']:%Y-%m-%d %H:%M:%S}  {r['author']}"
        f"  (base v{r['base_version']})  {r['summary']}",
        highlight=False,
    )
    if diff:
        for line in r["diff"].splitlines():
            style = "green" if line.startswith("+") else "red" if line.startswith("-") else ""
            out.print(Text(line, style=style))


@draft_app.command("watch")
def draft_watch(
    draft_id: str,
    user: ReaderOpt,
    timeout: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    diff: Annotated[bool, typer.Option(help="Print each revision's diff.")] = False,
) -> None:
    """Print revisions as they are saved, until the draft is archived (or --timeout)."""

    async def go(chorus: ChorusClient) -> None:
        await chorus.check_reader(draft_id, user)
        pool = await chorus.pool()
        seen = 0
        deadline = time.monotonic() + timeout if timeout else None
        while deadline is None or time.monotonic() < deadline:
            for r in await db.draft_revisions(pool, draft_id, seen):
                _print_revision(r, diff)
                seen = r["version"]
            try:
                if (await db.draft_row(pool, draft_id))["status"] == "archived":
                    return
            except LookupError:
                pass
            await asyncio.sleep(0.5)

    _with_chorus(go, False)


# --- dev stack and worker ----------------------------------------------------------------


ServicesOpt = Annotated[
    str | None, typer.Option(help="Comma-separated subset of postgres,temporal,llm,worker.")
]


@dev_app.command("up")
def dev_up(services: ServicesOpt = None, as_json: JsonOpt = False) -> None:
    """Start the embedded stack on loopback and wait until every part is healthy."""
    settings = get_settings()
    names = tuple(_services(services, as_json))
    started = time.monotonic()
    rows = _run(
        dev.up(
            settings,
            names,
            on_event=(lambda m: None) if as_json else (lambda m: err.print(m, highlight=False)),
        ),
        as_json,
    )
    if as_json:
        out.print_json(json.dumps([_status_dict(r) for r in rows], default=str))
        return
    out.print(_status_table(rows))
    out.print(
        f"ready in {time.monotonic() - started:.1f} s — Temporal UI: {settings.temporal_ui_url}"
    )


@dev_app.command("down")
def dev_down(as_json: JsonOpt = False) -> None:
    """Stop the embedded stack started from this data dir (by PID)."""
    events: list[str] = []
    dev.down(
        get_settings(),
        on_event=events.append if as_json else (lambda m: err.print(m, highlight=False)),
    )
    if as_json:
        out.print_json(json.dumps({"events": events}))


@dev_app.command("status")
def dev_status(as_json: JsonOpt = False) -> None:
    """Say what runs where: PIDs, addresses, health, log files."""
    rows = _run(dev.status(get_settings()), as_json)
    if as_json:
        out.print_json(json.dumps([_status_dict(r) for r in rows], default=str))
    else:
        out.print(_status_table(rows))
    if not all(r.healthy for r in rows):
        raise typer.Exit(1)


def _services(services: str | None, as_json: bool) -> list[str]:
    try:
        return list(dev.iter_services(services))
    except ValueError as exc:
        _fail(str(exc), as_json=as_json)


def _status_dict(row: dev.ServiceStatus) -> dict[str, Any]:
    return {**row.__dict__, "log_file": str(row.log_file)}


def _status_table(rows: list[dev.ServiceStatus]) -> Table:
    table = Table()
    for col in ("service", "pid", "healthy", "address", "detail", "log"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r.name,
            str(r.pid or "-"),
            Text("yes" if r.healthy else "no", style="green" if r.healthy else "red"),
            r.address,
            r.detail,
            str(r.log_file),
        )
    return table


@app.command()
def worker(
    max_concurrent_activities: Annotated[
        int, typer.Option(help="LLM calls in flight at once.")
    ] = 20,
    max_concurrent_workflow_tasks: Annotated[
        int, typer.Option(help="Workflow tasks at once.")
    ] = 50,
) -> None:
    """Run a worker in the foreground (JSON logs on stderr) until Ctrl-C/SIGTERM."""
    import worker as worker_module

    settings = get_settings()
    configure_logging(settings.log_level)
    options = worker_module.WorkerOptions(
        max_concurrent_activities=max_concurrent_activities,
        max_concurrent_workflow_tasks=max_concurrent_workflow_tasks,
    )
    _run(worker_module.run_worker(settings, options))


@app.command()
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

    _with_chorus(go, as_json)


def main() -> None:
    """Console-script entry point.

    Exits with ``os._exit`` once the command is done and its output flushed: the Temporal
    client's native runtime threads can race Python's interpreter finalization and abort the
    process ("PyGILState_Release ... finalizing", seen intermittently here), turning a
    successful command into a crash exit code. Skipping finalization is safe for this
    short-lived process: every pool and client is closed by the commands themselves.
    """
    code = 0
    try:
        app()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
