"""The worker's HTTP endpoints: ``/metrics``, ``/healthz`` and ``/readyz``.

A small Starlette app served by uvicorn inside the worker process, on
``CHORUS_METRICS_HOST:CHORUS_METRICS_PORT`` (default ``127.0.0.1:9464``):

- ``GET /metrics``: Chorus's metrics (:mod:`chorus.observability.metrics`) in the Prometheus text
format; the
  PostgreSQL-backed gauges (budgets, drafts) are refreshed first. The Temporal SDK's own metrics
  are served by the SDK on ``CHORUS_SDK_METRICS_PORT``
  (:func:`chorus.runtime.converter.sdk_metrics_runtime`).
- ``GET /healthz``: liveness. ``200 {"status": "ok"}`` whenever the event loop answers; a
  worker stuck in blocking code stops answering and its orchestrator restarts it.
- ``GET /readyz``: readiness. ``200`` when every check passes, else ``503``; the body lists each
  check's ``status`` (``ok``/``fail``), ``reason`` and ``latency_ms``:

  - ``temporal``: the frontend's gRPC health check answers (2 s timeout);
  - ``postgres``: ``SELECT 1`` through the worker's pool (2 s timeout);
  - ``providers``: every agent in PostgreSQL has at least one usable provider in its chain.
    ``openai``/``anthropic`` count when their API key is set (probing hosted APIs on every
    probe would spend rate limit; ``chorus health`` lists their models on demand); ``local``
    counts when its server completes a short multi-token prompt within 2 s (a real chat
    completion, :func:`chorus.integrations.local_model.probe_completion`), cached for 5 s; a
    server that has
    died is reported with its PID and crash line.

Unlike ``chorus health`` (``starter/health.py``), which opens fresh connections, these checks
go through the worker's own client and pool: readiness says whether *this* process can work.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from typing import Any, Literal

import asyncpg
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from temporalio.client import Client

from chorus.config.settings import Settings
from chorus.integrations import local_model
from chorus.observability import metrics
from chorus.storage import db, health_checks

CHECK_TIMEOUT_S = 2.0
"""Bound on each readiness check, in seconds: a probe answers well within a 5 s period."""
LOCAL_CACHE_S = 5.0
"""How long a ``local`` provider probe result is reused, in seconds."""
LOCAL_BUSY_GRACE_S = 120.0
"""A probe that times out (not refused) within this many seconds of a successful one still
counts: the server is alive and busy with another completion (it serves one at a time)."""


class CheckResult(BaseModel):
    """One readiness check: ``ok`` or ``fail``, why, and how long it took in ms."""

    status: Literal["ok", "fail"]
    reason: str
    latency_ms: float


class Readiness(BaseModel):
    """Body of ``/readyz``: overall status and every check by name."""

    status: Literal["ok", "fail"]
    checks: dict[str, CheckResult]


class WorkerProbes:
    """Readiness checks over the worker's Temporal client and PostgreSQL pool.

    Args:
        settings: Provider configuration and the local endpoint.
        pool: The worker's pool.
        client: The worker's Temporal client.
        timeout_s: Bound on each check, in seconds.

    """

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        client: Client,
        timeout_s: float = CHECK_TIMEOUT_S,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.client = client
        self.timeout_s = timeout_s
        self._local: tuple[float, bool, str] | None = None
        self._local_last_ok: float | None = None

    async def _timed(self, probe: Callable[[], Awaitable[str]]) -> CheckResult:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                reason = await probe()
            status: Literal["ok", "fail"] = "ok"
        except TimeoutError:
            status, reason = "fail", f"no answer within {self.timeout_s:g} s"
        except Exception as exc:  # any failure is the check's result
            status = "fail"
            reason = (str(exc).splitlines() or [""])[0][:300] or type(exc).__name__
        return CheckResult(
            status=status,
            reason=reason,
            latency_ms=round((time.perf_counter() - started) * 1000, 1),
        )

    async def _temporal(self) -> str:
        await self.client.service_client.check_health(timeout=timedelta(seconds=self.timeout_s))
        return f"{self.settings.temporal_address} answers"

    async def _postgres(self) -> str:
        await health_checks.ping(self.pool, self.timeout_s)
        return f"{health_checks.PING_SQL} answered"

    async def _local_reachable(self) -> tuple[bool, str]:
        """Probe the local server with a real chat completion, cached for ``LOCAL_CACHE_S``.

        ``GET /models`` answers even from a server that crashes on every prompt (issue 12).
        """
        now = time.monotonic()
        if self._local is not None and now - self._local[0] < LOCAL_CACHE_S:
            return self._local[1], self._local[2]
        result: tuple[bool, str]
        try:
            await local_model.probe_completion(
                self.settings.local_base_url,
                api_key=self.settings.local_api_key,
                timeout_s=self.timeout_s * 0.75,  # inside the check's own bound
            )
            result = (True, "")
            self._local_last_ok = now
        except local_model.LocalModelError as exc:
            down = await asyncio.to_thread(local_model.server_down_reason, self.settings)
            busy = (
                down is None
                and exc.timed_out
                and self._local_last_ok is not None
                and now - self._local_last_ok < LOCAL_BUSY_GRACE_S
            )
            # llama.cpp's server answers one request at a time: a probe queued behind a long
            # completion times out although the server works; it still counts for a while.
            result = (
                (True, "")
                if busy
                else (False, down or f"local server {self.settings.local_base_url}: {exc}")
            )
        self._local = (now, *result)
        return result

    async def _providers(self) -> str:
        agents = await db.current_agents(self.pool)
        usable: dict[str, tuple[bool, str]] = {}
        for provider in sorted({link.provider for a in agents.values() for link in a.providers}):
            ok, reason = self.settings.provider_configured(provider)
            if ok and provider == "local":
                ok, reason = await self._local_reachable()
            usable[provider] = (ok, reason)
        stranded = [
            f"{name} ({'; '.join(usable[link.provider][1] for link in spec.providers)})"
            for name, spec in sorted(agents.items())
            if not any(usable[link.provider][0] for link in spec.providers)
        ]
        if stranded:
            raise RuntimeError(f"agents without a usable provider: {', '.join(stranded)}")
        up = sorted(p for p, (ok, _) in usable.items() if ok)
        return f"{len(agents)} agents covered by {', '.join(up) or 'no providers'}"

    async def readiness(self) -> Readiness:
        """Run the checks concurrently; ``providers`` fails too when PostgreSQL is down."""
        names = ("temporal", "postgres", "providers")
        results = await asyncio.gather(
            self._timed(self._temporal), self._timed(self._postgres), self._timed(self._providers)
        )
        checks = dict(zip(names, results, strict=True))
        ok = all(c.status == "ok" for c in checks.values())
        return Readiness(status="ok" if ok else "fail", checks=checks)


def create_app(settings: Settings, pool: asyncpg.Pool, client: Client) -> Starlette:
    """Build the ``/metrics``, ``/healthz`` and ``/readyz`` app for one worker process.

    Args:
        settings: Settings of the worker.
        pool: The worker's PostgreSQL pool.
        client: The worker's Temporal client.

    Returns:
        The ASGI app (serve it with :func:`serve_http`, or test it with ``httpx2.ASGITransport``).

    """
    probes = WorkerProbes(settings, pool, client)

    async def metrics_endpoint(request: Request) -> Response:
        await metrics.refresh_gauges(pool, settings)
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        report = await probes.readiness()
        return JSONResponse(
            report.model_dump(mode="json"), status_code=200 if report.status == "ok" else 503
        )

    return Starlette(
        routes=[
            Route("/metrics", metrics_endpoint),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
        ]
    )


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside the worker's event loop: the worker, not uvicorn, handles signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serve_http(app: Any, host: str, port: int) -> AsyncIterator[uvicorn.Server]:
    """Serve ``app`` with uvicorn on ``host:port`` for the duration of the block.

    The socket is bound here, before uvicorn starts, so a taken port raises ``OSError`` in the
    caller instead of uvicorn's ``sys.exit``.

    Args:
        app: ASGI app, normally from :func:`create_app`.
        host: Interface to bind (``CHORUS_METRICS_HOST``).
        port: TCP port (``CHORUS_METRICS_PORT``); 0 picks a free one (see ``server.servers``).

    Yields:
        The running server.

    Raises:
        OSError: When the address cannot be bound (e.g. the port is taken).

    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    config = uvicorn.Config(app, lifespan="off", log_config=None, access_log=False)
    server = _EmbeddedServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        # uvicorn offers no startup event to wait on.
        while not server.started and not task.done():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        if task.done():
            await task  # re-raise why it stopped
        yield server
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()
