"""OpenTelemetry tracing of runs: client → workflow → activity spans, off by default.

Tracing turns on when the standard OpenTelemetry variable ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set and ``OTEL_SDK_DISABLED`` is not ``true``. Spans
are then exported over OTLP/HTTP (protobuf) by a batch span processor; the exporter reads
the other standard variables itself (``OTEL_EXPORTER_OTLP_HEADERS``, ``..._TIMEOUT``,
``..._CERTIFICATE``; OpenTelemetry specification, "OTLP Exporter Configuration"), and the
service name is ``OTEL_SERVICE_NAME`` (default ``chorus``).

Every client made by :func:`chorus.runtime.converter.connect` then carries temporalio's
``TracingInterceptor`` (``temporalio.contrib.opentelemetry``), which workers built from that
client inherit, so a run's trace links ``StartWorkflow`` (starter) → ``RunWorkflow`` →
``StartActivity`` → ``RunActivity`` (worker) through Temporal headers. It is the SDK's
stable interceptor; its workflow spans have zero duration (the newer ``OpenTelemetryPlugin``
is experimental).

OpenTelemetry is an optional dependency (``pip install 'chorus[otel]'``): nothing here imports
it unless tracing is on.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from temporalio.client import Interceptor

_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_lock = threading.RLock()
_provider: TracerProvider | None = None


def tracing_enabled(env: Mapping[str, str] | None = None) -> bool:
    """Say whether an OTLP endpoint is configured and the OpenTelemetry SDK is not disabled."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(env.get(name, "").strip() for name in _ENDPOINT_VARS)


def configure_tracing(
    exporter: SpanExporter | None = None, *, batch: bool = True, set_global: bool = True
) -> TracerProvider:
    """Create the process's tracer provider, which :func:`client_interceptors` then uses.

    Args:
        exporter: Where spans go; default an OTLP/HTTP exporter configured from the
            environment. Tests pass an ``InMemorySpanExporter``.
        batch: Export through a ``BatchSpanProcessor`` (default) rather than one span at a
            time (``SimpleSpanProcessor``).
        set_global: Also make it OpenTelemetry's global tracer provider (possible once per
            process), so other instrumentation joins the same traces.

    Returns:
        The provider; it flushes and shuts down at interpreter exit.

    Raises:
        ImportError: The ``otel`` extra is not installed.

    """
    global _provider
    import opentelemetry.trace
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    attributes: dict[str, Any] = {}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes[SERVICE_NAME] = "chorus"
    provider = TracerProvider(resource=Resource.create(attributes))
    processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    if set_global:
        opentelemetry.trace.set_tracer_provider(provider)
    with _lock:
        _provider = provider
    return provider


def reset_tracing() -> None:
    """Forget the provider set by :func:`configure_tracing` (flushing it first); for tests."""
    global _provider
    with _lock:
        provider, _provider = _provider, None
    if provider is not None:
        provider.force_flush()


def client_interceptors() -> list[Interceptor]:
    """Return the client interceptors that trace runs: empty unless tracing is on.

    Uses the provider of :func:`configure_tracing`, configuring it from the environment on
    first use when :func:`tracing_enabled`.

    Raises:
        ImportError: Tracing is configured but the ``otel`` extra is not installed.

    """
    with _lock:
        provider = _provider
        if provider is None:
            if not tracing_enabled():
                return []
            provider = configure_tracing()
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor(provider.get_tracer("chorus"))]
