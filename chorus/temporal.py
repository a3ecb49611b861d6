"""Connecting to Temporal the same way everywhere (worker, starter, tests, Replayer)."""

from __future__ import annotations

import dataclasses

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes

from chorus.codec import EncryptionCodec
from chorus.settings import Settings


def data_converter(settings: Settings) -> DataConverter:
    """Return the data converter every Chorus client uses: pydantic, encrypted when configured.

    With ``CHORUS_CODEC_KEYS`` set, payloads go through :class:`chorus.codec.EncryptionCodec`
    and failure messages and stack traces are moved into the (encrypted) encoded attributes
    (``DefaultFailureConverterWithEncodedAttributes``), since they can quote a task or document.
    Workers and starters must agree: a worker without the keys cannot read encrypted runs.

    Args:
        settings: Settings; only ``codec_keys`` is read.

    Returns:
        ``pydantic_data_converter``, or a copy of it with the codec and failure converter set.

    Raises:
        chorus.codec.CodecError: ``CHORUS_CODEC_KEYS`` is malformed (the message names the key id
            and the rule, never the key).

    """
    spec = settings.codec_keys.get_secret_value().strip() if settings.codec_keys else ""
    if not spec:
        return pydantic_data_converter
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=EncryptionCodec.from_spec(spec),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


async def connect(settings: Settings) -> Client:
    """Connect a client to ``TEMPORAL_ADDRESS``/``TEMPORAL_NAMESPACE`` with :func:`data_converter`.

    Raises:
        RuntimeError: When the server cannot be reached (the message names the address).
        chorus.codec.CodecError: ``CHORUS_CODEC_KEYS`` is malformed.

    """
    try:
        return await Client.connect(
            settings.temporal_address,
            namespace=settings.temporal_namespace,
            data_converter=data_converter(settings),
        )
    except RuntimeError as exc:
        raise RuntimeError(
            f"cannot reach Temporal at {settings.temporal_address} "
            f"(namespace {settings.temporal_namespace}): {exc}. Is it running? "
            "Try `chorus dev up`, or set TEMPORAL_ADDRESS."
        ) from exc
