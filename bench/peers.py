"""Peers: Chorus side by side with other durable agent runtimes on Temporal, in one run.

One process starts one stack: embedded PostgreSQL, one file-backed Temporal dev server with
``chorus dev up``'s flags, one loopback OpenAI-compatible stub (``tests/stub_llm.py``) whose
replies come after 200 ms (the LLM phases) or at once (the no-op phases; its
``default_delay_s`` is switched at run time), and a worker per contestant, each on its own task
queue with 200 concurrent activities and workflow tasks:

- ``direct``: ``AsyncOpenAI`` (``max_retries=0``), no Temporal: 3 calls one after the other
  (each input the previous output), 10 with ``asyncio.gather``;
- ``naive``: ``bench/naive.py``, a plain workflow running one activity per chat completion;
- ``openai-agents``: the OpenAI Agents SDK on Temporal (``temporalio.contrib.openai_agents.
  OpenAIAgentsPlugin``, each model turn an activity, its Chat Completions model on the stub,
  tracing off): a workflow running 3 agents with ``Runner.run`` one after the other (each
  input the previous output), or 10 with ``asyncio.gather``;
- ``pydantic-ai``: ``pydantic_ai.Agent`` with an ``OpenAIChatModel`` on the stub, wrapped in
  ``TemporalAgent`` (registered with ``AgentPlugin``, client with ``PydanticAIPlugin``): a
  workflow awaiting ``TemporalAgent.run`` 3 times in sequence, or 10 with ``gather``;
- ``chorus (limits off)``: the production worker (``default_activities``, real
  ``chorus.call_llm``; nobody watches the runs, so no token streaming) with
  ``provider_limits`` off,
  ``run_sequential`` / ``run_parallel``;
- ``chorus (default limits)``: the same with the default OpenAI limits (16 slots, 500
  calls/min, a burst of the minute's worth).

Every agent is "You are <name>. Answer briefly." on the same model name, so the stub answers
alike. Rounds are interleaved: each round runs every (contestant, measure) pair once in a
shuffled order, after a warm-up of 2 runs per contestant and measure. Measures:

a. seq-3 @200 ms: the wall time of one 3-step sequential run; overhead per step =
   ``(T - T_direct same round) / 3`` ms, median (p90) over rounds;
b. par-10 @200 ms: ``T / T_direct gather same round``, median (p90);
c. no-op seq-3 (stub at 0 ms): ``--runs`` runs one at a time per round, p50 (p90) of all;
d. throughput, once per contestant at the end: ``--concurrent`` no-op seq-3 runs started at
   once, runs/s, and CPU ms per run of this process (all workers and the stub live in it; one
   contestant is active at a time), the Temporal server and PostgreSQL (summed per process,
   see ``cpu_by_process``). Chorus with default limits is skipped where the calls beyond its
   burst would take over 40 s at 500 calls/min (it is rpm-bound).

Also the history events of one seq-3 run per contestant (the top-level workflow only) and its
server-clock breakdown. The Markdown table is printed, then a JSON blob of the raw numbers;
``--write`` appends the section to ``bench/RESULTS.md``.

    python -m bench.peers [--rounds N] [--quick] [--only name,name] [--concurrent 200,500]
        [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import random
import statistics
import sys
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import Worker

from bench._support import bench_stack, machine, plain_client, stock_sandbox
from bench.naive import NaiveActivities, NaiveWorkflow
from bench.overhead import (
    MODEL,
    NO_LIMITS,
    OPTIONS,
    PAR_AGENTS,
    SEQ_AGENTS,
    _settings,
    chorus_worker,
    history_breakdown,
    pct,
)
from tests.stub_llm import StubLLM

PACKAGES = ("openai", "openai-agents", "temporalio-openai-agents", "pydantic-ai-slim")
"""Versions printed with the machine line."""

LLM_DELAY_S = 0.2
RESULTS = Path(__file__).with_name("RESULTS.md")
RUN_TIMEOUT_S = 120.0
"""Longest wait for one measure's run (throughput: three times that)."""
EXECUTION_TIMEOUT = timedelta(minutes=10)
"""The peers' workflows' execution timeout (hundreds of runs may queue at once)."""
CONTESTANTS = (
    "direct",
    "naive",
    "openai-agents",
    "pydantic-ai",
    "chorus (limits off)",
    "chorus (default limits)",
)
SLUGS = {
    "direct": "direct",
    "naive": "naive",
    "openai-agents": "openai-agents",
    "pydantic-ai": "pydantic-ai",
    "chorus-off": "chorus (limits off)",
    "chorus-default": "chorus (default limits)",
    "chorus (limits off)": "chorus (limits off)",
    "chorus (default limits)": "chorus (default limits)",
}
"""``--only`` names (short or full) -> contestant."""

