"""The ``gates`` table on a real PostgreSQL: opened, decided, listed, and safe to repeat."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from chorus.config.settings import Settings
from chorus.contracts.control import CloseGateInput, GateRecord, OpenGateInput
from chorus.storage import db
from chorus.storage.gate_records import (
    gates_of,
    pending_gates,
    record_gate_closed,
    record_gate_opened,
)

OPENED = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


@pytest_asyncio.fixture
async def pool(database_url: str, tmp_path: Path) -> AsyncIterator[asyncpg.Pool]:
    """A migrated pool on a fresh database."""
    store = await db.create_pool(Settings(database_url=database_url, data_dir=tmp_path / "data"))
    try:
        yield store
    finally:
        await store.close()


def gate(key: str = "run-1:1", **fields: Any) -> GateRecord:
    values: dict[str, Any] = {
        "gate": "review",
        "key": key,
        "workflow_id": "seq-report-1a2b3c4d",
        "question": "Publish this?",
        "subject_name": "writer",
        "subject_preview": "Draft",
        "approvers": ["alice", "role:editor"],
        "opened_at": OPENED,
        "deadline": OPENED + timedelta(hours=1),
        "on_timeout": "reject",
        **fields,
    }
    return GateRecord(**values)


def opening(record: GateRecord, subject: str = "Draft text", root: str = "seq-report-1a2b3c4d"):
    return OpenGateInput(record=record, root_workflow_id=root, subject=subject)


def decided(record: GateRecord, outcome: str, by: str | None = "alice", **fields: Any):
    return record.model_copy(
        update={
            "outcome": outcome,
            "decided_by": by,
            "decided_at": OPENED + timedelta(minutes=5),
            "allowed_users": ["alice", "bob"],
            **fields,
        }
    )


async def test_open_records_a_pending_gate_with_the_whole_subject(pool):
    subject = "x" * 10_000  # more than the workflow keeps (GATE_PREVIEW_CHARS)
    await record_gate_opened(pool, opening(gate(), subject), ["alice", "bob"])

    [row] = await gates_of(pool, "seq-report-1a2b3c4d")
    assert row == {
        "key": "run-1:1",
        "gate": "review",
        "workflow_id": "seq-report-1a2b3c4d",
        "root_workflow_id": "seq-report-1a2b3c4d",
        "question": "Publish this?",
        "subject_name": "writer",
        "subject": subject,
        "approvers": ["alice", "role:editor"],
        "allowed_users": ["alice", "bob"],
        "opened_at": OPENED,
        "deadline": OPENED + timedelta(hours=1),
        "on_timeout": "reject",
        "outcome": None,
        "decided_by": None,
        "comment": "",
        "edited_content": None,
        "decided_at": None,
    }
    assert [r["key"] for r in await pending_gates(pool)] == ["run-1:1"]


async def test_opening_again_neither_duplicates_nor_clobbers(pool):
    await record_gate_opened(pool, opening(gate()), ["alice", "bob"])
    # A retried chorus.open_gate, even one that would now expand the roles differently.
    await record_gate_opened(pool, opening(gate(question="Other?"), "other"), ["carol"])
    [row] = await gates_of(pool, "seq-report-1a2b3c4d")
    assert (row["question"], row["subject"], row["allowed_users"]) == (
        "Publish this?",
        "Draft text",
        ["alice", "bob"],
    )

    # Nor does a late retry reopen a decided gate.
    await record_gate_closed(pool, CloseGateInput(record=decided(gate(), "approved")))
    await record_gate_opened(pool, opening(gate()), ["alice", "bob"])
    [row] = await gates_of(pool, "seq-report-1a2b3c4d")
    assert row["outcome"] == "approved"
    assert await pending_gates(pool) == []


@pytest.mark.parametrize(
    ("outcome", "by", "comment", "content"),
    [
        ("approved", "alice", "looks good", None),
        ("rejected", "bob", "wrong figures", None),
        ("edited", "alice", "fixed the title", "Better draft text"),
        ("timed_out", None, "", None),
    ],
)
async def test_close_records_each_outcome(pool, outcome, by, comment, content):
    await record_gate_opened(pool, opening(gate()), ["alice", "bob"])
    closing = CloseGateInput(record=decided(gate(), outcome, by, comment=comment), content=content)
    await record_gate_closed(pool, closing)
    await record_gate_closed(pool, closing)  # a retry writes the same values

    [row] = await gates_of(pool, "seq-report-1a2b3c4d")
    assert {k: row[k] for k in ("outcome", "decided_by", "comment", "edited_content")} == {
        "outcome": outcome,
        "decided_by": by,
        "comment": comment,
        "edited_content": content,
    }
    assert row["decided_at"] == OPENED + timedelta(minutes=5)
    # What the opening recorded stays as it was.
    assert (row["subject"], row["allowed_users"]) == ("Draft text", ["alice", "bob"])
    assert await pending_gates(pool) == []


async def test_close_without_an_opening_still_records_the_decision(pool):
    # The child's run row names its top-level run: the gate is filed under it.
    await pool.execute(
        "INSERT INTO runs (workflow_id, run_id, root_workflow_id, pattern, task, agents,"
        " agent_versions, status, started_at)"
        " VALUES ('seq-report-1a2b3c4d-s2', 'r', 'seq-report-1a2b3c4d', 'sequential', 't',"
        " '{}', '{}'::jsonb, 'running', now())"
    )
    child = gate("run-2:1", workflow_id="seq-report-1a2b3c4d-s2")
    await record_gate_closed(pool, CloseGateInput(record=decided(child, "rejected", "bob")))
    # No run row at all: the gate's own workflow stands for its run.
    orphan = gate("run-3:1", workflow_id="par-other-9f8e7d6c")
    await record_gate_closed(pool, CloseGateInput(record=decided(orphan, "timed_out", None)))

    [row] = await gates_of(pool, "seq-report-1a2b3c4d")
    assert (row["key"], row["outcome"], row["decided_by"], row["subject"]) == (
        "run-2:1",
        "rejected",
        "bob",
        "",
    )
    assert row["allowed_users"] == ["alice", "bob"]
    [row] = await gates_of(pool, "par-other-9f8e7d6c")
    assert (row["key"], row["outcome"]) == ("run-3:1", "timed_out")


async def test_close_refuses_a_record_without_an_outcome(pool):
    with pytest.raises(ValueError, match="needs an outcome"):
        await record_gate_closed(pool, CloseGateInput(record=gate()))


async def test_gates_of_a_run_include_its_children_in_opening_order(pool):
    root = "seq-report-1a2b3c4d"
    later = gate("run-1:2", opened_at=OPENED + timedelta(minutes=10))
    child = gate("run-child:1", workflow_id=f"{root}-s3", opened_at=OPENED + timedelta(minutes=5))
    other = gate("run-9:1", workflow_id="seq-other-00000000")
    await record_gate_opened(pool, opening(later, root=root), [])
    await record_gate_opened(pool, opening(child, root=root), [])
    await record_gate_opened(pool, opening(gate(), root=root), [])
    await record_gate_opened(pool, opening(other, root="seq-other-00000000"), [])

    assert [r["key"] for r in await gates_of(pool, root)] == ["run-1:1", "run-child:1", "run-1:2"]
    assert await gates_of(pool, "no-such-run") == []

    await record_gate_closed(pool, CloseGateInput(record=decided(child, "approved")))
    # Every run's pending gates, oldest first (the same time: by key).
    assert [r["key"] for r in await pending_gates(pool)] == ["run-1:1", "run-9:1", "run-1:2"]


async def test_the_table_refuses_an_unknown_outcome(pool):
    await record_gate_opened(pool, opening(gate()), [])
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute("UPDATE gates SET outcome = 'maybe' WHERE key = 'run-1:1'")
