"""Chorus worker: wires clients, activities and workflows onto the task queue.

Run it with ``chorus worker`` (or ``python -m worker``); ``chorus dev up`` starts one for you.
It only wires: SDK clients are built once and shared by every activity invocation.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog
from temporalio.client import Client
from temporalio.worker import Worker

from activities import (
    CallbackActivities,
    DraftActivities,
    LLMActivities,
    ProviderClients,
    RunActivities,
    ToolActivities,
)
from activities.approvals import ApprovalActivities
from chorus.config.mcp_config import load_mcp_servers
from chorus.config.settings import Settings, get_settings
from chorus.contracts.names import CALL_LLM_ACTIVITY, llm_task_queue
from chorus.observability import probes as health
from chorus.observability.logs import configure_logging
from chorus.runtime.converter import connect, sdk_metrics_runtime
from chorus.runtime.plugin import ChorusPlugin, activity_name
from chorus.storage import db
from chorus.tools import DEFAULT_REGISTRY, ToolRegistry
from chorus.tools.mcp_servers import MCPServers

log = structlog.get_logger("chorus.worker")


@dataclass(frozen=True)
class WorkerOptions:
    """Concurrency limits of one worker process.

    Attributes:
        max_concurrent_activities: Activity tasks run at once (LLM calls in flight).
        max_concurrent_workflow_tasks: Workflow tasks run at once.

    """

    max_concurrent_activities: int = 20
    max_concurrent_workflow_tasks: int = 50


def default_activities(
    settings: Settings,
    pool: asyncpg.Pool,
    clients: ProviderClients | None = None,
    *,
    call_llm: Callable[..., Any] | None = None,
    tools: ToolRegistry | None = None,
    mcp: MCPServers | None = None,
) -> list[Callable[..., Any]]:
    """Return the activities a Chorus worker registers, bound to shared clients and the pool.

    Args:
        settings: Worker settings.
        pool: PostgreSQL pool shared by every activity.
        clients: Provider SDK clients for ``chorus.call_llm``.
        call_llm: Use this ``chorus.call_llm`` instead (tests: :class:`chorus.testing.FakeLLM`).
        tools: The Python tools served (default: the built-in ``chorus.*`` tools and the
            modules of ``CHORUS_TOOL_MODULES``, in :data:`chorus.tools.DEFAULT_REGISTRY`).
        mcp: The MCP servers agents' ``mcp:`` tools reach (the caller closes them).

    Raises:
        ValueError: Neither ``clients`` nor ``call_llm`` is given.
        chorus.contracts.errors.ChorusInputError: A ``CHORUS_TOOL_MODULES`` module cannot be
            imported.
    """
    if call_llm is None:
        if clients is None:
            raise ValueError("default_activities needs provider clients or a call_llm")
        call_llm = LLMActivities(clients, settings, pool).call_llm
    runs = RunActivities(pool, settings)
    callbacks = CallbackActivities(settings)
    if tools is None:
        from chorus.tools.builtin import load_builtin_tools, load_tool_modules  # psutil, httpx

        load_builtin_tools()
        load_tool_modules(settings.tool_modules)
        tools = DEFAULT_REGISTRY
    tool_calls = ToolActivities(settings, pool, tools, mcp)
    approvals = ApprovalActivities(settings, pool)
    return [
        call_llm,
        runs.start_run,
        runs.finish_run,
        runs.resolve_agents,
        DraftActivities(pool).save_draft,
        callbacks.deliver_callback,
        callbacks.deliver_budget_alert,
        tool_calls.resolve_tools,
        tool_calls.call_tool,
        approvals.open_gate,
        approvals.close_gate,
    ]


class ChorusWorker:
    """The Temporal workers of one Chorus process, started and stopped together.

    One worker polls ``settings.task_queue`` (workflows and every activity); one more per
    provider polls ``<task queue>-llm-<provider>`` for that provider's LLM calls, with the
    provider's concurrency as the local cap; its requests per minute are enforced in the
    activity, through PostgreSQL (``chorus/governance/provider_limits.py``).

    Use as ``async with worker:`` (or ``await worker.run()``).
    """

    def __init__(self, workers: list[Worker]) -> None:
        self.workers = workers
        self._stack: contextlib.AsyncExitStack | None = None

    async def __aenter__(self) -> ChorusWorker:
        async with contextlib.AsyncExitStack() as stack:
            for worker in self.workers:
                await stack.enter_async_context(worker)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()

    async def run(self) -> None:
        """Run every worker until one stops (or this task is cancelled)."""
        await asyncio.gather(*(worker.run() for worker in self.workers))


def _worker(client: Client, **kwargs: Any) -> Worker:
    """``Worker(client, **kwargs)``, quiet about ``ChorusPlugin`` being on the client too.

    A Chorus client already carries a ``ChorusPlugin`` (converter, codec, sandbox); the
    worker's own one adds its activities and workflows. The SDK warns that a plugin type on
    both "may run twice": ``ChorusPlugin.configure_worker`` is idempotent, so it may.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The same plugin type", category=UserWarning)
        return Worker(client, **kwargs)


