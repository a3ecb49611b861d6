"""Workflows on a real Temporal dev server, with a fake LLM activity for exact assertions."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.worker import Replayer

from chorus.contracts.models import (
    AgentStep,
    ParallelStep,
    RunResult,
    SequentialInput,
    SequentialStep,
)
from chorus.runtime.plugin import ChorusPlugin
from chorus.storage import db
from starter.sdk import ChorusInputError, RunFailedError
from tests.conftest import agent, running_worker, sdk

LOCAL = ["local:fake"]


HISTORIES = Path(__file__).parents[1] / "histories"


async def replay(client: Client, workflow_id: str, record_as: str | None = None) -> None:
    """Replay a finished run's history; with CHORUS_RECORD_HISTORIES=1 also check it in."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    await Replayer(workflows=[], plugins=[ChorusPlugin()]).replay_workflow(history)
    if record_as and os.environ.get("CHORUS_RECORD_HISTORIES") == "1":
        # Never overwrite a checked-in history: a new code path gets new files, named with
        # CHORUS_RECORD_SUFFIX (e.g. "_v2"), next to the old ones that keep guarding old runs.
        target = HISTORIES / f"{record_as}{os.environ.get('CHORUS_RECORD_SUFFIX', '')}.json"
        if target.exists():
            raise FileExistsError(f"{target} exists; set CHORUS_RECORD_SUFFIX to record anew")
        target.write_text(
            json.dumps({"workflow_id": workflow_id, "history": json.loads(history.to_json())})
        )


async def test_sequential_each_agent_sees_earlier_outputs(client, make_settings, fake_llm):
    settings = make_settings([agent(n, LOCAL) for n in ("analyst", "writer", "critic")])
    async with running_worker(client, settings, lambda _pool: fake_llm.call_llm) as chorus:
        handle = await chorus.start_sequential(
            "Summarize it", ["analyst", "writer", "critic"], document="DOC", document_name="d.txt"
        )
        result = await handle.result()

    assert handle.workflow_id.startswith("seq-summarize-it-")
    assert [s.agent for s in result.steps] == ["analyst", "writer", "critic"]
    assert [c.name for c in fake_llm.calls[2].context] == ["analyst", "writer"]
    assert all(c.document == "DOC" and c.task == "Summarize it" for c in fake_llm.calls)
    assert result.output == "critic output [saw: analyst,writer]"
    step = result.steps[1]
    assert (step.provider, step.model, step.attempts, step.agent_version) == ("local", "fake", 1, 1)
    assert (step.input_tokens, step.output_tokens, step.cost_usd) == (110, 20, 0.001)
    assert result.totals.llm_calls == 3
    assert result.totals.input_tokens == 100 + 110 + 120
    assert result.totals.cost_usd == pytest.approx(0.003)
    assert result.totals.wall_ms > 0
    await replay(client, handle.workflow_id, record_as="sequential_3_agents")
    # Issue 19: a run writes no patch marker and no TemporalChangeVersion upsert (each is a
    # history event, the upsert a visibility write): 26 events for 3 agents.
    history = await client.get_workflow_handle(handle.workflow_id).fetch_history()
    markers = [e.marker_recorded_event_attributes.marker_name for e in history.events]
    assert "core_patch" not in markers
    upserts = [
        set(e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields)
        for e in history.events
        if e.HasField("upsert_workflow_search_attributes_event_attributes")
    ]
    assert upserts == [{"ChorusStatus", "ChorusCostUsd"}]
    assert len(history.events) == 26


async def test_parallel_tolerates_failed_branch_and_names_it(client, make_settings, fake_llm):
    names = ("analyst", "summarizer", "critic", "aggregator")
    settings = make_settings([agent(n, LOCAL) for n in names])
    fake_llm.fail("critic", "local", "InvalidRequest")
    async with running_worker(client, settings, lambda _pool: fake_llm.call_llm) as chorus:
        handle = await chorus.start_parallel(
            "Review", ["analyst", "summarizer", "critic"], min_successes=2
        )
        result = await handle.result()

    assert handle.workflow_id.startswith("par-review-")
    assert [b.name for b in result.failed_branches] == ["critic"]
    assert "InvalidRequest" in result.failed_branches[0].error
    assert result.output == "aggregator output [saw: analyst,summarizer]"
    assert [s.status for s in result.steps] == ["succeeded", "succeeded", "failed", "succeeded"]
    assert result.totals.llm_calls == 3
    await replay(client, handle.workflow_id, record_as="parallel_failed_branch")


