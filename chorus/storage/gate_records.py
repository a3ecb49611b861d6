"""The ``gates`` table: one row per opening of an approval gate (issue 15).

``chorus.open_gate`` inserts the row when a gate starts waiting and ``chorus.close_gate`` sets
its outcome (:mod:`activities.approvals`); both run as local activities, so each write is one
short statement, safe to repeat: a retried or re-executed activity leaves the same row.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from chorus.contracts.control import CloseGateInput, OpenGateInput

_COLUMNS = (
    "key, gate, workflow_id, root_workflow_id, question, subject_name, subject, approvers,"
    " allowed_users, opened_at, deadline, on_timeout, outcome, decided_by, comment,"
    " edited_content, decided_at"
)


async def record_gate_opened(
    pool: asyncpg.Pool, input: OpenGateInput, allowed_users: list[str]
) -> None:
    """Insert a pending gate's row; a second call for the same opening changes nothing.

    ``ON CONFLICT (key) DO NOTHING``: a retried ``chorus.open_gate`` neither adds a row nor
    clobbers one, even one already decided.

    Args:
        pool: PostgreSQL pool.
        input: The gate as the workflow holds it (``record``: name, key ``<run id>:<n>``,
            workflow id, question, subject name, approvers as the plan says, ``opened_at``,
            ``deadline``, ``on_timeout``), its top-level run and the whole text under review.
        allowed_users: ``input.record.approvers`` with roles expanded (user names).

    Raises:
        asyncpg.PostgresError: The statement failed.
        OSError: PostgreSQL cannot be reached.
    """
    record = input.record
    await pool.execute(
        "INSERT INTO gates (key, gate, workflow_id, root_workflow_id, question, subject_name,"
        " subject, approvers, allowed_users, opened_at, deadline, on_timeout)"
        " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)"
        " ON CONFLICT (key) DO NOTHING",
        record.key,
        record.gate,
        record.workflow_id,
        input.root_workflow_id,
        record.question,
        record.subject_name,
        input.subject,
        record.approvers,
        allowed_users,
        record.opened_at,
        record.deadline,
        record.on_timeout,
    )


async def record_gate_closed(pool: asyncpg.Pool, input: CloseGateInput) -> None:
    """Set a gate's outcome: who decided, their comment, the edited text and when.

    Idempotent: repeating it writes the same values. ``chorus.open_gate`` always runs first,
    but should its row be missing the gate is inserted from ``input.record`` with an empty
    subject, under the run of ``runs.root_workflow_id`` of its workflow (else the workflow
    itself), so the decision is never lost.

    Args:
        pool: PostgreSQL pool.
        input: The gate with ``outcome`` (``approved``, ``rejected``, ``edited`` or
            ``timed_out``), ``decided_by`` (``None`` for a time-out), ``comment`` and
            ``decided_at`` set, and ``content``, the replacement text of an ``edit``
            (stored as ``edited_content``).

    Raises:
        ValueError: ``input.record.outcome`` is ``None`` (the gate is still pending).
        asyncpg.PostgresError: The statement failed.
        OSError: PostgreSQL cannot be reached.
    """
    record = input.record
    if record.outcome is None:
        raise ValueError(f"gate {record.gate} ({record.key}): closing it needs an outcome")
    await pool.execute(
        f"INSERT INTO gates ({_COLUMNS})"
        " VALUES ($1, $2, $3,"
        " coalesce((SELECT root_workflow_id FROM runs WHERE workflow_id = $3), $3),"
        " $4, $5, '', $6, $7, $8, $9, $10, $11, $12, $13, $14, coalesce($15, now()))"
        " ON CONFLICT (key) DO UPDATE SET outcome = EXCLUDED.outcome,"
        " decided_by = EXCLUDED.decided_by, comment = EXCLUDED.comment,"
        " edited_content = EXCLUDED.edited_content, decided_at = EXCLUDED.decided_at",
        record.key,
        record.gate,
        record.workflow_id,
        record.question,
        record.subject_name,
        record.approvers,
        record.allowed_users,
        record.opened_at,
        record.deadline,
        record.on_timeout,
        record.outcome,
        record.decided_by,
        record.comment,
        input.content,
        record.decided_at,
    )


async def gates_of(pool: asyncpg.Pool, root_workflow_id: str) -> list[dict[str, Any]]:
    """Every gate of a run, its child workflows' included, in the order they opened.

    Args:
        pool: PostgreSQL pool.
        root_workflow_id: The top-level run's workflow id.

    Returns:
        One dict per row with every column of ``gates`` (``subject`` whole; ``approvers`` and
        ``allowed_users`` lists; times timezone-aware), ordered by ``opened_at`` then ``key``;
        empty for an unknown run.
    """
    rows = await pool.fetch(
        f"SELECT {_COLUMNS} FROM gates WHERE root_workflow_id = $1 ORDER BY opened_at, key",
        root_workflow_id,
    )
    return [dict(r) for r in rows]


async def pending_gates(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    """Every gate still waiting for a decision (``outcome`` unset), oldest first.

    Args:
        pool: PostgreSQL pool.

    Returns:
        Rows as :func:`gates_of` returns them, ordered by ``opened_at`` then ``key``. A gate
        whose workflow ended without closing it (cancelled, terminated) stays listed.
    """
    rows = await pool.fetch(
        f"SELECT {_COLUMNS} FROM gates WHERE outcome IS NULL ORDER BY opened_at, key"
    )
    return [dict(r) for r in rows]
