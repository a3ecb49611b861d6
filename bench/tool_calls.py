"""Tool calls: orchestration overhead per tool call, Chorus against direct asyncio (issue 14).

One process starts its own stack: embedded PostgreSQL, a file-backed Temporal dev server with
``chorus dev up``'s flags, a loopback OpenAI-compatible stub whose every reply comes after
``LLM_DELAY_S`` (50 ms), and the production worker (``worker.build_worker`` with
``default_activities(..., tools=REGISTRY)``: real ``chorus.call_llm``, ``chorus.resolve_tools``
and ``chorus.call_tool`` activities). Two tools: ``bench.echo`` returns its input,
``bench.io`` sleeps ``IO_DELAY_S`` (20 ms, like a network call) and then returns it.

Scenarios (one agent step each; the stub's replies are scripted):

- ``plain``: an agent without tools; the model answers at once (1 model turn);
- ``k0``: an agent with tools declared; the model answers at once (1 model turn);
- ``k4`` / ``k4_io``: the model asks for 1 tool per turn for 4 turns, then answers
  (5 model turns, 4 sequential tool calls);
- ``par8`` / ``par8_io``: one turn asks for 8 tools at once, then the model answers
  (2 model turns, 8 parallel tool calls).

Each is timed through Chorus (a whole ``run_sequential`` of that one agent), directly (one
asyncio process: ``AsyncOpenAI`` posting the very request bodies Chorus sent, in order, each
reply's tool calls awaited directly with ``asyncio.gather``), and, when
``temporalio-openai-agents`` is installed (the ``bench`` extra), with the OpenAI Agents SDK's
Temporal integration (``temporalio.contrib.openai_agents``: each model turn an activity, each
tool an ``activity_as_tool`` activity) against the same stub and dev server. Rounds are
interleaved (every scenario and system once per round, the systems' order rotating) and each
derived number is computed per round, then reported as median and p90:

- overhead per tool call = ``(T(k4) - T(k0) - (T_direct(k4) - T_direct(k0))) / 4``: what a
  tool call adds beyond the same work done directly. In a step each tool call also costs one
  more model turn (the model must read the result), so this is one ``chorus.call_tool``
  activity, one more ``chorus.call_llm`` activity and their workflow tasks;
- per-step fixed overhead = ``T(k0) - T_direct(k0)`` (the run's start and end, the step, the
  one model call, ``chorus.resolve_tools``); ``T(k0) - T(plain)`` prices declaring tools;
- parallel 8: ratio ``T(par8) / T_direct(par8)`` and the added ms of the tool round
  ``(T(par8) - T(k0)) - (T_direct(par8) - T_direct(k0))``;
- the bare activity round trip of ``chorus.call_tool`` (a bench workflow running 20 of them
  one after the other) against a no-op activity in the same workflow, and the activity's body
  alone (``ActivityEnvironment``: argument validation, the tool, the PostgreSQL record).

    python -m bench.tool_calls [--quick] [--rounds N] [--no-agents] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from bench._support import CHORUS_DEV_FLAGS, embedded_postgres, machine, temporal_dev_server
from bench.overhead import NO_LIMITS, chorus_worker, history_breakdown, pct
from chorus.config.settings import Settings
from chorus.contracts.tools import CallToolInput, ToolCall
from chorus.runtime.converter import chorus_data_converter
from chorus.runtime.plugin import SANDBOX_PASSTHROUGH
from chorus.tools import ToolRegistry
from starter.sdk import ChorusClient
from tests.stub_llm import Reply, StubLLM

AGENT_PACKAGES = ("openai", "openai-agents", "temporalio-openai-agents")
"""Versions printed with the machine line."""

LLM_DELAY_S = 0.05
IO_DELAY_S = 0.02
MODEL = "gpt-4o-mini"  # a priced model: runs have no budget, but prices must be known
K = 4
PARALLEL = 8
LOOP_CALLS = 20
RESULTS = Path(__file__).with_name("RESULTS.md")
RUN_TIMEOUT_S = 60.0

REGISTRY = ToolRegistry()
"""The benchmark's Python tools (served by the Chorus worker)."""


@REGISTRY.tool("bench.echo")
async def echo(text: str) -> str:
    """Return the text unchanged.

    Args:
        text: Any text.
    """
    return text


