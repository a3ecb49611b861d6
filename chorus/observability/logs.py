"""Structured JSON logging for processes outside workflow code (worker, CLI, dev stack).

structlog renders every line as JSON; stdlib and temporalio loggers are bridged through
``structlog.stdlib.ProcessorFormatter`` so their records are JSON too (structlog docs,
"Standard Library Logging").

Every line carries the Temporal context known where it was logged, as top-level fields:
``workflow_id``, ``run_id``, ``workflow_type``, ``root_workflow_id`` (the top-level run; the
same as ``workflow_id`` except in child workflows), ``task_queue``, ``namespace`` and
``attempt`` (the workflow task's attempt on workflow lines, the activity's on activity
lines), plus ``activity_id``, ``activity_type`` and ``agent`` in activities. Workflow lines
come from ``workflow.logger`` (replay-safe: silent while replaying); activity lines from
``activity.logger`` and from anything logged while
:class:`chorus.observability.log_context.LogContextInterceptor`
has an activity's context bound. All lines of one run, children included::

    jq -c 'select(.root_workflow_id == "ID" or .workflow_id == "ID")' worker.log

Before a line is written, secrets are replaced by ``[SECRET]`` (:class:`SecretScrubber`) and
PII (e-mail addresses, phone numbers, SSNs, card numbers, IP addresses) is redacted
(:func:`scrub_pii`), in every string anywhere in the line, exception text included.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import urlsplit

import structlog
from structlog.types import EventDict, WrappedLogger
from temporalio import activity, workflow
from temporalio.runtime import LogForwardingConfig, LoggingConfig, TelemetryFilter

from chorus.governance.pii import scrub_for_logs

if TYPE_CHECKING:
    from chorus.config.settings import Settings

_NOT_SCRUBBED = frozenset({"timestamp", "level", "logger"})

SECRET_ENV_VARS = (
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "CHORUS_CALLBACK_SECRET",
    "CHORUS_CODEC_KEYS",
    "CHORUS_CODEC_SERVER_TOKEN",
    "CHORUS_LOCAL_API_KEY",
    "DATABASE_URL",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
)
"""Environment variables whose values (or the secret parts of them) are never logged."""

MIN_SECRET_CHARS = 6
"""Shorter values are not treated as secrets: replacing every ``abc`` would garble lines."""

_NOT_SECRETS = frozenset({"not-needed"})  # the default CHORUS_LOCAL_API_KEY

# ``scheme://user:password@host`` (any scheme: PostgreSQL, Redis, HTTP basic auth).
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^\s:/@]+):[^\s@/]+@")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9\-._~+/]{8,}=*")
# OpenAI (``sk-``, ``sk-proj-``) and Anthropic (``sk-ant-``) API key shapes.
_API_KEY_SHAPE = re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}")


def secret_values(
    env: Mapping[str, str] | None = None, settings: Settings | None = None
) -> set[str]:
    """Collect the secret strings of this process, to redact them from log lines.

    Args:
        env: Environment to read :data:`SECRET_ENV_VARS` from; default ``os.environ``.
        settings: Settings whose ``SecretStr`` fields (callback secret, codec keys, codec
            server token), local API key and database URL password are added.

    Returns:
        Values of at least :data:`MIN_SECRET_CHARS` characters. Composite values contribute
        their parts too: each key of ``CHORUS_CODEC_KEYS`` (``id:base64,...``), the password
        of a database URL, each value of ``OTEL_EXPORTER_OTLP_HEADERS`` (``k=v,...``).

    """
    env = os.environ if env is None else env
    raw = [env.get(name, "") for name in SECRET_ENV_VARS]
    if settings is not None:
        for secret in (settings.callback_secret, settings.codec_keys, settings.codec_server_token):
            if secret is not None:
                raw.append(secret.get_secret_value())
        raw += [settings.local_api_key, settings.database_url or ""]
    found: set[str] = set()
    for value in raw:
        value = value.strip()
        found.add(value)
        for part in re.split(r"[,\s]+", value):
            found.add(part)
            found.add(part.partition(":")[2])  # codec key "<id>:<base64>"
            found.add(part.partition("=")[2])  # OTLP header "<name>=<value>"
        if "://" in value:
            try:
                found.add(urlsplit(value).password or "")
            except ValueError:
                pass
    return {v for v in found if len(v) >= MIN_SECRET_CHARS and v not in _NOT_SECRETS}


class SecretScrubber:
    """Structlog processor: replace secrets in every string of a line.

    Exact occurrences of the values given (longest first) become ``[SECRET]``; independently
    of them, URL passwords (``postgresql://user:***@host``), ``Bearer``/``Basic`` credentials
    and OpenAI/Anthropic API key shapes (``sk-...``) are masked.

    Args:
        secrets: The values to redact, normally :func:`secret_values`; read once.

    """

    def __init__(self, secrets: Iterable[str]) -> None:
        ordered = sorted(set(secrets), key=len, reverse=True)
        self._exact = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def scrub(self, text: str) -> str:
        """Return ``text`` with secrets replaced."""
        if self._exact is not None:
            text = self._exact.sub("[SECRET]", text)
        text = _URL_PASSWORD.sub(r"\1:***@", text)
        text = _BEARER.sub(r"\1 [SECRET]", text)
        return _API_KEY_SHAPE.sub("[SECRET]", text)

    def __call__(self, _logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
        """Scrub every field of ``event`` but timestamp, level and logger name."""
        return _scrub_fields(event, self.scrub)


def scrub_pii(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """Structlog processor: redact PII (``chorus/governance/pii.py``) in every string of a line."""
    return _scrub_fields(event, scrub_for_logs)


def _scrub_fields(event: EventDict, scrub: Callable[[str], str]) -> EventDict:
    for key, value in event.items():
        if key not in _NOT_SCRUBBED:
            event[key] = _scrub_value(value, scrub)
    return event


def _scrub_value(value: Any, scrub: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {str(k): _scrub_value(v, scrub) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub_value(v, scrub) for v in value]
    return scrub(repr(value))  # what JSONRenderer would print for it, scrubbed


_ACTIVITY_FIELDS = {
    "workflow_id": "workflow_id",
    "workflow_run_id": "run_id",
    "workflow_type": "workflow_type",
    "activity_id": "activity_id",
    "activity_type": "activity_type",
    "attempt": "attempt",
    "task_queue": "task_queue",
    "namespace": "namespace",
}
_WORKFLOW_FIELDS = (
    "workflow_id",
    "run_id",
    "workflow_type",
    "attempt",
    "task_queue",
    "namespace",
    "update_id",
    "update_name",
)


def add_temporal_context(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """Structlog processor: lift temporalio's logger context to top-level fields.

    Reads (and removes) the ``temporal_activity`` / ``temporal_workflow`` dicts and the full
    ``workflow_info`` that temporalio's logger adapters put on their records' ``extra``, and
    sets ``workflow_id``, ``run_id``, ``workflow_type``, ``activity_id``, ``activity_type``,
    ``attempt``, ``task_queue``, ``namespace``, ``root_workflow_id`` and
    ``parent_workflow_id`` from them. Fields already set (context variables bound by
    :class:`chorus.observability.log_context.LogContextInterceptor`) are kept.
    """
    details = event.pop("temporal_activity", None)
    if isinstance(details, Mapping):
        for source, target in _ACTIVITY_FIELDS.items():
            if details.get(source) is not None:
                event.setdefault(target, details[source])
    details = event.pop("temporal_workflow", None)
    if isinstance(details, Mapping):
        for name in _WORKFLOW_FIELDS:
            if details.get(name) is not None:
                event.setdefault(name, details[name])
    info = event.pop("workflow_info", None)
    if isinstance(info, workflow.Info):
        event.setdefault(
            "root_workflow_id", info.root.workflow_id if info.root else info.workflow_id
        )
        if info.parent is not None:
            event.setdefault("parent_workflow_id", info.parent.workflow_id)
    event.pop("activity_info", None)  # full activity info, should anyone turn it on
    event.pop("temporal_log", None)  # SDK core record; its fields are already on the message
    return event


def core_logging_config(level: str = "WARN") -> LoggingConfig:
    """Return a ``temporalio.runtime`` logging config forwarding the SDK core's logs to Python.

    By default the Rust core of the SDK writes its own (non-JSON) lines to the console; a
    ``Runtime(telemetry=TelemetryConfig(logging=core_logging_config(), ...))`` sends them to
    the ``temporalio.core`` logger instead, so they go through :func:`configure_logging`.

    Args:
        level: Core log level (``ERROR``, ``WARN``, ``INFO``...); other crates log errors only.

    """
    return LoggingConfig(
        filter=TelemetryFilter(core_level=level.upper(), other_level="ERROR"),
        forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core")),
    )


def configure_logging(
    level: str = "INFO", *, stream: TextIO | None = None, settings: Settings | None = None
) -> None:
    """Send all log records, as JSON lines, to ``stream`` (default stderr).

    Replaces the root logger's handlers and structlog's configuration, process-wide.

    Args:
        level: Minimum level name (``DEBUG``, ``INFO``, ``WARNING``...).
        stream: A text stream; default ``sys.stderr``.
        settings: Settings whose secrets are redacted (with those of the environment, read
            now); default :func:`chorus.config.settings.get_settings` when it can be read.

    """
    if settings is None:
        try:
            from chorus.config.settings import get_settings

            settings = get_settings()
        except Exception:  # invalid settings are reported by whoever reads them next
            settings = None
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
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder(), add_temporal_context],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            # After exceptions are rendered, so their text is scrubbed too; secrets before
            # PII, so a secret that looks partly like a phone number is still matched whole.
            SecretScrubber(secret_values(settings=settings)),
            scrub_pii,
            structlog.processors.JSONRenderer(),
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "httpx2", "openai", "anthropic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # temporalio's logger adapters append their context dict to the message by default; keep
    # it as structured fields instead (``add_temporal_context`` flattens them). The full
    # workflow info is what tells a child workflow's root run.
    activity.logger.activity_info_on_message = False
    workflow.logger.workflow_info_on_message = False
    workflow.logger.full_workflow_info_on_extra = True
