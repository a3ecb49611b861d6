"""Registry providers in a run: an Azure key refused falls back, a Bedrock throttle is retried
after its Retry-After, an agent naming a provider missing from the registry skips it (real
dev server, PostgreSQL, the LLM activity and loopback stubs of each wire format)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from activities import LLMActivities, ProviderClients
from tests.conftest import agent, running_worker
from tests.provider_stubs import ProviderStub, bedrock_error

CONVERSE_PATH = "/model/anthropic.claude-3-5-haiku-20241022-v1:0/converse"


async def test_auth_failure_falls_back_and_throttling_is_retried(
    client: Client, make_settings: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDSTUBSTUBSTUB")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "stub-secret")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AZURE_STUB_KEY", "a-key-the-stub-refuses")
    with ProviderStub(key="stub-key") as stub:
        registry = tmp_path / "providers.yaml"
        registry.write_text(
            f"""
providers:
  azure-prod:
    kind: azure-openai
    endpoint: {stub.url}
    api_key_env: AZURE_STUB_KEY
    models: {{gpt-4o: my-deployment}}
  bedrock:
    kind: bedrock
    endpoint: {stub.url}
    region: us-east-1
    models: {{claude: anthropic.claude-3-5-haiku-20241022-v1:0}}
    limits: {{concurrency: 2, rpm: 600, tpm: 100000}}
    prices: {{claude: {{input: 0.8, output: 4}}}}
""",
            encoding="utf-8",
        )
        monkeypatch.setenv("CHORUS_PROVIDERS_FILE", str(registry))
        stub.script(
            CONVERSE_PATH, bedrock_error("ThrottlingException", 429, "slow", **{"Retry-After": "1"})
        )
        settings = make_settings(
            [
                agent("writer", ["azure-prod:gpt-4o", "bedrock:claude"]),
                agent("critic", ["azure-other:gpt4o", "bedrock:claude"]),
            ],
            providers_file=registry,
            allow_unpriced_models=False,
        )
        clients = ProviderClients.from_settings(settings)
        try:
            async with running_worker(
                client, settings, lambda pool: LLMActivities(clients, settings, pool).call_llm
            ) as chorus:
                handle = await chorus.start_sequential("Say hello", ["writer", "critic"])
                result = await handle.result()
        finally:
            await clients.close()

    writer, critic = result.steps
    assert writer.status == "succeeded" and writer.provider == "bedrock"
    assert writer.output == "hello from the stub"
    tried = [(t.provider, t.status, t.error_type, t.attempts) for t in writer.providers_tried]
    assert tried == [
        ("azure-prod", "failed", "ProviderAuthError", 1),  # not retried: the next provider
        ("bedrock", "succeeded", None, 2),  # throttled once, retried after Retry-After
    ]
    assert writer.cost_usd == pytest.approx((12 * 0.8 + 5 * 4) / 1e6)
    calls = [r for r in stub.requests if r.path == CONVERSE_PATH]
    assert len(calls) == 3  # writer: throttled + retried; critic: one
    # The critic names a provider no registry holds: skipped as not configured, no call.
    skipped = critic.providers_tried[0]
    assert (skipped.provider, skipped.status) == ("azure-other", "skipped")
    assert "unknown provider 'azure-other'" in (skipped.error or "")
    assert critic.provider == "bedrock"
    azure = [r for r in stub.requests if r.path.startswith("/openai/deployments/")]
    assert [r.path for r in azure] == ["/openai/deployments/my-deployment/chat/completions"]
