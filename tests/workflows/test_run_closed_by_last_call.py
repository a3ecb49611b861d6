"""The last call of a run closes the run row (issue 19): no ``chorus.finish_run`` local activity.

Real ``chorus.call_llm`` activities against the loopback stub, a real worker and PostgreSQL.
What the row holds must be what the workflow returned; every path where the call does not
close the row (an older worker, PostgreSQL refusing, a row that disagrees, a cancelled run)
must still close it through ``chorus.finish_run``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import Client, WorkflowFailureError, WorkflowHistory

import activities.llm
from activities.runs import RunCloser
from chorus.config.settings import Settings
from chorus.contracts.models import (
    AgentStep,
    LLMRequest,
    LLMResponse,
    RunClosed,
    RunResult,
    RunTotals,
    SequentialStep,
)
from chorus.contracts.names import CALL_LLM_ACTIVITY
from chorus.storage import db
from chorus.testing import FakeLLM
from tests.conftest import agent, production_worker, running_worker
from tests.stub_llm import Reply, StubLLM
from tests.workflows.test_workflows import replay

MODEL = ["openai:gpt-4o-mini"]
ON = {"close_run_in_last_call": True}
"""CHORUS_CLOSE_RUN_IN_LAST_CALL=true (off by default, for rolling deployments)."""


def local_activity_markers(history: WorkflowHistory) -> int:
    return sum(
        1
        for e in history.events
        if e.HasField("marker_recorded_event_attributes")
        and e.marker_recorded_event_attributes.marker_name == "core_local_activity"
    )


async def assert_row_is_result(pool: Any, result: RunResult) -> dict[str, Any]:
    """The run row holds the result's status, output, end and totals, to the digit."""
    row = await db.run_row(pool, result.workflow_id)
    assert row is not None
    assert row["status"] == "succeeded" and row["error"] is None
    assert row["output"] == result.output
    assert row["finished_at"] == result.finished_at
    t = result.totals
    assert (row["llm_calls"], row["attempts"]) == (t.llm_calls, t.attempts)
    assert (row["input_tokens"], row["output_tokens"]) == (t.input_tokens, t.output_tokens)
    assert float(row["cost_usd"]) == pytest.approx(t.cost_usd, abs=1e-8)
    assert row["wall_ms"] == pytest.approx(t.wall_ms)
    return row


async def test_a_sequential_run_is_closed_by_its_last_call(
    client: Client, make_settings: Callable[..., Settings], stub: StubLLM
):
    """Three agents: the third call closes the row and ends the live stream; the history has
    one local activity (``chorus.start_run``) and 25 events; the transcript is archived."""
    settings = make_settings([agent(n, MODEL) for n in ("analyst", "writer", "critic")], **ON)
    async with production_worker(client, settings) as chorus:
        handle = await chorus.start_sequential("Summarize it", ["analyst", "writer", "critic"])
        result = await handle.result()
        await assert_row_is_result(await chorus.pool(), result)
        events = [e async for e in handle.stream()]
        transcript = await db.transcript(await chorus.pool(), handle.workflow_id)

    assert result.totals.llm_calls == 3 and result.totals.cost_usd > 0
    kinds = [e.kind for e in events]
    assert kinds[-2:] == ["step_completed", "run_finished"] and kinds.count("step_completed") == 3
    assert events[-1].text == "succeeded"
    assert [m["agent"] for m in transcript] == ["analyst", "writer", "critic"]
    history = await client.get_workflow_handle(handle.workflow_id).fetch_history()
    assert local_activity_markers(history) == 1  # chorus.start_run only
    assert len(history.events) == 25
    await replay(client, handle.workflow_id, record_as="sequential_closed_by_last_call")


async def test_a_parallel_run_is_closed_by_its_aggregator(
    client: Client, make_settings: Callable[..., Settings], stub: StubLLM
):
    """The aggregator's call closes the row, counting every branch, the failed one included."""
    stub.script("m-broken", *[Reply(status=400, error_message="bad request")] * 3)
    settings = make_settings(
        [
            agent("a", MODEL),
            agent("b", MODEL),
            agent("broken", ["openai:m-broken"]),
            agent("aggregator", MODEL),
        ],
        **ON,
    )
    async with production_worker(client, settings) as chorus:
        handle = await chorus.start_parallel("Review", ["a", "b", "broken"], min_successes=2)
        result = await handle.result()
        await assert_row_is_result(await chorus.pool(), result)

    assert [s.status for s in result.steps] == ["succeeded", "succeeded", "failed", "succeeded"]
    assert result.totals.llm_calls == 3 and result.totals.attempts == 4
    history = await client.get_workflow_handle(handle.workflow_id).fetch_history()
    assert local_activity_markers(history) == 1
    await replay(client, handle.workflow_id, record_as="parallel_closed_by_aggregator")


async def test_a_nested_sequential_child_is_closed_by_its_last_call(
    client: Client, make_settings: Callable[..., Settings], stub: StubLLM
):
    """A child run closes its own row (not archived); the parent's last call closes the
    parent's, whose totals count the child's calls."""
    settings = make_settings([agent(n, MODEL) for n in ("a", "b", "c")], **ON)
    async with production_worker(client, settings) as chorus:
        handle = await chorus.start_sequential(
            "Nest", [SequentialStep(steps=[AgentStep(agent="a"), AgentStep(agent="b")]), "c"]
        )
        result = await handle.result()
        pool = await chorus.pool()
        await assert_row_is_result(pool, result)
        child_id = result.steps[0].child_workflow_id
        assert child_id is not None
        child = await db.run_row(pool, child_id)
    assert child is not None and child["status"] == "succeeded" and child["llm_calls"] == 2
    assert result.totals.llm_calls == 3
    child_history = await client.get_workflow_handle(child_id).fetch_history()
    assert local_activity_markers(child_history) == 1  # its start: the parent pinned agents


