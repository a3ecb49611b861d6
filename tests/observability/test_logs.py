"""JSON logs: one run's lines selectable with jq, no secret or PII in any line; tracing."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import structlog
from temporalio import activity, workflow

from activities import LLMActivities, ProviderClients
from chorus.config.settings import Settings
from chorus.contracts.models import AgentStep, SequentialStep
from chorus.observability import tracing
from chorus.observability.logs import SecretScrubber, configure_logging, secret_values
from chorus.runtime.converter import connect
from tests.conftest import agent, running_worker
from tests.pii_corpus import POSITIVES
from tests.stub_llm import Reply, StubLLM

OPENAI_KEY = "sk-test-SECRETVALUE123"
CALLBACK_SECRET = "cb-secret-4f9a1c"
DOCUMENT = "\n".join(sample.text for sample in POSITIVES)
PII_VALUES = sorted({value for sample in POSITIVES for _kind, value in sample.expected})
# One sample of each kind, echoed back in provider error messages (which the SDK and Chorus log).
ECHOED = ", ".join({kind: value for s in POSITIVES for kind, value in s.expected}.values())


@contextmanager
def json_logs(path: Path, settings: Settings) -> Iterator[None]:
    """Configure Chorus logging to ``path``; restore the process's logging afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_structlog = structlog.get_config()
    saved_flags = (
        activity.logger.activity_info_on_message,
        workflow.logger.workflow_info_on_message,
        workflow.logger.full_workflow_info_on_extra,
    )
    with path.open("w") as stream:
        configure_logging("INFO", stream=stream, settings=settings)
        try:
            yield
        finally:
            root.handlers[:] = saved_handlers
            root.setLevel(saved_level)
            structlog.reset_defaults()
            structlog.configure(**saved_structlog)
            (
                activity.logger.activity_info_on_message,
                workflow.logger.workflow_info_on_message,
                workflow.logger.full_workflow_info_on_extra,
            ) = saved_flags


def jq(filter_: str, path: Path, **args: str) -> list[dict[str, Any]]:
    """Run the real ``jq -c`` over ``path``; return the selected lines, parsed."""
    argv = ["jq", "-c"]
    for name, value in args.items():
        argv += ["--arg", name, value]
    out = subprocess.run([*argv, filter_, str(path)], check=True, capture_output=True, text=True)
    return [json.loads(line) for line in out.stdout.splitlines()]


SELECT_RUN = "select(.workflow_id == $id or .root_workflow_id == $id)"


async def test_run_lines_selectable_by_workflow_id_without_secrets_or_pii(
    client, make_settings, monkeypatch, tmp_path
):
    monkeypatch.setenv("CHORUS_CALLBACK_SECRET", CALLBACK_SECRET)
    log_file = tmp_path / "worker.log"
    with StubLLM() as stub:
        monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
        # A provider that quotes the key and the prompt's PII back in its error messages:
        # the SDK's failure lines and Chorus's fallback warnings would carry them.
        stub.script("m401", Reply(401, error_message=f"bad key {OPENAI_KEY} for {ECHOED}"))
        stub.script("m500", Reply(500, error_message=f"overloaded {OPENAI_KEY} {ECHOED}"))
        stub.script("m403", Reply(401, error_message=f"denied {OPENAI_KEY}"))
        settings = make_settings(
            [
                agent("analyst", ["openai:m401", "openai:ok"]),
                agent("writer", ["openai:m403", "openai:m500"]),
            ],
            local_base_url=stub.base_url,
            callback_secret=CALLBACK_SECRET,
        )
        workflow_id = f"logs-{uuid.uuid4().hex[:8]}"
        clients = ProviderClients.from_settings(settings)
        with json_logs(log_file, settings):
            try:
                async with running_worker(
                    client, settings, lambda pool: LLMActivities(clients, settings, pool).call_llm
                ) as chorus:
                    handle = await chorus.start_sequential(
                        f"Summarise the contacts; mail {ECHOED}",
                        ["analyst", SequentialStep(steps=[AgentStep(agent="writer")])],
                        document=DOCUMENT,
                        workflow_id=workflow_id,
                    )
                    result = await handle.result()
            finally:
                await clients.close()
    assert [s.status for s in result.steps] == ["succeeded", "succeeded"]
    child_id = f"{workflow_id}-s2"

    text = log_file.read_text()
    lines = [json.loads(line) for line in text.splitlines()]  # every line is JSON
    assert lines
    for secret in (OPENAI_KEY, CALLBACK_SECRET):
        assert secret not in text
    leaked = [v for v in PII_VALUES if v in text]
    assert leaked == [], f"PII in the logs: {leaked[:5]}"
    # ...and it is not because nothing was logged: the redactions happened on real lines.
    assert "[SECRET]" in text and "[EMAIL]" in text

    run = jq(SELECT_RUN, log_file, id=workflow_id)
    # The fallback warnings of the parent and of the child workflow (workflow.logger).
    assert {
        (line["workflow_id"], line["event"].split(":")[0])
        for line in run
        if line["logger"] == "temporalio.workflow"
    } == {(workflow_id, "agent analyst"), (child_id, "agent writer")}
    llm = [line for line in run if line.get("activity_type") == "chorus.call_llm"]
    assert {(line["agent"], line["workflow_id"]) for line in llm} == {
        ("analyst", workflow_id),
        ("writer", child_id),
    }
    assert all(line["root_workflow_id"] == workflow_id and line["run_id"] for line in run)
    # The writer's first attempt failed (HTTP 500); its retry logs attempt 2.
    assert {line["attempt"] for line in llm if line["agent"] == "writer"} >= {1, 2}
    # The child's lines also come on their own, selected by the child's id.
    child = jq(SELECT_RUN, log_file, id=child_id)
    assert child and all(line["workflow_id"] == child_id for line in child)
    assert {line["workflow_type"] for line in child} == {"ChorusSequential"}


