"""Live token streaming through real runs: the production LLM activity against the loopback stub
(OpenAI and Anthropic streaming formats), a real worker, PostgreSQL and the SDK's reader.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from temporalio.client import Client
from typer.testing import CliRunner

from chorus.config.settings import Settings, get_settings
from chorus.governance.pricing import cost_usd
from chorus.streaming import Assembler, StreamEvent, assemble
from starter.sdk import RunHandle
from tests.conftest import agent, production_worker
from tests.stub_llm import Reply, StubLLM

TEXT = " ".join(f"word{n}" for n in range(25)) + "."


async def follow(handle: RunHandle) -> list[tuple[StreamEvent, float]]:
    """Every event of the run with the monotonic time it reached this reader."""

    async def go() -> list[tuple[StreamEvent, float]]:
        return [(event, time.monotonic()) async for event in handle.stream()]

    return await asyncio.wait_for(go(), 60)


async def test_tokens_reach_a_reader_as_they_are_written(
    client: Client, make_settings: Callable[..., Settings], stub: StubLLM
):
    """OpenAI chat completions streamed (usage in the last chunk): the reader gets the text in
    pieces, the first long before the step completes; the pieces add up to the output; tokens
    and cost are what the provider reported, as without streaming."""
    stub.default_token_delay_s = 0.04  # 26 words: ~1 s of streaming
    stub.script("gpt-4o-mini", Reply(text=TEXT))
    settings = make_settings([agent("writer", ["openai:gpt-4o-mini"])])
    async with production_worker(client, settings) as chorus:
        started = time.monotonic()
        handle = await chorus.start_sequential("Write it", ["writer"])
        seen = await follow(handle)
        result = await handle.result()
    events = [e for e, _ in seen]
    kinds = [e.kind for e in events]
    assert kinds[0] == "step_started" and kinds[-2:] == ["step_completed", "run_finished"]
    assert set(kinds[1:-2]) == {"token"} and len(kinds) - 3 >= 5
    assert events[0].text == "openai:gpt-4o-mini" and events[-1].text == "succeeded"
    assert {e.run_id for e in events} == {handle.workflow_id}
    step = result.steps[0]
    assert "".join(e.text for e in events if e.kind == "token") == step.output == TEXT
    assert events[-2].text == TEXT
    first_token = next(t for e, t in seen if e.kind == "token")
    completed = next(t for e, t in seen if e.kind == "step_completed")
    assert completed - first_token > 0.5  # the text arrived while it was being written
    assert events[1].at < events[-2].at
    assert first_token - started < 5
    body = stub.for_model("gpt-4o-mini")[0].body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert (step.input_tokens, step.output_tokens) == (13, 5)
    assert step.cost_usd == pytest.approx(cost_usd("openai", "gpt-4o-mini", 13, 5)[0])


async def test_an_attempt_cut_mid_stream_is_announced_and_never_duplicated(
    client: Client, make_settings: Callable[..., Settings], stub: StubLLM
):
    """The connection resets after 6 words: the attempt fails (ProviderUnavailable), Temporal
    retries it, and the reader learns it from ``attempt_restarted``; assembled text holds the
    second attempt's text once."""
    stub.default_token_delay_s = 0.01
    stub.script("gpt-4o-mini", Reply(text=TEXT, break_after=6), Reply(text=TEXT))
    settings = make_settings([agent("writer", ["openai:gpt-4o-mini"])])
    async with production_worker(client, settings) as chorus:
        handle = await chorus.start_sequential("Write it", ["writer"])
        events = [e for e, _ in await follow(handle)]
        result = await handle.result()
    kinds = [(e.kind, e.attempt) for e in events if e.kind != "token"]
    assert kinds == [
        ("step_started", 1),
        ("step_failed", 1),
        ("attempt_restarted", 2),
        ("step_started", 2),
        ("step_completed", 2),
        ("run_finished", None),
    ]
    failed = next(e for e in events if e.kind == "step_failed")
    assert failed.text.startswith("ProviderUnavailable: openai:gpt-4o-mini: connection lost")
    first_try = "".join(e.text for e in events if e.kind == "token" and e.attempt == 1)
    assert first_try == "word0 word1 word2 word3 word4 word5 "
    naive = "".join(e.text for e in events if e.kind == "token")
    assert naive.startswith(first_try + "word0 word1")  # what ignoring the restart would show
    assert assemble(events) == {events[0].step: TEXT}
    assert result.steps[0].output == TEXT and result.steps[0].attempts == 2