@REGISTRY.tool("bench.io")
async def io_echo(text: str) -> str:
    """Wait 20 ms, like a call to another service, then return the text.

    Args:
        text: Any text.
    """
    await asyncio.sleep(IO_DELAY_S)
    return text


DIRECT_TOOLS: dict[str, Callable[..., Awaitable[str]]] = {
    "bench__echo": echo,
    "bench__io": io_echo,
}
"""The tools by OpenAI wire name, for the direct baseline."""


@activity.defn(name="bench_echo")
async def bench_echo(text: str) -> str:
    """Return the text unchanged (the Agents SDK's tool, run as an activity).

    Args:
        text: Any text.
    """
    return text


@activity.defn(name="bench_io")
async def bench_io(text: str) -> str:
    """Wait 20 ms, then return the text (the Agents SDK's tool, run as an activity).

    Args:
        text: Any text.
    """
    await asyncio.sleep(IO_DELAY_S)
    return text


@activity.defn(name="bench.noop_activity")
async def noop_activity(arg: dict[str, Any]) -> dict[str, Any]:
    """Return the argument: the floor of an activity round trip with the same payload."""
    return arg


@workflow.defn(name="BenchActivityLoop")
class ActivityLoopWorkflow:
    """Run activity ``name`` with ``arg`` ``n`` times, one after the other."""

    @workflow.run
    async def run(self, name: str, arg: dict[str, Any], n: int) -> int:
        """Return ``n``."""
        for _ in range(n):
            await workflow.execute_activity(name, arg, start_to_close_timeout=timedelta(seconds=30))
        return n


@workflow.defn(name="BenchAgentsTools")
class AgentsToolsWorkflow:
    """One OpenAI Agents SDK agent run (``Runner.run``) on Temporal, with or without tools."""

    @workflow.run
    async def run(self, task: str, with_tools: bool) -> str:
        """Return the agent's final output."""
        from agents import Agent, Runner
        from temporalio.contrib.openai_agents import workflow as agents_workflow

        tools = (
            [
                agents_workflow.activity_as_tool(fn, start_to_close_timeout=timedelta(seconds=30))
                for fn in (bench_echo, bench_io)
            ]
            if with_tools
            else []
        )
        agent: Agent[None] = Agent(
            name="toolbench", instructions="You are toolbench.", model=MODEL, tools=tools
        )
        result = await Runner.run(agent, task, max_turns=K + 3)
        return str(result.final_output)


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One agent step: ``turns`` lists, per tool-asking model turn, the tool of each call."""

    key: str
    label: str
    with_tools: bool
    turns: tuple[tuple[str, ...], ...]

    @property
    def calls(self) -> int:
        return sum(len(t) for t in self.turns)

    def replies(self, wire: Callable[[str], str]) -> list[Reply]:
        """The stub's scripted replies, tools named by ``wire`` (each after ``LLM_DELAY_S``)."""
        out = [
            Reply(
                delay_s=LLM_DELAY_S,
                tool_calls=[(wire(t), {"text": f"turn {i} call {j}"}) for j, t in enumerate(turn)],
            )
            for i, turn in enumerate(self.turns)
        ]
        return [*out, Reply(delay_s=LLM_DELAY_S, text="done")]


SCENARIOS = [
    Scenario("plain", "no tools declared, 1 model turn", False, ()),
    Scenario("k0", "tools declared, 0 calls, 1 model turn", True, ()),
    Scenario("k4", f"{K} sequential echo calls, {K + 1} model turns", True, (("echo",),) * K),
    Scenario("k4_io", f"{K} sequential 20 ms calls, {K + 1} model turns", True, (("io",),) * K),
    Scenario("par8", f"{PARALLEL} parallel echo calls, 2 model turns", True, (("echo",) * 8,)),
    Scenario("par8_io", f"{PARALLEL} parallel 20 ms calls, 2 model turns", True, (("io",) * 8,)),
]
BY_KEY = {s.key: s for s in SCENARIOS}


