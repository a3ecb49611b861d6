"""The provider registry: named LLM endpoints, their kind, credentials, models, limits, prices.

Agents name ``provider:model``; the provider is an entry of this registry. Three entries are
built in and behave exactly as before the registry existed:

- ``openai`` (kind ``openai``; ``OPENAI_API_KEY``/``OPENAI_BASE_URL``, read by the SDK),
- ``anthropic`` (kind ``anthropic``; ``ANTHROPIC_API_KEY``/``ANTHROPIC_BASE_URL``),
- ``local`` (kind ``openai-compatible``; ``CHORUS_LOCAL_BASE_URL``, the embedded llama.cpp
  server by default).

More entries come from the YAML file named by ``CHORUS_PROVIDERS_FILE`` (unset: built-ins
only)::

    providers:
      azure-prod:
        kind: azure-openai
        endpoint: https://my-resource.openai.azure.com
        api_key_env: AZURE_OPENAI_API_KEY      # or auth: entra-id
        api_version: "2024-10-21"
        models: {gpt4o: my-gpt4o-deployment}   # alias -> deployment
        limits: {concurrency: 8, rpm: 300, tpm: 150000}
        prices: {gpt4o: {input: 2.5, output: 10}}

Why these rules:

- Credentials are named by their **environment variable** (``api_key_env``), never written in
  the file: the file is configuration that gets committed, copied into images and printed by
  ``chorus providers list``. A value that looks like a key instead of a variable name is
  refused. Bedrock takes the standard AWS credential chain (environment, profile, role), Azure
  may use Entra ID (``auth: entra-id``, ``azure-identity``'s ``DefaultAzureCredential``).
- The file is validated strictly (unknown keys are errors) and every error names the provider
  and the field (``providers.azure-prod.endpoint: ...``), so a typo fails the worker at start
  instead of a call at run time.
- Built-in names cannot be redefined: today's catalogs and ``CHORUS_PROVIDER_LIMITS`` keep
  their meaning. Name another entry of the same kind instead (``openai-eu``).
- Provider names match :data:`~chorus.contracts.models.PROVIDER_NAME_PATTERN` (no ``:``, which
  separates provider and model; used in task-queue names ``<queue>-llm-<provider>``).
"""

from __future__ import annotations

import importlib.util
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from chorus.contracts.errors import ChorusError
from chorus.contracts.models import (
    DEFAULT_PROVIDER_LIMITS,
    PROVIDER_NAME_PATTERN,
    PROVIDERS,
    ProviderLimit,
)

if TYPE_CHECKING:
    from chorus.config.settings import Settings

ProviderKind = Literal[
    "openai", "openai-compatible", "anthropic", "azure-openai", "bedrock", "gemini"
]
KINDS: tuple[ProviderKind, ...] = get_args(ProviderKind)

ENV_NAME_PATTERN = r"^[A-Z_][A-Z0-9_]{0,127}$"
"""An environment variable name as ``api_key_env`` takes it (POSIX portable, upper case)."""

GEMINI_OPENAI_BASE_URL = "https://generativelanguage.googleapis.com/v1beta/openai/"
"""Gemini's OpenAI-compatible endpoint (ai.google.dev, "OpenAI compatibility", 2026)."""
AZURE_DEFAULT_API_VERSION = "2024-10-21"
"""Latest generally available Azure OpenAI data-plane API version (learn.microsoft.com, "Azure
OpenAI in Azure AI Foundry Models REST API reference", 2026)."""
AZURE_ENTRA_SCOPE = "https://cognitiveservices.azure.com/.default"
"""The token scope of Azure OpenAI for Entra ID (Microsoft's "How to configure Azure OpenAI
with Microsoft Entra ID authentication")."""

_DEFAULT_KEY_ENV: dict[str, str] = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "gemini": "GEMINI_API_KEY",
}
_KEY_LOOKALIKE = re.compile(r"^(sk-|sk_|AIza|AKIA|ghp_|xox)|[a-z].*[0-9]|[0-9].*[a-z]")


