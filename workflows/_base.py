"""Workflow code shared by the sequential and parallel workflows.

Everything here runs inside the workflow sandbox: no I/O, no clocks but ``workflow.now()``, no
randomness; every external effect goes through an activity or a child workflow.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
    RetryState,
    TimeoutError,
)
from temporalio.workflow import ActivityCancellationType

from workflows._gates import GateKeeping

with workflow.unsafe.imports_passed_through():
    from chorus.contracts import activities, errors
    from chorus.contracts.activities import RunBookkeeping
    from chorus.contracts.control import GateRecord, GateStep
    from chorus.contracts.limits import SLOT_WAIT_S
    from chorus.contracts.models import (
        AgentStep,
        BudgetAlert,
        CallbackPayload,
        CallbackStatus,
        CallbackTotals,
        CloseRun,
        ControlInput,
        ControlStep,
        DeliverCallbackInput,
        EntryInput,
        FailedBranch,
        FinishRunInput,
        LLMRequest,
        LLMResponse,
        ParallelInput,
        ParallelStep,
        PriorOutput,
        ProviderAttempt,
        ProviderModel,
        ResolvedAgent,
        RunClosed,
        RunProgress,
        RunResult,
        RunSubject,
        RunTotals,
        SequentialInput,
        SequentialStep,
        StartRunInput,
        Step,
        StepKind,
        StepProgress,
        StepResult,
        step_label,
    )
    from chorus.contracts.names import (
        AGENTS_ATTR,
        CONTROL_WORKFLOW,
        COST_ATTR,
        DRAFT_WORKFLOW,
        PARALLEL_WORKFLOW,
        PATTERN_ATTR,
        PROGRESS_QUERY,
        SEQUENTIAL_WORKFLOW,
        STATUS_ATTR,
        llm_task_queue,
    )
    from chorus.contracts.tools import (
        MAX_TOOL_CALLS_PER_RUN,
        MAX_TOOL_ROUNDS,
        CallToolInput,
        ResolveToolsInput,
        ToolCall,
        ToolCallRecord,
        ToolResult,
        ToolSpec,
        ToolTurn,
    )
    from chorus.contracts.validation import url_host

InputT = TypeVar("InputT", bound="EntryInput")
ArgT = TypeVar("ArgT")
ResultT = TypeVar("ResultT")

LLM_MAX_ATTEMPTS = 4
LLM_RETRY_POLICY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=LLM_MAX_ATTEMPTS,
    non_retryable_error_types=list(errors.LLM_NON_RETRYABLE),
)
"""Retry policy of one provider: 4 attempts, 1 s doubling to 30 s; ``Retry-After`` overrides."""

STORAGE_RETRY_POLICY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    maximum_interval=timedelta(seconds=30),
    non_retryable_error_types=[errors.UNKNOWN_AGENT, errors.NO_USABLE_PROVIDER],
)
"""Run bookkeeping retries until PostgreSQL answers (no attempt limit), except bad input."""
START_FAILURE_PATCH = "chorus-start-failure-recorded"
"""Patch id (stop 31): a run whose ``chorus.start_run`` fails (unknown agent, no usable
provider, a reused workflow id) records ``ChorusStatus=failed``, delivers its callback and
fails as ``cannot start: ...``. A local activity's failure reaches the workflow as the
``ApplicationError`` itself, not wrapped in an ``ActivityError``, so before this the run failed
with the bare error and kept ``ChorusStatus=running``. Histories without the marker replay the
old way."""
LLM_WAIT_CANCELLATION_PATCH = "chorus-llm-wait-cancellation"
"""Deprecated patch id, called by drafts only (issue 19): a cancelled run waits until its in-flight
LLM calls have stopped (the HTTP request aborted, or a completion that arrived recorded) before
it records its totals, so the run row counts every paid call (issue 20). Runs before issue 20
abandoned the call (``TRY_CANCEL``); none is open (runs last minutes), so every run now waits.

