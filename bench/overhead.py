"""Orchestration overhead: Chorus against the same LLM calls made directly with asyncio.

One process starts its own stack: embedded PostgreSQL, a file-backed Temporal dev server with
``chorus dev up``'s flags, a loopback OpenAI-compatible stub answering after a fixed 200 ms,
and the production worker (``worker.build_worker``, real ``chorus.call_llm`` activity against
the stub as the ``openai`` provider). In the same run it measures:

a. a sequential 3-agent run against 3 sequential direct ``AsyncOpenAI`` calls with the very
   request bodies Chorus sent (so the same prompts) → overhead ms per step and ratio;
b. a parallel 10-branch run (no aggregator) against 10 concurrent direct calls → ratio;
c. a no-op 3-step sequential run (the LLM activity replaced by an instant one under the same
   name, everything else production) one at a time → p50/p95 latency;
d. ``--concurrent`` (500) no-op 3-step runs started at once → runs/s;
e. with ``--with-model``, the bundled local model (llama-cpp-python server, as ``chorus dev
   up`` starts it): completion tokens/s through Chorus against a direct call.

(a)-(c) are repeated ``--repeats`` times and reported as medians. (c) and (d) are also run with
the workflow sandbox off (``UnsandboxedWorkflowRunner``), a bench-only comparison that prices
the sandbox. The table is printed and, with ``--write``, appended to ``bench/RESULTS.md``.

    python -m bench.overhead [--quick] [--with-model] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import yaml
from temporalio import activity
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities import ProviderClients, RunActivities
from bench._support import bench_stack, machine, plain_client, stock_sandbox
from bench.naive import NaiveActivities, NaiveWorkflow, plain_request
from chorus.config.settings import Settings
from chorus.contracts.models import LLMRequest, LLMResponse
from chorus.contracts.names import CALL_LLM_ACTIVITY
from chorus.storage import db
from starter.dev import free_port, llm_argv
from starter.sdk import ChorusClient
from tests.stub_llm import StubLLM
from worker import WorkerOptions, build_worker, default_activities, freeze_startup_heap

STUB_DELAY_S = 0.2
MODEL = "gpt-4o-mini"
SEQ_AGENTS = ["analyst", "writer", "critic"]
PAR_AGENTS = [f"branch{i}" for i in range(10)]
OPTIONS = WorkerOptions(max_concurrent_activities=200, max_concurrent_workflow_tasks=200)
RESULTS = Path(__file__).with_name("RESULTS.md")

TARGETS = {
    "overhead_ms_per_step": 10.0,
    "ratio_sequential": 1.05,
    "ratio_parallel10": 1.10,
    "noop_p50_ms": 40.0,
    "runs_per_s": 50.0,
}


@activity.defn(name=CALL_LLM_ACTIVITY)
async def instant_llm(req: LLMRequest) -> LLMResponse:
    """Answer at once (the no-op runs): everything but the LLM call is production."""
    return LLMResponse(provider=req.provider, model=req.model, output="ok", attempt=1)


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile ``q`` (0..1) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _write_catalog(path: Path, provider: str) -> None:
    agents = [
        {"name": n, "instructions": f"You are {n}. Answer briefly.", "providers": [provider]}
        for n in SEQ_AGENTS + PAR_AGENTS
    ]
    path.write_text(yaml.safe_dump({"agents": agents}))


NO_LIMITS = {"openai": {"concurrency": 0, "rpm": 0}}
"""The ``openai`` provider without fleet-wide limits (default: 16 slots, 500 calls/min)."""


def _settings(tmp: Path, database_url: str, provider: str, **extra: Any) -> Settings:
    """The benchmarks' Chorus settings: no budgets, and the run's last call closes its row.

    ``CHORUS_CLOSE_RUN_IN_LAST_CALL`` is off by default only so that a fleet upgrading from
    workers older than it stays replay-safe (README, Settings); a fleet of one version, like
    these benchmarks', turns it on.
    """
    catalog = tmp / f"agents-{uuid.uuid4().hex[:6]}.yaml"
    _write_catalog(catalog, provider)
    return Settings(
        agents_file=catalog,
        database_url=database_url,
        task_queue=f"bench-{uuid.uuid4().hex[:6]}",
        daily_budget_usd=None,
        run_budget_usd=None,
        **{"close_run_in_last_call": True, **extra},
    )


@contextlib.asynccontextmanager
async def chorus_worker(
    client: Any,
    settings: Settings,
    activities: Callable[[Any], list[Callable[..., Any]]],
    sandbox: bool,
) -> AsyncIterator[ChorusClient]:
    """Run the production worker (or the same one unsandboxed) and yield an SDK client."""
    pool = await db.open_store(settings, max_size=20)
    # bench-only: price the sandbox (ChorusPlugin keeps an explicit UnsandboxedWorkflowRunner)
    runner = {} if sandbox else {"workflow_runner": UnsandboxedWorkflowRunner()}
    built = build_worker(client, settings, activities(pool), OPTIONS, **runner)
    try:
        async with built:
            freeze_startup_heap()  # as worker.run_worker does once the worker runs
            yield ChorusClient(client, settings, pool)
    finally:
        await pool.close()


@contextlib.asynccontextmanager
async def naive_worker(client: Any, noop: bool) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """Run the naive baseline's worker (``bench/naive.py``); yield ``run(bodies, parallel)``."""
    acts = NaiveActivities(noop=noop)
    queue = f"naive-{uuid.uuid4().hex[:6]}"
    client = await plain_client(client)  # temporalio's own sandbox, not Chorus's
    worker = Worker(
        client,
        task_queue=queue,
        workflows=[NaiveWorkflow],
        workflow_runner=stock_sandbox(),
        activities=[acts.call],
        max_concurrent_activities=OPTIONS.max_concurrent_activities,
        max_concurrent_workflow_tasks=OPTIONS.max_concurrent_workflow_tasks,
    )

    async def run(bodies: list[dict[str, Any]], parallel: bool) -> Any:
        return await client.execute_workflow(
            NaiveWorkflow.run,
            args=[bodies, parallel],
            id=f"naive-{uuid.uuid4().hex}",
            task_queue=queue,
        )

    run.task_queue = queue  # type: ignore[attr-defined]  # for bench/profile.py
    try:
        async with worker:
            yield run
    finally:
        await acts.close()