def test_secret_scrubber_masks_configured_values_and_shapes():
    env = {
        "CHORUS_CODEC_KEYS": "k2:QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=,k1:MTIzNDU2Nzg5MDEyMzQ1Njc4",
        "DATABASE_URL": "postgresql://chorus:pgpass-77@db:5432/chorus",
        "CHORUS_LOCAL_API_KEY": "not-needed",
        "ANTHROPIC_API_KEY": "abc",  # too short to be redacted as a secret
    }
    scrub = SecretScrubber(secret_values(env)).scrub
    assert scrub("key QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo= rotated") == "key [SECRET] rotated"
    assert "pgpass-77" not in scrub("password pgpass-77 rejected")
    assert scrub("to redis://u:p4ss@cache:6379/0") == "to redis://u:***@cache:6379/0"
    assert scrub("Authorization: Bearer abcdefgh12345678") == "Authorization: Bearer [SECRET]"
    assert scrub("key sk-proj-AAAAAAAAAAAAAAAAAAAAAA") == "key [SECRET]"
    assert scrub("not-needed abc") == "not-needed abc"


def test_structlog_lines_are_scrubbed_everywhere_in_the_line(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    settings = Settings(codec_server_token="tok-123456789")
    stream = io.StringIO()
    path = tmp_path / "x.log"
    with json_logs(path, settings):
        handler = logging.getLogger().handlers[0]
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(stream)
        structlog.get_logger("t").info(
            f"calling with {OPENAI_KEY}",
            nested={"token": "tok-123456789", "to": ["jane.doe@example.com"]},
        )
        try:
            raise RuntimeError(f"failed for jane.doe@example.com with {OPENAI_KEY}")
        except RuntimeError:
            logging.getLogger("stdlib").exception("boom")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["event"] == "calling with [SECRET]"
    assert first["nested"] == {"token": "[SECRET]", "to": ["[EMAIL]"]}
    assert "jane.doe" not in second["exception"] and OPENAI_KEY not in second["exception"]


async def test_spans_link_client_workflow_and_activities(env, make_settings, fake_llm, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    pytest.importorskip("opentelemetry.sdk", reason="needs the otel extra (opentelemetry-sdk)")
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    tracing.configure_tracing(exporter, batch=False, set_global=False)
    try:
        settings = make_settings([agent("analyst", ["openai:gpt-4o-mini"])])
        traced = await connect(
            settings
        )  # the production path: interceptors from chorus.observability.tracing
        async with running_worker(traced, settings, lambda pool: fake_llm.call_llm) as chorus:
            handle = await chorus.start_sequential("Do it", ["analyst"])
            await handle.result()
    finally:
        tracing.reset_tracing()
    spans = exporter.get_finished_spans()
    names = {span.name for span in spans}
    for expected in (
        "StartWorkflow:ChorusSequential",
        "RunWorkflow:ChorusSequential",
        "StartActivity:chorus.call_llm",
        "RunActivity:chorus.call_llm",
    ):
        assert expected in names, sorted(names)
    traces = {span.context.trace_id for span in spans if span.name.endswith("chorus.call_llm")}
    start = next(s for s in spans if s.name == "StartWorkflow:ChorusSequential")
    assert traces == {start.context.trace_id}


def test_tracing_is_off_without_an_endpoint(monkeypatch):
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert tracing.client_interceptors() == []
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    assert tracing.tracing_enabled()
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not tracing.tracing_enabled()


@pytest.fixture(autouse=True)
def _no_leftover_tracing() -> Iterator[None]:
    yield
    tracing.reset_tracing()
