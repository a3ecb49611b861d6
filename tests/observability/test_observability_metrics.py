"""Worker metrics, health endpoints, dashboards and alert rules.

The metrics test runs a real sequential run (real LLM activity against the scripted stub server,
real Temporal and PostgreSQL), then scrapes ``/metrics`` and the SDK's Prometheus endpoint and
lints both with ``promtool check metrics``. The readiness test stops and restarts a PostgreSQL
of its own (never the session's) and measures how long ``/readyz`` takes to notice.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import pytest_asyncio
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from activities import LLMActivities, ProviderClients
from chorus.observability.probes import create_app, serve_http
from chorus.runtime.converter import connect, sdk_metrics_runtime
from chorus.storage import db
from starter.dev import free_port
from tests.conftest import agent, running_worker
from tests.stub_llm import Reply, StubLLM

ROOT = Path(__file__).resolve().parents[2]
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")
SDK_METRICS_FILE = ROOT / "deploy" / "prometheus" / "sdk-metric-names.txt"


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[StubLLM]:
    with StubLLM() as server:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        yield server


def sdk_families() -> set[str]:
    lines = SDK_METRICS_FILE.read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def promtool_check_metrics(text: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@needs_promtool
async def test_metrics_after_a_run_pass_promtool(client, make_settings, stub, tmp_path):
    # analyst: openai model missing (404, non-retryable) -> falls back to local.
    # writer: HTTP 500 once (retried), then an answer.
    stub.script("m404", Reply(404))
    stub.script("m500", Reply(500), Reply(text="second time lucky"))
    settings = make_settings(
        [
            agent("obs_analyst", ["openai:m404", "local:mlocal"]),
            agent("obs_writer", ["openai:m500"]),
        ],
        local_base_url=stub.base_url,
    )
    runs_before = sample("chorus_runs_finished_total", pattern="sequential", status="succeeded")
    sdk_port = free_port()
    runtime = sdk_metrics_runtime(settings.model_copy(update={"sdk_metrics_port": sdk_port}))
    sdk_client = await connect(settings, runtime=runtime)
    clients = ProviderClients.from_settings(settings)
    try:
        async with running_worker(
            sdk_client, settings, lambda pool: LLMActivities(clients, settings, pool).call_llm
        ) as chorus:
            handle = await chorus.start_sequential("Summarise", ["obs_analyst", "obs_writer"])
            result = await handle.result()
            pool = await chorus.pool()
            app = create_app(settings, pool, sdk_client)
            transport = httpx2.ASGITransport(app=app)
            async with httpx2.AsyncClient(transport=transport, base_url="http://worker") as http:
                scraped = await http.get("/metrics")
                healthz = await http.get("/healthz")
        async with httpx2.AsyncClient() as http:
            sdk_scraped = await http.get(f"http://127.0.0.1:{sdk_port}/metrics")
    finally:
        await clients.close()
    assert [s.provider for s in result.steps] == ["local", "openai"]
    assert (healthz.status_code, healthz.json()) == (200, {"status": "ok"})

    assert scraped.status_code == 200
    (tmp_path / "chorus.prom").write_text(scraped.text)
    lint = promtool_check_metrics(scraped.text)
    assert lint.returncode == 0, lint.stdout + lint.stderr

    found = families(scraped.text)
    duration = found["chorus_llm_request_duration_seconds"]
    counts = {
        (s.labels["provider"], s.labels["model"], s.labels["agent"], s.labels["outcome"]): s.value
        for s in duration.samples
        if s.name.endswith("_count") and s.labels["agent"].startswith("obs_")
    }
    assert counts == {
        ("openai", "m404", "obs_analyst", "ModelNotFound"): 1,
        ("local", "mlocal", "obs_analyst", "ok"): 1,
        ("openai", "m500", "obs_writer", "ProviderUnavailable"): 1,
        ("openai", "m500", "obs_writer", "ok"): 1,
    }
    buckets = [s for s in duration.samples if s.name.endswith("_bucket")]
    assert len({s.labels["le"] for s in buckets}) == 21  # 20 bounds + +Inf

    def value(family: str, suffix: str = "_total", **labels: str) -> float:
        return float(
            sum(
                s.value
                for s in found[family].samples
                if s.name == family + suffix
                and all(s.labels.get(k) == v for k, v in labels.items())
            )
        )

    step = result.steps[1]
    assert value("chorus_llm_tokens", agent="obs_writer", direction="input") == step.input_tokens
    assert value("chorus_llm_tokens", agent="obs_writer", direction="output") == step.output_tokens
    assert "chorus_llm_cost_usd" in found
    assert value("chorus_llm_retries", agent="obs_writer", provider="openai") == 1
    assert value("chorus_llm_retries", agent="obs_analyst") == 0
    assert value("chorus_llm_fallbacks", agent="obs_analyst", provider="local") == 1
    assert value("chorus_llm_fallbacks", agent="obs_writer") == 0
    after = value("chorus_runs_finished", pattern="sequential", status="succeeded")
    assert after == runs_before + 1
    assert value("chorus_run_duration_seconds", "_count", pattern="sequential") >= 1
    assert any(s.labels.get("scope") == "daily" for s in found["chorus_budget_spent_usd"].samples)
    assert found["chorus_drafts_active"].samples[0].value == 0

    assert sdk_scraped.status_code == 200
    lint = promtool_check_metrics(sdk_scraped.text)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    sdk_names = set(families(sdk_scraped.text))
    assert {"temporal_workflow_task_schedule_to_start_latency", "temporal_request"} <= sdk_names
    # The dashboard test checks SDK metric names against this list, taken from a real scrape.
    known = sdk_families()
    missing = {n for n in sdk_names if n.startswith("temporal_")} - known
    assert not missing, f"add to {SDK_METRICS_FILE.name}: {sorted(missing)}"


# --- readiness ----------------------------------------------------------------------------


@pytest_asyncio.fixture
async def readyz_url(client, make_settings, own_postgres, stub) -> AsyncIterator[str]:
    settings = make_settings(
        [agent("obs_ready", ["openai:gpt-4o-mini"])], database_url=own_postgres.url
    )
    pool = await db.open_store(settings, max_size=2)
    port = free_port()
    try:
        async with serve_http(create_app(settings, pool, client), "127.0.0.1", port):
            yield f"http://127.0.0.1:{port}/readyz"
    finally:
        await pool.close()


async def poll_until(url: str, status: int, limit_s: float) -> tuple[float, httpx2.Response]:
    started = time.monotonic()
    async with httpx2.AsyncClient(timeout=5.0) as http:
        while True:
            response = await http.get(url)
            elapsed = time.monotonic() - started
            if response.status_code == status or elapsed > limit_s:
                return elapsed, response
            await asyncio.sleep(0.2)


async def test_readyz_follows_postgres_down_and_up(readyz_url, own_postgres):
    _, ready = await poll_until(readyz_url, 200, 5)
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"temporal", "postgres", "providers"}

    await asyncio.to_thread(own_postgres.stop)
    down_s, down = await poll_until(readyz_url, 503, 5)
    print(f"/readyz 503 after {down_s:.2f} s with PostgreSQL stopped")
    assert down.status_code == 503, f"still {down.status_code} after {down_s:.1f} s"
    checks = down.json()["checks"]
    assert checks["postgres"]["status"] == "fail" and checks["postgres"]["reason"]
    assert checks["temporal"]["status"] == "ok"

    restarted = time.monotonic()
    await asyncio.to_thread(own_postgres.start)
    restart_s = time.monotonic() - restarted
    up_s, up = await poll_until(readyz_url, 200, 10)
    print(f"PostgreSQL restarted in {restart_s:.2f} s; /readyz 200 again {up_s:.2f} s later")
    assert up.status_code == 200, up.text
    assert down_s < 5


async def test_readyz_names_agents_without_a_usable_provider(client, make_settings):
    settings = make_settings([agent("obs_stranded", ["anthropic:claude-x", "local:m"])])
    pool = await db.open_store(settings, max_size=2)
    try:
        app = create_app(settings, pool, client)
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://worker") as http:
            response = await http.get("/readyz")
    finally:
        await pool.close()
    assert response.status_code == 503
    providers = response.json()["checks"]["providers"]
    assert providers["status"] == "fail"
    assert "obs_stranded" in providers["reason"]
    assert "ANTHROPIC_API_KEY" in providers["reason"]


# --- dashboards and alert rules --------------------------------------------------------------

DASHBOARD = ROOT / "deploy" / "grafana" / "chorus-dashboard.json"
PROMQL_FUNCTIONS = {
    "sum", "rate", "irate", "increase", "histogram_quantile", "by", "without", "le", "max",
    "min", "avg", "count", "clamp_min", "clamp_max", "absent", "on", "ignoring", "group_left",
    "and", "or", "unless", "bool", "vector", "time", "label_replace", "topk", "offset",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """Identifiers in a PromQL expression that name metrics (not functions, labels or units)."""
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # grouping labels
    expr = re.sub(r'"[^"]*"', "", expr)
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
    return {n for n in names if n not in PROMQL_FUNCTIONS and not n.startswith("$")}


def exported_names() -> set[str]:
    chorus: set[str] = set()
    for metric in REGISTRY.collect():
        chorus |= {s.name for s in metric.samples}
    import chorus.observability.metrics as m

    for value in vars(m).values():  # families without samples yet (labelled, never used)
        for collector in value.values() if isinstance(value, dict) else [value]:
            if not isinstance(collector, MetricWrapperBase):
                continue
            for family in collector.describe():
                kind = family.type
                suffixes = {
                    "counter": ["_total", "_created"],
                    "histogram": ["_bucket", "_sum", "_count", "_created"],
                    "gauge": [""],
                }.get(kind, [""])
                chorus |= {family.name + s for s in suffixes}
    sdk = {n + s for n in sdk_families() for s in ("", "_total", "_bucket", "_sum", "_count")}
    return chorus | sdk


def test_dashboard_uses_only_exported_metrics():
    board = json.loads(DASHBOARD.read_text())
    assert board["title"] and board["panels"]
    exprs = [
        target["expr"]
        for panel in board["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    assert len(exprs) >= 10
    known = exported_names()
    used = set().union(*(metric_names(e) for e in exprs))
    assert used, exprs
    assert used <= known, f"unknown metrics in the dashboard: {sorted(used - known)}"


def test_alert_rules_use_only_exported_metrics():
    text = (ROOT / "deploy" / "prometheus" / "alerts.yml").read_text()
    exprs = re.findall(r"expr:\s*(?:\|\s*\n)?((?:.+\n?)+?)(?=\s+(?:for|labels):)", text)
    assert exprs
    used = set().union(*(metric_names(e) for e in exprs))
    assert used <= exported_names(), sorted(used - exported_names())


@needs_promtool
def test_promtool_accepts_rules_and_config():
    assert PROMTOOL is not None
    rules = subprocess.run(
        [PROMTOOL, "check", "rules", str(ROOT / "deploy" / "prometheus" / "alerts.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS: 5 rules found" in rules.stdout
    config = subprocess.run(
        [PROMTOOL, "check", "config", str(ROOT / "deploy" / "prometheus" / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert config.returncode == 0, config.stdout + config.stderr
