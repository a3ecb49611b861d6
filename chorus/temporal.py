"""Connecting to Temporal the same way everywhere (worker, starter, tests, Replayer)."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from chorus.settings import Settings


async def connect(settings: Settings) -> Client:
    """Connect a client to ``TEMPORAL_ADDRESS``/``TEMPORAL_NAMESPACE`` with the pydantic converter.

    Raises:
        RuntimeError: When the server cannot be reached (the message names the address).

    """
    try:
        return await Client.connect(
            settings.temporal_address,
            namespace=settings.temporal_namespace,
            data_converter=pydantic_data_converter,
        )
    except RuntimeError as exc:
        raise RuntimeError(
            f"cannot reach Temporal at {settings.temporal_address} "
            f"(namespace {settings.temporal_namespace}): {exc}. Is it running? "
            "Try `chorus dev up`, or set TEMPORAL_ADDRESS."
        ) from exc
