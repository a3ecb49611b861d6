"""The ``chorus.resolve_agents`` activity: pin a run's agent configurations."""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from chorus import errors
from chorus.catalog import CatalogError, load_catalog, unknown_agents
from chorus.models import ResolveAgentsInput, ResolveAgentsResult, ResolvedAgent, SkippedProvider
from chorus.names import RESOLVE_AGENTS_ACTIVITY
from chorus.settings import Settings


class CatalogActivities:
    """Reads the agent catalog for workflows, so each run records the versions it used."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    @activity.defn(name=RESOLVE_AGENTS_ACTIVITY)
    async def resolve_agents(self, input: ResolveAgentsInput) -> ResolveAgentsResult:
        """Return the configuration of each named agent and the providers usable for it.

        The catalog file (``CHORUS_AGENTS_FILE``) is re-read when it changes, so new runs see an
        edited catalog without a worker restart; the result is recorded in the run's history,
        so the run keeps these versions even if the file changes while it runs.

        Args:
            input: Agent names the run needs.

        Returns:
            One :class:`~chorus.models.ResolvedAgent` per name; providers whose credentials are
            missing on this worker are listed as skipped with the reason.

        Raises:
            ApplicationError: Non-retryable, type ``InvalidCatalog`` (the file is unreadable or
                invalid), ``UnknownAgent`` (names the unknown and the known agents) or
                ``NoUsableProvider`` (every provider of an agent is unconfigured).

        """
        try:
            catalog = load_catalog(self._settings.agents_file)
        except CatalogError as exc:
            raise ApplicationError(
                str(exc), type=errors.INVALID_CATALOG, non_retryable=True
            ) from exc
        missing = unknown_agents(input.names, catalog)
        if missing:
            raise ApplicationError(
                f"unknown agent(s): {', '.join(missing)}; the catalog "
                f"{self._settings.agents_file} defines: {', '.join(catalog)}",
                type=errors.UNKNOWN_AGENT,
                non_retryable=True,
            )
        resolved: dict[str, ResolvedAgent] = {}
        for name in dict.fromkeys(input.names):
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
        return ResolveAgentsResult(agents=resolved)
