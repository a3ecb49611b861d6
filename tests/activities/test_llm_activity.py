"""The real LLM activity, through real workflows, against a scripted loopback HTTP server.

Provider endpoints are set the way users set them: OPENAI_BASE_URL/OPENAI_API_KEY and
ANTHROPIC_BASE_URL/ANTHROPIC_API_KEY read by the official SDKs, CHORUS_LOCAL_BASE_URL for local.
"""

from __future__ import annotations

import json

import pytest

from activities import LLMActivities, ProviderClients
from starter.dev import free_port
from starter.sdk import RunFailedError
from tests.conftest import agent, running_worker
from tests.stub_llm import Reply


async def run_one(client, settings, agents, plan, **kwargs):
    clients = ProviderClients.from_settings(settings)
    try:
        async with running_worker(
            client, settings, lambda pool: LLMActivities(clients, settings, pool).call_llm
        ) as chorus:
            handle = await chorus.start_sequential("Do it", plan, **kwargs)
            return await handle.result()
    finally:
        await clients.close()


async def test_429_with_retry_after_then_success(client, make_settings, stub):
    stub.script("m429", Reply(429, {"retry-after": "2"}), Reply(text="fine now"))
    settings = make_settings([agent("analyst", ["openai:m429"])], local_base_url=stub.base_url)
    result = await run_one(client, settings, None, ["analyst"])

    step = result.steps[0]
    assert (step.output, step.attempts, step.provider) == ("fine now", 2, "openai")
    first, second = stub.for_model("m429")
    # Retry-After (2 s) sets the delay, not the retry policy's 1 s initial interval.
    assert second.at - first.at >= 1.9
    assert (step.input_tokens, step.output_tokens) == (13, 5)


async def test_5xx_twice_then_success(client, make_settings, stub):
    stub.script("m500", Reply(500), Reply(503), Reply(text="third time"))
    settings = make_settings([agent("analyst", ["openai:m500"])], local_base_url=stub.base_url)
    result = await run_one(client, settings, None, ["analyst"])
    assert (result.steps[0].output, result.steps[0].attempts) == ("third time", 3)
    assert len(stub.for_model("m500")) == 3


async def test_400_fails_fast_without_fallback(client, make_settings, stub):
    stub.script("m400", Reply(400, error_message="max_tokens is too large"))
    settings = make_settings(
        [agent("analyst", ["openai:m400", "local:never"])], local_base_url=stub.base_url
    )
    with pytest.raises(RunFailedError) as failure:
        await run_one(client, settings, None, ["analyst"])
    message = str(failure.value)
    assert "HTTP 400" in message and "max_tokens is too large" in message
    assert len(stub.for_model("m400")) == 1
    assert stub.for_model("never") == []
    assert failure.value.partial is not None
    tried = failure.value.partial.steps[0].providers_tried
    assert [(t.provider, t.status, t.error_type, t.attempts) for t in tried] == [
        ("openai", "failed", "InvalidRequest", 1)
    ]


async def test_auth_error_falls_back_at_once(client, make_settings, stub):
    stub.script("m401", Reply(401, error_message="invalid api key"))
    settings = make_settings(
        [agent("analyst", ["openai:m401", "local:backup"])], local_base_url=stub.base_url
    )
    result = await run_one(client, settings, None, ["analyst"])
    step = result.steps[0]
    assert (step.provider, step.model) == ("local", "backup")
    assert [(t.status, t.error_type, t.attempts) for t in step.providers_tried] == [
        ("failed", "ProviderAuthError", 1),
        ("succeeded", None, 1),
    ]
    assert len(stub.for_model("m401")) == 1


