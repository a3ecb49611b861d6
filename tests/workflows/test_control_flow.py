"""Loops, routers, hand-offs and group chats on a real Temporal dev server, with scripted answers.

A scripted :class:`chorus.testing.FakeLLM` drives every decision (a critic's verdict, a
router's route, a manager's pick), so each test asserts exactly which steps ran and why the
control step ended; every run's history is replayed (and the first of each kind is checked in
under ``tests/histories``).
"""

from __future__ import annotations

import asyncio
import json

import pytest

from chorus.contracts import errors
from chorus.contracts.control import GroupChatStep, HandoffStep, Until
from chorus.contracts.models import (
    AgentStep,
    ControlInput,
    LoopStep,
    RouterStep,
    SequentialStep,
    StepResult,
)
from chorus.contracts.names import CONTROL_WORKFLOW
from starter.sdk import RunFailedError
from tests.conftest import agent, running_worker
from tests.workflows.test_workflows import replay

LOCAL = ["local:fake"]
VERDICT = {
    "type": "object",
    "properties": {"verdict": {"type": "string", "enum": ["ready", "revise"]}},
    "required": ["verdict"],
}


def catalog(*names: str) -> list[dict[str, object]]:
    return [agent(n, LOCAL) for n in names]


def review_loop(**extra) -> LoopStep:
    return LoopStep(
        body=[AgentStep(agent="writer"), AgentStep(agent="critic")],
        until=Until(agent="critic", field="verdict", equals="ready"),
        output_from="writer",
        **extra,
    )


async def test_loop_ends_when_the_critic_says_ready(client, make_settings, fake_llm):
    fake_llm.script("critic", '{"verdict": "revise"}', '{"verdict": "Ready"}')
    settings = make_settings(catalog("analyst", "writer", "critic"))
    async with running_worker(client, settings, lambda _pool: fake_llm.call_llm) as chorus:
        handle = await chorus.start_sequential(
            "Write it", [AgentStep(agent="analyst"), review_loop(max_iterations=5)]
        )
        result = await handle.result()

    loop = result.steps[1]
    assert loop.kind == "loop" and loop.control is not None
    assert (loop.control.ended_by, loop.control.rounds) == ("predicate", 2)
    assert [s.name for s in loop.steps] == ["iteration 1", "iteration 2"]
    assert [s.agent for s in loop.steps[1].steps] == ["writer", "critic"]
    # The loop's output is the writer's last draft, and it is the run's output.
    assert loop.output == result.output and result.output.startswith("writer output")
    # Iteration 2's writer saw the run's context and iteration 1's outputs.
    second_writer = [c for c in fake_llm.calls if c.agent == "writer"][1]
    assert [c.name for c in second_writer.context] == [
        "analyst",
        "writer (iteration 1)",
        "critic (iteration 1)",
    ]
    assert result.totals.llm_calls == 5 and result.totals.cost_usd == pytest.approx(0.005)
    assert loop.child_workflow_id == f"{handle.workflow_id}-s2"
    await replay(client, handle.workflow_id, record_as="loop_in_sequential")
    await replay(client, f"{handle.workflow_id}-s2", record_as="loop_predicate")


async def test_loop_stops_at_max_iterations_and_at_max_cost(client, make_settings, fake_llm):
    fake_llm.script("critic", '{"verdict": "revise"}', cost_usd=0.01)
    fake_llm.script("writer", "draft", cost_usd=0.01)
    settings = make_settings(catalog("writer", "critic"))
    async with running_worker(client, settings, lambda _pool: fake_llm.call_llm) as chorus:
        by_count = await chorus.run_sequential("Write it", [review_loop(max_iterations=3)])
        by_cost = await chorus.run_sequential(
            "Write it", [review_loop(max_iterations=10, max_cost_usd=0.025)]
        )

    assert by_count.steps[0].control.ended_by == "max_iterations"
    assert by_count.steps[0].control.rounds == 3
    # Each iteration costs $0.02: the second one crosses $0.025, so no third starts.
    assert by_cost.steps[0].control.ended_by == "max_cost"
    assert by_cost.steps[0].control.rounds == 2
    assert by_cost.totals.cost_usd == pytest.approx(0.04)


