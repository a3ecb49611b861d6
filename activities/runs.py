"""Run bookkeeping activities: ``chorus.start_run`` and ``chorus.finish_run``."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from chorus.config.settings import Settings
from chorus.contracts import errors
from chorus.contracts.models import (
    AgentSpec,
    FinishRunInput,
    ResolveAgentsInput,
    ResolveAgentsResult,
    ResolvedAgent,
    SkippedProvider,
    StartRunInput,
)
from chorus.contracts.names import FINISH_RUN_ACTIVITY, RESOLVE_AGENTS_ACTIVITY, START_RUN_ACTIVITY
from chorus.governance.pii import Redactor
from chorus.observability import metrics
from chorus.storage import db
from chorus.streaming import RetentionSweeper


def workflow_ids(info: activity.Info) -> tuple[str, str]:
    """``(workflow id, run id)`` of the workflow that scheduled this activity.

    Raises:
        ApplicationError: Non-retryable, when the activity was started outside a workflow.
    """
    if not info.workflow_id or not info.workflow_run_id:
        raise ApplicationError(
            f"activity {info.activity_type} must be called from a workflow", non_retryable=True
        )
    return info.workflow_id, info.workflow_run_id


class RunActivities:
    """Pins agent configurations and keeps the ``runs`` table in step with the workflow."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self._pool = pool
        self._settings = settings
        self._closer = RunCloser(pool, settings, Redactor())

    @activity.defn(name=START_RUN_ACTIVITY)
    async def start_run(self, input: StartRunInput) -> ResolveAgentsResult:
        """Pin the run's agent configurations and record the run row (idempotently).

        Top-level runs read the current version of each agent from PostgreSQL, so an edited
        configuration applies to new runs without a worker restart; the result is recorded in
        the history, so the run keeps these versions whatever changes later. Child runs reuse
        the configurations their parent pinned.

        Args:
            input: The run's pattern, task, agent names, document and lineage.

        Returns:
            One :class:`~chorus.contracts.models.ResolvedAgent` per name; providers without
            credentials
            on this worker are listed as skipped with the reason.

        Raises:
            ApplicationError: Non-retryable ``UnknownAgent`` (names the unknown and the known
                agents), ``NoUsableProvider`` or ``WorkflowIdReused`` (an earlier run of this
                workflow id is recorded); retryable when PostgreSQL fails.

        """
        workflow_id, run_id = workflow_ids(activity.info())
        record = input.model_copy(update={"task": self._closer.for_record(input.task) or ""})
        if input.pinned is not None:
            agents = input.pinned
            stored_run_id: str | None = await db.record_run_started(
                self._pool,
                record,
                workflow_id=workflow_id,
                run_id=run_id,
                agent_versions={name: a.spec.version for name, a in agents.items()},
            )
        else:
            # Read the agents and insert the row in one round trip (issue 19); a run that
            # cannot start after all leaves no row, as when the two were separate statements.
            start = await db.resolve_and_record_run(
                self._pool, record, workflow_id=workflow_id, run_id=run_id
            )
            try:
                agents = await self._usable(input.names, start.agents)
            except ApplicationError:
                # This run's row, inserted now or by an attempt that died before deleting it
                # (a PostgreSQL error here fails the attempt, and the retry deletes it).
                if start.stored_run_id == run_id:
                    await db.forget_run_started(self._pool, workflow_id, run_id)
                raise
            stored_run_id = start.stored_run_id
        if stored_run_id != run_id:
            # The record (run row, messages, ledger, budget reservations) is keyed on the
            # workflow id: a second run under it would be taken for a retry of the first and
            # overwrite its record and escape budgets (issue 20). Refuse before any paid call.
            raise ApplicationError(
                f"workflow id {workflow_id!r} was already used by run {stored_run_id}; Chorus "
                "keeps one record per workflow id, so a finished run's id cannot be reused: "
                "start the run with a new workflow id",
                type=errors.WORKFLOW_ID_REUSED,
                non_retryable=True,
            )
        return ResolveAgentsResult(
            agents=agents,
            provider_task_queues=self._settings.llm_task_queues == "per-provider",
            close_run_in_last_call=self._settings.close_run_in_last_call,
        )

    @activity.defn(name=RESOLVE_AGENTS_ACTIVITY)
    async def resolve_agents(self, input: ResolveAgentsInput) -> ResolveAgentsResult:
        """Pin the current configuration of each named agent (no run row is written).

        Raises:
            ApplicationError: Non-retryable ``UnknownAgent`` or ``NoUsableProvider``.
        """
        return ResolveAgentsResult(agents=await self._resolve(input.names))

    async def _resolve(self, names: list[str]) -> dict[str, ResolvedAgent]:
        return await self._usable(names, await db.current_agents(self._pool, names))

    async def _usable(
        self, names: list[str], catalog: dict[str, AgentSpec]
    ) -> dict[str, ResolvedAgent]:
        """Each of ``names`` with the providers this worker cannot use listed as skipped.

        Raises:
            ApplicationError: Non-retryable ``UnknownAgent`` (names the unknown and the known
                agents) or ``NoUsableProvider``.
        """
        missing = [n for n in names if n not in catalog]
        if missing:
            known = await db.agent_names(self._pool)
            raise ApplicationError(
                f"unknown agent(s): {', '.join(missing)}; known agents: {', '.join(known)}",
                type=errors.UNKNOWN_AGENT,
                non_retryable=True,
            )
        resolved: dict[str, ResolvedAgent] = {}
        for name in dict.fromkeys(names):
            spec = catalog[name]
            skipped = []
            for link in spec.providers:
                ok, reason = self._settings.provider_configured(link.provider)
                if not ok:
                    skipped.append(
                        SkippedProvider(provider=link.provider, model=link.model, reason=reason)
                    )
            if len(skipped) == len(spec.providers):
                reasons = "; ".join(f"{s.provider}:{s.model}: {s.reason}" for s in skipped)
                raise ApplicationError(
                    f"agent {name!r} has no usable provider ({reasons})",
                    type=errors.NO_USABLE_PROVIDER,
                    non_retryable=True,
                )
            resolved[name] = ResolvedAgent(spec=spec, skipped=skipped)
        return resolved

    @activity.defn(name=FINISH_RUN_ACTIVITY)
    async def finish_run(self, input: FinishRunInput) -> None:
        """Close the run row with its status and totals; archive the transcript if top-level.

        Idempotent (:meth:`RunCloser.close`). A run whose last call closed its row
        (``LLMRequest.close_run``) does not call it.
        """
        await self._closer.close(workflow_ids(activity.info())[0], input)