def _settings(tmp: Path, database_url: str) -> Settings:
    catalog = tmp / f"agents-{uuid.uuid4().hex[:6]}.yaml"
    common = {"providers": [f"openai:{MODEL}"], "max_tokens": 64}
    agents = [
        {"name": "plain", "instructions": "You are plain.", **common},
        {
            "name": "toolbench",
            "instructions": "You are toolbench.",
            "tools": ["bench.echo", "bench.io"],
            "max_tool_calls": 16,
            **common,
        },
    ]
    catalog.write_text(yaml.safe_dump({"agents": agents}))
    return Settings(
        agents_file=catalog,
        database_url=database_url,
        task_queue=f"bench-tools-{uuid.uuid4().hex[:6]}",
        daily_budget_usd=None,
        run_budget_usd=None,
        provider_limits=NO_LIMITS,
    )


async def _timed(coro: Awaitable[Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = await asyncio.wait_for(coro, RUN_TIMEOUT_S)
    return (time.perf_counter() - start) * 1000, value


def _check_bodies(stub: StubLLM, since: int, scn: Scenario, who: str) -> list[dict[str, Any]]:
    """The request bodies of one step; checks the turns and that every result was sent back."""
    recorded = stub.requests[since:]
    bodies = [r.body for r in recorded]
    if len(bodies) != len(scn.turns) + 1 or any(r.status != 200 for r in recorded):
        raise RuntimeError(f"{who} {scn.key}: {len(bodies)} model calls, {len(scn.turns) + 1} due")
    sent = sum(1 for m in bodies[-1].get("messages", []) if m.get("role") == "tool")
    if sent != scn.calls:
        raise RuntimeError(f"{who} {scn.key}: {sent} tool results sent back, {scn.calls} due")
    if stub._scripts[MODEL]:
        raise RuntimeError(f"{who} {scn.key}: scripted replies left over")
    return bodies


async def run_chorus(chorus: ChorusClient, stub: StubLLM, scn: Scenario) -> tuple[float, Any]:
    """One Chorus run of ``scn``'s agent; returns (ms, the request bodies it sent)."""
    stub.script(MODEL, *scn.replies(lambda t: f"bench__{t}"))
    since = len(stub.requests)
    agent = "toolbench" if scn.with_tools else "plain"
    ms, result = await _timed(chorus.run_sequential(f"bench {scn.key}", [agent]))
    step = result.steps[0]
    if step.status != "succeeded" or len(step.tool_calls) != scn.calls:
        raise RuntimeError(f"chorus {scn.key}: {step.status}, {len(step.tool_calls)} calls")
    if any(c.is_error for c in step.tool_calls):
        raise RuntimeError(f"chorus {scn.key}: a tool call failed: {step.tool_calls}")
    return ms, _check_bodies(stub, since, scn, "chorus")


async def run_direct(
    direct: Any, stub: StubLLM, scn: Scenario, bodies: list[dict[str, Any]]
) -> float:
    """The same step in one asyncio process: Chorus's request bodies, the tools awaited."""
    from openai.types.chat import ChatCompletionMessageFunctionToolCall

    stub.script(MODEL, *scn.replies(lambda t: f"bench__{t}"))
    since = len(stub.requests)

    async def step() -> int:
        made = 0
        for body in bodies:
            reply = await direct.chat.completions.create(**body)
            calls = [
                c
                for c in reply.choices[0].message.tool_calls or []
                if isinstance(c, ChatCompletionMessageFunctionToolCall)
            ]
            if calls:
                await asyncio.gather(
                    *(
                        DIRECT_TOOLS[c.function.name](**json.loads(c.function.arguments))
                        for c in calls
                    )
                )
                made += len(calls)
        return made

    ms, made = await _timed(step())
    if made != scn.calls or len(stub.requests) - since != len(bodies):
        raise RuntimeError(f"direct {scn.key}: {made} tool calls, {scn.calls} due")
    return ms


@contextlib.asynccontextmanager
async def agents_sdk(
    target: str, base_url: str
) -> AsyncIterator[tuple[Client, Callable[[Scenario], Awaitable[str]]]]:
    """A worker of the OpenAI Agents SDK's Temporal integration; yields ``(client, start)``.

    ``start(scenario)`` starts one agent run and returns its workflow id. The model activity
    uses the Agents SDK's Chat Completions model on the stub (it speaks no Responses API).
    """
    from agents.models.openai_provider import OpenAIProvider
    from openai import AsyncOpenAI
    from temporalio.contrib.openai_agents import ModelActivityParameters, OpenAIAgentsPlugin

    model_client = AsyncOpenAI(base_url=base_url, api_key="bench-not-a-secret", max_retries=0)
    plugin = OpenAIAgentsPlugin(
        model_params=ModelActivityParameters(start_to_close_timeout=timedelta(seconds=60)),
        model_provider=OpenAIProvider(openai_client=model_client, use_responses=False),
    )
    client = await Client.connect(target, plugins=[plugin])
    queue = f"bench-agents-{uuid.uuid4().hex[:6]}"
    worker = Worker(
        client,
        task_queue=queue,
        workflows=[AgentsToolsWorkflow],
        activities=[bench_echo, bench_io],
        # bench/ passes through like a small workflow module would cost nothing to re-import
        workflow_runner=SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_modules("bench")
        ),
        max_concurrent_activities=200,
        max_concurrent_workflow_tasks=200,
    )

    async def start(scn: Scenario) -> str:
        handle = await client.start_workflow(
            AgentsToolsWorkflow.run,
            args=[f"bench {scn.key}", scn.with_tools],
            id=f"bench-agents-{uuid.uuid4().hex}",
            task_queue=queue,
            execution_timeout=timedelta(seconds=RUN_TIMEOUT_S),
        )
        return handle.id

    try:
        async with worker:
            yield client, start
    finally:
        await model_client.close()


async def run_agents(
    client: Client, start: Callable[[Scenario], Awaitable[str]], stub: StubLLM, scn: Scenario
) -> float:
    """One OpenAI Agents SDK run of ``scn`` on Temporal; returns ms."""
    stub.script(MODEL, *scn.replies(lambda t: f"bench_{t}"))
    since = len(stub.requests)

    async def one() -> str:
        workflow_id = await start(scn)
        return str(await client.get_workflow_handle(workflow_id).result())

    ms, output = await _timed(one())
    if output != "done":
        raise RuntimeError(f"agents {scn.key}: final output {output!r}")
    _check_bodies(stub, since, scn, "agents")
    return ms


@contextlib.asynccontextmanager
async def activity_loop(
    target: str, settings: Settings, pool: Any
) -> AsyncIterator[Callable[[str, dict[str, Any], int], Awaitable[int]]]:
    """A worker with ``chorus.call_tool`` (production class), a no-op activity and the loop
    workflow, on its own task queue; yields ``run(activity name, argument, n)``."""
    from activities import ToolActivities

    client = await Client.connect(target, data_converter=chorus_data_converter)
    queue = f"bench-loop-{uuid.uuid4().hex[:6]}"
    tools = ToolActivities(settings, pool, REGISTRY, None)
    worker = Worker(
        client,
        task_queue=queue,
        workflows=[ActivityLoopWorkflow],
        activities=[tools.call_tool, noop_activity],
        workflow_runner=SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_modules(
                *SANDBOX_PASSTHROUGH, "bench"
            )
        ),
    )

    async def run(name: str, arg: dict[str, Any], n: int) -> int:
        result: int = await client.execute_workflow(
            ActivityLoopWorkflow.run,
            args=[name, arg, n],
            id=f"bench-loop-{uuid.uuid4().hex}",
            task_queue=queue,
            execution_timeout=timedelta(seconds=RUN_TIMEOUT_S),
        )
        return result

    async with worker:
        yield run


