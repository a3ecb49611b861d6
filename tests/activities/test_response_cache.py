"""The response cache (issue 17): hits, misses and TTL through real runs against the stub LLM.

Real Temporal dev server, real PostgreSQL, the real ``chorus.call_llm`` activity; the stub
speaks OpenAI's wire format, so a miss is priced (gpt-4o-mini) and a hit is visibly free.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from rich.console import Console
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment

from activities import LLMActivities, ProviderClients
from activities.prompts import Prompt
from activities.response_cache import ResponseCache, cache_refusal, request_key
from chorus.config.catalog import CatalogError, parse_catalog
from chorus.config.settings import Settings
from chorus.contracts.models import CachePolicy, LLMRequest, LLMResponse, RunResult, StepResult
from chorus.contracts.tools import ToolCall, ToolSpec
from chorus.observability import metrics
from chorus.storage import db
from starter.cli.support import steps_table
from tests.conftest import agent, running_worker
from tests.stub_llm import Reply, StubLLM

MODEL = "gpt-4o-mini"


def _count(result: str) -> float:
    return float(metrics.LLM_CACHE.labels(result=result)._value.get())


class _Runs:
    """Runs one-agent pipelines on one worker; the stub counts what reached the provider."""

    def __init__(self, chorus: Any) -> None:
        self.chorus = chorus

    async def run(self, name: str, document: str) -> tuple[str, StepResult]:
        handle = await self.chorus.start_sequential("Summarize", [name], document=document)
        result: RunResult = await handle.result()
        return handle.workflow_id, result.steps[0]


async def _with_worker(client: Client, settings: Settings, body: Callable[[_Runs], Any]) -> None:
    clients = ProviderClients.from_settings(settings)
    try:
        async with running_worker(
            client, settings, lambda pool: LLMActivities(clients, settings, pool).call_llm
        ) as chorus:
            await body(_Runs(chorus))
    finally:
        await clients.close()


async def test_miss_then_hit_is_free_recorded_and_marked(
    client: Client, make_settings: Callable[..., Settings], stub: StubLLM
) -> None:
    cached = agent("cached", [f"openai:{MODEL}"], temperature=0, cache={"ttl_s": 600})
    settings = make_settings([cached], local_base_url=stub.base_url)
    hits, misses = _count("hit"), _count("miss")

    async def body(runs: _Runs) -> None:
        _, first = await runs.run("cached", "Doc A")
        assert not first.cached and first.cost_usd > 0 and first.input_tokens == 13
        assert len(stub.for_model(MODEL)) == 1

        wf, second = await runs.run("cached", "Doc A")
        assert len(stub.for_model(MODEL)) == 1  # the provider was not called again
        assert second.output == first.output
        assert (second.cached, second.cost_usd, second.input_tokens, second.output_tokens) == (
            True,
            0.0,
            0,
            0,
        )
        assert [(t.provider, t.status) for t in second.providers_tried] == [("openai", "succeeded")]
        # Still recorded: the transcript and the ledger show the call, free and marked.
        [entry] = await runs.chorus.transcript(wf)
        assert (entry["cached"], entry["cost_usd"], entry["completion"]) == (
            True,
            0.0,
            first.output,
        )
        ledger = await (await runs.chorus.pool()).fetchval(
            "SELECT cost_usd FROM cost_ledger WHERE root_workflow_id = $1", wf
        )
        assert float(ledger) == 0.0

        console = Console(width=200, record=True)
        console.print(steps_table([first, second]))
        first_row, second_row = [ln for ln in console.export_text().splitlines() if MODEL in ln]
        assert "(response cache)" in second_row and "(response cache)" not in first_row

        _, other = await runs.run("cached", "Doc B")  # other messages: a miss
        assert not other.cached and len(stub.for_model(MODEL)) == 2

    await _with_worker(client, settings, body)
    assert (_count("hit") - hits, _count("miss") - misses) == (1, 2)


async def test_ttl_expiry_and_temperature_rules(
    client: Client, make_settings: Callable[..., Settings], stub: StubLLM
) -> None:
    agents = [
        agent("short", [f"openai:{MODEL}-a"], temperature=0, cache={"ttl_s": 1}),
        agent("warm", [f"openai:{MODEL}-b"], temperature=0.7, cache={"ttl_s": 600}),
        agent(
            "warm-ok",
            [f"openai:{MODEL}-c"],
            temperature=0.7,
            cache={"ttl_s": 600, "allow_nonzero_temperature": True},
        ),
    ]
    settings = make_settings(agents, local_base_url=stub.base_url)

    async def body(runs: _Runs) -> None:
        assert not (await runs.run("short", "D"))[1].cached
        assert (await runs.run("short", "D"))[1].cached
        await asyncio.sleep(1.2)  # past the 1 s TTL
        _, expired = await runs.run("short", "D")
        assert not expired.cached and len(stub.for_model(f"{MODEL}-a")) == 2
        assert (await runs.run("short", "D"))[1].cached  # stored again by the miss

        # temperature > 0 without permission: never cached, nothing stored
        for _ in range(2):
            assert not (await runs.run("warm", "D"))[1].cached
        assert len(stub.for_model(f"{MODEL}-b")) == 2
        stored = await (await runs.chorus.pool()).fetchval(
            "SELECT count(*) FROM llm_response_cache WHERE model LIKE $1", f"%{MODEL}-b%"
        )
        assert stored == 0

        assert not (await runs.run("warm-ok", "D"))[1].cached
        assert (await runs.run("warm-ok", "D"))[1].cached
        assert len(stub.for_model(f"{MODEL}-c")) == 1

    await _with_worker(client, settings, body)


async def test_placeholder_answers_are_restored_with_each_calls_own_values(
    client: Client, make_settings: Callable[..., Settings], stub: StubLLM
) -> None:
    """Two documents differing only in an e-mail address send the provider the same prompt
    (``<<EMAIL_1>>``): the second is a hit, and its answer names its own address."""
    stub.script(f"{MODEL}-p", Reply(text="Reply to <<EMAIL_1>> today."))
    private = agent(
        "private", [f"openai:{MODEL}-p"], temperature=0, pii="placeholder", cache={"ttl_s": 600}
    )
    settings = make_settings([private], local_base_url=stub.base_url)

    async def body(runs: _Runs) -> None:
        _, first = await runs.run("private", "Write to ann@example.com")
        _, second = await runs.run("private", "Write to bob@example.org")
        assert (first.cached, first.output) == (False, "Reply to ann@example.com today.")
        assert (second.cached, second.output) == (True, "Reply to bob@example.org today.")
        [sent] = stub.for_model(f"{MODEL}-p")
        assert "example" not in str(sent.body["messages"])
        pool = await runs.chorus.pool()
        stored = await pool.fetchval("SELECT completion::text FROM llm_response_cache")
        assert "<<EMAIL_1>>" in stored and "@example" not in stored

    await _with_worker(client, settings, body)


@pytest_asyncio.fixture
async def pool(database_url: str, tmp_path: Path) -> AsyncIterator[asyncpg.Pool]:
    """A migrated pool on a fresh database."""
    store = await db.create_pool(Settings(database_url=database_url, data_dir=tmp_path / "data"))
    try:
        yield store
    finally:
        await store.close()


async def test_tool_calls_round_trip_and_expired_rows_are_swept(pool: asyncpg.Pool) -> None:
    cache = ResponseCache(pool, {})
    req, prompt = _request(), Prompt(system="s", user="u", truncated_chars=3)
    call = ToolCall(id="call_1", name="calc.add", arguments={"a": 1, "b": 2})
    paid = LLMResponse(
        provider="openai",
        model="gpt-4o-mini-2024-07-18",
        output="",
        input_tokens=40,
        output_tokens=9,
        cost_usd=0.00002,
        finish_reason="tool_calls",
        tool_calls=[call],
    )
    env = ActivityEnvironment()
    assert await env.run(cache.lookup, req, prompt, 1) is None
    await env.run(cache.store, req, prompt, paid)
    hit = await env.run(cache.lookup, req, prompt, 2)
    assert hit is not None
    assert (hit.tool_calls, hit.model, hit.finish_reason, hit.attempt) == (
        [call],
        "gpt-4o-mini-2024-07-18",
        "tool_calls",
        2,
    )
    assert (hit.cached, hit.cost_usd, hit.input_tokens, hit.truncated_chars) == (True, 0.0, 0, 3)
    assert await pool.fetchval("SELECT hits FROM llm_response_cache") == 1
    # 150 expired entries: each store deletes at most 100 of them, never a live one.
    await pool.execute(
        "INSERT INTO llm_response_cache (key, provider, model, completion, expires_at)"
        " SELECT sha256(i::text::bytea), 'openai', 'm', '{}'::jsonb, now() - interval '1 s'"
        " FROM generate_series(1, 150) AS i"
    )
    await env.run(cache.store, _request(max_tokens=7), prompt, paid)
    assert await pool.fetchval("SELECT count(*) FROM llm_response_cache") == 2 + 50
    await env.run(cache.store, _request(max_tokens=8), prompt, paid)
    assert await pool.fetchval("SELECT count(*) FROM llm_response_cache") == 3


def _request(**changes: Any) -> LLMRequest:
    values: dict[str, Any] = {
        "agent": "a",
        "provider": "openai",
        "model": MODEL,
        "instructions": "i",
        "task": "t",
        "temperature": 0.0,
        "cache": CachePolicy(ttl_s=60),
    }
    return LLMRequest.model_validate({**values, **changes})


def test_key_covers_what_the_provider_sees() -> None:
    prompt = Prompt(system="s", user="u", truncated_chars=0)
    base = request_key(_request(), prompt, MODEL)
    assert len(base) == 32 and base == request_key(_request(), prompt, MODEL)
    # What is not sent (the agent's name, its TTL, PII policy) does not change the key ...
    same = _request(agent="b", cache=CachePolicy(ttl_s=5), output_retries=0)
    assert request_key(same, prompt, MODEL) == base
    # ... everything sent does.
    tool = ToolSpec(name="calc.add", description="Add")
    different = [
        request_key(_request(temperature=0.1), prompt, MODEL),
        request_key(_request(max_tokens=100), prompt, MODEL),
        request_key(_request(tools=[tool]), prompt, MODEL),
        request_key(_request(tool_choice="required"), prompt, MODEL),
        request_key(_request(output_schema={"type": "object"}), prompt, MODEL),
        request_key(_request(provider="anthropic"), prompt, MODEL),
        request_key(_request(), prompt, "gpt-4o"),  # an alias re-pointed
        request_key(_request(), Prompt(system="s", user="u2", truncated_chars=0), MODEL),
        request_key(_request(), Prompt(system="s2", user="u", truncated_chars=0), MODEL),
    ]
    assert len({base, *different}) == len(different) + 1


def test_when_the_cache_applies() -> None:
    assert cache_refusal(_request()) is None
    assert cache_refusal(_request(cache=None)) == "the agent has no cache"
    assert "allow_nonzero_temperature" in (cache_refusal(_request(temperature=0.2)) or "")
    allowed = CachePolicy(ttl_s=60, allow_nonzero_temperature=True)
    assert cache_refusal(_request(temperature=0.2, cache=allowed)) is None
    assert "record_pii" in (cache_refusal(_request(record_pii="redact")) or "")


_CATALOG = """
agents:
  - name: summarizer
    instructions: x
    providers: [local:m]
    temperature: {temperature}
    cache: {cache}
