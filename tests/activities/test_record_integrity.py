"""The record and the money, under careless and hostile use (issue 20).

Reusing a workflow id made a second run look like a retry of the first: its calls overwrote the
first run's messages, its spend escaped the ledger and the budgets. Workflow ids are now never
reused: the SDK/CLI start runs with ``REJECT_DUPLICATE`` and say so, and a run started under a
used id by a plain Temporal client fails before any paid call (``WorkflowIdReused``).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from typing import Any

import pytest
from temporalio.client import Client, WorkflowExecutionStatus

from activities import LLMActivities, ProviderClients
from starter.dev import temporal_binary
from starter.sdk import ChorusInputError
from tests.conftest import agent, running_worker
from tests.stub_llm import StubLLM


@pytest.fixture
def stub(monkeypatch):
    with StubLLM() as server:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        yield server


async def plain_start(
    client: Client, task_queue: str, workflow_id: str, body: dict[str, Any]
) -> None:
    proc = await asyncio.create_subprocess_exec(
        temporal_binary(),
        *("workflow", "start", "--type", "ChorusSequential", "--task-queue", task_queue),
        *("--workflow-id", workflow_id, "--input", json.dumps(body)),
        *("--address", client.service_client.config.target_host),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()


async def test_reusing_a_workflow_id_never_touches_the_first_record(client, make_settings, stub):
    settings = make_settings(
        [agent("a1", ["openai:gpt-4o-mini"]), agent("a2", ["openai:gpt-4o-mini"])]
    )
    clients = ProviderClients.from_settings(settings)
    workflow_id = "reuse-me"
    try:
        async with running_worker(
            client, settings, lambda pool: LLMActivities(clients, settings, pool).call_llm
        ) as chorus:
            first = await chorus.start_sequential("reuse", ["a1", "a2"], workflow_id=workflow_id)
            result = await first.result()
            pool = await chorus.pool()
            before = await pool.fetchrow(
                "SELECT run_id, task, output, llm_calls FROM runs WHERE workflow_id = $1",
                workflow_id,
            )
            messages_before = await pool.fetch(
                "SELECT agent, completion FROM messages WHERE workflow_id = $1 ORDER BY id",
                workflow_id,
            )
            # The SDK (and so the CLI) refuses at once, naming the id.
            with pytest.raises(ChorusInputError, match="already used"):
                await chorus.start_sequential("another task", ["a2", "a1"], workflow_id=workflow_id)
            # A plain Temporal client may start it anyway: the run fails before calling anyone.
            for attempt in range(3):
                await plain_start(
                    client,
                    settings.task_queue,
                    workflow_id,
                    {
                        "task": f"another task {attempt}",
                        "steps": [
                            {"kind": "agent", "agent": "a2"},
                            {"kind": "agent", "agent": "a1"},
                        ],
                    },
                )
                handle = client.get_workflow_handle(workflow_id)
                for _ in range(100):
                    desc = await handle.describe()
                    if desc.status != WorkflowExecutionStatus.RUNNING:
                        break
                    await asyncio.sleep(0.1)
                status = await chorus.status(workflow_id)
                assert status.status == "FAILED"
                assert status.error_type == "WorkflowIdReused"
                assert "already used by run" in (status.error or "")
            after = await pool.fetchrow(
                "SELECT run_id, task, output, llm_calls FROM runs WHERE workflow_id = $1",
                workflow_id,
            )
            messages_after = await pool.fetch(
                "SELECT agent, completion FROM messages WHERE workflow_id = $1 ORDER BY id",
                workflow_id,
            )
            ledger_rows = await pool.fetchval(
                "SELECT count(*) FROM cost_ledger WHERE workflow_id = $1", workflow_id
            )
            reservations = await pool.fetchval(
                "SELECT count(*) FROM budget_reservations WHERE workflow_id = $1", workflow_id
            )
    finally:
        await clients.close()
    assert before is not None and after is not None
    assert result.output and dict(after) == dict(before)
    assert before["task"] == "reuse" and before["llm_calls"] == 2
    assert [tuple(m) for m in messages_after] == [tuple(m) for m in messages_before]
    assert [m["agent"] for m in messages_after] == ["a1", "a2"]
    # Every paid call is in the ledger exactly once: 2 calls reached the provider, 2 rows.
    assert len(stub.requests) == 2
    assert ledger_rows == 2
    assert reservations <= 2


async def test_postgres_outage_mid_call_loses_no_paid_answer(
    client, make_settings, own_postgres, monkeypatch
):
    """5 runs in flight, PostgreSQL stopped while the provider answers and restarted 23 s
    later: every run completes, each paid answer recorded once, no provider call repeated,
    no reservation left held (before: all 5 FAILED within ~11 s and 5 answers were lost)."""
    with StubLLM(default_delay_s=3) as stub:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
        settings = make_settings(
            [agent("a1", ["openai:gpt-4o-mini"])], database_url=own_postgres.url
        )
        clients = ProviderClients.from_settings(settings)
        try:
            async with running_worker(
                client, settings, lambda pool: LLMActivities(clients, settings, pool).call_llm
            ) as chorus:
                handles = [await chorus.start_sequential(f"outage {i}", ["a1"]) for i in range(5)]
                for _ in range(100):
                    if len(stub.requests) == 5 or stub.in_flight == 5:
                        break
                    await asyncio.sleep(0.1)
                assert stub.in_flight == 5  # all five calls are at the provider now
                await asyncio.to_thread(own_postgres.stop)
                await asyncio.sleep(23)
                await asyncio.to_thread(own_postgres.start)
                results = await asyncio.wait_for(
                    asyncio.gather(*(h.result() for h in handles)), timeout=180
                )
                pool = await chorus.pool()
                ids = [h.workflow_id for h in handles]
                messages = await pool.fetchval(
                    "SELECT count(*) FROM messages WHERE workflow_id = ANY($1)", ids
                )
                ledger = await pool.fetchval(
                    "SELECT count(*) FROM cost_ledger WHERE workflow_id = ANY($1)", ids
                )
                held = await pool.fetchval(
                    "SELECT count(*) FROM budget_reservations WHERE state = 'reserved'"
                )
                runs = await pool.fetch(
                    "SELECT status, llm_calls FROM runs WHERE workflow_id = ANY($1)", ids
                )
        finally:
            await clients.close()
    assert all(r.output for r in results)
    assert len(stub.requests) == 5  # no answer bought twice
    assert (messages, ledger, held) == (5, 5, 0)
    assert sorted((r["status"], r["llm_calls"]) for r in runs) == [("succeeded", 1)] * 5


async def test_cancelled_run_records_what_was_paid(client, make_settings, stub):
    """Cancel while the second agent's call is at the provider: the run waits for that call
    to stop, and its row counts every call that was recorded (before: 0 calls, $0, while
    messages and the ledger held the paid calls; progress showed a step "running")."""
    stub.default_delay_s = 2.0
    settings = make_settings(
        [agent("a1", ["openai:gpt-4o-mini"]), agent("a2", ["openai:gpt-4o-mini"])]
    )
    clients = ProviderClients.from_settings(settings)
    try:
        async with running_worker(
            client, settings, lambda pool: LLMActivities(clients, settings, pool).call_llm
        ) as chorus:
            handle = await chorus.start_sequential("cancel me", ["a1", "a2"])
            for _ in range(200):
                if len(stub.requests) == 2:
                    break
                await asyncio.sleep(0.05)
            assert len(stub.requests) == 2  # a2's call is in flight
            await chorus.cancel(handle.workflow_id)
            with pytest.raises(Exception):  # noqa: B017 - RunFailedError: CANCELLED
                await handle.result()
            pool = await chorus.pool()
            row = await pool.fetchrow(
                "SELECT status, llm_calls, cost_usd::float8 AS cost FROM runs"
                " WHERE workflow_id = $1",
                handle.workflow_id,
            )
            paid = await pool.fetchrow(
                "SELECT count(*) AS n, coalesce(sum(cost_usd), 0)::float8 AS cost"
                " FROM cost_ledger WHERE workflow_id = $1",
                handle.workflow_id,
            )
            progress = await handle.progress()
    finally:
        await clients.close()
    assert row is not None and paid is not None
    assert row["status"] == "cancelled"
    assert paid["n"] >= 1
    assert (row["llm_calls"], round(row["cost"], 8)) == (paid["n"], round(paid["cost"], 8))
    assert [s.status for s in progress.steps] == ["succeeded", "failed"]
    assert progress.steps[1].error == "cancelled"