class RunCloser:
    """Closes run rows: ``chorus.finish_run``, and the last call of a run (issue 19).

    Args:
        pool: The worker's PostgreSQL pool.
        settings: ``record_pii`` (what the row may store) and ``stream_retention_hours``.
        redactor: Applies ``record_pii`` to the output and error.
    """

    def __init__(self, pool: asyncpg.Pool, settings: Settings, redactor: Redactor) -> None:
        self._pool = pool
        self._settings = settings
        self._redactor = redactor
        self._stream_sweeper = RetentionSweeper(
            pool, timedelta(hours=settings.stream_retention_hours)
        )

    def for_record(self, text: str | None) -> str | None:
        """``text`` as ``CHORUS_RECORD_PII`` lets it be stored in the ``runs`` row."""
        policy = self._settings.record_pii
        if text is None or policy == "off":
            return text
        return self._redactor.redact(text, policy).text

    async def close(
        self, workflow_id: str, input: FinishRunInput, *, only_running: bool = False
    ) -> bool:
        """Close ``workflow_id``'s run row with ``input``'s status, totals, output or error.

        With ``only_running`` (the run's last call) nothing is written unless the row is still
        ``running`` (:func:`chorus.storage.db.record_run_finished`).

        Returns:
            Whether the run has a row (with ``only_running``: a row this call closed).

        Idempotent: repeating it rewrites the same values. The run's metrics (run count and
        duration by pattern, provider fallbacks; :mod:`chorus.observability.metrics`) are
        recorded by the call that closes a ``running`` row, so a repeat does not count the
        run twice.

        A top-level run (``input.archive``) also ends its live stream: its ``run_finished``
        event is written in the statement that closes the row, so a reader that stops there
        finds the run recorded (:func:`chorus.storage.db.record_run_finished`); expired stream
        events are swept (:class:`chorus.streaming.RetentionSweeper`). A repeat after the event
        was written writes it again; readers stop at the first.

        Raises:
            asyncpg.PostgresError, OSError: PostgreSQL did not answer (nothing or everything
                was written: one statement).
        """
        totals = input.totals.model_dump()
        if input.status != "succeeded":
            # A cancelled or failed run knows only the steps that ended; what was paid is in
            # PostgreSQL (calls that answered after the cancellation, a branch cut short).
            paid = await db.paid_totals(self._pool, workflow_id)
            if paid is not None:
                for key, value in paid.items():
                    totals[key] = max(totals[key], value)
                totals["attempts"] = max(totals["attempts"], totals["llm_calls"])
        run = await db.record_run_finished(
            self._pool,
            workflow_id=workflow_id,
            status=input.status,
            finished_at=input.finished_at,
            totals=totals,
            output=self.for_record(input.output),
            error=self.for_record(input.error),
            archive=input.archive,
            only_running=only_running,
        )
        if run is None and only_running:
            return False
        if run is not None and run["status"] == "running":
            wall_s = (
                input.totals.wall_ms / 1000.0
                if input.totals.wall_ms
                else (input.finished_at - run["started_at"]).total_seconds()
            )
            metrics.observe_run_finished(run, input.status, wall_s, run["fallbacks"])
        if input.archive:  # top-level: its run_finished event was written with the row
            metrics.STREAM_EVENTS.labels(kind="run_finished").inc()
            await self._stream_sweeper.maybe_sweep()
        return run is not None