SEQ_TASK = "Summarize the report"
PAR_TASK = "Review the report"
NOOP_TASK = "noop"
RATE_BOUND_S = 40.0
"""Chorus with default limits skips a throughput run whose calls alone would take longer."""


def instructions(name: str) -> str:
    """The system prompt of agent ``name``, as ``bench.overhead`` writes Chorus's catalog."""
    return f"You are {name}. Answer briefly."


def body(name: str, prompt: str) -> dict[str, Any]:
    """The chat completion request of agent ``name`` for ``prompt`` (direct and naive)."""
    return {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": instructions(name)},
            {"role": "user", "content": prompt},
        ],
    }


# --- the OpenAI Agents SDK on Temporal --------------------------------------------------------


@workflow.defn(name="BenchPeersAgentsSDK")
class AgentsSDKWorkflow:
    """Agents run with the OpenAI Agents SDK's ``Runner.run``, each model turn an activity."""

    @workflow.run
    async def run(self, task: str, names: list[str], parallel: bool) -> list[str]:
        """Run the agents ``names``: all on ``task`` at once, or chained; their outputs."""
        from agents import Agent, Runner

        def agent(name: str) -> Agent[None]:
            return Agent(name=name, instructions=instructions(name), model=MODEL)

        if parallel:
            results = await asyncio.gather(*(Runner.run(agent(n), task) for n in names))
            return [str(r.final_output) for r in results]
        outputs: list[str] = []
        text = task
        for name in names:
            text = str((await Runner.run(agent(name), text)).final_output)
            outputs.append(text)
        return outputs


# --- Pydantic AI on Temporal ------------------------------------------------------------------

PYDANTIC_AGENTS: dict[str, Any] = {}
"""Agent name -> ``TemporalAgent``, built by ``pydantic_agents`` once the stub's URL is known
(this module is passed through the sandbox, so workflows see the host's objects)."""


def pydantic_agents(base_url: str) -> tuple[list[Any], Any]:
    """Build one ``TemporalAgent`` per agent name on the stub; return them and the client."""
    from openai import AsyncOpenAI
    from pydantic_ai import Agent
    from pydantic_ai.durable_exec.temporal import TemporalAgent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    model_client = AsyncOpenAI(base_url=base_url, api_key="bench-not-a-secret", max_retries=0)
    model = OpenAIChatModel(MODEL, provider=OpenAIProvider(openai_client=model_client))
    built = []
    for name in SEQ_AGENTS + PAR_AGENTS:
        agent = Agent(model, name=name, instructions=instructions(name))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecated for the TemporalDurability capability
            temporal_agent = TemporalAgent(agent)
        PYDANTIC_AGENTS[name] = temporal_agent
        built.append(temporal_agent)
    return built, model_client


@workflow.defn(name="BenchPeersPydanticAI")
class PydanticAIWorkflow:
    """Agents run with Pydantic AI's ``TemporalAgent.run``, each model request an activity."""

    @workflow.run
    async def run(self, task: str, names: list[str], parallel: bool) -> list[str]:
        """Run the agents ``names``: all on ``task`` at once, or chained; their outputs."""
        if parallel:
            results = await asyncio.gather(*(PYDANTIC_AGENTS[n].run(task) for n in names))
            return [str(r.output) for r in results]
        outputs: list[str] = []
        text = task
        for name in names:
            text = str((await PYDANTIC_AGENTS[name].run(text)).output)
            outputs.append(text)
        return outputs


