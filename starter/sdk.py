"""Chorus Python SDK: start, watch, query, cancel and list runs.

Example::

    from starter.sdk import ChorusClient

    chorus = await ChorusClient.connect()
    handle = await chorus.start_sequential(
        task="Summarize the report for an executive",
        agents=["analyst", "writer", "critic"],
        document=open("report.txt").read(),
        document_name="report.txt",
    )
    print(handle.ui_url)
    result = await handle.result()          # RunResult
    print(result.output, result.totals.cost_usd)

Inputs are validated here, before anything is started: errors name the field and the limit.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar

import asyncpg
from pydantic import BaseModel, ValidationError
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from chorus.config.settings import Settings, get_settings
from chorus.contracts import validation
from chorus.contracts.drafting import (
    INLINE_CONTENT_CHARS,
    MAX_COMMENT_CHARS,
    MAX_CONTENT_CHARS,
    MAX_EDIT_CHARS,
    MAX_UPDATE_BYTES,
    CollaboratorRequest,
    CommentRequest,
    DraftInput,
    DraftView,
    EditRequest,
    EditResult,
    ResolveCommentRequest,
    RevisionRequest,
    Role,
    UserRequest,
)
from chorus.contracts.models import (
    MAX_PLAN_DEPTH,
    AgentSpec,
    AgentStep,
    ParallelInput,
    RunProgress,
    RunResult,
    SequentialInput,
    Step,
    plan_agents,
    plan_depth,
    step_label,
)
from chorus.contracts.names import (
    AGENTS_ATTR,
    DRAFT_STATUS_ATTR,
    DRAFT_WORKFLOW,
    PARALLEL_WORKFLOW,
    PATTERN_ATTR,
    PROGRESS_QUERY,
    SEQUENTIAL_WORKFLOW,
    STATUS_ATTR,
    WORKFLOW_ID_PREFIX,
    WORKFLOW_TYPES,
    search_attribute_types,
)
from chorus.governance import budget
from chorus.governance.pii import Redactor
from chorus.integrations.webhooks import validate_callback_url
from chorus.runtime.converter import connect, describe_decode_error
from chorus.storage import db

Pattern = Literal["sequential", "parallel"]


class ChorusInputError(ValueError):
    """Input refused before a run starts; the message names the field and the limit."""


class RunFailedError(RuntimeError):
    """A run ended in failure, cancellation or termination.

    Attributes:
        workflow_id: The run's workflow id.
        status: ``FAILED``, ``CANCELED``, ``TERMINATED`` or ``TIMED_OUT``.
        partial: The steps that finished before the failure, when the workflow reported them.

    """

    def __init__(
        self, message: str, workflow_id: str, status: str, partial: RunResult | None = None
    ) -> None:
        super().__init__(message)
        self.workflow_id = workflow_id
        self.status = status
        self.partial = partial


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


InputModelT = TypeVar("InputModelT", bound=BaseModel)


def _validated(model: type[InputModelT], **fields: Any) -> InputModelT:
    """Build a run input, turning pydantic's error into a ChorusInputError naming the field.

    Raises:
        ChorusInputError: A field breaks a limit (e.g. more than 50 branches).
    """
    try:
        return model(**fields)
    except ValidationError as exc:
        raise ChorusInputError(describe_decode_error(model, exc)) from None


def _id_taken(workflow_id: str, what: str) -> str:
    """The message for a workflow id that an earlier run or draft already used."""
    return (
        f"--workflow-id: {workflow_id!r} is already used by a {what} (running or finished); "
        f"Chorus keeps one record per workflow id, so ids are not reused: choose another, "
        f"or leave it out for a generated one"
    )


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


@dataclass(frozen=True)
class RunSummary:
    """One row of ``chorus list``."""

    workflow_id: str
    workflow_type: str
    status: str
    started_at: datetime | None
    closed_at: datetime | None
    parent_id: str | None


def slugify(text: str, max_len: int = 30) -> str:
    """Lower-case ``text`` into ``a-z0-9-`` words, at most ``max_len`` characters.

    PII is redacted first (:mod:`chorus.governance.pii`: e-mail addresses, phone numbers, card
    numbers,
    SSNs, IP addresses become their kind, e.g. ``email``): workflow ids are never encrypted and
    appear in logs, the UI and search, so they must not quote personal data.
    """
    text = _ID_REDACTOR.redact(text[:500], "redact").text
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:max_len].rstrip("-") or "run"


_ID_REDACTOR = Redactor()


def make_workflow_id(pattern: Pattern, task: str) -> str:
    """Make a readable, unique workflow id: ``seq-<task slug>-<8 hex>`` or ``par-...``."""
    return f"{WORKFLOW_ID_PREFIX[pattern]}-{slugify(task)}-{uuid.uuid4().hex[:8]}"


def _to_steps(items: Sequence[str | Step]) -> list[Step]:
    return [AgentStep(agent=i) if isinstance(i, str) else i for i in items]


class RunHandle:
    """A started run: its ids, its UI link, and ways to wait for or watch it."""

    def __init__(self, handle: WorkflowHandle[object, RunResult], ui_url: str) -> None:
        self._handle = handle
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


async def _result(handle: WorkflowHandle[object, RunResult]) -> RunResult:
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
            f"run {handle.id} {status.lower()}: {message}", handle.id, status, partial
        ) from exc


class ChorusClient:
    """Start and watch Chorus runs on a Temporal cluster; read their record in PostgreSQL."""

    def __init__(
        self, client: Client, settings: Settings | None = None, pool: asyncpg.Pool | None = None
    ) -> None:
        self.client = client
        self.settings = settings or get_settings()
        self._pool = pool
        self._owns_pool = False
        self._check: validation.ContentCheck | None = None

    async def pool(self) -> asyncpg.Pool:
        """The PostgreSQL pool, opened (schema migrated, agents seeded) on first use.

        Raises:
            DatabaseError: PostgreSQL not configured or unreachable.
        """
        if self._pool is None:
            self._pool = await db.open_store(self.settings, max_size=4)
            self._owns_pool = True
        return self._pool

    async def close(self) -> None:
        """Close the PostgreSQL pool if this client opened it."""
        if self._pool is not None and self._owns_pool:
            await self._pool.close()
            self._pool = None

    @classmethod
    async def connect(cls, settings: Settings | None = None) -> ChorusClient:
        """Connect to ``TEMPORAL_ADDRESS``/``TEMPORAL_NAMESPACE``.

        Raises:
            RuntimeError: Temporal is unreachable (the message names the address).

        """
        settings = settings or get_settings()
        return cls(await connect(settings), settings)

    def ui_url(self, workflow_id: str) -> str:
        """Link to the run in the Temporal UI."""
        return (
            f"{self.settings.temporal_ui_url.rstrip('/')}/namespaces/"
            f"{self.settings.temporal_namespace}/workflows/{workflow_id}"
        )

    # -- validation ------------------------------------------------------------------------

    async def validate(
        self, task: str, document: str, steps: Sequence[Step], extra_agents: Sequence[str]
    ) -> None:
        """Check a run's input against the limits and the agent configurations in PostgreSQL.

        Raises:
            ChorusInputError: ``task`` empty or longer than ``CHORUS_MAX_TASK_CHARS``;
                ``document`` larger than ``CHORUS_MAX_DOCUMENT_BYTES``; plan deeper than 4
                levels; an agent unknown to PostgreSQL.
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
        known = await db.current_agents(await self.pool())
        missing = [n for n in plan_agents(list(steps)) + list(extra_agents) if n not in known]
        if missing:
            raise ChorusInputError(
                f"agents: unknown agent(s) {', '.join(sorted(set(missing)))}; "
                f"known: {', '.join(sorted(known))}"
            )

    def _clean_run_text(
        self, task: str, document: str, document_name: str | None, workflow_id: str | None
    ) -> tuple[str, str, str | None]:
        """Strip control characters, check ids and run the prohibited-content check.

        Raises:
            ChorusInputError: Names the field and the rule or limit.
        """
        try:
            if workflow_id is not None:
                validation.check_identifier("workflow_id", workflow_id)
            task = validation.clean_text(
                "task", task, max_chars=self.settings.max_task_chars, required=True
            )
            document = validation.strip_controls(document)
            if document_name is not None:
                document_name = validation.clean_text("document_name", document_name, max_chars=200)
            validation.check_content(self._content_check(), {"task": task, "document": document})
        except validation.InputValidationError as exc:
            raise ChorusInputError(str(exc)) from exc
        return task, document, document_name

    def _content_check(self) -> validation.ContentCheck:
        if self._check is None:
            self._check = validation.load_content_check(self.settings.content_check)
        return self._check

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

    async def _document_fields(self, document: str) -> dict[str, Any]:
        """Inline a small document; store a large one in PostgreSQL and pass its reference."""
        if len(document.encode("utf-8")) <= self.settings.inline_text_bytes:
            return {"document": document}
        return {"document": "", "document_ref": await db.put_text(await self.pool(), document)}

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
    ) -> RunHandle:
        """Start a sequential pipeline.

        Args:
            task: What to do, plain words (<= ``CHORUS_MAX_TASK_CHARS`` characters).
            agents: Steps in order: agent names, or nested
                :class:`~chorus.contracts.models.SequentialStep`/:class:`~chorus.contracts.models.ParallelStep`.
            document: Input document text (<= ``CHORUS_MAX_DOCUMENT_BYTES`` UTF-8 bytes).
            document_name: Shown to the agents and in the UI.
            workflow_id: Override the generated ``seq-<slug>-<id>``.
            callback_url: ``http(s)`` URL (<= 2048 characters) POSTed the signed result when
                the run ends, whatever the outcome (see :mod:`chorus.integrations.webhooks`); the
                worker
                needs ``CHORUS_CALLBACK_SECRET``.

        Raises:
            ChorusInputError: Invalid input (see :meth:`validate`) or callback URL.

        """
        steps = _to_steps(agents)
        callback = self._callback_fields(callback_url)
        task, document, document_name = self._clean_run_text(
            task, document, document_name, workflow_id
        )
        await self.validate(task, document, steps, [])
        run_input = _validated(
            SequentialInput,
            task=task,
            document_name=document_name,
            steps=steps,
            **await self._document_fields(document),
            **callback,
        )
        plan = " → ".join(step_label(s) for s in steps)
        return await self._start("sequential", run_input, plan, workflow_id)

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

        Raises:
            ChorusInputError: Invalid input (see :meth:`validate`), ``min_successes`` out of
                range, or an invalid callback URL.

        """
        steps = _to_steps(branches)
        callback = self._callback_fields(callback_url)
        if not 1 <= min_successes <= len(steps):
            raise ChorusInputError(
                f"min_successes: {min_successes}, must be between 1 and the number of "
                f"branches ({len(steps)})"
            )
        task, document, document_name = self._clean_run_text(
            task, document, document_name, workflow_id
        )
        await self.validate(task, document, steps, [aggregator] if aggregator else [])
        run_input = _validated(
            ParallelInput,
            task=task,
            **await self._document_fields(document),
            document_name=document_name,
            branches=steps,
            aggregator=aggregator,
            min_successes=min_successes,
            **callback,
        )
        plan = " | ".join(step_label(s) for s in steps) + (f" ⇒ {aggregator}" if aggregator else "")
        return await self._start("parallel", run_input, plan, workflow_id)

    async def _start(
        self,
        pattern: Pattern,
        run_input: SequentialInput | ParallelInput,
        plan: str,
        workflow_id: str | None,
    ) -> RunHandle:
        # With encrypted history the id must not quote the task (ids are never encrypted).
        slug_source = "" if self.settings.codec_keys else run_input.task
        workflow_id = workflow_id or make_workflow_id(pattern, slug_source)
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
            )
        except WorkflowAlreadyStartedError as exc:
            raise ChorusInputError(_id_taken(workflow_id, "run")) from exc
        except RPCError as exc:
            raise_if_unregistered(exc)
            raise
        return RunHandle(handle, self.ui_url(workflow_id))

    async def run_sequential(
        self, task: str, agents: Sequence[str | Step], **kwargs: object
    ) -> RunResult:
        """Start a sequential pipeline and wait for its result (see :meth:`start_sequential`)."""
        handle = await self.start_sequential(task, agents, **kwargs)  # type: ignore[arg-type]
        return await handle.result()

    async def run_parallel(
        self, task: str, branches: Sequence[str | Step], **kwargs: object
    ) -> RunResult:
        """Start a parallel run and wait for its result (see :meth:`start_parallel`)."""
        handle = await self.start_parallel(task, branches, **kwargs)  # type: ignore[arg-type]
        return await handle.result()

    # -- watching runs ---------------------------------------------------------------------

    async def task_queue_pollers(self) -> list[str]:
        """Identities of workers polling the task queue for workflow tasks right now.

        The server keeps a poller listed for about a minute after its worker stops.
        """
        response = await self.client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=self.settings.temporal_namespace,
                task_queue=TaskQueue(name=self.settings.task_queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            )
        )
        return [p.identity for p in response.pollers]

    def handle(self, workflow_id: str) -> RunHandle:
        """Return a handle to an existing run (latest run of that workflow id)."""
        return RunHandle(
            self.client.get_workflow_handle(workflow_id, result_type=RunResult),
            self.ui_url(workflow_id),
        )

    async def status(self, workflow_id: str) -> RunStatus:
        """Describe a run, with live progress when its worker answers the query.

        Raises:
            LookupError: No run has that workflow id.

        """
        handle = self.client.get_workflow_handle(workflow_id)
        try:
            desc = await handle.describe()
        except RPCError as exc:
            raise LookupError(f"no run with workflow id {workflow_id!r}: {exc.message}") from exc
        progress = None
        try:
            progress = await handle.query(PROGRESS_QUERY, result_type=RunProgress)
        except Exception:  # best effort: no worker to answer, or history gone
            progress = None
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

    # -- the record in PostgreSQL ------------------------------------------------------------

    async def costs(
        self, by: db.CostGrouping = "agent", since: datetime | None = None
    ) -> list[db.CostRow]:
        """Usage statistics from the cost ledger: calls, tokens and USD, grouped.

        Args:
            by: ``agent``, ``provider``, ``model`` or ``day`` (UTC).
            since: Only calls at or after this time.
        """
        return await db.cost_summary(await self.pool(), by=by, since=since)

    async def budgets(self) -> list[budget.BudgetLine]:
        """Every budget with today's spent, reserved and remaining USD (UTC day)."""
        return await budget.standing(await self.pool(), self.settings)

    async def set_budget(
        self,
        scope: str,
        limit_usd: float | None,
        *,
        alert_usd: float | None = None,
        author: str = "",
    ) -> None:
        """Set a budget (``daily``, ``run`` or ``agent:<name>``) in USD; ``None`` removes it.

        Raises:
            ChorusInputError: Unknown scope, negative amount, misplaced alert (names the field).
        """
        try:
            await budget.set_limit(
                await self.pool(), scope, limit_usd, alert_usd=alert_usd, author=author
            )
        except ValueError as exc:
            raise ChorusInputError(str(exc)) from exc

    async def transcript(self, workflow_id: str) -> list[dict[str, Any]]:
        """A run's transcript (its and its child workflows' agent calls), from PostgreSQL.

        Raises:
            LookupError: No such run in the database.
        """
        return await db.transcript(await self.pool(), workflow_id)

    async def agents(self) -> dict[str, AgentSpec]:
        """Current version of every agent configuration."""
        return await db.current_agents(await self.pool())

    async def agent_history(self, name: str) -> list[db.AgentVersion]:
        """Kept versions of one agent, newest first.

        Raises:
            AgentConfigError: Unknown agent.
        """
        return await db.agent_history(await self.pool(), name)

    async def set_agents(
        self, specs: Sequence[AgentSpec], *, author: str, comment: str = ""
    ) -> list[tuple[str, int, bool]]:
        """Store a new version of each changed agent, all or nothing (see ``db.set_agents``)."""
        return await db.set_agents(
            await self.pool(),
            specs,
            author=author,
            comment=comment,
            keep=self.settings.agent_versions_kept,
        )

    async def rollback_agent(self, name: str, version: int, *, author: str) -> db.AgentVersion:
        """Make an earlier version current again, as a new version (see ``db.rollback_agent``).

        Raises:
            AgentConfigError: Unknown agent or version.
        """
        return await db.rollback_agent(
            await self.pool(), name, version, author=author, keep=self.settings.agent_versions_kept
        )

    # -- collaborative drafts ----------------------------------------------------------------

    async def start_draft(
        self,
        title: str,
        owner: str,
        *,
        content: str = "",
        brief: str | None = None,
        collaborators: dict[str, Role] | None = None,
        draft_id: str | None = None,
    ) -> str:
        """Start a draft workflow; return its id (``draft-<title slug>-<8 hex>``).

        Args:
            title: Draft title.
            owner: User id of the owner.
            content: Initial text (e.g. a template); empty with ``brief`` set lets the writer
                agent write version 1.
            brief: What to write, for the writer agent.
            collaborators: Further users and their roles.
            draft_id: Override the generated id.

        A text longer than ``INLINE_CONTENT_CHARS`` (65,536) characters is stored in
        PostgreSQL first and the workflow gets its reference, so it never enters the history.

        Raises:
            ChorusInputError: Empty or too long title/owner, or text over MAX_CONTENT_CHARS
                (2,000,000) characters.
        """
        try:
            for field, user in [
                ("owner", owner),
                *(("collaborators", u) for u in collaborators or {}),
            ]:
                validation.check_identifier(field, user)
            if draft_id is not None:
                validation.check_identifier("draft_id", draft_id)
            title = validation.clean_text("title", title, max_chars=200, required=True)
            content = validation.clean_text("content", content, max_chars=MAX_CONTENT_CHARS)
            if brief is not None:
                brief = validation.clean_text("brief", brief, max_chars=10_000)
            validation.check_content(
                self._content_check(), {"title": title, "content": content, "brief": brief or ""}
            )
        except validation.InputValidationError as exc:
            raise ChorusInputError(str(exc)) from exc
        try:
            draft_input = DraftInput(
                title=title,
                owner=owner,
                content=content if len(content) <= INLINE_CONTENT_CHARS else "",
                brief=brief,
                collaborators=collaborators or {},
            )
        except ValueError as exc:
            raise ChorusInputError(str(exc)) from exc
        if len(content) > INLINE_CONTENT_CHARS:
            draft_input.content_ref = await db.put_text(await self.pool(), content)
        slug = "draft" if self.settings.codec_keys else slugify(title)
        draft_id = draft_id or f"draft-{slug}-{uuid.uuid4().hex[:8]}"
        try:
            await self.client.start_workflow(
                DRAFT_WORKFLOW,
                draft_input,
                id=draft_id,
                task_queue=self.settings.task_queue,
                static_summary=f"Draft: {title[:200]} (owner {owner})",
                search_attributes=TypedSearchAttributes(
                    [SearchAttributePair(DRAFT_STATUS_ATTR, "drafting")]
                ),
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            )
        except WorkflowAlreadyStartedError as exc:
            raise ChorusInputError(_id_taken(draft_id, "draft")) from exc
        except RPCError as exc:
            raise_if_unregistered(exc)
            raise
        return draft_id

    async def draft_update(
        self, draft_id: str, update: str, request: EditRequest | RevisionRequest | UserRequest
    ) -> EditResult:
        """Run a draft update and return the version it produced.

        Updates: ``edit``, ``request_revision``, ``submit``, ``approve``, ``publish``,
        ``archive``. Retries while the server refuses for too many updates in flight
        (RESOURCE_EXHAUSTED).

        Raises:
            DraftRefusedError: The validator or handler refused (``error_type`` says why:
                EditConflict, PermissionDenied, IllegalTransition, ReadOnly, InvalidEdit).
            ChorusInputError: ``request_revision`` names an agent the catalog does not have,
                or the request is over ``MAX_UPDATE_BYTES`` encoded.
        """
        cleaned = self._clean_draft_request(request)
        if isinstance(cleaned, RevisionRequest):
            # The workflow cannot read the catalog in a validator: check here, so an unknown
            # agent is refused before the update enters the draft's history.
            known = await self.agents()
            if cleaned.agent not in known:
                raise ChorusInputError(
                    f"agent: unknown agent {cleaned.agent!r}; known: {', '.join(sorted(known))}"
                )
        size = sum(p.ByteSize() for p in await self.client.data_converter.encode([cleaned]))
        if size > MAX_UPDATE_BYTES:
            raise ChorusInputError(
                f"{update}: the request is {size:,} bytes encoded; the limit is "
                f"{MAX_UPDATE_BYTES:,} bytes (replace a large text in range edits of at most "
                f"{MAX_EDIT_CHARS:,} characters)"
            )
        handle = self.client.get_workflow_handle(draft_id)
        delay = 0.05
        for _ in range(40):
            try:
                result: EditResult = await handle.execute_update(
                    update, cleaned, result_type=EditResult
                )
                return result
            except WorkflowUpdateFailedError as exc:
                cause = exc.cause
                if isinstance(cause, ApplicationError):
                    raise DraftRefusedError(cause.message, cause.type or "Refused") from exc
                raise DraftRefusedError(str(cause or exc), "Refused") from exc
            except RPCError as exc:
                if exc.status != RPCStatusCode.RESOURCE_EXHAUSTED:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
        raise DraftRefusedError(f"{update} on {draft_id}: server busy, gave up", "Busy")

    def _clean_draft_request(
        self, request: EditRequest | RevisionRequest | UserRequest | CommentRequest
    ) -> EditRequest | RevisionRequest | UserRequest | CommentRequest:
        """Strip control characters from the text a draft request carries; content check.

        Raises:
            ChorusInputError: The prohibited-content check refused the text.
        """
        fields: dict[str, str] = {}
        if isinstance(request, EditRequest):
            if request.edit is not None:
                edit = request.edit.model_copy(
                    update={"text": validation.strip_controls(request.edit.text)}
                )
                request = request.model_copy(update={"edit": edit})
                fields["edit text"] = edit.text
            if request.content is not None:
                request = request.model_copy(
                    update={"content": validation.strip_controls(request.content)}
                )
                fields["content"] = request.content or ""
        elif isinstance(request, RevisionRequest):
            request = request.model_copy(
                update={"instruction": validation.strip_controls(request.instruction)}
            )
            fields["instruction"] = request.instruction
        elif isinstance(request, CommentRequest):
            request = request.model_copy(update={"text": validation.strip_controls(request.text)})
            fields["comment"] = request.text
        try:
            validation.check_content(self._content_check(), fields)
        except validation.InputValidationError as exc:
            raise ChorusInputError(str(exc)) from exc
        return request

    async def draft_signal(
        self,
        draft_id: str,
        signal: str,
        request: CommentRequest | CollaboratorRequest | ResolveCommentRequest,
    ) -> None:
        """Send ``comment``, ``add_collaborator`` or ``resolve_comment`` (fire and forget).

        Raises:
            ChorusInputError: The comment text was refused by the prohibited-content check, or
                the request would demote the draft's last owner (the workflow would ignore
                it: a signal cannot be refused, so the SDK says so first).
        """
        handle = self.client.get_workflow_handle(draft_id)
        if isinstance(request, CommentRequest):
            cleaned = self._clean_draft_request(request)
            assert isinstance(cleaned, CommentRequest)
            request = cleaned
            if len(request.text) > MAX_COMMENT_CHARS:  # the workflow would drop it
                raise ChorusInputError(
                    f"text: {len(request.text)} characters, the limit is {MAX_COMMENT_CHARS}"
                )
        if isinstance(request, CollaboratorRequest) and request.role != "owner":
            view: DraftView = await handle.query("draft", result_type=DraftView)
            owners = {u for u, r in view.collaborators.items() if r == "owner"}
            if owners == {request.collaborator}:
                raise ChorusInputError(
                    f"collaborator: {request.collaborator!r} is the draft's last owner and "
                    "cannot be demoted; make someone else owner first"
                )
        await handle.signal(signal, request)

    async def check_reader(self, draft_id: str, user: str) -> None:
        """Refuse a reader who is not a collaborator of the draft.

        Reads the collaborators the draft saved in PostgreSQL (the workflow saves each change
        of roles), or asks the workflow when it has not saved yet. Anyone with Temporal access
        can still query the workflow directly: Temporal access is full access (README, "What
        is stored in plain text").

        Raises:
            PermissionError: ``user`` is not a collaborator (the message names both).
            LookupError: No draft with that id exists.
        """
        collaborators: dict[str, Any]
        try:
            row = await db.draft_row(await self.pool(), draft_id)
            saved = row["collaborators"]
            collaborators = json.loads(saved) if isinstance(saved, str) else dict(saved)
        except LookupError:
            try:
                handle = self.client.get_workflow_handle(draft_id)
                view: DraftView = await handle.query("draft", result_type=DraftView)
            except RPCError as exc:
                raise LookupError(f"no draft {draft_id!r}: {exc.message}") from exc
            collaborators = view.collaborators
        if user not in collaborators:
            raise PermissionError(f"{user!r} is not a collaborator on draft {draft_id!r}")

    async def draft(
        self, draft_id: str, *, wait_seconds: float = 10.0, user: str | None = None
    ) -> DraftView:
        """The draft's current text and metadata (the ``draft`` query).

        A draft held by reference (longer than INLINE_CONTENT_CHARS) has no text in the query
        result; it is read from PostgreSQL once the workflow has saved that version (the saved
        version is returned, which may be newer than the queried one).

        Args:
            draft_id: The draft's workflow id.
            wait_seconds: Seconds to wait for the queried version to be saved.
            user: The reader; when given, a non-collaborator is refused
                (:meth:`check_reader`).

        Raises:
            PermissionError: ``user`` is not a collaborator.
            TimeoutError: A large draft's queried version was not saved within ``wait_seconds``.
            RPCError: The query failed (after backing off while the server said the workflow
                was busy, RESOURCE_EXHAUSTED).
        """
        if user is not None:
            await self.check_reader(draft_id, user)
        handle = self.client.get_workflow_handle(draft_id)
        delay = 0.05
        for attempt in range(20):
            try:
                view: DraftView = await handle.query("draft", result_type=DraftView)
                break
            except RPCError as exc:
                # "consistent query buffer is full": the workflow is busy; back off and retry
                if exc.status != RPCStatusCode.RESOURCE_EXHAUSTED or attempt == 19:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
        if view.content is not None:
            return view
        pool = await self.pool()
        deadline = asyncio.get_running_loop().time() + wait_seconds
        while True:
            row = await pool.fetchrow(
                "SELECT version, content FROM drafts WHERE draft_id = $1", draft_id
            )
            if row is not None and row["version"] >= view.version:
                text = str(row["content"])
                return view.model_copy(
                    update={"content": text, "content_chars": len(text), "version": row["version"]}
                )
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(
                    f"{draft_id}: version {view.version} not saved in {wait_seconds} s"
                )
            await asyncio.sleep(0.1)