"""


@pytest.mark.parametrize(
    ("cache", "message"),
    [
        ("{ttl_s: 0}", "cache.ttl_s: Value error, ttl_s must be 1 to 2,592,000 seconds"),
        ("{ttl_s: 2592001}", "cache.ttl_s: Value error, ttl_s must be 1 to 2,592,000"),
        ("{}", "cache.ttl_s: Field required"),
        ("{ttl_s: 60, ttl: 5}", "cache.ttl: Extra inputs are not permitted"),
        ("60", "cache: Input should be a valid dictionary"),
    ],
)
def test_agent_field_validation_names_agent_and_field(cache: str, message: str) -> None:
    with pytest.raises(CatalogError) as refused:
        parse_catalog(_CATALOG.format(temperature=0, cache=cache))
    assert "agent 'summarizer'" in str(refused.value) and message in str(refused.value)


def test_catalog_warns_when_the_cache_can_never_be_used(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="chorus.config.catalog"):
        spec = parse_catalog(_CATALOG.format(temperature=0.4, cache="{ttl_s: 60}"))["summarizer"]
    assert spec.cache == CachePolicy(ttl_s=60)
    assert "agent 'summarizer': cache is never used: temperature is 0.4" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="chorus.config.catalog"):
        parse_catalog(_CATALOG.format(temperature=0, cache="{ttl_s: 60}"))
        parse_catalog(_CATALOG.format(temperature=0, cache="null"))
    assert caplog.text == ""
