"""The environment variables Chorus reads, rendered as the README's settings table.

``python -m chorus.config.settings_doc`` prints a Markdown table (variable, default, meaning) built
from :class:`chorus.config.settings.Settings` — each field's environment name, its default and its
attribute docstring — followed by the variables read outside ``Settings``
(:data:`EXTERNAL_VARIABLES`). ``tests/system/test_deploy.py`` uses :func:`environment_names` to
check that the deployment files set only variables Chorus reads and that the README lists them
all.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import AliasChoices
from pydantic.fields import FieldInfo

from chorus.config.settings import Settings


@dataclass(frozen=True)
class Variable:
    """One environment variable: its name, its default as shown to users and its meaning."""

    name: str
    default: str
    meaning: str


EXTERNAL_VARIABLES: tuple[Variable, ...] = (
    Variable(
        "CHORUS_PRICES_FILE",
        "unset",
        "YAML price table overrides (`chorus/governance/pricing.py`).",
    ),
    Variable(
        "CHORUS_BLOCKED_TERMS",
        "unset",
        "Comma-separated regexes the default content check refuses"
        " (`chorus/governance/content_check.py`).",
    ),
    Variable(
        "OPENAI_API_KEY", "unset", "Read by the OpenAI SDK; a key enables the `openai` provider."
    ),
    Variable("OPENAI_BASE_URL", "unset", "Read by the OpenAI SDK: another OpenAI-compatible API."),
    Variable(
        "ANTHROPIC_API_KEY",
        "unset",
        "Read by the Anthropic SDK; a key enables the `anthropic` provider.",
    ),
    Variable("ANTHROPIC_BASE_URL", "unset", "Read by the Anthropic SDK: another endpoint."),
    Variable(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "unset",
        "Turns on OpenTelemetry tracing over OTLP/HTTP (needs the `otel` extra); "
        "`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` does too.",
    ),
    Variable(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "unset", "Traces-only OTLP endpoint (same effect)."
    ),
    Variable("OTEL_SERVICE_NAME", "`chorus`", "Service name on exported spans."),
    Variable("OTEL_SDK_DISABLED", "`false`", "`true` turns tracing off even with an endpoint."),
    *(
        Variable(
            name,
            "unset",
            f'{meaning} (`temporalio.envconfig`; README "Secure Temporal connections").',
        )
        for name, meaning in (
            ("TEMPORAL_API_KEY", "Temporal API key, sent as `authorization: Bearer`; turns TLS on"),
            ("TEMPORAL_TLS", "`true`/`false`: TLS to Temporal on or off explicitly"),
            ("TEMPORAL_TLS_SERVER_CA_CERT_PATH", "CA of the Temporal server's certificate, PEM"),
            ("TEMPORAL_TLS_SERVER_CA_CERT_DATA", "The same CA as PEM text"),
            ("TEMPORAL_TLS_CLIENT_CERT_PATH", "Client certificate for mTLS, PEM"),
            ("TEMPORAL_TLS_CLIENT_CERT_DATA", "The same certificate as PEM text"),
            ("TEMPORAL_TLS_CLIENT_KEY_PATH", "Unencrypted key of the client certificate, PEM"),
            ("TEMPORAL_TLS_CLIENT_KEY_DATA", "The same key as PEM text"),
            ("TEMPORAL_TLS_SERVER_NAME", "Name the server certificate is verified against (SNI)"),
            ("TEMPORAL_GRPC_META_<NAME>", "gRPC header `<name>` on every Temporal call"),
        )
    ),
)
"""Variables read outside :class:`Settings`: by provider SDKs, OpenTelemetry, Temporal's client
configuration (:mod:`chorus.config.temporal_profile`) or one module."""

EXTERNAL_PREFIXES = ("OPENAI_", "ANTHROPIC_", "OTEL_", "TEMPORAL_GRPC_META_")
"""Prefixes of variables that provider SDKs, OpenTelemetry and Temporal's client configuration
read themselves (any of them)."""

_UNDOCUMENTED = {
    "task_queue": "Task queue of workflows and activities; LLM calls use "
    "`<task queue>-llm-<provider>`.",
    "local_api_key": "API key sent to the `local` provider's server.",
    "local_threads": "CPU threads of the embedded model server.",
    "temporal_port": "Port of the embedded Temporal (`chorus dev up`).",
    "temporal_ui_port": "Port of the embedded Temporal UI (`chorus dev up`).",
    "max_task_chars": "Longest task accepted, in characters.",
    "log_level": "Log level of JSON log lines on stderr.",
}
"""Meanings of fields that have no attribute docstring in ``chorus/config/settings.py``."""


def env_name(field_name: str, field: FieldInfo) -> str:
    """Return the environment variable a ``Settings`` field reads.

    Args:
        field_name: Attribute name, e.g. ``"metrics_port"``.
        field: Its pydantic field.

    Returns:
        The alias when one is set (``TEMPORAL_ADDRESS``), else ``CHORUS_<FIELD>``.

    """
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        first = alias.choices[0]
        if isinstance(first, str):
            return first
    if isinstance(alias, str):
        return alias
    prefix = str(Settings.model_config.get("env_prefix", ""))
    return f"{prefix}{field_name}".upper()


def field_docstrings() -> dict[str, str]:
    """Return each ``Settings`` field's attribute docstring, one line, by field name."""
    tree = ast.parse(inspect.getsource(Settings))
    body = tree.body[0].body if isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for node, following in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            text = following.value.value.replace("``", "`")
            docs[node.target.id] = " ".join(text.split())
    return docs


def _show_default(field: FieldInfo) -> str:
    value: Any = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, Path):
        try:
            value = value.relative_to(Path(__file__).resolve().parents[2])
        except ValueError:
            pass
        return f"`{value.as_posix()}`"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, dict):
        text = json.dumps(
            {k: v.model_dump() if hasattr(v, "model_dump") else v for k, v in value.items()},
            separators=(",", ":"),
        )
        return f"`{text}`"
    return f"`{value}`"


def settings_variables() -> list[Variable]:
    """Return one :class:`Variable` per ``Settings`` field, in declaration order."""
    docs = field_docstrings()
    return [
        Variable(
            env_name(name, field),
            _show_default(field),
            docs.get(name) or _UNDOCUMENTED.get(name, ""),
        )
        for name, field in Settings.model_fields.items()
    ]


def all_variables() -> list[Variable]:
    """Return every variable Chorus reads: ``Settings`` fields, then external ones."""
    return [*settings_variables(), *EXTERNAL_VARIABLES]


def environment_names() -> set[str]:
    """Return the names of every variable in :func:`all_variables`."""
    return {v.name for v in all_variables()}


def is_read_by_chorus(name: str) -> bool:
    """Say whether Chorus (or an SDK it drives) reads the environment variable ``name``."""
    return name in environment_names() or name.startswith(EXTERNAL_PREFIXES)


def render_table(variables: list[Variable] | None = None) -> str:
    """Render variables as a Markdown table with ``variable | default | meaning`` columns.

    Args:
        variables: What to render; default :func:`all_variables`.

    Returns:
        The table, one row per variable, ending with a newline. ``|`` in cells is escaped.

    """
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for v in all_variables() if variables is None else variables:
        cells = (f"`{v.name}`", v.default, v.meaning)
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(render_table(), end="")