def call_tool_input() -> CallToolInput:
    spec = REGISTRY.get("bench.echo")
    assert spec is not None
    return CallToolInput(
        agent="toolbench",
        call=ToolCall(id="call_1", name="bench.echo", arguments={"text": "hi"}),
        spec=spec.spec,
    )


async def activity_body_ms(settings: Settings, pool: Any, n: int) -> float:
    """Mean ms of ``chorus.call_tool``'s body alone (no Temporal), each call its own row."""
    from temporalio.testing import ActivityEnvironment

    from activities import ToolActivities

    tools = ToolActivities(settings, pool, REGISTRY, None)
    env = ActivityEnvironment()
    start = time.perf_counter()
    for i in range(n):
        env.info = dataclasses.replace(
            ActivityEnvironment.default_info(),
            workflow_id=f"bench-body-{uuid.uuid4().hex[:8]}",
            workflow_run_id="r",
            activity_id=str(i),
        )
        result = await env.run(tools.call_tool, call_tool_input())
        if result.is_error:
            raise RuntimeError(f"call_tool body: {result.output}")
    return (time.perf_counter() - start) * 1000 / n


def agents_sdk_status() -> str | None:
    """``None`` if the OpenAI Agents SDK's Temporal integration can run; else why not."""
    try:
        import agents  # noqa: F401
        import temporalio.contrib.openai_agents  # noqa: F401
    except ImportError as exc:
        return (
            f"OpenAI Agents SDK on Temporal skipped: {exc} "
            "(pip install -e '.[bench]' installs temporalio-openai-agents)"
        )
    return None


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every scenario on every system, ``args.rounds`` interleaved rounds after a warm-up."""
    from openai import AsyncOpenAI

    out: dict[str, Any] = {"chorus": {}, "direct": {}, "agents": {}, "loop": {}}
    for system in ("chorus", "direct", "agents"):
        out[system] = {s.key: [] for s in SCENARIOS}
    out["loop"] = {"call_tool": [], "noop": [], "body": []}
    skip = agents_sdk_status() if not args.no_agents else "OpenAI Agents SDK: --no-agents"
    with (
        tempfile.TemporaryDirectory() as tmpdir,
        StubLLM(default_delay_s=LLM_DELAY_S) as stub,
        embedded_postgres(Path(tmpdir)) as database_url,
    ):
        stub._server.socket.listen(128)  # http.server's backlog of 5 is too small at once
        os.environ["OPENAI_BASE_URL"] = stub.base_url
        tmp = Path(tmpdir)
        settings = _settings(tmp, database_url)
        from activities import ProviderClients
        from worker import default_activities

        clients = ProviderClients.from_settings(settings)
        direct = AsyncOpenAI(max_retries=0)
        pools: list[Any] = []

        def activities(pool: Any) -> list[Callable[..., Any]]:
            pools.append(pool)
            return default_activities(settings, pool, clients, tools=REGISTRY)

        try:
            async with (
                temporal_dev_server(tmp / "temporal.db", list(CHORUS_DEV_FLAGS)) as client,
                chorus_worker(client, settings, activities, True) as chorus,
                contextlib.AsyncExitStack() as stack,
            ):
                target = client.service_client.config.target_host
                agents: tuple[Client, Callable[[Scenario], Awaitable[str]]] | None = None
                if skip is None:
                    try:
                        agents = await stack.enter_async_context(agents_sdk(target, stub.base_url))
                        await run_agents(*agents, stub, BY_KEY["k4"])  # fails early if it can't
                    except Exception as exc:
                        skip = f"OpenAI Agents SDK on Temporal skipped: {type(exc).__name__}: {exc}"
                        agents = None
                        stub._scripts[MODEL].clear()
                if skip:
                    print(skip, file=sys.stderr, flush=True)
                out["agents_skipped"] = skip
                loop = await stack.enter_async_context(activity_loop(target, settings, pools[0]))
                tool_arg = call_tool_input().model_dump(mode="json")

                async def one_round(r: int, keep: bool) -> None:
                    for scn in SCENARIOS:
                        order = ["chorus", "agents"] if r % 2 == 0 else ["agents", "chorus"]
                        bodies: list[dict[str, Any]] = []
                        for system in order:
                            if system == "chorus":
                                ms, bodies = await run_chorus(chorus, stub, scn)
                                direct_ms = await run_direct(direct, stub, scn, bodies)
                                if keep:
                                    out["chorus"][scn.key].append(ms)
                                    out["direct"][scn.key].append(direct_ms)
                            elif agents is not None:
                                ms = await run_agents(*agents, stub, scn)
                                if keep:
                                    out["agents"][scn.key].append(ms)
                    for name, arg, key in (
                        ("chorus.call_tool", tool_arg, "call_tool"),
                        ("bench.noop_activity", tool_arg, "noop"),
                    ):
                        ms, n = await _timed(loop(name, arg, LOOP_CALLS))
                        if keep:
                            out["loop"][key].append(ms / n)
                    body = await activity_body_ms(settings, pools[0], LOOP_CALLS)
                    if keep:
                        out["loop"]["body"].append(body)

                for r in range(args.warmup):
                    await one_round(r, keep=False)
                for r in range(args.rounds):
                    await one_round(r, keep=True)
                    print(
                        f"round {r + 1}/{args.rounds}: "
                        + ", ".join(
                            f"{k} {out['chorus'][k][-1]:.0f}/{out['direct'][k][-1]:.0f}"
                            + (f"/{out['agents'][k][-1]:.0f}" if agents else "")
                            for k in BY_KEY
                        )
                        + f"; call_tool {out['loop']['call_tool'][-1]:.1f} ms",
                        file=sys.stderr,
                        flush=True,
                    )
                # one k4 run of each, split by its history (the server's clock)
                stub.script(MODEL, *BY_KEY["k4"].replies(lambda t: f"bench__{t}"))
                handle = await chorus.start_sequential("bench breakdown", ["toolbench"])
                out["history_chorus"] = await history_breakdown(client, handle.workflow_id)
                if agents is not None:
                    stub.script(MODEL, *BY_KEY["k4"].replies(lambda t: f"bench_{t}"))
                    workflow_id = await agents[1](BY_KEY["k4"])
                    out["history_agents"] = await history_breakdown(agents[0], workflow_id)
        finally:
            await direct.close()
            await clients.close()
    return out


def _stats(values: list[float]) -> tuple[float, float]:
    return statistics.median(values), pct(values, 0.9)


def derived(t: dict[str, list[float]], d: dict[str, list[float]]) -> dict[str, list[float]]:
    """Per-round derived numbers of one system ``t`` against the direct baseline ``d``."""
    rounds = range(min(len(t["k0"]), len(d["k0"])))
    out: dict[str, list[float]] = {
        "fixed": [t["k0"][i] - d["k0"][i] for i in rounds],
        "fixed_plain": [t["plain"][i] - d["plain"][i] for i in rounds],
        "declare": [t["k0"][i] - t["plain"][i] for i in rounds],
    }
    for key in ("k4", "k4_io"):
        out[f"simple_{key}"] = [(t[key][i] - d[key][i]) / K for i in rounds]
        out[f"per_call_{key}"] = [
            (t[key][i] - t["k0"][i] - (d[key][i] - d["k0"][i])) / K for i in rounds
        ]
    for key in ("par8", "par8_io"):
        out[f"added_{key}"] = [(t[key][i] - t["k0"][i]) - (d[key][i] - d["k0"][i]) for i in rounds]
        out[f"ratio_{key}"] = [t[key][i] / d[key][i] for i in rounds]
    return out


def report(r: dict[str, Any], args: argparse.Namespace) -> str:
    """The Markdown table: wall times, then the derived overheads (median (p90))."""
    has_agents = not r["agents_skipped"] and bool(r["agents"]["k0"])

    def cell(values: list[float], digits: int = 0, prefix: str = "") -> str:
        if not values:
            return "—"
        med, p90 = _stats(values)
        return f"{prefix}{med:.{digits}f} ({prefix}{p90:.{digits}f})"

    head = "| measure | Chorus | direct asyncio |"
    rule = "|---|---:|---:|"
    if has_agents:
        head += " OpenAI Agents SDK on Temporal |"
        rule += "---:|"
    lines = [head, rule]

    def row(name: str, chorus: str, direct: str, agents: str = "") -> None:
        lines.append(
            f"| {name} | {chorus} | {direct} |" + (f" {agents or '—'} |" if has_agents else "")
        )

    for scn in SCENARIOS:
        row(
            f"step wall time, {scn.label}, ms",
            cell(r["chorus"][scn.key]),
            cell(r["direct"][scn.key]),
            cell(r["agents"][scn.key]),
        )
    c = derived(r["chorus"], r["direct"])
    a = derived(r["agents"], r["direct"]) if has_agents else {}

    def both(key: str, label: str, digits: int = 1, prefix: str = "") -> None:
        row(label, cell(c[key], digits, prefix), "", cell(a.get(key, []), digits, prefix))

    both("fixed_plain", "per-step fixed overhead, no tools declared: T(plain) − direct, ms")
    both("fixed", "per-step fixed overhead, tools declared: T(k0) − direct, ms")
    both("declare", "declaring tools: T(k0) − T(plain), ms")
    both("simple_k4", f"(a) (T(k4) − T_direct(k4)) / {K}, echo tool (fixed cost included), ms")
    both("per_call_k4", "(a) **overhead per tool call** (+1 model turn), echo tool, ms")
    both("per_call_k4_io", "(a) overhead per tool call (+1 model turn), 20 ms tool, ms")
    both("added_par8", f"(b) added by {PARALLEL} parallel echo calls (+1 model turn), ms")
    both("ratio_par8", f"(b) ratio, {PARALLEL} parallel echo calls step", 3, "x")
    both("added_par8_io", f"(b) added by {PARALLEL} parallel 20 ms calls (+1 model turn), ms")
    both("ratio_par8_io", f"(b) ratio, {PARALLEL} parallel 20 ms calls step", 3, "x")
    loop = r["loop"]
    row(
        f"(c) `chorus.call_tool` round trip, {LOOP_CALLS} in one workflow, ms per call",
        cell(loop["call_tool"], 1),
        "",
    )
    row(
        "(c) no-op activity round trip, same workflow and payload, ms per call",
        cell(loop["noop"], 1),
        "",
    )
    row("(c) `chorus.call_tool` body alone (validate, run, record), ms", cell(loop["body"], 2), "")
    notes = [
        f"{args.rounds} interleaved rounds after {args.warmup} warm-up; every model reply after "
        f"{LLM_DELAY_S * 1000:.0f} ms; median (p90), each derived number computed per round.",
        "per tool call = (T(k4) − T(k0) − (T_direct(k4) − T_direct(k0))) / 4: one tool activity "
        "plus the model turn that reads its result, each with its workflow task(s).",
        "(b) added = (T(par8) − T(k0)) − (T_direct(par8) − T_direct(k0)): one round of 8 "
        "parallel tool activities plus one model turn.",
        "The direct baseline posts Chorus's request bodies; the Agents SDK's own bodies are a "
        "few hundred bytes different, immaterial next to the 50 ms stub delay.",
    ]
    if r["agents_skipped"]:
        notes.append(r["agents_skipped"])
    else:
        notes.append(
            "OpenAI Agents SDK: `temporalio.contrib.openai_agents.OpenAIAgentsPlugin` with its "
            "Chat Completions model on the stub, tools via `activity_as_tool`, default sandbox "
            "(bench/ passed through), no PostgreSQL or other records."
        )
    for key, who in (("history_chorus", "Chorus"), ("history_agents", "Agents SDK")):
        if key in r:
            t, w, d, x, g = r[key]
            notes.append(
                f"one k4 run of {who} from its history (server clock): {t:.0f} ms = workflow "
                f"tasks {w:.0f} + activity dispatch {d:.0f} + activity execution {x:.0f} + "
                f"server between tasks {g:.0f}"
            )
    for system in ("chorus", "direct", "agents"):
        if r[system]["k4"]:
            notes.append(
                f"{system} per round (ms): "
                + "; ".join(f"{k} {', '.join(f'{v:.0f}' for v in r[system][k])}" for k in BY_KEY)
            )
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--rounds", type=int, default=None, help="measured rounds")
    parser.add_argument("--no-agents", action="store_true", help="skip the OpenAI Agents SDK")
    parser.add_argument("--write", action="store_true", help="append the table to RESULTS.md")
    args = parser.parse_args()
    args.rounds = args.rounds or (5 if args.quick else 20)
    args.warmup = 1 if args.quick else 2
    os.environ["OPENAI_API_KEY"] = "bench-not-a-secret"
    os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "1"  # no trace upload to api.openai.com

    results = await measure(args)
    table = report(results, args)
    title = (
        f"## Tool calls (issue 14) (`python -m bench.tool_calls"
        f"{' --quick' if args.quick else ''}`), {datetime.now(UTC):%Y-%m-%d}"
    )
    print(title)
    print(machine(AGENT_PACKAGES))
    print(table)
    if args.write:
        with RESULTS.open("a") as f:
            f.write(f"\n{title}\n\nMachine: {machine(AGENT_PACKAGES)}.\n\n{table}")


if __name__ == "__main__":
    # Run the imported module, not ``__main__``: its workflows then live in ``bench.tool_calls``,
    # which the workers' sandboxes pass through instead of re-importing per run.
    from bench import tool_calls

    asyncio.run(tool_calls.main())
