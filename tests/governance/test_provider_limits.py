"""Provider rate and concurrency limits hold across workers (real dev server, PostgreSQL,
loopback stub)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import LLMActivities, ProviderClients
from activities.llm_guard import ProviderCallGuard
from chorus.config.settings import Settings
from chorus.contracts import errors
from chorus.contracts.models import LLMRequest
from chorus.governance.provider_limits import FleetRateLimiter, ProviderLimit, RateBacklogError
from chorus.runtime.converter import connect
from chorus.storage import db
from tests.conftest import agent, running_worker
from tests.stub_llm import StubLLM
from worker import build_worker

LIMIT = 2


@pytest.fixture
def stub(monkeypatch) -> Iterator[StubLLM]:
    with StubLLM(default_delay_s=0.3) as server:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        yield server


@pytest.mark.parametrize("limit", [LIMIT, 0], ids=["limit-2", "unlimited-control"])
async def test_concurrency_limit_holds_with_three_workers(client, make_settings, stub, limit):
    settings = make_settings(
        [agent(n, ["openai:gpt-4o-mini"]) for n in ("analyst", "writer", "critic")],
        provider_limits={"openai": ProviderLimit(concurrency=limit)},
    )
    clients = [ProviderClients.from_settings(settings) for _ in range(3)]
    served: list[list[str]] = [[], [], []]

    def factory(n: int):
        def build(pool):
            activities = LLMActivities(clients[n], settings, pool)
            original = activities._complete

            async def counted(req, prompt, attempt, on_text=None):
                served[n].append(req.agent)
                return await original(req, prompt, attempt, on_text)

            activities._complete = counted  # type: ignore[method-assign]
            return activities.call_llm

        return build

    try:
        async with contextlib.AsyncExitStack() as stack:
            # one client per worker, as with three processes (a client runs one worker per queue)
            workers = [
                await stack.enter_async_context(
                    running_worker(await connect(settings), settings, factory(n))
                )
                for n in range(3)
            ]
            handles = [
                await workers[n % 3].start_parallel(
                    f"Review {n}", ["analyst", "writer", "critic"], aggregator=None
                )
                for n in range(6)
            ]
            results = await asyncio.gather(*(h.result() for h in handles))
    finally:
        for c in clients:
            await c.close()

    calls = len(stub.requests)
    print(
        f"{calls} calls, max in flight at the stub {stub.max_in_flight} (limit {limit or 'none'}); "
        f"calls per worker {[len(s) for s in served]}"
    )
    assert all(step.status == "succeeded" for r in results for step in r.steps)
    assert calls == 18
    assert sum(1 for s in served if s) >= 2  # the calls spread over the workers
    if limit:
        assert stub.max_in_flight == LIMIT  # reached, never exceeded
    else:
        assert stub.max_in_flight > LIMIT  # the control: without the limit they overlap


@pytest_asyncio.fixture
async def pool(database_url: str, tmp_path: Path) -> AsyncIterator[asyncpg.Pool]:
    """A migrated pool on a fresh database."""
    store = await db.create_pool(Settings(database_url=database_url, data_dir=tmp_path / "data"))
    try:
        yield store
    finally:
        await store.close()


async def test_rate_bursts_then_spaces_starts_across_workers(pool):
    # 600 requests/min = one start per 0.1 s, the first 3 at once; 3 "workers" (limiters
    # sharing nothing but PostgreSQL) start 2 calls each, all at the same moment.
    limits = {"openai": ProviderLimit(rpm=600, burst=3)}
    limiters = [FleetRateLimiter(pool, limits) for _ in range(3)]
    before = time.monotonic()

    async def call(limiter: FleetRateLimiter) -> tuple[float, float]:
        waited = await limiter.acquire("openai")
        return waited, time.monotonic() - before

    outcomes = await asyncio.gather(*(call(lim) for lim in limiters for _ in range(2)))
    waits = sorted(w for w, _ in outcomes)
    starts = sorted(s for _, s in outcomes)
    print(f"waits {[round(w, 3) for w in waits]}, starts {[round(s, 3) for s in starts]}")
    assert waits[:3] == [0.0, 0.0, 0.0]  # the burst starts at once
    # The 4th to 6th starts are reserved 0.1, 0.2 and 0.3 s after the first call reached
    # PostgreSQL (which is after `before`): load can delay them, never advance them.
    assert starts[5] >= 0.27
    assert starts[4] >= 0.17
    assert starts[5] < 5  # and they do start


async def test_rate_refuses_a_wait_longer_than_max_wait(pool):
    limiter = FleetRateLimiter(pool, {"openai": ProviderLimit(rpm=120, burst=1)})  # 0.5 s apart
    assert await limiter.acquire("openai") == 0.0
    tat = await pool.fetchval("SELECT tat FROM llm_rate_limits WHERE provider = 'openai'")
    with pytest.raises(RateBacklogError) as refused:
        await limiter.acquire("openai", max_wait_s=0.2)
    assert 0.2 < refused.value.retry_after_s <= 0.5
    # The refused call reserved nothing: the next one waits for the first call's slot only.
    assert await pool.fetchval("SELECT tat FROM llm_rate_limits") == tat
    waited = await limiter.acquire("openai", max_wait_s=1.0)
    assert 0.0 < waited <= 0.5


async def test_rate_zero_or_unknown_provider_queries_nothing(pool):
    limiter = FleetRateLimiter(pool, {"local": ProviderLimit(concurrency=1, rpm=0)})
    assert await limiter.acquire("local") == 0.0
    assert await limiter.acquire("openai") == 0.0  # no limits configured for it here
    assert await pool.fetchval("SELECT count(*) FROM llm_rate_limits") == 0
    await pool.close()
    assert await limiter.acquire("local") == 0.0  # no query at all: a closed pool is fine


async def test_rate_activity_errors_are_typed(pool, tmp_path):
    settings = Settings(
        database_url="postgresql://unused",
        data_dir=tmp_path / "data",
        provider_limits={"openai": ProviderLimit(rpm=0.5, burst=1)},  # one start per 2 min
        max_retry_after_s=45,
    )
    guard = ProviderCallGuard(pool, settings)
    req = LLMRequest(
        agent="writer", provider="openai", model="gpt-4o-mini", instructions="i", task="t"
    )
    env = ActivityEnvironment()
    assert await env.run(guard.acquire_rate, req) == 0.0
    with pytest.raises(ApplicationError) as refused:
        await env.run(guard.acquire_rate, req)  # the next start is 120 s away
    assert refused.value.type == errors.RATE_LIMITED
    assert not refused.value.non_retryable
    assert refused.value.next_retry_delay is not None
    assert refused.value.next_retry_delay.total_seconds() == 45  # capped
    await pool.close()
    with pytest.raises(ApplicationError) as storage:
        await env.run(guard.acquire_rate, req)
    assert storage.value.type == errors.STORAGE_UNAVAILABLE


async def test_begin_takes_the_rate_and_the_budget_in_one_statement(pool, tmp_path):
    """Issue 19: chorus_call_begin (migration 0015). A start that is now reserves the budget in
    the same statement; a start in the future reserves nothing until the wait is over; a start
    beyond the longest wait changes nothing; a budget refusal is typed as before."""
    from activities.prompts import Prompt

    def settings(rpm: float, **extra: object) -> Settings:
        return Settings(
            database_url="postgresql://unused",
            data_dir=tmp_path / "data",
            provider_limits={"openai": ProviderLimit(rpm=rpm, burst=1)},
            **extra,  # type: ignore[arg-type]
        )

    def request(agent_name: str) -> LLMRequest:
        return LLMRequest(
            agent=agent_name, provider="openai", model="gpt-4o-mini", instructions="i", task="t"
        )

    prompt = Prompt(system="i", user="t", truncated_chars=0)
    env = ActivityEnvironment()
    reservations = "SELECT count(*) FROM budget_reservations WHERE state = 'reserved'"
    guard = ProviderCallGuard(pool, settings(rpm=60, daily_budget_usd=5.0))  # 1 s apart
    assert await env.run(guard.begin, request("a"), prompt, "wf-1", "1") == (0.0, True, False)
    assert await pool.fetchval(reservations) == 1
    started = time.monotonic()
    waited, held, _ = await env.run(guard.begin, request("a"), prompt, "wf-1", "2")
    assert held is None and 0.5 < waited <= 1.0  # waited, nothing reserved yet
    assert time.monotonic() - started >= waited - 0.05
    assert await pool.fetchval(reservations) == 1

    slow = ProviderCallGuard(pool, settings(rpm=0.5, daily_budget_usd=5.0))  # 2 min apart
    await pool.execute("DELETE FROM llm_rate_limits")
    assert (await env.run(slow.begin, request("a"), prompt, "wf-2", "1"))[1] is True
    tat = await pool.fetchval("SELECT tat FROM llm_rate_limits")
    with pytest.raises(ApplicationError) as refused:
        await env.run(slow.begin, request("a"), prompt, "wf-2", "2")
    assert refused.value.type == errors.RATE_LIMITED
    assert await pool.fetchval("SELECT tat FROM llm_rate_limits") == tat  # nothing changed
    assert await pool.fetchval(reservations) == 2

    await pool.execute("DELETE FROM llm_rate_limits")
    broke = ProviderCallGuard(pool, settings(rpm=60, daily_budget_usd=0.000001))
    with pytest.raises(ApplicationError) as refused:
        await env.run(broke.begin, request("a"), prompt, "wf-3", "1")
    assert refused.value.type == errors.BUDGET_EXCEEDED
    assert refused.value.non_retryable
    assert await pool.fetchval(reservations) == 2

    await pool.execute("DELETE FROM llm_rate_limits")
    unlimited = ProviderCallGuard(pool, settings(rpm=60))  # no budget: nothing held
    assert await env.run(unlimited.begin, request("a"), prompt, "wf-4", "1") == (0.0, False, False)
    assert await pool.fetchval(reservations) == 2

    # The run's readers, from the same statement.
    await pool.execute("DELETE FROM llm_rate_limits")
    await pool.execute(
        "INSERT INTO stream_watchers (run_id, until) VALUES ('run-w', now() + interval '1 min')"
    )
    watched = await env.run(unlimited.begin, request("a"), prompt, "wf-5", "1", "run-w")
    assert watched == (0.0, False, True)
    await pool.execute("DELETE FROM llm_rate_limits")
    assert (await env.run(unlimited.begin, request("a"), prompt, "wf-6", "1", "run-x"))[2] is False


async def test_provider_workers_set_no_server_rate(client, make_settings):
    settings = make_settings(
        [agent("analyst", ["openai:gpt-4o-mini"])],
        provider_limits={"openai": ProviderLimit(concurrency=3, rpm=600)},
    )
    activities = LLMActivities(ProviderClients(None, None, None), settings, None)  # type: ignore[arg-type]
    chorus_worker = build_worker(client, settings, [activities.call_llm])
    by_queue = {w.task_queue: w.config() for w in chorus_worker.workers}
    openai = by_queue[f"{settings.task_queue}-llm-openai"]
    assert openai.get("max_concurrent_activities") == 3
    assert all(c.get("max_task_queue_activities_per_second") is None for c in by_queue.values())


@pytest.mark.parametrize("rpm", [120, 0], ids=["rpm-120", "unlimited-control"])
async def test_rate_spaces_provider_requests_through_the_activity(
    client, make_settings, monkeypatch, rpm
):
    with StubLLM(default_delay_s=0.3) as stub:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
        settings = make_settings(
            [agent(n, ["openai:gpt-4o-mini"]) for n in ("analyst", "writer", "critic")],
            provider_limits={"openai": ProviderLimit(rpm=rpm, burst=1)},  # 0.5 s apart
        )
        clients = ProviderClients.from_settings(settings)
        try:
            async with running_worker(
                client, settings, lambda pool: LLMActivities(clients, settings, pool).call_llm
            ) as chorus:
                handle = await chorus.start_parallel(
                    "Review", ["analyst", "writer", "critic"], aggregator=None
                )
                result = await handle.result()
        finally:
            await clients.close()
    arrivals = sorted(r.at for r in stub.requests)
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(arrivals)]
    print(f"rpm {rpm or 'unlimited'}: gaps between requests at the stub {gaps} s")
    assert all(step.status == "succeeded" for step in result.steps)
    assert len(arrivals) == 3
    if rpm:
        assert min(gaps) >= 0.4  # 0.5 s apart, less the jitter of one call's start
        assert stub.max_in_flight == 1
    else:
        assert stub.max_in_flight >= 2  # the control: without the rate they overlap
