"""Where the time of one Chorus run goes, next to the naive Temporal workflow, in one command.

    python -m bench.profile [--runs 20] [--delay-ms 0] [--limits default|off] [--cpu]
        [--cpu-at-once N] [--ablate storage]

One process starts its own stack (embedded PostgreSQL, a file-backed dev server with ``chorus
dev up``'s flags, the loopback OpenAI-compatible stub answering after ``--delay-ms``) and the
production worker (``worker.build_worker`` with ``default_activities``: the real
``chorus.call_llm`` against the stub). It runs ``--runs`` 3-step sequential runs one at a time,
alternating with the naive workflow of ``bench/naive.py`` calling the same stub, and prints:

1. **Timeline** (medians over the runs, ms): from the runs' histories (the server's clock,
   the same machine's clock as the client): client → started, each workflow task (scheduled →
   started = dispatch; started → completed = worker), each activity (dispatch, execution),
   the server's gaps between one event and the next task, and result → client; Chorus and
   naive side by side, with each run's events counted by type.
2. **Inside the activities** (medians per run, ms): each activity type's execution time, the
   provider call's own time (``LLMActivities._call_provider``), and every PostgreSQL statement
   the worker ran, by the activity it ran in (``-`` outside activities: the stream writer),
   with counts, so a new round trip on the hot path shows up by name. Then (2b) one LLM
   activity by phase (medians and p90 over every call): prompt, the guard's rate, budget and
   slot, the provider call, the slot's release, the record and settlement, the step's stream
   events, and what is left of the call.
3. **CPU** per run of the worker process, the dev server and PostgreSQL (psutil), for both;
   with ``--cpu`` also a cProfile of the worker over further Chorus runs, summed by package
   (temporalio, pydantic, asyncpg, openai/httpx, chorus code, asyncio/stdlib) and the top
   functions by own time.

``--ablate storage`` prices the LLM activity's PostgreSQL work by measuring Chorus without it
(bench-only patches; the output says so): the gap that is left in the activities is their
Python and the activity framework.

Everything is measured in one run on a noisy machine: compare the two columns, not the
numbers with another day's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import cProfile
import os
import pstats
import re
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle

from activities import ProviderClients
from activities.llm import LLMActivities
from bench._support import bench_stack, machine, timed_ms
from bench.naive import NaiveWorkflow
from bench.overhead import (
    MODEL,
    NO_LIMITS,
    SEQ_AGENTS,
    _settings,
    chorus_worker,
    cpu_seconds,
    naive_worker,
)
from tests.stub_llm import StubLLM
from worker import default_activities

_STATEMENTS: list[tuple[str, str, float]] = []
"""(where, statement label, ms) of every PostgreSQL statement since the last reset."""
_PROVIDER_MS: list[float] = []
_PHASES: dict[str, list[float]] = defaultdict(list)
"""LLM activity phase -> ms of each call, over the measured Chorus runs (section 2b)."""
_PHASE_ORDER = (
    "prompt (fit, PII)",
    "guard: rate, budget, slot",
    "provider call (_ask)",
    "guard: slot back",
    "record + settle",
    "step stream events",
)
_IN_STATEMENT: contextvars.ContextVar[bool] = contextvars.ContextVar("in_stmt", default=False)


def _label(sql: str) -> str:
    """A short name for a statement: the function it calls or its verb and table."""
    text = " ".join(sql.split())
    called = re.search(r"\b(chorus_\w+)\s*\(", text)
    if called:
        return called.group(1)
    verb = re.match(
        r"(?i)\s*(WITH|SELECT|INSERT INTO|UPDATE|DELETE FROM|NOTIFY|LISTEN)\s*(\w*)", text
    )
    if verb:
        kind = verb.group(1).upper()
        table = re.search(r"(?i)\b(?:FROM|INTO|UPDATE)\s+(\w+)", text)
        return f"{kind.split()[0]} {table.group(1) if table else verb.group(2)}".strip()
    return text[:40]


def _where() -> str:
    if not activity.in_activity():
        return "-"
    info = activity.info()
    return f"{info.activity_type}{' (local)' if info.is_local else ''}"


def _instrument() -> None:
    """Time every statement asyncpg runs and every provider call (bench-only patches)."""
    conn = asyncpg.connection.Connection
    for name in ("execute", "fetch", "fetchrow", "fetchval", "executemany"):
        original = getattr(conn, name)

        def timed(original: Callable[..., Awaitable[Any]] = original) -> Any:
            async def wrapper(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
                if _IN_STATEMENT.get():
                    return await original(self, query, *args, **kwargs)
                token = _IN_STATEMENT.set(True)
                start = time.perf_counter()
                try:
                    return await original(self, query, *args, **kwargs)
                finally:
                    _IN_STATEMENT.reset(token)
                    ms = (time.perf_counter() - start) * 1000
                    _STATEMENTS.append((_where(), _label(query), ms))

            return wrapper

        setattr(conn, name, timed())

    LLMActivities._call_provider = timed_ms(  # type: ignore[method-assign,assignment]
        LLMActivities._call_provider, _PROVIDER_MS.append
    )
    _instrument_phases()


def _ablate_storage() -> None:
    """Remove the LLM activity's PostgreSQL work (bench-only patches, ``--ablate storage``).

    The guard takes no rate, budget or slot, the call is not recorded or settled, and the
    step's stream events are not written: what is left of the activity's gap over naive is
    the activity's Python and framework. The bookkeeping local activities (``chorus.start_run``
    and ``chorus.finish_run``) still run.
    """
    from activities.call_record import CallRecorder
    from activities.llm_guard import CallTicket, ProviderCallGuard
    from chorus.streaming.publisher import StepStream

    @contextlib.asynccontextmanager
    async def hold(*args: Any, **kwargs: Any) -> Any:
        yield CallTicket(watched=False)

    async def record(*args: Any, **kwargs: Any) -> list[str]:
        return []

    async def write(*args: Any, **kwargs: Any) -> None:
        return None

    ProviderCallGuard.hold = hold  # type: ignore[method-assign]
    CallRecorder.record = record  # type: ignore[method-assign]
    StepStream._write = write  # type: ignore[method-assign]


def _instrument_phases() -> None:
    """Time the phases of each LLM activity (bench-only patches; section 2b)."""
    from activities.call_record import CallRecorder
    from activities.llm_guard import ProviderCallGuard
    from chorus.streaming.publisher import StepStream

    def timed(cls: Any, name: str, label: str) -> None:
        setattr(cls, name, timed_ms(getattr(cls, name), lambda ms: _PHASES[label].append(ms)))

    timed(LLMActivities, "_answer", "call (all but the stream's last write)")
    timed(LLMActivities, "_prompt", "prompt (fit, PII)")
    timed(LLMActivities, "_ask", "provider call (_ask)")
    timed(CallRecorder, "record", "record + settle")
    timed(StepStream, "completed", "step stream events")
    hold = ProviderCallGuard.hold

    @contextlib.asynccontextmanager
    async def timed_hold(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        async with hold(*args, **kwargs) as ticket:
            _PHASES["guard: rate, budget, slot"].append((time.perf_counter() - start) * 1000)
            yield ticket
            start = time.perf_counter()
        _PHASES["guard: slot back"].append((time.perf_counter() - start) * 1000)

    ProviderCallGuard.hold = timed_hold  # type: ignore[method-assign]


_E = EventType


async def timeline(handle: WorkflowHandle[Any, Any], sent: float, got: float) -> dict[str, Any]:
    """One run's phases in order (name → ms) and its events counted by type."""
    events = [e async for e in handle.fetch_history_events()]
    at = {e.event_id: e.event_time.ToNanoseconds() / 1e6 for e in events}
    phases: list[tuple[str, float]] = [("client → started", at[1] - sent * 1000)]
    last = at[1]
    wft = act = 0
    for e in events:
        t = e.event_type
        if t == _E.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            wft += 1
            scheduled = at[e.workflow_task_started_event_attributes.scheduled_event_id]
            phases.append((f"wft{wft} server → scheduled", scheduled - last))
            phases.append((f"wft{wft} dispatch", at[e.event_id] - scheduled))
            last = at[e.event_id]
        elif t == _E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            phases.append((f"wft{wft} worker", at[e.event_id] - last))
            last = at[e.event_id]
        elif t == _E.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            act += 1
            scheduled = at[e.activity_task_started_event_attributes.scheduled_event_id]
            phases.append((f"act{act} dispatch", at[e.event_id] - max(scheduled, last)))
            last = at[e.event_id]
        elif t == _E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            phases.append((f"act{act} execution", at[e.event_id] - last))
            last = at[e.event_id]
    phases.append(("closed → client", got * 1000 - at[events[-1].event_id]))
    counts = Counter(_E.Name(e.event_type).removeprefix("EVENT_TYPE_").lower() for e in events)
    return {"phases": phases, "events": counts, "total": (got - sent) * 1000}


