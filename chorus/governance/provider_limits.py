"""Per-provider rate and concurrency limits that hold across every worker.

- **Requests per minute**: a GCRA (generic cell rate algorithm, the virtual-scheduling form
  of a token bucket) per provider in PostgreSQL, :class:`FleetRateLimiter`. Each call runs
  one statement that reserves the provider's next start time on the database clock, which
  every worker shares, and then sleeps until then (heartbeating): calls within the burst
  start at once, later ones ``60 / rpm`` seconds apart. This replaced the Temporal server's
  task queue rate (``max_task_queue_activities_per_second``), which paced every dispatch: a
  benchmark measured ~230 ms of added dispatch delay per call far below the limit.
- **Concurrent calls**: Temporal has no fleet-wide concurrency limit (``max_concurrent_
  activities`` is per worker), so each call holds one of N slots, a PostgreSQL session advisory
  lock ``(hashtext('chorus.llm.<provider>'), slot)``, for the duration of the HTTP call. A
  worker that dies loses its database session, and with it its slots: nothing leaks. A
  slot given back stays locked by its worker for :data:`SLOT_LINGER_S`, so the worker's next
  call of that provider (the next step of a pipeline, another run's call) takes it without a
  statement; a slot is truly unlocked once it lingers unused, or on its first release after
  it has been locked for :data:`SLOT_MAX_HOLD_S`, so a busy worker cannot keep other workers
  out of it (issue 19: the lock and unlock were two round trips of every call). Each
  provider's calls run on their own task queue (``<task queue>-llm-<provider>``, see
  :func:`chorus.contracts.names.llm_task_queue`) whose workers cap their concurrent activities at N,
  so no worker polls more calls than the fleet may run.

- **Tokens per minute** (input + output): a second GCRA per provider, on the row
  ``tpm:<provider>`` of the same table, whose cells are tokens instead of calls: one token
  every ``60 / tpm`` seconds, a bucket of one minute's worth (``tpm`` tokens; providers
  enforce TPM per minute). Before the call starts it reserves its worst case, the prompt's
  UTF-8 bytes plus 32 tokens of chat markup plus ``max_tokens`` (the budget's bound, which
  never undercounts: a token is at least one byte); after the call the unused part is given
  back (:meth:`FleetRateLimiter.settle_tokens`), so the limit converges on actual usage. A
  call that fails keeps its prompt's share (a provider may count the input of a failed
  call) and gives back ``max_tokens``. A request larger than the whole bucket reserves the
  whole bucket (it would otherwise never start).

A call first waits for the rate, then for tokens, then for a slot, so waiting for either rate
holds no slot; the waits together last at most :data:`SLOT_WAIT_S`.

Defaults (override with ``CHORUS_PROVIDER_LIMITS``, JSON): OpenAI 500 requests/min and 16
concurrent (OpenAI's published tier-1 limit for gpt-4o-mini is 500 RPM, "Rate limits" guide,
2026), Anthropic 50 requests/min and 8 concurrent (Anthropic "Rate limits", tier 1: 50 RPM),
local 1 concurrent and no rate limit (llama.cpp's server answers one request at a time unless
started with parallel slots). The default burst is the minute's worth of calls (``rpm``): a
burst below the configured rate starts at once (issue 19: at one second's worth, 9 calls at
500/min, the 10th branch of a fan-out waited ~120 ms) while the concurrency limit still caps
the calls in flight. OpenAI's guide warns that per-minute limits may be enforced over shorter
periods ("60,000 requests/minute may be enforced as 1,000 requests/second"); a provider that
does answers 429, retried after its Retry-After, or set ``burst`` to pace.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Callable, Mapping

import asyncpg

from chorus.contracts.errors import ChorusUnavailableError
from chorus.contracts.limits import SLOT_WAIT_S as SLOT_WAIT_S  # workflows read it there
from chorus.contracts.models import DEFAULT_PROVIDER_LIMITS as DEFAULT_PROVIDER_LIMITS
from chorus.contracts.models import ProviderLimit as ProviderLimit
from chorus.storage import provider_rates
from chorus.storage.db import DB_ERRORS

RATE_HEARTBEAT_S = 5.0
"""Longest sleep between two ``on_wait`` calls while waiting for the rate (the LLM activity
heartbeats there; its heartbeat timeout is 30 s)."""
SLOT_LINGER_S = 0.1
"""How long a worker keeps a slot it gave back locked for its own next call, in seconds."""
SLOT_MAX_HOLD_S = 1.0
"""A slot locked this long (in seconds, across reuses) is unlocked on its next release."""
_SESSION_LOST: tuple[type[Exception], ...] = (*DB_ERRORS, asyncpg.InternalClientError)
"""What a slot statement raises when the session is gone (a session the server ended while
idle can surface as asyncpg's protocol-state error on the next statement)."""


class SlotTimeoutError(ChorusUnavailableError):
    """No concurrency slot of a provider became free in time."""


class RateBacklogError(ChorusUnavailableError):
    """A provider's calls already queued across the fleet would delay this one too long.

    Attributes:
        retry_after_s: Seconds until a call would start without waiting, as of the refusal.
    """

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class FleetRateLimiter:
    """Requests per minute per provider, shared by every worker through PostgreSQL.

    A GCRA over the ``llm_rate_limits`` table (migration 0005): one row per provider holding
    the theoretical arrival time of its next call. Each :meth:`acquire` runs one statement
    that reserves a start time and then sleeps until it; providers without a rate run no
    query at all.

    Args:
        pool: Chorus's PostgreSQL pool.
        limits: Provider -> limits (providers missing or with ``rpm`` 0 are unlimited).
    """

    def __init__(self, pool: asyncpg.Pool, limits: Mapping[str, ProviderLimit]) -> None:
        self._pool = pool
        self._limits = dict(limits)

    async def acquire(
        self,
        provider: str,
        *,
        max_wait_s: float = SLOT_WAIT_S,
        on_wait: Callable[[], None] | None = None,
    ) -> float:
        """Reserve the next start of a call to ``provider`` and sleep until it.

        Args:
            provider: Provider name.
            max_wait_s: Longest wait accepted, in seconds.
            on_wait: Called at least every :data:`RATE_HEARTBEAT_S` seconds while sleeping
                (the activity heartbeats there).

        Returns:
            Seconds waited (0 when the call may start at once or the provider is unlimited).

        Raises:
            RateBacklogError: The start would be more than ``max_wait_s`` seconds away;
                nothing was reserved.
            OSError, asyncpg.PostgresError, asyncpg.InterfaceError: PostgreSQL failed.
        """
        args = self.rate_args(provider)
        if args is None:
            return 0.0
        interval_s, tolerance_s = args
        wait_s = await provider_rates.reserve_start(
            self._pool, provider, interval_s, tolerance_s, max_wait_s
        )
        if wait_s is None:
            raise await self.backlog_error(provider, max_wait_s)
        await _sleep(wait_s, on_wait)
        return wait_s

    def rate_args(self, provider: str) -> tuple[float, float] | None:
        """``(seconds between starts, burst tolerance in seconds)`` of ``provider``'s GCRA.

        Its row's key is the provider's name. ``None`` when it has no requests-per-minute
        limit.
        """
        limit = self._limits.get(provider)
        if limit is None or limit.rpm <= 0:
            return None
        interval_s = 60.0 / limit.rpm
        return interval_s, (limit.effective_burst - 1) * interval_s

    def has_tpm(self, provider: str) -> bool:
        """Whether ``provider`` has a tokens-per-minute limit."""
        limit = self._limits.get(provider)
        return limit is not None and limit.tpm > 0

    async def backlog_error(self, provider: str, max_wait_s: float) -> RateBacklogError:
        """The error of a start refused for being more than ``max_wait_s`` seconds away.

        Raises:
            OSError, asyncpg.PostgresError, asyncpg.InterfaceError: PostgreSQL failed.
        """
        args = self.rate_args(provider)
        tolerance_s = args[1] if args else 0.0
        next_start_s = await provider_rates.next_start(self._pool, provider, tolerance_s)
        retry_after_s = next_start_s if next_start_s is not None else max_wait_s
        rpm = self._limits[provider].rpm if provider in self._limits else 0
        return RateBacklogError(
            f"provider {provider}: calls queued across the fleet would delay this one "
            f"{retry_after_s:.0f} s, more than {max_wait_s:.0f} s (limit: {rpm:g} "
            "requests/min, CHORUS_PROVIDER_LIMITS)",
            retry_after_s,
        )

    async def sleep(self, wait_s: float, on_wait: Callable[[], None] | None = None) -> None:
        """Sleep until a reserved start.

        ``on_wait`` is called at least every :data:`RATE_HEARTBEAT_S` seconds.
        """
        await _sleep(wait_s, on_wait)

    def token_cost(self, provider: str, tokens: int) -> int:
        """Tokens a call of ``tokens`` worst-case tokens reserves (0: no tpm limit)."""
        limit = self._limits.get(provider)
        if limit is None or limit.tpm <= 0:
            return 0
        return max(1, min(tokens, math.floor(limit.tpm)))

    async def acquire_tokens(
        self,
        provider: str,
        tokens: int,
        *,
        max_wait_s: float = SLOT_WAIT_S,
        on_wait: Callable[[], None] | None = None,
    ) -> tuple[int, float]:
        """Reserve ``tokens`` of the provider's fleet-wide tokens per minute, sleeping for them.

        Args:
            provider: Provider name.
            tokens: The call's worst case, input + output tokens.
            max_wait_s: Longest wait accepted, in seconds.
            on_wait: Called at least every :data:`RATE_HEARTBEAT_S` seconds while sleeping.

        Returns:
            ``(tokens reserved, seconds waited)``; ``(0, 0.0)`` when the provider has no tpm
            limit (no query is run).

        Raises:
            RateBacklogError: The tokens would be free more than ``max_wait_s`` seconds from
                now; nothing was reserved.
            OSError, asyncpg.PostgresError, asyncpg.InterfaceError: PostgreSQL failed.
        """
        cost = self.token_cost(provider, tokens)
        if cost == 0:
            return 0, 0.0
        limit = self._limits[provider]
        per_token_s = 60.0 / limit.tpm
        capacity = math.floor(limit.tpm)
        key = tokens_key(provider)
        tolerance_s = (capacity - cost) * per_token_s
        wait_s = await provider_rates.reserve_start(
            self._pool, key, cost * per_token_s, tolerance_s, max_wait_s
        )
        if wait_s is None:
            next_start_s = await provider_rates.next_start(self._pool, key, tolerance_s)
            retry_after_s = next_start_s if next_start_s is not None else max_wait_s
            raise RateBacklogError(
                f"provider {provider}: {cost} tokens would be free in {retry_after_s:.0f} s, "
                f"more than {max_wait_s:.0f} s (limit: {limit.tpm:g} tokens/min)",
                retry_after_s,
            )
        await _sleep(wait_s, on_wait)
        return cost, wait_s

    async def settle_tokens(self, provider: str, reserved: int, used: int) -> None:
        """Give back the part of a reservation the call did not use.

        Args:
            provider: Provider name.
            reserved: Tokens :meth:`acquire_tokens` reserved.
            used: Tokens the call used (input + output as the provider reported them).

        Raises:
            OSError, asyncpg.PostgresError, asyncpg.InterfaceError: PostgreSQL failed.
        """
        limit = self._limits.get(provider)
        unused = reserved - used
        if limit is None or limit.tpm <= 0 or reserved <= 0 or unused <= 0:
            return
        await provider_rates.give_back(self._pool, tokens_key(provider), unused * 60.0 / limit.tpm)


def tokens_key(provider: str) -> str:
    """The ``llm_rate_limits`` row of a provider's tokens per minute (names have no ``:``)."""
    return f"tpm:{provider}"


async def _sleep(wait_s: float, on_wait: Callable[[], None] | None) -> None:
    """Sleep ``wait_s`` seconds, calling ``on_wait`` at least every ``RATE_HEARTBEAT_S``."""
    remaining = wait_s
    while remaining > 0:
        if on_wait is not None:
            on_wait()
        step = min(remaining, RATE_HEARTBEAT_S)
        await asyncio.sleep(step)
        remaining -= step


class FleetSemaphore:
    """N concurrency slots per provider, shared by every worker through PostgreSQL.

    Slots are session advisory locks taken on one pooled connection per worker, held while
    the worker has any slot locked and returned to the pool when it holds none (the last
    unlock runs ``pg_advisory_unlock_all()``; a connection returned otherwise gets the pool's
    full reset, ``chorus.storage.db.mark_session_state``).

    A released slot lingers: it stays locked, unused, for ``linger_s``, and an
    :meth:`acquire` of the same provider meanwhile takes it back without a statement. A
    background task unlocks the slots that lingered unused; a release of a slot locked for
    ``max_hold_s`` or more unlocks it at once. Lingering slots count against the limit like
    busy ones, so other workers may wait up to ``linger_s`` longer for a slot.

    Args:
        pool: Chorus's PostgreSQL pool.
        limits: Provider -> concurrency (providers missing or 0 are unlimited).
        linger_s: See :data:`SLOT_LINGER_S` (0: unlock on every release).
        max_hold_s: See :data:`SLOT_MAX_HOLD_S`.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        limits: dict[str, int],
        *,
        linger_s: float = SLOT_LINGER_S,
        max_hold_s: float = SLOT_MAX_HOLD_S,
    ) -> None:
        self._pool = pool
        self._limits = limits
        self._linger_s = linger_s
        self._max_hold_s = max_hold_s
        self._conn: asyncpg.pool.PoolConnectionProxy | None = None
        self._held: dict[tuple[str, int], float] = {}
        """Slots locked on ``_conn`` (busy or lingering) -> when they were locked (monotonic)."""
        self._idle: dict[tuple[str, int], float] = {}
        """Lingering slots -> when they are to be unlocked (monotonic)."""
        self._lock = asyncio.Lock()
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False
        self.statements = 0
        """Lock and unlock statements run so far (tests and benchmarks count them)."""

    def limit(self, provider: str) -> int:
        """Concurrency limit of ``provider`` (0 = unlimited)."""
        return self._limits.get(provider, 0)

    @property
    def lingering(self) -> int:
        """Slots released and still locked for this worker's next call."""
        return len(self._idle)

    async def acquire(
        self,
        provider: str,
        *,
        wait_s: float = SLOT_WAIT_S,
        on_wait: Callable[[], None] | None = None,
    ) -> int | None:
        """Take a free slot of ``provider``, waiting up to ``wait_s`` seconds.

        A slot of ``provider`` this worker released within ``linger_s`` is taken first,
        without a statement.

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
                for key in self._idle:
                    if key[0] == provider:
                        del self._idle[key]
                        return key[1]
                for slot in random.sample(range(n), n):
                    if (provider, slot) in self._held:
                        continue
                    conn = await self._connection()
                    self.statements += 1
                    if await provider_rates.try_lock_slot(conn, provider, slot):
                        self._held[(provider, slot)] = time.monotonic()
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
        """Give a slot back (no-op for ``None``): it lingers, or is unlocked if held long."""
        if slot is None:
            return
        key = (provider, slot)
        now = time.monotonic()
        locked_at = self._held.get(key)
        if (
            self._linger_s > 0
            and not self._closed
            and self._conn is not None
            and locked_at is not None
            and now - locked_at < self._max_hold_s
        ):
            self._idle[key] = now + self._linger_s
            if self._reaper is None or self._reaper.done():
                self._reaper = asyncio.get_running_loop().create_task(self._reap())
            return
        async with self._lock:
            self._idle.pop(key, None)
            await self._unlock([key])

    async def close(self) -> None:
        """Unlock the lingering slots now; later releases unlock at once (idempotent)."""
        self._closed = True
        reaper, self._reaper = self._reaper, None
        if reaper is not None and not reaper.done():
            reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reaper
        async with self._lock:
            keys, self._idle = list(self._idle), {}
            await self._unlock(keys)

    async def _reap(self) -> None:
        """Unlock slots that lingered unused; ends when none lingers."""
        while self._idle:
            await asyncio.sleep(max(0.0, min(self._idle.values()) - time.monotonic()))
            async with self._lock:
                now = time.monotonic()
                expired = [key for key, until in self._idle.items() if until <= now]
                for key in expired:
                    del self._idle[key]
                await self._unlock(expired)

    async def _unlock(self, keys: list[tuple[str, int]]) -> None:
        """Unlock ``keys`` (held under ``_lock``); return the connection if none is left."""
        keys = [key for key in keys if self._held.pop(key, None) is not None]
        if keys and self._conn is not None:
            try:
                if self._held:
                    for provider, slot in keys:
                        self.statements += 1
                        await provider_rates.unlock_slot(self._conn, provider, slot)
                else:  # the last ones: one statement, and the connection goes back clean
                    self.statements += 1
                    await provider_rates.unlock_all_slots(self._conn)
            except _SESSION_LOST:
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
        """Give the connection back after its session failed (its locks went with it)."""
        self._held.clear()  # nothing is locked any more: lingering slots are not reused,
        self._idle.clear()  # and busy ones are not given back to another session
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._pool.release(conn)
