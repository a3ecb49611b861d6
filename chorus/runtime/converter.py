"""Connecting to Temporal the same way everywhere (worker, starter, tests, Replayer)."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Sequence
from typing import Any

import pydantic
from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.contrib.pydantic import PydanticPayloadConverter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes
from temporalio.exceptions import ApplicationError
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from chorus.config.settings import Settings
from chorus.config.temporal_profile import TemporalConnection, resolve_connection
from chorus.contracts import errors
from chorus.contracts.models import EntryInput
from chorus.observability.logs import core_logging_config
from chorus.runtime.codec import EncryptionCodec

MAX_DECODE_ERRORS_SHOWN = 3
"""Validation errors quoted in an ``InvalidInput`` message (the rest are counted)."""


def _entry_input_type(type_hint: Any) -> type[EntryInput] | None:
    """The :class:`EntryInput` model a type hint asks for (``X`` or ``X | None``), if any."""
    if isinstance(type_hint, type) and issubclass(type_hint, EntryInput):
        return type_hint
    if typing.get_origin(type_hint) in (typing.Union, types.UnionType):
        for arg in typing.get_args(type_hint):
            found = _entry_input_type(arg)
            if found is not None:
                return found
    return None


def describe_decode_error(model: type[pydantic.BaseModel], exc: BaseException) -> str:
    """One line naming the payload type and each bad field with pydantic's reason.

    Args:
        model: The model the payload should have been.
        exc: What decoding raised (``pydantic.ValidationError`` names fields; anything else,
            e.g. an unknown payload encoding, is quoted as is).
    """
    if isinstance(exc, pydantic.ValidationError):
        problems = [
            f"{'.'.join(str(p) for p in err['loc']) or '(the whole input)'}: {err['msg']}"
            for err in exc.errors(include_url=False)
        ]
        more = len(problems) - MAX_DECODE_ERRORS_SHOWN
        shown = "; ".join(problems[:MAX_DECODE_ERRORS_SHOWN])
        detail = shown + (f"; and {more} more" if more > 0 else "")
    else:
        detail = f"{type(exc).__name__}: {exc}"
    return f"invalid {model.__name__}: {detail}"


class ChorusPayloadConverter(PydanticPayloadConverter):
    """Pydantic payload converter that refuses undecodable entry payloads for good.

    A workflow input, update argument or signal argument (an :class:`EntryInput` type hint)
    that does not decode raises ``ApplicationError(type="InvalidInput", non_retryable=True)``
    naming the fields. The SDK fails the workflow with it (a workflow input), rejects the
    update with it, or drops the signal with a log line: never the endless workflow-task
    retries of "Failed decoding arguments" that a plain ``temporal workflow start --input
    '"just a string"'`` caused before. Other payloads (activity results, query results)
    keep the SDK's behaviour.
    """

    def from_payloads(
        self, payloads: Sequence[Payload], type_hints: list[type] | None = None
    ) -> list[Any]:
        """See base class; raises ``InvalidInput`` for undecodable entry payloads."""
        hints: list[Any] = list(type_hints or [])
        if not any(_entry_input_type(h) for h in hints):
            return super().from_payloads(payloads, type_hints)
        values: list[Any] = []
        for index, payload in enumerate(payloads):
            hint = hints[index] if index < len(hints) else None
            model = _entry_input_type(hint)
            if model is not None and hint is not model and payload.data.strip() == b"null":
                values.append(None)  # ``X | None``: an explicit null is the missing input
                continue
            try:
                values.extend(super().from_payloads([payload], [model or hint] if hint else None))
            except Exception as exc:
                if model is None:
                    raise
                raise ApplicationError(
                    describe_decode_error(model, exc.__cause__ or exc),
                    type=errors.INVALID_INPUT,
                    non_retryable=True,
                ) from None
        return values


chorus_data_converter = DataConverter(payload_converter_class=ChorusPayloadConverter)
"""The data converter of every Chorus client, worker and Replayer (without encryption)."""


def data_converter(settings: Settings) -> DataConverter:
    """Return the data converter every Chorus client uses: pydantic, encrypted when configured.

    Payloads are JSON through pydantic (:class:`ChorusPayloadConverter`: an entry payload that
    does not decode is refused with ``InvalidInput``).

    With ``CHORUS_CODEC_KEYS`` set, payloads go through
    :class:`chorus.runtime.codec.EncryptionCodec`
    and failure messages and stack traces are moved into the (encrypted) encoded attributes
    (``DefaultFailureConverterWithEncodedAttributes``), since they can quote a task or document.
    Workers and starters must agree: a worker without the keys cannot read encrypted runs.

    Args:
        settings: Settings; only ``codec_keys`` is read.

    Returns:
        ``chorus_data_converter``, or a copy of it with the codec and failure converter set.

    Raises:
        chorus.runtime.codec.CodecError: ``CHORUS_CODEC_KEYS`` is malformed (the message names the
        key id
            and the rule, never the key).

    """
    spec = settings.codec_keys.get_secret_value().strip() if settings.codec_keys else ""
    if not spec:
        return chorus_data_converter
    return dataclasses.replace(
        chorus_data_converter,
        payload_codec=EncryptionCodec.from_spec(spec),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


async def connect(settings: Settings, runtime: Runtime | None = None) -> Client:
    """Connect a client to Temporal as configured, with ``ChorusPlugin``.

    Where and how come from :func:`chorus.config.temporal_profile.resolve_connection`:
    ``TEMPORAL_ADDRESS``/``TEMPORAL_NAMESPACE`` (or the settings' values), else the
    ``TEMPORAL_PROFILE`` profile of Temporal's TOML config file, else ``localhost:7233`` and
    ``default``; the API key (``TEMPORAL_API_KEY``, sent as ``authorization: Bearer``), TLS
    (``TEMPORAL_TLS``, ``TEMPORAL_TLS_*``: server CA, client certificate and key for mTLS,
    server name) and gRPC metadata (``TEMPORAL_GRPC_META_*``) from the same profile and
    environment (:mod:`temporalio.envconfig`, the configuration every Temporal SDK and the
    ``temporal`` CLI read). With nothing configured this is a plaintext connection to
    ``localhost:7233``, as before.

    The plugin (:mod:`chorus.runtime.plugin`) sets :func:`data_converter` and, when an OTLP
    endpoint is configured, tracing (:mod:`chorus.observability.tracing`); workers built on
    the client inherit both.

    Args:
        settings: Address, namespace, Temporal profile and config file, and codec keys.
        runtime: Temporal runtime (telemetry: the worker passes one with a Prometheus
            endpoint, see :func:`sdk_metrics_runtime`); ``None`` uses the SDK's default.

    Raises:
        chorus.contracts.errors.ChorusUnavailableError: When the server cannot be reached or
            refuses the connection (a ``RuntimeError``); the message names the address and
            namespace, says whether TLS, a client certificate and an API key were used
            (never the key) and, for TLS failures it recognises, what to check.
        chorus.config.temporal_profile.TemporalConfigError: The configuration is unusable: a
            malformed config file, a missing profile, a missing or non-PEM certificate or
            key (the message names the file and the variable or TOML key).
        chorus.runtime.codec.CodecError: ``CHORUS_CODEC_KEYS`` is malformed.

    """
    from chorus.runtime.plugin import ChorusPlugin  # the plugin imports this module

    connection = resolve_connection(settings)
    plugin = ChorusPlugin(settings)  # converter, codec, tracing, sandbox
    try:
        return await Client.connect(
            **connection.connect_kwargs(), plugins=[plugin], runtime=runtime
        )
    except RuntimeError as exc:
        detail = str(exc)
        if connection.api_key:
            detail = detail.replace(connection.api_key, "<API key>")
        raise errors.ChorusUnavailableError(
            f"cannot reach Temporal at {connection.address} (namespace "
            f"{connection.namespace}; {connection.describe()}): {detail}. "
            f"{_connect_hint(connection, detail)}"
        ) from exc


def _connect_hint(connection: TemporalConnection, detail: str) -> str:
    """What to check after a failed connection, from the TLS stack's reason when it gave one."""
    if "UnknownIssuer" in detail:
        return (
            "The server's certificate is not signed by the CA in use: set "
            "TEMPORAL_TLS_SERVER_CA_CERT_PATH (or tls.server_ca_cert_path in the profile) to "
            "the CA that signed it."
        )
    if "NotValidForName" in detail:
        return (
            "The server's certificate does not carry the host name dialled: set "
            "TEMPORAL_TLS_SERVER_NAME to a name it carries."
        )
    if connection.uses_tls and "InvalidContentType" in detail:
        return "The server does not speak TLS on this port: check the address, or TEMPORAL_TLS."
    closed = any(
        s in detail  # how the Rust TLS/HTTP stack reports a peer that hung up, by timing
        for s in (
            "close_notify",
            "UnexpectedEof",
            "ConnectionReset",
            "BrokenPipe",
            "connection closed",
        )
    )
    if connection.uses_tls and closed and not connection.client_certificate:
        return (
            "The server closed the TLS connection: it may require a client certificate "
            "(mTLS): set TEMPORAL_TLS_CLIENT_CERT_PATH and TEMPORAL_TLS_CLIENT_KEY_PATH."
        )
    if connection.uses_tls and closed:
        return (
            "The server closed the TLS connection: it may not accept this client certificate "
            "(signed by a CA it does not trust, expired, or not allowed on the namespace)."
        )
    if closed:
        return (
            "The server closed the connection: it may require TLS (TEMPORAL_TLS=true, "
            "TEMPORAL_TLS_* or TEMPORAL_API_KEY)."
        )
    return "Is it running? Try `chorus dev up`, or set TEMPORAL_ADDRESS."


def sdk_metrics_runtime(settings: Settings) -> Runtime:
    """Return a Temporal runtime serving the SDK's metrics for Prometheus, or ``None``.

    The SDK's Rust core serves ``temporal_*`` metrics (workflow/activity task latencies,
    schedule-to-start, poller and slot usage, sticky cache) at
    ``http://CHORUS_METRICS_HOST:CHORUS_SDK_METRICS_PORT/metrics``, with ``_total`` counter
    suffixes and durations in seconds (``temporal_workflow_task_schedule_to_start_latency_seconds``
    would need ``unit_suffix``; it is off, so names match the SDK's documentation). One runtime
    serves one endpoint, so build it once per process and share it between clients.

    Args:
        settings: ``metrics_host`` and ``sdk_metrics_port`` (0 disables the endpoint).

    The runtime also forwards the SDK core's own log lines to the ``temporalio.core`` Python
    logger, so they are JSON like every other line
    (:func:`chorus.observability.logs.core_logging_config`).

    Returns:
        The runtime (metrics endpoint off when ``sdk_metrics_port`` is 0).

    Raises:
        RuntimeError: When the port cannot be bound.

    """
    logging = core_logging_config()  # the Rust core's lines go through our JSON logging too
    if not settings.sdk_metrics_port:
        return Runtime(telemetry=TelemetryConfig(logging=logging))
    address = f"{settings.metrics_host}:{settings.sdk_metrics_port}"
    prometheus = PrometheusConfig(
        bind_address=address,
        counters_total_suffix=True,  # Prometheus naming; `promtool check metrics` requires it
        durations_as_seconds=True,  # same unit as chorus_*_seconds, so dashboards can mix them
    )
    return Runtime(telemetry=TelemetryConfig(metrics=prometheus, logging=logging))
