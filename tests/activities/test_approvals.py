"""``chorus.open_gate`` and ``chorus.close_gate`` on a real PostgreSQL and a real dev server.

Approver roles come from ``CHORUS_APPROVER_ROLES``; who may decide is what ``open_gate``
returns (pinned in the history), and both activities leave exactly one ``gates`` row however
often they run.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from pydantic import ValidationError
from temporalio import workflow
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Worker

from activities.approvals import ApprovalActivities, expand_approvers
from chorus.config.settings import Settings
from chorus.contracts import errors
from chorus.contracts.activities import Approvals
from chorus.contracts.control import CloseGateInput, GateRecord, OpenGateInput
from chorus.contracts.names import CLOSE_GATE_ACTIVITY, OPEN_GATE_ACTIVITY
from chorus.runtime.plugin import activity_name
from chorus.storage import db
from chorus.storage.gate_records import gates_of, pending_gates
from chorus.tools import ToolRegistry
from worker import default_activities

OPENED = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
ROLES = {"editor": ["bob", "alice"], "legal": ["carol@example.com"], "empty": []}


@pytest_asyncio.fixture
async def pool(database_url: str, tmp_path: Path) -> AsyncIterator[asyncpg.Pool]:
    """A migrated pool on a fresh database."""
    store = await db.create_pool(Settings(database_url=database_url, data_dir=tmp_path / "data"))
    try:
        yield store
    finally:
        await store.close()


def approvals(pool: asyncpg.Pool, roles: dict[str, list[str]] | None = None) -> ApprovalActivities:
    settings = Settings(database_url="postgresql://unused", approver_roles=roles or ROLES)
    return ApprovalActivities(settings, pool)


def opening(approvers: list[str], key: str = "run-1:1", **fields: Any) -> OpenGateInput:
    record = GateRecord(
        gate="review",
        key=key,
        workflow_id="seq-report-1a2b3c4d",
        question="Publish this?",
        subject_name="writer",
        subject_preview="The draft",
        approvers=approvers,
        opened_at=OPENED,
        **fields,
    )
    return OpenGateInput(
        record=record, root_workflow_id="seq-report-1a2b3c4d", subject="The draft, all of it"
    )


def closing(opened: OpenGateInput, outcome: str, by: str | None, **fields: Any) -> CloseGateInput:
    content = fields.pop("content", None)
    record = opened.record.model_copy(
        update={
            "outcome": outcome,
            "decided_by": by,
            "decided_at": OPENED + timedelta(minutes=3),
            **fields,
        }
    )
    return CloseGateInput(record=record, content=content)


@pytest.mark.parametrize(
    ("approvers", "users"),
    [
        ([], []),  # anyone may decide: nobody to list
        (["dave"], ["dave"]),
        (["role:editor"], ["alice", "bob"]),
        (["role:editor", "alice", "role:legal"], ["alice", "bob", "carol@example.com"]),
        (["role:empty"], []),
    ],
)
async def test_open_gate_expands_roles_and_records_the_gate(pool, approvers, users):
    opened = opening(approvers)
    assert await ActivityEnvironment().run(approvals(pool).open_gate, opened) == users

    [row] = await gates_of(pool, "seq-report-1a2b3c4d")
    assert row["approvers"] == approvers  # as the plan says
    assert row["allowed_users"] == users
    assert row["subject"] == "The draft, all of it"
    assert row["outcome"] is None


async def test_an_unknown_role_adds_nobody_and_is_logged(pool, caplog):
    opened = opening(["role:editor", "role:ghosts", "erin", "role:ghosts"])
    with caplog.at_level(logging.WARNING):
        users = await ActivityEnvironment().run(approvals(pool).open_gate, opened)
    assert users == ["alice", "bob", "erin"]
    [warning] = [r for r in caplog.records if "CHORUS_APPROVER_ROLES" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert "ghosts" in warning.getMessage() and "editor" in warning.getMessage()

    # Only unknown roles: nobody may decide (the gate waits for its time-out).
    assert (
        await ActivityEnvironment().run(
            approvals(pool).open_gate, opening(["role:ghosts"], key="run-1:2")
        )
        == []
    )


def test_expand_approvers_reports_each_unknown_role_once():
    assert expand_approvers(["role:a", "x", "role:b", "role:a"], {"b": ["y", "x"]}) == (
        ["x", "y"],
        ["a"],
    )


async def test_open_gate_twice_leaves_one_row(pool):
    activities = approvals(pool)
    opened = opening(["role:editor"])
    assert await ActivityEnvironment().run(activities.open_gate, opened) == ["alice", "bob"]
    # Retried after the roles changed: the row keeps its first record.
    later = approvals(pool, {"editor": ["zoe"]})
    assert await ActivityEnvironment().run(later.open_gate, opened) == ["zoe"]
    rows = await gates_of(pool, "seq-report-1a2b3c4d")
    assert [(r["key"], r["allowed_users"]) for r in rows] == [("run-1:1", ["alice", "bob"])]


@pytest.mark.parametrize(
    ("outcome", "by", "fields", "edited"),
    [
        ("approved", "alice", {"comment": "ship it"}, None),
        ("rejected", "bob", {"comment": "numbers are off"}, None),
        (
            "edited",
            "alice",
            {"comment": "tightened", "content": "The better draft"},
            "The better draft",
        ),
        ("timed_out", None, {}, None),
    ],
)
async def test_close_gate_records_the_outcome(pool, outcome, by, fields, edited):
    activities = approvals(pool)
    opened = opening(["role:editor"], timeout_s=None, on_timeout="approve")
    await ActivityEnvironment().run(activities.open_gate, opened)
    closed = closing(opened, outcome, by, **fields)
    await ActivityEnvironment().run(activities.close_gate, closed)
    await ActivityEnvironment().run(activities.close_gate, closed)  # retried: same row

    [row] = await gates_of(pool, "seq-report-1a2b3c4d")
    assert row["outcome"] == outcome
    assert row["decided_by"] == by
    assert row["comment"] == fields.get("comment", "")
    assert row["edited_content"] == edited
    assert row["decided_at"] == OPENED + timedelta(minutes=3)
    assert row["allowed_users"] == ["alice", "bob"]
    assert await pending_gates(pool) == []


async def test_close_gate_without_an_outcome_is_not_retried(pool):
    with pytest.raises(ApplicationError) as refused:
        await ActivityEnvironment().run(
            approvals(pool).close_gate, CloseGateInput(record=opening([]).record)
        )
    assert refused.value.type == errors.INVALID_INPUT
    assert refused.value.non_retryable


async def test_a_postgres_outage_is_retryable_storage_unavailable(pool):
    activities = approvals(pool)
    opened = opening(["alice"])
    await pool.close()
    with pytest.raises(ApplicationError) as open_failed:
        await ActivityEnvironment().run(activities.open_gate, opened)
    with pytest.raises(ApplicationError) as close_failed:
        await ActivityEnvironment().run(activities.close_gate, closing(opened, "approved", "alice"))
    for failed in (open_failed, close_failed):
        assert failed.value.type == errors.STORAGE_UNAVAILABLE
        assert not failed.value.non_retryable
        assert "gate review (run-1:1)" in str(failed.value)


def test_approver_roles_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("CHORUS_APPROVER_ROLES", '{"editor": ["alice", "bob@example.com"]}')
    assert Settings().approver_roles == {"editor": ["alice", "bob@example.com"]}
    monkeypatch.delenv("CHORUS_APPROVER_ROLES")
    assert Settings().approver_roles == {}


@pytest.mark.parametrize(
    ("value", "bad"),
    [
        ('{"Editors": ["alice"]}', "'Editors'"),
        ('{"editor": ["alice", "bob smith"]}', "'bob smith'"),
        ('{"editor": ["alice"], "role:legal": []}', "'role:legal'"),
    ],
)
def test_a_bad_approver_roles_value_names_the_setting_and_the_entry(monkeypatch, value, bad):
    monkeypatch.setenv("CHORUS_APPROVER_ROLES", value)
    with pytest.raises(ValidationError) as refused:
        Settings()
    message = str(refused.value)
    assert "approver_roles" in message and "CHORUS_APPROVER_ROLES" in message
    assert bad in message


@workflow.defn(name="GateProbe", sandboxed=False)
class GateProbe:
    """Opens and closes one gate through the local activities, as the gate workflows do."""

    @workflow.run
    async def run(self, opened: OpenGateInput) -> list[str]:
        users = await workflow.execute_local_activity_method(
            Approvals.open_gate, opened, start_to_close_timeout=timedelta(seconds=10)
        )
        record = opened.record.model_copy(
            update={
                "allowed_users": users,
                "outcome": "edited",
                "decided_by": users[0],
                "comment": "tightened",
                "decided_at": workflow.now(),
            }
        )
        await workflow.execute_local_activity_method(
            Approvals.close_gate,
            CloseGateInput(record=record, content="The better draft"),
            start_to_close_timeout=timedelta(seconds=10),
        )
        return users


async def test_the_worker_serves_both_as_local_activities(client: Client, pool):
    settings = Settings(
        database_url="postgresql://unused",
        task_queue=f"test-{uuid.uuid4().hex[:8]}",
        approver_roles={"editor": ["bob", "alice"]},
    )
    registered = default_activities(settings, pool, call_llm=lambda: None, tools=ToolRegistry())
    gate_activities = [
        a for a in registered if activity_name(a) in (OPEN_GATE_ACTIVITY, CLOSE_GATE_ACTIVITY)
    ]
    assert len(gate_activities) == 2
    opened = opening(["role:editor", "erin"])
    async with Worker(
        client, task_queue=settings.task_queue, workflows=[GateProbe], activities=gate_activities
    ):
        users = await client.execute_workflow(
            GateProbe.run,
            opened,
            id=f"gate-probe-{uuid.uuid4().hex[:8]}",
            task_queue=settings.task_queue,
        )
    assert users == ["alice", "bob", "erin"]
    [row] = await gates_of(pool, "seq-report-1a2b3c4d")
    assert (row["allowed_users"], row["outcome"], row["decided_by"], row["edited_content"]) == (
        ["alice", "bob", "erin"],
        "edited",
        "alice",
        "The better draft",
    )
