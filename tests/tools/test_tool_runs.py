"""Tool use end to end: real workflows, the real LLM and tool activities, loopback stubs.

The stub speaks the OpenAI and Anthropic wire formats and asks for tools the way each does
(``tool_calls`` / ``tool_use``); the tools are Python functions in a test registry.
"""

from __future__ import annotations

import asyncio
import json
import sys

import asyncpg
from temporalio.api.enums.v1 import EventType

from activities import LLMActivities, ProviderClients
from chorus.config.mcp_config import parse_mcp_servers
from chorus.tools.mcp_servers import MCPServers
from starter.sdk import RunFailedError
from tests.conftest import agent, running_worker, sdk
from tests.stub_llm import Reply, StubLLM
from tests.tools import tool_fixtures
from tests.tools.tool_fixtures import REGISTRY
from tests.worker_procs import WorkerProcess
from tests.workflows.test_workflows import replay


async def run(client, settings, agents, task="Check the numbers", mcp=None, **kwargs):
    """Run ``agents`` in sequence with the real LLM activity and the test tools; return
    ``(handle, result or RunFailedError, client)``."""
    clients = ProviderClients.from_settings(settings)
    try:
        async with running_worker(
            client,
            settings,
            lambda pool: LLMActivities(clients, settings, pool).call_llm,
            tools=REGISTRY,
            mcp=mcp,
        ) as chorus:
            handle = await chorus.start_sequential(task, agents, **kwargs)
            try:
                result = await handle.result()
                handle.final_progress = await handle.progress()
                return handle, result, chorus
            except RunFailedError as err:
                return handle, err, chorus
    finally:
        await clients.close()


async def scheduled_activities(client, workflow_id: str) -> list[tuple[int, str]]:
    """``(event id, activity type)`` of every scheduled activity, and completions as ``done``."""
    events = []
    async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            events.append(
                (event.event_id, event.activity_task_scheduled_event_attributes.activity_type.name)
            )
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            events.append((event.event_id, "done"))
    return events


