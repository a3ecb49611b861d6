"""Each registry provider kind against a loopback stub of its wire format.

Per kind: a success (request shape on the wire), throttling with its retry hint
(``RateLimited``, retryable, ``next_retry_delay``), and an authentication failure
(``ProviderAuthError``, non-retryable: the workflow falls back to the chain's next provider;
``tests/providers/test_registry_fallback.py`` runs that fallback in a workflow).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError

from activities.prompts import Prompt
from activities.provider_adapters import ProviderClients, provider_adapter
from chorus.config.settings import Settings
from chorus.contracts import errors
from chorus.contracts.models import LLMRequest
from tests.provider_stubs import ProviderStub, StubReply, bedrock_error

PROMPT = Prompt(system="You are terse.", user="Say hello.", truncated_chars=0)


@pytest.fixture
def stub() -> Iterator[ProviderStub]:
    with ProviderStub(key="stub-key") as server:
        yield server


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDSTUBSTUBSTUB")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "stub-secret")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))


def _settings(tmp_path: Path, registry: str) -> Settings:
    path = tmp_path / "providers.yaml"
    path.write_text(registry, encoding="utf-8")
    return Settings(providers_file=path)


def _request(provider: str, model: str, **extra: Any) -> LLMRequest:
    return LLMRequest(
        task="Say hello.",
        agent="greeter",
        provider=provider,
        model=model,
        instructions="You are terse.",
        max_tokens=64,
        timeout_s=10,
        **extra,
    )


async def _fails(settings: Settings, req: LLMRequest) -> ApplicationError:
    clients = ProviderClients.from_settings(settings)
    try:
        with pytest.raises(ApplicationError) as caught:
            await provider_adapter(req.provider, clients, settings).complete(req, PROMPT)
    finally:
        await clients.close()
    return caught.value


# --- Azure OpenAI ----------------------------------------------------------------------------


def _azure(tmp_path: Path, stub: ProviderStub, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("AZURE_STUB_KEY", "stub-key")
    return _settings(
        tmp_path,
        f"""
providers:
  azure-prod:
    kind: azure-openai
    endpoint: {stub.url}
    api_key_env: AZURE_STUB_KEY
    api_version: "2024-10-21"
    models: {{gpt4o: my-gpt4o-deployment}}
