"""The provider registry: validation errors name the provider and field; built-ins unchanged;
limits, prices and the wire type follow the registry."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from chorus.config.providers import (
    AZURE_DEFAULT_API_VERSION,
    GEMINI_OPENAI_BASE_URL,
    ProviderRegistryError,
    load_registry,
)
from chorus.config.settings import Settings
from chorus.contracts.models import (
    AgentSpec,
    LLMRequest,
    LLMResponse,
    ProviderLimit,
    ProviderModel,
)
from chorus.governance import pricing


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "providers.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _settings(tmp_path: Path, text: str, **extra: object) -> Settings:
    return Settings(providers_file=_write(tmp_path, text), **extra)  # type: ignore[arg-type]


def _refused(tmp_path: Path, text: str) -> str:
    with pytest.raises(ProviderRegistryError) as caught:
        _settings(tmp_path, text)
    return str(caught.value)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            "azure-prod: {kind: azure-openai, api_key_env: AZURE_KEY}",
            "providers.azure-prod.endpoint: required for kind azure-openai",
        ),
        (
            "azure-prod: {kind: azure-openai, endpoint: 'https://x.openai.azure.com'}",
            "providers.azure-prod.api_key_env: required for kind azure-openai",
        ),
        (
            "vllm: {kind: openai-compatible}",
            "providers.vllm.endpoint: required for kind openai-compatible",
        ),
        ("vllm: {kind: grpc, endpoint: 'http://h/v1'}", "providers.vllm.kind: Input should be"),
        (
            "vllm: {kind: openai-compatible, endpoint: 'http://h/v1', api_kye_env: K}",
            "providers.vllm.api_kye_env: unknown field",
        ),
        (
            "vllm: {kind: openai-compatible, endpoint: 'ftp://h'}",
            "providers.vllm.endpoint: must be an http(s) URL",
        ),
        (
            "groq: {kind: openai-compatible, endpoint: 'http://h/v1', api_key_env: groq-key}",
            "providers.groq.api_key_env: must be an environment variable name",
        ),
        (
            "br: {kind: bedrock, api_key_env: AWS_SECRET_ACCESS_KEY}",
            "providers.br.api_key_env: kind bedrock takes the standard AWS credential chain",
        ),
        ("br: {kind: bedrock, region: Mars}", "providers.br.region: String should match"),
        (
            "vllm: {kind: openai-compatible, endpoint: 'http://h/v1', api_version: '1'}",
            "providers.vllm.api_version: only for kind azure-openai",
        ),
        (
            "vllm: {kind: openai-compatible, endpoint: 'http://h/v1', limits: {rpm: -1}}",
            "providers.vllm.limits.rpm: Input should be greater than or equal to 0",
        ),
        (
            "vllm: {kind: openai-compatible, endpoint: 'http://h/v1', prices: {m: {input: 1}}}",
            "providers.vllm.prices.m.output: Field required",
        ),
        ("Bad_Name: {kind: gemini}", "providers.Bad_Name: the name must match"),
        ("openai: {kind: openai}", "providers.openai: openai is built in and cannot be redefined"),
    ],
)
def test_validation_errors_name_the_provider_and_the_field(
    tmp_path: Path, entry: str, expected: str
) -> None:
    message = _refused(tmp_path, f"providers:\n  {entry}\n")
    assert f"CHORUS_PROVIDERS_FILE {tmp_path / 'providers.yaml'}: " in message
    assert expected in message


def test_a_key_in_place_of_its_variable_name_is_refused_without_echoing_it(
    tmp_path: Path,
) -> None:
    key = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"
    message = _refused(
        tmp_path,
        f"providers:\n  groq: {{kind: openai-compatible, endpoint: 'http://h/v1', "
        f"api_key_env: {key}}}\n",
    )
    assert "providers.groq.api_key_env: looks like a key itself" in message
    assert "registry file must hold no secret" in message


def test_unknown_top_level_key_and_bad_yaml(tmp_path: Path) -> None:
    assert "provider: unknown field" in _refused(tmp_path, "provider: {}\n")
    assert "cannot read it as YAML" in _refused(tmp_path, "providers: [unclosed\n")
    missing = Settings
    with pytest.raises(ProviderRegistryError, match="cannot read it"):
        missing(providers_file=tmp_path / "absent.yaml")


def test_defaults_per_kind_and_describe_shows_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_KEY", "azure-secret-value-123")
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    settings = _settings(
        tmp_path,
        """
