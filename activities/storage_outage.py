"""How ``chorus.call_llm`` rides out a PostgreSQL outage: typed errors and bounded waits.

A short outage (a restart, a failover) should cost time, not one of the provider's attempts:
before the provider call nothing is paid yet, so the attempt waits for PostgreSQL within
:data:`STORAGE_WAIT_S`; after it the completion is paid for, so recording retries until the
attempt's deadline is near (:mod:`activities.call_record`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from chorus.contracts import errors

T = TypeVar("T")

RECORD_RETRY_INITIAL_S = 0.5
"""First wait before recording a received completion again while PostgreSQL is down (s)."""
RECORD_RETRY_MAX_S = 10.0
"""Longest wait between recording tries (s); below the 30 s heartbeat timeout."""
STORAGE_WAIT_S = 30.0
"""Longest an attempt waits for PostgreSQL before the provider call (rate, budget), in s;
part of ``SLOT_WAIT_S``, so the attempt's start-to-close timeout still holds."""


def storage_error(message: str) -> ApplicationError:
    """A retryable ``StorageUnavailable`` error of the current attempt."""
    return ApplicationError(message, activity.info().attempt, type=errors.STORAGE_UNAVAILABLE)


async def retry_storage(step: Callable[[], Awaitable[T]], budget_s: float) -> T:
    """Run ``step`` again while it fails ``StorageUnavailable``, for at most ``budget_s``.

    Waits 0.5 s doubling to ``RECORD_RETRY_MAX_S`` between tries, heartbeating, so a short
    PostgreSQL outage (a restart, a failover) costs time rather than one of the provider's
    4 attempts.

    Raises:
        ApplicationError: The last ``StorageUnavailable`` when the budget runs out, or any
            other error of ``step`` at once.
    """
    started = time.monotonic()
    delay = RECORD_RETRY_INITIAL_S
    while True:
        try:
            return await step()
        except ApplicationError as exc:
            if exc.type != errors.STORAGE_UNAVAILABLE:
                raise
            if time.monotonic() - started + delay > budget_s:
                raise
            if activity.in_activity():
                activity.heartbeat()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECORD_RETRY_MAX_S)
