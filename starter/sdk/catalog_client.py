"""The agent catalog: versioned agent configurations in PostgreSQL, with their audit trail."""

from __future__ import annotations

from collections.abc import Sequence

from chorus.contracts.models import AgentSpec
from chorus.storage import db
from chorus.storage.db import AgentVersion
from starter.sdk.client_base import FocusedClient


class AgentCatalogClient(FocusedClient):
    """Read, change and roll back agent configurations; every change is a new kept version.

    Reached as ``ChorusClient.catalog``. Running workflows keep the versions they pinned; new
    runs use the current ones at once. At most ``CHORUS_AGENT_VERSIONS_KEPT`` versions of each
    agent are kept.
    """

    async def current(self) -> dict[str, AgentSpec]:
        """Current version of every agent configuration, by agent name.

        Raises:
            DatabaseError: PostgreSQL not configured or unreachable.
        """
        return await db.current_agents(await self._pool())

    async def history(self, name: str) -> list[AgentVersion]:
        """Kept versions of one agent, newest first.

        Raises:
            AgentConfigError: Unknown agent.
        """
        return await db.agent_history(await self._pool(), name)

    async def version(self, name: str, version: int) -> AgentVersion:
        """One kept version of an agent.

        Raises:
            AgentConfigError: Unknown agent or version.
        """
        return await db.agent_version(await self._pool(), name, version)

    async def set(
        self, specs: Sequence[AgentSpec], *, author: str, comment: str = ""
    ) -> list[tuple[str, int, bool]]:
        """Store a new version of each changed agent, all or nothing (see ``db.set_agents``).

        Args:
            specs: The agents' configurations (e.g. from a YAML catalog).
            author: Recorded as the change's author.
            comment: Why the change was made.

        Returns:
            ``(agent, current version, changed)`` for each agent of ``specs``.

        Raises:
            AgentConfigError: A spec was refused; nothing is stored.
        """
        return await db.set_agents(
            await self._pool(),
            specs,
            author=author,
            comment=comment,
            keep=self.settings.agent_versions_kept,
        )

    async def rollback(self, name: str, version: int, *, author: str) -> AgentVersion:
        """Make an earlier version current again, as a new version (see ``db.rollback_agent``).

        Raises:
            AgentConfigError: Unknown agent or version.
        """
        return await db.rollback_agent(
            await self._pool(), name, version, author=author, keep=self.settings.agent_versions_kept
        )
