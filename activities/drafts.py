"""The ``chorus.save_draft`` activity: auto-save of draft revisions to PostgreSQL."""

from __future__ import annotations

import difflib
import hashlib
import re
import uuid

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.runs import workflow_ids
from chorus.contracts.drafting import INLINE_CONTENT_CHARS, SaveDraftInput, TextEdit, apply_edit
from chorus.contracts.names import SAVE_DRAFT_ACTIVITY

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
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", draft_id)
            row = await conn.fetchrow(
                "SELECT version, content FROM drafts WHERE draft_id = $1", draft_id
            )
            if row is None:
                text = input.initial_content
                if input.initial_content_ref is not None:
                    text = await conn.fetchval(
                        "SELECT content FROM blobs WHERE id = $1",
                        uuid.UUID(input.initial_content_ref.blob_id),
                    )
                    if text is None:
                        raise ApplicationError(
                            f"draft {draft_id}: initial text "
                            f"{input.initial_content_ref.blob_id} is not stored",
                            non_retryable=True,
                        )
                await conn.execute(
                    "INSERT INTO drafts (draft_id, title, status, version, content,"
                    " collaborators, comments, created_at)"
                    " VALUES ($1, $2, $3, 1, $4, $5, '[]'::jsonb, $6)",
                    draft_id, input.title, input.status, text,
                    input.collaborators, input.created_at,
                )  # fmt: skip
                owner = next(u for u, r in input.collaborators.items() if r == "owner")
                await conn.execute(
                    "INSERT INTO draft_revisions (draft_id, version, author, author_kind,"
                    " base_version, edit, summary, diff, content_after, created_at)"
                    " VALUES ($1, 1, $2, 'person', 0, $3, 'created', $4, $5, $6)",
                    draft_id, owner, {"start": 0, "end": 0, "text": text},
                    unified_diff("", text, 1),
                    text if len(text) <= INLINE_CONTENT_CHARS else None, input.created_at,
                )  # fmt: skip
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
                await conn.execute(
                    "INSERT INTO draft_revisions (draft_id, version, author, author_kind,"
                    " base_version, edit, summary, diff, content_after, created_at)"
                    " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)",
                    draft_id, revision.version, revision.author, revision.author_kind,
                    revision.base_version, revision.edit.model_dump(), revision.summary,
                    diff, text if len(text) <= INLINE_CONTENT_CHARS else None,
                    revision.created_at,
                )  # fmt: skip
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
            await conn.execute(
                "UPDATE drafts SET title = $2, status = $3, version = $4, content = $5,"
                " collaborators = $6, comments = $7, updated_at = now() WHERE draft_id = $1",
                draft_id, input.title, input.status, input.version, text,
                input.collaborators, [c.model_dump(mode="json") for c in input.comments],
            )  # fmt: skip