Deprecated rather than kept because a non-deprecated patch broke replay: its marker is written
where ``workflow.patched`` is first called, the first LLM call, right after the ``chorus.start_run``
local activity resolves. Under load the SDK may record that local activity's marker with one
workflow task and hand the workflow its result in the next, so the patch marker lands in the
second task; on replay the result comes with the first task, ``patched`` finds no marker in it
and returns False, and the marker that follows fails the replay ("Non-deprecated patch marker
encountered"). Reproduced under CPU load in 7 of 44 runs of
``tests/workflows/test_gates.py::test_gate_approved_edited_and_rejected`` (the history is
``tests/histories/gate_approved_la_split_v6.json``). A deprecated marker that has no matching call
is skipped, so such histories replay. Runs recorded before with the marker undeprecated and
split this way cannot be fixed by code; how often the split happens off a CPU-starved machine is
not measured (9 of 153 workflows under two CPU burners). Drafts call LLMs through the same code:
a draft open since before issue 20 (no marker) replays unchanged unless it cancelled an LLM call
mid-flight, which now waits for the cancellation where it used not to.

Runs no longer call it (retirement step 3, issue 19): the SDK wrote a marker and a
``TemporalChangeVersion`` upsert for the deprecated patch, two history events and a visibility
write per run and child run. Run histories with the deprecated marker (``_v6``) replay, since a
deprecated marker without a call is skipped; those that recorded it undeprecated (``_v5`` and the
first control-flow, gate and tool histories; runs last minutes, none is open) moved to
``tests/histories/retired``. Drafts keep the call: one opened while the patch was undeprecated
holds its marker for as long as it stays open."""
PROVIDER_TASK_QUEUES_PATCH = "llm-task-queue-per-provider"
"""Patch id: LLM calls moved from the run's task queue to one task queue per provider. Runs no
longer check it (they take ``ResolveAgentsResult.provider_task_queues``); drafts, which stay open
for weeks, still do (:class:`workflows.draft.DraftWorkflow`)."""
LOCAL_BOOKKEEPING_PATCH = "chorus-local-bookkeeping"
"""Retired patch id (kept as a record). Every run records itself with local activities,
upserts its search attributes and takes its LLM task queues from
``ResolveAgentsResult.provider_task_queues``. Issue 18 deprecated the patch (step 2); issue 19
removed the call (step 3): the Python SDK still wrote a marker and a ``TemporalChangeVersion``
upsert for a deprecated patch, two history events and a visibility write per run and per child
run. Runs of the previous version (``tests/histories/*_v5``, marker ``deprecated: true``) replay;
runs that recorded it undeprecated (``_v3``/``_v4``, two versions back; runs last minutes, none
is open) moved to ``tests/histories/retired``.

A local activity runs in the worker that runs the workflow task and is recorded as a marker
in that task's completion: recording the run costs no activity task dispatch and no extra
workflow task, so a 3-agent run takes 4 workflow tasks and 3 activity tasks instead of 6 and 5
(``bench/RESULTS.md``). Both activities are short PostgreSQL writes, the case local
activities are meant for (Temporal docs, "Local Activity"). Each patch also upserts the
``TemporalChangeVersion`` search attribute (one visibility write), hence one patch id for all.
"""
LOCAL_RETRY_THRESHOLD = timedelta(seconds=5)
"""A local bookkeeping activity retries in the workflow task until its next backoff exceeds
this; longer backoffs wait on a durable timer (SDK default: 1 minute)."""
LLM_HEARTBEAT_TIMEOUT = timedelta(seconds=30)
"""The LLM activity heartbeats every ~10 s, so a crashed worker's call is retried in <= 30 s."""

CALLBACK_RETRY_POLICY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
    non_retryable_error_types=[errors.CALLBACK_REJECTED, errors.CALLBACK_NOT_CONFIGURED],
)
"""Callback delivery: 1 s doubling to 60 s until ``CALLBACK_DELIVERY_WINDOW`` runs out (the
first interval comes from the run's input); ``Retry-After`` overrides."""
CALLBACK_DELIVERY_WINDOW = timedelta(hours=24)
"""Schedule-to-close of a callback delivery: a receiver may be down this long (~1,450 attempts)
and still get the result. The workflow stays open meanwhile (its run row is already closed)."""
BUDGET_ALERT_ACTIVITY_PATCH = "chorus-budget-alert-activity"
"""Deprecated patch id (issue 19): a budget alert that an LLM call crossed is delivered by its
own retried activity (``chorus.deliver_budget_alert``) instead of one POST inside the LLM call.
Its marker says only that a run had alerts (the workflow never branched on it); deprecated for
the reason :data:`LLM_WAIT_CANCELLATION_PATCH` gives, as a parallel run can resolve a local
activity in the same activation."""
BUDGET_ALERT_WINDOW = timedelta(hours=1)
"""Schedule-to-close of a budget alert delivery (retried 1 s doubling to 60 s meanwhile)."""
CALLBACK_ATTEMPT_TIMEOUT = timedelta(seconds=60)
"""Start-to-close of one delivery attempt; ``CHORUS_CALLBACK_TIMEOUT_S`` (<= 50 s) bounds the
HTTP call inside it."""


def start_budget_alert(alert: BudgetAlert) -> workflow.ActivityHandle[None]:
    """Start delivering a budget alert (``chorus.deliver_budget_alert``).

    The caller awaits it with :func:`await_deliveries` before the workflow ends or continues
    as new.
    """
    workflow.deprecate_patch(BUDGET_ALERT_ACTIVITY_PATCH)  # a marker: only runs that had alerts
    return workflow.start_activity_method(
        activities.Deliveries.deliver_budget_alert,
        alert,
        start_to_close_timeout=CALLBACK_ATTEMPT_TIMEOUT,
        schedule_to_close_timeout=BUDGET_ALERT_WINDOW,
        retry_policy=CALLBACK_RETRY_POLICY,
        summary=f"Budget alert: {alert.period}",
    )


async def await_deliveries(handles: list[workflow.ActivityHandle[None]]) -> None:
    """Wait for started alert deliveries to end; a failure is logged (alerts are advisory)."""
    while handles:
        handle = handles.pop(0)
        await _finish_despite_cancellation(handle, "a budget alert is being delivered")
        try:
            handle.result()
        except ActivityError as err:
            workflow.logger.warning("budget alert not delivered: %s", failure_message(err))


async def _finish_despite_cancellation(task: asyncio.Future[Any], what: str) -> None:
    """Wait for ``task`` to end; a cancellation request meanwhile is logged, not passed on.

    ``workflow.wait`` does not cancel what it waits on, so the activity runs to its end.
    """
    while not task.done():
        try:
            await workflow.wait([task])
        except asyncio.CancelledError:
            workflow.logger.info(
                "cancellation requested while %s; the run has ended, so it continues", what
            )


def _started_with(values: list[SearchAttributeUpdate[Any]]) -> bool:
    """Whether the run was started with exactly these search attribute values."""
    started = workflow.info().typed_search_attributes
    return all(started.get(update.key) == update.value for update in values)


def require_input(value: InputT | None, model: type[InputT], workflow_type: str) -> InputT:
    """The workflow's input, or a non-retryable ``InvalidInput`` when it was started without one.

    A plain ``temporal workflow start`` without ``--input`` (or with ``--input null``) starts
    the workflow with no argument; it fails at once, naming what it takes, instead of failing
    its first workflow task forever. (A payload that is there but wrong is refused by the data
    converter: :class:`chorus.runtime.converter.ChorusPayloadConverter`.)

    Raises:
        ApplicationError: ``InvalidInput`` (non-retryable) when ``value`` is ``None``.
    """
    if value is None:
        fields = ", ".join(
            name for name, field in model.model_fields.items() if field.is_required()
        )
        raise ApplicationError(
            f"{workflow_type} was started without an input: it takes one JSON object "
            f"({model.__name__}; required fields: {fields})",
            type=errors.INVALID_INPUT,
            non_retryable=True,
        )
    return value


def describe_activity_failure(err: ActivityError) -> tuple[str, str, int]:
    """Return ``(error type, message, attempts made)`` of a failed activity."""
    cause = err.cause
    attempts = LLM_MAX_ATTEMPTS if err.retry_state == RetryState.MAXIMUM_ATTEMPTS_REACHED else 1
    if isinstance(cause, ApplicationError):
        details = cause.details
        if details and isinstance(details[0], int):
            attempts = details[0]
        return cause.type or "ApplicationError", cause.message, attempts
    if isinstance(cause, TimeoutError):
        return (
            "Timeout",
            f"activity {cause.type.name.lower() if cause.type else ''} timeout",
            attempts,
        )
    return type(cause).__name__ if cause else "ActivityError", str(cause or err), attempts


def is_cancellation(err: BaseException) -> bool:
    """Whether ``err`` is the workflow's own cancellation, however it surfaced."""
    if isinstance(err, asyncio.CancelledError | CancelledError):
        return True
    return isinstance(err, ActivityError | ChildWorkflowError) and isinstance(
        err.cause, CancelledError
    )


def failure_message(err: BaseException) -> str:
    """Return the innermost useful message of a Temporal failure chain."""
    messages = []
    current: BaseException | None = err
    while current is not None:
        text = getattr(current, "message", None) or str(current)
        if text and text not in messages:
            messages.append(text)
        current = current.__cause__
    return messages[-1] if messages else type(err).__name__


CONTROL_ERRORS = frozenset(
    {
        errors.GATE_REJECTED,
        errors.GATE_TIMED_OUT,
        errors.ROUTE_LIMIT,
        errors.HANDOFF_LIMIT,
        errors.CONTROL_ANSWER_INVALID,
    }
)
"""Failure types a run keeps when a control step fails by its own rule (else ``StepFailed``)."""


def run_error_type(result: StepResult) -> str:
    """The error type a run fails with when ``result`` (a failed step) sinks it."""
    return result.error_type if result.error_type in CONTROL_ERRORS else errors.STEP_FAILED


def pass_on(context: list[PriorOutput], result: StepResult) -> list[PriorOutput]:
    """The context later steps see after ``result``.

    A gate replaces the text under review (an edit; approval keeps it); every other step adds
    its output.
    """
    if result.kind != "gate":
        return [*context, PriorOutput(name=result.name, output=result.output)]
    if not context:
        return [PriorOutput(name=result.name, output=result.output)]
    last = context[-1]
    if last.output == result.output:
        return context
    return [*context[:-1], PriorOutput(name=last.name, output=result.output)]


def _failed_child(
    err: ChildWorkflowError, label: str, kind: Any, child_id: str, started: datetime
) -> StepResult:
    """The failed step result of a child workflow (its cancellation is raised, not returned)."""
    if isinstance(err.cause, CancelledError):
        raise err
    cause = err.cause
    return StepResult(
        name=label,
        kind=kind,
        status="failed",
        error=failure_message(err),
        error_type=cause.type if isinstance(cause, ApplicationError) else None,
        child_workflow_id=child_id,
        latency_ms=(workflow.now() - started).total_seconds() * 1000.0,
    )


def totals_of(
    steps: list[StepResult], started: datetime, finished: datetime, *, round_cost: bool = True
) -> RunTotals:
    """Sum tokens, cost, calls and attempts over ``steps`` and their child workflows' steps.

    The cost is rounded to 8 decimals unless ``round_cost`` is false (``CloseRun``'s
    ``totals_before``: the last call adds its cost, then rounds, as this does).
    """
    totals = RunTotals(wall_ms=(finished - started).total_seconds() * 1000.0)

    def add(step: StepResult) -> None:
        if step.kind == "agent":
            if step.llm_calls is not None:  # a tool-using agent: every model turn
                totals.llm_calls += step.llm_calls
            else:
                totals.llm_calls += 1 if step.status == "succeeded" else 0
            totals.attempts += step.attempts
            totals.input_tokens += step.input_tokens
            totals.output_tokens += step.output_tokens
            totals.cost_usd += step.cost_usd
            totals.llm_latency_ms += step.latency_ms
        for child in step.steps:
            add(child)

    for step in steps:
        add(step)
    if round_cost:
        totals.cost_usd = round(totals.cost_usd, 8)
    return totals


@dataclasses.dataclass
class RunClosing:
    """A run's last call, asked to close the run row itself (workflow state; issue 19).

    Attributes:
        request: What the call needs (``LLMRequest.close_run``); the chain adds its failed
            attempts to ``totals_before``.
        closed: What the call closed (``LLMResponse.run_closed``), once it answered.
        output: The answer of that call, which the row holds as the run's output.
        valid: The workflow's own result agrees with the row (output and totals), so it does
            not run ``chorus.finish_run``.
    """

    request: CloseRun
    closed: RunClosed | None = None
    output: str | None = None
    valid: bool = False


@dataclasses.dataclass
class ToolUse:
    """What a run remembers about tools between steps (workflow state).

    Attributes:
        specs: Each tool-using agent's resolved tools, by ``name@version`` (resolved once per
            run workflow, pinned in its history by ``chorus.resolve_tools``).
        calls: Tool calls this run workflow has made, all steps together (capped at
            ``MAX_TOOL_CALLS_PER_RUN``).
    """

    specs: dict[str, list[ToolSpec]] = dataclasses.field(default_factory=dict)
    calls: int = 0


@dataclasses.dataclass
class _Chain:
    """An agent's provider chain as one step walks it (workflow code)."""

    resolved: ResolvedAgent
    usable: list[ProviderModel]
    tried: list[ProviderAttempt]
    position: int = 0


async def call_agent(
    resolved: ResolvedAgent,
    subject: RunSubject,
    *,
    root_workflow_id: str,
    provider_queues: bool,
    name: str | None = None,
    on_provider: Callable[[str], None] | None = None,
    on_budget_alert: Callable[[BudgetAlert], None] | None = None,
    tool_use: ToolUse | None = None,
    on_tool_calls: Callable[[int], None] | None = None,
    closing: RunClosing | None = None,
) -> StepResult:
    """Run one agent, falling back along its provider chain (workflow code).

    A provider is abandoned when its retries are exhausted or it fails for a provider reason
    (auth, missing model, not configured); a malformed request (``InvalidRequest``) ends the
    chain because every provider would refuse it.

    An agent with tools runs the model->tool loop here: each model turn is a
    ``chorus.call_llm`` activity, and the tools a turn asks for run as ``chorus.call_tool``
    activities, in parallel, their results going back to the model in the next turn, until a
    turn answers without calling tools. A provider that fails mid-loop hands the conversation
    to the next one in the chain. The loop ends with ``ToolCallLimit`` at the agent's
    ``max_tool_calls``, after ``MAX_TOOL_ROUNDS`` turns, or at the run's
    ``MAX_TOOL_CALLS_PER_RUN``.

    Args:
        resolved: The agent's pinned configuration and the providers skipped on this fleet.
        subject: The task, the document and the earlier outputs the agent sees.
        root_workflow_id: Top-level workflow, under which the calls are recorded.
        provider_queues: Whether calls go to their provider's task queue
            (``<task queue>-llm-<provider>``) rather than the workflow's own.
        name: Step name in the result (default: the agent's name).
        on_provider: Called with ``provider:model`` before each provider is tried.
        on_budget_alert: Called with each budget alert the successful call crossed (the
            caller delivers it: :func:`start_budget_alert`); alerts are dropped without it.
        tool_use: The run's tool state (resolved tools, calls made); a fresh one if omitted.
        on_tool_calls: Called with the step's tool-call count each time tools are called.
        closing: The run ends with this agent's answer: its successful call closes the run
            row (agents without tools only; ignored for an agent with tools).
    """
    spec = resolved.spec
    skipped = {(s.provider, s.model): s.reason for s in resolved.skipped}
    chain = _Chain(
        resolved=resolved,
        usable=[link for link in spec.providers if (link.provider, link.model) not in skipped],
        tried=[
            ProviderAttempt(provider=s.provider, model=s.model, status="skipped", error=s.reason)
            for s in resolved.skipped
        ],
    )
    step_name = name or spec.name
    ask = functools.partial(
        _ask_chain,
        chain,
        subject,
        root_workflow_id=root_workflow_id,
        provider_queues=provider_queues,
        on_provider=on_provider,
        on_budget_alert=on_budget_alert,
    )
    if not spec.tools:
        response = await ask(closing=closing)
        if response is None:
            return _agent_step(chain, step_name, [], [], error=_chain_error(chain))
        return _agent_step(chain, step_name, [response], [])
    return await _tool_loop(
        chain, step_name, ask, root_workflow_id, tool_use or ToolUse(), on_tool_calls
    )


async def _ask_chain(
    chain: _Chain,
    subject: RunSubject,
    *,
    root_workflow_id: str,
    provider_queues: bool,
    on_provider: Callable[[str], None] | None,
    on_budget_alert: Callable[[BudgetAlert], None] | None,
    tools: list[ToolSpec] | None = None,
    turns: list[ToolTurn] | None = None,
    tool_choice: Literal["auto", "required"] = "auto",
    closing: RunClosing | None = None,
) -> LLMResponse | None:
    """One model turn, from the chain's current provider on; ``None`` when all failed.

    With ``closing`` the call is asked to close the run row (``LLMRequest.close_run``); what
    it closed is kept in ``closing``.
    """
    spec = chain.resolved.spec
    while chain.position < len(chain.usable):
        position = chain.position + 1
        link = chain.usable[chain.position]
        if on_provider is not None:
            on_provider(str(link))
        close_run = None
        if closing is not None:
            before = closing.request.totals_before
            close_run = closing.request.model_copy(
                update={
                    "totals_before": before.model_copy(
                        update={"attempts": before.attempts + sum(t.attempts for t in chain.tried)}
                    )
                }
            )
        request = LLMRequest(
            **dict(subject),
            agent=spec.name,
            agent_version=spec.version,
            root_workflow_id=root_workflow_id,
            provider=link.provider,
            model=link.model,
            instructions=spec.instructions,
            temperature=spec.temperature,
            max_tokens=spec.max_tokens,
            output_schema=spec.output_schema,
            output_retries=spec.output_retries,
            timeout_s=spec.timeout_s,
            pii=spec.pii,
            record_pii=spec.record_pii,
            tools=tools or [],
            turns=turns or [],
            tool_choice=tool_choice,
            cache=spec.cache,
            close_run=close_run,
        )
        fallback_note = f", fallback {position}/{len(chain.usable)}" if position > 1 else ""
        turn_note = f", turn {len(turns) + 1}" if turns else ""
        # Each provider's calls run on its own task queue, whose workers cap concurrency per
        # provider (fleet-wide limits: chorus/governance/provider_limits.py).
        task_queue = None
        if provider_queues:
            task_queue = llm_task_queue(workflow.info().task_queue, link.provider)
        attempt_s = spec.timeout_s + 10 + SLOT_WAIT_S
        if workflow.info().workflow_type == DRAFT_WORKFLOW:
            # Runs no longer write the marker (retirement step 3): a run lasts minutes, and the
            # marker and its TemporalChangeVersion upsert were two history events and a
            # visibility write per run and child run. Drafts stay open for weeks; one opened
            # while the patch was undeprecated holds its marker, so drafts keep the call.
            workflow.deprecate_patch(LLM_WAIT_CANCELLATION_PATCH)
        try:
            response = await workflow.execute_activity_method(
                activities.LLMCalls.call_llm,
                request,
                task_queue=task_queue,
                start_to_close_timeout=timedelta(seconds=attempt_s),
                schedule_to_close_timeout=timedelta(seconds=attempt_s * LLM_MAX_ATTEMPTS + 300),
                heartbeat_timeout=LLM_HEARTBEAT_TIMEOUT,
                retry_policy=LLM_RETRY_POLICY,
                cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                summary=f"{spec.name} via {link}{fallback_note}{turn_note}",
            )
        except ActivityError as err:
            if isinstance(err.cause, CancelledError):
                raise
            error_type, message, attempts = describe_activity_failure(err)
            chain.tried.append(
                ProviderAttempt(
                    provider=link.provider,
                    model=link.model,
                    status="failed",
                    attempts=attempts,
                    error_type=error_type,
                    error=message,
                )
            )
            if error_type in errors.NO_FALLBACK:
                workflow.logger.warning(
                    "agent %s: %s refused the request (%s); not falling back",
                    spec.name,
                    link,
                    message,
                )
                chain.position = len(chain.usable)
                return None
            workflow.logger.warning(
                "agent %s: provider %s failed after %d attempt(s) (%s: %s)%s",
                spec.name,
                link,
                attempts,
                error_type,
                message,
                "; falling back" if position < len(chain.usable) else "",
            )
            chain.position += 1
            continue
        if workflow.cancellation_reason() is not None and (
            closing is None or response.run_closed is None
        ):
            # The call finished (and was recorded) after the run was cancelled: the run still
            # ends cancelled, counting the call (chorus.finish_run reads what was paid). Unless
            # the call closed the run row: the row and the run's live stream say succeeded, and
            # the run, whose work is done, ends so too.
            raise asyncio.CancelledError("the run was cancelled")
        if on_budget_alert is not None:
            for alert in response.budget_alerts:
                on_budget_alert(alert)
        previous = chain.tried[-1] if chain.tried else None
        if (
            previous is not None
            and previous.status == "succeeded"
            and (previous.provider, previous.model) == (link.provider, link.model)
        ):
            previous.attempts += response.attempt  # a later turn of the same provider
        else:
            chain.tried.append(
                ProviderAttempt(
                    provider=link.provider,
                    model=link.model,
                    status="succeeded",
                    attempts=response.attempt,
                )
            )
        if closing is not None:
            closing.closed, closing.output = response.run_closed, response.output
        return response
    return None


def _agent_step(
    chain: _Chain,
    name: str,
    responses: list[LLMResponse],
    tool_calls: list[ToolCallRecord],
    *,
    error: str | None = None,
) -> StepResult:
    """The step result of an agent's model turns (the last one's output, all turns' costs)."""
    spec = chain.resolved.spec
    last = responses[-1] if responses else None
    return StepResult(
        name=name,
        kind="agent",
        status="failed" if error else "succeeded",
        agent=spec.name,
        agent_version=spec.version,
        provider=last.provider if last else None,
        model=last.model if last else None,
        output="" if error or last is None else last.output,
        input_tokens=sum(r.input_tokens for r in responses),
        output_tokens=sum(r.output_tokens for r in responses),
        cost_usd=sum(r.cost_usd for r in responses),
        latency_ms=sum(r.latency_ms for r in responses),
        attempts=sum(t.attempts for t in chain.tried),
        providers_tried=chain.tried,
        truncated_chars=max((r.truncated_chars for r in responses), default=0),
        error=error,
        tool_calls=tool_calls,
        llm_calls=len(responses) if spec.tools else None,
        cached=bool(responses) and all(r.cached for r in responses),
    )


def _chain_error(chain: _Chain) -> str:
    """Why no provider of the chain answered."""
    reasons = "; ".join(
        f"{t.provider}:{t.model} {t.status}: {t.error}"
        for t in chain.tried
        if t.status != "succeeded"
    )
    return f"every provider failed ({reasons})"


TOOL_HEARTBEAT_TIMEOUT = timedelta(seconds=10)
"""A tool activity heartbeats every ~3 s: a crashed worker's call is noticed in <= 10 s."""


async def _tool_loop(
    chain: _Chain,
    name: str,
    ask: Callable[..., Awaitable[LLMResponse | None]],
    root_workflow_id: str,
    tool_use: ToolUse,
    on_tool_calls: Callable[[int], None] | None,
) -> StepResult:
    """The model->tool loop of one step (see :func:`call_agent`)."""
    spec = chain.resolved.spec
    key = f"{spec.name}@{spec.version}"
    if key not in tool_use.specs:
        try:
            # A local activity: the registry is in this worker and an MCP listing is cached
            # for 60 s, so a task dispatch would cost more than the lookup (bench/tool_calls.py).
            tool_use.specs[key] = await workflow.execute_local_activity_method(
                activities.ToolCalls.resolve_tools,
                ResolveToolsInput(agent=spec.name, tools=spec.tools),
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=1),
                    maximum_interval=timedelta(seconds=10),
                    maximum_attempts=5,
                ),
                summary=f"{spec.name}: resolve tools {', '.join(t.name for t in spec.tools)}",
            )
        except ActivityError as err:
            if isinstance(err.cause, CancelledError):
                raise
            _, message, _ = describe_activity_failure(err)
            return _agent_step(chain, name, [], [], error=f"cannot resolve tools: {message}")
    specs = tool_use.specs[key]
    by_name = {s.name: s for s in specs}
    responses: list[LLMResponse] = []
    records: list[ToolCallRecord] = []
    turns: list[ToolTurn] = []
    made = 0
    while True:
        required = spec.tool_choice == "required" and not turns
        response = await ask(
            tools=specs, turns=turns, tool_choice="required" if required else "auto"
        )
        if response is None:
            return _agent_step(chain, name, responses, records, error=_chain_error(chain))
        responses.append(response)
        calls = response.tool_calls
        if not calls:
            return _agent_step(chain, name, responses, records)
        limit = None
        if made + len(calls) > spec.max_tool_calls:
            limit = (
                f"{errors.TOOL_CALL_LIMIT}: agent {spec.name} asked for {made + len(calls)} "
                f"tool calls in this step; its max_tool_calls is {spec.max_tool_calls}"
            )
        elif tool_use.calls + len(calls) > MAX_TOOL_CALLS_PER_RUN:
            limit = (
                f"{errors.TOOL_CALL_LIMIT}: the run reached {MAX_TOOL_CALLS_PER_RUN} tool calls "
                "(MAX_TOOL_CALLS_PER_RUN)"
            )
        elif len(turns) >= MAX_TOOL_ROUNDS:
            limit = (
                f"{errors.TOOL_CALL_LIMIT}: agent {spec.name} still asked for tools after "
                f"{MAX_TOOL_ROUNDS} model turns"
            )
        if limit is not None:
            workflow.logger.warning("%s", limit)
            return _agent_step(chain, name, responses, records, error=limit)
        made += len(calls)
        tool_use.calls += len(calls)
        if on_tool_calls is not None:
            on_tool_calls(made)
        results = await asyncio.gather(
            *(_call_tool(spec.name, call, by_name, root_workflow_id) for call in calls)
        )
        records += [ToolCallRecord.of(c, r) for c, r in zip(calls, results, strict=True)]
        turns.append(ToolTurn(text=response.output, calls=list(calls), results=list(results)))
        fatal = next(
            (
                r
                for c, r in zip(calls, results, strict=True)
                if r.is_error and c.name in by_name and by_name[c.name].fatal
            ),
            None,
        )
        if fatal is not None:
            return _agent_step(
                chain,
                name,
                responses,
                records,
                error=f"{errors.TOOL_ERROR}: fatal tool {fatal.name} failed: {fatal.output[:500]}",
            )


async def _call_tool(
    agent: str, call: ToolCall, by_name: dict[str, ToolSpec], root_workflow_id: str
) -> ToolResult:
    """Run one tool call as a ``chorus.call_tool`` activity; a failure becomes its result."""
    spec = by_name.get(call.name)
    if spec is None:  # the adapter already said why (a name the agent was not offered)
        return ToolResult(
            call_id=call.id,
            name=call.name,
            output=call.arguments_error or f"no tool named {call.name} was offered",
            is_error=True,
            error_type=errors.UNKNOWN_TOOL,
            attempts=0,
        )
    try:
        return await workflow.execute_activity_method(
            activities.ToolCalls.call_tool,
            CallToolInput(agent=agent, root_workflow_id=root_workflow_id, call=call, spec=spec),
            start_to_close_timeout=timedelta(seconds=spec.timeout_s + 10),
            heartbeat_timeout=TOOL_HEARTBEAT_TIMEOUT,
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=1),
                backoff_coefficient=2.0,
                maximum_interval=timedelta(seconds=10),
                maximum_attempts=spec.max_attempts,
            ),
            summary=f"{agent} → {call.summary()}",
        )
    except ActivityError as err:
        if isinstance(err.cause, CancelledError):
            raise
        error_type, message, _ = describe_activity_failure(err)
        note = (
            "; the call was not repeated (the tool is not idempotent), so whether it took "
            "effect is unknown"
            if not spec.idempotent
            else ""
        )
        return ToolResult(
            call_id=call.id,
            name=call.name,
            output=f"the tool did not answer ({error_type}: {message}){note}",
            is_error=True,
            error_type=error_type,
            attempts=spec.max_attempts,
        )


@dataclasses.dataclass
class RunState:
    """Everything a run workflow holds between workflow tasks, in one place.

    Attributes:
        started_at: Workflow start time (``workflow.now()`` at init).
        progress: One entry per top-level step, for the ``progress`` query and the UI.
        done: No step runs any more.
        subject: Task, document and earlier outputs (from the input, passed whole).
        root_workflow_id: Top-level run, under which every call is recorded.
        callback_url: Where the outcome is POSTed (top-level runs that asked for it).
        callback_retry_initial_s: First retry delay of that delivery, in seconds.
        agents: Agent configurations pinned at start (by ``chorus.start_run`` or the parent).
        provider_queues: LLM calls go to ``<task queue>-llm-<provider>`` (the choice the
            worker that started the run recorded: ``CHORUS_LLM_TASK_QUEUES``).
        alerts: Budget alert and gate announcement deliveries started, awaited before the
            run ends.
        tool_use: Tools resolved and tool calls made by this run workflow.
        gates: This workflow's gates, pending and decided (``gates`` query).
        gate_seq: Gates opened so far (each opening's key is ``<run id>:<n>``).
        gate_edits: Replacement text of ``edit`` decisions, by gate key.
        gate_callback_url: Where pending gates are announced (the run's callback URL; child
            workflows inherit it for gates inside loops).
        rounds: Iterations, routes, hops or turns of a control workflow.
        close_in_last_call: The run's last call may close the run row (the choice the worker
            that started the run recorded: ``CHORUS_CLOSE_RUN_IN_LAST_CALL``).
        closing: The run's last call, asked to close the run row (:meth:`_closing_call`).
    """

    started_at: datetime
    progress: list[StepProgress]
    done: bool = False
    subject: RunSubject = dataclasses.field(
        default_factory=lambda: RunSubject.model_construct(task="")
    )
    root_workflow_id: str = ""
    callback_url: str | None = None
    callback_retry_initial_s: float = 1.0
    agents: dict[str, ResolvedAgent] = dataclasses.field(default_factory=dict)
    provider_queues: bool = True
    alerts: list[workflow.ActivityHandle[None]] = dataclasses.field(default_factory=list)
    tool_use: ToolUse = dataclasses.field(default_factory=ToolUse)
    gates: list[GateRecord] = dataclasses.field(default_factory=list)
    gate_seq: int = 0
    gate_edits: dict[str, str | None] = dataclasses.field(default_factory=dict)
    gate_callback_url: str | None = None
    rounds: int = 0
    close_in_last_call: bool = False
    closing: RunClosing | None = None


class RunWorkflowBase(GateKeeping):
    """State and helpers common to the run workflows (sequential, parallel, control)."""

    pattern: Literal["sequential", "parallel", "loop", "router", "handoff", "group_chat"]
    state: RunState

    def _init_progress(self, names: list[tuple[str, StepKind]]) -> None:
        self.state = RunState(
            started_at=workflow.now(),
            progress=[StepProgress(name=name, kind=kind) for name, kind in names],
        )

    @workflow.query(name=PROGRESS_QUERY)
    def progress(self) -> RunProgress:
        """Live state of every step (name, status, provider, timings)."""
        s = self.state
        return RunProgress(
            pattern=self.pattern,
            started_at=s.started_at,
            steps=s.progress,
            done=s.done,
            gates=s.gates,
            rounds=s.rounds,
        )

    def _mark(
        self,
        index: int,
        status: Literal["pending", "running", "succeeded", "failed"],
        *,
        provider: str | None = None,
        error: str | None = None,
    ) -> None:
        step = self.state.progress[index]
        step.status = status
        if provider is not None:
            step.provider = provider
        if status == "running" and step.started_at is None:
            step.started_at = workflow.now()
        if status in ("succeeded", "failed"):
            step.finished_at = workflow.now()
            step.error = error
        self._publish_details()

    def _publish_details(self) -> None:
        icons = {"pending": "·", "running": "▶", "succeeded": "✓", "failed": "✗"}
        progress = self.state.progress
        lines = [
            f"**{self.pattern} run** — {sum(s.status == 'succeeded' for s in progress)}"
            f"/{len(progress)} steps done"
        ]
        for number, step in enumerate(progress, 1):
            via = f" via `{step.provider}`" if step.provider else ""
            err = f" — {step.error[:120]}" if step.error else ""
            tools = f", {step.tool_calls} tool calls" if step.tool_calls else ""
            note = f" — {step.note}" if step.note else ""
            lines.append(
                f"{number}. {icons[step.status]} {step.name} ({step.kind}){via}{tools}{note}{err}"
            )
        for gate in self.state.gates:
            if gate.pending:
                who = ", ".join(gate.approvers) or "anyone"
                lines.append(f"**waiting at gate `{gate.gate}`** ({who}): {gate.question}")
        workflow.set_current_details("\n".join(lines))

    def _gate_changed(self) -> None:
        self._publish_details()

    def _announce_gate(self, record: GateRecord) -> None:
        """POST the pending gate to the run's callback URL (``awaiting_approval``), if any.

        The delivery is awaited with the budget alerts before the workflow ends.
        """
        url = self.state.gate_callback_url
        if url is None:
            return
        info = workflow.info()
        payload = CallbackPayload(
            workflow_id=info.workflow_id,
            run_id=info.run_id,
            workflow_type=info.workflow_type,
            status="awaiting_approval",
            finished_at=workflow.now(),
            gate=record,
        )
        self.state.alerts.append(
            workflow.start_activity_method(
                activities.Deliveries.deliver_callback,
                DeliverCallbackInput(url=url, payload=payload),
                start_to_close_timeout=CALLBACK_ATTEMPT_TIMEOUT,
                schedule_to_close_timeout=BUDGET_ALERT_WINDOW,
                retry_policy=CALLBACK_RETRY_POLICY,
                summary=f"Callback: gate {record.gate} awaits a decision → {url_host(url)}",
            )
        )

    async def _start_run(self, input: SequentialInput | ParallelInput, names: list[str]) -> None:
        """Pin agent configurations and record the run row (``chorus.start_run``).

        Raises:
            ApplicationError: ``InvalidInput`` (non-retryable) when the input breaks the rules
                the SDK enforces (a plain Temporal client may have started the run).
        """
        info = workflow.info()
        start_values: list[SearchAttributeUpdate[Any]] = [
            PATTERN_ATTR.value_set(self.pattern),
            AGENTS_ATTR.value_set(names),
            STATUS_ATTR.value_set("running"),
        ]
        if not _started_with(start_values):
            # The SDK sets these at start; upserting covers plain clients.
            workflow.upsert_search_attributes(start_values)
        s = self.state
        s.subject = input.subject()
        s.root_workflow_id = info.root.workflow_id if info.root else info.workflow_id
        s.callback_url = input.callback_url if info.parent is None else None
        s.gate_callback_url = input.callback_url
        s.callback_retry_initial_s = input.callback_retry_initial_s
        problem = s.subject.problem()
        if problem is not None:
            s.done = True
            self._set_end_attributes("failed", 0.0)
            await self._deliver_callback("failed", RunTotals(), None, problem, workflow.now())
            raise ApplicationError(problem, type=errors.INVALID_INPUT, non_retryable=True)
        try:
            result = await self._bookkeeping(
                activities.RunBookkeeping.start_run,
                StartRunInput.for_run(
                    s.subject,
                    pattern="parallel" if self.pattern == "parallel" else "sequential",
                    names=names,
                    pinned=input.agents,
                    parent_workflow_id=info.parent.workflow_id if info.parent else None,
                    root_workflow_id=s.root_workflow_id,
                    started_at=s.started_at,
                ),
                start_to_close_timeout=timedelta(seconds=30),
                summary=f"Record run; pin agents {', '.join(names)}",
            )
        except (ActivityError, ApplicationError) as err:
            if isinstance(err, ApplicationError):
                # A local activity's failure (START_FAILURE_PATCH); before the patch it failed
                # the run as it was.
                if not workflow.patched(START_FAILURE_PATCH):
                    raise
                error_type, message = err.type or "ApplicationError", err.message
            elif isinstance(err.cause, CancelledError):
                self._set_end_attributes("cancelled", 0.0)
                await self._deliver_callback(
                    "cancelled", RunTotals(), None, "cancelled", workflow.now()
                )
                raise
            else:
                error_type, message, _ = describe_activity_failure(err)
            s.done = True
            self._set_end_attributes("failed", 0.0)
            await self._deliver_callback(
                "failed", RunTotals(), None, f"cannot start: {message}", workflow.now()
            )
            raise ApplicationError(
                f"cannot start: {message}", type=error_type, non_retryable=True
            ) from err
        s.agents = result.agents
        s.provider_queues = result.provider_task_queues
        s.close_in_last_call = result.close_run_in_last_call

    async def _bookkeeping(
        self,
        activity: Callable[[RunBookkeeping, ArgT], Awaitable[ResultT]],
        arg: ArgT,
        *,
        start_to_close_timeout: timedelta,
        summary: str,
        shield: bool = False,
    ) -> ResultT:
        """Run a run-bookkeeping activity as a local activity.

        It retries until PostgreSQL answers (``STORAGE_RETRY_POLICY``), backing off on a
        workflow timer once past a few seconds (``LOCAL_RETRY_THRESHOLD``).

        Args:
            activity: The activity's interface method (:mod:`chorus.contracts.activities`).
            arg: Its input.
            start_to_close_timeout: One attempt's limit.
            summary: Shown in the Temporal UI.
            shield: A cancellation request arriving meanwhile does not cancel it (the run has
                ended and must be recorded).
        """
        handle = workflow.start_local_activity_method(
            activity,
            arg,
            start_to_close_timeout=start_to_close_timeout,
            retry_policy=STORAGE_RETRY_POLICY,
            local_retry_threshold=LOCAL_RETRY_THRESHOLD,
            summary=summary,
        )
        if not shield:
            return await handle
        await _finish_despite_cancellation(handle, "the run is being recorded")
        return handle.result()

    def _set_end_attributes(
        self, status: Literal["succeeded", "failed", "cancelled"], cost_usd: float
    ) -> None:
        """Upsert ChorusStatus and ChorusCostUsd (USD) once the run has ended."""
        workflow.upsert_search_attributes(
            [STATUS_ATTR.value_set(status), COST_ATTR.value_set(float(cost_usd))]
        )

    async def _finish_run(
        self,
        status: Literal["succeeded", "failed", "cancelled"],
        result: RunResult | None,
        error: str | None = None,
    ) -> None:
        """Close the run row, then deliver the run's callback if it has one.

        Top-level runs also archive their transcript.
        """
        info = workflow.info()
        finished = workflow.now()
        totals = result.totals if result else totals_of([], self.state.started_at, finished)
        output = result.output if result and status == "succeeded" else None
        self._set_end_attributes(status, totals.cost_usd)
        closing = self.state.closing
        if result is not None and status == "succeeded" and closing is not None and closing.valid:
            # Closed by the run's last call, with this output and these totals (issue 19).
            finished = result.finished_at
        else:
            await self._bookkeeping(
                activities.RunBookkeeping.finish_run,
                FinishRunInput(
                    status=status,
                    finished_at=finished,
                    totals=totals,
                    output=output,
                    error=error,
                    archive=info.parent is None,
                ),
                start_to_close_timeout=timedelta(seconds=60),
                summary=f"Record run {status}",
                shield=True,
            )
        await self._deliver_callback(status, totals, output, error, finished)
        await await_deliveries(self.state.alerts)

    async def _deliver_callback(
        self,
        status: CallbackStatus,
        totals: RunTotals,
        output: str | None,
        error: str | None,
        finished_at: datetime,
    ) -> None:
        """POST the run's outcome to its callback URL, if it has one (``chorus.deliver_callback``).

        A cancellation request arriving while the delivery is in flight neither stops it nor
        changes how the run ends: the run already ended and is recorded, so the receiver must
        hear about it (``workflow.wait`` does not cancel what it waits on). A delivery that fails
        for good is logged as a warning, never raised: the run's own result stands. Runs
        without a callback URL (child workflows, and every run before callbacks existed)
        schedule nothing, so their histories replay unchanged.

        Args:
            status: How the run ended.
            totals: The run's totals (partial for a failed run).
            output: Final output, for a succeeded run.
            error: Why the run failed, or ``"cancelled"``.
            finished_at: When the run ended (workflow time).
        """
        url = self.state.callback_url
        if url is None:
            return
        info = workflow.info()
        payload = CallbackPayload(
            workflow_id=info.workflow_id,
            run_id=info.run_id,
            workflow_type=info.workflow_type,
            status=status,
            output=output,
            error=error,
            totals=CallbackTotals(
                llm_calls=totals.llm_calls,
                input_tokens=totals.input_tokens,
                output_tokens=totals.output_tokens,
                cost_usd=totals.cost_usd,
            ),
            finished_at=finished_at,
        )
        delivery = workflow.start_activity_method(
            activities.Deliveries.deliver_callback,
            DeliverCallbackInput(url=url, payload=payload),
            start_to_close_timeout=CALLBACK_ATTEMPT_TIMEOUT,
            schedule_to_close_timeout=CALLBACK_DELIVERY_WINDOW,
            retry_policy=dataclasses.replace(
                CALLBACK_RETRY_POLICY,
                initial_interval=timedelta(seconds=self.state.callback_retry_initial_s),
            ),
            summary=f"Callback: run {status} → {url_host(url)}",
        )
        await _finish_despite_cancellation(delivery, "the run's callback is in flight")
        try:
            delivery.result()
        except ActivityError as err:
            workflow.logger.warning(
                "callback to %s not delivered (run %s is unaffected): %s",
                url_host(url),
                status,
                failure_message(err),
            )

    async def _run_body(self, body: Awaitable[RunResult]) -> RunResult:
        """Await the orchestration, recording success, failure or cancellation in PostgreSQL."""
        try:
            result = await body
        except ApplicationError as err:
            partial = (
                err.details[0] if err.details and isinstance(err.details[0], RunResult) else None
            )
            await self._finish_run("failed", partial, err.message)
            raise
        except (asyncio.CancelledError, CancelledError, ActivityError, ChildWorkflowError) as err:
            if not is_cancellation(err):
                raise
            self.state.done = True
            for (
                step
            ) in self.state.progress:  # nothing runs any more ("failed": old clients read it)
                if step.status in ("pending", "running"):
                    step.status, step.error = "failed", "cancelled"
                    step.finished_at = step.finished_at or workflow.now()
            self._publish_details()
            await self._finish_run("cancelled", None, "cancelled")
            raise
        await self._finish_run("succeeded", result)
        return result

    async def _run_agent(
        self,
        resolved: ResolvedAgent,
        *,
        context: list[PriorOutput],
        progress_index: int | None,
        name: str | None = None,
        closing: RunClosing | None = None,
    ) -> StepResult:
        """Run one agent of this run (see :func:`call_agent`), updating its progress entry."""

        def mark(provider: str) -> None:
            if progress_index is not None:
                self._mark(progress_index, "running", provider=provider)

        def count_tools(made: int) -> None:
            if progress_index is not None:
                self.state.progress[progress_index].tool_calls = made
                self._publish_details()

        s = self.state
        return await call_agent(
            resolved,
            s.subject.model_copy(update={"context": context}),
            root_workflow_id=s.root_workflow_id,
            provider_queues=s.provider_queues,
            name=name,
            on_provider=mark,
            on_budget_alert=lambda alert: s.alerts.append(start_budget_alert(alert)),
            tool_use=s.tool_use,
            on_tool_calls=count_tools,
            closing=closing,
        )

    async def _run_step(
        self,
        index: int,
        step: Step,
        context: list[PriorOutput],
        *,
        earlier: list[StepResult] | None = None,
    ) -> StepResult:
        """Run step ``index``: an agent call, a gate, or a group/control step as a child.

        ``earlier``: the run's other steps when this one is its last and its output the run's
        (an agent step's call then closes the run row: :meth:`_closing_call`).
        """
        self._mark(index, "running")
        if isinstance(step, AgentStep):
            agent = self.state.agents[step.agent]
            result = await self._run_agent(
                agent,
                context=context,
                progress_index=index,
                closing=None if earlier is None else self._closing_call(agent, earlier),
            )
        elif isinstance(step, GateStep):
            self.state.progress[index].note = "waiting for a decision"
            result = await self._run_gate(step, context)
            gate = result.control.gate if result.control else None
            if gate is not None and gate.outcome is not None:
                by = f" by {gate.decided_by}" if gate.decided_by else ""
                self.state.progress[index].note = f"{gate.outcome}{by}"
        elif isinstance(step, SequentialStep | ParallelStep):
            result = await self._run_child(index, step, context)
        else:
            result = await self._run_control(index, step, context)
        self._mark(index, result.status, error=result.error)
        return result

    def _child_id(self, index: int) -> str:
        """Workflow id of the child running step ``index`` (``<id>-s<n>``)."""
        return f"{workflow.info().workflow_id}-s{index + 1}"

    async def _run_control(
        self, index: int, step: ControlStep, context: list[PriorOutput]
    ) -> StepResult:
        """Run a loop, router, handoff or group chat as a ``ChorusControl`` child workflow."""
        label = step_label(step)
        child_id = self._child_id(index)
        self.state.progress[index].child_workflow_id = child_id
        self._publish_details()
        started = workflow.now()
        try:
            result: StepResult = await workflow.execute_child_workflow(
                CONTROL_WORKFLOW,
                ControlInput(
                    **self._child_material(context),
                    step=step,
                    provider_task_queues=self.state.provider_queues,
                ),
                id=child_id,
                result_type=StepResult,
                parent_close_policy=workflow.ParentClosePolicy.REQUEST_CANCEL,
                static_summary=f"{step.kind} step {index + 1} of {workflow.info().workflow_id}: "
                f"{label}",
            )
        except ChildWorkflowError as err:
            return _failed_child(err, label, step.kind, child_id, started)
        result.child_workflow_id = child_id
        if result.control is not None:
            self.state.progress[
                index
            ].note = f"{result.control.rounds} round(s), ended by {result.control.ended_by}"
        return result

    async def _run_child(
        self, index: int, step: SequentialStep | ParallelStep, context: list[PriorOutput]
    ) -> StepResult:
        label = step_label(step)
        child_id = self._child_id(index)
        self.state.progress[index].child_workflow_id = child_id
        child_input: SequentialInput | ParallelInput
        if isinstance(step, SequentialStep):
            child_type = SEQUENTIAL_WORKFLOW
            child_input = SequentialInput(**self._child_material(context), steps=step.steps)
        else:
            child_type = PARALLEL_WORKFLOW
            child_input = ParallelInput(
                **self._child_material(context),
                branches=step.branches,
                aggregator=step.aggregator,
                min_successes=step.min_successes,
            )
        started = workflow.now()
        try:
            child: RunResult = await workflow.execute_child_workflow(
                child_type,
                child_input,
                id=child_id,
                result_type=RunResult,
                parent_close_policy=workflow.ParentClosePolicy.REQUEST_CANCEL,
                static_summary=f"{step.kind} step {index + 1} of {workflow.info().workflow_id}: "
                f"{label}",
            )
        except ChildWorkflowError as err:
            return _failed_child(err, label, step.kind, child_id, started)
        return StepResult(
            name=label,
            kind=step.kind,
            status="succeeded",
            output=child.output,
            input_tokens=child.totals.input_tokens,
            output_tokens=child.totals.output_tokens,
            cost_usd=child.totals.cost_usd,
            latency_ms=child.totals.wall_ms,
            attempts=child.totals.attempts,
            child_workflow_id=child_id,
            steps=child.steps,
        )

    def _child_material(self, context: list[PriorOutput]) -> dict[str, Any]:
        """What a child workflow inherits: the run subject (with ``context``) and the agents."""
        subject = self.state.subject.model_copy(update={"context": context})
        return {
            **dict(subject),
            "agents": self.state.agents,
            "callback_url": self.state.gate_callback_url,
            "callback_retry_initial_s": self.state.callback_retry_initial_s,
        }

    def _closing_call(self, agent: ResolvedAgent, earlier: list[StepResult]) -> RunClosing | None:
        """Ask the run's last call to close the run row, so no ``chorus.finish_run`` follows.

        For the step whose answer is the run's output (a sequential run's last agent step, a
        parallel run's aggregator) when its agent has no tools (a tool loop's last turn is not
        known in advance). ``earlier``: the run's other steps, whose totals the row adds up.
        A call that closes nothing (an older worker, PostgreSQL refused) leaves it to
        ``chorus.finish_run``; so do failed and cancelled runs.
        """
        s = self.state
        if agent.spec.tools or not s.close_in_last_call:
            return None
        s.closing = RunClosing(
            request=CloseRun(
                started_at=s.started_at,
                totals_before=totals_of(earlier, s.started_at, s.started_at, round_cost=False),
                archive=workflow.info().parent is None,
            )
        )
        return s.closing

    def _finish(
        self,
        *,
        output: str,
        steps: list[StepResult],
        failed: list[tuple[str, str]] | None = None,
    ) -> RunResult:
        s = self.state
        s.done = True
        finished = workflow.now()
        closing = s.closing
        if closing is not None and closing.closed is not None:
            # The last call closed the row: the result takes the row's end time, and the
            # workflow closes the row again only if its own output or totals differ.
            closed = closing.closed
            if output == closing.output and closed.totals == totals_of(
                steps, s.started_at, closed.finished_at
            ):
                closing.valid = True
                finished = closed.finished_at
            else:
                workflow.logger.warning(
                    "the run row its last call closed differs from the result; "
                    "chorus.finish_run rewrites it"
                )
        return RunResult(
            workflow_id=workflow.info().workflow_id,
            pattern=self.pattern,
            task=s.subject.task,
            output=output,
            steps=steps,
            totals=totals_of(steps, s.started_at, finished),
            failed_branches=[FailedBranch(name=n, error=e) for n, e in failed or []],
            started_at=s.started_at,
            finished_at=finished,
        )

    def _fail(self, message: str, error_type: str, partial: RunResult) -> ApplicationError:
        self.state.done = True
        self._publish_details()
        return ApplicationError(message, partial, type=error_type, non_retryable=True)