async def _timed(coro: Awaitable[Any]) -> float:
    start = time.perf_counter()
    await coro
    return (time.perf_counter() - start) * 1000


async def measure_llm(
    client: Any,
    tmp: Path,
    database_url: str,
    stub: StubLLM,
    repeats: int,
    limits: bool,
    queues: str = "per-provider",
) -> dict[str, list[float]]:
    """(a) and (b): Chorus against direct calls with the same request bodies."""
    from openai import AsyncOpenAI

    extra: dict[str, Any] = {"llm_task_queues": queues}
    if not limits:
        extra["provider_limits"] = NO_LIMITS
    settings = _settings(tmp, database_url, f"openai:{MODEL}", **extra)
    clients = ProviderClients.from_settings(settings)
    direct = AsyncOpenAI(max_retries=0)
    out: dict[str, list[float]] = {
        k: []
        for k in (
            "seq_chorus", "seq_naive", "seq_direct", "par_chorus", "par_naive", "par_direct"
        )
    }  # fmt: skip
    try:
        async with (
            chorus_worker(
                client, settings, lambda pool: default_activities(settings, pool, clients), True
            ) as chorus,
            naive_worker(client, noop=False) as naive,
        ):
            for _ in range(2):  # warm up both paths
                await chorus.run_sequential("warm up", SEQ_AGENTS)
                n = len(stub.requests)
                await chorus.run_parallel("warm up", PAR_AGENTS, aggregator=None)
                bodies = [r.body for r in stub.requests[n:]]
                await asyncio.gather(
                    *(direct.chat.completions.create(**plain_request(b)) for b in bodies)
                )
                await naive(bodies, True)
            for _ in range(repeats):
                n = len(stub.requests)
                out["seq_chorus"].append(
                    await _timed(chorus.run_sequential("Summarize the report", SEQ_AGENTS))
                )
                bodies = [r.body for r in stub.requests[n:]]
                assert len(bodies) == 3, len(bodies)

                async def sequential(bodies: list[dict[str, Any]] = bodies) -> None:
                    for body in bodies:
                        await direct.chat.completions.create(**plain_request(body))

                out["seq_direct"].append(await _timed(sequential()))
                out["seq_naive"].append(await _timed(naive(bodies, False)))
                n = len(stub.requests)
                out["par_chorus"].append(
                    await _timed(
                        chorus.run_parallel("Review the report", PAR_AGENTS, aggregator=None)
                    )
                )
                bodies = [r.body for r in stub.requests[n:]]
                assert len(bodies) == 10, len(bodies)
                out["par_direct"].append(
                    await _timed(
                        asyncio.gather(
                            *(direct.chat.completions.create(**plain_request(b)) for b in bodies)
                        )
                    )
                )
                out["par_naive"].append(await _timed(naive(bodies, True)))
            out["history_seq"] = await history_breakdown(
                client, (await chorus.start_sequential("breakdown", SEQ_AGENTS)).workflow_id
            )
            out["history_par"] = await history_breakdown(
                client,
                (await chorus.start_parallel("breakdown", PAR_AGENTS, aggregator=None)).workflow_id,
            )
    finally:
        await direct.close()
        await clients.close()
    return out


