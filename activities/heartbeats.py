"""Heartbeating around a long await, shared by the LLM and tool activities."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from temporalio import activity

T = TypeVar("T")


async def with_heartbeats(call: Awaitable[T]) -> T:
    """Await ``call`` while heartbeating every third of the heartbeat timeout (>= 0.5 s).

    A worker that crashes mid-call stops heartbeating, so Temporal retries the call after the
    heartbeat timeout instead of the whole start-to-close timeout. Outside an activity, or
    without a heartbeat timeout, it just awaits ``call``.
    """
    if not activity.in_activity():
        return await call
    timeout = activity.info().heartbeat_timeout
    if not timeout:
        return await call
    interval = max(0.5, timeout.total_seconds() / 3)

    async def beat() -> None:
        # The first beat after one interval, not at once: the heartbeat timeout counts from
        # the attempt's start, and a beat at once cost every call a RecordActivityTaskHeartbeat
        # round trip to the server (issue 19), though most calls end long before a beat is due.
        while True:
            await asyncio.sleep(interval)
            activity.heartbeat()

    beater = asyncio.create_task(beat())
    try:
        return await call
    finally:
        beater.cancel()