# --- contestants ------------------------------------------------------------------------------


@dataclasses.dataclass
class Contestant:
    """One system under test: ``seq``/``par`` run once; ``start_seq`` returns a workflow id."""

    name: str
    seq: Callable[[str], Awaitable[Any]]
    par: Callable[[str], Awaitable[Any]]
    client: Client | None = None
    start_seq: Callable[[str], Awaitable[str]] | None = None
    pause_s: float = 0.0
    """Idle before each 200 ms measure (Chorus's default limits: let the rate bucket fill)."""
    rpm: float = 0.0
    """Calls per minute the contestant is held to (0: none)."""
    burst: int = 0
    """Calls it may start at once before the rate paces them."""


def _workflow_starter(
    client: Client, queue: str, run: Callable[..., Any]
) -> tuple[Callable[[str], Awaitable[Any]], Callable[[str], Awaitable[Any]], Any]:
    """``seq(task)``, ``par(task)`` and ``start_seq(task)`` for a ``run(task, names, parallel)``
    workflow on ``queue``."""

    async def start(task: str, names: list[str], parallel: bool) -> str:
        handle = await client.start_workflow(
            run,
            args=[task, names, parallel],
            id=f"bench-peers-{uuid.uuid4().hex}",
            task_queue=queue,
            execution_timeout=EXECUTION_TIMEOUT,
        )
        return handle.id

    async def execute(task: str, names: list[str], parallel: bool) -> Any:
        return await client.get_workflow_handle(await start(task, names, parallel)).result()

    async def seq(task: str) -> Any:
        return await execute(task, SEQ_AGENTS, False)

    async def par(task: str) -> Any:
        return await execute(task, PAR_AGENTS, True)

    async def start_seq(task: str) -> str:
        return await start(task, SEQ_AGENTS, False)

    return seq, par, start_seq


