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
- ``chorus.approvals`` (:class:`ApprovalsClient`): gates waiting for a decision; decide them.
- ``chorus.keys`` (:class:`KeysClient`): API keys of the HTTP API (create, list, revoke, rotate).
- ``chorus.providers`` (:class:`ProvidersClient`): the provider registry and each provider's
  fleet-wide circuit breaker (list, reset).

Plan builders (:mod:`starter.sdk.plans`) make the control-flow steps: :func:`loop`,
:func:`until`, :func:`router`, :func:`handoff`, :func:`group_chat` and :func:`gate`.

The facade's older methods (``chorus.start_sequential(...)``, ``chorus.costs()``, ...) stay as
thin delegations to these. Inputs are validated before anything is started: errors name the
field and the limit. No SQL runs here: PostgreSQL is reached through :mod:`chorus.storage`.
"""

from __future__ import annotations

import asyncpg
from temporalio.client import Client

from chorus.config.settings import Settings, get_settings
from chorus.governance.api_keys import ApiKey, ApiKeyNotFound, ApiKeySecretMissing
from chorus.governance.budget import BudgetLine
from chorus.runtime.converter import connect
from chorus.storage import db
from chorus.storage.db import AgentVersion, CostGrouping, CostRow
from chorus.storage.reports import ProviderHealth, RecentFailure
from starter.sdk.approvals_client import ApprovalsClient
from starter.sdk.catalog_client import AgentCatalogClient
from starter.sdk.drafts_client import DraftsClient
from starter.sdk.fleet_client import FleetClient, RunInFlight
from starter.sdk.keys_client import KeysClient
from starter.sdk.plans import gate, group_chat, handoff, loop, parse_until, router, until
from starter.sdk.providers_client import ProvidersClient, ProviderStatus
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
    "ApiKey",
    "ApiKeyNotFound",
    "ApiKeySecretMissing",
    "ApprovalsClient",
    "BudgetLine",
    "ChorusClient",
    "ChorusInputError",
    "CostGrouping",
    "CostRow",
    "DatabaseError",
    "DraftRefusedError",
    "DraftsClient",
    "FleetClient",
    "KeysClient",
    "Pattern",
    "ProviderHealth",
    "ProviderStatus",
    "ProvidersClient",
    "RecentFailure",
    "RunFailedError",
    "RunHandle",
    "RunInFlight",
    "RunStatus",
    "RunSummary",
    "RunsClient",
    "SearchAttributesMissingError",
    "SpendClient",
    "gate",
    "group_chat",
    "handoff",
    "is_running",
    "loop",
    "make_workflow_id",
    "parse_until",
    "raise_if_unregistered",
    "router",
    "slugify",
    "until",
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
        approvals: Gates waiting for a decision, and decisions (:class:`ApprovalsClient`).
        keys: API keys of the HTTP API (:class:`KeysClient`).
        providers: Providers and their circuit breakers (:class:`ProvidersClient`).
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
        self.approvals = ApprovalsClient(*parts)
        self.keys = KeysClient(*parts)
        self.providers = ProvidersClient(*parts)
        # The methods of earlier releases, bound to the focused client that does the work (one
        # signature and one docstring each, in that client).
        self.ui_url = self.runs.ui_url
        self.validate = self.runs.validate
        self.start_sequential = self.runs.start_sequential
        self.start_parallel = self.runs.start_parallel
        self.run_sequential = self.runs.run_sequential
        self.run_parallel = self.runs.run_parallel
        self.handle = self.runs.handle
        self.status = self.runs.status
        self.result = self.runs.result
        self.cancel = self.runs.cancel
        self.list_runs = self.runs.list_runs
        self.transcript = self.runs.transcript
        self.task_queue_pollers = self.fleet.task_queue_pollers
        self.costs = self.spend.costs
        self.budgets = self.spend.budgets
        self.set_budget = self.spend.set_budget
        self.agents = self.catalog.current
        self.agent_history = self.catalog.history
        self.set_agents = self.catalog.set
        self.rollback_agent = self.catalog.rollback
        self.start_draft = self.drafts.start
        self.draft_update = self.drafts.update
        self.draft_signal = self.drafts.signal
        self.check_reader = self.drafts.check_reader
        self.draft = self.drafts.view
        self.pending_approvals = self.approvals.pending
        self.decide = self.approvals.decide

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