async def history_breakdown(client: Any, workflow_id: str) -> list[float]:
    """Split one run's wall time using its history's event times (the server's clock), in ms.

    Returns ``[total, workflow tasks (scheduled → completed), activity dispatch (scheduled →
    started), activity execution (started → completed), gaps (the rest: the server turning one
    event into the next task)]``; overlapping intervals (parallel activities) are merged.
    """
    from temporalio.api.enums.v1 import EventType

    handle = client.get_workflow_handle(workflow_id)
    await handle.result()
    events = [e async for e in handle.fetch_history_events()]
    at = {e.event_id: e.event_time.ToNanoseconds() / 1e6 for e in events}
    wft: list[tuple[float, float]] = []
    dispatch: list[tuple[float, float]] = []
    execution: list[tuple[float, float]] = []
    for e in events:
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            wft.append(
                (at[e.workflow_task_completed_event_attributes.scheduled_event_id], at[e.event_id])
            )
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            dispatch.append(
                (at[e.activity_task_started_event_attributes.scheduled_event_id], at[e.event_id])
            )
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            execution.append(
                (at[e.activity_task_completed_event_attributes.started_event_id], at[e.event_id])
            )

    def covered(intervals: list[tuple[float, float]]) -> float:
        total, end = 0.0, float("-inf")
        for a, b in sorted(intervals):
            if b > end:
                total += b - max(a, end)
                end = b
        return total

    total = at[events[-1].event_id] - at[events[0].event_id]
    parts = [covered(wft), covered(dispatch), covered(execution)]
    return [total, *parts, total - covered(wft + dispatch + execution)]


async def measure_noop(
    client: Any,
    tmp: Path,
    database_url: str,
    runs: int,
    repeats: int,
    concurrent: int,
    sandbox: bool,
    limits: bool,
    queues: str = "per-provider",
) -> dict[str, Any]:
    """(c) and (d): no-op 3-step runs, one at a time, then ``concurrent`` at once."""
    extra: dict[str, Any] = {"llm_task_queues": queues}
    if not limits:
        extra["provider_limits"] = NO_LIMITS
    settings = _settings(tmp, database_url, f"openai:{MODEL}", **extra)

    def activities(pool: Any) -> list[Callable[..., Any]]:
        runs_ = RunActivities(pool, settings)
        return [instant_llm, runs_.start_run, runs_.finish_run]

    async with chorus_worker(client, settings, activities, sandbox) as chorus:
        return await latency_and_throughput(
            lambda: chorus.run_sequential("noop", SEQ_AGENTS), tmp, runs, repeats, concurrent
        )


async def measure_naive_noop(
    client: Any, tmp: Path, runs: int, repeats: int, concurrent: int
) -> dict[str, Any]:
    """(c) and (d) for the naive baseline: 3 instant activities in a plain workflow."""
    bodies: list[dict[str, Any]] = [{} for _ in SEQ_AGENTS]
    async with naive_worker(client, noop=True) as naive:
        return await latency_and_throughput(
            lambda: naive(bodies, False), tmp, runs, repeats, concurrent
        )


