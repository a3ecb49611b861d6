"""Runs: start sequential and parallel runs, watch, cancel and list them, read transcripts."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from chorus.contracts import validation
from chorus.contracts.models import (
    CONTROL_KINDS,
    MAX_PLAN_DEPTH,
    AgentStep,
    ParallelInput,
    RunProgress,
    RunResult,
    RunSubject,
    SequentialInput,
    Step,
    plan_agents,
    plan_depth,
    step_label,
)
from chorus.contracts.names import (
    AGENTS_ATTR,
    PARALLEL_WORKFLOW,
    PATTERN_ATTR,
    PROGRESS_QUERY,
    SEQUENTIAL_WORKFLOW,
    STATUS_ATTR,
    WORKFLOW_TYPES,
)
from chorus.integrations.webhooks import validate_callback_url
from chorus.storage import db, stream_rows
from chorus.streaming import StreamEvent, subscribe
from chorus.streaming.reader import WATCH_TTL
from starter.sdk.client_base import FocusedClient, PoolOpener, input_refusals, validated
from starter.sdk.plans import check_plan
from starter.sdk.sdk_errors import ChorusInputError, RunFailedError, raise_if_unregistered
from starter.sdk.workflow_ids import Pattern, id_taken, make_workflow_id


@dataclass(frozen=True)
class RunStatus:
    """What ``chorus status`` shows about a run."""

    workflow_id: str
    run_id: str | None
    workflow_type: str
    status: str
    started_at: datetime | None
    closed_at: datetime | None
    summary: str | None
    progress: RunProgress | None
    ui_url: str
    error: str | None = None
    """Why a FAILED or TERMINATED run ended: ``"<type>: <message>"`` from its history."""
    error_type: str | None = None
    """The failure's type (e.g. ``InvalidInput``, ``StepFailed``), when it has one."""


@dataclass(frozen=True)
class RunSummary:
    """One row of ``chorus list``."""

    workflow_id: str
    workflow_type: str
    status: str
    started_at: datetime | None
    closed_at: datetime | None
    parent_id: str | None


class RunHandle:
    """A started run: its ids, its UI link, and ways to wait for or watch it."""

    def __init__(
        self,
        handle: WorkflowHandle[object, RunResult],
        ui_url: str,
        pool: PoolOpener | None = None,
    ) -> None:
        self._handle = handle
        self._pool = pool
        self.workflow_id = handle.id
        self.run_id = handle.result_run_id
        self.ui_url = ui_url

    async def result(self) -> RunResult:
        """Wait for the run to end and return its result.

        Raises:
            RunFailedError: The run failed, was cancelled or terminated.

        """
        return await _result(self._handle)

    async def progress(self) -> RunProgress:
        """Query the live progress of every step."""
        progress: RunProgress = await self._handle.query(PROGRESS_QUERY, result_type=RunProgress)
        return progress

    async def stream(
        self, after_id: int = 0, *, heartbeat_s: float = 15.0
    ) -> AsyncIterator[StreamEvent]:
        """The run's live events: each LLM call's start, text as it is written, and end.

        Stored events come first (all of them, or those after ``after_id``), then each new one
        as the worker writes it; the iteration ends after ``run_finished``, or once the
        workflow is found closed without one (terminated, timed out; checked after each
        ``heartbeat_s`` of silence). Events are described in
        :mod:`chorus.streaming.stream_event`; :class:`chorus.streaming.Assembler` turns them
        into each step's text, dropping what a retried attempt replaced.

        Args:
            after_id: Resume after this event id (the last one seen); 0 for all.
            heartbeat_s: Seconds of silence after which the workflow's status is checked.

        Yields:
            :class:`~chorus.streaming.StreamEvent` in id order.

        Raises:
            RuntimeError: The handle was made without the client's pool (not through
                :class:`~starter.sdk.ChorusClient`).
            DatabaseError: PostgreSQL not configured or unreachable.
        """
        if self._pool is None:
            raise RuntimeError("this RunHandle has no PostgreSQL pool: get it from ChorusClient")
        pool = await self._pool()

        async def closed() -> bool:
            try:
                description = await self._handle.describe()
            except RPCError:
                return False
            return not is_running(description.status)

        events = subscribe(
            pool, self.workflow_id, after_id=after_id, heartbeat_s=heartbeat_s, closed=closed
        )
        async with contextlib.aclosing(events):
            async for event in events:
                if event is not None:
                    yield event


