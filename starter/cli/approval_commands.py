"""``chorus approvals``: the gates runs wait at; approve, reject or edit one."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.markup import escape
from rich.table import Table

from chorus.contracts import validation
from starter.cli.support import (
    JsonOpt,
    approvers_text,
    as_coroutine,
    fail,
    out,
    run_async,
    under_review,
    with_chorus,
)
from starter.sdk import ChorusClient
from starter.sdk.approvals_client import make_decision

approvals_app = typer.Typer(
    help="Gates waiting for people: list them; approve, reject or edit one.",
    no_args_is_help=True,
)

RunArg = Annotated[
    str,
    typer.Argument(
        metavar="RUN", help="The run's workflow id (a gate in a loop is found in its child)."
    ),
]
GateOpt = Annotated[str, typer.Option("--gate", "-g", help="The gate's name.")]
DeciderOpt = Annotated[
    str,
    typer.Option("--user", "-u", envvar="CHORUS_USER", help="Who decides (default $CHORUS_USER)."),
]
CommentOpt = Annotated[str, typer.Option("--comment", "-c", help="Why (recorded).")]


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


@approvals_app.command("list")
def approvals_list(
    user: Annotated[
        str | None,
        typer.Option("--user", "-u", help="Only the gates this user may decide."),
    ] = None,
    limit: Annotated[int, typer.Option(help="Waiting workflows to ask, at most.")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """List the gates waiting for a decision, oldest first."""

    async def go(chorus: ChorusClient) -> None:
        records = await chorus.approvals.pending(user=user, limit=limit)
        if as_json:
            out.print_json(json.dumps([r.model_dump(mode="json") for r in records]))
            return
        if not records:
            who = f" that {user} may decide" if user else ""
            out.print(f"no gate waits for a decision{who}", highlight=False)
            return
        table = Table()
        table.add_column("workflow id", no_wrap=True)
        table.add_column("gate", no_wrap=True)
        for col in ("question", "under review", "approvers", "opened", "deadline"):
            table.add_column(col)
        for r in records:
            table.add_row(
                r.workflow_id,
                r.gate,
                escape(validation.for_display(r.question)),
                escape(under_review(r)),
                escape(approvers_text(r)),
                _when(r.opened_at),
                _when(r.deadline) + (f" ({r.on_timeout})" if r.deadline else ""),
            )
        out.print(table)

    with_chorus(go, as_json)


def _decide(
    decision: Literal["approve", "reject", "edit"],
    workflow_id: str,
    gate: str,
    user: str,
    comment: str,
    content: str | None,
    as_json: bool,
) -> None:
    # Checked before connecting: a bad gate name, user or comment needs no server to refuse.
    run_async(as_coroutine(lambda: make_decision(gate, decision, user, comment, content)), as_json)

    async def go(chorus: ChorusClient) -> None:
        record = await chorus.approvals.decide(
            workflow_id, gate, decision, user, comment=comment, content=content
        )
        if as_json:
            out.print_json(record.model_dump_json())
            return
        where = "" if record.workflow_id == workflow_id else f" (in {record.workflow_id})"
        why = f" — {record.comment}" if record.comment else ""
        out.print(
            f"gate {record.gate} of {workflow_id}{where}: {record.outcome} by "
            f"{record.decided_by}{why}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )

    with_chorus(go, as_json)


@approvals_app.command("approve")
def approvals_approve(
    workflow_id: RunArg,
    gate: GateOpt,
    user: DeciderOpt,
    comment: CommentOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Approve a pending gate: the text under review flows on."""
    _decide("approve", workflow_id, gate, user, comment, None, as_json)


@approvals_app.command("reject")
def approvals_reject(
    workflow_id: RunArg,
    gate: GateOpt,
    user: DeciderOpt,
    comment: CommentOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Reject a pending gate: the run fails as rejected."""
    _decide("reject", workflow_id, gate, user, comment, None, as_json)


@approvals_app.command("edit")
def approvals_edit(
    workflow_id: RunArg,
    gate: GateOpt,
    user: DeciderOpt,
    content_file: Annotated[
        Path,
        typer.Option(
            "--content-file", "-f", help="The replacement text (UTF-8 file; - for stdin)."
        ),
    ],
    comment: CommentOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Edit a pending gate: the file's text replaces the text under review and flows on."""
    content = read_content(content_file, as_json)
    _decide("edit", workflow_id, gate, user, comment, content, as_json)


def read_content(path: Path, as_json: bool) -> str:
    """The text of ``--content-file`` (``-``: stdin), or exit 2 naming the flag.

    Raises:
        typer.Exit: Code 2 when the file cannot be read or is not UTF-8 text.
    """
    try:
        if str(path) == "-":
            return sys.stdin.buffer.read().decode("utf-8")
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"--content-file: cannot read {path}: {exc.strerror}", as_json=as_json)
    except UnicodeDecodeError as exc:
        fail(
            f"--content-file: {path} is not UTF-8 text (byte {exc.start}: {exc.reason})",
            as_json=as_json,
        )
