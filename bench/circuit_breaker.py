"""Circuit breaker (issue 17): a run's latency with the breaker open, closed, and without one.

One process starts its own stack: embedded PostgreSQL, a file-backed Temporal dev server with
``chorus dev up``'s flags, an instant loopback OpenAI-compatible stub, and an in-process
production worker (the real ``chorus.call_llm``). One agent, ``w``, with the chain
``openai:m-down`` -> ``local:backup`` (both served by the stub). Runs go one at a time:

- ``closed``: the primary answers (the breaker is closed, no failure counted: the healthy
  hot path);
- ``open``: the breaker is open (opened in PostgreSQL as other workers would have): the call is
  refused before the provider and the run falls back at once;
- ``no breaker``: ``CHORUS_CIRCUIT_FAILURES=0`` and the primary answers 503 to every call:
  each run spends the LLM retry policy's budget (4 attempts, 1 + 2 + 4 s of backoff) before
  falling back, which is what every run paid before the breaker.

It also times :meth:`CircuitBreaker.admit` alone (the breaker's cost per call): closed and
clean (the per-process cache, no query), closed with failures counted (one primary-key read),
and open (cached refusal).

    python -m bench.circuit_breaker [--runs 10] [--failing-runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from bench._support import CHORUS_DEV_FLAGS, embedded_postgres, machine, temporal_dev_server
from chorus.config.settings import Settings
from chorus.contracts.models import ProviderLimit
from chorus.governance.circuit_breaker import CircuitBreaker, CircuitOpenError
from chorus.storage import circuit_rows
from chorus.testing import running_worker
from starter.sdk import ChorusClient
from tests.stub_llm import Reply, StubLLM

AGENT = {
    "name": "w",
    "instructions": "You are w.",
    "providers": ["openai:m-down", "local:backup"],
    "max_tokens": 64,
}


def settings_for(tmp: Path, database_url: str, stub: StubLLM, **overrides: Any) -> Settings:
    catalog = tmp / f"agents-{uuid.uuid4().hex[:6]}.yaml"
    catalog.write_text(yaml.safe_dump({"agents": [AGENT]}))
    values: dict[str, Any] = {
        "agents_file": catalog,
        "database_url": database_url,
        "task_queue": f"bench-breaker-{uuid.uuid4().hex[:6]}",
        "local_base_url": stub.base_url,
        "allow_unpriced_models": True,
        "stream_tokens": False,
        "provider_limits": {"local": ProviderLimit(concurrency=16)},
    }
    values.update(overrides)
    return Settings(**values)


async def timed_runs(chorus: ChorusClient, runs: int, expect: str) -> list[float]:
    """Run ``runs`` runs one at a time; return their wall times (ms)."""
    walls = []
    for n in range(runs):
        started = time.perf_counter()
        result = await chorus.run_sequential(f"Summarise the notes of bench run {n}.", ["w"])
        walls.append((time.perf_counter() - started) * 1000)
        assert result.steps[0].provider == expect, result.steps[0]
    return walls


async def open_breaker(pool: Any, settings: Settings) -> None:
    for _ in range(settings.circuit_failures):
        await circuit_rows.record_failure(
            pool,
            "openai",
            "",
            kind="outage",
            threshold=settings.circuit_failures,
            window_s=60.0,
            cooldown_s=3600.0,
            error="bench: opened by hand",
        )


async def admit_us(breaker: CircuitBreaker, calls: int) -> float:
    """Median microseconds of one ``admit`` (refusals included)."""
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        try:
            await breaker.admit("openai", "m-down")
        except CircuitOpenError:
            pass
        times.append((time.perf_counter() - started) * 1e6)
    return statistics.median(times)


async def main() -> None:
    parser = argparse.ArgumentParser(description="Chorus circuit breaker benchmark")
    parser.add_argument("--runs", type=int, default=10, help="runs per fast scenario")
    parser.add_argument("--failing-runs", type=int, default=3, help="runs without a breaker")
    args = parser.parse_args()
    rows: list[tuple[str, list[float]]] = []
    admits: dict[str, float] = {}
    with (
        tempfile.TemporaryDirectory() as tmpdir,
        StubLLM() as stub,
        embedded_postgres(Path(tmpdir)) as database_url,
    ):
        os.environ["OPENAI_API_KEY"] = "sk-bench"
        os.environ["OPENAI_BASE_URL"] = stub.base_url
        tmp = Path(tmpdir)
        from activities import LLMActivities, ProviderClients

        async with temporal_dev_server(tmp / "temporal.db", list(CHORUS_DEV_FLAGS)) as client:
            with_breaker = settings_for(tmp, database_url, stub)
            clients = ProviderClients.from_settings(with_breaker)
            async with running_worker(
                client,
                with_breaker,
                lambda pool: LLMActivities(clients, with_breaker, pool).call_llm,
            ) as chorus:
                pool = await chorus.pool()
                await timed_runs(chorus, 2, "openai")  # warm-up
                rows.append(("breaker closed, primary answers", await timed_runs(
                    chorus, args.runs, "openai")))  # fmt: skip
                await open_breaker(pool, with_breaker)
                # the worker trusts its clean read of the breaker this long (by design)
                await asyncio.sleep(with_breaker.circuit_cache_s + 0.1)
                rows.append(("breaker open, straight to the fallback", await timed_runs(
                    chorus, args.runs, "local")))  # fmt: skip
                await circuit_rows.reset(pool, "openai")

                admits["closed, clean (cached)"] = await admit_us(
                    CircuitBreaker(pool, with_breaker), 2000
                )
                await circuit_rows.record_failure(
                    pool, "openai", "", kind="outage", threshold=5, window_s=600.0,
                    cooldown_s=3600.0, error="bench",
                )  # fmt: skip
                admits["closed, failures counted (PostgreSQL read)"] = await admit_us(
                    CircuitBreaker(pool, with_breaker), 2000
                )
                await open_breaker(pool, with_breaker)
                admits["open (cached refusal)"] = await admit_us(
                    CircuitBreaker(pool, with_breaker), 2000
                )
                await circuit_rows.reset(pool, "openai")

            without = settings_for(tmp, database_url, stub, circuit_failures=0)
            async with running_worker(
                client, without, lambda pool: LLMActivities(clients, without, pool).call_llm
            ) as chorus:
                stub.script("m-down", *[Reply(503)] * (4 * args.failing_runs))
                rows.append(("no breaker, primary fails (retry budget)", await timed_runs(
                    chorus, args.failing_runs, "local")))  # fmt: skip
            await clients.close()

    print(f"\n{machine()}\n")
    print("| run (one at a time) | runs | median ms | min ms | max ms |")
    print("|---|---:|---:|---:|---:|")
    for name, walls in rows:
        print(
            f"| {name} | {len(walls)} | {statistics.median(walls):.1f} | {min(walls):.1f} | "
            f"{max(walls):.1f} |"
        )
    print("\n| `CircuitBreaker.admit`, one call | median µs |")
    print("|---|---:|")
    for name, us in admits.items():
        print(f"| {name} | {us:.1f} |")


if __name__ == "__main__":
    asyncio.run(main())
