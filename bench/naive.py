"""The naive Temporal baseline for ``bench.overhead``: the floor Temporal itself sets here.

A plain sandboxed workflow that runs one activity per request body — sequentially, or all at
once — each activity posting the body with ``AsyncOpenAI``: no PostgreSQL record, budgets,
limits, PII redaction, search attributes or logging context. Measured in the same run as
Chorus and the direct calls, it splits Chorus's overhead into what any Temporal workflow pays
on this machine and server (task dispatch, workflow tasks, history writes) and what Chorus adds.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow

NAIVE_CALL = "bench.naive_call"


@workflow.defn(name="BenchNaive")
class NaiveWorkflow:
    """Run one ``bench.naive_call`` activity per body; ``parallel`` starts them all at once."""

    @workflow.run
    async def run(self, bodies: list[dict[str, Any]], parallel: bool) -> list[str]:
        """Return each call's output, in the order of ``bodies``."""
        options: dict[str, Any] = {"start_to_close_timeout": timedelta(seconds=60)}
        if parallel:
            return list(
                await asyncio.gather(
                    *(workflow.execute_activity(NAIVE_CALL, b, **options) for b in bodies)
                )
            )
        return [await workflow.execute_activity(NAIVE_CALL, b, **options) for b in bodies]


def plain_request(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` without streaming: what a naive integration sends (one JSON answer).

    Chorus streams its calls to run readers (``CHORUS_STREAM_TOKENS``); the request bodies
    recorded at the stub carry ``stream``/``stream_options``, which the baselines drop.
    """
    return {k: v for k, v in body.items() if k not in ("stream", "stream_options")}


class NaiveActivities:
    """``bench.naive_call`` with one shared OpenAI client; ``noop`` answers at once."""

    def __init__(self, noop: bool = False) -> None:
        self._noop = noop
        self._client: Any = None

    @activity.defn(name=NAIVE_CALL)
    async def call(self, body: dict[str, Any]) -> str:
        """Post ``body`` to the OpenAI-compatible endpoint (``OPENAI_BASE_URL``); its text."""
        if self._noop:
            return ""
        if self._client is None:
            from openai import AsyncOpenAI

            self._client = AsyncOpenAI(max_retries=0)
        reply = await self._client.chat.completions.create(**plain_request(body))
        return reply.choices[0].message.content or ""

    async def close(self) -> None:
        """Close the HTTP client."""
        if self._client is not None:
            await self._client.close()
