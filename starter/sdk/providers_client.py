"""Providers: the registry this process knows and each provider's fleet-wide circuit breaker."""

from __future__ import annotations

import builtins
from typing import Any

from pydantic import BaseModel, Field

from chorus.config.providers import load_registry
from chorus.contracts.errors import ChorusInputError
from chorus.governance import circuit_breaker
from chorus.governance.circuit_breaker import BreakerStatus
from starter.sdk.client_base import FocusedClient


class ProviderStatus(BaseModel):
    """One provider as ``chorus providers list`` shows it.

    Attributes:
        name: Provider name (as agents name it: ``name:model``).
        entry: The registry entry without secrets
            (:meth:`chorus.config.providers.ProviderEntry.describe`); ``{}`` for a provider
            that only has a breaker row (it left the registry).
        state: The worst state of its breakers: ``closed``, ``half_open`` or ``open``
            (``closed`` when it has none).
        breakers: Its breakers (one, model ``''``, unless ``CHORUS_CIRCUIT_PER_MODEL``).
    """

    name: str
    entry: dict[str, Any] = Field(default_factory=dict)
    state: str = "closed"
    breakers: list[BreakerStatus] = Field(default_factory=list)


class ProvidersClient(FocusedClient):
    """The providers of the fleet and their circuit breakers.

    Registry: :mod:`chorus.config.providers`; breakers: :mod:`chorus.governance.circuit_breaker`.
    Reached as ``ChorusClient.providers``. The registry is this process's
    (``CHORUS_PROVIDERS_FILE`` and the built-ins); the breakers are the fleet's (PostgreSQL).
    """

    async def list(self) -> builtins.list[ProviderStatus]:
        """Every registry entry (configured or not) with its breakers' state.

        Returns:
            Registry order (built-ins first), then providers that only have a breaker row.

        Raises:
            ProviderRegistryError: ``CHORUS_PROVIDERS_FILE`` is invalid (names provider and field).
            DatabaseError: PostgreSQL not configured or unreachable.
        """
        registry = load_registry(self.settings)
        statuses = await circuit_breaker.statuses(await self._pool())
        by_provider: dict[str, builtins.list[BreakerStatus]] = {}
        for status in statuses:
            by_provider.setdefault(status.provider, []).append(status)
        names = [*registry, *(p for p in by_provider if p not in registry)]
        result = []
        for name in names:
            breakers = by_provider.get(name, [])
            worst = max(
                (b.state for b in breakers),
                key=circuit_breaker.STATES.index,
                default="closed",
            )
            entry = registry[name].describe() if name in registry else {}
            result.append(ProviderStatus(name=name, entry=entry, state=worst, breakers=breakers))
        return result

    async def breakers(self) -> builtins.list[BreakerStatus]:
        """Every circuit breaker with a row in PostgreSQL (providers without one are closed).

        Raises:
            DatabaseError: PostgreSQL not configured or unreachable.
        """
        return await circuit_breaker.statuses(await self._pool())

    async def reset(self, name: str, model: str | None = None) -> dict[str, str]:
        """Close a provider's circuit breaker(s) by hand.

        Workers that read the breaker as open notice within ``CHORUS_CIRCUIT_CACHE_S``.

        Args:
            name: Provider name.
            model: Only this model's breaker (with ``CHORUS_CIRCUIT_PER_MODEL``); all of the
                provider's when ``None``.

        Returns:
            Breaker model (``''``: provider-wide) -> its state before the reset (empty when it
            had no breaker row: it was closed).

        Raises:
            ChorusInputError: No provider of that name in the registry and no breaker of it.
            DatabaseError: PostgreSQL not configured or unreachable.
        """
        reset = await circuit_breaker.reset(await self._pool(), name, model)
        if not reset and name not in load_registry(self.settings):
            known = ", ".join(load_registry(self.settings))
            raise ChorusInputError(f"no provider named {name!r} (known: {known})")
        return reset
