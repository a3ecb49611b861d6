"""Tokens per minute, fleet-wide: a token GCRA in PostgreSQL that reserves a call's worst case
and settles to its actual usage (real PostgreSQL)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.llm_guard import ProviderCallGuard
from activities.prompts import Prompt
from chorus.config.settings import Settings
from chorus.contracts import errors
from chorus.contracts.models import LLMRequest
from chorus.governance.budget import WORST_CASE_OVERHEAD_TOKENS
from chorus.governance.provider_limits import (
    FleetRateLimiter,
    ProviderLimit,
    RateBacklogError,
    tokens_key,
)
from chorus.storage import db


@pytest_asyncio.fixture
async def pool(database_url: str, tmp_path: Path) -> AsyncIterator[asyncpg.Pool]:
    """A migrated pool on a fresh database."""
    store = await db.create_pool(Settings(database_url=database_url, data_dir=tmp_path / "data"))
    try:
        yield store
    finally:
        await store.close()


async def _tat_ahead_s(pool: asyncpg.Pool, provider: str) -> float:
    value = await pool.fetchval(
        "SELECT extract(epoch FROM tat - clock_timestamp())::float8 FROM llm_rate_limits "
        "WHERE provider = $1",
        tokens_key(provider),
    )
    return float(value)


async def test_tokens_wait_for_the_bucket_across_limiters(pool: asyncpg.Pool) -> None:
    # 6,000 tokens/min = 100 tokens/s, a bucket of 6,000; two "workers" share PostgreSQL only.
    limits = {"vllm": ProviderLimit(tpm=6000)}
    first, second = FleetRateLimiter(pool, limits), FleetRateLimiter(pool, limits)
    assert await first.acquire_tokens("vllm", 5_900) == (5_900, 0.0)
    assert await second.acquire_tokens("vllm", 100) == (100, 0.0)  # the bucket's last 100
    started = time.monotonic()
    reserved, waited = await second.acquire_tokens("vllm", 30)  # 0.3 s of refill
    print(f"30 tokens after a full bucket waited {waited:.3f} s")
    assert reserved == 30 and 0.2 <= waited <= 0.31
    assert time.monotonic() - started >= 0.2
    with pytest.raises(RateBacklogError) as refused:
        await first.acquire_tokens("vllm", 500, max_wait_s=1.0)  # 5 s away
    assert 4.5 <= refused.value.retry_after_s <= 5.4


async def test_settling_gives_back_the_unused_tokens(pool: asyncpg.Pool) -> None:
    limiter = FleetRateLimiter(pool, {"vllm": ProviderLimit(tpm=6000)})
    reserved, _ = await limiter.acquire_tokens("vllm", 6_000)
    ahead = await _tat_ahead_s(pool, "vllm")
    assert 59 <= ahead <= 60  # a minute of tokens reserved
    await limiter.settle_tokens("vllm", reserved, used=120)  # the call used 120 of them
    assert 0.9 <= await _tat_ahead_s(pool, "vllm") <= 1.2
    # Without the settlement this would wait ~50 s (and be refused); now it starts at once.
    assert (await limiter.acquire_tokens("vllm", 4_000, max_wait_s=1.0))[1] == 0.0


async def test_oversized_request_reserves_the_whole_bucket_and_unlimited_runs_no_query(
    pool: asyncpg.Pool,
) -> None:
    limiter = FleetRateLimiter(pool, {"vllm": ProviderLimit(tpm=600), "free": ProviderLimit()})
    assert await limiter.acquire_tokens("vllm", 10_000) == (600, 0.0)
    assert await limiter.acquire_tokens("free", 10_000) == (0, 0.0)
    assert await limiter.acquire_tokens("unknown", 10_000) == (0, 0.0)
    rows = await pool.fetch("SELECT provider FROM llm_rate_limits")
    assert [r["provider"] for r in rows] == ["tpm:vllm"]


async def test_the_guard_reserves_the_worst_case_and_settles_to_usage(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    settings = Settings(
        database_url="postgresql://unused",
        data_dir=tmp_path / "data",
        provider_limits={"local": ProviderLimit(concurrency=1, tpm=60_000)},  # 1,000/s
        max_retry_after_s=30,
    )
    guard = ProviderCallGuard(pool, settings)
    req = LLMRequest(
        agent="writer", provider="local", model="m", instructions="i", task="t", max_tokens=500
    )
    prompt = Prompt(system="s" * 1_000, user="u" * 3_000, truncated_chars=0)
    worst = 4_000 + WORST_CASE_OVERHEAD_TOKENS + 500

    async def call(used: int | None) -> float:
        async with guard.hold(req, prompt, "wf-tpm", "1") as ticket:
            ahead = await _tat_ahead_s(pool, "local")
            if used is not None:
                ticket.used_tokens = used
        return ahead

    env = ActivityEnvironment()
    ahead = await env.run(call, 900)
    assert worst / 1000 - 0.2 <= ahead <= worst / 1000  # the worst case was reserved
    assert 0.7 <= await _tat_ahead_s(pool, "local") <= 0.9  # settled to 900 tokens
    # A failed call keeps its prompt's share and gives back max_tokens.
    await pool.execute("DELETE FROM llm_rate_limits")

    async def failing() -> None:
        async with guard.hold(req, prompt, "wf-tpm", "2"):
            raise RuntimeError("provider failed")

    with pytest.raises(RuntimeError):
        await env.run(failing)
    kept = await _tat_ahead_s(pool, "local")
    assert 3.8 <= kept <= (4_000 + WORST_CASE_OVERHEAD_TOKENS) / 1000
    # A backlog longer than SLOT_WAIT_S is RateLimited with the wait as the retry delay.
    await pool.execute("UPDATE llm_rate_limits SET tat = clock_timestamp() + interval '10 minutes'")
    with pytest.raises(ApplicationError) as refused:
        await env.run(guard.acquire_tokens, req, worst)
    assert refused.value.type == errors.RATE_LIMITED and not refused.value.non_retryable
    assert refused.value.next_retry_delay is not None
    assert refused.value.next_retry_delay.total_seconds() == 30  # capped


async def test_concurrent_reservations_never_exceed_the_rate(pool: asyncpg.Pool) -> None:
    # 12,000 tokens/min = 200 tokens/s, a bucket of 12,000: 40 calls of 330 tokens from 4
    # limiters at once need 13,200, so the last 1,200 tokens wait for 6 s of refill.
    limits = {"vllm": ProviderLimit(tpm=12_000)}
    limiters = [FleetRateLimiter(pool, limits) for _ in range(4)]
    started = time.monotonic()
    waits = await asyncio.gather(*(limiters[i % 4].acquire_tokens("vllm", 330) for i in range(40)))
    elapsed = time.monotonic() - started
    waited = sorted(w for _, w in waits)
    print(f"40 x 330 tokens at 12,000/min: longest wait {waited[-1]:.2f} s, total {elapsed:.2f}")
    assert waited[:36] == [0.0] * 36  # 36 x 330 = 11,880 fit in the bucket
    assert 5.0 <= waited[-1] <= 6.1  # (13,200 - 12,000) / 200 per s