def _median_phases(runs: list[dict[str, Any]]) -> dict[str, float]:
    by_name: dict[str, list[float]] = defaultdict(list)
    order: list[str] = []
    for run in runs:
        for name, ms in run["phases"]:
            if name not in by_name:
                order.append(name)
            by_name[name].append(ms)
    return {name: statistics.median(by_name[name]) for name in order}


IDLE = ("<method 'poll' of 'select.epoll' objects>",)
"""cProfile entries that are the event loop waiting, excluded from the CPU tables."""


def _by_package(profile: cProfile.Profile) -> tuple[Counter[str], list[tuple[float, str]]]:
    """Own CPU seconds summed by package, and every function's own seconds with its name."""
    packages: Counter[str] = Counter()
    functions: list[tuple[float, str]] = []
    raw: dict[Any, Any] = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    for (filename, line, func), (_cc, _nc, tt, _ct, _callers) in raw.items():
        if func in IDLE:
            continue  # the event loop waiting for I/O: not CPU
        path = filename.replace("\\", "/")
        match = re.search(r"site-packages/([^/]+)", path)
        if match:
            package = match.group(1).removesuffix(".py")
        elif "/work/" in path or "/tmp/" in path:
            package = "chorus (" + path.split("/")[-2] + ")"
        elif filename.startswith("<") or path.startswith("~"):
            package = "builtins/C"
        else:
            package = "stdlib:" + Path(path).stem
            if "asyncio" in path:
                package = "stdlib:asyncio"
        packages[package] += tt
        functions.append((tt, f"{package} {Path(path).name}:{line} {func}"))
    return packages, functions