async def test_long_loop_continues_as_new_carrying_its_state(client, make_settings, fake_llm):
    fake_llm.script("critic", '{"verdict": "revise"}')
    settings = make_settings(catalog("writer", "critic"))
    async with running_worker(client, settings, lambda _pool: fake_llm.call_llm) as chorus:
        # Started by a plain client (no pinned agents): the workflow pins them itself.
        handle = await client.start_workflow(
            CONTROL_WORKFLOW,
            ControlInput(
                task="Write it", step=review_loop(max_iterations=5), continue_as_new_every=2
            ),
            id=f"ctl-{settings.task_queue}",
            task_queue=settings.task_queue,
            result_type=StepResult,
        )
        result = await handle.result()
        del chorus

    assert result.control.rounds == 5 and result.control.continued_as_new == 2
    assert [s.name for s in result.steps] == [f"iteration {n}" for n in range(1, 6)]
    # The fifth iteration still saw the fourth's outputs, across two continue-as-new.
    last_writer = [c for c in fake_llm.calls if c.agent == "writer"][-1]
    assert [c.name for c in last_writer.context] == ["writer (iteration 4)", "critic (iteration 4)"]
    first = client.get_workflow_handle(handle.id, run_id=handle.first_execution_run_id)
    assert (await first.describe()).status.name == "CONTINUED_AS_NEW"
    await replay(client, handle.id, record_as="loop_continued_as_new")


async def test_router_runs_the_route_it_picks(client, make_settings, fake_llm):
    fake_llm.script("dispatcher", json.dumps({"route": "billing", "reason": "an invoice"}))
    settings = make_settings(catalog("dispatcher", "billing", "tech", "writer"))
    router = RouterStep(
        agent="dispatcher",
        routes={"billing": AgentStep(agent="billing"), "tech": AgentStep(agent="tech")},
    )
    async with running_worker(client, settings, lambda _pool: fake_llm.call_llm) as chorus:
        handle = await chorus.start_sequential("Help", [router, AgentStep(agent="writer")])
        result = await handle.result()

    step = result.steps[0]
    assert step.control.ended_by == "routed"
    assert [(c.choice, c.reason) for c in step.control.choices] == [("billing", "an invoice")]
    assert [s.agent for s in step.steps] == ["dispatcher", "billing"]
    assert not any(c.agent == "tech" for c in fake_llm.calls)
    # The router was told its routes and constrained to them (its schema was replaced).
    ask = next(c for c in fake_llm.calls if c.agent == "dispatcher")
    assert ask.output_schema["properties"]["route"]["enum"] == ["billing", "tech", "done"]
    assert "billing" in ask.context[-1].output
    # The writer after the router sees the route's output.
    writer = next(c for c in fake_llm.calls if c.agent == "writer")
    assert [c.name for c in writer.context] == ["router dispatcher(billing / tech)"]
    await replay(client, f"{handle.workflow_id}-s1", record_as="router_routed")


async def test_router_limits_and_bad_answers_fail_the_run_with_their_type(
    client, make_settings, fake_llm
):
    settings = make_settings(catalog("dispatcher", "billing"))
    routes = {"billing": AgentStep(agent="billing")}
    async with running_worker(client, settings, lambda _pool: fake_llm.call_llm) as chorus:
        fake_llm.script("dispatcher", '{"route": "billing", "reason": "again"}')
        with pytest.raises(RunFailedError) as limit:
            await chorus.run_sequential(
                "Help", [RouterStep(agent="dispatcher", routes=routes, max_routes=2)]
            )
        fake_llm.script(
            "dispatcher",
            '{"route": "billing", "reason": "x"}',
            '{"route": "done", "reason": "enough"}',
        )
        done = await chorus.run_sequential(
            "Help", [RouterStep(agent="dispatcher", routes=routes, max_routes=2)]
        )
        fake_llm.script("dispatcher", "I think billing")
        with pytest.raises(RunFailedError) as invalid:
            await chorus.run_sequential("Help", [RouterStep(agent="dispatcher", routes=routes)])

    assert limit.value.error_type == errors.ROUTE_LIMIT
    assert "max_routes is 2" in str(limit.value)
    assert done.steps[0].control.ended_by == "done"
    assert [c.choice for c in done.steps[0].control.choices] == ["billing", "done"]
    assert invalid.value.error_type == errors.CONTROL_ANSWER_INVALID
    assert "I think billing" in str(invalid.value)