@contextlib.asynccontextmanager
async def direct_contestant() -> AsyncIterator[Contestant]:
    """Direct ``AsyncOpenAI`` calls (``OPENAI_BASE_URL``: the stub), no Temporal."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(max_retries=0)

    async def call(name: str, prompt: str) -> str:
        reply = await client.chat.completions.create(**body(name, prompt))
        return reply.choices[0].message.content or ""

    async def seq(task: str) -> list[str]:
        outputs: list[str] = []
        text = task
        for name in SEQ_AGENTS:
            text = await call(name, text)
            outputs.append(text)
        return outputs

    async def par(task: str) -> list[str]:
        return list(await asyncio.gather(*(call(n, task) for n in PAR_AGENTS)))

    try:
        yield Contestant("direct", seq, par)
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def naive_contestant(client: Client) -> AsyncIterator[Contestant]:
    """``bench/naive.py``: one plain activity per chat completion (fixed request bodies)."""
    acts = NaiveActivities(noop=False)
    queue = f"bench-peers-naive-{uuid.uuid4().hex[:6]}"
    client = await plain_client(client)  # temporalio's own sandbox, as the peers have
    worker = Worker(
        client,
        task_queue=queue,
        workflows=[NaiveWorkflow],
        workflow_runner=stock_sandbox(),
        activities=[acts.call],
        max_concurrent_activities=OPTIONS.max_concurrent_activities,
        max_concurrent_workflow_tasks=OPTIONS.max_concurrent_workflow_tasks,
    )

    async def start(task: str, parallel: bool) -> str:
        names = PAR_AGENTS if parallel else SEQ_AGENTS
        # the bodies are fixed up front: steps 2 and 3 get a stand-in for the previous output
        bodies = [
            body(n, task if parallel or i == 0 else "stub answer") for i, n in enumerate(names)
        ]
        handle = await client.start_workflow(
            NaiveWorkflow.run,
            args=[bodies, parallel],
            id=f"bench-peers-naive-{uuid.uuid4().hex}",
            task_queue=queue,
            execution_timeout=EXECUTION_TIMEOUT,
        )
        return handle.id

    async def seq(task: str) -> Any:
        return await client.get_workflow_handle(await start(task, False)).result()

    async def par(task: str) -> Any:
        return await client.get_workflow_handle(await start(task, True)).result()

    async def start_seq(task: str) -> str:
        return await start(task, False)

    try:
        async with worker:
            yield Contestant("naive", seq, par, client, start_seq)
    finally:
        await acts.close()


@contextlib.asynccontextmanager
async def agents_sdk_contestant(target: str, base_url: str) -> AsyncIterator[Contestant]:
    """The OpenAI Agents SDK on Temporal, its Chat Completions model on the stub."""
    from agents.models.openai_provider import OpenAIProvider
    from openai import AsyncOpenAI
    from temporalio.contrib.openai_agents import ModelActivityParameters, OpenAIAgentsPlugin

    model_client = AsyncOpenAI(base_url=base_url, api_key="bench-not-a-secret", max_retries=0)
    plugin = OpenAIAgentsPlugin(
        model_params=ModelActivityParameters(start_to_close_timeout=timedelta(seconds=60)),
        model_provider=OpenAIProvider(openai_client=model_client, use_responses=False),
    )
    client = await Client.connect(target, plugins=[plugin])
    queue = f"bench-peers-agents-{uuid.uuid4().hex[:6]}"
    worker = Worker(
        client,
        task_queue=queue,
        workflows=[AgentsSDKWorkflow],
        workflow_runner=stock_sandbox(),
        max_concurrent_activities=OPTIONS.max_concurrent_activities,
        max_concurrent_workflow_tasks=OPTIONS.max_concurrent_workflow_tasks,
    )
    seq, par, start_seq = _workflow_starter(client, queue, AgentsSDKWorkflow.run)
    try:
        async with worker:
            yield Contestant("openai-agents", seq, par, client, start_seq)
    finally:
        await model_client.close()


@contextlib.asynccontextmanager
async def pydantic_ai_contestant(target: str, base_url: str) -> AsyncIterator[Contestant]:
    """Pydantic AI's ``TemporalAgent`` on Temporal, an ``OpenAIChatModel`` on the stub."""
    from pydantic_ai.durable_exec.temporal import AgentPlugin, PydanticAIPlugin

    agents, model_client = pydantic_agents(base_url)
    client = await Client.connect(target, plugins=[PydanticAIPlugin()])
    queue = f"bench-peers-pydantic-{uuid.uuid4().hex[:6]}"
    worker = Worker(
        client,
        task_queue=queue,
        workflows=[PydanticAIWorkflow],
        workflow_runner=stock_sandbox(),
        plugins=[AgentPlugin(a) for a in agents],
        max_concurrent_activities=OPTIONS.max_concurrent_activities,
        max_concurrent_workflow_tasks=OPTIONS.max_concurrent_workflow_tasks,
    )
    seq, par, start_seq = _workflow_starter(client, queue, PydanticAIWorkflow.run)
    try:
        async with worker:
            yield Contestant("pydantic-ai", seq, par, client, start_seq)
    finally:
        await model_client.close()


@contextlib.asynccontextmanager
async def chorus_contestant(
    client: Client, tmp: Path, database_url: str, limits: bool
) -> AsyncIterator[Contestant]:
    """The production Chorus worker, as ``bench.overhead.measure_llm`` builds it."""
    from activities import ProviderClients
    from worker import default_activities

    extra: dict[str, Any] = {}
    if not limits:
        extra["provider_limits"] = NO_LIMITS
    settings = _settings(tmp, database_url, f"openai:{MODEL}", **extra)
    clients = ProviderClients.from_settings(settings)
    openai_limit = settings.provider_limits["openai"]
    rpm = float(openai_limit.rpm) if limits else 0.0
    burst = openai_limit.effective_burst if limits else 0
    try:
        async with chorus_worker(
            client, settings, lambda pool: default_activities(settings, pool, clients), True
        ) as chorus:

            async def seq(task: str) -> Any:
                return await chorus.run_sequential(task, SEQ_AGENTS)

            async def par(task: str) -> Any:
                return await chorus.run_parallel(task, PAR_AGENTS, aggregator=None)

            async def start_seq(task: str) -> str:
                return (await chorus.start_sequential(task, SEQ_AGENTS)).workflow_id

            name = "chorus (default limits)" if limits else "chorus (limits off)"
            yield Contestant(name, seq, par, client, start_seq, 0.0, rpm, burst)
    finally:
        await clients.close()