class DraftRefusedError(RuntimeError):
    """A draft update was refused; ``error_type`` names the rule (e.g. EditConflict)."""

    def __init__(self, message: str, error_type: str) -> None:
        super().__init__(message)
        self.error_type = error_type


class SearchAttributesMissingError(RuntimeError):
    """The Temporal namespace lacks the Chorus search attributes (see ``raise_if_unregistered``)."""


def raise_if_unregistered(exc: RPCError) -> None:
    """Turn the server's "no mapping defined for search attribute" refusal into a clear error.

    Raises:
        SearchAttributesMissingError: The namespace does not know a Chorus search attribute;
            the message gives the ``temporal operator search-attribute create`` commands.
    """
    if "no mapping defined for search attribute" not in exc.message:
        return
    commands = "; ".join(
        f"temporal operator search-attribute create --name {name} --type {kind}"
        for name, kind in search_attribute_types()
    )
    raise SearchAttributesMissingError(
        f"{exc.message}. Chorus needs its search attributes registered on the namespace: "
        f"`chorus dev up` does it for the dev server; elsewhere run: {commands}"
    ) from exc


def is_running(status: WorkflowExecutionStatus | None) -> bool:
    """Whether a workflow status means the run is still in flight."""
    return status == WorkflowExecutionStatus.RUNNING
