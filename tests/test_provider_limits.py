"""Provider concurrency limits hold across workers (real dev server, PostgreSQL, loopback stub)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import pytest

from activities import LLMActivities, ProviderClients
from chorus.limits import ProviderLimit
from chorus.temporal import connect
from tests.conftest import agent, running_worker
from tests.stub_llm import StubLLM

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

            async def counted(req, prompt, attempt):
                served[n].append(req.agent)
                return await original(req, prompt, attempt)

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
