"""Spend in USD: the cost ledger's usage statistics and the budgets every worker enforces."""

from __future__ import annotations

from datetime import datetime

from chorus.governance import budget
from chorus.governance.budget import BudgetLine
from chorus.storage import db
from chorus.storage.db import CostGrouping, CostRow
from starter.sdk.client_base import FocusedClient
from starter.sdk.sdk_errors import ChorusInputError


class SpendClient(FocusedClient):
    """What LLM calls cost (the cost ledger) and may cost (budgets, per UTC day and per run).

    Reached as ``ChorusClient.spend``. Prices come from :mod:`chorus.governance.pricing`.
    """

    async def costs(
        self, by: CostGrouping = "agent", since: datetime | None = None
    ) -> list[CostRow]:
        """Usage statistics from the cost ledger: calls, tokens and USD, grouped.

        Args:
            by: ``agent``, ``provider``, ``model`` or ``day`` (UTC).
            since: Only calls at or after this time (timezone-aware).

        Raises:
            DatabaseError: PostgreSQL not configured or unreachable.
        """
        return await db.cost_summary(await self._pool(), by=by, since=since)

    async def budgets(self) -> list[BudgetLine]:
        """Every budget with today's spent, reserved and remaining USD (UTC day).

        Raises:
            DatabaseError: PostgreSQL not configured or unreachable.
        """
        return await budget.standing(await self._pool(), self.settings)

    async def set_budget(
        self,
        scope: str,
        limit_usd: float | None,
        *,
        alert_usd: float | None = None,
        author: str = "",
    ) -> None:
        """Set a budget (``daily``, ``run`` or ``agent:<name>``) in USD; ``None`` removes it.

        Args:
            scope: ``daily`` (all spend per UTC day), ``run`` (each top-level run) or
                ``agent:<name>`` (one agent per UTC day).
            limit_usd: The limit in USD, or ``None`` to remove the budget.
            alert_usd: Daily spend in USD that fires the alert (``daily`` only).
            author: Recorded as the change's author.

        Raises:
            ChorusInputError: Unknown scope, negative amount, misplaced alert (names the field).
        """
        try:
            await budget.set_limit(
                await self._pool(), scope, limit_usd, alert_usd=alert_usd, author=author
            )
        except ValueError as exc:
            raise ChorusInputError(str(exc)) from exc
