"""The ``chorus.call_llm`` activity: one completion from one provider.

Temporal owns retries: the SDK clients are built with ``max_retries=0`` and every failure is
mapped to an ``ApplicationError`` whose type (see :mod:`chorus.contracts.errors`) tells the retry
policy
and the workflow's provider fallback what to do:

- HTTP 429 -> ``RateLimited``; 408, 409, 5xx, timeouts and connection errors ->
  ``ProviderUnavailable``: retryable, with ``Retry-After``/``retry-after-ms`` as the next retry
  delay (capped by ``CHORUS_MAX_RETRY_AFTER_S``).
- 401/403 -> ``ProviderAuthError``, 404 -> ``ModelNotFound``: non-retryable, next provider.
- Other 4xx -> ``InvalidRequest``: non-retryable and no fallback.
- A response header ``x-should-retry: true|false`` overrides whether the error is retried (the
  type stays), as the OpenAI and Anthropic SDKs' own retry loops do.

The mapping follows temporalio's own ``contrib/openai_agents`` model activity.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import anthropic
import asyncpg
import httpx2
import openai
from anthropic import AsyncAnthropic
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from openai import AsyncOpenAI
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.prompts import Prompt, build_prompt
from activities.runs import workflow_ids
from chorus.config.settings import Settings
from chorus.contracts import errors
from chorus.contracts.models import LLMRequest, LLMResponse
from chorus.contracts.names import CALL_LLM_ACTIVITY
from chorus.governance import budget
from chorus.governance.pii import Redactor, restore
from chorus.governance.pricing import PRICE_DATA_VERSION, context_window, cost_usd
from chorus.governance.provider_limits import (
    SLOT_WAIT_S,
    FleetRateLimiter,
    FleetSemaphore,
    RateBacklogError,
    SlotTimeoutError,
)
from chorus.integrations import local_model
from chorus.integrations.webhooks import signed_headers
from chorus.observability import metrics
from chorus.observability.logs import SecretScrubber, secret_values
from chorus.storage import db
from chorus.storage.db import DB_ERRORS

T = TypeVar("T")
Usage = tuple[int, int, int, int]
"""Token usage of one call: input (cached included), output, cached input, cache writes."""

RECORD_RETRY_INITIAL_S = 0.5
"""First wait before recording a received completion again while PostgreSQL is down (s)."""
RECORD_RETRY_MAX_S = 10.0
"""Longest wait between recording tries (s); below the 30 s heartbeat timeout."""
STORAGE_WAIT_S = 30.0
"""Longest an attempt waits for PostgreSQL before the provider call (rate, budget), in s;
part of ``SLOT_WAIT_S``, so the attempt's start-to-close timeout still holds."""
RECORD_DEADLINE_MARGIN_S = 5.0
"""Recording tries stop this long before the attempt's start-to-close deadline (s), so the
attempt fails cleanly with the completion in its heartbeat details."""


@dataclass(frozen=True)
class _StoredTexts:
    """What one call leaves in ``messages``: prompts and completion after ``record_pii``."""

    system: str
    user: str
    completion: str


@dataclass
class ProviderClients:
    """SDK clients, built once per worker; ``None`` where the provider is not configured."""

    openai: AsyncOpenAI | None
    anthropic: AsyncAnthropic | None
    local: AsyncOpenAI | None

    @classmethod
    def from_settings(cls, settings: Settings) -> ProviderClients:
        """Build the clients the environment allows.

        The OpenAI and Anthropic SDKs read ``OPENAI_API_KEY``/``OPENAI_BASE_URL`` and
        ``ANTHROPIC_API_KEY``/``ANTHROPIC_BASE_URL`` themselves; the local provider uses
        ``CHORUS_LOCAL_BASE_URL``. SDK retries are off (``max_retries=0``).
        """
        return cls(
            openai=AsyncOpenAI(max_retries=0)
            if settings.provider_configured("openai")[0]
            else None,
            anthropic=AsyncAnthropic(max_retries=0)
            if settings.provider_configured("anthropic")[0]
            else None,
            local=AsyncOpenAI(
                base_url=settings.local_base_url, api_key=settings.local_api_key, max_retries=0
            )
            if settings.local_base_url
            else None,
        )

    async def close(self) -> None:
        """Close the HTTP connection pools."""
        for client in (self.openai, self.anthropic, self.local):
            if client is not None:
                await client.close()


