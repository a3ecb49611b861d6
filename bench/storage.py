"""Storage benchmark: latency of the PostgreSQL writes and message rows/s under 50 runs.

Starts its own file-backed Temporal dev server (``chorus dev up``'s flags), an embedded
PostgreSQL and a loopback LLM stub that answers at once, and runs the production worker with
the real LLM activity (which records a message and a ledger row per call). It then:

1. runs ``--runs`` 3-agent sequential pipelines keeping ``--concurrency`` (50) in flight and
   reports message rows written per second, and p50/p95 of each storage write as the
   activities performed it (``record_run_started`` in ``chorus.start_run``, ``record_call`` in
   ``chorus.call_llm``, ``record_run_finished`` in ``chorus.finish_run``);
2. for comparison, writes the same number of message rows straight to PostgreSQL from 50
   concurrent writers (the database's own ceiling for this write).

    python -m bench.storage [--runs 300] [--concurrency 50]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml

from activities import LLMActivities, ProviderClients, RunActivities
from bench._support import CHORUS_DEV_FLAGS, embedded_postgres, temporal_dev_server, timed_ms
from chorus.config.settings import Settings
from chorus.storage import db
from starter.sdk import ChorusClient
from tests.stub_llm import StubLLM
from worker import WorkerOptions, build_worker

TIMINGS: dict[str, list[float]] = defaultdict(list)


def timed(name: str, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    return timed_ms(fn, lambda ms: TIMINGS[name].append(ms))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description="Chorus storage benchmark")
    parser.add_argument("--runs", type=int, default=300, help="3-agent runs in total")
    parser.add_argument("--concurrency", type=int, default=50, help="runs in flight at once")
    args = parser.parse_args()

    record_call = db.record_call  # untimed, for the database-alone comparison
    for name in ("record_run_started", "record_call", "record_run_finished"):
        setattr(db, name, timed(name, getattr(db, name)))

    with tempfile.TemporaryDirectory() as tmpdir, StubLLM() as stub:
        tmp = Path(tmpdir)
        async with contextlib.AsyncExitStack() as stack:
            database_url = stack.enter_context(embedded_postgres(tmp))
            client = await stack.enter_async_context(
                temporal_dev_server(tmp / "temporal.db", CHORUS_DEV_FLAGS)
            )
            catalog = tmp / "agents.yaml"
            catalog.write_text(
                yaml.safe_dump(
                    {
                        "agents": [
                            {
                                "name": n,
                                "instructions": f"You are {n}.",
                                "providers": ["local:stub"],
                            }
                            for n in ("analyst", "writer", "critic")
                        ]
                    }
                )
            )
            settings = Settings(
                agents_file=catalog,
                database_url=database_url,
                local_base_url=stub.base_url,
                task_queue=f"bench-{uuid.uuid4().hex[:6]}",
            )
            pool = await db.open_store(settings, max_size=20)
            clients = ProviderClients.from_settings(settings)
            runs = RunActivities(pool, settings)
            llm = LLMActivities(clients, settings, pool)
            worker = build_worker(
                client,
                settings,
                [llm.call_llm, runs.start_run, runs.finish_run],
                WorkerOptions(max_concurrent_activities=100, max_concurrent_workflow_tasks=100),
            )
            chorus = ChorusClient(client, settings, pool)
            try:
                async with worker:
                    for _ in range(5):
                        await chorus.run_sequential("warm up", ["analyst", "writer", "critic"])
                    TIMINGS.clear()
                    for _ in range(20):  # one at a time: the writes without contention
                        await chorus.run_sequential("idle", ["analyst", "writer", "critic"])
                    idle = {k: list(v) for k, v in TIMINGS.items()}
                    TIMINGS.clear()
                    rows_before = await pool.fetchval("SELECT count(*) FROM messages")
                    semaphore = asyncio.Semaphore(args.concurrency)

                    async def one() -> None:
                        async with semaphore:
                            await chorus.run_sequential(
                                "bench", ["analyst", "writer", "critic"], document="x" * 2000
                            )

                    start = time.perf_counter()
                    await asyncio.gather(*(one() for _ in range(args.runs)))
                    elapsed = time.perf_counter() - start
                    rows = await pool.fetchval("SELECT count(*) FROM messages") - rows_before

                # The database alone: the same rows from 50 concurrent writers.
                direct: list[float] = []

                async def write(i: int) -> None:
                    t = time.perf_counter()
                    await record_call(
                        pool,
                        workflow_id=f"direct-{i // 3}",
                        root_workflow_id=f"direct-{i // 3}",
                        activity_id=str(i),
                        agent="analyst",
                        agent_version=1,
                        provider="local",
                        model="stub",
                        system_prompt="s",
                        user_prompt="u" * 2000,
                        completion="c" * 200,
                        input_tokens=13,
                        output_tokens=5,
                        cost_usd=0.0,
                        cost_known=True,
                        latency_ms=1.0,
                        attempt=1,
                        truncated_chars=0,
                    )
                    direct.append(time.perf_counter() - t)

                sem = asyncio.Semaphore(args.concurrency)

                async def bounded(i: int) -> None:
                    async with sem:
                        await write(i)

                start_direct = time.perf_counter()
                await asyncio.gather(*(bounded(i) for i in range(rows)))
                direct_elapsed = time.perf_counter() - start_direct
            finally:
                await clients.close()
                await pool.close()

    print(f"{args.runs} runs x 3 agents, {args.concurrency} in flight; instant loopback LLM stub")
    print(
        f"message rows written: {rows} in {elapsed:.1f} s = {rows / elapsed:.0f} rows/s "
        f"({args.runs / elapsed:.1f} runs/s)"
    )
    print(
        f"{'storage write':22} | one run at a time: p50 / p95 ms "
        f"| {args.concurrency} in flight: p50 / p95 ms"
    )
    for name in ("record_run_started", "record_call", "record_run_finished"):
        a, b = idle[name], TIMINGS[name]
        print(
            f"{name:22} | {statistics.median(a):14.2f} / {pct(a, 0.95):6.2f}  "
            f"| {statistics.median(b):15.2f} / {pct(b, 0.95):6.2f}"
        )
    print(
        f"database alone: {rows} record_call writes from {args.concurrency} writers in "
        f"{direct_elapsed:.2f} s = {rows / direct_elapsed:.0f} rows/s"
    )


if __name__ == "__main__":
    asyncio.run(main())
