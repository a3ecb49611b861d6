"""What the SDK raises, besides :class:`LookupError` and :class:`PermissionError`.

``AgentConfigError`` and ``DatabaseError`` are the storage layer's own; they are re-exported
from :mod:`starter.sdk` so callers (the CLI too) never import :mod:`chorus.storage`.
"""

from __future__ import annotations

from temporalio.service import RPCError

from chorus.contracts.errors import ChorusInputError as ChorusInputError
from chorus.contracts.errors import ChorusRefusedError, ChorusUnavailableError
from chorus.contracts.models import RunResult
from chorus.contracts.names import search_attribute_types
from chorus.storage.db import AgentConfigError, DatabaseError

__all__ = [
    "AgentConfigError",
    "ChorusInputError",
    "DatabaseError",
    "DraftRefusedError",
    "RunFailedError",
    "SearchAttributesMissingError",
    "raise_if_unregistered",
]


class RunFailedError(ChorusRefusedError):
    """A run ended in failure, cancellation or termination.

    Attributes:
        workflow_id: The run's workflow id.
        status: ``FAILED``, ``CANCELED``, ``TERMINATED`` or ``TIMED_OUT``.
        partial: The steps that finished before the failure, when the workflow reported them.
        error_type: The failure's type (e.g. ``StepFailed``, ``GateRejected``, ``RouteLimit``),
            when the workflow failed with one; else ``RunFailed``.

    """

    def __init__(
        self,
        message: str,
        workflow_id: str,
        status: str,
        partial: RunResult | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.workflow_id = workflow_id
        self.status = status
        self.partial = partial
        self.error_type = error_type or "RunFailed"


class DraftRefusedError(ChorusRefusedError):
    """A draft update was refused; ``error_type`` names the rule (e.g. EditConflict)."""

    def __init__(self, message: str, error_type: str) -> None:
        super().__init__(message)
        self.error_type = error_type


class SearchAttributesMissingError(ChorusUnavailableError):
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
