"""Measure the embedded Temporal dev server's flags: defaults versus the ones Chorus uses.

Runs no-op 3-agent sequential pipelines (the LLM activity replaced by an instant one under the
same name, everything else the production worker) against a file-backed dev server started
(a) with its defaults and (b) with ``chorus dev up``'s flags, in the same process run, and
prints median/p95 latency of one run and throughput of concurrent runs for both.

    python -m bench.devserver_flags [--runs 40] [--concurrent 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import yaml
from temporalio import activity

from activities import RunActivities
from bench._support import embedded_postgres, temporal_dev_server
from chorus.config.settings import Settings
from chorus.contracts.models import LLMRequest, LLMResponse
from chorus.contracts.names import CALL_LLM_ACTIVITY
from chorus.storage import db
from starter.sdk import ChorusClient
from worker import build_worker

PRAGMAS = ["--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal"]
POLL_RPS = ["--dynamic-config-value", "history.transferProcessorMaxPollRPS=1000"]
VARIANTS = {
    "defaults": [],
    "poll-rps": POLL_RPS,
    "pragmas": PRAGMAS,
    "chorus": PRAGMAS + POLL_RPS,  # what `chorus dev up` uses
}


@activity.defn(name=CALL_LLM_ACTIVITY)
async def instant_llm(req: LLMRequest) -> LLMResponse:
    return LLMResponse(provider=req.provider, model=req.model, output="ok", attempt=1)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(
    label: str, extra: list[str], n_runs: int, concurrent: int, tmp: Path, database_url: str
) -> dict[str, float]:
    async with temporal_dev_server(tmp / f"{label}.db", extra) as client:
        catalog = tmp / "agents.yaml"
        catalog.write_text(
            yaml.safe_dump(
                {
                    "agents": [
                        {"name": n, "instructions": "x", "providers": ["local:noop"]}
                        for n in ("a", "b", "c")
                    ]
                }
            )
        )
        settings = Settings(
            agents_file=catalog,
            task_queue=f"bench-{uuid.uuid4().hex[:6]}",
            database_url=database_url,
        )
        pool = await db.open_store(settings)
        runs = RunActivities(pool, settings)
        chorus = ChorusClient(client, settings, pool)
        worker = build_worker(client, settings, [instant_llm, runs.start_run, runs.finish_run])
        async with worker:
            for _ in range(5):  # warm up
                await chorus.run_sequential("warm up", ["a", "b", "c"])
            latencies = []
            for _ in range(n_runs):
                start = time.perf_counter()
                await chorus.run_sequential("bench", ["a", "b", "c"])
                latencies.append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            await asyncio.gather(
                *(chorus.run_sequential("bench", ["a", "b", "c"]) for _ in range(concurrent))
            )
            throughput = concurrent / (time.perf_counter() - start)
        await pool.close()
        return {
            "p50_ms": statistics.median(latencies),
            "p95_ms": percentile(latencies, 0.95),
            "runs_per_s": throughput,
        }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40, help="sequential runs timed one by one")
    parser.add_argument("--concurrent", type=int, default=200, help="runs started at once")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, embedded_postgres(Path(tmp)) as database_url:
        results = {}
        for label, extra in VARIANTS.items():
            results[label] = await measure(
                label, extra, args.runs, args.concurrent, Path(tmp), database_url
            )
    print(
        f"no-op 3-agent sequential runs, file-backed dev server, {args.runs} timed one by one, "
        f"{args.concurrent} at once"
    )
    print(f"{'flags':10} {'p50 ms':>8} {'p95 ms':>8} {'runs/s':>8}")
    for label, r in results.items():
        print(f"{label:10} {r['p50_ms']:8.1f} {r['p95_ms']:8.1f} {r['runs_per_s']:8.1f}")
    d, c = results["defaults"], results["chorus"]
    print(
        f"ratio chorus/defaults: p50 x{c['p50_ms'] / d['p50_ms']:.2f}, "
        f"throughput x{c['runs_per_s'] / d['runs_per_s']:.2f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
