"""``chorus health``: check Temporal, PostgreSQL and every configured LLM provider.

Overall status:

- ``unhealthy``: Temporal or PostgreSQL is down, or some agent has no reachable provider;
- ``degraded``: a configured provider is unreachable but every agent still has one;
- ``healthy``: everything answered.

Provider checks list models (``GET /models``) through the official SDKs, so they honour
``OPENAI_API_KEY``/``OPENAI_BASE_URL`` and ``ANTHROPIC_API_KEY``/``ANTHROPIC_BASE_URL`` exactly
as the LLM activity does; the local provider is checked at ``CHORUS_LOCAL_BASE_URL`` with
a real chat completion (:func:`chorus.integrations.local_model.probe_completion`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Literal

import anthropic
import openai
from pydantic import BaseModel

from chorus.config.catalog import CatalogError, load_catalog
from chorus.config.settings import Settings
from chorus.contracts.models import AgentSpec
from chorus.integrations import local_model
from chorus.runtime.converter import connect
from chorus.storage import db, health_checks

Status = Literal["healthy", "degraded", "unhealthy"]
CHECK_TIMEOUT_S = 5.0


class Check(BaseModel):
    """One dependency's check: status, latency in ms, and what was seen."""

    name: str
    status: Status
    latency_ms: float | None = None
    detail: str


class HealthReport(BaseModel):
    """All checks, the overall status and the reasons for it."""

    status: Status
    checks: list[Check]
    reasons: list[str]


async def _timed(name: str, probe: Awaitable[str]) -> Check:
    started = time.perf_counter()
    try:
        detail = await asyncio.wait_for(probe, CHECK_TIMEOUT_S)
    except Exception as exc:  # any failure is the check's result
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return Check(
            name=name,
            status="unhealthy",
            latency_ms=(time.perf_counter() - started) * 1000,
            detail=message[:300],
        )
    return Check(
        name=name,
        status="healthy",
        latency_ms=(time.perf_counter() - started) * 1000,
        detail=detail,
    )


async def _temporal(settings: Settings) -> str:
    client = await connect(settings)
    await client.service_client.check_health()
    return f"{settings.temporal_address}, namespace {settings.temporal_namespace}"


async def _postgres(settings: Settings) -> str:
    url = db.database_url(settings)
    pool = await db.create_pool(settings, min_size=1, max_size=1)
    try:
        version = await health_checks.server_version(pool)
        schema = await db.schema_version(pool)
    finally:
        await pool.close()
    return f"PostgreSQL {version} at {db.redact_url(url)}, schema v{schema}"


async def _list_models(client: openai.AsyncOpenAI | anthropic.AsyncAnthropic) -> str:
    """List a provider's models through its SDK client, then close the client."""
    try:
        page = await client.models.list()
        return f"{len(page.data)} models listed"
    finally:
        await client.close()


async def _agents(settings: Settings, postgres_ok: bool) -> dict[str, AgentSpec]:
    if postgres_ok:
        pool = await db.create_pool(settings, min_size=1, max_size=1)
        try:
            agents = await db.current_agents(pool)
        finally:
            await pool.close()
        if agents:
            return agents
    try:
        return load_catalog(settings.agents_file)
    except CatalogError:
        return {}


async def check_health(settings: Settings) -> HealthReport:
    """Run every check concurrently (each bounded by 5 s) and judge the overall status."""
    probes: dict[str, Awaitable[str]] = {
        "temporal": _temporal(settings),
        "postgres": _postgres(settings),
    }
    providers: list[str] = []
    if settings.provider_configured("openai")[0]:
        providers.append("openai")
        probes["provider openai"] = _list_models(
            openai.AsyncOpenAI(max_retries=0, timeout=CHECK_TIMEOUT_S)
        )
    if settings.provider_configured("anthropic")[0]:
        providers.append("anthropic")
        probes["provider anthropic"] = _list_models(
            anthropic.AsyncAnthropic(max_retries=0, timeout=CHECK_TIMEOUT_S)
        )
    if settings.provider_configured("local")[0]:
        providers.append("local")
        # A real chat completion, not GET /models: a llama.cpp server that crashes on every
        # prompt still lists its models (issue 12).
        probes["provider local"] = local_model.probe_completion(
            settings.local_base_url, api_key=settings.local_api_key, timeout_s=CHECK_TIMEOUT_S
        )
    checks = list(await asyncio.gather(*(_timed(n, p) for n, p in probes.items())))
    by_name = {c.name: c for c in checks}
    reasons = [f"{c.name} is down: {c.detail}" for c in checks if c.status != "healthy"]
    status: Status = "healthy"
    if any(by_name[n].status != "healthy" for n in ("temporal", "postgres")):
        status = "unhealthy"
    reachable = {p for p in providers if by_name[f"provider {p}"].status == "healthy"}
    agents = await _agents(settings, by_name["postgres"].status == "healthy")
    stranded = [
        name
        for name, spec in agents.items()
        if not {p.provider for p in spec.providers} & reachable
    ]
    if stranded:
        status = "unhealthy"
        reasons.append(f"no reachable provider for agent(s): {', '.join(stranded)}")
    elif status == "healthy" and len(reachable) < len(providers):
        status = "degraded"
    return HealthReport(status=status, checks=checks, reasons=reasons)
