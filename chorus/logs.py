"""Structured JSON logging for processes outside workflow code (worker, CLI, dev stack).

structlog renders every line as JSON; stdlib and temporalio loggers are bridged through
``structlog.stdlib.ProcessorFormatter`` so their records are JSON too (structlog docs,
"Standard Library Logging"). Every string field is scrubbed of PII (e-mail addresses, phone
numbers, SSNs, card numbers, IP addresses) before it is written.
"""

from __future__ import annotations

import logging
import sys

import structlog
from structlog.types import EventDict, WrappedLogger
from temporalio import activity, workflow

from chorus.pii import scrub_for_logs

_NOT_SCRUBBED = frozenset({"timestamp", "level", "logger"})


def scrub_pii(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """Structlog processor: redact PII (``chorus/pii.py``) in every string field of a line."""
    for key, value in event.items():
        if isinstance(value, str) and key not in _NOT_SCRUBBED:
            event[key] = scrub_for_logs(value)
    return event


def configure_logging(level: str = "INFO", *, stream: object = None) -> None:
    """Send all log records, as JSON lines, to ``stream`` (default stderr).

    Args:
        level: Minimum level name (``DEBUG``, ``INFO``, ``WARNING``...).
        stream: A text stream; default ``sys.stderr``.

    """
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            scrub_pii,  # after exceptions are rendered, so their text is scrubbed too
            structlog.processors.JSONRenderer(),
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "httpx2", "openai", "anthropic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # temporalio's logger adapters append their context dict to the message by default; keep
    # it as structured fields instead (``temporal_activity`` / ``temporal_workflow``).
    activity.logger.activity_info_on_message = False
    workflow.logger.workflow_info_on_message = False
