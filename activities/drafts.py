"""The ``chorus.save_draft`` activity: auto-save of draft revisions to PostgreSQL."""

from __future__ import annotations

import difflib
import hashlib
import re

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.runs import workflow_ids
from chorus.contracts.drafting import INLINE_CONTENT_CHARS, SaveDraftInput, TextEdit, apply_edit
from chorus.contracts.names import SAVE_DRAFT_ACTIVITY
from chorus.storage import draft_rows

_HUNK = re.compile(r"^@@ -(\d+)(,\d+)? \+(\d+)(,\d+)? @@")


def unified_diff(before: str, after: str, version: int) -> str:
    """Line diff between two versions of a draft's text (whole texts compared)."""
    return "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            f"v{version - 1}",
            f"v{version}",
        )
    )


def edit_diff(before: str, edit: TextEdit, version: int, context: int = 3) -> str:
    """Unified line diff of applying ``edit`` to ``before``, computed around the edit only.

    Only the changed lines and ``context`` lines either side are compared, so the cost is
    proportional to the edit, not to the draft (a 2,000,000-character draft costs the same as a
    short one); hunk line numbers are those of the whole text.
    """
    start = before.rfind("\n", 0, edit.start) + 1  # beginning of the first changed line
    for _ in range(context):
        if start == 0:
            break
        start = before.rfind("\n", 0, start - 1) + 1
    end = edit.end
    for _ in range(context + 1):
        newline = before.find("\n", end)
        if newline < 0:
            end = len(before)
            break
        end = newline + 1
    old = before[start:end]
    new = before[start : edit.start] + edit.text + before[edit.end : end]
    offset = before.count("\n", 0, start)
    lines = difflib.unified_diff(
        old.splitlines(keepends=True),
        new.splitlines(keepends=True),
        f"v{version - 1}",
        f"v{version}",
        n=context,
    )

    def shift(line: str) -> str:
        match = _HUNK.match(line)
        if not match:
            return line
        a, b, c, d = match.groups()
        header = f"@@ -{int(a) + offset}{b or ''} +{int(c) + offset}{d or ''} @@"
        return header + line[match.end() :]

    return "".join(shift(line) for line in lines)


class DraftActivities:
    """Writes drafts and their revisions; one transaction per save, idempotent."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @activity.defn(name=SAVE_DRAFT_ACTIVITY)
    async def save_draft(self, input: SaveDraftInput) -> None:
        """Store new revisions (with their diffs) and the draft's current state.

        The text is rebuilt here, from the saved text and the new revisions' edits, so the
        workflow never sends a large text (it may not even hold it). Revisions already stored
        are skipped, so a retried save adds nothing twice. ``content_after`` is stored for
        texts up to ``INLINE_CONTENT_CHARS`` characters (``NULL`` above: replay the edits).

        Raises:
            ApplicationError: Non-retryable if the revisions do not follow the saved version or
                do not replay to the length (and hash, when given) the workflow holds: a bug,
                never silently stored.
        """
        draft_id, _ = workflow_ids(activity.info())
        async with self._pool.acquire() as conn, conn.transaction():
            await draft_rows.lock_draft(conn, draft_id)
            row = await draft_rows.saved_draft(conn, draft_id)
            if row is None:
                text = input.initial_content
                if input.initial_content_ref is not None:
                    stored = await draft_rows.blob_text(conn, input.initial_content_ref.blob_id)
                    if stored is None:
                        raise ApplicationError(
                            f"draft {draft_id}: initial text "
                            f"{input.initial_content_ref.blob_id} is not stored",
                            non_retryable=True,
                        )
                    text = stored
                await draft_rows.insert_draft(
                    conn,
                    draft_id=draft_id,
                    title=input.title,
                    status=input.status,
                    content=text,
                    collaborators=input.collaborators,
                    created_at=input.created_at,
                )
                await draft_rows.insert_first_revision(
                    conn,
                    draft_id=draft_id,
                    author=next(u for u, r in input.collaborators.items() if r == "owner"),
                    content=text,
                    diff=unified_diff("", text, 1),
                    content_after=text if len(text) <= INLINE_CONTENT_CHARS else None,
                    created_at=input.created_at,
                )
                saved_version = 1
            else:
                saved_version, text = row["version"], row["content"]
            new = [r for r in input.revisions if r.version > saved_version]
            if new and new[0].version != saved_version + 1:
                raise ApplicationError(
                    f"draft {draft_id}: version {saved_version} is saved; cannot add revision "
                    f"{new[0].version}",
                    non_retryable=True,
                )
            for revision in new:
                diff = edit_diff(text, revision.edit, revision.version)
                text = apply_edit(text, revision.edit)
                await draft_rows.insert_revision(
                    conn,
                    draft_id=draft_id,
                    version=revision.version,
                    author=revision.author,
                    author_kind=revision.author_kind,
                    base_version=revision.base_version,
                    edit=revision.edit.model_dump(),
                    summary=revision.summary,
                    diff=diff,
                    content_after=text if len(text) <= INLINE_CONTENT_CHARS else None,
                    created_at=revision.created_at,
                )
            version = new[-1].version if new else saved_version
            problem = None
            if version != input.version:
                problem = f"revisions end at v{version}, the workflow is at v{input.version}"
            elif len(text) != input.content_chars:
                problem = f"{len(text)} characters rebuilt, the workflow has {input.content_chars}"
            elif (
                input.content_sha256 is not None
                and hashlib.sha256(text.encode()).hexdigest() != input.content_sha256
            ):
                problem = "the rebuilt text's SHA-256 differs from the workflow's"
            if problem:
                raise ApplicationError(
                    f"draft {draft_id}: revisions do not replay to the workflow's text: {problem}",
                    non_retryable=True,
                )
            await draft_rows.update_draft(
                conn,
                draft_id=draft_id,
                title=input.title,
                status=input.status,
                version=input.version,
                content=text,
                collaborators=input.collaborators,
                comments=[c.model_dump(mode="json") for c in input.comments],
            )