async def latency_and_throughput(
    one_run: Callable[[], Awaitable[Any]], tmp: Path, runs: int, repeats: int, concurrent: int
) -> dict[str, Any]:
    """(c) p50/p95 of ``runs`` runs one by one, per repeat, after 5 warm-up runs; (d) runs/s
    and CPU ms per run of each process with ``concurrent`` runs started at once."""
    p50s, p95s = [], []
    for _ in range(5):
        await one_run()
    for _ in range(repeats):
        lat = [await _timed(one_run()) for _ in range(runs)]
        p50s.append(statistics.median(lat))
        p95s.append(pct(lat, 0.95))
    before = cpu_seconds(tmp)
    start = time.perf_counter()
    await asyncio.gather(*(one_run() for _ in range(concurrent)))
    throughput = concurrent / (time.perf_counter() - start)
    after = cpu_seconds(tmp)
    cpu = {f"cpu_ms_per_run_{k}": (after[k] - before[k]) * 1000 / concurrent for k in after}
    return {"p50": p50s, "p95": p95s, "runs_per_s": throughput, "concurrent": concurrent, **cpu}


def cpu_seconds(tmp: Path) -> dict[str, float]:
    """CPU seconds used so far by this process (worker, starter, stub), by the Temporal dev
    server and by PostgreSQL (the processes whose command line names ``tmp``, and children)."""
    me = psutil.Process()
    out = {"python": sum(me.cpu_times()[:2]), "temporal": 0.0, "postgres": 0.0}
    for proc in psutil.process_iter(["cmdline", "name"]):
        try:
            if not any(str(tmp) in arg for arg in proc.info["cmdline"] or ()):
                continue
            key = "temporal" if "temporal" in (proc.info["name"] or "") else "postgres"
            for p in [proc, *proc.children(recursive=True)]:
                out[key] += sum(p.cpu_times()[:2])
        except psutil.Error:
            continue
    return out