async def test_anthropic_streams_and_an_error_event_mid_stream_is_retried(
    client: Client, make_settings: Callable[..., Settings], stub: StubLLM
):
    """Anthropic's ``messages.stream``: text deltas published, usage (input from
    ``message_start``, output from ``message_delta``) and cost exact; an ``overloaded_error``
    event mid-stream is a retryable ProviderUnavailable (HTTP 529), not a refused request."""
    stub.default_token_delay_s = 0.01
    overloaded = {"type": "overloaded_error", "message": "Overloaded"}
    stub.script(
        "claude-haiku-4-5",
        Reply(text=TEXT, break_after=3, stream_error=overloaded),
        Reply(text=TEXT),
    )
    settings = make_settings([agent("writer", ["anthropic:claude-haiku-4-5"])])
    async with production_worker(client, settings) as chorus:
        handle = await chorus.start_sequential("Write it", ["writer"])
        events = [e for e, _ in await follow(handle)]
        result = await handle.result()
    step = result.steps[0]
    assert (step.output, step.attempts, step.provider) == (TEXT, 2, "anthropic")
    assert (step.input_tokens, step.output_tokens) == (11, 7)
    assert step.cost_usd == pytest.approx((11 * 1.00 + 7 * 5.00) / 1e6)
    failed = next(e for e in events if e.kind == "step_failed")
    assert "ProviderUnavailable" in failed.text and "HTTP 529" in failed.text
    assert [e.kind for e in events].count("attempt_restarted") == 1
    assert assemble(events) == {events[0].step: TEXT}
    assert "".join(e.text for e in events if e.kind == "token" and e.attempt == 2) == TEXT
    body = stub.for_model("claude-haiku-4-5")[0].body
    assert body["stream"] is True and body["system"] == "You are writer."


async def test_with_streaming_off_only_the_steps_start_and_end_are_published(
    client: Client, make_settings: Callable[..., Settings], stub: StubLLM
):
    stub.script("gpt-4o-mini", Reply(text=TEXT))
    settings = make_settings([agent("writer", ["openai:gpt-4o-mini"])], stream_tokens=False)
    async with production_worker(client, settings) as chorus:
        handle = await chorus.start_sequential("Write it", ["writer"])
        events = [e for e, _ in await follow(handle)]
        result = await handle.result()
    assert [e.kind for e in events] == ["step_started", "step_completed", "run_finished"]
    assert events[1].text == result.steps[0].output == TEXT
    assert "stream" not in stub.for_model("gpt-4o-mini")[0].body


async def test_published_text_follows_the_agents_pii_policies(
    client: Client, make_settings: Callable[..., Settings], stub: StubLLM
):
    """``pii: placeholder``: the model writes the token, readers get the original back (as the
    result does); ``record_pii: redact``: events are PostgreSQL rows, so they hold what the
    record holds."""
    stub.echo = True  # the model repeats the prompt, placeholders included
    email = "jane.doe@example.com"
    settings = make_settings(
        [
            {**agent("open", ["openai:gpt-4o-mini"]), "pii": "placeholder", "max_tokens": 4096},
            {
                **agent("private", ["openai:gpt-4o-mini"]),
                "pii": "placeholder",
                "record_pii": "redact",
                "max_tokens": 4096,
            },
        ]
    )
    task = f"Write to {email} about the invoice."
    async with production_worker(client, settings) as chorus:
        opened = await chorus.start_sequential(task, ["open"])
        open_events = [e for e, _ in await follow(opened)]
        private = await chorus.start_sequential(task, ["private"])
        private_events = [e for e, _ in await follow(private)]
        private_result = await private.result()
    assert "<<EMAIL_1>>" in json.dumps(stub.requests[0].body)  # the model saw the token
    open_text = "".join(e.text for e in open_events if e.kind == "token")
    assert email in open_text and "<<EMAIL" not in open_text
    private_text = "".join(e.text for e in private_events if e.kind in ("token", "step_completed"))
    assert email not in private_text and "<<EMAIL" not in private_text
    assert "[EMAIL]" in private_text
    assert email in private_result.output  # the result itself keeps the original


