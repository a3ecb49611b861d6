"""The guard around one provider call: fleet rate, then budget reservation, then a slot.

:meth:`ProviderCallGuard.hold` is one async context manager that takes, in this order:

1. the provider's fleet-wide requests per minute (:class:`FleetRateLimiter`): waiting for it
   holds neither a worst-case budget reservation (which could refuse other calls meanwhile)
   nor a concurrency slot; then its tokens per minute, the call's worst case (settled to the
   tokens used when the block ends: :class:`CallTicket`);
2. the call's worst-case cost against every budget (:mod:`chorus.governance.budget`);
3. one of the provider's fleet-wide concurrency slots (:class:`FleetSemaphore`).

The rate and slot waits share ``SLOT_WAIT_S``, which the start-to-close timeout includes;
PostgreSQL down before the call is waited for within ``STORAGE_WAIT_S`` (nothing is paid yet),
taken from the same allowance. On leaving, the slot is always given back; the reservation is
released when the block raises (errors, cancellation), and otherwise left for the recording
step to settle at the real cost.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.prompts import Prompt, transcript_of
from activities.storage_outage import STORAGE_WAIT_S, retry_storage, storage_error
from chorus.config.settings import Settings
from chorus.contracts import errors
from chorus.contracts.models import LLMRequest
from chorus.governance import budget
from chorus.governance.pricing import PRICE_DATA_VERSION
from chorus.governance.provider_limits import (
    SLOT_WAIT_S,
    FleetRateLimiter,
    FleetSemaphore,
    RateBacklogError,
    SlotTimeoutError,
)
from chorus.observability import metrics
from chorus.storage import budget_ledger
from chorus.storage.db import DB_ERRORS


@dataclass
class CallTicket:
    """What :meth:`ProviderCallGuard.hold` yields: the caller reports the tokens used.

    Attributes:
        used_tokens: Input + output tokens of the call as the provider reported them; set by
            the block once the provider answered. Left ``None`` (the call failed), the
            prompt's share of the token reservation is kept and ``max_tokens`` given back.
    """

    used_tokens: int | None = None
    watched: bool | None = None
    """Whether a reader watches the run (``hold``'s ``watch_run``), when the guard's statement
    could say; ``None``: not asked (the caller asks :mod:`chorus.streaming` itself)."""


class ProviderCallGuard:
    """Rate, budget and concurrency limits of provider calls, shared by every worker.

    Args:
        pool: Chorus's PostgreSQL pool (rate table, budget ledger, slot locks).
        settings: Provider limits, budgets, the Retry-After cap.
    """

    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self._pool = pool
        self._settings = settings
        self._rate = FleetRateLimiter(pool, settings.provider_limits)
        self._slots = FleetSemaphore(
            pool, {name: limit.concurrency for name, limit in settings.provider_limits.items()}
        )

    @contextlib.asynccontextmanager
    async def hold(
        self,
        req: LLMRequest,
        prompt: Prompt,
        workflow_id: str,
        activity_id: str,
        *,
        watch_run: str | None = None,
    ) -> AsyncIterator[CallTicket]:
        """Take the rates, reserve the budget and take a slot for the block (the provider call).

        Args:
            req: The call's request (provider, model, agent, ``max_tokens``).
            prompt: The prompt as it will be sent (its size bounds the worst-case cost).
            workflow_id: Workflow of the call (the reservation's key).
            activity_id: Activity of the call (the reservation's key).
            watch_run: A run whose readers to look for in the same statement as the rate
                and budget (:attr:`CallTicket.watched`), if that statement runs.

        Yields:
            A :class:`CallTicket` whose ``used_tokens`` the block sets after the call; the
            tokens-per-minute reservation is settled to it on leaving.

        Raises:
            ApplicationError: ``RateLimited`` (rate or tokens backlog, or no free slot in time),
                ``BudgetExceeded``, ``UnpricedModel`` or ``StorageUnavailable``, before the
                block runs; then whatever the block raises, after the slot and the
                reservation were given back.
        """
        started_wait = time.monotonic()
        begun: bool | None = None  # the fast path's reservation: held or not; None: not yet
        watched: bool | None = None
        if self._rate.rate_args(req.provider) is not None and not self._rate.has_tpm(req.provider):
            # The rate's start, when it is now the budget, and the watchers in one round trip.
            waited_s, begun, watched = await retry_storage(
                lambda: self.begin(req, prompt, workflow_id, activity_id, watch_run),
                STORAGE_WAIT_S,
            )
        else:
            waited_s = await retry_storage(lambda: self.acquire_rate(req), STORAGE_WAIT_S)
        prompt_tokens = _prompt_bytes(req, prompt) + budget.WORST_CASE_OVERHEAD_TOKENS
        tokens = await retry_storage(
            lambda: self.acquire_tokens(req, prompt_tokens + req.max_tokens),
            STORAGE_WAIT_S - (time.monotonic() - started_wait),
        )
        ticket = CallTicket(watched=watched)
        try:
            held = begun or False
            if begun is None:
                held = await retry_storage(
                    lambda: self.reserve(req, prompt, workflow_id, activity_id),
                    STORAGE_WAIT_S - (time.monotonic() - started_wait - waited_s),
                )
            waited_s = time.monotonic() - started_wait
            try:
                slot = await self.acquire_slot(req, wait_s=max(0.0, SLOT_WAIT_S - waited_s))
                try:
                    yield ticket
                finally:
                    await self._slots.release(req.provider, slot)
            except BaseException:  # cancellation too: nothing was spent, give the amount back
                if held:
                    with contextlib.suppress(*DB_ERRORS):
                        await budget.release(
                            self._pool, workflow_id=workflow_id, activity_id=activity_id
                        )
                raise
        finally:
            if tokens:
                # Failed or cancelled: keep the prompt's share, give back max_tokens.
                used = ticket.used_tokens
                if used is None:
                    used = min(prompt_tokens, tokens)
                with contextlib.suppress(*DB_ERRORS):  # unsettled: the limit stays stricter
                    await self._rate.settle_tokens(req.provider, tokens, used)

    async def acquire_tokens(self, req: LLMRequest, tokens: int) -> int:
        """Wait for the call's worst-case tokens under the provider's tokens per minute.

        Args:
            req: The call's request (provider and agent).
            tokens: Worst-case input + output tokens.

        Returns:
            Tokens reserved (0 when the provider has no tpm limit).

        Raises:
            ApplicationError: ``RateLimited`` (retryable) when the tokens would be free only
                after ``SLOT_WAIT_S``, with that time (capped by ``CHORUS_MAX_RETRY_AFTER_S``)
                as the next retry delay; ``StorageUnavailable`` when PostgreSQL does not
                answer.
        """
        try:
            reserved, _waited = await self._rate.acquire_tokens(
                req.provider,
                tokens,
                on_wait=activity.heartbeat if activity.in_activity() else None,
            )
        except RateBacklogError as exc:
            raise ApplicationError(
                f"agent {req.agent}: {exc}",
                activity.info().attempt if activity.in_activity() else 1,
                type=errors.RATE_LIMITED,
                next_retry_delay=timedelta(
                    seconds=min(exc.retry_after_s, self._settings.max_retry_after_s)
                ),
            ) from exc
        except DB_ERRORS as exc:
            raise storage_error(
                f"agent {req.agent}: cannot reserve tokens under the provider's tokens-per-"
                f"minute limit in PostgreSQL ({exc})"
            ) from exc
        return reserved

    async def acquire_rate(self, req: LLMRequest) -> float:
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
            raise self._rate_limited(req, exc) from exc
        except DB_ERRORS as exc:
            raise storage_error(
                f"agent {req.agent}: cannot reserve a start under the provider's rate limit in "
                f"PostgreSQL ({exc})"
            ) from exc

    async def acquire_slot(self, req: LLMRequest, *, wait_s: float = SLOT_WAIT_S) -> int | None:
        """Take one of the provider's fleet-wide concurrency slots (heartbeating meanwhile).

        Args:
            req: The call's request (provider and agent).
            wait_s: Longest wait for a slot, in seconds.

        Returns:
            The slot number, or ``None`` when the provider has no concurrency limit.

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
            raise storage_error(
                f"agent {req.agent}: cannot take a concurrency slot in PostgreSQL ({exc})"
            ) from exc

    async def reserve(
        self, req: LLMRequest, prompt: Prompt, workflow_id: str, activity_id: str
    ) -> bool:
        """Reserve the call's worst-case cost (see :mod:`chorus.governance.budget`); True if held.

        Raises:
            ApplicationError: ``BudgetExceeded`` (non-retryable; the workflow tries the next
                provider), ``UnpricedModel`` (non-retryable) for a paid model without a price
                unless ``CHORUS_ALLOW_UNPRICED_MODELS``, or ``StorageUnavailable`` when
                PostgreSQL does not answer.
        """
        amount = self._worst_case(req, prompt)
        if amount is None:
            return False  # allowed explicitly: the call is recorded at $0, cost_known false
        try:
            reservation = await budget.reserve(
                self._pool,
                self._settings,
                amount_usd=amount,
                **_budget_call(req, workflow_id, activity_id),
            )
        except budget.BudgetExceededError as exc:
            raise _budget_refusal(req, exc) from exc
        except DB_ERRORS as exc:
            raise storage_error(
                f"agent {req.agent}: cannot reserve budget in PostgreSQL ({exc})"
            ) from exc
        return reservation.held

    async def begin(
        self,
        req: LLMRequest,
        prompt: Prompt,
        workflow_id: str,
        activity_id: str,
        watch_run: str | None = None,
    ) -> tuple[float, bool | None, bool]:
        """Take the provider's rate start and, when it is now, the budget: one round trip.

        ``chorus_call_begin`` (migration 0015). For providers with a requests-per-minute limit
        and no tokens-per-minute limit; the others take :meth:`acquire_rate` then
        :meth:`reserve`.

        A start in the future reserves no budget: this sleeps until it (heartbeating), and the
        caller reserves with :meth:`reserve` after, as on the other path.

        Args:
            req: The call's request.
            prompt: The prompt as it will be sent (its size bounds the worst-case cost).
            workflow_id: Workflow of the call (the reservation's key).
            activity_id: Activity of the call (the reservation's key).
            watch_run: A run whose readers to look for (``stream_watchers``), or ``None``.

        Returns:
            ``(seconds waited, held, watched)``: ``held`` as :meth:`reserve`'s result, or
            ``None`` when the call waited for the rate and nothing is reserved yet;
            ``watched``: whether a reader watches ``watch_run``.

        Raises:
            ApplicationError: ``UnpricedModel`` before any statement runs; ``RateLimited``
                (the calls queued across the fleet would delay this one more than
                ``SLOT_WAIT_S``), ``BudgetExceeded`` or ``StorageUnavailable``, as
                :meth:`acquire_rate` and :meth:`reserve`.
        """
        args = self._rate.rate_args(req.provider)
        if args is None:  # pragma: no cover - the caller checks
            raise ValueError(f"provider {req.provider} has no requests-per-minute limit")
        amount = self._worst_case(req, prompt)
        request = None  # nothing to reserve: a free call, or an unpriced one that is allowed
        if amount is not None and amount > 0:
            request = await budget.reservation_request(
                self._pool,
                self._settings,
                amount_usd=amount,
                **_budget_call(req, workflow_id, activity_id),
            )
        interval_s, tolerance_s = args
        try:
            row = await budget_ledger.begin_call(
                self._pool,
                rate_key=req.provider,
                interval_s=interval_s,
                tolerance_s=tolerance_s,
                max_wait_s=SLOT_WAIT_S,
                reservation=request,
                run_id=watch_run,
            )
            if row["o_wait_s"] is None:
                raise await self._rate.backlog_error(req.provider, SLOT_WAIT_S)
        except RateBacklogError as exc:
            raise self._rate_limited(req, exc) from exc
        except DB_ERRORS as exc:
            raise storage_error(
                f"agent {req.agent}: cannot reserve a start under the provider's rate limit and "
                f"the call's budget in PostgreSQL ({exc})"
            ) from exc
        wait_s = float(row["o_wait_s"])
        watched = bool(row["o_watched"])
        if row["o_outcome"] == "wait":
            await self._rate.sleep(wait_s, activity.heartbeat if activity.in_activity() else None)
            return wait_s, None, watched
        if row["o_outcome"] == "skipped":
            return 0.0, False, watched
        try:
            caller = f"{req.agent} via {req.provider}:{req.model}"
            return 0.0, budget.reservation_of(row, amount or 0.0, caller).held, watched
        except budget.BudgetExceededError as exc:
            raise _budget_refusal(req, exc) from exc

    def _worst_case(self, req: LLMRequest, prompt: Prompt) -> float | None:
        """The call's worst-case cost in USD, ``None`` for an unpriced model the settings allow.

        Raises:
            ApplicationError: ``UnpricedModel`` (non-retryable) for a paid model without a
                price unless ``CHORUS_ALLOW_UNPRICED_MODELS``.
        """
        amount, priced = budget.worst_case_usd(
            req.provider, req.model, _prompt_bytes(req, prompt), req.max_tokens
        )
        if priced:
            return amount
        if self._settings.allow_unpriced_models:
            return None
        raise ApplicationError(
            f"agent {req.agent}: {req.provider}:{req.model} has no price ({PRICE_DATA_VERSION}"
            ", CHORUS_PRICES_FILE), so no budget could limit it; price it in "
            f"CHORUS_PRICES_FILE ({req.provider}: {{{req.model}: {{input: USD per 1M "
            "tokens, output: USD per 1M tokens}}) or set CHORUS_ALLOW_UNPRICED_MODELS=true",
            activity.info().attempt,
            type=errors.UNPRICED_MODEL,
            non_retryable=True,
        )

    def _rate_limited(self, req: LLMRequest, exc: RateBacklogError) -> ApplicationError:
        """``RateLimited`` (retryable), the backlog's wait (capped) as the next retry delay.

        The cap is ``CHORUS_MAX_RETRY_AFTER_S``.
        """
        return ApplicationError(
            f"agent {req.agent}: {exc}",
            activity.info().attempt if activity.in_activity() else 1,
            type=errors.RATE_LIMITED,
            next_retry_delay=timedelta(
                seconds=min(exc.retry_after_s, self._settings.max_retry_after_s)
            ),
        )


def _budget_call(req: LLMRequest, workflow_id: str, activity_id: str) -> dict[str, Any]:
    """Who a call's budget reservation is for.

    :func:`chorus.governance.budget.reserve`'s keyword arguments except the amount.
    """
    return {
        "workflow_id": workflow_id,
        "activity_id": activity_id,
        "root_workflow_id": req.root_workflow_id or workflow_id,
        "agent": req.agent,
        "provider": req.provider,
        "model": req.model,
        "api_key": req.api_key,
    }


def _budget_refusal(req: LLMRequest, exc: budget.BudgetExceededError) -> ApplicationError:
    """``BudgetExceeded`` (non-retryable: the workflow tries the next provider).

    Counted and logged, with the refusal's amounts as details.
    """
    metrics.BUDGET_REFUSALS.labels(budget=exc.budget.split(":")[0]).inc()
    activity.logger.warning("agent %s: %s", req.agent, exc)
    return ApplicationError(
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
    )


def _prompt_bytes(req: LLMRequest, prompt: Prompt) -> int:
    """UTF-8 bytes the call sends: an upper bound of its input tokens (a token is >= 1 byte).

    A tool turn also sends the step's earlier calls and results, and the tools' schemas.
    """
    size = len(prompt.system.encode()) + len(prompt.user.encode())
    size += len(transcript_of(prompt.turns).encode())
    return size + sum(len(json.dumps(t.parameters)) + len(t.description) for t in req.tools)