def is_running(status: WorkflowExecutionStatus | None) -> bool:
    """Whether a workflow status means the run is still in flight."""
    return status == WorkflowExecutionStatus.RUNNING


async def _result(handle: WorkflowHandle[object, RunResult]) -> RunResult:
    """The run's result; its failure as a :class:`RunFailedError` with the partial result."""
    try:
        return await handle.result()
    except WorkflowFailureError as exc:
        cause = exc.cause
        partial = None
        message = str(cause or exc)
        status = "FAILED"
        if isinstance(cause, ApplicationError):
            message = cause.message
            if cause.details:
                try:
                    partial = RunResult.model_validate(cause.details[0])
                except ValueError:
                    partial = None
        elif cause is not None:
            status = type(cause).__name__.replace("Error", "").upper() or status
            message = getattr(cause, "message", "") or message
        raise RunFailedError(
            f"run {handle.id} {status.lower()}: {message}",
            handle.id,
            status,
            partial,
            error_type=cause.type if isinstance(cause, ApplicationError) else None,
        ) from exc


async def _closing_failure(handle: WorkflowHandle[Any, Any]) -> tuple[str | None, str | None]:
    """``("<type>: <message>", type)`` of a closed run's failure (decoded with the codec)."""
    try:
        await handle.result(follow_runs=False)
    except WorkflowFailureError as exc:
        cause = exc.cause
        kind = getattr(cause, "type", None) or type(cause).__name__
        return f"{kind}: {cause.message if hasattr(cause, 'message') else cause}", kind
    except Exception as exc:  # best effort: the history may be gone
        return f"(could not read the failure: {type(exc).__name__})", None
    return None, None


def _to_steps(items: Sequence[str | Step]) -> list[Step]:
    return [AgentStep(agent=i) if isinstance(i, str) else i for i in items]


