"""The circuit breaker across a fleet: 3 worker processes, a provider that fails every call.

Everything is real and on loopback: the Temporal dev server, PostgreSQL, three ``python -m
worker`` processes and a scripted OpenAI-compatible stub that answers ``503`` for the primary
model (``openai:m-down``) until the test lets it recover, and serves the fallback
(``local:backup``) at once.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

from temporalio.client import Client

from chorus.contracts import errors
from chorus.contracts.models import RunResult
from starter.sdk import ChorusClient
from tests.conftest import agent, sdk
from tests.stub_llm import Reply, StubLLM
from tests.worker_procs import WorkerProcess

FAILURES = 5  # CHORUS_CIRCUIT_FAILURES, the default
COOLDOWN_S = 8.0
CACHE_S = 0.0  # CHORUS_CIRCUIT_CACHE_S (default 0.5 s): read the breaker before every call
RUNS = 30
WORKERS = 3


async def timed_run(chorus: ChorusClient, n: int, agent_name: str = "w") -> tuple[RunResult, float]:
    """Start run ``n`` and wait for it; returns its result and wall time (s)."""
    started = time.monotonic()
    handle = await chorus.start_sequential(
        f"Summarise the notes of breaker-run-{n:02d}.", [agent_name]
    )
    result = await handle.result()
    return result, time.monotonic() - started


async def breaker_row(chorus: ChorusClient) -> dict[str, Any] | None:
    pool = await chorus.pool()
    row = await pool.fetchrow(
        "SELECT state, failures, probes,"
        " extract(epoch FROM probe_at - clock_timestamp())::float8 AS probe_in_s"
        " FROM circuit_breakers WHERE provider = 'openai' AND model = ''"
    )
    return None if row is None else dict(row)


async def test_open_breaker_sends_the_fleet_to_the_fallback_and_closes_after_recovery(
    client: Client, make_settings: Any, tmp_path: Path
) -> None:
    """30 runs over 3 workers against a provider failing every call with 503.

    Once the breaker opens, calls reach the fallback without spending the retry budget, the
    failing provider sees nothing but probe calls, and after it recovers the next probe closes
    the breaker and calls go to it again.
    """
    settings = make_settings(
        [
            agent("w", ["openai:m-down", "local:backup"], timeout_s=5),
            agent("warm", ["local:warm"]),
        ],
        circuit_cooldown_s=COOLDOWN_S,
    )
    with StubLLM() as stub:
        stub.script("m-down", *[Reply(503, error_message="upstream overloaded")] * 1000)
        settings = settings.model_copy(update={"local_base_url": stub.base_url})
        workers = [
            WorkerProcess(settings, tmp_path, f"w{i}", stub.base_url) for i in range(WORKERS)
        ]
        for worker in workers:
            worker.env.update(
                {
                    "CHORUS_LOCAL_BASE_URL": stub.base_url,
                    "CHORUS_ALLOW_UNPRICED_MODELS": "true",
                    "CHORUS_CIRCUIT_COOLDOWN_S": str(COOLDOWN_S),
                    "CHORUS_CIRCUIT_CACHE_S": str(CACHE_S),
                    "CHORUS_STREAM_TOKENS": "false",
                    # The fallback answers at once; its default of 1 call at a time (a llama.cpp
                    # server) would queue the 30 runs behind each other. The failing provider
                    # takes one call at a time across the fleet, so that no call is in flight
                    # when the breaker opens (each failure is recorded before the slot is
                    # given back, and the breaker is asked again once the slot is held).
                    "CHORUS_PROVIDER_LIMITS": (
                        '{"local": {"concurrency": 16}, "openai": {"concurrency": 1}}'
                    ),
                }
            )
        async with sdk(client, settings) as chorus:
            try:
                for worker in workers:
                    worker.start()
                for worker in workers:
                    await worker.wait_polling(chorus)
                # warm the workers up (first workflow tasks are slow) so that calls arrive
                # at the pace they are started
                await asyncio.gather(*(timed_run(chorus, 100 + n, "warm") for n in range(6)))
                test_started = time.monotonic()

                opened_seen: list[float] = []

                async def watch_open() -> None:
                    while True:
                        row = await breaker_row(chorus)
                        if row is not None and row["state"] != "closed":
                            opened_seen.append(time.monotonic())
                            return
                        await asyncio.sleep(0.02)

                watcher = asyncio.create_task(watch_open())

                async def staggered(n: int) -> tuple[RunResult, float]:
                    await asyncio.sleep(n * 0.1)
                    return await timed_run(chorus, n)

                outcomes = await asyncio.wait_for(
                    asyncio.gather(*(staggered(n) for n in range(RUNS))), 60
                )
                await asyncio.wait_for(watcher, 5)
                during = await breaker_row(chorus)
                failing = list(stub.for_model("m-down"))
                # one run at a time while the breaker is open: a whole run, workflow included.
                # A run that happens to carry a probe (the cool-down ran out under load) spends a
                # retry and is left out; the failed probe reopens the breaker for a cool-down.
                quiet_open = []
                for n in range(RUNS, RUNS + 8):
                    run = await timed_run(chorus, n)
                    tried = run[0].steps[0].providers_tried
                    if [t.error_type for t in tried] == [errors.CIRCUIT_OPEN, None]:
                        quiet_open.append(run)
                    if len(quiet_open) == 3:
                        break

                # --- the stub recovers: after the cool-down, a probe closes the breaker -----
                with stub._lock:
                    stub._scripts["m-down"].clear()
                recovered_at = time.monotonic()
                at_recovery = await breaker_row(chorus)
                after: list[tuple[RunResult, float]] = []
                for n in range(RUNS + 10, RUNS + 40):  # bounded: about one run per 0.5 s
                    after.append(await timed_run(chorus, n))
                    if after[-1][0].steps[0].provider == "openai":
                        break
                    await asyncio.sleep(0.5)
                closed = await breaker_row(chorus)
                closed_after_s = time.monotonic() - recovered_at
                later = [await timed_run(chorus, n) for n in range(RUNS + 40, RUNS + 45)]
            finally:
                for worker in workers:
                    worker.stop()

    # every run answered, by the fallback
    steps = [result.steps[0] for result, _ in outcomes]
    assert all(s.status == "succeeded" and s.provider == "local" for s in steps)
    first = [s.providers_tried[0] for s in steps]
    assert all((t.provider, t.model, t.status) == ("openai", "m-down", "failed") for t in first)
    refused = [t for t in first if t.error_type == errors.CIRCUIT_OPEN]
    assert all("circuit breaker of openai is open" in (t.error or "") for t in refused)
    # refused on their first attempt: straight to the fallback, the provider never called
    skipped = [wall for t, (_, wall) in zip(first, outcomes, strict=True) if t.attempts == 1]
    # the others reached the provider first (retries cut short once the breaker opened)
    retried = [wall for t, (_, wall) in zip(first, outcomes, strict=True) if t.attempts > 1]
    assert all(t.error_type in (errors.CIRCUIT_OPEN, errors.PROVIDER_UNAVAILABLE) for t in first)
    assert all(t.error_type == errors.CIRCUIT_OPEN for t in first if t.attempts == 1)
    assert len(skipped) >= RUNS - FAILURES - WORKERS

    # the failing provider saw the calls that opened the breaker, and probes only
    assert during is not None and during["state"] in ("open", "half_open")
    probes = during["probes"]
    opened_at = opened_seen[0]
    late = [r for r in failing if r.at > opened_at + CACHE_S + 0.2]
    early = [r for r in failing if r.at <= opened_at + CACHE_S + 0.2]
    print(
        f"{len(failing)} requests to the failing provider ({len(early)} before the breaker "
        f"opened, {len(late)} after), {probes} probe(s); breaker open "
        f"{opened_at - test_started:.2f} s into the test; {len(skipped)} runs skipped it, "
        f"{len(retried)} reached it first"
    )
    # Exactly: with calls in flight when it opens (admitted before the Nth failure was written)
    # or a worker trusting a clean read (CHORUS_CIRCUIT_CACHE_S), a few more would arrive.
    assert len(failing) <= FAILURES + probes
    assert len(late) <= probes

    # within milliseconds vs the retry budget: the wall time of whole runs (workflow and
    # fallback call included) that skipped the provider vs those that spent retries on it
    skipped_ms = statistics.median(skipped) * 1000
    print(f"median run: {skipped_ms:.0f} ms with the breaker open", end="")
    if retried:
        retried_ms = statistics.median(retried) * 1000
        print(f", {retried_ms:.0f} ms for the runs that reached the provider first")
        assert skipped_ms < retried_ms
    assert len(quiet_open) == 3
    open_ms = statistics.median(wall for _, wall in quiet_open) * 1000
    closed_ms = statistics.median(wall for _, wall in later) * 1000
    print(
        f"one run at a time: {open_ms:.0f} ms with the breaker open (via the fallback), "
        f"{closed_ms:.0f} ms with it closed (the primary answers)"
    )
    for result, _ in quiet_open:
        assert [t.attempts for t in result.steps[0].providers_tried] == [1, 1]
    # the refusal costs one activity task, not the retry budget (>= 1 + 2 + 4 s of backoff)
    assert open_ms < closed_ms + 1000
    assert all(t.attempts < 4 for t in first)  # every retry budget cut short by the breaker

    # recovery: the probe went to the provider and closed the breaker; calls go there again
    recovered = after[-1][0].steps[0]
    assert (recovered.provider, recovered.model) == ("openai", "m-down")
    assert at_recovery is not None
    print(
        f"provider recovered {at_recovery['probe_in_s']:.1f} s before the next probe was due; "
        f"breaker closed {closed_after_s:.1f} s after the recovery, by the probe of the "
        f"{len(after)}th run"
    )
    assert closed is not None and (closed["state"], closed["failures"]) == ("closed", 0)
    assert all(r.steps[0].provider == "openai" for r, _ in later)
    assert all([t.status for t in r.steps[0].providers_tried] == ["succeeded"] for r, _ in later)