async def test_parallel_fails_below_min_successes(client, make_settings, fake_llm):
    settings = make_settings([agent(n, LOCAL) for n in ("a", "b", "aggregator")])
    fake_llm.fail("b", "local", "InvalidRequest")
    async with running_worker(client, settings, lambda _pool: fake_llm.call_llm) as chorus:
        handle = await chorus.start_parallel("t", ["a", "b"], min_successes=2)
        with pytest.raises(RunFailedError) as failure:
            await handle.result()
        row = await db.run_row(await chorus.pool(), handle.workflow_id)
    assert row is not None and row["status"] == "failed" and row["finished_at"] is not None
    assert "only 1 of 2 branches succeeded" in row["error"] and row["llm_calls"] == 1

    assert "only 1 of 2 branches succeeded, 2 required" in str(failure.value)
    assert failure.value.partial is not None
    assert [s.status for s in failure.value.partial.steps] == ["succeeded", "failed"]
    assert not any(c.agent == "aggregator" for c in fake_llm.calls)


async def test_provider_fallback_is_in_history(client, make_settings, fake_llm, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    chain = ["openai:gpt-4o-mini", "anthropic:claude-haiku-4-5", "local:fake"]
    settings = make_settings([agent("analyst", chain)])
    fake_llm.fail("analyst", "openai", "ProviderAuthError")
    async with running_worker(client, settings, lambda _pool: fake_llm.call_llm) as chorus:
        handle = await chorus.start_sequential("t", ["analyst"])
        result = await handle.result()

    step = result.steps[0]
    assert step.provider == "local"
    tried = [(t.provider, t.status, t.error_type) for t in step.providers_tried]
    assert tried == [
        ("anthropic", "skipped", None),
        ("openai", "failed", "ProviderAuthError"),
        ("local", "succeeded", None),
    ]
    assert "ANTHROPIC_API_KEY is not set" in (step.providers_tried[0].error or "")
    await replay(client, handle.workflow_id, record_as="provider_fallback")
    history = await client.get_workflow_handle(handle.workflow_id).fetch_history()
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    # The run's bookkeeping (chorus.start_run/finish_run) runs as local activities: markers in
    # the history, no activity tasks.
    assert scheduled == ["chorus.call_llm", "chorus.call_llm"]
    local = [
        e.marker_recorded_event_attributes.marker_name
        for e in history.events
        if e.HasField("marker_recorded_event_attributes")
        and e.marker_recorded_event_attributes.marker_name == "core_local_activity"
    ]
    assert len(local) == 2


async def test_malformed_request_does_not_fall_back(client, make_settings, fake_llm, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    settings = make_settings([agent("analyst", ["openai:gpt-4o-mini", "local:fake"])])
    fake_llm.fail("analyst", "openai", "InvalidRequest")
    async with running_worker(client, settings, lambda _pool: fake_llm.call_llm) as chorus:
        handle = await chorus.start_sequential("t", ["analyst"])
        with pytest.raises(RunFailedError) as failure:
            await handle.result()
    assert "step 1 of 1 (analyst) failed" in str(failure.value)
    assert [c.provider for c in fake_llm.calls] == ["openai"]


async def test_nested_children_both_ways(client, make_settings, fake_llm):
    names = ("analyst", "writer", "critic", "summarizer", "aggregator")
    settings = make_settings([agent(n, LOCAL) for n in names])
    async with running_worker(client, settings, lambda _pool: fake_llm.call_llm) as chorus:
        # parallel run whose first branch is a sequential pipeline
        par = await chorus.start_parallel(
            "t",
            [
                SequentialStep(steps=[AgentStep(agent="analyst"), AgentStep(agent="writer")]),
                "summarizer",
            ],
        )
        par_result = await par.result()
        # sequential run whose middle step is a parallel group
        seq = await chorus.start_sequential(
            "t",
            [
                "analyst",
                ParallelStep(branches=[AgentStep(agent="critic"), AgentStep(agent="summarizer")]),
                "writer",
            ],
        )
        seq_result = await seq.result()

    child = par_result.steps[0]
    assert child.kind == "sequential" and child.child_workflow_id == f"{par.workflow_id}-s1"
    assert [s.agent for s in child.steps] == ["analyst", "writer"]
    assert child.output == "writer output [saw: analyst]"
    assert par_result.totals.llm_calls == 4  # analyst, writer, summarizer, aggregator
    group = seq_result.steps[1]
    assert (
        group.kind == "parallel"
        and group.output == "aggregator output [saw: analyst,critic,summarizer]"
    )
    assert seq_result.output == "writer output [saw: analyst,(critic | summarizer)]"
    assert seq_result.totals.llm_calls == 5
    assert seq_result.totals.input_tokens == sum(s.input_tokens for s in seq_result.steps)
    await replay(client, par.workflow_id, record_as="parallel_with_sequential_child")
    await replay(client, f"{par.workflow_id}-s1", record_as="sequential_child")
    await replay(client, seq.workflow_id, record_as="sequential_with_parallel_child")
    await replay(client, f"{seq.workflow_id}-s2", record_as="parallel_child")


async def test_progress_query_and_cancel(client, make_settings, fake_llm):
    settings = make_settings([agent(n, LOCAL) for n in ("analyst", "writer")])
    gate = fake_llm.gate("writer")
    async with running_worker(client, settings, lambda _pool: fake_llm.call_llm) as chorus:
        handle = await chorus.start_sequential("t", ["analyst", "writer"])
        await asyncio.wait_for(fake_llm.started["writer"].wait(), 20)
        progress = await handle.progress()
        assert [(s.name, s.status) for s in progress.steps] == [
            ("analyst", "succeeded"),
            ("writer", "running"),
        ]
        assert progress.steps[1].provider == "local:fake"
        status = await chorus.status(handle.workflow_id)
        assert (
            status.status == "RUNNING" and status.summary and "analyst → writer" in status.summary
        )
        await chorus.cancel(handle.workflow_id)
        with pytest.raises(RunFailedError) as failure:
            await handle.result()
        gate.set()
        row = await db.run_row(await chorus.pool(), handle.workflow_id)
    assert row is not None and row["status"] == "cancelled"
    assert failure.value.status == "CANCELLED"
    desc = await client.get_workflow_handle(handle.workflow_id).describe()
    assert desc.status == WorkflowExecutionStatus.CANCELED


async def test_unknown_agent_rejected_before_start(client, make_settings):
    settings = make_settings([agent("analyst", LOCAL)])
    async with sdk(client, settings) as chorus:
        with pytest.raises(ChorusInputError, match=r"unknown agent.*nope.*known: analyst"):
            await chorus.start_sequential("t", ["analyst", "nope"])
    async with sdk(client, settings.model_copy(update={"max_document_bytes": 10})) as chorus:
        with pytest.raises(ChorusInputError, match=r"document: .* the limit is 10 bytes"):
            await chorus.start_sequential("t", ["analyst"], document="x" * 11)


async def test_workflow_refuses_agent_missing_from_postgres(client, make_settings, fake_llm):
    """A run whose agent is unknown to PostgreSQL (bypassing the SDK) fails fast and clearly."""
    settings = make_settings([agent("analyst", LOCAL)])
    async with running_worker(client, settings, lambda _pool: fake_llm.call_llm) as chorus:
        handle = await client.start_workflow(
            "ChorusSequential",
            SequentialInput(task="t", steps=[AgentStep(agent="ghost")]),
            id=f"seq-ghost-{uuid.uuid4().hex[:6]}",
            task_queue=settings.task_queue,
            result_type=RunResult,
        )
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
        row = await db.run_row(await chorus.pool(), handle.id)
    assert "unknown agent(s): ghost; known agents: analyst" in str(failure.value.cause)
    assert fake_llm.calls == []
    assert row is None  # nothing recorded for a run that could not start


async def test_run_without_a_usable_provider_leaves_no_row(
    client, make_settings, fake_llm, monkeypatch
):
    """Issue 19: chorus.start_run reads the agents and inserts the run row in one statement;
    a run whose agent no worker provider can serve fails before any call and leaves no row."""
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    settings = make_settings([agent("analyst", LOCAL), agent("claude", ["anthropic:claude-x"])])
    async with running_worker(client, settings, lambda _pool: fake_llm.call_llm) as chorus:
        handle = await chorus.start_sequential("t", ["analyst", "claude"])
        with pytest.raises(RunFailedError) as failure:
            await handle.result()
        pool = await chorus.pool()
        row = await db.run_row(pool, handle.workflow_id)
        ok = await chorus.run_sequential("t", ["analyst"])
        ok_row = await db.run_row(pool, ok.workflow_id)
    assert "agent 'claude' has no usable provider" in str(failure.value)
    assert "ANTHROPIC_API_KEY is not set" in str(failure.value)
    assert fake_llm.calls[0].agent == "analyst" and len(fake_llm.calls) == 1  # the second run's
    assert row is None
    assert ok_row is not None and ok_row["agent_versions"] == {"analyst": 1}


async def test_a_retried_start_deletes_the_row_a_dead_attempt_left(make_settings, monkeypatch):
    """An attempt of chorus.start_run that inserted the row and died before deleting it (no
    usable provider) leaves the row to the next attempt, which deletes it."""
    import dataclasses
    from datetime import UTC, datetime

    from temporalio.exceptions import ApplicationError
    from temporalio.testing import ActivityEnvironment

    from activities import RunActivities
    from chorus.contracts.models import StartRunInput

    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    settings = make_settings([agent("claude", ["anthropic:claude-x"])])
    run = StartRunInput(
        pattern="sequential",
        task="t",
        names=["claude"],
        root_workflow_id="wf-dead",
        started_at=datetime.now(UTC),
    )
    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        ActivityEnvironment.default_info(), workflow_id="wf-dead", workflow_run_id="run-1"
    )
    pool = await db.open_store(settings)
    try:
        dead = await db.resolve_and_record_run(pool, run, workflow_id="wf-dead", run_id="run-1")
        with pytest.raises(ApplicationError, match="'claude' has no usable provider"):
            await env.run(RunActivities(pool, settings).start_run, run)
        row = await db.run_row(pool, "wf-dead")
    finally:
        await pool.close()
    assert dead.inserted
    assert row is None


@pytest.mark.parametrize("mode", ["per-provider", "shared"])
async def test_llm_task_queue_choice_is_recorded_per_run(client, make_settings, fake_llm, mode):
    settings = make_settings([agent("analyst", LOCAL)], llm_task_queues=mode)
    async with running_worker(client, settings, lambda _pool: fake_llm.call_llm) as chorus:
        handle = await chorus.start_sequential("t", ["analyst"])
        await handle.result()
    history = await client.get_workflow_handle(handle.workflow_id).fetch_history()
    queues = [
        e.activity_task_scheduled_event_attributes.task_queue.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    expected = f"{settings.task_queue}-llm-local" if mode == "per-provider" else settings.task_queue
    assert queues == [expected]
    await replay(client, handle.workflow_id)


async def test_cancel_while_the_run_is_recorded_keeps_the_record(
    client, make_settings, fake_llm, monkeypatch
):
    """chorus.finish_run (a local activity) is not cancelled by a late cancellation request."""
    settings = make_settings([agent("analyst", LOCAL)])
    recording = asyncio.Event()
    original = db.record_run_finished

    async def slow(*args, **kwargs):
        recording.set()
        # Past the workflow task heartbeat (80% of its 10 s timeout), so the cancellation
        # request reaches the workflow while the local activity runs.
        await asyncio.sleep(9.5)
        return await original(*args, **kwargs)

    monkeypatch.setattr(db, "record_run_finished", slow)
    async with running_worker(client, settings, lambda _pool: fake_llm.call_llm) as chorus:
        handle = await chorus.start_sequential("t", ["analyst"])
        await asyncio.wait_for(recording.wait(), 20)
        await chorus.cancel(handle.workflow_id)
        result = await handle.result()
        row = await db.run_row(await chorus.pool(), handle.workflow_id)
    assert result.output.startswith("analyst output")
    assert row is not None and row["status"] == "succeeded"