def cpu_by_package(
    profile: cProfile.Profile, runs: int, naive: cProfile.Profile | None = None
) -> tuple[list[str], list[str], list[str]]:
    """Own CPU time per run summed by package (next to ``naive``'s, when given), the top
    functions by own time, and Chorus's functions by CPU time spent in them and what they
    call (a coroutine counts only while it runs, not while it awaits)."""
    stats = pstats.Stats(profile)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    packages, functions = _by_package(profile)
    theirs: Counter[str] = _by_package(naive)[0] if naive is not None else Counter()
    ours = sorted(
        (
            (ct, f"{Path(filename).parent.name}/{Path(filename).name}:{line} {func}")
            for (filename, line, func), (_cc, _nc, _tt, ct, _callers) in raw.items()
            if "/work/" in filename
            and "/bench/" not in filename
            and "site-packages" not in filename
        ),
        reverse=True,
    )
    functions_cum = [f"| {name} | {secs * 1000 / runs:.2f} |" for secs, name in ours[:30]]
    total = sum(packages.values())
    pkg_lines = [
        f"| {name} | {secs * 1000 / runs:.2f} | {100 * secs / total:.0f} % "
        f"| {theirs.get(name, 0.0) * 1000 / runs:.2f} |"
        for name, secs in packages.most_common(15)
    ]
    pkg_lines.append(
        f"| **all** | **{total * 1000 / runs:.2f}** | 100 % "
        f"| **{sum(theirs.values()) * 1000 / runs:.2f}** |"
    )
    fn_lines = [
        f"| {name} | {secs * 1000 / runs:.3f} |" for secs, name in sorted(functions)[::-1][:25]
    ]
    return pkg_lines, fn_lines, functions_cum


