"""API keys of the HTTP API: create, list, revoke and rotate them (PostgreSQL only)."""

from __future__ import annotations

import builtins
from collections.abc import Sequence

from chorus.governance import api_keys
from chorus.governance.api_keys import ApiKey
from starter.sdk.client_base import FocusedClient


class KeysClient(FocusedClient):
    """Issue and manage the API keys the HTTP API authenticates (:mod:`chorus.governance.api_keys`).

    Reached as ``ChorusClient.keys``. Needs ``CHORUS_API_KEY_SECRET`` (the server secret keys
    are hashed with) to create or rotate keys; listing and revoking work without it.
    """

    async def create(
        self,
        name: str,
        scopes: Sequence[str],
        *,
        budget_daily_usd: float | None = None,
        rpm: int | None = None,
        author: str = "",
    ) -> tuple[ApiKey, str]:
        """Issue a key; the returned ``chorus_<id>_<secret>`` is never shown again.

        Args:
            name: Unique among keys not revoked (lower-case letter, then up to 63 lower-case
                letters, digits, ``_`` or ``-``).
            scopes: A non-empty subset of :data:`~chorus.governance.api_keys.SCOPES`.
            budget_daily_usd: Daily budget in USD (UTC day) of the LLM calls of the runs the
                key starts, enforced across every worker; ``None`` for none.
            rpm: Requests per minute across the fleet (1-1,000,000); ``None`` for no limit.
            author: Recorded as who issued it.

        Returns:
            The key's record and the key itself.

        Raises:
            ChorusInputError: A field breaks its rule (names the field and the limit), or the
                name is taken by a key that is not revoked.
            ApiKeySecretMissing: ``CHORUS_API_KEY_SECRET`` is not set.
            DatabaseError: PostgreSQL not configured or unreachable.
        """
        return await api_keys.create_key(
            await self._pool(),
            self.settings,
            name=name,
            scopes=scopes,
            budget_daily_usd=budget_daily_usd,
            rpm=rpm,
            author=author,
        )

    async def list(self, include_revoked: bool = False) -> builtins.list[ApiKey]:
        """Keys by name (newest first within a name), never their secrets.

        Args:
            include_revoked: Also list revoked keys.

        Raises:
            DatabaseError: PostgreSQL not configured or unreachable.
        """
        return await api_keys.list_keys(await self._pool(), include_revoked)

    async def revoke(self, name_or_id: str, *, author: str = "") -> ApiKey:
        """Revoke a key at once (by name, or by id for a key in a rotation's overlap window).

        Raises:
            ApiKeyNotFound: No active key has that name or id (a ``ChorusInputError``).
            DatabaseError: PostgreSQL not configured or unreachable.
        """
        return await api_keys.revoke_key(await self._pool(), name_or_id, author=author)

    async def rotate(
        self, name_or_id: str, *, author: str = "", overlap_s: float = 0.0
    ) -> tuple[ApiKey, str]:
        """Replace a key by a new id and secret with the same name, scopes and limits.

        Args:
            name_or_id: The key to replace.
            author: Recorded as who rotated it.
            overlap_s: Seconds the old key keeps working (0: revoked at once; at most a day).

        Returns:
            The new key's record and the new key, shown only this once.

        Raises:
            ApiKeyNotFound: No active key has that name or id (a ``ChorusInputError``).
            ChorusInputError: ``overlap_s`` out of range.
            ApiKeySecretMissing: ``CHORUS_API_KEY_SECRET`` is not set.
            DatabaseError: PostgreSQL not configured or unreachable.
        """
        return await api_keys.rotate_key(
            await self._pool(), self.settings, name_or_id, author=author, overlap_s=overlap_s
        )
