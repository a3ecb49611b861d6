"""Test helpers for code built on Chorus: a scripted LLM and a real worker in a context manager.

Use them in your own tests (pytest or not) against a Temporal dev server and a PostgreSQL
database, as Chorus's own tests do::

    from temporalio.testing import WorkflowEnvironment
    from chorus import ChorusPlugin, Settings
    from chorus.testing import FakeLLM, running_worker

    env = await WorkflowEnvironment.start_local(plugins=[ChorusPlugin()])
    fake = FakeLLM()
    async with running_worker(env.client, settings, lambda pool: fake.call_llm) as chorus:
        result = await (await chorus.start_sequential("Brief me", ["writer"])).result()
    assert fake.calls[0].agent == "writer"

:class:`FakeLLM` replaces only the provider call (``chorus.call_llm``): workflows, the other
activities, PostgreSQL bookkeeping, budgets' records and the SDK all run for real.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from chorus.config.settings import Settings
from chorus.contracts.models import LLMRequest, LLMResponse
from chorus.contracts.names import CALL_LLM_ACTIVITY
from chorus.storage import db

LLMFactory = Callable[[asyncpg.Pool], Callable[..., Any]]
"""Builds the ``chorus.call_llm`` activity to register, given the worker's pool."""


class FakeLLM:
    """Stands in for ``chorus.call_llm`` (same activity name) with scripted behaviour.

    Each call answers ``"<agent> output [saw: <context step names>]"`` with 100 + 10 per
    context entry input tokens, 20 output tokens and $0.001, unless scripted otherwise.

    Attributes:
        calls: Every request received, in order.
    """

    def __init__(self) -> None:
        self.calls: list[LLMRequest] = []
        self.failures: dict[tuple[str, str], tuple[str, bool]] = {}
        self.gates: dict[str, asyncio.Event] = {}
        self.started: dict[str, asyncio.Event] = {}
        self.scripts: dict[str, list[str]] = {}
        self.costs: dict[str, float] = {}

    def script(self, agent: str, *answers: str, cost_usd: float | None = None) -> None:
        """Make ``agent`` answer ``answers`` in order (the last one repeats).

        Args:
            agent: Agent name.
            *answers: Completions, e.g. ``'{"verdict": "ready"}'`` for a structured agent.
            cost_usd: Cost of each of its calls (default $0.001).
        """
        self.scripts[agent] = list(answers)
        if cost_usd is not None:
            self.costs[agent] = cost_usd

    def fail(self, agent: str, provider: str, error_type: str, non_retryable: bool = True) -> None:
        """Make every call of ``agent`` on ``provider`` fail with ``error_type``.

        Args:
            agent: Agent name.
            provider: Provider name (``openai``, ``anthropic``, ``local``).
            error_type: ``ApplicationError`` type (see :mod:`chorus.contracts.errors`).
            non_retryable: Whether the failure is non-retryable.
        """
        self.failures[(agent, provider)] = (error_type, non_retryable)

    def gate(self, agent: str) -> asyncio.Event:
        """Hold ``agent``'s calls (heartbeating) until the returned event is set.

        ``self.started[agent]`` is set once such a call is waiting.
        """
        self.started[agent] = asyncio.Event()
        self.gates[agent] = asyncio.Event()
        return self.gates[agent]

    @activity.defn(name=CALL_LLM_ACTIVITY)
    async def call_llm(self, req: LLMRequest) -> LLMResponse:
        """The scripted ``chorus.call_llm``.

        Raises:
            ApplicationError: The failure scripted with :meth:`fail`.
        """
        self.calls.append(req)
        attempt = activity.info().attempt
        if (req.agent, req.provider) in self.failures:
            error_type, non_retryable = self.failures[(req.agent, req.provider)]
            raise ApplicationError(
                f"scripted {error_type} for {req.agent} on {req.provider}",
                attempt,
                type=error_type,
                non_retryable=non_retryable,
            )
        if req.agent in self.gates:
            self.started[req.agent].set()
            while not self.gates[req.agent].is_set():
                activity.heartbeat()
                await asyncio.sleep(0.05)
        seen = ",".join(c.name for c in req.context)
        output = f"{req.agent} output [saw: {seen}]"
        script = self.scripts.get(req.agent)
        if script:
            output = script.pop(0) if len(script) > 1 else script[0]
        return LLMResponse(
            provider=req.provider,
            model=req.model,
            output=output,
            input_tokens=100 + 10 * len(req.context),
            output_tokens=20,
            cost_usd=self.costs.get(req.agent, 0.001),
            latency_ms=5.0,
            attempt=attempt,
        )


@asynccontextmanager
async def running_worker(
    client: Client,
    settings: Settings,
    llm: LLMFactory,
    *,
    tools: Any = None,
    mcp: Any = None,
    **worker_options: Any,
) -> AsyncIterator[Any]:
    """Run a production-configured Chorus worker with ``llm(pool)`` as ``chorus.call_llm``.

    Opens the pool (migrations and agent seeding included), registers every other activity
    as the worker does (:func:`worker.default_activities`), and yields a
    :class:`starter.sdk.ChorusClient` sharing the pool. Everything stops on exit.

    Args:
        client: A client connected with :class:`chorus.runtime.plugin.ChorusPlugin`.
        settings: Task queue, database and agent catalog of the test.
        llm: Builds the ``chorus.call_llm`` activity from the pool.
        tools: A :class:`chorus.tools.ToolRegistry` to serve instead of the default one.
        mcp: :class:`chorus.tools.mcp_servers.MCPServers` for ``mcp:`` tools.
        **worker_options: Further ``temporalio.worker.Worker`` arguments (e.g.
            ``max_cached_workflows=0`` to replay every workflow task from history).

    Raises:
        chorus.storage.db.DatabaseError: PostgreSQL cannot be reached.
    """
    from starter.sdk import ChorusClient  # the client side, imported where it is used
    from worker import build_worker, default_activities

    pool = await db.open_store(settings)
    activities = default_activities(settings, pool, call_llm=llm(pool), tools=tools, mcp=mcp)
    worker = build_worker(client, settings, activities, **worker_options)
    try:
        async with worker:
            yield ChorusClient(client, settings, pool)
    finally:
        await pool.close()
