"""Scale-out: three worker processes on one task queue share the work and cover for each other.

Each worker process gets its own ``OPENAI_BASE_URL`` path prefix (``/w0/v1``, ``/w1/v1``,
``/w2/v1``) on one loopback stub, so every LLM request the stub records names the worker that
sent it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

from temporalio.client import Client

from starter.sdk import RunHandle
from tests.conftest import agent, sdk
from tests.stub_llm import Recorded, StubLLM
from tests.worker_procs import AGENTS, WorkerProcess, assert_one_record_per_call, call_key

WORKERS = 3
RUNS = 12
DELAY_S = 1.0


def served_by(request: Recorded) -> int:
    """Index of the worker that sent ``request`` (from its ``/w<n>/v1`` path prefix)."""
    return int(request.path.split("/")[1].removeprefix("w"))


async def test_three_workers_share_runs_and_survive_a_kill(
    client: Client, make_settings: Any, tmp_path: Path
) -> None:
    """12 runs over 3 workers: calls spread over the workers; after one is SIGKILLed mid-call,
    its interrupted calls are retried by the others and every run succeeds."""
    settings = make_settings([agent(n, ["openai:gpt-4o-mini"]) for n in AGENTS])
    with StubLLM(default_delay_s=DELAY_S) as stub:
        workers = [
            WorkerProcess(settings, tmp_path, f"w{n}", f"http://127.0.0.1:{stub.port}/w{n}/v1")
            for n in range(WORKERS)
        ]
        async with sdk(client, settings) as chorus:
            try:
                for worker in workers:
                    worker.start()
                for worker in workers:
                    await worker.wait_polling(chorus)
                handles: list[RunHandle] = []
                for n in range(RUNS):
                    handles.append(
                        await chorus.start_sequential(
                            f"Summarise the notes of fault-run-{n:02d}.", list(AGENTS)
                        )
                    )
                    await asyncio.sleep(0.3)
                # Kill a worker while it has a call at the provider (sent < DELAY_S ago).
                victim, in_flight, killed_at = -1, [], 0.0
                deadline = time.monotonic() + 60
                while victim < 0 and time.monotonic() < deadline:
                    now = time.monotonic()
                    recent = [r for r in list(stub.requests) if now - r.at < DELAY_S - 0.3]
                    if recent:
                        victim = served_by(recent[0])
                        workers[victim].kill()
                        killed_at = time.monotonic()
                        in_flight = [call_key(r) for r in recent if served_by(r) == victim]
                    else:
                        await asyncio.sleep(0.05)
                assert victim >= 0, "no call in flight to kill"
                before = Counter(served_by(r) for r in stub.requests if r.at < killed_at)
                results = await asyncio.wait_for(
                    asyncio.gather(*(h.result() for h in handles)), 240
                )
                recovered_s = time.monotonic() - killed_at
            finally:
                for worker in workers:
                    worker.stop()

            assert all([s.status for s in r.steps] == ["succeeded"] * len(AGENTS) for r in results)
            await assert_one_record_per_call(chorus, {h.workflow_id for h in handles})

    after = [r for r in stub.requests if r.at > killed_at]
    print(
        f"calls per worker before the kill {dict(sorted(before.items()))}; killed w{victim} "
        f"with {len(in_flight)} call(s) in flight; after the kill "
        f"{dict(sorted(Counter(served_by(r) for r in after).items()))}; all {RUNS} runs done "
        f"{recovered_s:.1f} s after the kill"
    )
    assert len(before) >= 2  # the work spread over the workers
    assert victim not in {served_by(r) for r in after}
    retried = {call_key(r) for r in after}
    assert set(in_flight) <= retried  # the killed worker's calls finished on the others