def build_worker(
    client: Client,
    settings: Settings,
    activities: Sequence[Callable[..., Any]],
    options: WorkerOptions | None = None,
    **worker_kwargs: Any,
) -> ChorusWorker:
    """Create (not start) the workers polling the task queues for all Chorus work.

    Args:
        client: Connected client (with the pydantic data converter).
        settings: Task queue, provider limits and other settings.
        activities: Activity callables, normally :func:`default_activities`. The one named
            ``chorus.call_llm`` also serves each provider's task queue.
        options: Concurrency limits.
        **worker_kwargs: Further ``temporalio.worker.Worker`` arguments for the main worker
            (tests pass ``max_cached_workflows=0`` to replay every workflow task from history).
    """
    options = options or WorkerOptions()
    main = _worker(
        client,
        task_queue=settings.task_queue,
        plugins=[ChorusPlugin(settings, activities=activities, register_workflows=True)],
        max_concurrent_activities=options.max_concurrent_activities,
        max_concurrent_workflow_tasks=options.max_concurrent_workflow_tasks,
        **worker_kwargs,
    )
    workers = [main]
    llm = [a for a in activities if activity_name(a) == CALL_LLM_ACTIVITY]
    for provider, limit in settings.provider_limits.items():
        if not llm:
            break
        workers.append(
            _worker(
                client,
                task_queue=llm_task_queue(settings.task_queue, provider),
                plugins=[ChorusPlugin(settings, activities=llm)],
                max_concurrent_activities=limit.concurrency or options.max_concurrent_activities,
                # No max_task_queue_activities_per_second: the server's task queue rate paced
                # every dispatch (~230 ms each, even far below the limit), so the rate is a
                # GCRA in PostgreSQL instead (chorus/governance/provider_limits.py). The rate
                # earlier workers set does not linger: each poll replaces the worker-set rate
                # and a poll without one restores the system default (temporalio/temporal#8058;
                # on the 1.32 dev server DescribeTaskQueue reports source SYSTEM once such a
                # worker polls). Servers before that change kept the last rate set
                # (temporalio/temporal#8137).
            )
        )
    return ChorusWorker(workers)


async def run_worker(
    settings: Settings | None = None, options: WorkerOptions | None = None
) -> None:
    """Run a worker until SIGINT/SIGTERM, then shut down gracefully.

    Besides the Temporal workers it serves ``/metrics``, ``/healthz`` and ``/readyz`` on
    ``CHORUS_METRICS_PORT`` (``chorus/observability/probes.py``) and the SDK's metrics on
    ``CHORUS_SDK_METRICS_PORT``.

    Raises:
        RuntimeError: When Temporal cannot be reached or the SDK metrics port cannot be bound.
        OSError: When ``CHORUS_METRICS_PORT`` cannot be bound.

    """
    settings = settings or get_settings()
    options = options or WorkerOptions()
    client = await connect(settings, runtime=sdk_metrics_runtime(settings))
    pool = await db.open_store(settings, max_size=20)
    clients = ProviderClients.from_settings(settings)
    mcp = (
        MCPServers(load_mcp_servers(settings.mcp_servers), log_dir=settings.data_dir / "logs")
        if settings.mcp_servers
        else None
    )
    worker = build_worker(
        client, settings, default_activities(settings, pool, clients, mcp=mcp), options
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    configured = [p for p in ("openai", "anthropic", "local") if settings.provider_configured(p)[0]]
    log.info(
        "worker started",
        task_queue=settings.task_queue,
        temporal=settings.temporal_address,
        namespace=settings.temporal_namespace,
        providers=configured,
        agents_file=str(settings.agents_file),
        database=db.redact_url(db.database_url(settings)),
    )
    try:
        async with contextlib.AsyncExitStack() as http, worker:
            if settings.metrics_port:
                app = health.create_app(settings, pool, client)
                await http.enter_async_context(
                    health.serve_http(app, settings.metrics_host, settings.metrics_port)
                )
                log.info(
                    "metrics and health endpoints up",
                    url=f"http://{settings.metrics_host}:{settings.metrics_port}/metrics",
                    sdk_metrics_port=settings.sdk_metrics_port or None,
                )
            freeze_startup_heap()
            await stop.wait()
            log.info("worker stopping")
    finally:
        await clients.close()
        if mcp is not None:
            await mcp.aclose()
        await pool.close()
    log.info("worker stopped")


def freeze_startup_heap() -> None:
    """Move every object alive now out of the garbage collector's reach (``gc.freeze``).

    A started worker holds ~350,000 tracked objects that live as long as it does (modules,
    pydantic schemas, the price data, the sandbox's restriction tables); every full collection
    walked them all: ~300 ms per collection, ~0.6 s of 25 s under load, each a pause of every
    run on the worker (issue 19, measured with ``gc.callbacks`` at 20 runs at once: full
    collections 618 ms -> 69 ms, all collections 1.02 s -> 0.40 s). Objects made later are
    collected as before. Python documents ``gc.freeze`` for this ("Freeze all the objects
    tracked by the garbage collector; move them to a permanent generation").
    """
    gc.collect()
    gc.freeze()


def main() -> None:
    """Entry point of ``python -m worker``."""
    settings = get_settings()
    configure_logging(settings.log_level, settings=settings)
    asyncio.run(run_worker(settings))


if __name__ == "__main__":
    main()