async def test_openai_parallel_tool_calls_run_as_parallel_activities(
    client, make_settings, stub, database_url
):
    stub.script(
        "gpt-tools",
        Reply(tool_calls=[("acme__add", {"a": 2, "b": 3}), ("acme__echo", {"text": "hi"})]),
        Reply(text="The total is 5."),
    )
    settings = make_settings([agent("calc", ["openai:gpt-tools"], tools=["acme.add", "acme.echo"])])
    handle, result, _ = await run(client, settings, ["calc"])

    step = result.steps[0]
    assert result.output == "The total is 5."
    assert [(c.name, c.arguments, c.is_error) for c in step.tool_calls] == [
        ("acme.add", {"a": 2, "b": 3}, False),
        ("acme.echo", {"text": "hi"}, False),
    ]
    assert json.loads(step.tool_calls[0].output) == {"total": 5, "terms": [2, 3]}
    assert step.llm_calls == 2 and result.totals.llm_calls == 2
    assert step.input_tokens == 26  # both turns counted (13 each)
    assert handle.final_progress.steps[0].tool_calls == 2  # the progress query counts them
    first, second = stub.for_model("gpt-tools")
    assert [t["function"]["name"] for t in first.body["tools"]] == ["acme__add", "acme__echo"]
    assert first.body["tools"][0]["function"]["parameters"]["required"] == ["a"]
    roles = [m["role"] for m in second.body["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "tool"]
    assert second.body["messages"][2]["tool_calls"][0]["function"]["name"] == "acme__add"
    assert [m["tool_call_id"] for m in second.body["messages"][3:]] == ["call_1", "call_2"]
    assert json.loads(second.body["messages"][3]["content"])["total"] == 5
    # both tool activities were scheduled before either completed: parallel
    kinds = await scheduled_activities(client, handle.workflow_id)
    tools = [i for i, (_, name) in enumerate(kinds) if name == "chorus.call_tool"]
    assert len(tools) == 2 and tools[1] == tools[0] + 1
    # recorded in PostgreSQL, one row per call, and the model turns in messages
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT tool, is_error, output FROM tool_calls WHERE root_workflow_id = $1"
            " ORDER BY call_id",
            handle.workflow_id,
        )
        turns = await conn.fetch(
            "SELECT tool_calls FROM messages WHERE root_workflow_id = $1 ORDER BY id",
            handle.workflow_id,
        )
    finally:
        await conn.close()
    assert [(r["tool"], r["is_error"]) for r in rows] == [
        ("acme.add", False),
        ("acme.echo", False),
    ]
    assert len(turns) == 2 and turns[1]["tool_calls"] is None
    await replay(client, handle.workflow_id, record_as="tools_openai_parallel")


async def test_anthropic_tool_use_blocks(client, make_settings, stub):
    stub.script(
        "claude-tools",
        Reply(text="Let me add.", tool_calls=[("acme__add", {"a": 40, "b": 2})]),
        Reply(text="42."),
    )
    settings = make_settings([agent("calc", ["anthropic:claude-tools"], tools=["acme.add"])])
    handle, result, _ = await run(client, settings, ["calc"])

    assert result.output == "42."
    assert result.steps[0].tool_calls[0].name == "acme.add"
    first, second = stub.for_model("claude-tools")
    assert first.body["tools"][0]["name"] == "acme__add"
    assert first.body["tools"][0]["input_schema"]["properties"]["a"]["type"] == "integer"
    assistant, results = second.body["messages"][1:]
    assert [b["type"] for b in assistant["content"]] == ["text", "tool_use"]
    assert assistant["content"][1]["input"] == {"a": 40, "b": 2}
    block = results["content"][0]
    assert block["type"] == "tool_result" and block["tool_use_id"] == "toolu_1"
    assert json.loads(block["content"])["total"] == 42 and block["is_error"] is False
    await replay(client, handle.workflow_id, record_as="tools_anthropic")


async def test_a_tool_that_fails_then_succeeds_and_errors_go_back_to_the_model(
    client, make_settings, stub
):
    tool_fixtures.flaky_failures.clear()
    stub.script(
        "gpt-tools",
        Reply(
            tool_calls=[
                ("acme__flaky", {"key": "k1", "failures": 2}),
                ("acme__broken", {}),
                ("acme__add", {"a": "not a number"}),
                ("acme__nope", {}),
            ]
        ),
        Reply(text="Done despite errors."),
    )
    settings = make_settings(
        [agent("ops", ["openai:gpt-tools"], tools=["acme.flaky", "acme.broken", "acme.add"])]
    )
    handle, result, _ = await run(client, settings, ["ops"])

    flaky, broken, bad_args, unknown = result.steps[0].tool_calls
    assert (flaky.is_error, flaky.attempts, flaky.output) == (False, 3, "ok after 2 failures")
    assert broken.is_error and broken.error_type == "ToolError" and broken.attempts == 1
    assert bad_args.is_error and bad_args.error_type == "ToolArgumentsInvalid"
    assert "a: Input should be a valid integer" in bad_args.output
    assert unknown.is_error and "no tool named acme__nope was offered" in unknown.output
    assert result.output == "Done despite errors."
    sent = stub.for_model("gpt-tools")[1].body["messages"]
    assert "the order system refused the request" in sent[4]["content"]
    await replay(client, handle.workflow_id, record_as="tools_errors_to_model")


async def test_max_tool_calls_ends_a_runaway_loop(client, make_settings, stub):
    stub.script(
        "gpt-tools", *[Reply(tool_calls=[("acme__echo", {"text": f"again {i}"})]) for i in range(5)]
    )
    settings = make_settings(
        [agent("loopy", ["openai:gpt-tools"], tools=["acme.echo"], max_tool_calls=2)]
    )
    _, err, _ = await run(client, settings, ["loopy"])

    assert isinstance(err, RunFailedError)
    message = str(err)
    assert "ToolCallLimit" in message and "max_tool_calls is 2" in message
    assert len(stub.for_model("gpt-tools")) == 3  # 2 calls made, the 3rd request refused


async def test_pii_in_a_tool_result_never_reaches_the_provider(client, make_settings, stub):
    stub.script(
        "gpt-tools", Reply(tool_calls=[("acme__customer", {"customer_id": "c-7"})]), Reply()
    )
    settings = make_settings(
        [agent("support", ["openai:gpt-tools"], tools=["acme.customer"], pii="redact")]
    )
    _, result, _ = await run(client, settings, ["support"])

    assert "jane.doe@example.com" in result.steps[0].tool_calls[0].output  # the record has it
    sent = json.dumps(stub.for_model("gpt-tools")[1].body)
    for value in ("jane.doe@example.com", "415 555 0132", "123-45-6789"):
        assert value not in sent
    assert "[EMAIL]" in sent and "[SSN]" in sent


async def test_a_large_tool_result_goes_by_reference(client, make_settings, stub):
    stub.script("gpt-tools", Reply(tool_calls=[("acme__big", {"chars": 30_000})]), Reply())
    settings = make_settings([agent("reader", ["openai:gpt-tools"], tools=["acme.big"])])
    handle, result, _ = await run(client, settings, ["reader"])

    assert result.steps[0].status == "succeeded"
    history = await client.get_workflow_handle(handle.workflow_id).fetch_history()
    assert "line 002400" not in history.to_json()  # only the preview is in the history
    sent = stub.for_model("gpt-tools")[1].body["messages"][3]["content"]
    assert len(sent) == 30_000 and "line 002400" in sent  # the model got all of it


async def test_unknown_tools_and_approval_tools_fail_the_step_clearly(client, make_settings, stub):
    settings = make_settings(
        [
            agent("ghost", ["openai:gpt-tools"], tools=["acme.missing"]),
            agent("payer", ["openai:gpt-tools"], tools=["acme.approve"]),
            agent(
                "asker",
                ["openai:gpt-tools"],
                tools=[{"name": "acme.add", "requires_approval": True}],
            ),
        ]
    )
    for name, expected in (
        ("ghost", "no tool named acme.missing is registered"),
        ("payer", "requires approval"),
        ("asker", "requires approval"),
    ):
        _, err, _ = await run(client, settings, [name])
        assert isinstance(err, RunFailedError), name
        assert expected in str(err), str(err)
    assert stub.requests == []  # no model was asked


async def test_a_non_idempotent_tool_is_not_repeated_after_a_worker_kill_9(
    client, make_settings, tmp_path
):
    """SIGKILL the worker while ``fixture.charge`` (not idempotent) runs: the call is not
    repeated by the next worker; the model is told its outcome is unknown, and the run ends."""
    log = tmp_path / "charges.log"
    settings = make_settings([agent("payer", ["openai:gpt-tools"], tools=["fixture.charge"])])
    with StubLLM() as stub:
        stub.script(
            "gpt-tools",
            Reply(tool_calls=[("fixture__charge", {"amount": 5, "sleep_s": 60})]),
            Reply(text="I could not confirm the charge."),
        )
        worker = WorkerProcess(settings, tmp_path, "worker", stub.base_url)
        worker.env["CHORUS_TOOL_MODULES"] = "tests.tools.tool_fixtures"
        worker.env["CHORUS_TEST_TOOL_LOG"] = str(log)
        worker.env["CHORUS_ALLOW_UNPRICED_MODELS"] = "true"
        async with sdk(client, settings) as chorus:
            try:
                worker.start()
                await worker.wait_polling(chorus)
                handle = await chorus.start_sequential("Charge the customer $5", ["payer"])
                for _ in range(300):  # <= 30 s until the tool has charged
                    if log.exists() and log.read_text():
                        break
                    await asyncio.sleep(0.1)
                assert log.read_text().count("charged") == 1
                worker.kill()
                worker.start()
                await worker.wait_polling(chorus)
                result = await asyncio.wait_for(handle.result(), 120)
            finally:
                worker.stop()

    assert log.read_text().count("charged") == 1  # not repeated
    call = result.steps[0].tool_calls[0]
    assert call.is_error and "not idempotent" in call.output and call.attempts == 1
    assert result.output == "I could not confirm the charge."


async def test_an_mcp_tool_in_a_run(client, make_settings, stub, tmp_path):
    """``mcp:files/read_text_file`` from the bundled example server (real stdio MCP)."""
    (tmp_path / "notes.txt").write_text("disk /var is 91% full")
    servers = MCPServers(
        parse_mcp_servers(
            {
                "files": {
                    "transport": "stdio",
                    "command": sys.executable,
                    "args": ["-m", "chorus.tools.example_mcp_server", "--root", str(tmp_path)],
                }
            }
        )
    )
    stub.script(
        "gpt-tools",
        Reply(
            tool_calls=[
                ("mcp__files__read_text_file", {"path": "notes.txt"}),
                ("mcp__files__read_text_file", {"path": "../../etc/passwd"}),
            ]
        ),
        Reply(text="/var is nearly full."),
    )
    settings = make_settings(
        [agent("reader", ["openai:gpt-tools"], tools=["mcp:files/read_text_file"])]
    )
    try:
        handle, result, _ = await run(
            client, settings, ["reader"], task="How full is /var?", mcp=servers
        )
    finally:
        await servers.aclose()

    ok, escape = result.steps[0].tool_calls
    assert ok.output == "disk /var is 91% full" and not ok.is_error
    assert escape.is_error and "outside" in escape.output
    first = stub.for_model("gpt-tools")[0].body
    schema = first["tools"][0]["function"]["parameters"]
    assert first["tools"][0]["function"]["name"] == "mcp__files__read_text_file"
    assert "path" in schema["properties"]
    await replay(client, handle.workflow_id, record_as="tools_mcp_stdio")


async def test_local_model_tool_calls_through_a_json_grammar(client, make_settings, stub):
    """The ``local`` (llama.cpp) provider: tools described in the system message, the answer
    constrained to ``{"tool_calls": [...]}`` or ``{"answer": ...}``; after one tool round
    (``CHORUS_LOCAL_TOOL_ROUNDS``) only the answer is allowed."""
    stub.script(
        "tiny",
        Reply(
            text=json.dumps({"tool_calls": [{"name": "acme__add", "arguments": {"a": 1, "b": 2}}]})
        ),
        Reply(text=json.dumps({"answer": "It is 3."})),
    )
    settings = make_settings(
        [agent("calc", ["local:tiny"], tools=["acme.add"])],
        local_base_url=stub.base_url,
    )
    _, result, _ = await run(client, settings, ["calc"])

    assert result.output == "It is 3."
    assert result.steps[0].tool_calls[0].arguments == {"a": 1, "b": 2}
    first, second = stub.for_model("tiny")
    assert "acme__add" in first.body["messages"][0]["content"]
    either = first.body["response_format"]["schema"]["anyOf"]
    assert either[0]["properties"]["tool_calls"]["items"]["anyOf"][0]["properties"]["name"] == {
        "const": "acme__add"
    }
    assert second.body["response_format"]["schema"]["required"] == ["answer"]
    assert [m["role"] for m in second.body["messages"]] == ["system", "user", "assistant", "user"]
    assert '{"total":3,"terms":[1,2]}' in second.body["messages"][3]["content"]


async def test_placeholders_in_arguments_reach_the_tool_as_the_originals(
    client, make_settings, stub
):
    """``pii: placeholder``: the model sees ``<<EMAIL_1>>``, writes it into a call; the tool gets
    the real address, and the next turn's request carries the placeholder again, not the value."""
    stub.script(
        "gpt-tools", Reply(tool_calls=[("acme__echo", {"text": "mail <<EMAIL_1>>"})]), Reply()
    )
    settings = make_settings(
        [agent("mailer", ["openai:gpt-tools"], tools=["acme.echo"], pii="placeholder")]
    )
    _, result, _ = await run(client, settings, ["mailer"], task="Write to jane.doe@example.com")

    call = result.steps[0].tool_calls[0]
    assert call.arguments == {"text": "mail jane.doe@example.com"}
    assert call.output == "mail jane.doe@example.com"
    for request in stub.for_model("gpt-tools"):
        assert "jane.doe@example.com" not in json.dumps(request.body)
    assert "<<EMAIL_1>>" in json.dumps(stub.for_model("gpt-tools")[1].body["messages"][3])
