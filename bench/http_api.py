"""HTTP API benchmark: ``POST /v1/runs`` and ``GET /v1/runs/{id}`` under 50 concurrent clients,
and Server-Sent Events fan-out to 100 subscribers of one run.

One throw-away Temporal dev server (``chorus dev up``'s flags) and embedded PostgreSQL; a Chorus
worker process (``python -m worker``) whose agent calls a loopback OpenAI-compatible stub that
answers at once (so the numbers are the API's and Temporal's, not a model's); ``chorus serve``
in its own process (one uvicorn worker) with an API key; the load generator in this one.
Each measure runs against the API and, for comparison, the same SDK call made
directly from this process, interleaved in rounds:

1. ``POST /v1/runs`` (a 1-step sequential run) vs ``ChorusClient.start_sequential``;
2. ``GET /v1/runs/{id}`` of completed runs vs ``ChorusClient.status`` + ``result``;
3. SSE fan-out: 100 clients follow ``/v1/runs/{id}/events`` of one run while events are
   published into it; per event, the delay from the publisher's write to each subscriber's
   receipt (p50/p90/p99) and whether every subscriber got every event once, in order.

    python -m bench.http_api [--requests 400] [--concurrency 50] [--subscribers 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx2 as httpx
import yaml

from bench._support import CHORUS_DEV_FLAGS, embedded_postgres, machine, temporal_dev_server
from chorus.config.settings import Settings
from chorus.contracts.control import GateStep
from chorus.contracts.models import AgentStep
from chorus.governance import api_keys
from chorus.streaming.publisher import StepKey, StreamPublisher, publish_run_finished
from starter.dev import free_port
from starter.sdk import ChorusClient
from tests.stub_llm import StubLLM
from tests.worker_procs import WorkerProcess

SECRET = "b" * 40


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def load(
    call: Callable[[int], Awaitable[None]], requests: int, concurrency: int
) -> tuple[float, list[float]]:
    """Run ``call(i)`` for i in range(requests), ``concurrency`` at once; (req/s, latencies ms)."""
    latencies: list[float] = []
    queue = iter(range(requests))

    async def client() -> None:
        for i in queue:
            t0 = time.perf_counter()
            await call(i)
            latencies.append((time.perf_counter() - t0) * 1000)

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return requests / (time.perf_counter() - start), latencies


def serve_api(settings: Settings, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": settings.temporal_address,
        "DATABASE_URL": settings.database_url or "",
        "CHORUS_API_KEY_SECRET": SECRET,
        "CHORUS_TASK_QUEUE": settings.task_queue,
        "CHORUS_AGENTS_FILE": str(settings.agents_file),
        "CHORUS_LOG_LEVEL": "WARNING",
        "CHORUS_DATA_DIR": str(settings.data_dir),
    }
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "starter.cli", "serve", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(machine(["fastapi", "uvicorn"]))
    with tempfile.TemporaryDirectory(prefix="chorus-bench-api-", dir="/tmp") as tmp:
        work = Path(tmp)
        work.chmod(0o755)  # noqa: ASYNC240 - embedded-postgres's system user needs it
        with embedded_postgres(work) as url:
            async with temporal_dev_server(work / "temporal.db", CHORUS_DEV_FLAGS) as client:
                await run(client, url, work, args)


async def run(client: Any, url: str, work: Path, args: argparse.Namespace) -> None:
    catalog = work / "agents.yaml"
    catalog.write_text(
        yaml.safe_dump(
            {
                "agents": [
                    {
                        "name": n,
                        "instructions": f"You are {n}.",
                        "providers": ["openai:gpt-4o-mini"],
                        "max_tokens": 16,
                    }
                    for n in ("writer", "critic")
                ]
            }
        )
    )
    settings = Settings(
        temporal_address=client.service_client.config.target_host,
        database_url=url,
        agents_file=catalog,
        task_queue=f"bench-{uuid.uuid4().hex[:6]}",
        data_dir=work / "data",
        api_key_secret=SECRET,
        allow_unpriced_models=True,
    )
    chorus = ChorusClient(client, settings)
    with StubLLM() as stub:
        worker = WorkerProcess(settings, work, "worker", stub.base_url)
        worker.start()
        try:
            await worker.wait_polling(chorus)
            await with_worker(chorus, settings, work, args)
        finally:
            worker.stop()
            await chorus.close()


async def with_worker(
    chorus: ChorusClient, settings: Settings, work: Path, args: argparse.Namespace
) -> None:
    pool = await chorus.pool()
    _, key = await api_keys.create_key(
        pool, settings, name="bench", scopes=list(api_keys.SCOPES), author="bench"
    )
    port = free_port()
    proc = serve_api(settings, port, work / "api.log")
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=args.concurrency + 10)
    try:
        async with httpx.AsyncClient(
            base_url=base, headers=headers, timeout=60, limits=limits
        ) as http:
            async with asyncio.timeout(30):
                while True:
                    try:
                        if (await http.get("/readyz")).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    await asyncio.sleep(0.2)
            await measure(http, chorus, args)
            await fan_out(base, headers, chorus, pool, args)
    finally:
        proc.terminate()
        proc.wait(10)


async def measure(http: httpx.AsyncClient, chorus: Any, args: argparse.Namespace) -> None:
    started: list[str] = []
    results: dict[str, list[tuple[float, list[float]]]] = {
        "POST /v1/runs": [],
        "SDK start_sequential": [],
        "GET /v1/runs/{id}": [],
        "SDK status + result": [],
    }

    async def api_post(i: int) -> None:
        r = await http.post("/v1/runs", json={"task": f"bench {i}", "agents": ["writer"]})
        assert r.status_code == 202, r.text
        started.append(r.json()["workflow_id"])

    async def sdk_start(i: int) -> None:
        handle = await chorus.start_sequential(f"bench sdk {i}", ["writer"])
        started.append(handle.workflow_id)

    for _ in range(args.rounds):
        results["POST /v1/runs"].append(await load(api_post, args.requests, args.concurrency))
        results["SDK start_sequential"].append(
            await load(sdk_start, args.requests, args.concurrency)
        )
    done = started[: args.requests]
    for wf in done:  # let them complete: GET then returns the result too
        await chorus.runs.result(wf)

    async def api_get(i: int) -> None:
        r = await http.get(f"/v1/runs/{done[i % len(done)]}")
        assert r.status_code == 200 and r.json()["status"] == "COMPLETED", r.text

    async def sdk_get(i: int) -> None:
        wf = done[i % len(done)]
        await chorus.runs.status(wf, query_closed=False)  # as the API does
        await chorus.runs.result(wf)

    for _ in range(args.rounds):
        results["GET /v1/runs/{id}"].append(await load(api_get, args.requests, args.concurrency))
        results["SDK status + result"].append(await load(sdk_get, args.requests, args.concurrency))
    print(
        f"\n{args.requests} requests x {args.rounds} rounds, {args.concurrency} concurrent clients"
    )
    print(f"{'operation':<24} {'req/s (median)':>15} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}")
    for name, rounds in results.items():
        rps = statistics.median(r for r, _ in rounds)
        lat = [x for _, ls in rounds for x in ls]
        print(
            f"{name:<24} {rps:>15.1f} {pct(lat, 0.5):>8.1f} {pct(lat, 0.9):>8.1f} "
            f"{pct(lat, 0.99):>8.1f}"
        )


async def fan_out(
    base: str, headers: dict[str, str], chorus: Any, pool: Any, args: argparse.Namespace
) -> None:
    """``subscribers`` SSE clients on one run while ``events`` token events are published."""
    handle = await chorus.start_sequential(
        "fan-out", [AgentStep(agent="writer"), GateStep(name="hold", approvers=["nobody"])]
    )
    run_id = handle.workflow_id
    received: list[list[tuple[int, float]]] = [[] for _ in range(args.subscribers)]
    ready = asyncio.Semaphore(0)

    async def subscriber(n: int) -> None:
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120) as http:
            async with http.stream("GET", f"/v1/runs/{run_id}/events") as stream:
                assert stream.status_code == 200
                ready.release()
                event_id = 0
                async for line in stream.aiter_lines():
                    if line.startswith("id: "):
                        event_id = int(line[4:])
                    elif line.startswith("event: run_finished"):
                        return
                    elif line.startswith("data: ") and '"token"' in line:
                        received[n].append((event_id, time.time()))

    tasks = [asyncio.create_task(subscriber(n)) for n in range(args.subscribers)]
    for _ in range(args.subscribers):
        await ready.acquire()
    publisher = StreamPublisher(pool, interval_s=0.0, max_chars=1)
    key = StepKey(
        run_id=run_id,
        workflow_id=run_id,
        step=f"{run_id}/bench/1",
        agent="writer",
        activity_id="1",
        attempt=1,
    )
    stream = publisher.step(key)
    sent: dict[int, float] = {}
    t0 = time.perf_counter()
    stream.started("bench:fake")
    for i in range(args.events):
        stream.token(f"t{i} ")
        await asyncio.sleep(0.005)
    await stream.completed("done")
    await stream.close()
    rows = await pool.fetch(
        "SELECT id, extract(epoch FROM created_at)::float8 AS at FROM stream_events "
        "WHERE run_id = $1 AND kind = 'token'",
        run_id,
    )
    sent = {r["id"]: r["at"] for r in rows}
    await publish_run_finished(pool, run_id, "succeeded")
    await asyncio.wait_for(asyncio.gather(*tasks), 120)
    elapsed = time.perf_counter() - t0
    delays = [(at - sent[i]) * 1000 for got in received for i, at in got if i in sent]
    complete = sum(1 for got in received if [i for i, _ in got] == sorted(sent))
    print(
        f"\nSSE fan-out: {args.subscribers} subscribers, {len(sent)} token events "
        f"({args.events} tokens, batched by the publisher) in {elapsed:.1f} s"
    )
    print(
        f"delivery delay write→receipt: p50 {pct(delays, 0.5):.1f} ms, p90 {pct(delays, 0.9):.1f} "
        f"ms, p99 {pct(delays, 0.99):.1f} ms; subscribers with every event once, in order: "
        f"{complete}/{args.subscribers}"
    )
    await chorus.cancel(run_id)


if __name__ == "__main__":
    asyncio.run(main())
