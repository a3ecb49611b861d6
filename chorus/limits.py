"""Per-provider rate and concurrency limits that hold across every worker.

- **Requests per minute**: LLM calls to each provider run on their own task queue
  (``<task queue>-llm-<provider>``, see :func:`chorus.names.llm_task_queue`), whose workers set
  ``max_task_queue_activities_per_second = rpm / 60``. The Temporal server enforces that rate
  for the task queue as a whole, however many workers poll it.
- **Concurrent calls**: Temporal has no fleet-wide concurrency limit (``max_concurrent_
  activities`` is per worker), so each call holds one of N slots, a PostgreSQL session advisory
  lock ``(hashtext('chorus.llm.<provider>'), slot)``, for the duration of the HTTP call. A
  worker that dies loses its database session, and with it its slots: nothing leaks. Each
  provider worker also caps its own concurrent activities at N, so no worker polls more calls
  than the fleet may run.

Defaults (override with ``CHORUS_PROVIDER_LIMITS``, JSON): OpenAI 500 requests/min and 16
concurrent (OpenAI's published tier-1 limit for gpt-4o-mini is 500 RPM, "Rate limits" guide,
2026), Anthropic 50 requests/min and 8 concurrent (Anthropic "Rate limits", tier 1: 50 RPM),
local 1 concurrent and no rate limit (llama.cpp's server answers one request at a time unless
started with parallel slots).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

import asyncpg
from pydantic import BaseModel, Field

SLOT_WAIT_S = 60.0
"""Longest an LLM activity attempt waits for a concurrency slot before failing as
``RateLimited`` (retried by the LLM retry policy). The activity's start-to-close timeout
includes it."""

_TRY_LOCK = "SELECT pg_try_advisory_lock(hashtext($1), $2)"
_UNLOCK = "SELECT pg_advisory_unlock(hashtext($1), $2)"


class ProviderLimit(BaseModel):
    """Limits of one provider across the fleet.

    Attributes:
        concurrency: Calls in flight at once, all workers together (0 = unlimited).
        rpm: Calls started per minute, all workers together (0 = unlimited).
    """

    concurrency: int = Field(0, ge=0, le=10_000)
    rpm: float = Field(0.0, ge=0)


DEFAULT_PROVIDER_LIMITS: dict[str, ProviderLimit] = {
    "openai": ProviderLimit(concurrency=16, rpm=500),
    "anthropic": ProviderLimit(concurrency=8, rpm=50),
    "local": ProviderLimit(concurrency=1, rpm=0),
}


class SlotTimeoutError(Exception):
    """No concurrency slot of a provider became free in time."""


class FleetSemaphore:
    """N concurrency slots per provider, shared by every worker through PostgreSQL.

    Slots are session advisory locks taken on one pooled connection per worker, held while
    the worker has any slot and returned to the pool when it holds none (asyncpg's reset on
    release runs ``pg_advisory_unlock_all()``).

    Args:
        pool: Chorus's PostgreSQL pool.
        limits: Provider -> concurrency (providers missing or 0 are unlimited).
    """

    def __init__(self, pool: asyncpg.Pool, limits: dict[str, int]) -> None:
        self._pool = pool
        self._limits = limits
        self._conn: asyncpg.pool.PoolConnectionProxy | None = None
        self._held: set[tuple[str, int]] = set()
        self._lock = asyncio.Lock()

    def limit(self, provider: str) -> int:
        """Concurrency limit of ``provider`` (0 = unlimited)."""
        return self._limits.get(provider, 0)

    async def acquire(
        self,
        provider: str,
        *,
        wait_s: float = SLOT_WAIT_S,
        on_wait: Callable[[], None] | None = None,
    ) -> int | None:
        """Take a free slot of ``provider``, waiting up to ``wait_s`` seconds.

        Args:
            provider: Provider name.
            wait_s: Longest wait, in seconds.
            on_wait: Called between attempts (the activity heartbeats there).

        Returns:
            The slot number, or ``None`` when the provider is unlimited.

        Raises:
            SlotTimeoutError: Every slot stayed busy for ``wait_s`` seconds.
        """
        n = self.limit(provider)
        if n <= 0:
            return None
        deadline = time.monotonic() + wait_s
        delay = 0.01
        while True:
            async with self._lock:
                for slot in random.sample(range(n), n):
                    if (provider, slot) in self._held:
                        continue
                    conn = await self._connection()
                    if await conn.fetchval(
                        "SELECT pg_try_advisory_lock(hashtext($1), $2)",
                        f"chorus.llm.{provider}",
                        slot,
                    ):
                        self._held.add((provider, slot))
                        return slot
                await self._maybe_return_connection()
            if time.monotonic() > deadline:
                raise SlotTimeoutError(
                    f"all {n} concurrency slots of provider {provider} stayed busy for "
                    f"{wait_s:.0f} s (limit: CHORUS_PROVIDER_LIMITS)"
                )
            if on_wait is not None:
                on_wait()
            await asyncio.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, 0.2)

    async def release(self, provider: str, slot: int | None) -> None:
        """Give a slot back (no-op for ``None``)."""
        if slot is None:
            return
        async with self._lock:
            self._held.discard((provider, slot))
            if self._conn is not None:
                try:
                    await self._conn.fetchval(
                        "SELECT pg_advisory_unlock(hashtext($1), $2)",
                        f"chorus.llm.{provider}",
                        slot,
                    )
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    # The session is gone, and its locks with it.
                    await self._drop_connection()
            await self._maybe_return_connection()

    async def _connection(self) -> asyncpg.pool.PoolConnectionProxy:
        if self._conn is None:
            self._conn = await self._pool.acquire()
        return self._conn

    async def _maybe_return_connection(self) -> None:
        if self._conn is not None and not self._held:
            conn, self._conn = self._conn, None
            await self._pool.release(conn)

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._pool.release(conn)
