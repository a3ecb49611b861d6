"""The fleet-wide circuit breaker's state machine on a real PostgreSQL (migration 0012)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from chorus.config.settings import Settings
from chorus.contracts import errors
from chorus.governance import circuit_breaker
from chorus.governance.circuit_breaker import Admission, CircuitBreaker, CircuitOpenError
from chorus.observability import metrics
from chorus.storage import circuit_rows, db

UNAVAILABLE = errors.PROVIDER_UNAVAILABLE


@pytest_asyncio.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    store = await db.create_pool(Settings(database_url=database_url))
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def breaker_for(database_url: str) -> Callable[..., CircuitBreaker]:
    def make(pool: asyncpg.Pool, **overrides: Any) -> CircuitBreaker:
        values: dict[str, Any] = {
            "database_url": database_url,
            "circuit_failures": 3,
            "circuit_window_s": 60.0,
            "circuit_cooldown_s": 0.5,
            "circuit_cache_s": 0.0,
        }
        values.update(overrides)
        return CircuitBreaker(
            pool, Settings(**values), on_transition=metrics.observe_circuit_transition
        )

    return make


async def fail(breaker: CircuitBreaker, n: int, error_type: str | None = UNAVAILABLE) -> None:
    for _ in range(n):
        admission = await breaker.admit("openai", "m")
        await breaker.record(admission, error_type, "openai:m: HTTP 503 upstream overloaded")


async def state(pool: asyncpg.Pool, model: str = "") -> str | None:
    row = await circuit_rows.read(pool, "openai", model)
    return None if row is None else str(row["state"])


def transitions(to: str) -> float:
    value = metrics.CIRCUIT_TRANSITIONS.labels(provider="openai", to=to)._value.get()
    return float(value)


async def test_opens_on_the_nth_outage_and_refuses_with_the_next_probe(
    pool, breaker_for, database_url
):
    breaker = breaker_for(pool, circuit_cooldown_s=30.0)
    opened_before = transitions("open")
    await fail(breaker, 2)
    assert await state(pool) == "closed"
    await breaker.admit("openai", "m")  # still let through
    await fail(breaker, 1)
    assert await state(pool) == "open"
    assert transitions("open") == opened_before + 1
    assert metrics.CIRCUIT_STATE.labels(provider="openai")._value.get() == 2
    with pytest.raises(CircuitOpenError) as refused:
        await breaker.admit("openai", "other-model")  # provider-wide by default
    message = str(refused.value)
    assert "circuit breaker of openai is open" in message
    assert "3 outage(s)" in message and "HTTP 503 upstream overloaded" in message
    assert "next probe call in 30 s" in message or "next probe call in 29 s" in message
    assert "chorus providers reset openai" in message
    assert refused.value.error_type == errors.CIRCUIT_OPEN
    # a second worker (its own pool and process state) refuses too
    other = await db.create_pool(Settings(database_url=database_url))
    try:
        with pytest.raises(CircuitOpenError):
            await breaker_for(other).admit("openai", "m")
    finally:
        await other.close()


async def test_rate_limits_count_only_when_configured_and_apart_from_outages(pool, breaker_for):
    ignoring = breaker_for(pool)
    await fail(ignoring, 5, errors.RATE_LIMITED)
    assert await state(pool) is None  # not even a row: nothing counted

    counting = breaker_for(pool, circuit_count_429=True)
    await fail(counting, 2, errors.RATE_LIMITED)
    await fail(counting, 2, UNAVAILABLE)
    row = await circuit_rows.read(pool, "openai", "")
    assert row is not None
    assert (row["state"], row["failures"], row["rate_limits"]) == ("closed", 2, 2)
    await fail(counting, 1, errors.RATE_LIMITED)
    assert await state(pool) == "open"


@pytest.mark.parametrize(
    "error_type",
    [
        errors.INVALID_REQUEST,
        errors.INVALID_OUTPUT,
        errors.BUDGET_EXCEEDED,
        errors.PROVIDER_AUTH,
        errors.MODEL_NOT_FOUND,
        None,
    ],
)
async def test_other_outcomes_never_count(pool, breaker_for, error_type):
    breaker = breaker_for(pool, circuit_failures=1)
    await fail(breaker, 4, error_type)
    assert await state(pool) is None
    await breaker.admit("openai", "m")


async def test_failures_outside_the_window_do_not_add_up(pool, breaker_for):
    breaker = breaker_for(pool, circuit_window_s=0.3)
    await fail(breaker, 2)
    await asyncio.sleep(0.4)
    await fail(breaker, 2)  # a new window: 2, not 4
    row = await circuit_rows.read(pool, "openai", "")
    assert row is not None and (row["state"], row["failures"]) == ("closed", 2)
    await fail(breaker, 1)
    assert await state(pool) == "open"


async def test_half_open_probe_success_closes_and_failure_reopens(pool, breaker_for):
    breaker = breaker_for(pool, circuit_cooldown_s=0.3)
    await fail(breaker, 3)
    await asyncio.sleep(0.35)
    probe = await breaker.admit("openai", "m")
    assert probe.probe and await state(pool) == "half_open"
    with pytest.raises(CircuitOpenError, match=r"half-open .* a probe call is in flight"):
        await breaker.admit("openai", "m")
    await breaker.record(probe, UNAVAILABLE, "still down")
    assert await state(pool) == "open"  # a new cool-down
    with pytest.raises(CircuitOpenError, match="still down"):
        await breaker.admit("openai", "m")
    await asyncio.sleep(0.35)
    probe = await breaker.admit("openai", "m")
    assert probe.probe
    closed_before = transitions("closed")
    # the provider answered (here with a bad answer): it is up
    await breaker.record(probe, errors.INVALID_OUTPUT, "not JSON")
    row = await circuit_rows.read(pool, "openai", "")
    assert row is not None and (row["state"], row["failures"], row["probes"]) == ("closed", 0, 0)
    assert transitions("closed") == closed_before + 1
    assert not (await breaker.admit("openai", "m")).probe


async def test_concurrent_workers_race_for_the_probe_and_exactly_one_wins(
    pool, breaker_for, database_url
):
    await fail(breaker_for(pool, circuit_cooldown_s=0.2), 3)
    await asyncio.sleep(0.25)
    pools = [await db.create_pool(Settings(database_url=database_url)) for _ in range(2)]
    try:
        breakers = [breaker_for(p, circuit_cooldown_s=0.2) for p in pools for _ in range(5)]

        async def attempt(b: CircuitBreaker) -> Admission | CircuitOpenError:
            try:
                return await b.admit("openai", "m")
            except CircuitOpenError as exc:
                return exc

        outcomes = await asyncio.gather(*(attempt(b) for b in breakers))
    finally:
        for p in pools:
            await p.close()
    probes = [o for o in outcomes if isinstance(o, Admission)]
    assert len(probes) == 1 and probes[0].probe
    assert sum(isinstance(o, CircuitOpenError) for o in outcomes) == len(breakers) - 1
    row = await circuit_rows.read(pool, "openai", "")
    assert row is not None and (row["state"], row["probes"]) == ("half_open", 1)


async def test_a_probe_that_never_reports_lets_another_go_after_a_cool_down(pool, breaker_for):
    breaker = breaker_for(pool, circuit_cooldown_s=0.2)
    await fail(breaker, 3)
    await asyncio.sleep(0.25)
    assert (await breaker.admit("openai", "m")).probe  # its worker dies: nothing recorded
    with pytest.raises(CircuitOpenError):
        await breaker.admit("openai", "m")
    await asyncio.sleep(0.25)
    assert (await breaker.admit("openai", "m")).probe


async def test_per_model_breakers_leave_the_other_models_alone(pool, breaker_for):
    breaker = breaker_for(pool, circuit_per_model=True)
    await fail(breaker, 3)
    assert await state(pool, "m") == "open"
    with pytest.raises(CircuitOpenError, match="circuit breaker of openai:m is open"):
        await breaker.admit("openai", "m")
    admitted = await breaker.admit("openai", "other")
    assert admitted == Admission("openai", "other")


async def test_reset_by_hand_and_statuses(pool, breaker_for):
    breaker = breaker_for(pool, circuit_cooldown_s=30.0)
    await fail(breaker, 3)
    listed = await circuit_breaker.statuses(pool)
    assert [(s.provider, s.model, s.state, s.failures) for s in listed] == [
        ("openai", "", "open", 3)
    ]
    assert listed[0].opened_at is not None and 29 < (listed[0].probe_in_s or 0) <= 30
    assert await circuit_breaker.reset(pool, "openai") == {"": "open"}
    assert await state(pool) == "closed"
    await breaker.admit("openai", "m")  # the cache is 0 s here: noticed at once
    assert await circuit_breaker.reset(pool, "anthropic") == {}


async def test_closed_clean_breakers_are_cached_and_failing_ones_read_every_call(
    pool, breaker_for, monkeypatch
):
    reads = 0
    original = circuit_rows.read

    async def counted(*args: Any) -> Any:
        nonlocal reads
        reads += 1
        return await original(*args)

    monkeypatch.setattr(circuit_rows, "read", counted)
    breaker = breaker_for(pool, circuit_cache_s=60.0)
    for _ in range(5):
        await breaker.admit("openai", "m")
    assert reads == 1  # healthy calls: one read, then the cache
    admission = await breaker.admit("openai", "m")
    await breaker.record(admission, UNAVAILABLE, "503")
    for _ in range(3):
        await breaker.admit("openai", "m")
    assert reads == 4  # with a failure in the window, every call reads PostgreSQL


async def test_postgres_down_lets_calls_through(pool, breaker_for, database_url):
    dead = await db.create_pool(Settings(database_url=database_url))
    await dead.close()
    breaker = breaker_for(dead)
    admission = await breaker.admit("openai", "m")
    await breaker.record(admission, UNAVAILABLE, "503")  # logged, not raised


async def test_zero_failures_turns_the_breaker_off(pool, breaker_for):
    breaker = breaker_for(pool, circuit_failures=0)
    await fail(breaker, 10)
    assert await state(pool) is None


async def test_the_state_gauge_is_refreshed_from_postgres_on_scrape(
    pool, breaker_for, database_url
):
    """Every worker reports the fleet's state, whichever worker opened the breaker."""
    settings = Settings(database_url=database_url)
    gauge = metrics.CIRCUIT_STATE.labels(provider="openai")
    gauge.set(0)
    await fail(breaker_for(pool, circuit_per_model=True), 3)  # opens openai:m only
    gauge.set(0)  # as in a worker that did not open it
    assert await metrics.refresh_gauges(pool, settings)
    assert gauge._value.get() == 2  # the worst of openai's breakers
    await circuit_breaker.reset(pool, "openai")
    assert await metrics.refresh_gauges(pool, settings)
    assert gauge._value.get() == 0