async def test_a_finished_runs_events_are_swept_after_the_retention(
    client: Client, make_settings: Callable[..., Settings], stub: StubLLM
):
    settings = make_settings([agent("writer", ["openai:gpt-4o-mini"])], stream_retention_hours=0)
    async with production_worker(client, settings) as chorus:
        handle = await chorus.start_sequential("Write it", ["writer"])
        await handle.result()
        pool = await chorus.pool()
        left = await pool.fetchval(
            "SELECT count(*) FROM stream_events WHERE run_id = $1", handle.workflow_id
        )
    assert left == 0


async def test_parallel_branches_stream_side_by_side(
    client: Client, make_settings: Callable[..., Settings], stub: StubLLM
):
    """Three branches and the aggregator, children workflows included: every LLM call is its
    own step under the top-level run, and the text of each adds up to its output."""
    stub.default_token_delay_s = 0.01
    names = ["alpha", "beta", "gamma"]
    settings = make_settings([agent(n, ["openai:gpt-4o-mini"]) for n in [*names, "aggregator"]])
    async with production_worker(client, settings) as chorus:
        handle = await chorus.start_parallel("Review it", names)
        events = [e for e, _ in await follow(handle)]
        result = await handle.result()
    assembler = Assembler()
    for event in events:
        assembler.apply(event)
    by_agent = {s.agent: s for s in assembler.steps.values()}
    assert set(by_agent) == {*names, "aggregator"}
    for step in result.steps:
        assert by_agent[step.agent or ""].text == step.output
        assert by_agent[step.agent or ""].status == "completed"
    assert assembler.finished == "succeeded"


async def test_chorus_run_follow_prints_the_text_live(
    client: Client,
    make_settings: Callable[..., Settings],
    stub: StubLLM,
    monkeypatch: pytest.MonkeyPatch,
):
    """``chorus run --follow``: a header per step, the text, a marker when an attempt is
    retried, then the totals; ``--json`` prints one event per line, then the result."""
    stub.default_token_delay_s = 0.01
    stub.script("gpt-4o-mini", Reply(text="first try cut", break_after=2), Reply(text=TEXT))
    settings = make_settings([agent("writer", ["openai:gpt-4o-mini"])])
    for name, value in {
        "TEMPORAL_ADDRESS": settings.temporal_address,
        "DATABASE_URL": settings.database_url or "",
        "CHORUS_TASK_QUEUE": settings.task_queue,
        "CHORUS_AGENTS_FILE": str(settings.agents_file),
        "CHORUS_DATA_DIR": str(settings.data_dir),
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    from starter.cli import app

    def chorus_cli(*args: str) -> Any:
        return CliRunner().invoke(app, ["run", "sequential", *args])

    try:
        async with production_worker(client, settings):
            plain = await asyncio.to_thread(
                chorus_cli, "--agents", "writer", "--task", "Write it", "--follow"
            )
            as_json = await asyncio.to_thread(
                chorus_cli, "--agents", "writer", "--task", "Again", "--follow", "--json"
            )
    finally:
        get_settings.cache_clear()
    assert plain.exit_code == 0, plain.output
    out = plain.stdout
    assert "── writer · openai:gpt-4o-mini ──" in out
    assert "first try " in out and "[attempt 2 of writer restarted" in out
    assert "── writer · openai:gpt-4o-mini · attempt 2 ──" in out
    assert out.index("attempt 2 ──") < out.index(TEXT)
    assert "totals: 1 LLM calls" in out and "result" not in out.split(TEXT, 1)[1][:40]
    assert as_json.exit_code == 0, as_json.output
    lines = as_json.stdout.splitlines()
    events = [StreamEvent.model_validate_json(line) for line in lines if line.startswith('{"id"')]
    assert [e.kind for e in events][:1] == ["step_started"] and events[-1].kind == "run_finished"
    final = json.loads(as_json.stdout[as_json.stdout.index("{\n") :])
    assert final["status"] == "succeeded"
    assert assemble(events) == {events[0].step: final["result"]["steps"][0]["output"]}