providers:
  azure-prod:
    kind: azure-openai
    endpoint: https://x.openai.azure.com
    api_key_env: AZURE_KEY
    models: {gpt4o: my-deployment}
    limits: {concurrency: 4, rpm: 120, tpm: 90000}
    prices: {gpt4o: {input: 2.5, output: 10}}
  gemini:
    kind: gemini
  azure-entra:
    kind: azure-openai
    endpoint: https://y.openai.azure.com
    auth: entra-id
  bedrock:
    kind: bedrock
    region: eu-west-1
""",
    )
    registry = load_registry(settings)
    assert list(registry) == [
        "openai",
        "anthropic",
        "local",
        "azure-prod",
        "gemini",
        "azure-entra",
        "bedrock",
    ]
    azure = registry["azure-prod"]
    assert azure.api_version == AZURE_DEFAULT_API_VERSION
    assert azure.max_tokens_param == "max_completion_tokens"
    assert azure.model_id("gpt4o") == "my-deployment" and azure.model_id("other") == "other"
    shown = azure.describe()
    assert "azure-secret-value-123" not in repr(shown)
    assert shown["credential"] == "AZURE_KEY" and shown["credential_set"] is True
    assert shown["configured"] is True
    assert shown["limits"] == {"concurrency": 4, "rpm": 120.0, "burst": 120, "tpm": 90000.0}
    assert shown["prices"] == {"gpt4o": {"input": 2.5, "output": 10.0}}
    gemini = registry["gemini"].describe()
    assert gemini["endpoint"] == GEMINI_OPENAI_BASE_URL
    assert (gemini["credential"], gemini["credential_set"]) == ("GEMINI_API_KEY", False)
    assert (gemini["configured"], gemini["reason"]) == (False, "GEMINI_API_KEY is not set")
    entra = registry["azure-entra"].describe()
    assert entra["credential"] == "Entra ID (DefaultAzureCredential)"
    assert entra["credential_set"] is None and entra["configured"] is True
    bedrock = registry["bedrock"].describe()
    assert bedrock["endpoint"] == "https://bedrock-runtime.eu-west-1.amazonaws.com"
    assert bedrock["credential"] == "AWS credential chain"
    # The registry's limits join the fleet-wide limits (and so the per-provider task queues).
    assert settings.provider_limits["azure-prod"] == ProviderLimit(
        concurrency=4, rpm=120, tpm=90000
    )
    assert settings.provider_limits["gemini"] == ProviderLimit()
    assert settings.provider_configured("gemini") == (False, "GEMINI_API_KEY is not set")
    assert settings.provider_configured("azure-prod") == (True, "")
    ok, reason = settings.provider_configured("nowhere")
    assert not ok and "unknown provider 'nowhere'" in reason


def test_builtins_are_unchanged_without_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    settings = Settings(local_base_url="http://127.0.0.1:8765/v1")
    registry = load_registry(settings)
    assert list(registry) == ["openai", "anthropic", "local"]
    assert all(e.builtin for e in registry.values())
    assert registry["openai"].limits == ProviderLimit(concurrency=16, rpm=500)
    assert registry["local"].describe()["endpoint"] == "http://127.0.0.1:8765/v1"
    assert set(settings.provider_limits) == {"openai", "anthropic", "local"}
    ok, reason = settings.provider_configured("azure-prod")
    assert not ok and "CHORUS_PROVIDERS_FILE is not set" in reason


def test_provider_names_on_the_wire() -> None:
    # Payloads written when ProviderName was Literal["openai", "anthropic", "local"] decode.
    old = {"provider": "anthropic", "model": "claude", "output": "x"}
    assert LLMResponse.model_validate(old).provider == "anthropic"
    assert str(ProviderModel.parse("azure-prod:gpt4o")) == "azure-prod:gpt4o"
    spec = AgentSpec.model_validate(
        {"name": "a", "instructions": "i", "providers": ["bedrock:claude", "local:smollm2"]}
    )
    assert [p.provider for p in spec.providers] == ["bedrock", "local"]
    with pytest.raises(ValueError, match="is not a provider name"):
        ProviderModel.parse("Azure_Prod:gpt4o")
    with pytest.raises(ValidationError):
        LLMRequest(agent="a", provider="bad:name", model="m", instructions="i", task="t")


def test_prices_come_from_the_entry_then_the_kind_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(
        tmp_path,
        """