# --- measuring --------------------------------------------------------------------------------


async def _timed(coro: Awaitable[Any], timeout_s: float = RUN_TIMEOUT_S) -> float:
    start = time.perf_counter()
    await asyncio.wait_for(coro, timeout_s)
    return (time.perf_counter() - start) * 1000


def _empty() -> dict[str, Any]:
    return {"seq": [], "par": [], "noop": [], "noop_p50": [], "throughput": {}}


def _check_calls(c: Contestant, measure: str, stub: StubLLM, since: int, due: int) -> None:
    made = len(stub.requests) - since
    if made != due or any(r.status != 200 for r in stub.requests[since:]):
        raise RuntimeError(f"{c.name} {measure}: {made} model calls, {due} due (or not 200)")


async def one_measure(
    c: Contestant, measure: str, stub: StubLLM, runs: int, out: dict[str, Any] | None
) -> None:
    """Run ``measure`` (seq, par or noop) of contestant ``c`` once; keep it in ``out``.

    Raises:
        RuntimeError: The stub did not see one model call per agent step.
    """
    since = len(stub.requests)
    if measure in ("seq", "par"):
        stub.default_delay_s = LLM_DELAY_S
        if c.pause_s:
            await asyncio.sleep(c.pause_s)
        run = c.seq if measure == "seq" else c.par
        ms = await _timed(run(SEQ_TASK if measure == "seq" else PAR_TASK))
        _check_calls(c, measure, stub, since, len(SEQ_AGENTS if measure == "seq" else PAR_AGENTS))
        if out is not None:
            out[measure].append(ms)
        return
    stub.default_delay_s = 0.0
    lat = [await _timed(c.seq(NOOP_TASK)) for _ in range(runs)]
    _check_calls(c, measure, stub, since, runs * len(SEQ_AGENTS))
    if out is not None:
        out["noop"].extend(lat)
        out["noop_p50"].append(statistics.median(lat))


def cpu_by_process(tmp: Path) -> dict[tuple[str, int], float]:
    """CPU seconds so far of each process, keyed ``(python | temporal | postgres, pid)``.

    The processes of ``bench.overhead.cpu_seconds``: this one, and those whose command line
    names ``tmp`` (the Temporal dev server, PostgreSQL) with their children. Per process, so
    a delta skips the PostgreSQL backends that exit in between (their CPU would drop out of a
    sum over the processes alive: ``cpu_seconds`` deltas can turn negative).
    """
    import psutil  # type: ignore[import-untyped]

    out = {("python", os.getpid()): sum(psutil.Process().cpu_times()[:2])}
    for proc in psutil.process_iter(["cmdline", "name"]):
        try:
            if not any(str(tmp) in arg for arg in proc.info["cmdline"] or ()):
                continue
            kind = "temporal" if "temporal" in (proc.info["name"] or "") else "postgres"
            for p in [proc, *proc.children(recursive=True)]:
                out[(kind, p.pid)] = sum(p.cpu_times()[:2])
        except psutil.Error:
            continue
    return out


