"""An open circuit breaker seen by runs, ``chorus providers list|reset`` and ``chorus top``.

A real dev server, PostgreSQL, an in-process worker and the loopback stub; the breaker is
opened through PostgreSQL as other workers would have opened it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
from temporalio.client import Client
from typer.testing import CliRunner, Result

from activities import LLMActivities, ProviderClients
from chorus.config.settings import Settings, get_settings
from chorus.contracts import errors
from chorus.storage import circuit_rows
from starter import top
from starter.cli import app
from starter.sdk import RunFailedError
from tests.conftest import agent, running_worker
from tests.stub_llm import StubLLM

T = TypeVar("T")


async def open_breaker(pool: asyncpg.Pool, cooldown_s: float = 60.0) -> None:
    """Open openai's breaker as 5 failures on other workers would have."""
    for _ in range(5):
        await circuit_rows.record_failure(
            pool,
            "openai",
            "",
            kind="outage",
            threshold=5,
            window_s=60.0,
            cooldown_s=cooldown_s,
            error="openai:m-down: HTTP 503 upstream overloaded",
        )


def worker(settings: Settings) -> Callable[[asyncpg.Pool], Any]:
    clients = ProviderClients.from_settings(settings)
    return lambda pool: LLMActivities(clients, settings, pool).call_llm


async def test_open_breaker_skips_to_the_fallback_without_calling_the_provider(
    client: Client, make_settings: Any, stub: StubLLM
) -> None:
    settings = make_settings(
        [agent("w", ["openai:m-down", "local:backup"])], local_base_url=stub.base_url
    )
    async with running_worker(client, settings, worker(settings)) as chorus:
        await open_breaker(await chorus.pool())
        result = await chorus.run_sequential("Summarise the notes.", ["w"])
        providers = await chorus.providers.list()
        snap = await top.snapshot(chorus)
    step = result.steps[0]
    assert (step.status, step.provider, step.model) == ("succeeded", "local", "backup")
    tried = step.providers_tried[0]
    assert (tried.provider, tried.status, tried.error_type, tried.attempts) == (
        "openai",
        "failed",
        errors.CIRCUIT_OPEN,
        1,
    )
    assert "circuit breaker of openai is open" in (tried.error or "")
    assert stub.for_model("m-down") == []  # never called
    assert len(stub.for_model("backup")) == 1

    openai = next(p for p in providers if p.name == "openai")
    assert openai.state == "open" and openai.entry["kind"] == "openai"
    assert [(b.model, b.failures) for b in openai.breakers] == [("", 5)]
    assert {p.name for p in providers} >= {"openai", "anthropic", "local"}
    assert next(p for p in providers if p.name == "local").state == "closed"
    rendered = top.render(snap)
    assert any(
        "openai open (5 failures, probe in" in str(getattr(r, "plain", ""))
        for r in rendered.renderables
    )


async def test_without_a_fallback_the_step_fails_naming_the_breaker_and_its_probe(
    client: Client, make_settings: Any, stub: StubLLM
) -> None:
    settings = make_settings([agent("w", ["openai:m-down"])])
    async with running_worker(client, settings, worker(settings)) as chorus:
        await open_breaker(await chorus.pool(), cooldown_s=45.0)
        with pytest.raises(RunFailedError) as failed:
            await chorus.run_sequential("Summarise the notes.", ["w"])
    message = str(failed.value)
    assert "circuit breaker of openai is open" in message
    assert "HTTP 503 upstream overloaded" in message
    assert "next probe call in 4" in message  # 45 s, minus the run's own time
    assert "chorus providers reset openai" in message
    assert stub.for_model("m-down") == []


@pytest.fixture
def providers_cli(
    client: Client, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Result]]:
    monkeypatch.setenv("TEMPORAL_ADDRESS", client.service_client.config.target_host)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("CHORUS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("COLUMNS", "250")
    runner = CliRunner()

    def chorus(*args: str) -> Result:
        get_settings.cache_clear()
        return runner.invoke(app, ["providers", *args])

    try:
        yield chorus
    finally:
        get_settings.cache_clear()


def in_database(database_url: str, fn: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
    """Run ``fn`` with a pool of its own (the CLI test is synchronous: the CLI runs its loop)."""

    async def go() -> T:
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        try:
            return await fn(pool)
        finally:
            await pool.close()

    return asyncio.run(go())


def test_cli_lists_every_provider_with_its_breaker_and_resets_it(
    providers_cli: Callable[..., Result], database_url: str
) -> None:
    listed = providers_cli("list")  # migrates the database
    assert listed.exit_code == 0, listed.output
    for name in ("openai", "anthropic", "local"):
        assert name in listed.stdout
    in_database(database_url, open_breaker)
    listed = providers_cli("list")
    assert listed.exit_code == 0, listed.output
    assert "open (5 failures, probe in" in listed.stdout
    rows = {p["name"]: p for p in json.loads(providers_cli("list", "--json").stdout)}
    assert rows["openai"]["state"] == "open"
    assert rows["openai"]["breakers"][0]["failures"] == 5
    assert rows["anthropic"]["state"] == "closed" and rows["anthropic"]["breakers"] == []

    reset = providers_cli("reset", "openai")
    assert reset.exit_code == 0, reset.output
    assert "circuit breaker of openai: open -> closed" in reset.stdout
    row = in_database(database_url, lambda pool: circuit_rows.read(pool, "openai", ""))
    assert row is not None and row["state"] == "closed"
    again = providers_cli("reset", "openai")
    assert "already closed" in again.stdout
    unknown = providers_cli("reset", "nosuch")
    assert unknown.exit_code == 2 and "no provider named 'nosuch'" in unknown.output
