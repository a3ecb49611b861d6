"""The ``chorus.save_draft`` activity: auto-save of draft revisions to PostgreSQL."""

from __future__ import annotations

import difflib

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.runs import workflow_ids
from chorus.drafts import SaveDraftInput, apply_edit
from chorus.names import SAVE_DRAFT_ACTIVITY


def unified_diff(before: str, after: str, version: int) -> str:
    """Line diff between two versions of a draft's text."""
    return "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            f"v{version - 1}",
            f"v{version}",
        )
    )


class DraftActivities:
    """Writes drafts and their revisions; one transaction per save, idempotent."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @activity.defn(name=SAVE_DRAFT_ACTIVITY)
    async def save_draft(self, input: SaveDraftInput) -> None:
        """Store new revisions (with their diffs and text) and the draft's current state.

        Revisions already stored are skipped, so a retried save adds nothing twice. Each
        revision's text is rebuilt from the previous version's, which proves the edits replay
        to the content the workflow holds.

        Raises:
            ApplicationError: Non-retryable if the revisions do not replay to the workflow's
                content (a bug, never silently stored).
        """
        draft_id, _ = workflow_ids(activity.info())
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", draft_id)
            exists = await conn.fetchval("SELECT 1 FROM drafts WHERE draft_id = $1", draft_id)
            if not exists:
                await conn.execute(
                    "INSERT INTO drafts (draft_id, title, status, version, content,"
                    " collaborators, comments, created_at)"
                    " VALUES ($1, $2, $3, 1, $4, $5, '[]'::jsonb, $6)",
                    draft_id, input.title, input.status, input.initial_content,
                    input.collaborators, input.created_at,
                )  # fmt: skip
                owner = next(u for u, r in input.collaborators.items() if r == "owner")
                await conn.execute(
                    "INSERT INTO draft_revisions (draft_id, version, author, author_kind,"
                    " base_version, edit, summary, diff, content_after, created_at)"
                    " VALUES ($1, 1, $2, 'person', 0, $3, 'created', $4, $5, $6)",
                    draft_id, owner, {"start": 0, "end": 0, "text": input.initial_content},
                    unified_diff("", input.initial_content, 1), input.initial_content,
                    input.created_at,
                )  # fmt: skip
            if input.revisions:
                first = input.revisions[0].version
                text = await conn.fetchval(
                    "SELECT content_after FROM draft_revisions"
                    " WHERE draft_id = $1 AND version = $2",
                    draft_id, first - 1,
                )  # fmt: skip
                if text is None:
                    raise ApplicationError(
                        f"draft {draft_id}: version {first - 1} is not stored; cannot add "
                        f"revision {first}",
                    )
                for revision in input.revisions:
                    after = apply_edit(text, revision.edit)
                    await conn.execute(
                        "INSERT INTO draft_revisions (draft_id, version, author, author_kind,"
                        " base_version, edit, summary, diff, content_after, created_at)"
                        " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)"
                        " ON CONFLICT (draft_id, version) DO NOTHING",
                        draft_id, revision.version, revision.author, revision.author_kind,
                        revision.base_version, revision.edit.model_dump(), revision.summary,
                        unified_diff(text, after, revision.version), after, revision.created_at,
                    )  # fmt: skip
                    text = after
                if text != input.content:
                    raise ApplicationError(
                        f"draft {draft_id}: revisions up to v{input.version} do not replay to "
                        "the workflow's text",
                        non_retryable=True,
                    )
            await conn.execute(
                "UPDATE drafts SET title = $2, status = $3, version = $4, content = $5,"
                " collaborators = $6, comments = $7, updated_at = now() WHERE draft_id = $1",
                draft_id, input.title, input.status, input.version, input.content,
                input.collaborators, [c.model_dump(mode="json") for c in input.comments],
            )  # fmt: skip