async def measure_model(client: Any, tmp: Path, database_url: str, calls: int) -> dict[str, float]:
    """(e): completion tokens/s of the bundled local model, through Chorus and directly."""
    from openai import AsyncOpenAI

    from starter.dev import LOCAL_MODEL_ALIAS

    port = free_port()
    settings = _settings(
        tmp,
        database_url,
        f"local:{LOCAL_MODEL_ALIAS}",
        local_base_url=f"http://127.0.0.1:{port}/v1",
    )
    server = await asyncio.create_subprocess_exec(
        *llm_argv(settings), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    direct = AsyncOpenAI(base_url=settings.local_base_url, api_key="x", max_retries=0)
    clients = ProviderClients.from_settings(settings)
    try:
        for _ in range(300):
            try:
                await direct.models.list()
                break
            except Exception:
                await asyncio.sleep(0.2)
        else:
            raise RuntimeError("the llama.cpp server did not start in 60 s")
        async with chorus_worker(
            client, settings, lambda pool: default_activities(settings, pool, clients), True
        ) as chorus:
            await chorus.run_sequential("warm up", ["analyst"])
            chorus_tok = chorus_s = call_s = direct_tok = direct_s = 0.0
            for _ in range(calls):
                start = time.perf_counter()
                result = await chorus.run_sequential(
                    "Write three sentences about rivers.", ["analyst"]
                )
                chorus_s += time.perf_counter() - start
                chorus_tok += result.steps[0].output_tokens or 0
                call_s += result.steps[0].latency_ms / 1000  # the provider call inside
                body: dict[str, Any] = {
                    "model": LOCAL_MODEL_ALIAS,
                    "messages": [
                        {"role": "system", "content": "You are analyst. Answer briefly."},
                        {"role": "user", "content": "Write three sentences about rivers."},
                    ],
                    "max_tokens": result.steps[0].output_tokens or 64,
                    "temperature": 0,
                }
                start = time.perf_counter()
                reply = await direct.chat.completions.create(**plain_request(body))
                direct_s += time.perf_counter() - start
                direct_tok += reply.usage.completion_tokens if reply.usage else 0
    finally:
        await direct.close()
        await clients.close()
        server.terminate()
        await asyncio.wait_for(server.wait(), 30)
    return {
        "chorus_tok_s": chorus_tok / chorus_s,
        "chorus_call_tok_s": chorus_tok / call_s,
        "direct_tok_s": direct_tok / direct_s,
    }


def progress(key: str, value: dict[str, Any]) -> None:
    """Print a phase's raw numbers to stderr as it ends."""

    def fmt(v: Any) -> Any:
        return [round(x, 1) for x in v] if isinstance(v, list) else round(v, 2)

    print(key, {k: fmt(v) for k, v in value.items()}, file=sys.stderr, flush=True)


def report(r: dict[str, Any], args: argparse.Namespace) -> str:
    """Render the results as a Markdown table, each target marked met / not met."""
    med = statistics.median
    rows: list[tuple[str, str, str, Any]] = []
    for key, label in (
        ("llm", "default provider limits"),
        ("llm_no_limits", "no provider limits"),
        ("llm_shared", "default limits, shared task queue"),
    ):
        if key not in r:
            continue
        seq_c, seq_d = med(r[key]["seq_chorus"]), med(r[key]["seq_direct"])
        par_c, par_d = med(r[key]["par_chorus"]), med(r[key]["par_direct"])
        seq_n, par_n = med(r[key]["seq_naive"]), med(r[key]["par_naive"])
        per_step = (seq_c - seq_d) / len(SEQ_AGENTS)
        naive_step = (seq_n - seq_d) / len(SEQ_AGENTS)
        rows += [
            (
                f"(a) sequential 3 agents, {label}: Chorus / naive Temporal / direct ms",
                f"{seq_c:.0f} / {seq_n:.0f} / {seq_d:.0f}",
                "",
                "",
            ),
            (
                f"(a) overhead per step of the naive Temporal workflow, {label}, ms",
                f"{naive_step:.1f} (x{seq_n / seq_d:.3f})",
                "",
                "",
            ),
            (
                f"(a) overhead per agent step, {label}, ms",
                f"{per_step:.1f}",
                "≤ 10",
                per_step <= TARGETS["overhead_ms_per_step"],
            ),
            (
                f"(a) ratio sequential, {label}",
                f"x{seq_c / seq_d:.3f}",
                "≤ 1.05",
                seq_c / seq_d <= TARGETS["ratio_sequential"],
            ),
            (
                f"(b) parallel 10, {label}: Chorus / naive Temporal / direct ms",
                f"{par_c:.0f} / {par_n:.0f} / {par_d:.0f} (naive x{par_n / par_d:.3f})",
                "",
                "",
            ),
            (
                f"(b) ratio parallel-10, {label}",
                f"x{par_c / par_d:.3f}",
                "≤ 1.10",
                par_c / par_d <= TARGETS["ratio_parallel10"],
            ),
        ]
    labels = {
        "noop": "production worker",
        "noop_unsandboxed": "sandbox off (bench only)",
        "noop_limits": "default openai limits (500 rpm)",
        "noop_shared": "production worker, CHORUS_LLM_TASK_QUEUES=shared",
        "naive_noop": "naive Temporal workflow (bench/naive.py)",
    }
    for key, label in labels.items():
        if key not in r:
            continue
        n = r[key]
        target = key in ("noop", "noop_shared")
        rows.append(
            (
                f"(c) no-op 3-step p50 / p95 ms, {label}",
                f"{med(n['p50']):.1f} / {med(n['p95']):.1f}",
                "p50 ≤ 40" if target else "",
                med(n["p50"]) <= TARGETS["noop_p50_ms"] if target else "",
            )
        )
        rows.append(
            (
                f"(d) {n['concurrent']} no-op runs at once, runs/s, {label}",
                f"{n['runs_per_s']:.1f}",
                "≥ 50" if target else "",
                n["runs_per_s"] >= TARGETS["runs_per_s"] if target else "",
            )
        )
        rows.append(
            (
                f"(d) CPU ms per run: worker process / Temporal server / PostgreSQL, {label}",
                f"{n['cpu_ms_per_run_python']:.0f} / {n['cpu_ms_per_run_temporal']:.0f} / "
                f"{n['cpu_ms_per_run_postgres']:.0f}",
                "",
                "",
            )
        )
    if "model" in r:
        m = r["model"]
        rows.append(
            (
                "(e) local model tokens/s: Chorus run (start to result) / direct",
                f"{m['chorus_tok_s']:.1f} / {m['direct_tok_s']:.1f} "
                f"(x{m['chorus_tok_s'] / m['direct_tok_s']:.2f})",
                "",
                "",
            )
        )
        if "chorus_call_tok_s" in m:
            rows.append(
                (
                    "(e) local model tokens/s: the call inside the Chorus run / direct",
                    f"{m['chorus_call_tok_s']:.1f} / {m['direct_tok_s']:.1f} "
                    f"(x{m['chorus_call_tok_s'] / m['direct_tok_s']:.2f})",
                    "",
                    "",
                )
            )
    lines = ["| measure | measured | target | met |", "|---|---:|---:|:---:|"]
    for name, value, goal, met in rows:
        mark = "" if isinstance(met, str) else ("met" if met else "**not met**")
        lines.append(f"| {name} | {value} | {goal} | {mark} |")
    notes = []
    for key in ("llm", "llm_no_limits", "llm_shared"):
        if key in r:
            notes.append(
                f"{key} per repeat (ms): "
                + "; ".join(
                    f"{k} {', '.join(f'{v:.0f}' for v in vals)}"
                    for k, vals in r[key].items()
                    if not k.startswith("history")
                )
            )
            for kind in ("seq", "par"):
                t, w, d, x, g = r[key][f"history_{kind}"]
                notes.append(
                    f"{key}: one {kind} run from its history (server clock): {t:.0f} ms = "
                    f"workflow tasks {w:.0f} + activity dispatch {d:.0f} + activity execution "
                    f"{x:.0f} + server between tasks {g:.0f}"
                )
    for key in labels:
        if key in r:
            notes.append(
                f"{key} p50 per repeat (ms): {', '.join(f'{v:.1f}' for v in r[key]['p50'])}"
            )
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and runs")
    parser.add_argument("--repeats", type=int, default=None, help="repeats of (a)-(c)")
    parser.add_argument("--runs", type=int, default=None, help="no-op runs timed one by one")
    parser.add_argument("--concurrent", type=int, default=None, help="no-op runs at once")
    parser.add_argument("--with-model", action="store_true", help="(e): the bundled local model")
    parser.add_argument("--model-calls", type=int, default=3, help="(e): calls each way")
    parser.add_argument(
        "--phases",
        default="llm,llm_no_limits,llm_shared,naive_noop,noop,noop_shared,noop_unsandboxed,"
        "noop_limits",
        help="comma-separated subset of what to measure (for profiling)",
    )
    parser.add_argument(
        "--server-flag",
        action="append",
        default=[],
        help="extra dev server flag (repeatable), e.g. for trying a dynamic config value",
    )
    parser.add_argument("--write", action="store_true", help="append the table to RESULTS.md")
    args = parser.parse_args()
    args.phases = set(args.phases.split(","))
    args.repeats = args.repeats or (2 if args.quick else 5)
    args.runs = args.runs or (10 if args.quick else 30)
    args.concurrent = args.concurrent or (100 if args.quick else 500)

    os.environ["OPENAI_API_KEY"] = "bench-not-a-secret"
    results: dict[str, Any] = {}
    async with bench_stack(STUB_DELAY_S, args.server_flag) as (client, stub, database_url, tmp):
        for key, limits, queues in (
            ("llm", True, "per-provider"),
            ("llm_no_limits", False, "per-provider"),
            ("llm_shared", True, "shared"),
        ):
            if key in args.phases:
                results[key] = await measure_llm(
                    client, tmp, database_url, stub, args.repeats, limits, queues
                )
                progress(key, results[key])
        if "naive_noop" in args.phases:
            results["naive_noop"] = await measure_naive_noop(
                client, tmp, args.runs, args.repeats, args.concurrent
            )
            progress("naive_noop", results["naive_noop"])
        for key, sandbox, limits in (
            ("noop", True, False),
            ("noop_unsandboxed", False, False),
            ("noop_limits", True, True),
            ("noop_shared", True, False),
        ):
            if key in args.phases:
                concurrent = (
                    args.concurrent if key in ("noop", "noop_shared") else min(args.concurrent, 200)
                )
                results[key] = await measure_noop(
                    client,
                    tmp,
                    database_url,
                    args.runs,
                    args.repeats,
                    concurrent,
                    sandbox,
                    limits,
                    "shared" if key == "noop_shared" else "per-provider",
                )
                progress(key, results[key])
        if args.with_model:
            results["model"] = await measure_model(client, tmp, database_url, args.model_calls)
    table = report(results, args)
    title = (
        f"## Orchestration overhead (`python -m bench.overhead"
        f"{' --quick' if args.quick else ''}{' --with-model' if args.with_model else ''}`), "
        f"{datetime.now(UTC):%Y-%m-%d}"
    )
    print(title)
    print(machine())
    print(table)
    if args.write:
        with RESULTS.open("a") as f:
            f.write(f"\n{title}\n\nMachine: {machine()}.\n\n{table}")


if __name__ == "__main__":
    asyncio.run(main())
