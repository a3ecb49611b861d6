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


def print_steps(steps: list[StepResult]) -> None:
    """Print the steps table, then each agent's tool calls (one line each)."""
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
        for j, child in enumerate(step.steps, 1):
            calls(child, f"{number}.{j}")

    for i, step in enumerate(steps, 1):
        calls(step, str(i))


def default_author() -> str:
    """``user@host``, recorded as the author of a catalog or budget change."""
    return f"{getpass.getuser()}@{socket.gethostname()}"
