"""SQL of the draft save: the ``drafts`` row and its ``draft_revisions``.

:class:`activities.drafts.DraftActivities` decides what to store (revisions, diffs, the
rebuilt text); these functions only run its statements, inside the caller's transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

Conn = asyncpg.Connection | PoolConnectionProxy
"""A connection, pooled or not (transactions are the caller's)."""


async def lock_draft(conn: Conn, draft_id: str) -> None:
    """Serialise saves of one draft until the transaction ends (transaction advisory lock)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", draft_id)


async def saved_draft(conn: Conn, draft_id: str) -> asyncpg.Record | None:
    """The saved ``version`` and ``content`` of a draft, or ``None`` before its first save."""
    return await conn.fetchrow("SELECT version, content FROM drafts WHERE draft_id = $1", draft_id)


async def blob_text(conn: Conn, blob_id: str) -> str | None:
    """The text of blob ``blob_id`` (a UUID string), or ``None`` when it is not stored."""
    text: str | None = await conn.fetchval(
        "SELECT content FROM blobs WHERE id = $1", uuid.UUID(blob_id)
    )
    return text


async def insert_draft(
    conn: Conn,
    *,
    draft_id: str,
    title: str,
    status: str,
    content: str,
    collaborators: Mapping[str, str],
    created_at: datetime,
) -> None:
    """Insert a new draft at version 1 with no comments."""
    await conn.execute(
        "INSERT INTO drafts (draft_id, title, status, version, content,"
        " collaborators, comments, created_at)"
        " VALUES ($1, $2, $3, 1, $4, $5, '[]'::jsonb, $6)",
        draft_id, title, status, content, collaborators, created_at,
    )  # fmt: skip


async def insert_first_revision(
    conn: Conn,
    *,
    draft_id: str,
    author: str,
    content: str,
    diff: str,
    content_after: str | None,
    created_at: datetime,
) -> None:
    """Insert revision 1 of a new draft: its owner wrote the whole text (``created``)."""
    await conn.execute(
        "INSERT INTO draft_revisions (draft_id, version, author, author_kind,"
        " base_version, edit, summary, diff, content_after, created_at)"
        " VALUES ($1, 1, $2, 'person', 0, $3, 'created', $4, $5, $6)",
        draft_id, author, {"start": 0, "end": 0, "text": content},
        diff, content_after, created_at,
    )  # fmt: skip


async def insert_revision(
    conn: Conn,
    *,
    draft_id: str,
    version: int,
    author: str,
    author_kind: str,
    base_version: int,
    edit: dict[str, Any],
    summary: str,
    diff: str,
    content_after: str | None,
    created_at: datetime,
) -> None:
    """Insert one revision of a draft (``content_after`` is ``NULL`` for long texts)."""
    await conn.execute(
        "INSERT INTO draft_revisions (draft_id, version, author, author_kind,"
        " base_version, edit, summary, diff, content_after, created_at)"
        " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)",
        draft_id, version, author, author_kind, base_version, edit, summary,
        diff, content_after, created_at,
    )  # fmt: skip


async def update_draft(
    conn: Conn,
    *,
    draft_id: str,
    title: str,
    status: str,
    version: int,
    content: str,
    collaborators: Mapping[str, str],
    comments: list[dict[str, Any]],
) -> None:
    """Store a draft's current state (title, status, version, text, people, comments)."""
    await conn.execute(
        "UPDATE drafts SET title = $2, status = $3, version = $4, content = $5,"
        " collaborators = $6, comments = $7, updated_at = now() WHERE draft_id = $1",
        draft_id, title, status, version, content, collaborators, comments,
    )  # fmt: skip


async def active_draft_count(pool: asyncpg.Pool) -> int:
    """How many drafts are not archived (their draft workflows are open)."""
    count: int | None = await pool.fetchval(
        "SELECT count(*) FROM drafts WHERE status <> 'archived'"
    )
    return count or 0