async def test_handoff_moves_the_conversation_and_stops_cycles(client, make_settings, fake_llm):
    settings = make_settings(catalog("front", "billing"))
    agents = {"front": ["billing"], "billing": ["front"]}
    async with running_worker(client, settings, lambda _pool: fake_llm.call_llm) as chorus:
        fake_llm.script("front", '{"reply": "over to billing", "handoff_to": "billing"}')
        fake_llm.script("billing", '{"reply": "refund issued", "handoff_to": "none"}')
        handle = await chorus.start_sequential(
            "Refund me", [HandoffStep(start="front", agents=agents)]
        )
        answered = await handle.result()
        fake_llm.script("billing", '{"reply": "back to you", "handoff_to": "front"}')
        with pytest.raises(RunFailedError) as cycle:
            await chorus.run_sequential(
                "Refund me", [HandoffStep(start="front", agents=agents, max_hops=3)]
            )

    step = answered.steps[0]
    assert (step.output, step.control.ended_by, step.control.rounds) == (
        "refund issued",
        "answered",
        1,
    )
    billing_call = next(c for c in fake_llm.calls if c.agent == "billing")
    assert [c.name for c in billing_call.context][:1] == ["front"]  # the transcript moved
    assert billing_call.context[0].output == "over to billing"
    assert cycle.value.error_type == errors.HANDOFF_LIMIT
    assert "front → billing → front → billing → front" in str(cycle.value)
    await replay(client, f"{handle.workflow_id}-s1", record_as="handoff_answered")


async def test_group_chat_until_phrase_done_or_max_turns(client, make_settings, fake_llm):
    settings = make_settings(catalog("moderator", "writer", "critic"))
    chat = GroupChatStep(
        manager="moderator",
        participants=["writer", "critic"],
        until=Until(agent="critic", phrase="APPROVED"),
        max_turns=6,
    )
    pick = lambda who: json.dumps({"route": who, "reason": f"{who}'s turn"})  # noqa: E731
    async with running_worker(client, settings, lambda _pool: fake_llm.call_llm) as chorus:
        fake_llm.script("moderator", pick("writer"), pick("critic"), pick("writer"), pick("critic"))
        fake_llm.script("critic", "needs work", "approved, ship it")
        handle = await chorus.start_sequential("Draft", [chat])
        by_phrase = await handle.result()
        fake_llm.script("moderator", pick("writer"), pick("done"))
        by_manager = await chorus.run_sequential("Draft", [chat])
        fake_llm.script("moderator", pick("writer"))
        by_turns = await chorus.run_sequential("Draft", [chat.model_copy(update={"max_turns": 3})])

    step = by_phrase.steps[0]
    assert step.control.ended_by == "phrase" and step.control.rounds == 4
    assert step.output == "approved, ship it"
    assert [c.choice for c in step.control.choices] == ["writer", "critic", "writer", "critic"]
    assert by_manager.steps[0].control.ended_by == "done"
    assert by_turns.steps[0].control.ended_by == "max_turns"
    assert by_turns.steps[0].control.rounds == 3
    await replay(client, f"{handle.workflow_id}-s1", record_as="group_chat_phrase")


async def test_loop_body_may_hold_a_group(client, make_settings, fake_llm):
    fake_llm.script("critic", '{"verdict": "revise"}', '{"verdict": "ready"}')
    settings = make_settings(catalog("writer", "editor", "critic"))
    loop = LoopStep(
        body=[
            SequentialStep(steps=[AgentStep(agent="writer"), AgentStep(agent="editor")]),
            AgentStep(agent="critic"),
        ],
        until=Until(field="verdict", equals="ready"),
    )
    async with running_worker(client, settings, lambda _pool: fake_llm.call_llm) as chorus:
        handle = await chorus.start_sequential("Write", [loop])
        result = await handle.result()
    assert result.steps[0].control.rounds == 2
    group = result.steps[0].steps[1].steps[0]
    assert group.kind == "sequential" and group.child_workflow_id == f"{handle.workflow_id}-s1-s3"
    assert result.totals.llm_calls == 6


async def test_status_shows_a_running_loops_iteration(client, make_settings, fake_llm):
    fake_llm.script("critic", '{"verdict": "revise"}')
    held = fake_llm.gate("critic")
    settings = make_settings(catalog("writer", "critic"))
    async with running_worker(client, settings, lambda _pool: fake_llm.call_llm) as chorus:
        handle = await chorus.start_sequential("Write", [review_loop(max_iterations=2)])
        await asyncio.wait_for(fake_llm.started["critic"].wait(), 20)
        status = await chorus.status(handle.workflow_id)
        held.set()
        await handle.result()
    step = status.progress.steps[0]
    assert step.kind == "loop" and step.status == "running"
    assert step.note == "iteration 1" and step.child_workflow_id == f"{handle.workflow_id}-s1"
