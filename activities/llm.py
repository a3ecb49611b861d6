"""The ``chorus.call_llm`` activity: one completion from one provider.

The activity body is a short sequence of named parts, each in its own module:

- the prompt: :mod:`activities.prompts` (context window), the agent's PII policy and the
  previous attempt's schema error (:mod:`activities.llm_output`);
- reuse of a completion an earlier attempt paid for, and the record of the call:
  :mod:`activities.call_record`;
- the agent's optional response cache, asked before everything below (a hit calls no
  provider and costs 0) and given each new completion: :mod:`activities.response_cache`;
- the provider's fleet-wide circuit breaker, asked before the guard and again inside it (an
  open breaker refuses the call with ``CircuitOpen`` so the workflow falls back at once) and
  told the outcome after: :mod:`chorus.governance.circuit_breaker`;
- the guard around the provider call, fleet rate -> budget reservation -> concurrency slot:
  :mod:`activities.llm_guard`;
- the provider call and its error translation, one adapter per SDK:
  :mod:`activities.provider_adapters` (which documents the error mapping);
- the budget alert a call's cost crossed, returned in ``LLMResponse.budget_alerts`` for the
  workflow to deliver with ``chorus.deliver_budget_alert`` (:mod:`activities.callbacks`);
- the live stream of the call for run readers: start, text as it arrives, end
  (:mod:`chorus.streaming.publisher`; ``CHORUS_STREAM_TOKENS``). It never fails the call.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from datetime import UTC, datetime

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.call_record import CallRecorder
from activities.heartbeats import with_heartbeats
from activities.llm_guard import ProviderCallGuard
from activities.llm_output import (
    check_json,
    invalid_output_error,
    output_feedback,
    strict_compatible,
    with_feedback,
)
from activities.prompts import Prompt, build_prompt
from activities.provider_adapters import (
    ProviderClients,
    TextSink,
    map_provider_error,
    parse_retry_after,
    provider_adapter,
)
from activities.response_cache import ResponseCache
from activities.runs import RunCloser, workflow_ids
from activities.storage_outage import storage_error
from chorus.config.settings import Settings
from chorus.contracts import errors
from chorus.contracts.models import (
    BudgetAlert,
    CloseRun,
    FinishRunInput,
    LLMRequest,
    LLMResponse,
    RunClosed,
    totals_with_final_call,
)
from chorus.contracts.names import CALL_LLM_ACTIVITY
from chorus.contracts.tools import ToolCall, ToolTurn
from chorus.contracts.wire import TextRef
from chorus.governance import budget
from chorus.governance.circuit_breaker import Admission, CircuitBreaker, CircuitOpenError
from chorus.governance.pii import Redactor, restore
from chorus.governance.pricing import context_window, cost_usd
from chorus.observability import metrics
from chorus.storage import db
from chorus.storage.db import DB_ERRORS
from chorus.streaming import PublishedText, StepKey, StepStream, StreamPublisher, step_key

__all__ = [
    "RECORD_DEADLINE_MARGIN_S",
    "LLMActivities",
    "ProviderClients",
    "map_provider_error",
    "parse_retry_after",
    "strict_compatible",
]


RECORD_DEADLINE_MARGIN_S = 5.0
"""Recording tries stop this long before the attempt's start-to-close deadline (s), so the
attempt fails cleanly with the completion in its heartbeat details."""


class LLMActivities:
    """LLM calls for all providers; holds the SDK clients and pool for the worker's lifetime."""

    def __init__(self, clients: ProviderClients, settings: Settings, pool: asyncpg.Pool) -> None:
        self._clients = clients
        self._settings = settings
        self._pool = pool
        self._documents: OrderedDict[str, str] = OrderedDict()
        self._redactor = Redactor()
        self._guard = ProviderCallGuard(pool, settings)
        self._breaker = CircuitBreaker(
            pool, settings, on_transition=metrics.observe_circuit_transition
        )
        self._recorder = CallRecorder(pool, settings, self._redactor)
        self._closer = RunCloser(pool, settings, self._redactor)
        self._cache = ResponseCache(pool, clients.registry)
        self._publisher = StreamPublisher.from_settings(pool, settings)

    @activity.defn(name=CALL_LLM_ACTIVITY)
    async def call_llm(self, req: LLMRequest) -> LLMResponse:
        """Ask one provider for one completion.

        Args:
            req: Agent, provider, model, prompt parts and sampling settings.

        Returns:
            The completion with token usage from the provider's response, its cost in USD
            (:mod:`chorus.governance.pricing`), latency in ms, the attempt number, and the
            budget alerts its cost crossed (``budget_alerts``, for the workflow to deliver).

        Raises:
            ApplicationError: Typed per :mod:`chorus.contracts.errors`; ``details[0]`` is the
            attempt.

        """
        info = activity.info()
        if info.attempt > 1:
            labels = {"provider": req.provider, "model": req.model, "agent": req.agent}
            metrics.LLM_RETRIES.labels(**labels).inc()
        stream = await self._step_stream(req, info)
        try:
            response = await self._answer(req, info, stream)
        except BaseException as exc:
            await stream.failed(_failure_text(exc))
            raise
        await stream.completed(response.output)
        if req.close_run is not None and not response.tool_calls:
            response = await self._close_run(req, req.close_run, response, info)
        return response

    async def _close_run(
        self, req: LLMRequest, close: CloseRun, response: LLMResponse, info: activity.Info
    ) -> LLMResponse:
        """Close the run row as ``succeeded`` with this final answer (``LLMRequest.close_run``).

        One statement after the call's record and stream events, instead of the workflow's
        ``chorus.finish_run`` local activity after it (issue 19): the row's output is this
        answer, its totals ``close.totals_before`` plus this call
        (:func:`~chorus.contracts.models.totals_with_final_call`), and a top-level run's
        ``run_finished`` event follows the step's own. A PostgreSQL failure here does not
        fail the call (it is recorded): the response then carries no ``run_closed`` and the
        workflow closes the row with ``chorus.finish_run`` as before. Nor does a row that is no
        longer ``running`` (an earlier attempt closed it, or the workflow did): this attempt
        writes nothing, so a stale attempt never overwrites a newer record.
        """
        finished = max(datetime.now(UTC), close.started_at)
        totals = totals_with_final_call(close.totals_before, response, close.started_at, finished)
        workflow_id, _ = workflow_ids(info)
        try:
            closed = await self._closer.close(
                workflow_id,
                FinishRunInput(
                    status="succeeded",
                    finished_at=finished,
                    totals=totals,
                    output=response.output,
                    archive=close.archive,
                ),
                only_running=True,
            )
        except DB_ERRORS as exc:
            activity.logger.warning(
                "agent %s: run %s not closed by its last call, the workflow will (%s)",
                req.agent,
                workflow_id,
                exc,
            )
            return response
        if not closed:
            activity.logger.info(
                "agent %s: run %s is no longer running; the workflow closes it",
                req.agent,
                workflow_id,
            )
            return response
        return response.model_copy(
            update={"run_closed": RunClosed(finished_at=finished, totals=totals)}
        )

    async def _step_stream(self, req: LLMRequest, info: activity.Info) -> StepStream:
        """This attempt's stream, marked started (``attempt_restarted`` from attempt 2).

        Live (the text as it comes) only while a reader watches the run: :meth:`_answer`
        makes it live when the guard's statement (or one query) finds a reader.
        """
        workflow_id, temporal_run_id = workflow_ids(info)
        key = StepKey(
            run_id=req.root_workflow_id or workflow_id,
            workflow_id=workflow_id,
            step=step_key(workflow_id, temporal_run_id, info.activity_id),
            agent=req.agent,
            activity_id=info.activity_id,
            attempt=info.attempt,
        )
        text = PublishedText(record_pii=req.record_pii, redactor=self._redactor)
        stream = self._publisher.step(key, text, live=False)  # live once a reader is known
        stream.started(f"{req.provider}:{req.model}")
        return stream

    async def _answer(
        self, req: LLMRequest, info: activity.Info, stream: StepStream
    ) -> LLMResponse:
        """The body of :meth:`call_llm`: the completion, reused or asked for, recorded."""
        prompt, placeholders, output_failures = await self._prompt(req, info)
        stream.text.add_placeholders(placeholders)
        workflow_id, _ = workflow_ids(info)
        # Reuse a completion an earlier attempt paid for instead of paying the provider twice.
        response = await self._recorder.reusable(info, workflow_id)
        reused = response is not None
        if response is None:
            # An identical request within the agent's cache TTL: no breaker, rate, budget or
            # slot, no provider call, cost 0 (activities/response_cache.py).
            response = await self._cache.lookup(req, prompt, info.attempt)
        if response is None:
            admission = await self._admit(req, info.attempt)
            watch = stream.key.run_id if self._publisher.tokens else None
            async with self._guard.hold(
                req, prompt, workflow_id, info.activity_id, watch_run=watch
            ) as ticket:
                if not admission.probe:
                    # Asked again after the rate, budget and slot waits, which another worker's
                    # failures may have outlasted (free while the breaker is closed and clean).
                    admission = await self._admit(req, info.attempt)
                watched = ticket.watched
                if watched is None and watch is not None:
                    watched = await self._publisher.watched(watch)
                if watched:
                    stream.go_live()
                on_text = stream.token if stream.live else None
                try:
                    response = await self._ask(req, prompt, info.attempt, output_failures, on_text)
                except ApplicationError as exc:
                    await self._breaker.record(admission, exc.type, exc.message)
                    raise
                # Settles the tokens-per-minute reservation to what the call used.
                ticket.used_tokens = response.input_tokens + response.output_tokens
                await self._breaker.record(admission, None)
            await self._cache.store(req, prompt, response)
        if reused:
            activity.logger.info(
                "agent %s: reusing the completion of attempt %d", req.agent, response.attempt
            )
        elif placeholders:  # put the originals back; the mapping never left the worker
            response = response.model_copy(
                update={
                    "output": restore(response.output, placeholders),
                    "tool_calls": [_restored(c, placeholders) for c in response.tool_calls],
                }
            )
        crossed = await self._recorder.record(
            req, prompt, response, workflow_id, info, margin_s=RECORD_DEADLINE_MARGIN_S
        )
        metrics.BUDGET_SPENT.inc(response.cost_usd)
        alerts = [await self._budget_alert(period) for period in crossed]
        # The message row keeps the attempt that called the provider; the workflow counts
        # every activity attempt.
        return response.model_copy(update={"attempt": info.attempt, "budget_alerts": alerts})

    async def _admit(self, req: LLMRequest, attempt: int) -> Admission:
        """Ask the provider's circuit breaker to let the call through.

        Raises:
            ApplicationError: ``CircuitOpen`` (non-retryable: the workflow tries the agent's
                next provider at once) while the breaker is open, naming it and its next probe.
        """
        try:
            return await self._breaker.admit(req.provider, req.model)
        except CircuitOpenError as exc:
            metrics.CIRCUIT_REJECTIONS.labels(provider=req.provider).inc()
            activity.logger.info("agent %s: %s", req.agent, exc)
            raise ApplicationError(
                f"agent {req.agent}: {req.provider}:{req.model} not called: {exc}",
                attempt,
                {"provider": exc.provider, "model": exc.model, "probe_in_s": exc.probe_in_s},
                type=errors.CIRCUIT_OPEN,
                non_retryable=True,
            ) from None

    async def _prompt(
        self, req: LLMRequest, info: activity.Info
    ) -> tuple[Prompt, dict[str, str], int]:
        """The prompt as it will be sent: fitted, with the last schema error, PII applied.

        Returns:
            The prompt, the PII placeholder mapping (``placeholder`` policy), and how many of
            this provider's answers failed the output schema in earlier attempts.
        """
        window = context_window(req.provider, req.model, self._settings.local_context_tokens)
        document = await self._document(req)
        turns = await self._turns(req)
        prompt = build_prompt(req.model_copy(update={"document": document, "turns": turns}), window)
        if prompt.truncated_chars:
            activity.logger.warning(
                "agent %s: cut %d characters of input to fit %s:%s's %d-token context window",
                req.agent,
                prompt.truncated_chars,
                req.provider,
                req.model,
                window,
            )
        feedback, output_failures = output_feedback(info.heartbeat_details)
        if feedback:
            prompt = with_feedback(prompt, feedback)
        prompt, placeholders = self._redact(req, prompt)
        return prompt, placeholders, output_failures

    async def _document(self, req: LLMRequest) -> str:
        """The request's document: inline, or loaded by reference."""
        if req.document_ref is None:
            return req.document
        return await self._stored_text(req.document_ref, f"document {req.document_ref.blob_id}")

    async def _turns(self, req: LLMRequest) -> list[ToolTurn]:
        """The step's tool turns with every by-reference tool result loaded."""
        if not any(r.output_ref for t in req.turns for r in t.results):
            return req.turns
        turns = [t.model_copy(deep=True) for t in req.turns]
        for turn in turns:
            for result in turn.results:
                if result.output_ref is not None:
                    what = f"the result of tool {result.name}"
                    result.output = await self._stored_text(result.output_ref, what)
                    result.output_ref = None
        return turns

    async def _stored_text(self, ref: TextRef, what: str) -> str:
        """Text stored by reference, the last few kept in memory.

        Every later turn of a tool loop sends the same large results again.

        Raises:
            ApplicationError: ``StorageUnavailable`` when PostgreSQL does not answer.
        """
        key = ref.blob_id
        if key in self._documents:
            self._documents.move_to_end(key)
            return self._documents[key]
        try:
            text = await db.get_text(self._pool, ref)
        except DB_ERRORS as exc:
            raise storage_error(f"cannot load {what} from PostgreSQL: {exc}") from exc
        self._documents[key] = text
        while len(self._documents) > 4:
            self._documents.popitem(last=False)
        return text

    def _redact(self, req: LLMRequest, prompt: Prompt) -> tuple[Prompt, dict[str, str]]:
        """Apply the agent's PII policy to both messages (``chorus/governance/pii.py``).

        Returns:
            The prompt as it will be sent, and the placeholder mapping (``placeholder`` policy).
        """
        if req.pii == "off":
            return prompt, {}
        system = self._redactor.redact(prompt.system, req.pii)
        user = self._redactor.redact(prompt.user, req.pii, placeholders=system.placeholders)
        redactions = [system, user]
        turns = []
        for original in prompt.turns:  # tool results, and the model's own text and arguments
            turn = original.model_copy(deep=True)
            text = self._redactor.redact(turn.text, req.pii, placeholders=user.placeholders)
            turn.text = text.text
            redactions.append(text)
            for result in turn.results:
                done = self._redactor.redact(result.output, req.pii, placeholders=user.placeholders)
                result.output = done.text
                redactions.append(done)
            for call in turn.calls:
                done = self._redactor.redact(
                    json.dumps(call.arguments, ensure_ascii=False),
                    req.pii,
                    placeholders=user.placeholders,
                )
                redactions.append(done)
                if sum(done.counts.values()):
                    try:
                        call.arguments = json.loads(done.text)
                    except ValueError:  # never send what could not be redacted as JSON
                        call.arguments = {"redacted": done.text}
            turns.append(turn)
        for redaction in redactions:
            for kind, n in redaction.counts.items():
                metrics.PII_REDACTIONS.labels(kind=kind, policy=req.pii).inc(n)
        found = sum(sum(r.counts.values()) for r in redactions)
        if found:
            activity.logger.info(
                "agent %s: %d PII item(s) %s before the call",
                req.agent,
                found,
                "replaced by placeholders" if req.pii == "placeholder" else f"{req.pii}ed",
            )
        redacted = Prompt(
            system=system.text,
            user=user.text,
            truncated_chars=prompt.truncated_chars,
            turns=tuple(turns),
        )
        return redacted, user.placeholders

    async def _ask(
        self,
        req: LLMRequest,
        prompt: Prompt,
        attempt: int,
        output_failures: int,
        on_text: TextSink | None = None,
    ) -> LLMResponse:
        """Call the provider; an answer that fails the output schema leaves its error behind.

        ``on_text``, when given, gets the completion's text as the provider streams it.

        Raises:
            ApplicationError: As :meth:`_complete`; ``InvalidOutput`` becomes non-retryable
                after the agent's ``output_retries`` (see :func:`invalid_output_error`).
        """
        try:
            return await self._complete(req, prompt, attempt, on_text)
        except ApplicationError as exc:
            if exc.type != errors.INVALID_OUTPUT:
                raise
            raise invalid_output_error(exc, output_failures, req.output_retries) from None

    async def _complete(
        self, req: LLMRequest, prompt: Prompt, attempt: int, on_text: TextSink | None = None
    ) -> LLMResponse:
        """Call the provider once and record the call in :mod:`chorus.observability.metrics`.

        The outcome label is ``ok`` or the ``ApplicationError`` type the failure was mapped to
        (an invalid JSON answer counts as ``InvalidOutput`` though the HTTP call succeeded).
        """
        started = time.perf_counter()
        outcome = "ok"
        response: LLMResponse | None = None
        try:
            response = await self._call_provider(req, prompt, attempt, on_text)
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

    async def _call_provider(
        self, req: LLMRequest, prompt: Prompt, attempt: int, on_text: TextSink | None = None
    ) -> LLMResponse:
        """One provider call through its adapter, checked against the schema and priced.

        With ``on_text`` the call streams (the activity heartbeats throughout, as without).
        """
        started = time.perf_counter()
        adapter = provider_adapter(req.provider, self._clients, self._settings)
        answer = await with_heartbeats(adapter.complete(req, prompt, on_text))
        latency_ms = (time.perf_counter() - started) * 1000.0
        output = answer.text
        if req.output_schema is not None and not answer.tool_calls:
            output = check_json(output, req)
        tin, tout = answer.input_tokens, answer.output_tokens
        cache = {
            "cached_input_tokens": answer.cached_input_tokens,
            "cache_write_tokens": answer.cache_write_tokens,
        }
        cost, known = cost_usd(req.provider, answer.model, tin, tout, **cache)
        if not known:  # the reported name (a dated snapshot) may be unknown; the asked one not
            cost, known = cost_usd(req.provider, req.model, tin, tout, **cache)
        activity.logger.info(
            "agent %s answered via %s:%s in %.0f ms (%d in / %d out tokens, $%.6f, attempt %d)",
            req.agent,
            req.provider,
            answer.model,
            latency_ms,
            tin,
            tout,
            cost,
            attempt,
        )
        return LLMResponse(
            provider=req.provider,
            model=answer.model,
            output=output,
            input_tokens=tin,
            output_tokens=tout,
            cost_usd=cost,
            cost_known=known,
            latency_ms=round(latency_ms, 3),
            attempt=attempt,
            finish_reason=answer.finish_reason,
            truncated_chars=prompt.truncated_chars,
            tool_calls=list(answer.tool_calls),
            **cache,
        )

    async def _budget_alert(self, period: str) -> BudgetAlert:
        """The daily spend crossed its alert threshold: warn, count, and describe the alert.

        The alert is not sent from here: the workflow delivers it with the retried
        ``chorus.deliver_budget_alert`` activity, so a slow or failing receiver never fails
        or delays a paid call. The amounts are today's standing (:func:`budget.standing`);
        when PostgreSQL cannot say, the alert names the period only.
        """
        try:
            lines = await budget.standing(self._pool, self._settings)
        except DB_ERRORS as exc:  # the call is recorded: an alert without amounts beats none
            activity.logger.warning("budget alert: cannot read today's spend (%s)", exc)
            lines = []
        daily = next((line for line in lines if line.scope == "daily"), None)
        alert = BudgetAlert(
            period=period,
            spent_usd=daily.spent_usd if daily else None,
            alert_usd=daily.alert_usd if daily else None,
            limit_usd=daily.limit_usd if daily else None,
        )
        metrics.BUDGET_ALERTS.inc()
        activity.logger.warning(
            "budget alert: daily spend $%s crossed the alert threshold $%s (limit $%s)",
            alert.spent_usd,
            alert.alert_usd,
            alert.limit_usd,
        )
        return alert


def _failure_text(exc: BaseException) -> str:
    """How a failed attempt is described to run readers (``step_failed``).

    The typed errors' messages are the ones the workflow's history holds (provider text
    scrubbed of secrets); anything else is named by its type only.
    """
    if isinstance(exc, ApplicationError):
        return f"{exc.type or 'ApplicationError'}: {exc.message}"
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return type(exc).__name__


def _restored(call: ToolCall, placeholders: dict[str, str]) -> ToolCall:
    """``call`` with the PII placeholders in its arguments replaced by the originals.

    The tool gets the real values (``pii: placeholder``); the next turn redacts them again
    before the arguments go back to the provider.
    """
    text = json.dumps(call.arguments, ensure_ascii=False)
    restored = restore(text, placeholders)
    if restored == text:
        return call
    try:
        return call.model_copy(update={"arguments": json.loads(restored)})
    except ValueError:
        return call
