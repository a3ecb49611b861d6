"""What every focused client shares: the facade's Temporal client, settings and pool opener.

:class:`~starter.sdk.ChorusClient` builds one of each focused client over the same three
parts, so they share one PostgreSQL pool, opened on first use.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import asyncpg
from pydantic import BaseModel, ValidationError
from temporalio.client import Client

from chorus.config.settings import Settings
from chorus.contracts import validation
from chorus.governance import content_check
from chorus.runtime.converter import describe_decode_error
from starter.sdk.sdk_errors import ChorusInputError

PoolOpener = Callable[[], Awaitable[asyncpg.Pool]]
"""Returns the shared PostgreSQL pool, opening it (migrated, agents seeded) on first call."""

InputModelT = TypeVar("InputModelT", bound=BaseModel)


class FocusedClient:
    """Base of the focused clients (runs, drafts, agent catalog, spend, fleet).

    Args:
        client: A connected Temporal client (with Chorus's data converter).
        settings: Chorus settings (limits, task queue, UI address).
        pool: The facade's pool opener (:meth:`ChorusClient.pool`).
    """

    def __init__(self, client: Client, settings: Settings, pool: PoolOpener) -> None:
        self.client = client
        self.settings = settings
        self._pool = pool
        self._check: content_check.ContentCheck | None = None

    def ui_url(self, workflow_id: str) -> str:
        """Link to the workflow (run or draft) in the Temporal UI."""
        return (
            f"{self.settings.temporal_ui_url.rstrip('/')}/namespaces/"
            f"{self.settings.temporal_namespace}/workflows/{workflow_id}"
        )

    def _check_content(self, fields: dict[str, str]) -> None:
        """Run the prohibited-content check (``CHORUS_CONTENT_CHECK``) over ``fields``.

        Args:
            fields: Field name (as shown in the error) to the text to check.

        Raises:
            ChorusInputError: The check refused a field, or could not be loaded.
        """
        with input_refusals():
            if self._check is None:
                self._check = content_check.load_content_check(self.settings.content_check)
            content_check.check_content(self._check, fields)


@contextmanager
def input_refusals() -> Iterator[None]:
    """Re-raise the boundary checks' refusals as :class:`ChorusInputError`.

    Raises:
        ChorusInputError: A :mod:`chorus.contracts.validation` check refused (same message).
    """
    try:
        yield
    except validation.InputValidationError as exc:
        raise ChorusInputError(str(exc)) from exc


def validated(model: type[InputModelT], **fields: Any) -> InputModelT:
    """Build a workflow input, turning pydantic's error into a ChorusInputError naming the field.

    Raises:
        ChorusInputError: A field breaks a limit (e.g. more than 50 branches).
    """
    try:
        return model(**fields)
    except ValidationError as exc:
        raise ChorusInputError(describe_decode_error(model, exc)) from None
