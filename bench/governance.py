"""Governance benchmark: what budgets and fleet-wide concurrency slots add to one LLM call.

Against an embedded PostgreSQL (no Temporal), measures per LLM call:

1. budget reserve + settle (two transactions, the daily/run/agent rows locked) with
   ``--concurrency`` callers at once, all on the same day's budget row (the worst case: every
   call serialises on that row);
2. concurrency slot acquire + release (advisory locks) for a provider limited to 16;
3. PII redaction of a 4 KB prompt (placeholder policy).

Prints p50/p95 latency per call and calls/s.

    python -m bench.governance [--calls 2000] [--concurrency 50]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench._support import embedded_postgres
from chorus.config.settings import Settings
from chorus.governance import budget
from chorus.governance.pii import Redactor
from chorus.governance.provider_limits import FleetSemaphore
from chorus.storage import db
from tests.pii_corpus import POSITIVES


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def timed(
    calls: int, concurrency: int, one: Callable[[int], Awaitable[None]]
) -> tuple[list[float], float]:
    latencies: list[float] = []
    queue = iter(range(calls))

    async def worker() -> None:
        for n in queue:
            started = time.perf_counter()
            await one(n)
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, calls / (time.perf_counter() - started)


async def main() -> None:
    parser = argparse.ArgumentParser(description="Chorus governance benchmark")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    results: dict[str, tuple[list[float], float]] = {}
    with tempfile.TemporaryDirectory() as tmpdir, embedded_postgres(Path(tmpdir)) as database_url:
        settings = Settings(database_url=database_url, daily_budget_usd=1_000_000.0)
        pool = await db.open_store(settings, max_size=args.concurrency + 5)
        try:
            run_id = f"bench-{uuid.uuid4().hex[:6]}"

            async def reserve_settle(n: int) -> None:
                await budget.reserve(
                    pool,
                    settings,
                    workflow_id=run_id,
                    activity_id=str(n),
                    root_workflow_id=run_id,
                    agent=f"agent{n % 3}",
                    provider="openai",
                    model="gpt-4o-mini",
                    amount_usd=0.001,
                )
                await budget.settle(
                    pool, settings, workflow_id=run_id, activity_id=str(n), cost_usd=0.0002
                )

            results["budget reserve+settle"] = await timed(
                args.calls, args.concurrency, reserve_settle
            )
            slots = FleetSemaphore(pool, {"openai": 16})

            async def slot(_n: int) -> None:
                taken = await slots.acquire("openai")
                await slots.release("openai", taken)

            results["slot acquire+release (limit 16)"] = await timed(
                args.calls, args.concurrency, slot
            )
            redactor = Redactor()
            prompt = "\n".join(s.text for s in POSITIVES)[:4096]

            async def redact(_n: int) -> None:
                redactor.redact(prompt, "placeholder")

            results["PII placeholder, 4 KB prompt"] = await timed(args.calls, 1, redact)
        finally:
            await pool.close()
    print(f"{args.calls} calls, {args.concurrency} concurrent callers (PII: one caller)")
    print(f"{'operation':34} {'p50 ms':>8} {'p95 ms':>8} {'calls/s':>9}")
    for name, (latencies, rate) in results.items():
        print(
            f"{name:34} {statistics.median(latencies):8.2f} {pct(latencies, 0.95):8.2f} {rate:9.0f}"
        )


if __name__ == "__main__":
    asyncio.run(main())