async def test_provider_down_leads_to_next_provider(client, make_settings, stub, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_BASE_URL", f"http://127.0.0.1:{free_port()}")
    settings = make_settings(
        [agent("analyst", ["anthropic:claude-haiku-4-5", "local:backup"])],
        local_base_url=stub.base_url,
    )
    result = await run_one(client, settings, None, ["analyst"])
    step = result.steps[0]
    assert step.provider == "local" and step.status == "succeeded"
    down = step.providers_tried[0]
    assert (down.provider, down.status, down.error_type, down.attempts) == (
        "anthropic",
        "failed",
        "ProviderUnavailable",
        4,
    )
    assert "cannot connect" in (down.error or "")
    assert step.attempts == 5


async def test_anthropic_wire_format_usage_and_cost(client, make_settings, stub):
    settings = make_settings(
        [agent("writer", ["anthropic:claude-haiku-4-5"])], local_base_url=stub.base_url
    )
    result = await run_one(client, settings, None, ["writer"], document="The doc.")
    step = result.steps[0]
    assert (step.provider, step.input_tokens, step.output_tokens) == ("anthropic", 11, 7)
    # claude-haiku-4-5: $1 / 1M input, $5 / 1M output (chorus.governance.pricing)
    assert step.cost_usd == pytest.approx((11 * 1.00 + 7 * 5.00) / 1e6)
    body = stub.for_model("claude-haiku-4-5")[0].body
    assert body["system"] == "You are writer."
    assert "The doc." in body["messages"][0]["content"]


async def test_output_schema_retries_until_json(client, make_settings, stub):
    schema = {"type": "object", "properties": {"severity": {"type": "string"}}}
    stub.script("local-json", Reply(text="not json at all"), Reply(text='{"severity": "low"}'))
    settings = make_settings(
        [agent("triage", ["local:local-json"], output_schema=schema)], local_base_url=stub.base_url
    )
    result = await run_one(client, settings, None, ["triage"])
    assert json.loads(result.steps[0].output) == {"severity": "low"}
    assert result.steps[0].attempts == 2
    sent = stub.for_model("local-json")[0].body
    assert sent["response_format"] == {"type": "json_object", "schema": schema}
    assert sent["max_tokens"] == 64


async def test_api_key_echoed_in_a_provider_error_is_never_stored(client, make_settings, stub):
    """A provider quoting the request's key in its error text (issue 20): the key reaches
    neither the run's error, nor the history, nor runs.error."""
    key = "sk-ant-api03-" + "Q" * 40
    stub.script("m-echo", Reply(400, error_message=f"bad request for key Bearer {key}"))
    stub.script("m-echo2", Reply(400, error_message=f"invalid x-api-key {key}"))
    settings = make_settings(
        [agent("analyst", ["openai:m-echo"]), agent("writer", ["openai:m-echo2"])],
        local_base_url=stub.base_url,
    )
    clients = ProviderClients.from_settings(settings)
    try:
        async with running_worker(
            client, settings, lambda pool: LLMActivities(clients, settings, pool).call_llm
        ) as chorus:
            for name in ("analyst", "writer"):
                handle = await chorus.start_sequential("Do it", [name])
                with pytest.raises(RunFailedError) as failure:
                    await handle.result()
                history = await client.get_workflow_handle(handle.workflow_id).fetch_history()
                row = await (await chorus.pool()).fetchrow(
                    "SELECT error FROM runs WHERE workflow_id = $1", handle.workflow_id
                )
                assert "HTTP 400" in str(failure.value) and "[SECRET]" in str(failure.value)
                assert key not in str(failure.value)
                assert key not in history.to_json()
                assert row is not None and key not in (row["error"] or "")
    finally:
        await clients.close()


VERDICT = {
    "type": "object",
    "properties": {"verdict": {"type": "string", "enum": ["ready", "revise"]}},
    "required": ["verdict"],
    "additionalProperties": False,
}


async def test_output_schema_is_enforced_with_the_error_fed_back(client, make_settings, stub):
    """Issue 13: the schema was never enforced, only JSON parsing. A non-conforming answer is
    retried with the validator's message in the prompt; OpenAI gets strict structured output."""
    stub.script(
        "gpt-verdict", Reply(text='{"verdict": "maybe"}'), Reply(text='{"verdict": "ready"}')
    )
    settings = make_settings(
        [agent("critic", ["openai:gpt-verdict"], output_schema=VERDICT)],
        local_base_url=stub.base_url,
    )
    result = await run_one(client, settings, None, ["critic"])
    assert result.steps[0].output_json == {"verdict": "ready"}
    assert result.steps[0].attempts == 2
    first, second = stub.for_model("gpt-verdict")
    assert first.body["response_format"]["json_schema"]["strict"] is True
    retry_prompt = second.body["messages"][-1]["content"]
    assert "Your previous answer was rejected" in retry_prompt
    assert "'maybe' is not one of ['ready', 'revise']" in retry_prompt


async def test_output_retries_then_the_next_provider(client, make_settings, stub):
    stub.script("bad-json", *[Reply(text='{"verdict": 1}')] * 4)
    settings = make_settings(
        [
            agent(
                "critic",
                ["openai:bad-json", "local:good-json"],
                output_schema=VERDICT,
                output_retries=1,
            )
        ],
        local_base_url=stub.base_url,
    )
    stub.script("good-json", Reply(text='{"verdict": "revise"}'))
    result = await run_one(client, settings, None, ["critic"])
    step = result.steps[0]
    assert json.loads(step.output) == {"verdict": "revise"} and step.provider == "local"
    assert len(stub.for_model("bad-json")) == 2  # the first answer and one retry
    tried = step.providers_tried[0]
    assert (tried.status, tried.error_type, tried.attempts) == ("failed", "InvalidOutput", 2)
    assert "giving up on this provider" in (tried.error or "")


def test_invalid_output_schema_is_refused_when_the_catalog_is_stored():
    from chorus.config.catalog import CatalogError, parse_catalog

    text = (
        "agents:\n  - name: critic\n    instructions: x\n    providers: [local:smollm2]\n"
        "    output_schema: {type: object, properties: {verdict: {type: strnig}}}\n"
    )
    with pytest.raises(CatalogError, match=r"agent 'critic': output_schema is not a valid"):
        parse_catalog(text)


def test_strict_compatibility():
    from activities.llm import strict_compatible

    assert strict_compatible(VERDICT)
    assert not strict_compatible({**VERDICT, "additionalProperties": True})
    assert not strict_compatible({**VERDICT, "required": []})
    nested = {**VERDICT, "properties": {"items": {"type": "array", "items": {"type": "object"}}}}
    assert not strict_compatible({**nested, "required": ["items"]})


async def test_output_schema_on_anthropic(client, make_settings, stub):
    """The Anthropic shape: the schema goes as output_config's JSON schema, and the answer is
    validated and retried with the error fed back, as for the other providers."""
    stub.script("claude-verdict", Reply(text='{"verdict": 3}'), Reply(text='{"verdict": "revise"}'))
    settings = make_settings(
        [agent("critic", ["anthropic:claude-verdict"], output_schema=VERDICT)],
        local_base_url=stub.base_url,
    )
    result = await run_one(client, settings, None, ["critic"])
    assert result.steps[0].output_json == {"verdict": "revise"}
    first, second = stub.for_model("claude-verdict")
    assert first.body["output_config"] == {"format": {"type": "json_schema", "schema": VERDICT}}
    assert "Your previous answer was rejected" in second.body["messages"][-1]["content"]