""",
    )


DEPLOYMENT_PATH = "/openai/deployments/my-gpt4o-deployment/chat/completions"


async def test_azure_success_uses_deployment_url_api_version_and_api_key_header(
    tmp_path: Path, stub: ProviderStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _azure(tmp_path, stub, monkeypatch)
    clients = ProviderClients.from_settings(settings)
    req = _request("azure-prod", "gpt4o")
    answer = await provider_adapter("azure-prod", clients, settings).complete(req, PROMPT)
    await clients.close()
    assert answer.text == "hello from the stub"
    assert (answer.input_tokens, answer.output_tokens) == (11, 4)
    [sent] = stub.requests
    assert sent.path == DEPLOYMENT_PATH
    assert sent.query == {"api-version": ["2024-10-21"]}
    assert sent.headers["api-key"] == "stub-key"
    assert "authorization" not in sent.headers
    assert sent.body["max_completion_tokens"] == 64


async def test_azure_streams_text(
    tmp_path: Path, stub: ProviderStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _azure(tmp_path, stub, monkeypatch)
    clients = ProviderClients.from_settings(settings)
    pieces: list[str] = []
    adapter = provider_adapter("azure-prod", clients, settings)
    answer = await adapter.complete(_request("azure-prod", "gpt4o"), PROMPT, pieces.append)
    await clients.close()
    assert pieces == ["hello", " from", " the", " stub"]
    assert answer.text == "hello from the stub" and answer.output_tokens == 4
    assert stub.requests[0].body["stream"] is True


async def test_azure_throttling_is_rate_limited_with_retry_after(
    tmp_path: Path, stub: ProviderStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _azure(tmp_path, stub, monkeypatch)
    stub.script(
        DEPLOYMENT_PATH,
        StubReply(429, {"retry-after": "7"}, {"error": {"code": "429", "message": "slow down"}}),
    )
    error = await _fails(settings, _request("azure-prod", "gpt4o"))
    assert error.type == errors.RATE_LIMITED and not error.non_retryable
    assert error.next_retry_delay == timedelta(seconds=7)
    assert "azure-prod:my-gpt4o-deployment" in error.message


async def test_azure_wrong_key_is_an_auth_error(
    tmp_path: Path, stub: ProviderStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _azure(tmp_path, stub, monkeypatch)
    monkeypatch.setenv("AZURE_STUB_KEY", "wrong-key")
    error = await _fails(settings, _request("azure-prod", "gpt4o"))
    assert error.type == errors.PROVIDER_AUTH and error.non_retryable


async def test_azure_unset_key_is_not_configured(
    tmp_path: Path, stub: ProviderStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _azure(tmp_path, stub, monkeypatch)
    monkeypatch.delenv("AZURE_STUB_KEY")
    error = await _fails(settings, _request("azure-prod", "gpt4o"))
    assert error.type == errors.PROVIDER_NOT_CONFIGURED and error.non_retryable
    assert "AZURE_STUB_KEY is not set" in error.message
    assert stub.requests == []


async def test_azure_entra_id_sends_fresh_bearer_tokens(
    tmp_path: Path, stub: ProviderStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    import azure.identity.aio
    from azure.core.credentials import AccessToken

    from chorus.config.providers import AZURE_ENTRA_SCOPE

    class FakeCredential:
        """Stands in for DefaultAzureCredential: tokens that expire in 60 s (inside the
        5-minute refresh margin of azure-core's bearer policy, so each call gets a new one)."""

        def __init__(self) -> None:
            self.scopes: list[tuple[str, ...]] = []
            self.closed = False

        async def get_token(self, *scopes: str, **_: Any) -> AccessToken:
            self.scopes.append(scopes)
            token = f"entra-token-{len(self.scopes)}"
            stub.bearer_tokens.add(token)
            return AccessToken(token, int(time.time()) + 60)

        async def close(self) -> None:
            self.closed = True

    credentials: list[FakeCredential] = []

    def make() -> FakeCredential:
        credentials.append(FakeCredential())
        return credentials[-1]

    monkeypatch.setattr(azure.identity.aio, "DefaultAzureCredential", make)
    settings = _settings(
        tmp_path,
        f"""
providers:
  azure-entra:
    kind: azure-openai
    endpoint: {stub.url}
    auth: entra-id
    models: {{mini: mini-deployment}}
""",
    )
    clients = ProviderClients.from_settings(settings)
    adapter = provider_adapter("azure-entra", clients, settings)
    for _ in range(2):
        answer = await adapter.complete(_request("azure-entra", "mini"), PROMPT)
        assert answer.text == "hello from the stub"
    await clients.close()
    [credential] = credentials
    assert credential.scopes == [(AZURE_ENTRA_SCOPE,), (AZURE_ENTRA_SCOPE,)]
    assert credential.closed
    sent = [r.headers["authorization"] for r in stub.requests]
    assert sent == ["Bearer entra-token-1", "Bearer entra-token-2"]
    assert all("api-key" not in r.headers for r in stub.requests)
    assert {r.path for r in stub.requests} == {
        "/openai/deployments/mini-deployment/chat/completions"
    }


# --- Gemini (OpenAI-compatible endpoint) and openai-compatible ------------------------------


def _gemini(tmp_path: Path, stub: ProviderStub, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("GEMINI_API_KEY", "stub-key")
    return _settings(
        tmp_path,
        f"""
providers:
  gemini:
    kind: gemini
    endpoint: {stub.url}/v1beta/openai/
  vllm:
    kind: openai-compatible
    endpoint: {stub.url}/v1
    api_key_env: GEMINI_API_KEY
""",
    )


async def test_gemini_success_bearer_key_and_max_tokens(
    tmp_path: Path, stub: ProviderStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _gemini(tmp_path, stub, monkeypatch)
    clients = ProviderClients.from_settings(settings)
    adapter = provider_adapter("gemini", clients, settings)
    answer = await adapter.complete(_request("gemini", "gemini-2.5-flash"), PROMPT)
    pieces: list[str] = []
    streamed = await provider_adapter("vllm", clients, settings).complete(
        _request("vllm", "qwen"), PROMPT, pieces.append
    )
    await clients.close()
    assert answer.text == streamed.text == "hello from the stub"
    assert "".join(pieces) == "hello from the stub"
    first, second = stub.requests
    assert first.path == "/v1beta/openai/chat/completions"
    assert first.headers["authorization"] == "Bearer stub-key"
    assert first.body["model"] == "gemini-2.5-flash" and first.body["max_tokens"] == 64
    assert second.path == "/v1/chat/completions" and second.body["stream"] is True


async def test_gemini_throttling_is_rate_limited_with_retry_after(
    tmp_path: Path, stub: ProviderStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _gemini(tmp_path, stub, monkeypatch)
    stub.script(
        "/v1beta/openai/chat/completions",
        StubReply(
            429,
            {"retry-after": "3"},
            [{"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}}],
        ),
    )
    error = await _fails(settings, _request("gemini", "gemini-2.5-flash"))
    assert error.type == errors.RATE_LIMITED and not error.non_retryable
    assert error.next_retry_delay == timedelta(seconds=3)


async def test_gemini_invalid_key_400_is_an_auth_error(
    tmp_path: Path, stub: ProviderStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _gemini(tmp_path, stub, monkeypatch)
    refusal = {
        "error": {
            "code": 400,
            "message": "API key not valid. Please pass a valid API key.",
            "status": "INVALID_ARGUMENT",
            "details": [{"reason": "API_KEY_INVALID"}],
        }
    }
    stub.script("/v1beta/openai/chat/completions", StubReply(400, body=[refusal]))
    stub.script("/v1/chat/completions", StubReply(400, body=refusal))
    error = await _fails(settings, _request("gemini", "gemini-2.5-flash"))
    assert error.type == errors.PROVIDER_AUTH and error.non_retryable
    assert "GEMINI_API_KEY" in error.message
    # Only Gemini says "bad key" with a 400; another OpenAI-compatible server's 400 is a 400.
    other = await _fails(settings, _request("vllm", "qwen"))
    assert other.type == errors.INVALID_REQUEST


# --- Bedrock (Converse) -----------------------------------------------------------------------


def _bedrock(tmp_path: Path, stub: ProviderStub) -> Settings:
    return _settings(
        tmp_path,
        f"""
providers:
  bedrock:
    kind: bedrock
    endpoint: {stub.url}
    region: us-east-1
    models: {{claude: anthropic.claude-3-5-haiku-20241022-v1:0}}
""",
    )


CONVERSE_PATH = "/model/anthropic.claude-3-5-haiku-20241022-v1:0/converse"


@pytest.mark.usefixtures("aws_env")
async def test_bedrock_success_converse_json_signed(tmp_path: Path, stub: ProviderStub) -> None:
    settings = _bedrock(tmp_path, stub)
    clients = ProviderClients.from_settings(settings)
    req = _request("bedrock", "claude", temperature=0.2)
    answer = await provider_adapter("bedrock", clients, settings).complete(req, PROMPT)
    await clients.close()
    assert answer.text == "hello from the stub"
    assert (answer.input_tokens, answer.output_tokens) == (12, 5)
    assert answer.finish_reason == "end_turn"
    [sent] = stub.requests
    assert sent.path == CONVERSE_PATH
    assert sent.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDSTUBSTUBSTUB/")
    assert "/us-east-1/bedrock/aws4_request" in sent.headers["authorization"]
    assert sent.body["system"] == [{"text": "You are terse."}]
    assert sent.body["messages"] == [{"role": "user", "content": [{"text": "Say hello."}]}]
    assert sent.body["inferenceConfig"] == {"maxTokens": 64, "temperature": 0.2}


@pytest.mark.usefixtures("aws_env")
@pytest.mark.parametrize("status", [400, 429])
async def test_bedrock_throttling_is_rate_limited_with_retry_after(
    tmp_path: Path, stub: ProviderStub, status: int
) -> None:
    settings = _bedrock(tmp_path, stub)
    stub.script(
        CONVERSE_PATH,
        bedrock_error("ThrottlingException", status, "Too many requests", **{"Retry-After": "4"}),
    )
    error = await _fails(settings, _request("bedrock", "claude"))
    assert error.type == errors.RATE_LIMITED and not error.non_retryable
    assert error.next_retry_delay == timedelta(seconds=4)
    assert "ThrottlingException" in error.message
    assert len(stub.requests) == 1  # botocore's own retries are off: Temporal retries


@pytest.mark.usefixtures("aws_env")
@pytest.mark.parametrize(
    ("code", "status", "kind", "retried"),
    [
        ("AccessDeniedException", 403, errors.PROVIDER_AUTH, False),
        ("UnrecognizedClientException", 403, errors.PROVIDER_AUTH, False),
        ("ResourceNotFoundException", 404, errors.MODEL_NOT_FOUND, False),
        ("ValidationException", 400, errors.INVALID_REQUEST, False),
        ("ModelNotReadyException", 429, errors.PROVIDER_UNAVAILABLE, True),
        ("ServiceUnavailableException", 503, errors.PROVIDER_UNAVAILABLE, True),
        ("InternalServerException", 500, errors.PROVIDER_UNAVAILABLE, True),
    ],
)
async def test_bedrock_errors_map_to_the_retry_classification(
    tmp_path: Path, stub: ProviderStub, code: str, status: int, kind: str, retried: bool
) -> None:
    settings = _bedrock(tmp_path, stub)
    stub.script(CONVERSE_PATH, bedrock_error(code, status))
    error = await _fails(settings, _request("bedrock", "claude"))
    assert (error.type, error.non_retryable) == (kind, not retried)


async def test_bedrock_without_credentials_is_an_auth_error(
    tmp_path: Path, stub: ProviderStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    settings = _bedrock(tmp_path, stub)
    error = await _fails(settings, _request("bedrock", "claude"))
    assert error.type == errors.PROVIDER_AUTH and error.non_retryable
    assert "no AWS credentials" in error.message
    assert stub.requests == []


@pytest.mark.usefixtures("aws_env")
async def test_bedrock_tool_turns_and_tool_use(tmp_path: Path, stub: ProviderStub) -> None:
    from chorus.contracts.tools import ToolCall, ToolResult, ToolSpec, ToolTurn

    spec = ToolSpec(
        name="chorus.resolve_dns",
        description="Resolve a host name.",
        parameters={"type": "object", "properties": {"host": {"type": "string"}}},
    )
    turn = ToolTurn(
        calls=[ToolCall(id="t1", name="chorus.resolve_dns", arguments={"host": "a"})],
        results=[ToolResult(call_id="t1", name="chorus.resolve_dns", output="1.2.3.4")],
    )
    stub.script(
        CONVERSE_PATH,
        StubReply(
            body={
                "output": {
                    "message": {
                        "role": "assistant",
                        "content": [
                            {
                                "toolUse": {
                                    "toolUseId": "t2",
                                    "name": spec.wire_name,
                                    "input": {"host": "b"},
                                }
                            }
                        ],
                    }
                },
                "stopReason": "tool_use",
                "usage": {"inputTokens": 30, "outputTokens": 9, "cacheReadInputTokens": 5},
            }
        ),
    )
    settings = _bedrock(tmp_path, stub)
    clients = ProviderClients.from_settings(settings)
    req = _request("bedrock", "claude", tools=[spec], tool_choice="required")
    prompt = Prompt(system="s", user="u", truncated_chars=0, turns=(turn,))
    answer = await provider_adapter("bedrock", clients, settings).complete(req, prompt)
    await clients.close()
    [call] = answer.tool_calls
    assert (call.name, call.arguments) == ("chorus.resolve_dns", {"host": "b"})
    assert (answer.input_tokens, answer.cached_input_tokens) == (35, 5)
    body = stub.requests[0].body
    assert body["toolConfig"]["toolChoice"] == {"any": {}}
    assert body["toolConfig"]["tools"][0]["toolSpec"]["name"] == spec.wire_name
    assistant, result = body["messages"][1:]
    assert assistant["content"][0]["toolUse"]["toolUseId"] == "t1"
    assert result["content"][0]["toolResult"]["content"] == [{"text": "1.2.3.4"}]


async def test_provider_missing_from_the_registry_is_not_configured(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "providers: {}\n")
    error = await _fails(settings, _request("azure-other", "gpt4o"))
    assert error.type == errors.PROVIDER_NOT_CONFIGURED and error.non_retryable
    assert "unknown provider 'azure-other'" in error.message