providers:
  azure-prod:
    kind: azure-openai
    endpoint: https://x.openai.azure.com
    api_key_env: AZURE_KEY
    models: {gpt4o: my-deployment, gpt-4o-mini: mini-deployment}
    prices: {gpt4o: {input: 2.5, output: 10, cached_input: 1.25}}
    context_tokens: 128000
  vllm:
    kind: openai-compatible
    endpoint: http://127.0.0.1:8000/v1
    prices: {"*": {input: 0, output: 0}}
  groq:
    kind: openai-compatible
    endpoint: https://api.groq.com/openai/v1
  bedrock:
    kind: bedrock
    region: us-east-1
    models: {haiku: anthropic.claude-3-5-haiku-20241022-v1:0}
""",
    )
    monkeypatch.setenv("CHORUS_PROVIDERS_FILE", str(path))
    monkeypatch.delenv("CHORUS_PRICES_FILE", raising=False)
    # The entry's own price, by alias and by the dated name the provider reports.
    assert pricing.cost_usd("azure-prod", "gpt4o", 1_000_000, 1_000_000) == (12.5, True)
    assert pricing.cost_usd("azure-prod", "gpt4o-2024-08-06", 1_000_000, 0) == (2.5, True)
    cached = pricing.cost_usd("azure-prod", "gpt4o", 1_000_000, 0, cached_input_tokens=500_000)
    assert cached[1] and cached[0] == pytest.approx(1.875)
    # No entry price: the price library under the kind's provider (Azure, AWS).
    # An alias named after the model prices its deployment (the name says nothing).
    azure_mini, known = pricing.cost_usd("azure-prod", "gpt-4o-mini", 1_000_000, 0)
    assert known and azure_mini > 0
    assert not pricing.is_priced("azure-prod", "my-own-deployment")
    haiku, known = pricing.cost_usd("bedrock", "haiku", 1_000_000, 1_000_000)
    assert known and haiku == pytest.approx(4.8)
    assert pricing.cost_usd("vllm", "qwen2.5-7b", 10_000, 10_000) == (0.0, True)
    # An OpenAI-compatible endpoint without prices is unpriced (refused unless allowed).
    assert pricing.cost_usd("groq", "llama-3.3-70b", 10, 10) == (0.0, False)
    assert not pricing.is_priced("groq", "llama-3.3-70b")
    assert pricing.is_priced("vllm", "anything") and pricing.is_priced("bedrock", "haiku")
    assert pricing.context_window("azure-prod", "gpt4o", 8192) == 128_000
    assert pricing.context_window("bedrock", "haiku", 8192) == 200_000
    # Built-ins are priced as before.
    assert pricing.cost_usd("local", "smollm2", 10, 10) == (0.0, True)
    assert pricing.cost_usd("openai", "gpt-4o-mini", 1_000_000, 0)[1]
