"""``chorus run``, ``status``, ``result``, ``cancel``, ``list`` and ``history``: runs."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from chorus.contracts.control import GateRecord
from chorus.contracts.models import RunProgress, RunResult
from chorus.streaming.stream_event import Assembler, StreamEvent
from starter.cli.support import (
    JsonOpt,
    as_coroutine,
    err,
    fail,
    out,
    pending_gate_lines,
    print_steps,
    run_async,
    with_chorus,
)
from starter.plan import Plan, load_plan, loop_from_flags, parse_agents
from starter.sdk import ChorusClient, RunHandle, RunStatus


class Pattern(StrEnum):
    """Orchestration patterns."""

    sequential = "sequential"
    parallel = "parallel"


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
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            "-f",
            help="Print each agent's text live as the model writes it, a header per step "
            "(with --json: one JSON event per line, then the result).",
        ),
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
    loop_until: Annotated[
        str | None,
        typer.Option(
            "--loop-until",
            help="Sequential: repeat the --agents steps until this holds, e.g. "
            "'reviewer.verdict=ready', 'reviewer.verdict=ready|approved' or 'phrase:APPROVED'.",
        ),
    ] = None,
    max_iterations: Annotated[
        int | None,
        typer.Option(help="Sequential: repeat the --agents steps at most N times (1-50)."),
    ] = None,
    max_cost_usd: Annotated[
        float | None, typer.Option(help="Loop: stop once its calls cost this much (USD).")
    ] = None,
    loop_output: Annotated[
        str | None,
        typer.Option(help="Loop: the agent whose output is the loop's (default: the last)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Start a run and wait for its result with live progress (or --detach)."""
    agg = None if aggregator.lower() == "none" else aggregator
    looping = [
        flag
        for flag, value in (
            ("--loop-until", loop_until),
            ("--max-iterations", max_iterations),
            ("--max-cost-usd", max_cost_usd),
            ("--loop-output", loop_output),
        )
        if value is not None
    ]
    if follow and detach:
        fail("give either --follow or --detach, not both", as_json=as_json)
    if looping and (plan_file is not None or pattern != Pattern.sequential):
        fail(
            f"{looping[0]}: loops the --agents of a sequential run; in a plan file write a "
            "{kind: loop, body: [...]} step",
            as_json=as_json,
        )
    if plan_file is not None:
        if agents:
            fail("give either --agents or --plan, not both", as_json=as_json)
        plan = run_async(as_coroutine(lambda: load_plan(plan_file)), as_json)
        if plan.pattern != pattern.value:
            fail(
                f"--plan: {plan_file} is a {plan.pattern} plan, not {pattern.value}",
                as_json=as_json,
            )
    elif agents:
        steps = run_async(as_coroutine(lambda: parse_agents(agents, pattern.value, agg)), as_json)
        steps = run_async(
            as_coroutine(
                lambda: loop_from_flags(
                    steps,
                    until_text=loop_until,
                    max_iterations=max_iterations,
                    max_cost_usd=max_cost_usd,
                    output_from=loop_output,
                )
            ),
            as_json,
        )
        plan = Plan(pattern.value, steps, agg, min_successes)
    else:
        fail("--agents or --plan is required, e.g. --agents analyst,writer,critic", as_json=as_json)
    document, document_name = "", None
    if input_file is not None and str(input_file) == "-":
        document, document_name = sys.stdin.read(), "stdin"
    elif input_file is not None:
        try:
            document = input_file.read_text(encoding="utf-8")
        except OSError as exc:
            fail(f"--input: cannot read {input_file}: {exc.strerror}", as_json=as_json)
        except UnicodeDecodeError:
            fail(f"--input: {input_file} is not UTF-8 text", as_json=as_json)
        document_name = input_file.name

    async def go(chorus: ChorusClient) -> None:
        if plan.pattern == "sequential":
            handle = await chorus.runs.start_sequential(
                task,
                plan.steps,
                document=document,
                document_name=document_name,
                workflow_id=workflow_id,
                callback_url=callback_url,
                stream=follow,
            )
        else:
            handle = await chorus.runs.start_parallel(
                task,
                plan.steps,
                aggregator=plan.aggregator,
                min_successes=plan.min_successes,
                document=document,
                document_name=document_name,
                workflow_id=workflow_id,
                callback_url=callback_url,
                stream=follow,
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
        if not await chorus.fleet.task_queue_pollers():
            err.print(
                f"[yellow]warning:[/] no worker polls task queue {chorus.settings.task_queue!r}; "
                "the run waits, durably, until one does (start one with `chorus dev up` or "
                "`chorus worker`)",
                highlight=False,
            )
        if not as_json:
            err.print(f"started [bold]{handle.workflow_id}[/] — {handle.ui_url}", highlight=False)
        if follow:
            await _follow(handle, as_json=as_json)
            result = await handle.result()
        else:
            result = await _wait_with_progress(handle, show=not as_json)
        _print_result(result, handle.ui_url, as_json, show_output=not follow)

    with_chorus(go, as_json)


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
                key = f"{step.status}:{step.provider}:{step.note}"
                if seen.get(step.name) != key:
                    seen[step.name] = key
                    via = f" via {step.provider}" if step.provider else ""
                    note = f" ({step.note})" if step.note else ""
                    err.print(
                        f"[{time.monotonic() - started:6.1f}s] {step.name}: {step.status}{via}"
                        f"{note}",
                        highlight=False,
                        markup=False,
                    )
            for gate in last.gates if last else []:
                if gate.pending and seen.get(f"gate:{gate.key}") is None:
                    seen[f"gate:{gate.key}"] = "pending"
                    for line in pending_gate_lines(handle.workflow_id, [gate]):
                        err.print(line, highlight=False, markup=False, soft_wrap=True)
            await asyncio.wait({result_task}, timeout=0.5)
    return await result_task


def _progress_view(
    progress: RunProgress | None,
    elapsed: float,
    *,
    gates_caption: bool = True,
    ended: str | None = None,
) -> Table:
    """The steps of a run as they stand, with a caption naming the gates it waits at.

    A ``note`` column (``iteration 2 of 3``) is added when a control step has one;
    ``gates_caption=False`` leaves the caption out (``chorus status`` lists the gates).
    ``ended``: how a closed run ended (its Temporal status, e.g. ``COMPLETED``); the title
    then says so instead of ``running…``.
    """
    title = f"{ended.lower()} after {elapsed:.1f} s" if ended else f"running… {elapsed:5.1f} s"
    table = Table(title=title, title_justify="left")
    steps = progress.steps if progress else []
    notes = any(step.note for step in steps)
    for col in ("#", "step", "kind", "status", "provider", "tool calls", "time"):
        table.add_column(col)
    if notes:
        table.add_column("note")
    styles = {"pending": "dim", "running": "yellow", "succeeded": "green", "failed": "red"}
    for i, step in enumerate(steps, 1):
        if step.started_at and step.finished_at:
            took = f"{(step.finished_at - step.started_at).total_seconds():.1f} s"
        else:
            took = ""
        cells: list[str | Text] = [
            str(i),
            step.name,
            step.kind,
            Text(step.status, style=styles[step.status]),
            step.provider or "",
            str(step.tool_calls) if step.tool_calls else "",
            took,
        ]
        table.add_row(*cells, *([Text(step.note or "")] if notes else []))
    waiting = [g.gate for g in (progress.gates if progress else []) if g.pending]
    if waiting and gates_caption:
        table.caption = "waiting for approval at gate " + ", ".join(waiting)
        table.caption_justify = "left"
    return table


async def _follow(handle: RunHandle, *, as_json: bool) -> None:
    """Print the run's live events until it ends (``chorus run --follow``).

    Each step gets a header (agent, ``provider:model``, the attempt from the second on); its
    text follows as the model writes it. A retried attempt prints a marker saying that the
    text above it is void, then the new attempt's text. A step whose text was not streamed
    (``CHORUS_STREAM_TOKENS=false``, a reused completion) prints its output when it completes.
    With ``as_json`` each event is printed as one JSON line instead.
    """
    assembler = Assembler()
    shown: str | None = None  # the step whose text the terminal shows last
    streamed: dict[str, int] = {}  # characters of each step's current attempt printed

    def header(event: StreamEvent, note: str = "") -> None:
        step = assembler.steps[event.step or ""]
        attempt = f" · attempt {step.attempt}" if step.attempt > 1 else ""
        label = f" · {step.label}" if step.label else ""
        out.print()
        out.print(f"── {event.agent}{label}{attempt}{note} ──", style="bold", highlight=False)

    async for event in handle.stream():
        if as_json:
            out.print(event.model_dump_json(), markup=False, highlight=False, soft_wrap=True)
            continue
        if not assembler.apply(event) or event.step is None:
            continue
        step = assembler.steps[event.step]
        if event.kind == "step_started":
            header(event)
            shown, streamed[event.step] = event.step, 0
        elif event.kind == "attempt_restarted":
            out.print()
            out.print(
                f"[attempt {event.attempt} of {event.agent} restarted: its earlier attempt's "
                "text above is void]",
                style="yellow",
                markup=False,
                highlight=False,
            )
        elif event.kind == "token":
            if shown != event.step:
                header(event, " (continued)")
                shown = event.step
            out.print(event.text, end="", markup=False, highlight=False, soft_wrap=True)
            streamed[event.step] = streamed.get(event.step, 0) + len(event.text)
        elif event.kind == "step_completed":
            if not streamed.get(event.step):
                if shown != event.step:
                    header(event)
                    shown = event.step
                out.print(step.text, end="", markup=False, highlight=False, soft_wrap=True)
            out.print()
        elif event.kind == "step_failed":
            out.print()
            out.print(
                f"[{event.agent} attempt {event.attempt} failed: {event.text}]",
                style="red",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
            shown = None


def _print_result(
    result: RunResult, ui_url: str, as_json: bool, *, show_output: bool = True
) -> None:
    if as_json:
        out.print_json(
            json.dumps(
                {"ui_url": ui_url, "status": "succeeded", "result": result.model_dump(mode="json")}
            )
        )
        return
    t = result.totals
    print_steps(result.steps)
    for branch in result.failed_branches:
        error = escape(branch.error or "")
        out.print(f"[red]failed branch[/] {branch.name}: {error}", highlight=False)
    if show_output:
        out.print(
            Panel(
                result.output or "(empty output)",
                title=f"{result.pattern} result",
                title_align="left",
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


def status(workflow_id: str, as_json: JsonOpt = False) -> None:
    """Show a run's status and live step progress."""

    async def go(chorus: ChorusClient) -> None:
        st = await chorus.runs.status(workflow_id)
        gates = await _pending_gates(chorus, st.workflow_id, st) if st.status == "RUNNING" else []
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
                        "pending_gates": [g.model_dump(mode="json") for g in gates],
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
            ended = st.status if st.closed_at else None
            out.print(_progress_view(st.progress, elapsed, gates_caption=False, ended=ended))
        for line in pending_gate_lines(st.workflow_id, gates):
            out.print(line, highlight=False, markup=False, soft_wrap=True)
        out.print(f"Temporal UI: {st.ui_url}", highlight=False)

    with_chorus(go, as_json)


async def _pending_gates(chorus: ChorusClient, workflow_id: str, st: RunStatus) -> list[GateRecord]:
    """The run's pending gates, its child workflows' included.

    Best effort: on any error, the pending ones its own ``progress`` lists.
    """
    try:
        return await chorus.approvals.pending_in(workflow_id)
    except Exception:  # best effort: a child that does not answer, the run just ended
        return [g for g in (st.progress.gates if st.progress else []) if g.pending]


def result(workflow_id: str, as_json: JsonOpt = False) -> None:
    """Wait for a run to end and print its result."""

    async def go(chorus: ChorusClient) -> None:
        res = await chorus.runs.result(workflow_id)
        _print_result(res, chorus.ui_url(workflow_id), as_json)

    with_chorus(go, as_json)


def cancel(workflow_id: str, as_json: JsonOpt = False) -> None:
    """Cancel a running run (in-flight LLM calls are cancelled too)."""

    async def go(chorus: ChorusClient) -> None:
        await chorus.runs.cancel(workflow_id)
        if as_json:
            out.print_json(json.dumps({"workflow_id": workflow_id, "cancel_requested": True}))
        else:
            out.print(f"cancellation requested for {workflow_id}")

    with_chorus(go, as_json)


def list_runs(
    limit: Annotated[int, typer.Option(help="Rows to show.")] = 20,
    query: Annotated[
        str | None, typer.Option(help="Extra visibility query, e.g. \"ExecutionStatus='Running'\".")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List recent runs, newest first."""

    async def go(chorus: ChorusClient) -> None:
        rows = await chorus.runs.list_runs(limit, query)
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

    with_chorus(go, as_json)


def history(
    workflow_id: str,
    full: Annotated[bool, typer.Option(help="Print whole prompts, not their first lines.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Print a run's transcript (every agent call, with its children's) from PostgreSQL."""

    async def go(chorus: ChorusClient) -> None:
        entries = await chorus.runs.transcript(workflow_id)
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
                + (", from the response cache" if e.get("cached") else "")
            )
            out.print(Text(head, style="bold"))
            if e["workflow_id"] != workflow_id:
                out.print(Text(f"    in child workflow {e['workflow_id']}", style="dim"))
            prompt = e["user_prompt"] if full else _first_lines(e["user_prompt"], 6)
            out.print(Panel(prompt, title="prompt", title_align="left", style="dim"))
            out.print(Panel(e["completion"] or "(empty)", title="completion", title_align="left"))

    with_chorus(go, as_json)


def _first_lines(text: str, n: int) -> str:
    lines = text.splitlines()
    return "\n".join(lines[:n]) + (
        f"\n… ({len(lines) - n} more lines; --full)" if len(lines) > n else ""
    )
