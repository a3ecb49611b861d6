"""What every ``chorus`` command shares: the consoles, ``--json``, exit codes, the SDK client.

Exit codes: 0 success, 1 the run failed or was cancelled, 2 bad input or an unreachable
service. With ``--json`` an error is printed to stdout as ``{"error": ...}``; without it, in red
on stderr.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import socket
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from chorus.config.catalog import CatalogError
from chorus.contracts import validation
from chorus.contracts.control import GateRecord
from chorus.contracts.models import StepResult
from starter import dev
from starter.sdk import AgentConfigError, ChorusClient, ChorusInputError, RunFailedError

out = Console()
"""Results (stdout)."""
err = Console(stderr=True, soft_wrap=True)  # never split an error message across lines
"""Errors, warnings and progress (stderr)."""
T = TypeVar("T")

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


def fail(message: str, code: int = 2, as_json: bool = False, **extra: Any) -> NoReturn:
    """Print ``message`` as an error (``{"error": ...}`` with ``--json``) and exit.

    Args:
        message: What went wrong; printed as is (no rich markup).
        code: Exit code: 2 bad input or an unreachable service, 1 a failed run.
        as_json: Print JSON on stdout instead of red text on stderr.
        **extra: Further JSON fields.

    Raises:
        typer.Exit: Always, with ``code``.
    """
    if as_json:
        out.print_json(json.dumps({"error": message, **extra}, default=str))
    else:
        err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def run_async(coro: Coroutine[Any, Any, T], as_json: bool = False) -> T:
    """Run ``coro`` to completion; refused input or an unreachable service exits with code 2.

    Raises:
        typer.Exit: Code 2 for refused input (:class:`ChorusInputError`, a catalog or agent
            configuration error, a permission or lookup error), a dev stack error, or any
            other :class:`RuntimeError` (e.g. Temporal or PostgreSQL unreachable).
        RunFailedError: Passed on, for :func:`with_chorus` to report with exit code 1.
    """
    try:
        return asyncio.run(coro)
    except (ChorusInputError, CatalogError, AgentConfigError, PermissionError) as exc:
        fail(str(exc), 2, as_json)
    except LookupError as exc:
        fail(str(exc.args[0] if exc.args else exc), 2, as_json)
    except dev.DevStackError as exc:
        fail(str(exc), 2, as_json)
    except RuntimeError as exc:
        if isinstance(exc, RunFailedError):
            raise
        fail(str(exc), 2, as_json)


def as_coroutine(fn: Callable[[], T]) -> Coroutine[Any, Any, T]:
    """Wrap a plain call in a coroutine, so :func:`run_async` maps its errors to exit codes."""

    async def wrapper() -> T:
        return fn()

    return wrapper()


def with_chorus(fn: Callable[[ChorusClient], Coroutine[Any, Any, None]], as_json: bool) -> None:
    """Run ``fn`` with a connected client, closing its PostgreSQL pool afterwards.

    A failed run is reported (its partial steps, then the error) and exits with code 1; other
    errors exit as :func:`run_async` says.
    """

    async def go() -> None:
        chorus = await ChorusClient.connect()
        try:
            await fn(chorus)
        finally:
            await chorus.close()

    _run_reporting_failures(go(), as_json)


def _run_reporting_failures(coro: Coroutine[Any, Any, None], as_json: bool) -> None:
    try:
        run_async(coro, as_json)
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
                print_steps(exc.partial.steps)
            err.print(f"[bold red]{escape(str(exc))}[/]", highlight=False)
        raise typer.Exit(1) from None


def steps_table(steps: list[StepResult]) -> Table:
    """A run's steps, nested ones numbered ``1.2``: provider, tokens, USD, latency (ms).

    Agents' tool calls are listed by :func:`print_steps` below the table.
    """
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
        provider = f"{step.provider}:{step.model}" if step.provider else _runs_as(step)
        if fallbacks:
            provider += f" (after {len(fallbacks)} fallback{'s' * (len(fallbacks) > 1)})"
        if step.cached:
            provider += " (response cache)"
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


def _runs_as(step: StepResult) -> str:
    """The provider column of a step without a provider: how the step ran."""
    if step.kind == "gate":
        return "gate"
    if step.kind in ("agent", "iteration"):
        return ""
    return "child workflow"


def print_steps(steps: list[StepResult]) -> None:
    """Print the steps table, then each agent's tool calls and each control step's outcome."""
    out.print(steps_table(steps))

    def calls(step: StepResult, number: str) -> None:
        if step.tool_calls:
            out.print(f"tool calls of step {number} ({step.name}):", highlight=False)
        for call in step.tool_calls:
            args = ", ".join(f"{k}={json.dumps(v)[:40]}" for k, v in call.arguments.items())
            mark = "[red]✗[/]" if call.is_error else "[green]✓[/]"
            outcome = f" — {call.error_type}: {escape(call.output[:100])}" if call.is_error else ""
            tries = f", {call.attempts} attempts" if call.attempts > 1 else ""
            out.print(
                f"  {mark} {escape(call.name)}({escape(args)}) {call.latency_ms:.0f} ms"
                f"{tries}{outcome}",
                highlight=False,
            )
        for line in control_lines(step, number):
            out.print(line, highlight=False, markup=False)
        for j, child in enumerate(step.steps, 1):
            calls(child, f"{number}.{j}")

    for i, step in enumerate(steps, 1):
        calls(step, str(i))


_ROUNDS = {"loop": "iteration", "router": "route", "handoff": "hop", "group_chat": "turn"}
"""What one round of each control kind is called (``rounds`` counts them)."""


def control_lines(step: StepResult, number: str) -> list[str]:
    """What a control step did, as plain lines (empty for other steps).

    A loop, router, hand-off or group chat: what ended it, its rounds and each choice (route
    chosen and why). A gate: its outcome and who decided. Nothing for a step without
    ``control`` (e.g. one that failed before it started).

    Args:
        step: One step of a result.
        number: Its number in the steps table (``2``, ``2.1``).
    """
    control = step.control
    if control is None:
        return []
    if step.kind == "gate" or control.gate is not None:
        gate = control.gate
        outcome = gate.outcome if gate and gate.outcome else control.ended_by
        by = f" by {gate.decided_by}" if gate and gate.decided_by else ""
        when = f" at {gate.decided_at:%Y-%m-%d %H:%M:%S}" if gate and gate.decided_at else ""
        why = f" — {_one_line(gate.comment, 200)}" if gate and gate.comment else ""
        return [f"gate of step {number} ({step.name}): {outcome}{by}{when}{why}"]
    unit = _ROUNDS.get(step.kind, "round")
    rounds = f"{control.rounds} {unit}{'s' * (control.rounds != 1)}"
    again = f", continued as new {control.continued_as_new}x" if control.continued_as_new else ""
    lines = [
        f"{step.kind} of step {number} ({step.name}): ended by {control.ended_by} after "
        f"{rounds}{again}"
    ]
    for choice in control.choices:
        reason = f": {_one_line(choice.reason, 120)}" if choice.reason else ""
        lines.append(f"  {choice.by} → {choice.choice}{reason}")
    return lines


def _one_line(text: str, chars: int) -> str:
    flat = " ".join(validation.for_display(text).split())
    return flat if len(flat) <= chars else flat[: chars - 1] + "…"


PREVIEW_CHARS = 80
"""Characters of the text under review shown by ``chorus approvals list`` and ``status``."""


def under_review(record: GateRecord, chars: int = PREVIEW_CHARS) -> str:
    """``<step>: <first chars of its output>…`` on one line (no rich markup escaping)."""
    text = _one_line(record.subject_preview, chars)
    return f"{record.subject_name}: {text}" if record.subject_name else text


def approvers_text(record: GateRecord) -> str:
    """The gate's approvers as the plan lists them, or ``anyone``."""
    return ", ".join(record.approvers) or "anyone"