class ProviderRegistryError(ChorusError, RuntimeError):
    """The provider registry file cannot be used; the message names the provider and field.

    Not a ``ValueError``: raised while settings are validated, pydantic would otherwise wrap
    it and quote every setting.
    """


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelPrice(_Strict):
    """Price of one model, USD per 1,000,000 tokens (the provider's published price list).

    Attributes:
        input: Input (prompt) tokens.
        output: Output (completion) tokens, reasoning included.
        cached_input: Input tokens read from the provider's prompt cache (default: ``input``).
    """

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(None, ge=0)


class ProviderEntry(_Strict):
    """One named provider of the registry.

    Attributes:
        name: The name agents use (``<name>:<model>``); set from the file's key.
        kind: Wire protocol: ``openai``, ``openai-compatible`` (vLLM, Ollama, llama.cpp, Groq,
            Together, Mistral...), ``anthropic``, ``azure-openai``, ``bedrock`` (the Converse
            API) or ``gemini`` (its OpenAI-compatible endpoint).
        endpoint: Base URL. ``openai-compatible``: required (``http://host:8000/v1``);
            ``azure-openai``: the resource endpoint (``https://<resource>.openai.azure.com``),
            required; ``gemini``: defaults to :data:`GEMINI_OPENAI_BASE_URL`; ``bedrock``: an
            ``endpoint_url`` override (default: the region's ``bedrock-runtime`` endpoint);
            ``openai``/``anthropic``: the SDK's default.
        api_key_env: Name of the environment variable holding the API key (never the key).
            Defaults: ``gemini`` ``GEMINI_API_KEY``, ``openai`` ``OPENAI_API_KEY``,
            ``anthropic`` ``ANTHROPIC_API_KEY``; ``openai-compatible`` without one sends a
            placeholder key (local servers ignore it); ``bedrock`` takes none (AWS chain).
        auth: ``azure-openai`` only: ``api-key`` (header ``api-key``) or ``entra-id``
            (bearer tokens from ``DefaultAzureCredential``, refreshed before they expire).
        api_version: ``azure-openai`` only: the ``api-version`` query parameter.
        region: ``bedrock`` only: AWS region (default ``AWS_REGION``/``AWS_DEFAULT_REGION``).
        aws_profile: ``bedrock`` only: a named profile of the AWS config files.
        models: Model aliases, alias -> the provider's own id (Azure: the deployment name;
            Bedrock: the model or inference-profile id). A model not listed is sent as named.
        max_tokens_param: How the completion limit is sent to OpenAI-style APIs:
            ``max_tokens`` (default for ``openai-compatible`` and ``gemini``) or
            ``max_completion_tokens`` (default for ``openai`` and ``azure-openai``; o-series
            models refuse ``max_tokens``).
        context_tokens: Context window of this provider's models, in tokens (default: the
            price library's figure, else 32,000).
        limits: Fleet-wide concurrency, requests per minute (with burst) and tokens per
            minute (input + output) of this provider (default: unlimited).
        prices: USD per 1M tokens per model (alias or provider id); the key ``"*"`` prices
            every model of the entry (``{input: 0, output: 0}`` for a self-hosted server).
            Models without a price here are looked up in ``genai-prices`` (``azure-openai``
            as ``azure``, ``gemini`` as ``google``, ``bedrock`` as ``aws``, ``openai`` and
            ``anthropic`` as themselves).
    """

    name: str = Field(pattern=PROVIDER_NAME_PATTERN)
    kind: ProviderKind
    endpoint: str | None = Field(None, max_length=2000)
    api_key_env: str | None = None
    auth: Literal["api-key", "entra-id"] = "api-key"
    api_version: str | None = Field(None, max_length=40)
    region: str | None = Field(None, pattern=r"^[a-z]{2}(-[a-z]+)+-[0-9]+$")
    aws_profile: str | None = Field(None, max_length=200)
    models: dict[str, str] = Field(default_factory=dict)
    max_tokens_param: Literal["max_tokens", "max_completion_tokens"] | None = None
    context_tokens: int | None = Field(None, ge=512)
    limits: ProviderLimit = Field(default_factory=ProviderLimit)
    prices: dict[str, ModelPrice] = Field(default_factory=dict)

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.fullmatch(ENV_NAME_PATTERN, value):
            if _KEY_LOOKALIKE.search(value) and len(value) >= 16:
                raise ValueError(
                    "looks like a key itself: name the environment variable that holds it "
                    "(e.g. AZURE_OPENAI_API_KEY); the registry file must hold no secret"
                )
            raise ValueError(
                f"must be an environment variable name matching {ENV_NAME_PATTERN} "
                "(e.g. AZURE_OPENAI_API_KEY)"
            )
        return value

    @field_validator("endpoint")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"must be an http(s) URL, got {value!r}")
        return value

    @field_validator("models")
    @classmethod
    def _aliases(cls, value: dict[str, str]) -> dict[str, str]:
        for alias, target in value.items():
            if not alias or len(alias) > 200 or not target or len(target) > 200:
                raise ValueError(f"{alias!r}: alias and model id must be 1-200 characters")
        return value

    @model_validator(mode="after")
    def _per_kind(self) -> Self:
        """Check and fill the fields each kind needs (errors name the field)."""
        updates: dict[str, Any] = {}
        kind = self.kind
        if kind != "azure-openai":
            for name in ("api_version",):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name}: only for kind azure-openai")
            if self.auth != "api-key":
                raise ValueError("auth: entra-id is only for kind azure-openai")
        if kind != "bedrock":
            for name in ("region", "aws_profile"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name}: only for kind bedrock")
        if kind == "openai-compatible" and self.endpoint is None:
            raise ValueError("endpoint: required for kind openai-compatible (e.g. http://host/v1)")
        if kind == "azure-openai":
            if self.endpoint is None:
                raise ValueError(
                    "endpoint: required for kind azure-openai (https://<resource>.openai.azure.com)"
                )
            if self.auth == "api-key" and self.api_key_env is None:
                raise ValueError(
                    "api_key_env: required for kind azure-openai with auth api-key "
                    "(or set auth: entra-id)"
                )
            if self.auth == "entra-id" and self.api_key_env is not None:
                raise ValueError("api_key_env: not used with auth entra-id")
            if self.api_version is None:
                updates["api_version"] = AZURE_DEFAULT_API_VERSION
        if kind == "bedrock" and self.api_key_env is not None:
            raise ValueError(
                "api_key_env: kind bedrock takes the standard AWS credential chain "
                "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or a role), not a key"
            )
        if kind == "gemini" and self.endpoint is None:
            updates["endpoint"] = GEMINI_OPENAI_BASE_URL
        if self.api_key_env is None and kind in _DEFAULT_KEY_ENV:
            updates["api_key_env"] = _DEFAULT_KEY_ENV[kind]
        if self.max_tokens_param is None and kind in ("openai-compatible", "gemini"):
            updates["max_tokens_param"] = "max_tokens"
        elif self.max_tokens_param is None and kind in ("openai", "azure-openai"):
            updates["max_tokens_param"] = "max_completion_tokens"
        for name, value in updates.items():
            object.__setattr__(self, name, value)  # frozen model: fill defaults once
        return self

    @property
    def builtin(self) -> bool:
        """Whether this is one of the built-in ``openai``, ``anthropic``, ``local``."""
        return self.name in PROVIDERS

    def model_id(self, model: str) -> str:
        """The provider's own id of ``model`` (an alias resolved; anything else unchanged)."""
        return self.models.get(model, model)

    def price(self, model: str) -> ModelPrice | None:
        """This entry's price of ``model``: by the name given, its provider id, then ``"*"``.

        A dated snapshot name the provider reports (``gpt-4o-2024-08-06``) matches the entry
        priced under its prefix (``gpt-4o``).
        """
        for name in (model, self.model_id(model)):
            if name in self.prices:
                return self.prices[name]
        prefixed = [p for p in self.prices if p != "*" and model.startswith(p + "-")]
        if prefixed:
            return self.prices[max(prefixed, key=len)]
        return self.prices.get("*")

    def credential(self) -> str:
        """How this entry authenticates, for people: the variable's name, never its value."""
        if self.kind == "bedrock":
            profile = f" (profile {self.aws_profile})" if self.aws_profile else ""
            return f"AWS credential chain{profile}"
        if self.auth == "entra-id":
            return "Entra ID (DefaultAzureCredential)"
        if self.api_key_env is None:
            return "none"
        return self.api_key_env

    def configured(self) -> tuple[bool, str]:
        """Whether this process can call the entry: its key variable set, its SDK installed.

        Bedrock credentials are not resolved here (the chain may query an instance metadata
        service): a call without them fails with ``ProviderAuthError`` and falls back.

        Returns:
            ``(configured, reason)``; the reason names what is missing.
        """
        if self.kind == "bedrock":
            if importlib.util.find_spec("boto3") is None:
                return False, "boto3 is not installed (pip install 'chorus[bedrock]')"
            if not self.aws_region():
                return False, "no AWS region (set region, AWS_REGION or AWS_DEFAULT_REGION)"
            return True, ""
        if self.auth == "entra-id":
            if importlib.util.find_spec("azure.identity") is None:
                return False, "azure-identity is not installed (pip install 'chorus[azure]')"
            return True, ""
        if self.api_key_env is not None and not os.environ.get(self.api_key_env):
            return False, f"{self.api_key_env} is not set"
        return True, ""

    def aws_region(self) -> str | None:
        """The Bedrock region: ``region``, else ``AWS_REGION``, else ``AWS_DEFAULT_REGION``."""
        return (
            self.region
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or None
        )

    def describe(self) -> dict[str, Any]:
        """The entry for ``chorus providers list``: no secret, only whether each is set.

        Returns:
            ``{"name", "kind", "builtin", "endpoint", "credential", "credential_set",
            "configured", "reason", "models", "limits", "prices"}``: ``credential`` is the
            environment variable's name (or the auth scheme), ``credential_set`` whether it
            is set (``None`` when not checkable: AWS chain, Entra ID), ``limits`` the
            fleet-wide concurrency, rpm, burst and tpm (0 = unlimited), ``prices`` USD per
            1M tokens by model.
        """
        ok, reason = self.configured()
        credential_set: bool | None = None
        if self.kind != "bedrock" and self.auth == "api-key" and self.api_key_env is not None:
            credential_set = bool(os.environ.get(self.api_key_env))
        endpoint = self.endpoint
        if self.kind == "bedrock" and endpoint is None:
            region = self.aws_region()
            endpoint = f"https://bedrock-runtime.{region}.amazonaws.com" if region else None
        return {
            "name": self.name,
            "kind": self.kind,
            "builtin": self.builtin,
            "endpoint": endpoint,
            "credential": self.credential(),
            "credential_set": credential_set,
            "configured": ok,
            "reason": reason,
            "models": dict(self.models),
            "limits": {
                "concurrency": self.limits.concurrency,
                "rpm": self.limits.rpm,
                "burst": self.limits.effective_burst,
                "tpm": self.limits.tpm,
            },
            "prices": {m: p.model_dump(exclude_none=True) for m, p in self.prices.items()},
        }


