"""Approval gates on a real Temporal dev server and PostgreSQL: people decide, runs go on.

Decisions go through the SDK (``chorus.approvals``), a raw Temporal update, and the plain
``temporal`` CLI; refused decisions must never enter the history; a gate waits across a
worker restart; every decision is recorded in PostgreSQL with its author.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from temporalio.client import WorkflowUpdateFailedError

from chorus.contracts import errors
from chorus.contracts.control import GateDecision, GateStep, Until
from chorus.contracts.models import AgentStep, LoopStep
from chorus.storage import gate_records
from starter.sdk import ChorusInputError, RunFailedError
from tests.conftest import agent, running_worker
from tests.runtime.test_plain_temporal import failed_workflow_tasks, temporal_cli
from tests.workflows.test_workflows import replay

LOCAL = ["local:fake"]


def catalog(*names: str) -> list[dict[str, object]]:
    return [agent(n, LOCAL) for n in names]


async def wait_for_gate(chorus, workflow_id: str, gate: str):
    """The pending gate once the run waits at it (within 20 s)."""
    async with asyncio.timeout(20):
        while True:
            for record in await chorus.approvals.pending_in(workflow_id):
                if record.gate == gate:
                    return record
            await asyncio.sleep(0.1)


def update_events(history) -> list[str]:
    return [
        name
        for e in history.events
        for name in ("workflow_execution_update_accepted_event_attributes",)
        if e.HasField(name)
    ]


async def test_gate_approved_edited_and_rejected(client, make_settings, fake_llm):
    settings = make_settings(catalog("writer", "publisher"))
    plan = [
        AgentStep(agent="writer"),
        GateStep(name="publish", question="Publish this?", approvers=["alice"]),
        AgentStep(agent="publisher"),
    ]
    async with running_worker(client, settings, lambda _pool: fake_llm.call_llm) as chorus:
        approved = await chorus.start_sequential("Post", plan)
        record = await wait_for_gate(chorus, approved.workflow_id, "publish")
        assert record.subject_name == "writer" and record.subject_preview.startswith("writer")
        assert record.question == "Publish this?" and record.allowed_users == ["alice"]
        # ChorusAwaiting lists the run while it waits (what `chorus approvals list` reads).
        listed = await chorus.approvals.pending(user="alice")
        assert approved.workflow_id in {g.workflow_id for g in listed}
        assert not [
            g
            for g in await chorus.approvals.pending(user="mallory")
            if g.workflow_id == approved.workflow_id
        ]
        decided = await chorus.decide(
            approved.workflow_id, "publish", "approve", "alice", comment="ok"
        )
        assert (decided.outcome, decided.decided_by) == ("approved", "alice")
        result = await approved.result()

        edited = await chorus.start_sequential("Post", plan)
        await wait_for_gate(chorus, edited.workflow_id, "publish")
        await chorus.decide(
            edited.workflow_id, "publish", "edit", "alice", comment="tone", content="Edited text."
        )
        edited_result = await edited.result()

        rejected = await chorus.start_sequential("Post", plan)
        await wait_for_gate(chorus, rejected.workflow_id, "publish")
        await chorus.decide(rejected.workflow_id, "publish", "reject", "alice", comment="off-brand")
        with pytest.raises(RunFailedError) as failure:
            await rejected.result()
        pool = await chorus.pool()
        rows = await gate_records.gates_of(pool, edited.workflow_id)

    gate = result.steps[1]
    assert gate.kind == "gate" and gate.control.gate.decided_by == "alice"
    publisher_call = next(c for c in fake_llm.calls if c.agent == "publisher")
    assert [c.name for c in publisher_call.context] == ["writer"]  # the gate adds no entry
    # An edit replaces the text that flows on: the publisher saw the editor's text.
    publisher_calls = [c for c in fake_llm.calls if c.agent == "publisher"]
    assert publisher_calls[1].context[-1].output == "Edited text."
    assert edited_result.steps[1].output == "Edited text."
    assert failure.value.error_type == errors.GATE_REJECTED
    assert "rejected by alice: off-brand" in str(failure.value)
    assert len(publisher_calls) == 2  # nothing ran after the rejection
    # PostgreSQL has the question, the text under review and the decision with its author.
    assert [(r["gate"], r["outcome"], r["decided_by"], r["comment"]) for r in rows] == [
        ("publish", "edited", "alice", "tone")
    ]
    assert rows[0]["edited_content"] == "Edited text." and rows[0]["subject"].startswith("writer")
    await replay(client, approved.workflow_id, record_as="gate_approved")
    await replay(client, edited.workflow_id, record_as="gate_edited")
    await replay(client, rejected.workflow_id)


async def test_refused_decisions_never_enter_the_history(client, make_settings, fake_llm):
    settings = make_settings(catalog("writer"), approver_roles={"editor": ["dana"]})
    plan = [AgentStep(agent="writer"), GateStep(name="legal", approvers=["role:editor"])]
    async with running_worker(client, settings, lambda _pool: fake_llm.call_llm) as chorus:
        handle = await chorus.start_sequential("Post", plan)
        record = await wait_for_gate(chorus, handle.workflow_id, "legal")
        assert record.allowed_users == ["dana"]
        raw = client.get_workflow_handle(handle.workflow_id)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await raw.execute_update(
                "decide", GateDecision(gate="legal", decision="approve", user="mallory")
            )
        assert "may not decide" in str(refused.value.cause)
        with pytest.raises(WorkflowUpdateFailedError):
            await raw.execute_update(
                "decide", GateDecision(gate="nope", decision="approve", user="dana")
            )
        with pytest.raises(ChorusInputError, match=r"may not decide|mallory"):
            await chorus.decide(handle.workflow_id, "legal", "approve", "mallory")
        with pytest.raises(ChorusInputError, match="content"):
            await chorus.decide(handle.workflow_id, "legal", "edit", "dana")
        assert update_events(await raw.fetch_history()) == []
        await chorus.decide(handle.workflow_id, "legal", "approve", "dana")
        await handle.result()
        history = await raw.fetch_history()
    assert len(update_events(history)) == 1


async def test_gate_timeouts_approve_or_fail(client, make_settings, fake_llm):
    settings = make_settings(catalog("writer", "publisher"))
    async with running_worker(client, settings, lambda _pool: fake_llm.call_llm) as chorus:
        goes_on = await chorus.run_sequential(
            "Post",
            [
                AgentStep(agent="writer"),
                GateStep(name="quiet", timeout_s=1, on_timeout="approve"),
                AgentStep(agent="publisher"),
            ],
        )
        with pytest.raises(RunFailedError) as failure:
            await chorus.run_sequential(
                "Post",
                [
                    AgentStep(agent="writer"),
                    GateStep(name="strict", timeout_s=1, on_timeout="fail"),
                ],
            )
    gate = goes_on.steps[1].control.gate
    assert gate.outcome == "timed_out" and goes_on.steps[2].status == "succeeded"
    assert failure.value.error_type == errors.GATE_TIMED_OUT


async def test_gate_waits_across_a_worker_restart(client, make_settings, fake_llm):
    settings = make_settings(catalog("writer", "publisher"))
    plan = [AgentStep(agent="writer"), GateStep(name="publish"), AgentStep(agent="publisher")]
    async with running_worker(client, settings, lambda _pool: fake_llm.call_llm) as chorus:
        handle = await chorus.start_sequential("Post", plan)
        await wait_for_gate(chorus, handle.workflow_id, "publish")
    # No worker at all now; a new one picks the run up from its history.
    async with running_worker(
        client, settings, lambda _pool: fake_llm.call_llm, max_cached_workflows=0
    ) as chorus:
        await chorus.decide(handle.workflow_id, "publish", "approve", "anyone")
        result = await handle.result()
    assert [s.status for s in result.steps] == ["succeeded"] * 3
    assert sum(c.agent == "writer" for c in fake_llm.calls) == 1  # not run again


async def test_plain_temporal_cli_decides_a_gate_in_a_loop(client, make_settings, fake_llm):
    """The documented `temporal workflow update execute --name decide` works, on a gate that
    waits inside a loop (the ChorusControl child workflow holds it)."""
    fake_llm.script("critic", '{"verdict": "ready"}')
    settings = make_settings(catalog("writer", "critic"))
    loop = LoopStep(
        body=[AgentStep(agent="writer"), GateStep(name="draft-ok"), AgentStep(agent="critic")],
        until=Until(agent="critic", field="verdict", equals="ready"),
    )
    async with running_worker(client, settings, lambda _pool: fake_llm.call_llm) as chorus:
        handle = await chorus.start_sequential("Write", [loop])
        record = await wait_for_gate(chorus, handle.workflow_id, "draft-ok")
        assert record.workflow_id == f"{handle.workflow_id}-s1"
        # The CLI runs as a subprocess off the event loop the worker runs on.
        update = ("workflow", "update", "execute", "--workflow-id", record.workflow_id)
        bad = await temporal_cli(
            client,
            *update,
            *("--name", "decide", "--input", '{"gate": "draft-ok", "decision": "maybe"}'),
        )
        assert bad.returncode != 0 and "invalid GateDecision" in bad.stderr, bad.stderr
        good = await temporal_cli(
            client,
            *update,
            "--name",
            "decide",
            "--input",
            json.dumps({"gate": "draft-ok", "decision": "approve", "user": "cli-user"}),
        )
        assert good.returncode == 0, good.stderr
        result = await handle.result()
    assert await failed_workflow_tasks(client, record.workflow_id) == 0
    iteration = result.steps[0].steps[0]
    assert [s.kind for s in iteration.steps] == ["agent", "gate", "agent"]
    assert iteration.steps[1].control.gate.decided_by == "cli-user"
    await replay(client, f"{handle.workflow_id}-s1", record_as="gate_in_loop")
