"""``chorus draft``: collaborative drafts, one long-lived workflow per draft."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.panel import Panel
from rich.text import Text

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
from starter.cli.support import JsonOpt, fail, out, with_chorus
from starter.export import load_template, render, template_names
from starter.sdk import ChorusClient, ChorusInputError

draft_app = typer.Typer(
    help="Collaborative drafts: one long-lived workflow per draft.", no_args_is_help=True
)

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
        fail("give at most one of --template, --brief, --content-file", as_json=as_json)

    async def go(chorus: ChorusClient) -> None:
        content = ""
        if template:
            try:
                content = load_template(template)
            except ValueError as exc:
                raise ChorusInputError(f"--template: {exc}") from exc
        elif content_file:
            content = content_file.read_text(encoding="utf-8")
        draft_id = await chorus.drafts.start(
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

    with_chorus(go, as_json)


@draft_app.command("show")
def draft_show(draft_id: str, user: ReaderOpt, as_json: JsonOpt = False) -> None:
    """Show a draft's current text, version, status and collaborators (collaborators only)."""

    async def go(chorus: ChorusClient) -> None:
        view = await chorus.drafts.view(draft_id, user=user)
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

    with_chorus(go, as_json)


def _draft_update(draft_id: str, update: str, request: Any, as_json: bool) -> None:
    async def go(chorus: ChorusClient) -> None:
        result = await chorus.drafts.update(draft_id, update, request)
        if as_json:
            out.print_json(result.model_dump_json())
        else:
            rebased = f" (rebased from v{result.rebased_from})" if result.rebased_from else ""
            out.print(f"{draft_id}: {update} accepted, now version {result.version}{rebased}")

    with_chorus(go, as_json)


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
        fail(f"edit: {exc}", as_json=as_json)
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
        await chorus.drafts.signal(draft_id, signal, request)
        if as_json:
            out.print_json(json.dumps({"draft_id": draft_id, "sent": signal}))
        else:
            out.print(f"{signal} sent to {draft_id}")

    with_chorus(go, as_json)


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
        fail(f"--role: {role!r} is not one of {', '.join(ROLES)}", as_json=as_json)
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
        await chorus.drafts.check_reader(draft_id, user)
        text = render(
            await chorus.drafts.saved(draft_id), await chorus.drafts.revisions(draft_id), fmt.value
        )
        if output:
            output.write_text(text, encoding="utf-8")
        else:
            sys.stdout.write(text)

    with_chorus(go, False)


@draft_app.command("history")
def draft_history(
    draft_id: str,
    user: ReaderOpt,
    diff: Annotated[bool, typer.Option(help="Print each revision's diff.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """List the draft's revisions saved in PostgreSQL (author, time, base, summary)."""

    async def go(chorus: ChorusClient) -> None:
        await chorus.drafts.check_reader(draft_id, user)
        revisions = await chorus.drafts.revisions(draft_id)
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

    with_chorus(go, as_json)


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
        await chorus.drafts.check_reader(draft_id, user)
        seen = 0
        deadline = time.monotonic() + timeout if timeout else None
        while deadline is None or time.monotonic() < deadline:
            for r in await chorus.drafts.revisions(draft_id, seen):
                _print_revision(r, diff)
                seen = r["version"]
            try:
                if (await chorus.drafts.saved(draft_id))["status"] == "archived":
                    return
            except LookupError:
                pass
            await asyncio.sleep(0.5)

    with_chorus(go, False)