def decide_hint(workflow_id: str, gate: str) -> str:
    """The command that approves ``gate`` of the run ``workflow_id`` (``U``: the user)."""
    return f"chorus approvals approve {workflow_id} --gate {gate} --user U"


def pending_gate_lines(workflow_id: str, records: list[GateRecord]) -> list[str]:
    """The pending gates of a run, for ``chorus status`` (plain lines, no markup).

    Args:
        workflow_id: The run, as the user named it (decisions are sent there).
        records: Its pending gates (its own and its child workflows').
    """
    lines: list[str] = []
    for r in records:
        where = "" if r.workflow_id == workflow_id else f" (in {r.workflow_id})"
        deadline = (
            f"; at {r.deadline:%Y-%m-%d %H:%M:%S} it will {r.on_timeout}" if r.deadline else ""
        )
        lines += [
            f"waiting at gate {r.gate}{where}: {_one_line(r.question, 200)}",
            f"  approvers: {approvers_text(r)}{deadline}",
            f"  under review: {under_review(r)}",
            f"  decide with: {decide_hint(workflow_id, r.gate)}",
        ]
    return lines


def default_author() -> str:
    """``user@host``, recorded as the author of a catalog or budget change."""
    return f"{getpass.getuser()}@{socket.gethostname()}"
