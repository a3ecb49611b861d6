"""Search attributes (ChorusPattern, ChorusAgents, ChorusStatus, ChorusCostUsd, ChorusDraftStatus)
queried through the plain `temporal` CLI, and `chorus top --once --json`."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError

from chorus.contracts.drafting import UserRequest
from chorus.contracts.models import AgentStep, RunResult, SequentialInput, SequentialStep
from chorus.contracts.names import (
    AGENTS_ATTR,
    COST_ATTR,
    DRAFT_STATUS_ATTR,
    PATTERN_ATTR,
    SEARCH_ATTRIBUTES,
    SEQUENTIAL_WORKFLOW,
    STATUS_ATTR,
)
from starter.dev import temporal_argv, temporal_binary
from starter.sdk import RunFailedError
from tests.conftest import agent, running_worker
from tests.starter.test_draft_cli import run
from tests.workflows.test_drafts import no_llm, wait_saved
from tests.workflows.test_workflows import replay

LOCAL = ["local:fake"]


async def workflow_ids(address: str, query: str, expected: set[str]) -> set[str]:
    """Ids the `temporal workflow list --query` CLI returns; polls while visibility catches up."""
    found: set[str] = set()
    for _ in range(50):
        code, out, err = await run(
            temporal_binary(),
            "workflow",
            "list",
            "--query",
            query,
            "--address",
            address,
            "-o",
            "json",
            env=dict(os.environ),
        )
        assert code == 0, err
        found = {row["execution"]["workflowId"] for row in json.loads(out or "[]")}
        if found == expected:
            break
        await asyncio.sleep(0.1)
    return found


async def test_runs_filter_by_pattern_agents_status_and_cost(client, make_settings, fake_llm):
    tag = uuid.uuid4().hex[:8]
    scout, writer = f"scout-{tag}", f"writer-{tag}"
    settings = make_settings([agent(scout, LOCAL), agent(writer, LOCAL)])
    address = client.service_client.config.target_host
    async with running_worker(client, settings, lambda _pool: fake_llm.call_llm) as chorus:
        handles = [
            await chorus.start_sequential("Seq one", [scout, writer]),
            await chorus.start_sequential("Seq two", [writer]),
            await chorus.start_parallel("Par one", [scout, writer], aggregator=None),
            await chorus.start_parallel("Par two", [scout], aggregator=writer),
        ]
        for handle in handles:
            await handle.result()
    seq = {h.workflow_id for h in handles[:2]}
    par = {h.workflow_id for h in handles[2:]}
    mine = f'ChorusAgents = "{writer}"'

    assert await workflow_ids(address, f'ChorusPattern="parallel" AND {mine}', par) == par
    assert await workflow_ids(address, f'ChorusPattern="sequential" AND {mine}', seq) == seq
    both = seq | par
    assert await workflow_ids(address, f'ChorusStatus="succeeded" AND {mine}', both) == both
    scouted = {handles[0].workflow_id, *par}
    assert await workflow_ids(address, f'ChorusAgents="{scout}"', scouted) == scouted
    # FakeLLM charges 0.001 USD per call: runs with two calls cost 0.002.
    two_calls = {handles[0].workflow_id, *par}
    query = f"ChorusCostUsd > 0.0015 AND {mine}"
    assert await workflow_ids(address, query, two_calls) == two_calls

    attrs = await client.get_workflow_handle(handles[0].workflow_id).describe()
    typed = attrs.typed_search_attributes
    assert typed.get(PATTERN_ATTR) == "sequential"
    assert typed.get(AGENTS_ATTR) == [scout, writer]
    assert typed.get(STATUS_ATTR) == "succeeded"
    assert typed.get(COST_ATTR) == pytest.approx(0.002)


async def test_workflow_sets_attributes_for_plain_clients_and_child_runs(
    client, make_settings, fake_llm
):
    """A run started without search attributes (plain client) gets them from the workflow,
    and so does its child run."""
    tag = uuid.uuid4().hex[:8]
    name = f"solo-{tag}"
    settings = make_settings([agent(name, LOCAL)])
    workflow_id = f"plain-{tag}"
    async with running_worker(client, settings, lambda _pool: fake_llm.call_llm):
        result = await client.execute_workflow(
            SEQUENTIAL_WORKFLOW,
            SequentialInput(
                task="Plain",
                steps=[AgentStep(agent=name), SequentialStep(steps=[AgentStep(agent=name)])],
            ),
            id=workflow_id,
            task_queue=settings.task_queue,
            result_type=RunResult,
        )
    assert result.totals.llm_calls == 2
    for wf_id in (workflow_id, f"{workflow_id}-s2"):
        typed = (await client.get_workflow_handle(wf_id).describe()).typed_search_attributes
        assert typed.get(PATTERN_ATTR) == "sequential"
        assert typed.get(AGENTS_ATTR) == [name]
        assert typed.get(STATUS_ATTR) == "succeeded"
    await replay(client, workflow_id)


async def test_failed_run_status_attribute(client, make_settings, fake_llm):
    tag = uuid.uuid4().hex[:8]
    name = f"flaky-{tag}"
    settings = make_settings([agent(name, LOCAL)])
    fake_llm.fail(name, "local", "BadRequest")
    async with running_worker(client, settings, lambda _pool: fake_llm.call_llm) as chorus:
        handle = await chorus.start_sequential("Fails", [name])
        with pytest.raises(RunFailedError):
            await handle.result()
    address = client.service_client.config.target_host
    expected = {handle.workflow_id}
    query = f'ChorusStatus="failed" AND ChorusAgents="{name}"'
    assert await workflow_ids(address, query, expected) == expected


async def test_draft_status_attribute_follows_transitions(client, make_settings):
    settings = make_settings([agent("writer", LOCAL)])
    address = client.service_client.config.target_host
    async with running_worker(client, settings, no_llm) as chorus:
        draft_id = await chorus.start_draft("Searchable", "alice", content="text")
        await wait_saved(await chorus.pool(), draft_id, 1)
        expected = {draft_id}
        query = f'ChorusDraftStatus="drafting" AND WorkflowId="{draft_id}"'
        assert await workflow_ids(address, query, expected) == expected
        await chorus.draft_update(draft_id, "submit", UserRequest(user="alice"))
        query = f'ChorusDraftStatus="in_review" AND WorkflowId="{draft_id}"'
        assert await workflow_ids(address, query, expected) == expected
        desc = await client.get_workflow_handle(draft_id).describe()
        assert desc.typed_search_attributes.get(DRAFT_STATUS_ATTR) == "in_review"
        await chorus.draft_update(draft_id, "archive", UserRequest(user="alice"))
        await client.get_workflow_handle(draft_id).result()
    await replay(client, draft_id)


def test_dev_server_registers_every_attribute(tmp_path):
    from chorus.config.settings import Settings

    argv = temporal_argv(Settings(data_dir=tmp_path))
    registered = {argv[i + 1] for i, a in enumerate(argv) if a == "--search-attribute"}
    assert registered == {
        "ChorusPattern=Keyword",
        "ChorusAgents=KeywordList",
        "ChorusStatus=Keyword",
        "ChorusCostUsd=Double",
        "ChorusDraftStatus=Keyword",
        "ChorusAwaiting=KeywordList",
    }
    assert len(registered) == len(SEARCH_ATTRIBUTES)


async def test_chorus_top_once_json(client, make_settings, fake_llm):
    tag = uuid.uuid4().hex[:8]
    name, bad = f"topper-{tag}", f"broken-{tag}"
    settings = make_settings([agent(name, LOCAL), agent(bad, LOCAL)])
    fake_llm.fail(bad, "local", "BadRequest")
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "DATABASE_URL": settings.database_url or "",
        "CHORUS_TASK_QUEUE": settings.task_queue,
    }
    async with running_worker(client, settings, lambda _pool: fake_llm.call_llm) as chorus:
        pool = await chorus.pool()
        # FakeLLM records nothing; the real activity writes one messages row per call.
        for latency in (100.0, 200.0, 300.0):
            await pool.execute(
                "INSERT INTO messages (workflow_id, root_workflow_id, activity_id, agent,"
                " provider, model, system_prompt, user_prompt, completion, input_tokens,"
                " output_tokens, cost_usd, latency_ms, attempt)"
                " VALUES ($1, $1, $2, $3, 'toptest', $4, '', '', '', 1, 1, 0, $5, 1)",
                f"wf-{tag}",
                f"a-{latency}",
                name,
                f"m-{tag}",
                latency,
            )
        failed = await chorus.start_sequential("Fails", [bad])
        with pytest.raises(RunFailedError):
            await failed.result()
        gate = fake_llm.gate(name)
        held = await chorus.start_parallel("Held", [name], aggregator=None)
        await fake_llm.started[name].wait()
        code, out, err = await run(
            sys.executable, "-m", "starter.cli", "top", "--once", "--json", env=env
        )
        gate.set()
        await held.result()
        code_text, text, _ = await run(
            sys.executable, "-m", "starter.cli", "top", "--once", env=env
        )
    assert code == 0, err
    snap = json.loads(out)
    flight = {r["workflow_id"]: r for r in snap["in_flight"]}
    assert flight[held.workflow_id]["pattern"] == "parallel"
    assert flight[held.workflow_id]["agents"] == [name]
    failure = {f["workflow_id"]: f for f in snap["failures"]}[failed.workflow_id]
    assert "BadRequest" in failure["error"]
    assert "daily" in {b["scope"] for b in snap["budgets"]}
    health = {(p["provider"], p["model"]): p for p in snap["providers"]}[("toptest", f"m-{tag}")]
    assert (health["calls"], health["p50_ms"]) == (3, 200.0)
    assert code_text == 0
    assert "Runs in flight" in text and "successful calls only" in text


async def test_unregistered_attributes_fail_clearly(make_settings):
    """On a server without the Chorus search attributes, starting says how to register them."""
    from temporalio.testing import WorkflowEnvironment

    from chorus.runtime.converter import chorus_data_converter
    from starter.sdk import ChorusClient, SearchAttributesMissingError

    bare = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(), data_converter=chorus_data_converter
    )
    settings = make_settings(
        [agent("writer", LOCAL)], temporal_address=bare.client.service_client.config.target_host
    )
    chorus = ChorusClient(bare.client, settings)
    try:
        with pytest.raises(SearchAttributesMissingError, match="search-attribute create"):
            await chorus.start_draft("Nowhere", "alice", content="text")
        # `chorus dev up` repairs such a server (e.g. a dev database from an older Chorus)
        from starter.dev import ensure_search_attributes

        assert len(await ensure_search_attributes(settings)) == len(SEARCH_ATTRIBUTES)
        assert await ensure_search_attributes(settings) == []
        assert await chorus.start_draft("Somewhere", "alice", content="text")
    finally:
        await chorus.close()
        await bare.shutdown()


async def test_a_run_that_cannot_start_is_searchable_as_failed(client, make_settings, fake_llm):
    """Started past the SDK (as the plain ``temporal`` CLI does) with an unknown agent: the run
    fails at ``chorus.start_run`` as ``cannot start: ...`` and its ChorusStatus says ``failed``.

    Before ``START_FAILURE_PATCH`` it kept ``running``: the local activity's failure reached the
    workflow as a bare ``ApplicationError`` that its ``except ActivityError`` did not catch
    (``cannot_start_v8`` replays that way)."""
    settings = make_settings([agent("known", LOCAL)])
    workflow_id = f"ghost-{uuid.uuid4().hex[:8]}"
    async with running_worker(client, settings, lambda _pool: fake_llm.call_llm):
        handle = await client.start_workflow(
            SEQUENTIAL_WORKFLOW,
            SequentialInput(task="t", steps=[AgentStep(agent="ghost")]),
            id=workflow_id,
            task_queue=settings.task_queue,
        )
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
        desc = await handle.describe()
    await replay(client, workflow_id, record_as="cannot_start")
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "UnknownAgent"
    assert cause.message.startswith("cannot start: unknown agent(s): ghost")
    assert desc.typed_search_attributes.get(STATUS_ATTR) == "failed"
    address = client.service_client.config.target_host
    expected = {workflow_id}
    query = f'ChorusStatus="failed" AND WorkflowId="{workflow_id}"'
    assert await workflow_ids(address, query, expected) == expected
