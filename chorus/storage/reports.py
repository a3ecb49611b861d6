"""Read-only reports over the record for operators (``chorus top``): recent failures, providers.

The SDK's :class:`~starter.sdk.FleetClient` calls these; the worker never does. ``messages``
holds one row per *successful* LLM call, so :func:`provider_latency` covers successes only:
failed attempts are not recorded per call (they show up as failed runs and in the worker's
Prometheus metrics).
"""

from __future__ import annotations

from datetime import datetime

import asyncpg
from pydantic import BaseModel


class RecentFailure(BaseModel):
    """A run that ended ``failed``, with the reason recorded in PostgreSQL; cost in USD."""

    workflow_id: str
    pattern: str
    finished_at: datetime | None
    error: str | None
    cost_usd: float


class ProviderHealth(BaseModel):
    """Successful LLM calls of one provider/model since a time; latency in ms."""

    provider: str
    model: str
    calls: int
    p50_ms: float
    p95_ms: float
    last_call_at: datetime


async def recent_failures(pool: asyncpg.Pool, since: datetime, limit: int) -> list[RecentFailure]:
    """Runs that failed at or after ``since``, most recent first, at most ``limit`` of them.

    Raises:
        asyncpg.PostgresError: PostgreSQL refused the query (e.g. the schema is not migrated).
    """
    rows = await pool.fetch(
        "SELECT workflow_id, pattern, finished_at, error, cost_usd FROM runs"
        " WHERE status = 'failed' AND finished_at >= $1 ORDER BY finished_at DESC LIMIT $2",
        since,
        limit,
    )
    return [
        RecentFailure(
            workflow_id=r["workflow_id"],
            pattern=r["pattern"],
            finished_at=r["finished_at"],
            error=r["error"],
            cost_usd=float(r["cost_usd"]),
        )
        for r in rows
    ]


async def provider_latency(pool: asyncpg.Pool, since: datetime) -> list[ProviderHealth]:
    """Calls, p50/p95 latency (ms) and last call of each provider/model since ``since``.

    Successful calls only (see the module docstring); ordered by provider, then model.

    Raises:
        asyncpg.PostgresError: PostgreSQL refused the query (e.g. the schema is not migrated).
    """
    rows = await pool.fetch(
        "SELECT provider, model, count(*) AS calls,"
        " percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) AS p50_ms,"
        " percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS p95_ms,"
        " max(created_at) AS last_call_at"
        " FROM messages WHERE created_at >= $1 GROUP BY provider, model"
        " ORDER BY provider, model",
        since,
    )
    return [
        ProviderHealth(
            provider=r["provider"],
            model=r["model"],
            calls=r["calls"],
            p50_ms=float(r["p50_ms"]),
            p95_ms=float(r["p95_ms"]),
            last_call_at=r["last_call_at"],
        )
        for r in rows
    ]