def parse_retry_after(headers: Mapping[str, str], cap_s: float) -> timedelta | None:
    """Read a server's retry hint: ``retry-after-ms``, or ``Retry-After`` (seconds or HTTP date).

    Args:
        headers: Response headers (case-insensitive mapping).
        cap_s: Largest delay honoured, in seconds.

    Returns:
        The delay, capped at ``cap_s``; ``None`` when absent or unparseable.

    """
    seconds: float | None = None
    if (ms := headers.get("retry-after-ms")) is not None:
        with contextlib.suppress(ValueError):
            seconds = float(ms) / 1000.0
    if seconds is None and (value := headers.get("retry-after")) is not None:
        try:
            seconds = float(value)
        except ValueError:
            with contextlib.suppress(TypeError, ValueError):
                when = email.utils.parsedate_to_datetime(value)
                seconds = (when - datetime.now(UTC)).total_seconds()
    if seconds is None or seconds < 0:
        return None
    return timedelta(seconds=min(seconds, cap_s))


def map_provider_error(exc: Exception, provider: str, model: str, cap_s: float) -> ApplicationError:
    """Translate an OpenAI/Anthropic SDK exception into a typed ``ApplicationError``.

    The message is scrubbed of secrets (API keys, bearer tokens, the configured secret values:
    :class:`chorus.observability.logs.SecretScrubber`) before it leaves the activity: a provider
    may quote
    the request's key in its error text, and the message is stored in the history, in
    ``runs.error`` and printed by the CLI.

    Args:
        exc: The SDK exception.
        provider: Provider name, for the message.
        model: Model name, for the message.
        cap_s: Cap on ``Retry-After`` in seconds.

    Returns:
        An error to raise; see the module docstring for the mapping.

    """
    error = _map_provider_error(exc, provider, model, cap_s)
    non_retryable = error.non_retryable
    if isinstance(exc, openai.APIStatusError | anthropic.APIStatusError):
        # The provider's own verdict wins over the status code, as in the OpenAI and Anthropic
        # SDKs' retry loops (``x-should-retry: true|false``).
        should_retry = exc.response.headers.get("x-should-retry", "").strip().lower()
        if should_retry in ("true", "false"):
            non_retryable = should_retry == "false"
    return ApplicationError(
        SecretScrubber(secret_values()).scrub(error.message),
        *error.details,
        type=error.type,
        non_retryable=non_retryable,
        next_retry_delay=error.next_retry_delay,
    )


def _map_provider_error(
    exc: Exception, provider: str, model: str, cap_s: float
) -> ApplicationError:
    attempt = activity.info().attempt if activity.in_activity() else 1
    where = f"{provider}:{model}"
    if isinstance(exc, openai.APIStatusError | anthropic.APIStatusError):
        status = exc.status_code
        delay = parse_retry_after(exc.response.headers, cap_s)
        detail = _error_detail(exc)
        if status == 429:
            return ApplicationError(
                f"{where}: rate limited (HTTP 429){detail}",
                attempt,
                type=errors.RATE_LIMITED,
                next_retry_delay=delay,
            )
        if status in (408, 409) or status >= 500:
            return ApplicationError(
                f"{where}: provider error HTTP {status}{detail}",
                attempt,
                type=errors.PROVIDER_UNAVAILABLE,
                next_retry_delay=delay,
            )
        if status in (401, 403):
            return ApplicationError(
                f"{where}: authentication refused (HTTP {status}); check the API key{detail}",
                attempt,
                type=errors.PROVIDER_AUTH,
                non_retryable=True,
            )
        if status == 404:
            return ApplicationError(
                f"{where}: model or endpoint not found (HTTP 404){detail}",
                attempt,
                type=errors.MODEL_NOT_FOUND,
                non_retryable=True,
            )
        return ApplicationError(
            f"{where}: request rejected (HTTP {status}){detail}",
            attempt,
            type=errors.INVALID_REQUEST,
            non_retryable=True,
        )
    if isinstance(exc, openai.APITimeoutError | anthropic.APITimeoutError):
        return ApplicationError(
            f"{where}: request timed out", attempt, type=errors.PROVIDER_UNAVAILABLE
        )
    if isinstance(exc, openai.APIConnectionError | anthropic.APIConnectionError):
        # httpx2's ReadError on a reset connection has an empty message: name its type (by
        # name: each SDK may raise its own copy of the transport's classes).
        cause = exc.__cause__ or exc
        kind = type(cause).__name__
        detail = f"{kind}: {cause}" if str(cause) else kind
        connecting = kind in ("ConnectError", "ConnectTimeout")
        what = "cannot connect" if connecting else "connection lost"
        return ApplicationError(
            f"{where}: {what} ({detail})",
            attempt,
            type=errors.PROVIDER_UNAVAILABLE,
        )
    return ApplicationError(
        f"{where}: unexpected error {type(exc).__name__}: {exc}",
        attempt,
        type=errors.PROVIDER_UNAVAILABLE,
    )


