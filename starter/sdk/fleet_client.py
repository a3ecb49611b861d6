"""The fleet as an operator sees it: workers polling, runs in flight, failures, providers.

Sources: pollers and runs in flight come from Temporal (task queue description, visibility);
recent failures and provider latency from PostgreSQL (:mod:`chorus.storage.reports`).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

from chorus.contracts.names import AGENTS_ATTR, PATTERN_ATTR, WORKFLOW_TYPES
from chorus.storage import reports
from chorus.storage.reports import ProviderHealth, RecentFailure
from starter.sdk.client_base import FocusedClient


class RunInFlight(BaseModel):
    """An open Chorus run (child runs included)."""

    workflow_id: str
    workflow_type: str
    pattern: str | None = None
    agents: list[str] = []
    parent_id: str | None = None
    started_at: datetime | None = None


class FleetClient(FocusedClient):
    """Live state of the fleet, as ``chorus top`` and ``chorus run`` show it.

    Reached as ``ChorusClient.fleet``.
    """

    async def task_queue_pollers(self) -> list[str]:
        """Identities of workers polling the task queue for workflow tasks right now.

        The server keeps a poller listed for about a minute after its worker stops.

        Raises:
            RPCError: Temporal is unreachable.
        """
        response = await self.client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=self.settings.temporal_namespace,
                task_queue=TaskQueue(name=self.settings.task_queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            )
        )
        return [p.identity for p in response.pollers]

    async def in_flight(self, limit: int) -> list[RunInFlight]:
        """Open Chorus runs from Temporal visibility, at most ``limit`` of them.

        Pattern and agents come from the ``ChorusPattern``/``ChorusAgents`` search attributes.

        Raises:
            RPCError: Temporal is unreachable.
        """
        types = ", ".join(f"'{t}'" for t in WORKFLOW_TYPES)
        query = f'WorkflowType IN ({types}) AND ExecutionStatus = "Running"'
        runs: list[RunInFlight] = []
        async for wf in self.client.list_workflows(query, limit=limit):
            attrs = wf.typed_search_attributes
            runs.append(
                RunInFlight(
                    workflow_id=wf.id,
                    workflow_type=wf.workflow_type,
                    pattern=attrs.get(PATTERN_ATTR),
                    agents=list(attrs.get(AGENTS_ATTR) or []),
                    parent_id=wf.parent_id,
                    started_at=wf.start_time,
                )
            )
        return runs

    async def recent_failures(self, since: datetime, limit: int) -> list[RecentFailure]:
        """Runs that failed at or after ``since``, most recent first (at most ``limit``).

        Raises:
            DatabaseError: PostgreSQL not configured or unreachable.
            asyncpg.PostgresError: PostgreSQL refused the query.
        """
        return await reports.recent_failures(await self._pool(), since, limit)

    async def provider_latency(self, since: datetime) -> list[ProviderHealth]:
        """Successful LLM calls per provider/model since ``since``: count, p50/p95 ms.

        Raises:
            DatabaseError: PostgreSQL not configured or unreachable.
            asyncpg.PostgresError: PostgreSQL refused the query.
        """
        return await reports.provider_latency(await self._pool(), since)