async def test_when_the_call_cannot_close_the_row_the_workflow_does(
    client: Client,
    make_settings: Callable[..., Settings],
    stub: StubLLM,
    monkeypatch: pytest.MonkeyPatch,
):
    """PostgreSQL refuses the close in the LLM activity: the call still succeeds (it is
    recorded) and ``chorus.finish_run`` closes the row."""

    class Refusing(RunCloser):
        async def close(self, *args: Any, **kwargs: Any) -> bool:
            raise OSError("connection reset (test)")

    monkeypatch.setattr(activities.llm, "RunCloser", Refusing)
    settings = make_settings([agent("writer", MODEL)], **ON)
    async with production_worker(client, settings) as chorus:
        handle = await chorus.start_sequential("Write", ["writer"])
        result = await handle.result()
        await assert_row_is_result(await chorus.pool(), result)
    history = await client.get_workflow_handle(handle.workflow_id).fetch_history()
    assert local_activity_markers(history) == 2  # chorus.start_run and chorus.finish_run


class DisagreeingLLM(FakeLLM):
    """Claims to have closed the row with totals that are not the run's."""

    @activity.defn(name=CALL_LLM_ACTIVITY)
    async def call_llm(self, req: LLMRequest) -> LLMResponse:
        response = await super().call_llm(req)
        if req.close_run is None:
            return response
        wrong = RunClosed(
            finished_at=req.close_run.started_at, totals=RunTotals(llm_calls=99, cost_usd=9.0)
        )
        return response.model_copy(update={"run_closed": wrong})


async def test_a_row_that_disagrees_with_the_result_is_rewritten(
    client: Client, make_settings: Callable[..., Settings]
):
    """The workflow checks what the call says it wrote against its own result, and closes
    the row itself when they differ."""
    llm = DisagreeingLLM()
    settings = make_settings([agent(n, ["local:fake"]) for n in ("a", "b")], **ON)
    async with running_worker(client, settings, lambda _pool: llm.call_llm) as chorus:
        handle = await chorus.start_sequential("t", ["a", "b"])
        result = await handle.result()
        await assert_row_is_result(await chorus.pool(), result)
    assert result.totals.llm_calls == 2
    assert [r.close_run is not None for r in llm.calls] == [False, True]
    assert llm.calls[1].close_run is not None
    assert llm.calls[1].close_run.totals_before.llm_calls == 1


async def test_a_cancellation_during_the_closing_call_ends_the_run_as_recorded(
    client: Client, make_settings: Callable[..., Settings], stub: StubLLM
):
    """A cancellation that arrives while the closing call runs (it heartbeats only after
    10 s, so it finishes): the call closed the row and ended the live stream as succeeded, so
    the run ends succeeded too, rather than cancelled with a stream that says otherwise."""
    stub.script("gpt-4o-mini", Reply(text="slow answer", delay_s=1.5))
    settings = make_settings([agent("writer", MODEL)], **ON)
    async with production_worker(client, settings) as chorus:
        handle = await chorus.start_sequential("Write", ["writer"])
        await asyncio.sleep(0.7)
        await client.get_workflow_handle(handle.workflow_id).cancel()
        result = await handle.result()
        row = await assert_row_is_result(await chorus.pool(), result)
        events = [e async for e in handle.stream()]
    assert result.output == row["output"] == "slow answer"
    assert [e.kind for e in events][-1] == "run_finished" and events[-1].text == "succeeded"
    history = await client.get_workflow_handle(handle.workflow_id).fetch_history()
    assert any(
        e.HasField("workflow_execution_cancel_requested_event_attributes") for e in history.events
    )
    assert local_activity_markers(history) == 1
    await replay(client, handle.workflow_id, record_as="cancelled_after_the_closing_call")


async def test_without_the_setting_a_cancellation_during_the_last_call_cancels(
    client: Client, make_settings: Callable[..., Settings], stub: StubLLM
):
    """Off (the default): the run ends cancelled, and so does its row, as before."""
    stub.script("gpt-4o-mini", Reply(text="slow answer", delay_s=1.5))
    settings = make_settings([agent("writer", MODEL)])
    async with production_worker(client, settings) as chorus:
        handle = await chorus.start_sequential("Write", ["writer"])
        await asyncio.sleep(0.7)
        await client.get_workflow_handle(handle.workflow_id).cancel()
        with pytest.raises(WorkflowFailureError):
            await client.get_workflow_handle(handle.workflow_id).result()
        row = await db.run_row(await chorus.pool(), handle.workflow_id)
    assert row is not None and row["status"] == "cancelled"


async def test_the_setting_off_by_default_keeps_chorus_finish_run(
    client: Client, make_settings: Callable[..., Settings], stub: StubLLM
):
    """``CHORUS_CLOSE_RUN_IN_LAST_CALL`` off (the default, safe with workers older than it):
    the last call is not asked, ``chorus.finish_run`` closes the row."""
    settings = make_settings([agent("writer", MODEL)])
    async with production_worker(client, settings) as chorus:
        handle = await chorus.start_sequential("Write", ["writer"])
        result = await handle.result()
        await assert_row_is_result(await chorus.pool(), result)
    history = await client.get_workflow_handle(handle.workflow_id).fetch_history()
    assert local_activity_markers(history) == 2
    requests = [
        e.activity_task_scheduled_event_attributes
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    assert len(requests) == 1
    assert json.loads(requests[0].input.payloads[0].data)["close_run"] is None
