"""Chorus Python SDK: start, watch, query, cancel and list runs; drafts, agents, budgets.

Example::

    from starter.sdk import ChorusClient

    chorus = await ChorusClient.connect()
    handle = await chorus.runs.start_sequential(
        task="Summarize the report for an executive",
        agents=["analyst", "writer", "critic"],
        document=open("report.txt").read(),
        document_name="report.txt",
    )
    print(handle.ui_url)
    result = await handle.result()          # RunResult
    print(result.output, result.totals.cost_usd)

:class:`ChorusClient` owns the Temporal client, the settings and the PostgreSQL pool, and
exposes one focused client per concern:

- ``chorus.runs`` (:class:`RunsClient`): start, watch, cancel and list runs; transcripts.
- ``chorus.drafts`` (:class:`DraftsClient`): collaborative drafts and their saved revisions.
- ``chorus.catalog`` (:class:`AgentCatalogClient`): versioned agent configurations.
- ``chorus.spend`` (:class:`SpendClient`): the cost ledger and budgets, in USD.
- ``chorus.fleet`` (:class:`FleetClient`): pollers, runs in flight, failures, provider latency.

The facade's older methods (``chorus.start_sequential(...)``, ``chorus.costs()``, ...) stay as
thin delegations to these. Inputs are validated before anything is started: errors name the
field and the limit. No SQL runs here: PostgreSQL is reached through :mod:`chorus.storage`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
from temporalio.client import Client

from chorus.config.settings import Settings, get_settings
from chorus.contracts.drafting import (
    CollaboratorRequest,
    CommentRequest,
    DraftView,
    EditRequest,
    EditResult,
    ResolveCommentRequest,
    RevisionRequest,
    Role,
    UserRequest,
)
from chorus.contracts.models import AgentSpec, RunResult, Step
from chorus.governance.budget import BudgetLine
from chorus.runtime.converter import connect
from chorus.storage import db
from chorus.storage.db import AgentVersion, CostGrouping, CostRow
from chorus.storage.reports import ProviderHealth, RecentFailure
from starter.sdk.catalog_client import AgentCatalogClient
from starter.sdk.drafts_client import DraftsClient
from starter.sdk.fleet_client import FleetClient, RunInFlight
from starter.sdk.runs_client import RunHandle, RunsClient, RunStatus, RunSummary, is_running
from starter.sdk.sdk_errors import (
    AgentConfigError,
    ChorusInputError,
    DatabaseError,
    DraftRefusedError,
    RunFailedError,
    SearchAttributesMissingError,
    raise_if_unregistered,
)
from starter.sdk.spend_client import SpendClient
from starter.sdk.workflow_ids import Pattern, make_workflow_id, slugify

__all__ = [
    "AgentCatalogClient",
    "AgentConfigError",
    "AgentVersion",
    "BudgetLine",
    "ChorusClient",
    "ChorusInputError",
    "CostGrouping",
    "CostRow",
    "DatabaseError",
    "DraftRefusedError",
    "DraftsClient",
    "FleetClient",
    "Pattern",
    "ProviderHealth",
    "RecentFailure",
    "RunFailedError",
    "RunHandle",
    "RunInFlight",
    "RunStatus",
    "RunSummary",
    "RunsClient",
    "SearchAttributesMissingError",
    "SpendClient",
    "is_running",
    "make_workflow_id",
    "raise_if_unregistered",
    "slugify",
]


class ChorusClient:
    """Start and watch Chorus runs on a Temporal cluster; read their record in PostgreSQL.

    Args:
        client: A Temporal client connected with Chorus's data converter (see :meth:`connect`).
        settings: Chorus settings; default :func:`~chorus.config.settings.get_settings`.
        pool: A PostgreSQL pool to share (not closed by :meth:`close`); default: one of at
            most 4 connections, opened on first use and closed by :meth:`close`.

    Attributes:
        runs: Runs (:class:`RunsClient`).
        drafts: Collaborative drafts (:class:`DraftsClient`).
        catalog: The agent catalog (:class:`AgentCatalogClient`).
        spend: Cost ledger and budgets (:class:`SpendClient`).
        fleet: Pollers, runs in flight, failures, provider latency (:class:`FleetClient`).
    """

    def __init__(
        self, client: Client, settings: Settings | None = None, pool: asyncpg.Pool | None = None
    ) -> None:
        self.client = client
        self.settings = settings or get_settings()
        self._pool = pool
        self._owns_pool = False
        parts = (client, self.settings, self.pool)
        self.runs = RunsClient(*parts)
        self.drafts = DraftsClient(*parts)
        self.catalog = AgentCatalogClient(*parts)
        self.spend = SpendClient(*parts)
        self.fleet = FleetClient(*parts)

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
        """Link to the run or draft in the Temporal UI."""
        return self.runs.ui_url(workflow_id)

    # -- runs: delegations to ``self.runs`` --------------------------------------------------

    async def validate(
        self, task: str, document: str, steps: Sequence[Step], extra_agents: Sequence[str]
    ) -> None:
        """Check a run's input (see :meth:`RunsClient.validate`).

        Raises:
            ChorusInputError: A limit is broken or an agent is unknown.
        """
        await self.runs.validate(task, document, steps, extra_agents)

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
        """Start a sequential pipeline (see :meth:`RunsClient.start_sequential`).

        Raises:
            ChorusInputError: Invalid input or callback URL.
        """
        return await self.runs.start_sequential(
            task,
            agents,
            document=document,
            document_name=document_name,
            workflow_id=workflow_id,
            callback_url=callback_url,
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
    ) -> RunHandle:
        """Start a parallel fan-out/fan-in run (see :meth:`RunsClient.start_parallel`).

        Raises:
            ChorusInputError: Invalid input, ``min_successes`` or callback URL.
        """
        return await self.runs.start_parallel(
            task,
            branches,
            aggregator=aggregator,
            min_successes=min_successes,
            document=document,
            document_name=document_name,
            workflow_id=workflow_id,
            callback_url=callback_url,
        )

    async def run_sequential(
        self, task: str, agents: Sequence[str | Step], **kwargs: object
    ) -> RunResult:
        """Start a sequential pipeline and wait for its result (see :meth:`start_sequential`).

        Raises:
            RunFailedError: The run failed, was cancelled or terminated.
        """
        return await self.runs.run_sequential(task, agents, **kwargs)

    async def run_parallel(
        self, task: str, branches: Sequence[str | Step], **kwargs: object
    ) -> RunResult:
        """Start a parallel run and wait for its result (see :meth:`start_parallel`).

        Raises:
            RunFailedError: The run failed, was cancelled or terminated.
        """
        return await self.runs.run_parallel(task, branches, **kwargs)

    def handle(self, workflow_id: str) -> RunHandle:
        """Return a handle to an existing run (latest run of that workflow id)."""
        return self.runs.handle(workflow_id)

    async def status(self, workflow_id: str) -> RunStatus:
        """Describe a run with live progress (see :meth:`RunsClient.status`).

        Raises:
            LookupError: No run has that workflow id.
        """
        return await self.runs.status(workflow_id)

    async def result(self, workflow_id: str) -> RunResult:
        """Wait for a run to end and return its result.

        Raises:
            RunFailedError: The run failed, was cancelled or terminated.
            LookupError: No run has that workflow id.
        """
        return await self.runs.result(workflow_id)

    async def cancel(self, workflow_id: str) -> None:
        """Request cancellation of a run.

        Raises:
            LookupError: No running run has that workflow id.
        """
        await self.runs.cancel(workflow_id)

    async def list_runs(self, limit: int = 20, query: str | None = None) -> list[RunSummary]:
        """Most recent Chorus runs, newest first (see :meth:`RunsClient.list_runs`)."""
        return await self.runs.list_runs(limit, query)

    async def transcript(self, workflow_id: str) -> list[dict[str, Any]]:
        """A run's transcript from PostgreSQL (see :meth:`RunsClient.transcript`).

        Raises:
            LookupError: No such run in the database.
        """
        return await self.runs.transcript(workflow_id)

    async def task_queue_pollers(self) -> list[str]:
        """Workers polling the task queue now (see :meth:`FleetClient.task_queue_pollers`)."""
        return await self.fleet.task_queue_pollers()

    # -- spend: delegations to ``self.spend`` ------------------------------------------------

    async def costs(
        self, by: CostGrouping = "agent", since: datetime | None = None
    ) -> list[CostRow]:
        """Calls, tokens and USD from the cost ledger, grouped (see :meth:`SpendClient.costs`)."""
        return await self.spend.costs(by, since)

    async def budgets(self) -> list[BudgetLine]:
        """Every budget with today's spent, reserved and remaining USD (UTC day)."""
        return await self.spend.budgets()

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
        await self.spend.set_budget(scope, limit_usd, alert_usd=alert_usd, author=author)

    # -- agent catalog: delegations to ``self.catalog`` --------------------------------------

    async def agents(self) -> dict[str, AgentSpec]:
        """Current version of every agent configuration, by agent name."""
        return await self.catalog.current()

    async def agent_history(self, name: str) -> list[AgentVersion]:
        """Kept versions of one agent, newest first.

        Raises:
            AgentConfigError: Unknown agent.
        """
        return await self.catalog.history(name)

    async def set_agents(
        self, specs: Sequence[AgentSpec], *, author: str, comment: str = ""
    ) -> list[tuple[str, int, bool]]:
        """Store a new version of each changed agent, all or nothing.

        See :meth:`AgentCatalogClient.set`.

        Raises:
            AgentConfigError: A spec was refused; nothing is stored.
        """
        return await self.catalog.set(specs, author=author, comment=comment)

    async def rollback_agent(self, name: str, version: int, *, author: str) -> AgentVersion:
        """Make an earlier version current again, as a new version.

        Raises:
            AgentConfigError: Unknown agent or version.
        """
        return await self.catalog.rollback(name, version, author=author)

    # -- drafts: delegations to ``self.drafts`` ----------------------------------------------

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
        """Start a draft workflow; return its id (see :meth:`DraftsClient.start`).

        Raises:
            ChorusInputError: Empty or too long title/owner or text, or the id is taken.
        """
        return await self.drafts.start(
            title,
            owner,
            content=content,
            brief=brief,
            collaborators=collaborators,
            draft_id=draft_id,
        )

    async def draft_update(
        self, draft_id: str, update: str, request: EditRequest | RevisionRequest | UserRequest
    ) -> EditResult:
        """Run a draft update and return the version it produced.

        See :meth:`DraftsClient.update`.

        Raises:
            DraftRefusedError: The validator or handler refused (``error_type`` says why).
            ChorusInputError: Unknown agent, or the request is over ``MAX_UPDATE_BYTES``.
        """
        return await self.drafts.update(draft_id, update, request)

    async def draft_signal(
        self,
        draft_id: str,
        signal: str,
        request: CommentRequest | CollaboratorRequest | ResolveCommentRequest,
    ) -> None:
        """Send ``comment``, ``add_collaborator`` or ``resolve_comment`` (fire and forget).

        Raises:
            ChorusInputError: Refused text, or the last owner would be demoted.
        """
        await self.drafts.signal(draft_id, signal, request)

    async def check_reader(self, draft_id: str, user: str) -> None:
        """Refuse a reader who is not a collaborator of the draft.

        Raises:
            PermissionError: ``user`` is not a collaborator.
            LookupError: No draft with that id exists.
        """
        await self.drafts.check_reader(draft_id, user)

    async def draft(
        self, draft_id: str, *, wait_seconds: float = 10.0, user: str | None = None
    ) -> DraftView:
        """The draft's current text and metadata (see :meth:`DraftsClient.view`).

        Raises:
            PermissionError: ``user`` is not a collaborator.
            TimeoutError: A large draft's version was not saved within ``wait_seconds``.
        """
        return await self.drafts.view(draft_id, wait_seconds=wait_seconds, user=user)