class _RegistryFile(_Strict):
    providers: dict[str, dict[str, Any]] = Field(default_factory=dict)


def builtin_entries(settings: Settings) -> dict[str, ProviderEntry]:
    """The built-in ``openai``, ``anthropic`` and ``local`` entries, as configured today.

    Their limits are the effective ``CHORUS_PROVIDER_LIMITS`` (defaults merged); their
    endpoints are the SDKs' (``OPENAI_BASE_URL``, ``ANTHROPIC_BASE_URL``) and
    ``CHORUS_LOCAL_BASE_URL``.
    """
    limits = settings.provider_limits
    return {
        "openai": ProviderEntry(
            name="openai",
            kind="openai",
            endpoint=os.environ.get("OPENAI_BASE_URL") or None,
            limits=limits.get("openai", DEFAULT_PROVIDER_LIMITS["openai"]),
        ),
        "anthropic": ProviderEntry(
            name="anthropic",
            kind="anthropic",
            endpoint=os.environ.get("ANTHROPIC_BASE_URL") or None,
            limits=limits.get("anthropic", DEFAULT_PROVIDER_LIMITS["anthropic"]),
        ),
        # Constructed without validation: an empty CHORUS_LOCAL_BASE_URL is allowed (the
        # provider is then not configured), which a file entry of this kind may not do.
        "local": ProviderEntry.model_construct(
            name="local",
            kind="openai-compatible",
            endpoint=settings.local_base_url or None,
            api_key_env=None,
            auth="api-key",
            api_version=None,
            region=None,
            aws_profile=None,
            models={},
            max_tokens_param="max_tokens",
            context_tokens=settings.local_context_tokens,
            limits=limits.get("local", DEFAULT_PROVIDER_LIMITS["local"]),
            prices={"*": ModelPrice(input=0.0, output=0.0)},
        ),
    }