class RunsClient(FocusedClient):
    """Start, watch, cancel and list runs; read a run's transcript from PostgreSQL.

    Reached as ``ChorusClient.runs``. Inputs are validated here, before anything is started:
    errors name the field and the limit.
    """

    # -- validation ------------------------------------------------------------------------

    async def validate(
        self, task: str, document: str, steps: Sequence[Step], extra_agents: Sequence[str]
    ) -> None:
        """Check a run's input against the limits and the agent configurations in PostgreSQL.

        Args:
            task: What to do (characters).
            document: Input document text (its size is counted in UTF-8 bytes).
            steps: The run's plan (nested steps allowed).
            extra_agents: Further agents the run uses (e.g. the aggregator).

        Raises:
            ChorusInputError: ``task`` empty or longer than ``CHORUS_MAX_TASK_CHARS``;
                ``document`` larger than ``CHORUS_MAX_DOCUMENT_BYTES``; plan deeper than 4
                levels; a gate name used twice, or a loop's ``until``/``output_from`` naming
                none of its steps (:func:`~starter.sdk.plans.check_plan`); an agent unknown
                to PostgreSQL (routers, managers and hand-off agents included).
            DatabaseError: PostgreSQL not configured or unreachable.
        """
        s = self.settings
        if not task.strip():
            raise ChorusInputError("task: must not be empty")
        if len(task) > s.max_task_chars:
            raise ChorusInputError(
                f"task: {len(task)} characters, the limit is {s.max_task_chars} "
                "(CHORUS_MAX_TASK_CHARS)"
            )
        size = len(document.encode("utf-8"))
        if size > s.max_document_bytes:
            raise ChorusInputError(
                f"document: {size} bytes, the limit is {s.max_document_bytes} bytes "
                "(CHORUS_MAX_DOCUMENT_BYTES)"
            )
        if "\x00" in document or "\x00" in task:
            raise ChorusInputError("document/task: contains NUL characters; is it a binary file?")
        depth = plan_depth(list(steps))
        if depth > MAX_PLAN_DEPTH:
            raise ChorusInputError(
                f"plan: nested {depth} levels deep, the limit is {MAX_PLAN_DEPTH}"
            )
        check_plan(steps)
        names = list(dict.fromkeys(plan_agents(list(steps)) + list(extra_agents)))
        pool = await self._pool()
        found = await db.current_agents(pool, names)  # the run's agents only (issue 19)
        missing = [n for n in names if n not in found]
        if missing:
            raise ChorusInputError(
                f"agents: unknown agent(s) {', '.join(sorted(set(missing)))}; "
                f"known: {', '.join(await db.agent_names(pool))}"
            )

    def _clean_run_text(
        self, task: str, document: str, document_name: str | None, workflow_id: str | None
    ) -> tuple[str, str, str | None]:
        """Strip control characters, check ids and run the prohibited-content check.

        Raises:
            ChorusInputError: Names the field and the rule or limit.
        """
        with input_refusals():
            if workflow_id is not None:
                validation.check_identifier("workflow_id", workflow_id)
            task = validation.clean_text(
                "task", task, max_chars=self.settings.max_task_chars, required=True
            )
            document = validation.strip_controls(document)
            if document_name is not None:
                document_name = validation.clean_text("document_name", document_name, max_chars=200)
        self._check_content({"task": task, "document": document})
        return task, document, document_name

    def _callback_fields(self, callback_url: str | None) -> dict[str, Any]:
        """Run-input fields of a callback: the checked URL and the first retry delay.

        Raises:
            ChorusInputError: The URL is not http/https or is longer than 2048 characters.
        """
        if callback_url is None:
            return {}
        try:
            validate_callback_url(callback_url)
        except ValueError as exc:
            raise ChorusInputError(str(exc)) from None
        return {
            "callback_url": callback_url,
            "callback_retry_initial_s": self.settings.callback_retry_initial_s,
        }

    async def _subject(
        self,
        task: str,
        document: str,
        document_name: str | None,
        workflow_id: str | None,
        steps: Sequence[Step],
        extra_agents: Sequence[str],
        api_key: str | None = None,
    ) -> RunSubject:
        """The run subject the workflow gets: text cleaned and checked, a large document stored.

        Raises:
            ChorusInputError: Names the field and the rule or limit (see :meth:`validate`);
                ``api_key`` not a key name (``API_KEY_NAME_PATTERN``).
        """
        task, document, document_name = self._clean_run_text(
            task, document, document_name, workflow_id
        )
        await self.validate(task, document, steps, extra_agents)
        return validated(
            RunSubject,
            task=task,
            document_name=document_name,
            api_key=api_key,
            **await self._document_fields(document),
        )

    async def _document_fields(self, document: str) -> dict[str, Any]:
        """Inline a small document; store a large one in PostgreSQL and pass its reference."""
        if len(document.encode("utf-8")) <= self.settings.inline_text_bytes:
            return {"document": document}
        return {"document": "", "document_ref": await db.put_text(await self._pool(), document)}

    # -- starting runs ---------------------------------------------------------------------

    async def start_sequential(
        self,
        task: str,
        agents: Sequence[str | Step],
        *,
        document: str = "",
        document_name: str | None = None,
        workflow_id: str | None = None,
        callback_url: str | None = None,
        api_key: str | None = None,
        idempotency_digest: str | None = None,
        stream: bool = False,
    ) -> RunHandle:
        """Start a sequential pipeline.

        Args:
            task: What to do, plain words (<= ``CHORUS_MAX_TASK_CHARS`` characters).
            agents: Steps in order: agent names, or nested
                :class:`~chorus.contracts.models.SequentialStep`/:class:`~chorus.contracts.models.ParallelStep`,
                or control steps built with :mod:`starter.sdk.plans` (loop, router, handoff,
                group chat, gate).
            document: Input document text (<= ``CHORUS_MAX_DOCUMENT_BYTES`` UTF-8 bytes).
            document_name: Shown to the agents and in the UI.
            workflow_id: Override the generated ``seq-<slug>-<id>``.
            callback_url: ``http(s)`` URL (<= 2048 characters) POSTed the signed result when
                the run ends, whatever the outcome (see :mod:`chorus.integrations.webhooks`); the
                worker needs ``CHORUS_CALLBACK_SECRET``.
            api_key: Name of the API key the run is started for (the HTTP API passes the
                authenticated key's name): recorded on the run's row, and every priced LLM call
                of the run reserves against that key's daily budget (``key:<name>``). The SDK
                trusts the caller: it checks the name's form, not the key.
            idempotency_digest: Makes the start idempotent (the HTTP API's
                ``Idempotency-Key``): a run already running under ``workflow_id`` is returned
                instead of refused (conflict policy ``USE_EXISTING``), and this digest of the
                request is kept in the memo (``chorus_request_sha256``) so a different request
                under the same id can be told apart.
            stream: The caller will read the run live (:meth:`RunHandle.stream`): its LLM
                calls stream their text from the first one on. Otherwise a call streams only
                while a reader watches the run (``chorus/streaming/reader.py``); one that
                started before appears whole when it ends.

        Raises:
            ChorusInputError: Invalid input (see :meth:`validate`) or callback URL, or the
                workflow id is already used.
            SearchAttributesMissingError: The namespace lacks the Chorus search attributes.

        """
        steps = _to_steps(agents)
        callback = self._callback_fields(callback_url)
        subject = await self._subject(
            task, document, document_name, workflow_id, steps, [], api_key
        )
        run_input = validated(SequentialInput, **dict(subject), steps=steps, **callback)
        plan = " → ".join(step_label(s) for s in steps)
        return await self._start(
            "sequential", run_input, plan, workflow_id, idempotency_digest, stream=stream
        )

    async def start_parallel(
        self,
        task: str,
        branches: Sequence[str | Step],
        *,
        aggregator: str | None = "aggregator",
        min_successes: int = 1,
        document: str = "",
        document_name: str | None = None,
        workflow_id: str | None = None,
        callback_url: str | None = None,
        api_key: str | None = None,
        idempotency_digest: str | None = None,
        stream: bool = False,
    ) -> RunHandle:
        """Start a parallel fan-out/fan-in run.

        Args:
            task: What to do.
            branches: Branches run at once: agent names or nested steps.
            aggregator: Agent merging the branch outputs; ``None`` joins them under headings.
            min_successes: Branches that must succeed (1..len(branches)).
            document: Input document text.
            document_name: Shown to the agents and in the UI.
            workflow_id: Override the generated ``par-<slug>-<id>``.
            callback_url: ``http(s)`` URL POSTed the signed result when the run ends (see
                :meth:`start_sequential`).
            idempotency_digest: See :meth:`start_sequential`.
            api_key: Name of the API key the run is started for (see
                :meth:`start_sequential`).
            stream: The caller will read the run live (see :meth:`start_sequential`).

        Raises:
            ChorusInputError: Invalid input (see :meth:`validate`), ``min_successes`` out of
                range, an invalid callback URL, or the workflow id is already used.
            SearchAttributesMissingError: The namespace lacks the Chorus search attributes.

        """
        steps = _to_steps(branches)
        callback = self._callback_fields(callback_url)
        if not 1 <= min_successes <= len(steps):
            raise ChorusInputError(
                f"min_successes: {min_successes}, must be between 1 and the number of "
                f"branches ({len(steps)})"
            )
        extra = [aggregator] if aggregator else []
        subject = await self._subject(
            task, document, document_name, workflow_id, steps, extra, api_key
        )
        run_input = validated(
            ParallelInput,
            **dict(subject),
            branches=steps,
            aggregator=aggregator,
            min_successes=min_successes,
            **callback,
        )
        plan = " | ".join(step_label(s) for s in steps) + (f" ⇒ {aggregator}" if aggregator else "")
        return await self._start(
            "parallel", run_input, plan, workflow_id, idempotency_digest, stream=stream
        )

    async def _start(
        self,
        pattern: Pattern,
        run_input: SequentialInput | ParallelInput,
        plan: str,
        workflow_id: str | None,
        idempotency_digest: str | None = None,
        *,
        stream: bool = False,
    ) -> RunHandle:
        # With encrypted history the id must not quote the task (ids are never encrypted).
        slug_source = "" if self.settings.codec_keys else run_input.task
        workflow_id = workflow_id or make_workflow_id(pattern, slug_source)
        if stream:  # before the start: the first LLM call already streams
            await stream_rows.watch(await self._pool(), workflow_id, WATCH_TTL)
        has_document = bool(run_input.document or run_input.document_ref)
        doc = run_input.document_name or ("input" if has_document else "(no document)")
        ref = run_input.document_ref
        size = ref.size_bytes if ref else len(run_input.document.encode("utf-8"))
        summary = f"{pattern.capitalize()}: {plan} · {doc}"
        task_text = run_input.task if len(run_input.task) <= 500 else run_input.task[:500] + "…"
        details = (
            f"**Task:** {task_text}\n\n**Pattern:** {pattern}\n\n**Plan:** {plan}\n\n"
            f"**Document:** {doc} ({size:,} bytes"
            + (f", stored in PostgreSQL as {ref.blob_id}" if ref else "")
            + ")"
        )
        if isinstance(run_input, SequentialInput):
            agents = plan_agents(run_input.steps)
        else:
            extra = [run_input.aggregator] if run_input.aggregator else []
            agents = list(dict.fromkeys(plan_agents(run_input.branches) + extra))
        # Set at start so the run is searchable before its first workflow task; the workflow
        # upserts the same values (for plain clients) and ChorusStatus/ChorusCostUsd at the end.
        search_attributes = TypedSearchAttributes(
            [
                SearchAttributePair(PATTERN_ATTR, pattern),
                SearchAttributePair(AGENTS_ATTR, agents),
                SearchAttributePair(STATUS_ATTR, "running"),
            ]
        )
        idempotent: dict[str, Any] = {}
        if idempotency_digest is not None:
            idempotent = {
                "id_conflict_policy": WorkflowIDConflictPolicy.USE_EXISTING,
                "memo": {"chorus_request_sha256": idempotency_digest},
            }
        try:
            handle: WorkflowHandle[object, RunResult] = await self.client.start_workflow(
                SEQUENTIAL_WORKFLOW if pattern == "sequential" else PARALLEL_WORKFLOW,
                run_input,
                id=workflow_id,
                task_queue=self.settings.task_queue,
                result_type=RunResult,
                static_summary=summary[:400],
                static_details=details,
                search_attributes=search_attributes,
                # A run's record is keyed on its workflow id: never start a second run under it.
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                **idempotent,
            )
        except WorkflowAlreadyStartedError as exc:
            raise ChorusInputError(id_taken(workflow_id, "run")) from exc
        except RPCError as exc:
            raise_if_unregistered(exc)
            raise
        return RunHandle(handle, self.ui_url(workflow_id), self._pool)

    async def run_sequential(
        self, task: str, agents: Sequence[str | Step], **kwargs: object
    ) -> RunResult:
        """Start a sequential pipeline and wait for its result (see :meth:`start_sequential`).

        Raises:
            ChorusInputError: Invalid input (see :meth:`start_sequential`).
            RunFailedError: The run failed, was cancelled or terminated.
        """
        handle = await self.start_sequential(task, agents, **kwargs)  # type: ignore[arg-type]
        return await handle.result()

    async def run_parallel(
        self, task: str, branches: Sequence[str | Step], **kwargs: object
    ) -> RunResult:
        """Start a parallel run and wait for its result (see :meth:`start_parallel`).

        Raises:
            ChorusInputError: Invalid input (see :meth:`start_parallel`).
            RunFailedError: The run failed, was cancelled or terminated.
        """
        handle = await self.start_parallel(task, branches, **kwargs)  # type: ignore[arg-type]
        return await handle.result()

    # -- watching runs ---------------------------------------------------------------------

    def handle(self, workflow_id: str) -> RunHandle:
        """Return a handle to an existing run (latest run of that workflow id)."""
        return RunHandle(
            self.client.get_workflow_handle(workflow_id, result_type=RunResult),
            self.ui_url(workflow_id),
            self._pool,
        )

    async def status(self, workflow_id: str, *, query_closed: bool = True) -> RunStatus:
        """Describe a run, with live progress when its worker answers the query.

        Args:
            workflow_id: The run's workflow id.
            query_closed: Also query the progress of a closed run. Temporal answers a query on
                a closed workflow by replaying its whole history on a worker (tens of
                milliseconds of worker CPU for a small run); ``False`` leaves ``progress``
                ``None`` for closed runs (their result holds the steps).

        Raises:
            LookupError: No run has that workflow id.

        """
        handle = self.client.get_workflow_handle(workflow_id)
        try:
            desc = await handle.describe()
        except RPCError as exc:
            raise LookupError(f"no run with workflow id {workflow_id!r}: {exc.message}") from exc
        progress = None
        running = desc.status == WorkflowExecutionStatus.RUNNING
        try:
            if running or query_closed:
                progress = await handle.query(PROGRESS_QUERY, result_type=RunProgress)
        except Exception:  # best effort: no worker to answer, or history gone
            progress = None
        if progress is not None:
            await self._live_control_notes(progress)
        summary = await desc.static_summary()
        error, error_type = None, None
        if desc.status in (WorkflowExecutionStatus.FAILED, WorkflowExecutionStatus.TERMINATED):
            error, error_type = await _closing_failure(handle)
        return RunStatus(
            workflow_id=workflow_id,
            run_id=desc.run_id,
            workflow_type=desc.workflow_type,
            status=desc.status.name if desc.status else "UNKNOWN",
            started_at=desc.start_time,
            closed_at=desc.close_time,
            summary=summary,
            progress=progress,
            ui_url=self.ui_url(workflow_id),
            error=error,
            error_type=error_type,
        )

    async def _live_control_notes(self, progress: RunProgress) -> None:
        """Fill the note of each running loop/router/handoff/chat step from its child workflow.

        The parent learns a control step's rounds only when it ends; while it runs, its
        ``ChorusControl`` child answers ``progress`` (best effort: a child without a worker
        leaves the note as it was).
        """
        for step in progress.steps:
            if step.status != "running" or step.kind not in CONTROL_KINDS:
                continue
            if step.child_workflow_id is None or step.note:
                continue
            try:
                child = await self.client.get_workflow_handle(step.child_workflow_id).query(
                    PROGRESS_QUERY, result_type=RunProgress
                )
            except Exception:  # best effort, as the run's own query
                continue
            latest = next((s.note for s in reversed(child.steps) if s.note), None)
            noun = {"loop": "iteration", "group_chat": "turn"}.get(step.kind, "round")
            step.note = f"{noun} {child.rounds}" + (f"; {latest}" if latest else "")

    async def result(self, workflow_id: str) -> RunResult:
        """Wait for a run to end and return its result.

        Raises:
            RunFailedError: The run failed, was cancelled or terminated.
            LookupError: No run has that workflow id.

        """
        handle = self.client.get_workflow_handle(workflow_id, result_type=RunResult)
        try:
            await handle.describe()
        except RPCError as exc:
            raise LookupError(f"no run with workflow id {workflow_id!r}: {exc.message}") from exc
        return await _result(handle)

    async def cancel(self, workflow_id: str) -> None:
        """Request cancellation; in-flight LLM calls are cancelled and the run ends CANCELED.

        Raises:
            LookupError: No running run has that workflow id.

        """
        try:
            await self.client.get_workflow_handle(workflow_id).cancel()
        except RPCError as exc:
            raise LookupError(f"cannot cancel {workflow_id!r}: {exc.message}") from exc

    async def list_runs(self, limit: int = 20, query: str | None = None) -> list[RunSummary]:
        """Most recent Chorus runs (child workflows included), newest first.

        Args:
            limit: At most this many rows.
            query: Extra Temporal visibility filter, ANDed with the Chorus workflow types.

        Raises:
            RPCError: Temporal refused the query (e.g. a syntax error in ``query``).
        """
        types = ", ".join(f"'{t}'" for t in WORKFLOW_TYPES)
        q = f"WorkflowType IN ({types})" + (f" AND ({query})" if query else "")
        rows: list[RunSummary] = []
        async for wf in self.client.list_workflows(q, limit=limit):
            rows.append(
                RunSummary(
                    workflow_id=wf.id,
                    workflow_type=wf.workflow_type,
                    status=wf.status.name if wf.status else "UNKNOWN",
                    started_at=wf.start_time,
                    closed_at=wf.close_time,
                    parent_id=wf.parent_id,
                )
            )
        return rows

    async def list_page(
        self, query: str | None = None, *, page_size: int = 20, page_token: str | None = None
    ) -> tuple[list[RunSummary], str | None]:
        """One page of Chorus runs, newest first, and the token of the next page.

        Args:
            query: Extra Temporal visibility filter, ANDed with the Chorus workflow types.
            page_size: Rows per page (1-1,000).
            page_token: The token a previous page returned (opaque, URL-safe base64);
                ``None`` for the first page.

        Returns:
            The rows and the next page's token (``None`` on the last page).

        Raises:
            ChorusInputError: ``page_size`` out of range or a malformed ``page_token``.
            RPCError: Temporal refused the query.
        """
        if not 1 <= page_size <= 1000:
            raise ChorusInputError(f"page_size: {page_size}, must be between 1 and 1000")
        token: bytes | None = None
        if page_token:
            try:
                token = base64.urlsafe_b64decode(page_token.encode("ascii"))
            except (ValueError, UnicodeEncodeError):
                raise ChorusInputError("page_token: not a token a previous page returned") from None
        types = ", ".join(f"'{t}'" for t in WORKFLOW_TYPES)
        q = f"WorkflowType IN ({types})" + (f" AND ({query})" if query else "")
        listing = self.client.list_workflows(q, page_size=page_size, next_page_token=token)
        try:
            await listing.fetch_next_page()
        except RPCError as exc:
            if exc.status == RPCStatusCode.INVALID_ARGUMENT and page_token:
                raise ChorusInputError(f"page_token: refused by Temporal ({exc.message})") from None
            raise
        rows = [
            RunSummary(
                workflow_id=wf.id,
                workflow_type=wf.workflow_type,
                status=wf.status.name if wf.status else "UNKNOWN",
                started_at=wf.start_time,
                closed_at=wf.close_time,
                parent_id=wf.parent_id,
            )
            for wf in listing.current_page or []
        ]
        following = listing.next_page_token
        return rows, base64.urlsafe_b64encode(following).decode() if following else None

    # -- the record in PostgreSQL ------------------------------------------------------------

    async def transcript(self, workflow_id: str) -> list[dict[str, Any]]:
        """A run's transcript (its and its child workflows' agent calls), from PostgreSQL.

        Each entry holds the agent (name, version), provider, model, prompts, completion,
        tokens, ``cost_usd`` (USD), ``latency_ms`` (milliseconds), attempt, ``cached`` (answered
        from the agent's response cache: cost 0; absent in transcripts archived before it
        existed) and ``created_at``.

        Raises:
            LookupError: No such run in the database.
        """
        return await db.transcript(await self._pool(), workflow_id)
