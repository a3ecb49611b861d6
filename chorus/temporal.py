"""Connecting to Temporal the same way everywhere (worker, starter, tests, Replayer)."""

from __future__ import annotations

import dataclasses

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from chorus import tracing
from chorus.codec import EncryptionCodec
from chorus.logs import core_logging_config
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


async def connect(settings: Settings, runtime: Runtime | None = None) -> Client:
    """Connect a client to ``TEMPORAL_ADDRESS``/``TEMPORAL_NAMESPACE`` with :func:`data_converter`.

    When an OTLP endpoint is configured, the client (and workers built on it) also traces runs
    (:mod:`chorus.tracing`).

    Args:
        settings: Address, namespace and codec keys.
        runtime: Temporal runtime (telemetry: the worker passes one with a Prometheus
            endpoint, see :func:`sdk_metrics_runtime`); ``None`` uses the SDK's default.

    Raises:
        RuntimeError: When the server cannot be reached (the message names the address).
        chorus.codec.CodecError: ``CHORUS_CODEC_KEYS`` is malformed.

    """
    try:
        return await Client.connect(
            settings.temporal_address,
            namespace=settings.temporal_namespace,
            data_converter=data_converter(settings),
            interceptors=tracing.client_interceptors(),  # [] unless OTLP is configured
            runtime=runtime,
        )
    except RuntimeError as exc:
        raise RuntimeError(
            f"cannot reach Temporal at {settings.temporal_address} "
            f"(namespace {settings.temporal_namespace}): {exc}. Is it running? "
            "Try `chorus dev up`, or set TEMPORAL_ADDRESS."
        ) from exc


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
    logger, so they are JSON like every other line (:func:`chorus.logs.core_logging_config`).

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