def load_registry(settings: Settings) -> dict[str, ProviderEntry]:
    """All providers this process knows: the built-ins, then ``CHORUS_PROVIDERS_FILE``'s.

    Args:
        settings: ``providers_file`` (the YAML file, or ``None``), the built-ins' settings.

    Returns:
        Provider name -> entry, built-ins first, then the file's entries in file order.

    Raises:
        ProviderRegistryError: The file is unreadable, not YAML, or an entry is invalid; the
            message names the file, the provider and the field.
    """
    entries = builtin_entries(settings)
    if settings.providers_file is not None:
        entries.update(read_registry_file(settings.providers_file))
    return entries


def read_registry_file(path: Path) -> dict[str, ProviderEntry]:
    """The entries of one registry file (cached until the file changes).

    Raises:
        ProviderRegistryError: As :func:`load_registry`.
    """
    try:
        stat = path.stat()
    except OSError as exc:
        raise ProviderRegistryError(
            f"CHORUS_PROVIDERS_FILE {path}: cannot read it ({exc})"
        ) from exc
    return dict(_parse_file(str(path), stat.st_mtime_ns, stat.st_size))


@lru_cache(maxsize=8)
def _parse_file(path: str, _mtime_ns: int, _size: int) -> tuple[tuple[str, ProviderEntry], ...]:
    where = f"CHORUS_PROVIDERS_FILE {path}"
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ProviderRegistryError(f"{where}: cannot read it as YAML ({exc})") from exc
    try:
        document = _RegistryFile.model_validate(data)
    except ValidationError as exc:
        raise ProviderRegistryError(f"{where}: {_problems(exc, ())}") from None
    parsed: list[tuple[str, ProviderEntry]] = []
    for name, raw in document.providers.items():
        prefix = f"{where}: providers.{name}"
        if not re.fullmatch(PROVIDER_NAME_PATTERN, str(name)):
            raise ProviderRegistryError(
                f"{prefix}: the name must match {PROVIDER_NAME_PATTERN} (lower-case letters, "
                "digits and '-', at most 40 characters)"
            )
        if name in PROVIDERS:
            raise ProviderRegistryError(
                f"{prefix}: {name} is built in and cannot be redefined; give your entry "
                f"another name (e.g. {name}-2) or set CHORUS_PROVIDER_LIMITS for its limits"
            )
        if not isinstance(raw, dict):
            raise ProviderRegistryError(f"{prefix}: must be a mapping of fields")
        if "name" in raw:
            raise ProviderRegistryError(f"{prefix}.name: the name is the entry's key")
        try:
            parsed.append((name, ProviderEntry.model_validate({**raw, "name": name})))
        except ValidationError as exc:
            raise ProviderRegistryError(f"{where}: {_problems(exc, ('providers', name))}") from None
    return tuple(parsed)


def _problems(exc: ValidationError, prefix: tuple[str, ...]) -> str:
    """Each pydantic error as ``providers.<name>.<field>: <message>``, joined by ``; ``."""
    lines = []
    for error in exc.errors():
        loc = [*prefix, *(str(p) for p in error["loc"])]
        message = str(error["msg"]).removeprefix("Value error, ")
        if not error["loc"] and (field := re.match(r"^([a-z_]+): ", message)):
            # A check across fields (per kind) names its field first: put it in the path.
            loc.append(field.group(1))
            message = message[field.end() :]
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        lines.append(f"{'.'.join(loc)}: {message}" if loc else message)
    return "; ".join(lines)