def _error_detail(exc: openai.APIStatusError | anthropic.APIStatusError) -> str:
    body = exc.body
    message: Any = None
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
    if message is None:
        message = exc.message
    text = str(message).strip()
    return f": {text[:500]}" if text else ""


async def _with_heartbeats(call: Awaitable[T]) -> T:
    """Await ``call`` while heartbeating, so a crashed worker's call is retried quickly."""
    if not activity.in_activity():
        return await call
    timeout = activity.info().heartbeat_timeout
    if not timeout:
        return await call
    interval = max(0.5, timeout.total_seconds() / 3)

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(interval)

    beater = asyncio.create_task(beat())
    try:
        return await call
    finally:
        beater.cancel()


class LLMActivities:
    """LLM calls for all providers; holds the SDK clients and pool for the worker's lifetime."""

    def __init__(self, clients: ProviderClients, settings: Settings, pool: asyncpg.Pool) -> None:
        self._clients = clients
        self._settings = settings
        self._pool = pool
        self._documents: OrderedDict[str, str] = OrderedDict()
        self._redactor = Redactor()
        self._rate = FleetRateLimiter(pool, settings.provider_limits)
        self._slots = FleetSemaphore(
            pool, {name: limit.concurrency for name, limit in settings.provider_limits.items()}
        )

    async def _document(self, req: LLMRequest) -> str:
        """The request's document: inline, or loaded by reference (a few kept in memory)."""
        if req.document_ref is None:
            return req.document
        key = req.document_ref.blob_id
        if key in self._documents:
            self._documents.move_to_end(key)
            return self._documents[key]
        try:
            text = await db.get_text(self._pool, req.document_ref)
        except DB_ERRORS as exc:
            raise _storage_error(f"cannot load document {key} from PostgreSQL: {exc}") from exc
        self._documents[key] = text
        while len(self._documents) > 4:
            self._documents.popitem(last=False)
        return text

    @activity.defn(name=CALL_LLM_ACTIVITY)
    async def call_llm(self, req: LLMRequest) -> LLMResponse:
        """Ask one provider for one completion.

        Args:
            req: Agent, provider, model, prompt parts and sampling settings.

        Returns:
            The completion with token usage from the provider's response, its cost in USD
            (:mod:`chorus.governance.pricing`), latency in ms and the attempt number.

        Raises:
            ApplicationError: Typed per :mod:`chorus.contracts.errors`; ``details[0]`` is the
            attempt.

        """
        info = activity.info()
        if info.attempt > 1:
            labels = {"provider": req.provider, "model": req.model, "agent": req.agent}
            metrics.LLM_RETRIES.labels(**labels).inc()
        window = context_window(req.provider, req.model, self._settings.local_context_tokens)
        document = await self._document(req)
        prompt = build_prompt(req.model_copy(update={"document": document}), window)
        if prompt.truncated_chars:
            activity.logger.warning(
                "agent %s: cut %d characters of input to fit %s:%s's %d-token context window",
                req.agent,
                prompt.truncated_chars,
                req.provider,
                req.model,
                window,
            )
        feedback, output_failures = _output_feedback(info.heartbeat_details)
        if feedback:
            prompt = _with_feedback(prompt, feedback)
        prompt, placeholders = self._redact(req, prompt)
        workflow_id, _ = workflow_ids(info)
        # A previous attempt may have received the completion and then failed to record it
        # (kept in its heartbeat details), or recorded it and died before reporting (its worker
        # was killed): reuse it instead of paying the provider twice.
        response = _previous_response(info.heartbeat_details)
        if response is None and info.attempt > 1:
            response = await _retry_storage(
                lambda: self._recorded_response(workflow_id, info.activity_id), STORAGE_WAIT_S
            )
        if response is None:
            # The rate first: waiting for it holds neither a worst-case budget reservation
            # (which could refuse other calls meanwhile) nor a concurrency slot. The rate and
            # slot waits share SLOT_WAIT_S, which the start-to-close timeout includes.
            # PostgreSQL down before the call: wait for it within STORAGE_WAIT_S (nothing is
            # paid yet), taken from the same SLOT_WAIT_S allowance.
            started_wait = time.monotonic()
            waited_s = await _retry_storage(lambda: self._acquire_rate(req), STORAGE_WAIT_S)
            held = await _retry_storage(
                lambda: self._reserve(req, prompt, workflow_id, info.activity_id),
                STORAGE_WAIT_S - (time.monotonic() - started_wait - waited_s),
            )
            waited_s = time.monotonic() - started_wait
            try:
                slot = await self._acquire_slot(req, wait_s=max(0.0, SLOT_WAIT_S - waited_s))
                try:
                    response = await self._complete(req, prompt, info.attempt)
                except ApplicationError as exc:
                    if exc.type != errors.INVALID_OUTPUT:
                        raise
                    # Leave the validator's message for the next attempt's prompt; after
                    # output_retries retries the next provider gets its turn.
                    failures = output_failures + 1
                    activity.heartbeat({OUTPUT_FEEDBACK_KEY: exc.message, "failures": failures})
                    last = failures > req.output_retries
                    raise ApplicationError(
                        exc.message + ("; giving up on this provider" if last else ""),
                        *exc.details,
                        type=errors.INVALID_OUTPUT,
                        non_retryable=last,
                    ) from None
                finally:
                    await self._slots.release(req.provider, slot)
                if placeholders:  # put the originals back; the mapping never left the worker
                    response = response.model_copy(
                        update={"output": restore(response.output, placeholders)}
                    )
            except BaseException:
                if held:
                    with contextlib.suppress(*DB_ERRORS):
                        await budget.release(
                            self._pool, workflow_id=workflow_id, activity_id=info.activity_id
                        )
                raise
        else:
            activity.logger.info(
                "agent %s: reusing the completion of attempt %d", req.agent, response.attempt
            )
        # A completion that arrived is paid for: a cancellation (the run was cancelled) must
        # not interrupt its recording, or the run's totals would miss a paid call.
        recording = asyncio.ensure_future(self._record(req, prompt, response, workflow_id, info))
        try:
            crossed = await asyncio.shield(recording)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await recording
            raise
        metrics.BUDGET_SPENT.inc(response.cost_usd)
        for period in crossed:
            await self._budget_alert(period)
        # The message row keeps the attempt that called the provider; the workflow counts
        # every activity attempt.
        return response.model_copy(update={"attempt": info.attempt})

    async def _record(
        self,
        req: LLMRequest,
        prompt: Prompt,
        response: LLMResponse,
        workflow_id: str,
        info: activity.Info,
    ) -> list[str]:
        """Record the call (message + ledger) and settle its budget reservation.

        A paid completion must not be lost to a database outage, and must not be bought
        twice. So while PostgreSQL does not answer, this retries on its own schedule (0.5 s
        doubling to ``RECORD_RETRY_MAX_S``), heartbeating the completion, until the attempt's
        start-to-close deadline is near; then the attempt fails ``StorageUnavailable`` with
        the completion in its heartbeat details, and the next attempt (Temporal's retry)
        records it without calling the provider. With default agent settings the LLM retry
        policy's 4 attempts of ~190 s ride out an outage of about 12 minutes.

        Returns:
            The budget periods whose alert threshold this call crossed.

        Raises:
            ApplicationError: ``StorageUnavailable`` (retryable) when the deadline comes first.
        """
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
                if left < delay + RECORD_DEADLINE_MARGIN_S:
                    raise _storage_error(
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
        stored = self._for_record(req, prompt, response.output)
        await db.record_call(
            self._pool,
            workflow_id=workflow_id,
            root_workflow_id=req.root_workflow_id or workflow_id,
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
        )
        return await budget.settle(
            self._pool,
            self._settings,
            workflow_id=workflow_id,
            activity_id=info.activity_id,
            cost_usd=response.cost_usd,
            root_workflow_id=req.root_workflow_id or workflow_id,
            agent=req.agent,
            provider=response.provider,
            model=response.model,
        )

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
            raise _storage_error(
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
        )

    def _redact(self, req: LLMRequest, prompt: Prompt) -> tuple[Prompt, dict[str, str]]:
        """Apply the agent's PII policy to both messages (``chorus/governance/pii.py``).

        Returns:
            The prompt as it will be sent, and the placeholder mapping (``placeholder`` policy).
        """
        if req.pii == "off":
            return prompt, {}
        system = self._redactor.redact(prompt.system, req.pii)
        user = self._redactor.redact(prompt.user, req.pii, placeholders=system.placeholders)
        for result in (system, user):
            for kind, n in result.counts.items():
                metrics.PII_REDACTIONS.labels(kind=kind, policy=req.pii).inc(n)
        found = sum(system.counts.values()) + sum(user.counts.values())
        if found:
            activity.logger.info(
                "agent %s: %d PII item(s) %s before the call",
                req.agent,
                found,
                "replaced by placeholders" if req.pii == "placeholder" else f"{req.pii}ed",
            )
        redacted = Prompt(
            system=system.text, user=user.text, truncated_chars=prompt.truncated_chars
        )
        return redacted, user.placeholders

    async def _acquire_rate(self, req: LLMRequest) -> float:
        """Wait for the provider's fleet-wide requests per minute (heartbeating meanwhile).

        Returns:
            Seconds waited.

        Raises:
            ApplicationError: ``RateLimited`` (retryable) when the calls already queued would
                delay this one more than ``SLOT_WAIT_S``, with the time until they have
                started (capped by ``CHORUS_MAX_RETRY_AFTER_S``) as the next retry delay;
                ``StorageUnavailable`` when PostgreSQL does not answer.
        """
        try:
            return await self._rate.acquire(
                req.provider, on_wait=activity.heartbeat if activity.in_activity() else None
            )
        except RateBacklogError as exc:
            raise ApplicationError(
                f"agent {req.agent}: {exc}",
                activity.info().attempt,
                type=errors.RATE_LIMITED,
                next_retry_delay=timedelta(
                    seconds=min(exc.retry_after_s, self._settings.max_retry_after_s)
                ),
            ) from exc
        except DB_ERRORS as exc:
            raise _storage_error(
                f"agent {req.agent}: cannot reserve a start under the provider's rate limit in "
                f"PostgreSQL ({exc})"
            ) from exc

    async def _acquire_slot(self, req: LLMRequest, *, wait_s: float = SLOT_WAIT_S) -> int | None:
        """Take one of the provider's fleet-wide concurrency slots (heartbeating meanwhile).

        Args:
            req: The call's request (provider and agent).
            wait_s: Longest wait for a slot, in seconds.

        Raises:
            ApplicationError: ``RateLimited`` (retryable) when every slot stayed busy for
                ``wait_s``; ``StorageUnavailable`` when PostgreSQL does not answer.
        """
        try:
            return await self._slots.acquire(
                req.provider,
                wait_s=wait_s,
                on_wait=activity.heartbeat if activity.in_activity() else None,
            )
        except SlotTimeoutError as exc:
            raise ApplicationError(
                f"agent {req.agent}: {exc}", activity.info().attempt, type=errors.RATE_LIMITED
            ) from exc
        except DB_ERRORS as exc:
            raise _storage_error(
                f"agent {req.agent}: cannot take a concurrency slot in PostgreSQL ({exc})"
            ) from exc

    async def _reserve(
        self, req: LLMRequest, prompt: Prompt, workflow_id: str, activity_id: str
    ) -> bool:
        """Reserve the call's worst-case cost (see :mod:`chorus.governance.budget`); True if held.

        Raises:
            ApplicationError: ``BudgetExceeded`` (non-retryable; the workflow tries the next
                provider) or ``StorageUnavailable`` when PostgreSQL does not answer.
        """
        prompt_bytes = len(prompt.system.encode()) + len(prompt.user.encode())
        amount, priced = budget.worst_case_usd(
            req.provider, req.model, prompt_bytes, req.max_tokens
        )
        if not priced:
            if self._settings.allow_unpriced_models:
                return False  # allowed explicitly: the call is recorded at $0, cost_known false
            raise ApplicationError(
                f"agent {req.agent}: {req.provider}:{req.model} has no price ({PRICE_DATA_VERSION}"
                ", CHORUS_PRICES_FILE), so no budget could limit it; price it in "
                f"CHORUS_PRICES_FILE ({req.provider}: {{{req.model}: {{input: USD per 1M "
                "tokens, output: USD per 1M tokens}}) or set CHORUS_ALLOW_UNPRICED_MODELS=true",
                activity.info().attempt,
                type=errors.UNPRICED_MODEL,
                non_retryable=True,
            )
        try:
            reservation = await budget.reserve(
                self._pool,
                self._settings,
                workflow_id=workflow_id,
                activity_id=activity_id,
                root_workflow_id=req.root_workflow_id or workflow_id,
                agent=req.agent,
                provider=req.provider,
                model=req.model,
                amount_usd=amount,
            )
        except budget.BudgetExceededError as exc:
            metrics.BUDGET_REFUSALS.labels(budget=exc.budget.split(":")[0]).inc()
            activity.logger.warning("agent %s: %s", req.agent, exc)
            raise ApplicationError(
                str(exc),
                activity.info().attempt,
                {
                    "budget": exc.budget,
                    "period": exc.period,
                    "limit_usd": exc.limit_usd,
                    "committed_usd": exc.committed_usd,
                    "request_usd": exc.request_usd,
                },
                type=errors.BUDGET_EXCEEDED,
                non_retryable=True,
            ) from exc
        except DB_ERRORS as exc:
            raise _storage_error(
                f"agent {req.agent}: cannot reserve budget in PostgreSQL ({exc})"
            ) from exc
        return reservation.held

    async def _budget_alert(self, period: str) -> None:
        """The daily spend crossed its alert threshold: warn, count, and post the webhook.

        The webhook body is JSON (``event``, ``period``, ``spent_usd``, ``alert_usd``,
        ``limit_usd``), signed like run callbacks (Standard Webhooks ``webhook-*`` headers, id
        ``budget-alert:<period>``) when ``CHORUS_CALLBACK_SECRET`` is set. One attempt: the
        alert is advisory, and it is logged and counted either way.
        """
        lines = await budget.standing(self._pool, self._settings)
        daily = next((line for line in lines if line.scope == "daily"), None)
        body = {
            "event": "budget_alert",
            "period": period,
            "spent_usd": daily.spent_usd if daily else None,
            "alert_usd": daily.alert_usd if daily else None,
            "limit_usd": daily.limit_usd if daily else None,
        }
        metrics.BUDGET_ALERTS.inc()
        activity.logger.warning(
            "budget alert: daily spend $%s crossed the alert threshold $%s (limit $%s)",
            body["spent_usd"],
            body["alert_usd"],
            body["limit_usd"],
        )
        url = self._settings.budget_alert_webhook_url
        if not url:
            return
        payload = json.dumps(body).encode()
        headers = {"content-type": "application/json"}
        try:
            if self._settings.callback_secret is not None:
                headers = signed_headers(
                    self._settings.callback_secret.get_secret_value(),
                    payload,
                    f"budget-alert:{period}",
                    int(time.time()),
                )
        except ValueError as exc:  # a malformed secret: the alert is advisory, say why
            activity.logger.warning("budget alert webhook not signed or sent: %s", exc)
            return
        try:
            async with httpx2.AsyncClient(timeout=5.0) as http:
                (await http.post(url, content=payload, headers=headers)).raise_for_status()
        except httpx2.HTTPError as exc:  # the alert is advisory; the call already succeeded
            activity.logger.warning("budget alert webhook %s failed: %s", url, exc)

    async def _complete(self, req: LLMRequest, prompt: Prompt, attempt: int) -> LLMResponse:
        """Call the provider once and record the call in :mod:`chorus.observability.metrics`.

        The outcome label is ``ok`` or the ``ApplicationError`` type the failure was mapped to
        (an invalid JSON answer counts as ``InvalidOutput`` though the HTTP call succeeded).
        """
        started = time.perf_counter()
        outcome = "ok"
        response: LLMResponse | None = None
        try:
            response = await self._call_provider(req, prompt, attempt)
            return response
        except ApplicationError as exc:
            outcome = exc.type or "ApplicationError"
            raise
        except BaseException as exc:  # cancellation (heartbeat timeout, worker shutdown)
            outcome = type(exc).__name__
            raise
        finally:
            metrics.observe_llm_call(
                provider=req.provider,
                model=req.model,
                agent=req.agent,
                outcome=outcome,
                seconds=time.perf_counter() - started,
                input_tokens=response.input_tokens if response else 0,
                output_tokens=response.output_tokens if response else 0,
                cost_usd=response.cost_usd if response else 0.0,
            )

    async def _call_provider(self, req: LLMRequest, prompt: Prompt, attempt: int) -> LLMResponse:
        started = time.perf_counter()
        try:
            if req.provider == "anthropic":
                output, model, usage, finish = await _with_heartbeats(
                    self._call_anthropic(req, prompt)
                )
            else:
                output, model, usage, finish = await _with_heartbeats(
                    self._call_openai_compatible(req, prompt)
                )
        except (openai.OpenAIError, anthropic.AnthropicError) as exc:
            error = map_provider_error(
                exc, req.provider, req.model, self._settings.max_retry_after_s
            )
            if req.provider == "local" and isinstance(exc, openai.APIConnectionError):
                # "cannot connect" hides the cause when the embedded server has died (issue
                # 12: it crashed with SIGSEGV and the user saw four connect errors).
                down = await asyncio.to_thread(local_model.server_down_reason, self._settings)
                if down:
                    error = ApplicationError(
                        f"local:{req.model}: {down}",
                        attempt,
                        type=errors.PROVIDER_UNAVAILABLE,
                    )
            raise error from None  # the SDK error quotes the provider text unscrubbed
        latency_ms = (time.perf_counter() - started) * 1000.0
        if req.output_schema is not None:
            output = _check_json(output, req)
        tin, tout, cached, cache_write = usage
        cache = {"cached_input_tokens": cached, "cache_write_tokens": cache_write}
        cost, known = cost_usd(req.provider, model, tin, tout, **cache)
        if not known:  # the reported name (a dated snapshot) may be unknown; the asked one not
            cost, known = cost_usd(req.provider, req.model, tin, tout, **cache)
        activity.logger.info(
            "agent %s answered via %s:%s in %.0f ms (%d in / %d out tokens, $%.6f, attempt %d)",
            req.agent,
            req.provider,
            model,
            latency_ms,
            tin,
            tout,
            cost,
            attempt,
        )
        return LLMResponse(
            provider=req.provider,
            model=model,
            output=output,
            input_tokens=tin,
            output_tokens=tout,
            cached_input_tokens=cached,
            cache_write_tokens=cache_write,
            cost_usd=cost,
            cost_known=known,
            latency_ms=round(latency_ms, 3),
            attempt=attempt,
            finish_reason=finish,
            truncated_chars=prompt.truncated_chars,
        )

    def _client_for(self, provider: str) -> Any:
        client = getattr(self._clients, provider, None)
        if client is None:
            _ok, reason = self._settings.provider_configured(provider)
            raise ApplicationError(
                f"provider {provider} is not configured on this worker: "
                f"{reason or 'no client was built'}",
                activity.info().attempt if activity.in_activity() else 1,
                type=errors.PROVIDER_NOT_CONFIGURED,
                non_retryable=True,
            )
        return client

    async def _call_openai_compatible(
        self, req: LLMRequest, prompt: Prompt
    ) -> tuple[str, str, Usage, str | None]:
        client: AsyncOpenAI = self._client_for(req.provider).with_options(timeout=req.timeout_s)
        kwargs: dict[str, Any] = {}
        extra_body: dict[str, Any] = {}
        if req.provider == "local":
            # OpenAI-compatible servers (llama.cpp, vLLM, Ollama) take max_tokens; llama.cpp's
            # JSON mode needs the schema inside response_format to constrain generation.
            kwargs["max_tokens"] = req.max_tokens
            if req.output_schema is not None:
                extra_body["response_format"] = {"type": "json_object", "schema": req.output_schema}
        else:
            kwargs["max_completion_tokens"] = req.max_tokens
            if req.output_schema is not None:
                json_schema: dict[str, Any] = {
                    "name": f"{req.agent}_output",
                    "schema": req.output_schema,
                }
                if strict_compatible(req.output_schema):
                    json_schema["strict"] = True  # the API guarantees a conforming answer
                kwargs["response_format"] = {"type": "json_schema", "json_schema": json_schema}
        response = await client.chat.completions.create(
            model=req.model,
            messages=[
                {"role": "system", "content": prompt.system},
                {"role": "user", "content": prompt.user},
            ],
            temperature=req.temperature,
            extra_body=extra_body or None,
            **kwargs,
        )
        choice = response.choices[0] if response.choices else None
        text = (choice.message.content or "") if choice else ""
        usage = response.usage
        details = getattr(usage, "prompt_tokens_details", None) if usage else None
        return (
            text.strip(),
            response.model or req.model,
            (
                usage.prompt_tokens if usage else 0,
                usage.completion_tokens if usage else 0,  # reasoning tokens included
                int(getattr(details, "cached_tokens", 0) or 0),
                0,
            ),
            choice.finish_reason if choice else None,
        )

    async def _call_anthropic(
        self, req: LLMRequest, prompt: Prompt
    ) -> tuple[str, str, Usage, str | None]:
        client: AsyncAnthropic = self._client_for("anthropic").with_options(timeout=req.timeout_s)
        kwargs: dict[str, Any] = {}
        if req.output_schema is not None:
            # Structured outputs: the API constrains the answer to the schema.
            kwargs["output_config"] = {
                "format": {"type": "json_schema", "schema": req.output_schema}
            }
        # The Messages API of the pinned SDK (anthropic 2.x) takes no sampling temperature;
        # the agent's temperature applies to OpenAI-compatible providers only.
        response = await client.messages.create(
            model=req.model,
            max_tokens=req.max_tokens,
            system=prompt.system,
            messages=[{"role": "user", "content": prompt.user}],
            **kwargs,
        )
        text = "".join(block.text for block in response.content if block.type == "text")
        usage = response.usage
        # Anthropic's input_tokens leaves out the cache: the total input is all three.
        cache_read = int(getattr(usage, "cache_read_input_tokens", 0) or 0)
        cache_write = int(getattr(usage, "cache_creation_input_tokens", 0) or 0)
        return (
            text.strip(),
            response.model or req.model,
            (
                usage.input_tokens + cache_read + cache_write,
                usage.output_tokens,
                cache_read,
                cache_write,
            ),
            response.stop_reason,
        )


async def _retry_storage(step: Callable[[], Awaitable[T]], budget_s: float) -> T:
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


def _storage_error(message: str) -> ApplicationError:
    """A retryable ``StorageUnavailable`` error of the current attempt."""
    return ApplicationError(message, activity.info().attempt, type=errors.STORAGE_UNAVAILABLE)


def _previous_response(details: Sequence[Any]) -> LLMResponse | None:
    """A completion an earlier attempt stored in its heartbeat details, if any."""
    for item in reversed(details):
        if isinstance(item, dict) and "output" in item and "provider" in item:
            try:
                return LLMResponse.model_validate(item)
            except ValueError:
                return None
    return None


def _check_json(output: str, req: LLMRequest) -> str:
    """Return ``output`` normalised as JSON, or raise a retryable ``InvalidOutput`` error.

    The answer must parse as a JSON object that ``req.output_schema`` validates (draft
    2020-12, ``jsonschema``); the error names the first offending path and the rule.
    """
    text = output.strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ApplicationError(
            f"agent {req.agent}: {req.provider}:{req.model} did not answer with JSON as its "
            f"output_schema requires ({exc.msg} at character {exc.pos})",
            activity.info().attempt if activity.in_activity() else 1,
            type=errors.INVALID_OUTPUT,
        ) from exc
    if not isinstance(value, dict):
        raise ApplicationError(
            f"agent {req.agent}: expected a JSON object, got {type(value).__name__}",
            activity.info().attempt if activity.in_activity() else 1,
            type=errors.INVALID_OUTPUT,
        )
    assert req.output_schema is not None
    problem = best_match(Draft202012Validator(req.output_schema).iter_errors(value))
    if problem is not None:
        where = "/".join(str(p) for p in problem.absolute_path) or "(top)"
        raise ApplicationError(
            f"agent {req.agent}: the answer does not match its output_schema at {where}: "
            f"{problem.message[:300]}",
            activity.info().attempt if activity.in_activity() else 1,
            type=errors.INVALID_OUTPUT,
        )
    return json.dumps(value, ensure_ascii=False, indent=2)


def strict_compatible(schema: Any) -> bool:
    """Whether OpenAI's strict structured outputs accept ``schema``.

    Strict mode needs every object schema to list all its properties in ``required`` and to
    set ``additionalProperties: false`` (OpenAI API docs, "Structured Outputs", supported
    schemas); other schemas are sent without ``strict`` and validated after the answer.
    """
    if isinstance(schema, list):
        return all(strict_compatible(item) for item in schema)
    if not isinstance(schema, dict):
        return True
    if schema.get("type") == "object":
        properties = schema.get("properties", {})
        if schema.get("additionalProperties") is not False:
            return False
        if not isinstance(properties, dict) or set(schema.get("required", [])) != set(properties):
            return False
        if not all(strict_compatible(p) for p in properties.values()):
            return False
    nested = [schema[k] for k in ("items", "anyOf", "allOf", "prefixItems") if k in schema]
    for key in ("$defs", "definitions"):
        if isinstance(schema.get(key), dict):
            nested.extend(schema[key].values())
    return all(strict_compatible(item) for item in nested)


OUTPUT_FEEDBACK_KEY = "invalid_output"
"""Heartbeat-details key under which an attempt leaves its schema error for the next one."""


def _output_feedback(details: Sequence[Any]) -> tuple[str, int]:
    """The schema error an earlier attempt left, and how many answers failed so far."""
    for item in reversed(details):
        if isinstance(item, dict) and OUTPUT_FEEDBACK_KEY in item:
            return str(item[OUTPUT_FEEDBACK_KEY]), int(item.get("failures", 1))
    return "", 0


def _with_feedback(prompt: Prompt, message: str) -> Prompt:
    """The prompt with the previous answer's schema error appended to the user message."""
    return Prompt(
        system=prompt.system,
        user=(
            f"{prompt.user}\n\nYour previous answer was rejected: {message}. Answer again with "
            "only a JSON object that matches the output schema."
        ),
        truncated_chars=prompt.truncated_chars,
    )