async def main() -> None:
    """Run the profile and print its three tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs of each, one at a time")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="the stub's answer delay")
    parser.add_argument("--limits", choices=("default", "off"), default="default")
    parser.add_argument("--cpu", action="store_true", help="also cProfile the worker")
    parser.add_argument(
        "--cpu-at-once",
        type=int,
        default=1,
        help="with --cpu: profile the runs started this many at a time (load, as in throughput)",
    )
    parser.add_argument(
        "--ablate",
        choices=("storage",),
        help="measure Chorus without a part, to price it (not Chorus as shipped): 'storage' "
        "removes the LLM activity's PostgreSQL work (guard, record and settle, stream writes)",
    )
    args = parser.parse_args()
    if args.ablate == "storage":
        _ablate_storage()
    _instrument()
    os.environ["OPENAI_API_KEY"] = "bench-not-a-secret"
    async with bench_stack(args.delay_ms / 1000) as (client, stub, database_url, tmp):
        await _profile(client, tmp, database_url, stub, args)


async def _profile(
    client: Client, tmp: Path, database_url: str, stub: StubLLM, args: argparse.Namespace
) -> None:
    extra: dict[str, Any] = {} if args.limits == "default" else {"provider_limits": NO_LIMITS}
    settings = _settings(tmp, database_url, f"openai:{MODEL}", **extra)
    clients = ProviderClients.from_settings(settings)
    chorus_runs: list[dict[str, Any]] = []
    naive_runs: list[dict[str, Any]] = []
    cpu: dict[str, dict[str, float]] = {"chorus": defaultdict(float), "naive": defaultdict(float)}
    statements: list[list[tuple[str, str, float]]] = []
    provider: list[list[float]] = []
    try:
        async with (
            chorus_worker(
                client, settings, lambda pool: default_activities(settings, pool, clients), True
            ) as chorus,
            naive_worker(client, noop=False) as naive,
        ):
            bodies: list[dict[str, Any]] = []
            for _ in range(3):  # warm up; keep Chorus's request bodies for the naive runs
                n = len(stub.requests)
                await chorus.run_sequential("Summarize the report", SEQ_AGENTS)
                bodies = [r.body for r in stub.requests[n:]]
                await naive(bodies, False)
            _PHASES.clear()
            for _ in range(args.runs):
                _STATEMENTS.clear()
                _PROVIDER_MS.clear()
                before = cpu_seconds(tmp)
                sent = time.time()
                handle = await chorus.start_sequential("Summarize the report", SEQ_AGENTS)
                await handle.result()
                got = time.time()
                await asyncio.sleep(0.1)  # the stream writer's last flush
                after = cpu_seconds(tmp)
                for k in after:
                    cpu["chorus"][k] += after[k] - before[k]
                statements.append(list(_STATEMENTS))
                provider.append(list(_PROVIDER_MS))
                raw = client.get_workflow_handle(handle.workflow_id)
                chorus_runs.append(await timeline(raw, sent, got))

                before = cpu_seconds(tmp)
                sent = time.time()
                wf_id = f"naive-profile-{time.monotonic_ns()}"
                naive_handle = await client.start_workflow(
                    NaiveWorkflow.run,
                    args=[bodies, False],
                    id=wf_id,
                    task_queue=naive.task_queue,  # type: ignore[attr-defined]
                )
                await naive_handle.result()
                got = time.time()
                await asyncio.sleep(0.1)
                after = cpu_seconds(tmp)
                for k in after:
                    cpu["naive"][k] += after[k] - before[k]
                naive_runs.append(await timeline(naive_handle, sent, got))
            profile_lines: tuple[list[str], list[str], list[str]] | None = None
            if args.cpu:
                at_once = max(1, args.cpu_at_once)

                async def chorus_run() -> None:
                    await chorus.run_sequential("Summarize the report", SEQ_AGENTS)

                async def naive_run() -> None:
                    await naive(bodies, False)

                profiled: dict[str, cProfile.Profile] = {}
                for name, run_one in (("chorus", chorus_run), ("naive", naive_run)):
                    profiler = cProfile.Profile()
                    profiler.enable()
                    for start in range(0, args.runs, at_once):
                        batch = min(at_once, args.runs - start)
                        await asyncio.gather(*(run_one() for _ in range(batch)))
                    profiler.disable()
                    profiled[name] = profiler
                profile_lines = cpu_by_package(profiled["chorus"], args.runs, profiled["naive"])
    finally:
        await clients.close()
    _print(args, chorus_runs, naive_runs, statements, provider, cpu, profile_lines)


def _print(
    args: argparse.Namespace,
    chorus_runs: list[dict[str, Any]],
    naive_runs: list[dict[str, Any]],
    statements: list[list[tuple[str, str, float]]],
    provider: list[list[float]],
    cpu: dict[str, dict[str, float]],
    profile_lines: tuple[list[str], list[str], list[str]] | None,
) -> None:
    runs = args.runs
    print(f"# Profile of a 3-step sequential run (stub {args.delay_ms:g} ms, limits {args.limits})")
    if args.ablate:
        print(f"ABLATION --ablate {args.ablate}: Chorus without a part, not as shipped")
    print(machine())
    print(f"\n## 1. Timeline, medians of {runs} runs each, ms (server clock = client clock)\n")
    c, n = _median_phases(chorus_runs), _median_phases(naive_runs)
    print("| phase | Chorus | naive |\n|---|---:|---:|")
    for name in dict.fromkeys([*c, *n]):
        cv = f"{c[name]:.1f}" if name in c else "–"
        nv = f"{n[name]:.1f}" if name in n else "–"
        print(f"| {name} | {cv} | {nv} |")
    ct = statistics.median(r["total"] for r in chorus_runs)
    nt = statistics.median(r["total"] for r in naive_runs)
    print(f"| **total (client)** | **{ct:.1f}** | **{nt:.1f}** |")
    shared = [name for name in c if name in n]
    tasks = [k for k in shared if re.fullmatch(r"wft\d+ worker", k)]
    first, last = tasks[0] if tasks else "", tasks[-1] if tasks else ""
    gaps = {
        "client start + result": sum(c[k] - n[k] for k in shared if "client" in k),
        "first workflow task": sum(c[k] - n[k] for k in tasks if k == first),
        "last workflow task": sum(c[k] - n[k] for k in tasks if k == last != first),
        "middle workflow tasks": sum(c[k] - n[k] for k in tasks if k not in (first, last)),
        "activities": sum(c[k] - n[k] for k in shared if k.endswith("execution")),
        "dispatch": sum(c[k] - n[k] for k in shared if "dispatch" in k or "server" in k),
    }
    print(
        f"\nChorus minus naive, summed over the phases' medians: {sum(gaps.values()):+.1f} ms ("
        + ", ".join(f"{k} {v:+.1f}" for k, v in gaps.items())
        + "); the totals' medians differ from such sums by noise."
    )
    print("\nEvents per run: Chorus " + _events(chorus_runs) + "; naive " + _events(naive_runs))

    print(f"\n## 2. Inside the activities, per run (medians of {runs} runs), ms\n")
    per_run_provider = [sum(p) for p in provider]
    print(
        f"Provider calls (`_call_provider`, 3 per run): {statistics.median(per_run_provider):.1f}"
        f" ms per run; per call p50 {statistics.median([x for p in provider for x in p]):.2f}"
    )
    totals: dict[tuple[str, str], list[float]] = defaultdict(list)
    counts: dict[tuple[str, str], list[int]] = defaultdict(list)
    keys = {(w, s) for run in statements for (w, s, _ms) in run}
    for run in statements:
        for key in keys:
            mine = [ms for (w, s, ms) in run if (w, s) == key]
            totals[key].append(sum(mine))
            counts[key].append(len(mine))
    print("\n| where | statement | count/run | ms/run (median) | ms/statement |")
    print("|---|---|---:|---:|---:|")
    for key in sorted(keys, key=lambda k: -statistics.median(totals[k])):
        cnt = statistics.median(counts[key])
        ms = statistics.median(totals[key])
        print(f"| {key[0]} | {key[1]} | {cnt:g} | {ms:.2f} | {ms / cnt if cnt else 0:.2f} |")
    all_pg = [sum(ms for (w, _s, ms) in run if w != "-") for run in statements]
    n_pg = statistics.median(len([1 for r in run if r[0] != "-"]) for run in statements)
    print(
        f"\nPostgreSQL inside activities: {statistics.median(all_pg):.1f} ms per run "
        f"(median of {runs}), {n_pg:g} statements"
    )

    if _PHASES:
        print(f"\n## 2b. One LLM activity by phase (wall ms, medians of {runs * 3} calls)\n")
        print("| phase | p50 | p90 |\n|---|---:|---:|")
        whole = "call (all but the stream's last write)"
        for label in (*_PHASE_ORDER, whole):
            values = sorted(_PHASES.get(label, []))
            if values:
                p90 = values[min(len(values) - 1, int(len(values) * 0.9))]
                print(f"| {label} | {statistics.median(values):.2f} | {p90:.2f} |")
        rest = statistics.median(_PHASES[whole]) - sum(
            statistics.median(_PHASES[k]) for k in _PHASE_ORDER[:-1] if _PHASES.get(k)
        )
        print(
            f"\nThe call's other work (admission, response cache, budget alerts, model copies): "
            f"{rest:.2f} ms. Outside these, the activity's server-measured time (section 1) "
            "also holds the Temporal activity framework (payload conversion, interceptors, the "
            "heartbeat task)."
        )

    print("\n## 3. CPU ms per run (psutil: this process = worker + client + stub)\n")
    print("| | worker process | dev server | PostgreSQL |\n|---|---:|---:|---:|")
    for name in ("chorus", "naive"):
        v = cpu[name]
        print(
            f"| {name} | {v['python'] * 1000 / runs:.1f} | {v['temporal'] * 1000 / runs:.1f} "
            f"| {v['postgres'] * 1000 / runs:.1f} |"
        )
    if profile_lines:
        pkgs, fns, ours = profile_lines
        print(
            f"\n### Worker CPU by package (cProfile own time, ms per run; {args.cpu_at_once}"
            " started at a time)\n"
        )
        print("| package | Chorus ms/run | share | naive ms/run |\n|---|---:|---:|---:|")
        print("\n".join(pkgs))
        print("\n### Top functions by own time (ms per run)\n")
        print("| function | ms/run |\n|---|---:|")
        print("\n".join(fns))
        print("\n### Chorus functions by CPU time including callees (ms per run)\n")
        print("| function | ms/run |\n|---|---:|")
        print("\n".join(ours))


def _events(runs: list[dict[str, Any]]) -> str:
    counts = runs[-1]["events"]
    total = sum(counts.values())
    detail = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if v)
    return f"{total} ({detail})"


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
