"""Observability: JSON logs with run context, Prometheus metrics, tracing, worker probes."""
