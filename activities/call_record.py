"""The record of one LLM call: message row, cost ledger and budget settlement, exactly once.

A completion that arrived is paid for. :class:`CallRecorder` makes sure it is recorded once
and never bought twice:

- :meth:`CallRecorder.reusable` finds a completion an earlier attempt of the same activity
  received (in its heartbeat details) or recorded (in PostgreSQL), so the retry reuses it
  instead of calling the provider again;
- :meth:`CallRecorder.record` stores the call and settles its budget reservation, riding out a
  PostgreSQL outage until the attempt's deadline is near, and is not interrupted by a
  cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from temporalio import activity

from activities.prompts import Prompt, transcript_of
from activities.storage_outage import (
    RECORD_RETRY_INITIAL_S,
    RECORD_RETRY_MAX_S,
    STORAGE_WAIT_S,
    retry_storage,
    storage_error,
)
from chorus.config.settings import Settings
from chorus.contracts.models import LLMRequest, LLMResponse
from chorus.contracts.tools import ToolCall
from chorus.governance import budget
from chorus.governance.pii import Redactor
from chorus.governance.pricing import PRICE_DATA_VERSION
from chorus.storage import db
from chorus.storage.db import DB_ERRORS


@dataclass(frozen=True)
class _StoredTexts:
    """What one call leaves in ``messages``: prompts and completion after ``record_pii``."""

    system: str
    user: str
    completion: str


class CallRecorder:
    """Records LLM calls in PostgreSQL and finds the ones an earlier attempt paid for.

    Args:
        pool: Chorus's PostgreSQL pool.
        settings: Budget alert threshold (settlement).
        redactor: Applies each agent's ``record_pii`` policy to what is stored.
    """

    def __init__(self, pool: asyncpg.Pool, settings: Settings, redactor: Redactor) -> None:
        self._pool = pool
        self._settings = settings
        self._redactor = redactor

    async def reusable(self, info: activity.Info, workflow_id: str) -> LLMResponse | None:
        """The completion an earlier attempt of this activity already paid for, if any.

        A previous attempt may have received the completion and then failed to record it
        (kept in its heartbeat details), or recorded it and died before reporting (its worker
        was killed).

        Raises:
            ApplicationError: ``StorageUnavailable`` when PostgreSQL stays down for
                ``STORAGE_WAIT_S`` (retried: calling the provider again could pay twice).
        """
        response = _previous_response(info.heartbeat_details)
        if response is None and info.attempt > 1:
            response = await retry_storage(
                lambda: self._recorded_response(workflow_id, info.activity_id), STORAGE_WAIT_S
            )
        return response

    async def record(
        self,
        req: LLMRequest,
        prompt: Prompt,
        response: LLMResponse,
        workflow_id: str,
        info: activity.Info,
        *,
        margin_s: float,
    ) -> list[str]:
        """Record the call (message + ledger) and settle its budget reservation.

        A cancellation (the run was cancelled) does not interrupt the recording, or the run's
        totals would miss a paid call: the recording finishes, then the cancellation is
        raised.

        A paid completion must not be lost to a database outage, and must not be bought
        twice. So while PostgreSQL does not answer, this retries on its own schedule (0.5 s
        doubling to ``RECORD_RETRY_MAX_S``), heartbeating the completion, until the attempt's
        start-to-close deadline is ``margin_s`` away; then the attempt fails
        ``StorageUnavailable`` with the completion in its heartbeat details, and the next
        attempt (Temporal's retry) records it without calling the provider. With default agent
        settings the LLM retry policy's 4 attempts of ~190 s ride out an outage of about 12
        minutes.

        Args:
            req: The call's request.
            prompt: The prompt as sent.
            response: The completion (PII placeholders already restored).
            workflow_id: Workflow of the call.
            info: The activity attempt (id, deadline).
            margin_s: Stop retrying this long before the attempt's deadline, in seconds.

        Returns:
            The budget periods whose alert threshold this call crossed.

        Raises:
            ApplicationError: ``StorageUnavailable`` (retryable) when the deadline comes first.
        """
        recording = asyncio.ensure_future(
            self._record(req, prompt, response, workflow_id, info, margin_s)
        )
        try:
            return await asyncio.shield(recording)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await recording
            raise

    async def _record(
        self,
        req: LLMRequest,
        prompt: Prompt,
        response: LLMResponse,
        workflow_id: str,
        info: activity.Info,
        margin_s: float,
    ) -> list[str]:
        deadline = (
            info.started_time.timestamp() + info.start_to_close_timeout.total_seconds()
            if info.start_to_close_timeout
            else None
        )
        delay = RECORD_RETRY_INITIAL_S
        failures = 0
        while True:
            try:
                return await self._record_once(req, prompt, response, workflow_id, info)
            except DB_ERRORS as exc:
                failures += 1
                activity.heartbeat(response.model_dump(mode="json"))
                left = deadline - time.time() if deadline is not None else 0.0
                if left < delay + margin_s:
                    raise storage_error(
                        f"agent {req.agent}: completion received but not recorded in "
                        f"PostgreSQL after {failures} tries ({exc}); the retry reuses it"
                    ) from exc
                if failures == 1:
                    activity.logger.warning(
                        "agent %s: cannot record the completion (%s); retrying until "
                        "PostgreSQL answers (%.0f s left in this attempt)",
                        req.agent,
                        exc,
                        left,
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECORD_RETRY_MAX_S)

    async def _record_once(
        self,
        req: LLMRequest,
        prompt: Prompt,
        response: LLMResponse,
        workflow_id: str,
        info: activity.Info,
    ) -> list[str]:
        completion = response.output
        if response.tool_calls:
            calls = [{"name": c.name, "arguments": c.arguments} for c in response.tool_calls]
            completion = f"{completion}\n[tool calls] {json.dumps(calls)}".strip()
        user = prompt.user
        if prompt.turns:
            user = f"{user}\n\n{transcript_of(prompt.turns)}"
        stored = self._for_record(req, Prompt(prompt.system, user, 0), completion)
        root_workflow_id = req.root_workflow_id or workflow_id
        alert, periods = budget.settlement(
            self._settings,
            workflow_id=workflow_id,
            root_workflow_id=root_workflow_id,
            agent=req.agent,
            api_key=req.api_key,
        )
        # The record and the budget settlement in one statement (committed together).
        crossed = await db.record_call(
            self._pool,
            workflow_id=workflow_id,
            root_workflow_id=root_workflow_id,
            activity_id=info.activity_id,
            agent=req.agent,
            agent_version=req.agent_version,
            provider=response.provider,
            model=response.model,
            system_prompt=stored.system,
            user_prompt=stored.user,
            completion=stored.completion,
            input_tokens=response.input_tokens,
            output_tokens=response.output_tokens,
            cost_usd=response.cost_usd,
            cost_known=response.cost_known,
            latency_ms=response.latency_ms,
            attempt=response.attempt,
            truncated_chars=response.truncated_chars,
            cached_input_tokens=response.cached_input_tokens,
            cache_write_tokens=response.cache_write_tokens,
            price_data=PRICE_DATA_VERSION if response.provider != "local" else None,
            tool_calls=[c.model_dump(mode="json") for c in response.tool_calls],
            cached=response.cached,
            settle_periods=periods,
            settle_alert=alert,
        )
        return [crossed] if crossed else []

    def _for_record(self, req: LLMRequest, prompt: Prompt, completion: str) -> _StoredTexts:
        """The prompts and completion as the agent's ``record_pii`` policy lets them be stored."""
        if req.record_pii == "off":
            return _StoredTexts(prompt.system, prompt.user, completion)
        texts = [
            self._redactor.redact(t, req.record_pii).text
            for t in (prompt.system, prompt.user, completion)
        ]
        return _StoredTexts(*texts)

    async def _recorded_response(self, workflow_id: str, activity_id: str) -> LLMResponse | None:
        """The completion an earlier attempt of this activity recorded in PostgreSQL, if any.

        Raises:
            ApplicationError: ``StorageUnavailable`` when PostgreSQL does not answer (retried:
                calling the provider again could pay twice).
        """
        try:
            row = await db.recorded_call(self._pool, workflow_id, activity_id)
        except DB_ERRORS as exc:
            raise storage_error(
                f"cannot check PostgreSQL for an earlier attempt's completion ({exc})"
            ) from exc
        if row is None:
            return None
        return LLMResponse(
            provider=row["provider"],
            model=row["model"],
            output=row["completion"],
            input_tokens=row["input_tokens"],
            output_tokens=row["output_tokens"],
            cost_usd=float(row["cost_usd"]),
            cost_known=bool(row["cost_known"]),
            latency_ms=float(row["latency_ms"]),
            attempt=row["attempt"],
            truncated_chars=row["truncated_chars"],
            cached_input_tokens=row["cached_input_tokens"],
            cache_write_tokens=row["cache_write_tokens"],
            tool_calls=[ToolCall.model_validate(c) for c in row["tool_calls"] or []],
            cached=bool(row["cached"]),
        )


def _previous_response(details: Sequence[Any]) -> LLMResponse | None:
    """A completion an earlier attempt stored in its heartbeat details, if any."""
    for item in reversed(details):
        if isinstance(item, dict) and "output" in item and "provider" in item:
            try:
                return LLMResponse.model_validate(item)
            except ValueError:
                return None
    return None