async def throughput(c: Contestant, stub: StubLLM, tmp: Path, n: int) -> dict[str, float] | None:
    """(d): ``n`` no-op seq-3 runs of ``c`` at once: runs/s and CPU ms per run by process."""
    stub.default_delay_s = 0.0
    if c.rpm and (n * len(SEQ_AGENTS) - c.burst) / (c.rpm / 60) > RATE_BOUND_S:
        return None
    await asyncio.sleep(1.0)  # let the previous contestant's stragglers settle
    if c.pause_s:
        await asyncio.sleep(c.pause_s)
    before = cpu_by_process(tmp)
    start = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(c.seq(NOOP_TASK) for _ in range(n))), RUN_TIMEOUT_S * 3)
    elapsed = time.perf_counter() - start
    after = cpu_by_process(tmp)
    cpu = {f"cpu_ms_{k}": 0.0 for k in ("python", "temporal", "postgres")}
    for (kind, pid), seconds in after.items():
        cpu[f"cpu_ms_{kind}"] += (seconds - before.get((kind, pid), 0.0)) * 1000 / n
    return {"runs_per_s": n / elapsed, **cpu}


async def history(c: Contestant, stub: StubLLM) -> dict[str, Any] | None:
    """The event count and server-clock breakdown of one no-op seq-3 run of ``c``."""
    if c.client is None or c.start_seq is None:
        return None
    stub.default_delay_s = 0.0
    workflow_id = await c.start_seq(NOOP_TASK)
    breakdown = await history_breakdown(c.client, workflow_id)
    handle = c.client.get_workflow_handle(workflow_id)
    events = [e async for e in handle.fetch_history_events()]
    return {"events": len(events), "breakdown_ms": breakdown}


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Start the stack and the contestants; run the rounds, then throughput and histories."""
    rng = random.Random(args.seed)
    out: dict[str, Any] = {name: _empty() for name in args.only}
    async with bench_stack(LLM_DELAY_S) as (client, stub, database_url, tmp):
        async with contextlib.AsyncExitStack() as stack:
            target = client.service_client.config.target_host
            makers: dict[str, Callable[[], Any]] = {
                "direct": direct_contestant,
                "naive": lambda: naive_contestant(client),
                "openai-agents": lambda: agents_sdk_contestant(target, stub.base_url),
                "pydantic-ai": lambda: pydantic_ai_contestant(target, stub.base_url),
                "chorus (limits off)": lambda: chorus_contestant(client, tmp, database_url, False),
                "chorus (default limits)": lambda: chorus_contestant(
                    client, tmp, database_url, True
                ),
            }
            contestants = [await stack.enter_async_context(makers[n]()) for n in args.only]
            pairs = [(c, m) for c in contestants for m in ("seq", "par", "noop")]

            async def guarded(c: Contestant, step: Awaitable[Any]) -> Any:
                # a contestant that fails is dropped (and its error reported), not the bench
                try:
                    return await step
                except Exception as exc:
                    out[c.name]["failed"] = f"{type(exc).__name__}: {exc}"[:300]
                    print(f"{c.name} dropped: {out[c.name]['failed']}", file=sys.stderr)
                    return None

            def alive(c: Contestant) -> bool:
                return "failed" not in out[c.name]

            for c, m in pairs:  # warm-up: 2 runs per contestant and measure
                for _ in range(2):
                    if alive(c):
                        await guarded(c, one_measure(c, m, stub, 1, None))
            print("warm-up done", file=sys.stderr, flush=True)
            for r in range(args.rounds):
                rng.shuffle(pairs)
                for c, m in pairs:
                    if alive(c):
                        await guarded(c, one_measure(c, m, stub, args.runs, out[c.name]))
                print(
                    f"round {r + 1}/{args.rounds}: "
                    + "; ".join(
                        f"{c.name} seq {out[c.name]['seq'][-1]:.0f} "
                        f"par {out[c.name]['par'][-1]:.0f} "
                        f"noop p50 {out[c.name]['noop_p50'][-1]:.1f}"
                        for c in contestants
                        if alive(c)
                    ),
                    file=sys.stderr,
                    flush=True,
                )
            for c in contestants:
                if alive(c):
                    out[c.name]["history"] = await guarded(c, history(c, stub))
            order = list(contestants)
            rng.shuffle(order)
            for c in order:
                for n in args.concurrent:
                    if not alive(c):
                        break
                    res = await guarded(c, throughput(c, stub, tmp, n))
                    if not alive(c):
                        break
                    out[c.name]["throughput"][str(n)] = res
                    shown = "skipped (rpm-bound)" if res is None else f"{res['runs_per_s']:.1f}"
                    print(f"{c.name}: {n} at once: {shown} runs/s", file=sys.stderr, flush=True)
    return out


# --- reporting --------------------------------------------------------------------------------


def _cell(values: list[float], digits: int = 1, prefix: str = "") -> str:
    if not values:
        return "—"
    return f"{prefix}{statistics.median(values):.{digits}f} ({prefix}{pct(values, 0.9):.{digits}f})"


def derived(out: dict[str, Any]) -> dict[str, dict[str, list[float]]]:
    """Per contestant, per round: overhead ms per step (a) and par-10 ratio (b) vs direct."""
    if "direct" not in out:
        return {}
    d = out["direct"]
    res: dict[str, dict[str, list[float]]] = {}
    for name, r in out.items():
        seq = zip(r["seq"], d["seq"], strict=False)  # a dropped contestant: its rounds so far
        par = zip(r["par"], d["par"], strict=False)
        res[name] = {
            "per_step": [(t - td) / len(SEQ_AGENTS) for t, td in seq],
            "ratio": [t / td for t, td in par],
        }
    return res


def report(out: dict[str, Any], args: argparse.Namespace) -> str:
    """The Markdown table (median (p90)) and notes."""
    der = derived(out)
    ns = list(args.concurrent)
    head = (
        "| contestant | overhead/step seq-3 @200ms, ms p50 (p90) | par-10 ratio p50 (p90) "
        "| no-op seq-3 ms p50 (p90) | "
        + " | ".join(f"runs/s @{n}" for n in ns)
        + f" | CPU ms/run worker / server / PG @{ns[-1]} | history events seq-3 |"
    )
    lines = [head, "|---|---:|---:|---:|" + "---:|" * len(ns) + "---:|---:|"]
    for name, r in out.items():
        d = der.get(name, {"per_step": [], "ratio": []})
        noop = r["noop"]
        noop_cell = f"{statistics.median(noop):.1f} ({pct(noop, 0.9):.1f})" if noop else "—"
        tput = []
        for n in ns:
            t = r["throughput"].get(str(n))
            if str(n) not in r["throughput"]:
                tput.append("—")
            else:
                tput.append("rpm-bound" if t is None else f"{t['runs_per_s']:.1f}")
        last = r["throughput"].get(str(ns[-1]))
        cpu = (
            "—"
            if last is None
            else f"{last['cpu_ms_python']:.0f} / {last['cpu_ms_temporal']:.0f} / "
            f"{last['cpu_ms_postgres']:.0f}"
        )
        hist = r.get("history")
        step, ratio = _cell(d["per_step"]), _cell(d["ratio"], 3, "x")
        if name == "direct":
            step = ratio = "(reference)"
        lines.append(
            f"| {name} | {step} | {ratio} | {noop_cell} | "
            + " | ".join(tput)
            + f" | {cpu} | {hist['events'] if hist else '—'} |"
        )
    notes = [
        f"{args.rounds} interleaved rounds (shuffled order, seed {args.seed}) after 2 warm-up "
        f"runs per contestant and measure; stub reply after {LLM_DELAY_S * 1000:.0f} ms for "
        f"(a)/(b), at once for no-op; {args.runs} no-op runs per round; median (p90), "
        "(a)/(b) computed per round against that round's direct run.",
        "Wall time p50 (p90) ms, seq-3 @200ms / par-10 @200ms: "
        + "; ".join(f"{n} {_cell(r['seq'], 0)} / {_cell(r['par'], 0)}" for n, r in out.items()),
        "CPU ms per run: this Python process (every worker, the starters and the stub's "
        "threads; one contestant active at a time) / Temporal dev server / PostgreSQL.",
        "openai-agents: `OpenAIAgentsPlugin`, Chat Completions model on the stub, tracing off. "
        "pydantic-ai: `TemporalAgent` (deprecated in pydantic-ai 2.x for the "
        "`TemporalDurability` capability; same activities) + `AgentPlugin` + "
        "`PydanticAIPlugin`. Both: default sandbox with bench/ passed through, no records.",
        "naive: plain workflow, one activity per call, request bodies fixed up front. "
        "Chorus: production worker (PostgreSQL records, budgets, limits, redaction, ...) "
        "with its defaults (LLM calls on the run's task queue; nobody watches the runs, so "
        "plain calls, no token streaming, as the others), except "
        "CHORUS_CLOSE_RUN_IN_LAST_CALL=true (off by default only for rolling deployments "
        "from older workers: the run's last call closes its row).",
        "chorus (default limits): 500 calls/min with a burst of 500, 16 slots; a throughput "
        "run whose calls beyond the burst would take more than "
        f"{RATE_BOUND_S:.0f} s at 500/min is not run (rpm-bound).",
    ]
    for name, r in out.items():
        if "failed" in r:
            notes.append(f"**{name} failed** and was dropped: {r['failed']}")
        hist = r.get("history")
        if hist:
            t, w, dsp, x, g = hist["breakdown_ms"]
            notes.append(
                f"{name}: one no-op seq-3 run: {hist['events']} history events (top-level "
                f"workflow); {t:.0f} ms = workflow tasks {w:.0f} + activity dispatch {dsp:.0f} "
                f"+ activity execution {x:.0f} + server between tasks {g:.0f} (server clock)"
            )
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


async def main() -> None:
    """Parse the flags, measure, print the table and the raw numbers, maybe write them."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None, help="measured rounds (10)")
    parser.add_argument(
        "--quick", action="store_true", help="3 rounds, 10 no-op runs, throughput 100"
    )
    parser.add_argument("--runs", type=int, default=None, help="no-op runs per round (20)")
    parser.add_argument(
        "--only",
        default=None,
        help="comma-separated contestants (default: all six): direct, naive, openai-agents, "
        "pydantic-ai, chorus-off, chorus-default",
    )
    parser.add_argument("--concurrent", default=None, help="runs at once (200,500)")
    parser.add_argument("--seed", type=int, default=None, help="shuffle seed")
    parser.add_argument("--write", action="store_true", help="append the table to RESULTS.md")
    args = parser.parse_args()
    args.rounds = args.rounds or (3 if args.quick else 10)
    args.runs = args.runs or (10 if args.quick else 20)
    args.concurrent = [
        int(n) for n in (args.concurrent or ("100" if args.quick else "200,500")).split(",")
    ]
    args.seed = args.seed if args.seed is not None else random.randrange(10_000)
    wanted = [n.strip() for n in args.only.split(",")] if args.only else list(CONTESTANTS)
    unknown = [n for n in wanted if n not in SLUGS]
    if unknown:
        parser.error(f"--only: unknown {unknown}; choose from {sorted(SLUGS)}")
    args.only = [c for c in CONTESTANTS if c in {SLUGS[n] for n in wanted}]
    os.environ["OPENAI_API_KEY"] = "bench-not-a-secret"
    os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "1"  # no trace upload to api.openai.com

    results = await measure(args)
    table = report(results, args)
    flags = " --quick" if args.quick else f" --rounds {args.rounds}"
    title = f"## Peers (`python -m bench.peers{flags}`), {datetime.now(UTC):%Y-%m-%d}"
    print(title)
    print(machine(PACKAGES))
    print()
    print(table)
    print(json.dumps({"args": {k: v for k, v in vars(args).items()}, "results": results}))
    if args.write:
        with RESULTS.open("a") as f:
            f.write(f"\n{title}\n\nMachine: {machine(PACKAGES)}.\n\n{table}")


if __name__ == "__main__":
    # Run the imported module, not ``__main__``: its workflows then live in ``bench.peers``,
    # which the workers' sandboxes pass through (and Pydantic AI's workflow reads the agents
    # that module holds).
    from bench import peers

    asyncio.run(peers.main())
