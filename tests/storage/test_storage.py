"""The PostgreSQL record, on a real PostgreSQL, through real workflows and activities."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from pathlib import Path

import asyncpg
import pytest
from temporalio.worker import Replayer

from activities import LLMActivities, ProviderClients
from chorus.config.catalog import CatalogError, load_catalog
from chorus.config.settings import Settings
from chorus.contracts.models import AgentSpec, AgentStep, ParallelStep
from chorus.runtime.plugin import ChorusPlugin
from chorus.storage import db
from starter.health import check_health
from tests.conftest import agent, running_worker, sdk
from tests.stub_llm import Reply, StubLLM


@pytest.fixture
def stub(monkeypatch):
    with StubLLM() as server:
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", f"http://127.0.0.1:{server.port}")
        yield server


def real_llm(settings: Settings, clients: ProviderClients):
    return lambda pool: LLMActivities(clients, settings, pool).call_llm


async def counts(pool: asyncpg.Pool, root: str) -> dict[str, int]:
    return {
        "runs": await pool.fetchval("SELECT count(*) FROM runs WHERE root_workflow_id = $1", root),
        "messages": await pool.fetchval(
            "SELECT count(*) FROM messages WHERE root_workflow_id = $1", root
        ),
        "ledger": await pool.fetchval(
            "SELECT count(*) FROM cost_ledger WHERE root_workflow_id = $1", root
        ),
    }


async def test_one_row_per_run_and_per_call_despite_retries_and_replay(client, make_settings, stub):
    stub.script("m-flaky", Reply(500), Reply(503))  # the writer's call is retried twice
    settings = make_settings(
        [
            agent("analyst", ["local:m-ok"]),
            agent("writer", ["local:m-flaky"]),
            agent("critic", ["anthropic:claude-haiku-4-5"]),
            agent("aggregator", ["local:m-ok"]),
        ],
        local_base_url=stub.base_url,
    )
    clients = ProviderClients.from_settings(settings)
    # max_cached_workflows=0: every workflow task replays the whole history from the start.
    async with running_worker(
        client, settings, real_llm(settings, clients), max_cached_workflows=0
    ) as chorus:
        handle = await chorus.start_sequential(
            "t",
            [
                "analyst",
                ParallelStep(branches=[AgentStep(agent="writer"), AgentStep(agent="critic")]),
                "writer",
            ],
        )
        result = await handle.result()
        pool = await chorus.pool()
        rows = await counts(pool, handle.workflow_id)
        run = await db.run_row(pool, handle.workflow_id)
        child = await db.run_row(pool, f"{handle.workflow_id}-s2")
        history = await client.get_workflow_handle(handle.workflow_id).fetch_history()
        await Replayer(workflows=[], plugins=[ChorusPlugin()]).replay_workflow(history)
        assert await counts(pool, handle.workflow_id) == rows  # replay wrote nothing
        archived = await chorus.transcript(handle.workflow_id)
        # The archive (built in SQL by chorus.finish_run) reads exactly like the live messages.
        await pool.execute("DELETE FROM transcripts WHERE workflow_id = $1", handle.workflow_id)
        live = await chorus.transcript(handle.workflow_id)
    await clients.close()

    assert archived == live

    assert result.steps[1].steps[0].attempts == 3  # 500, 503, then success
    # 2 runs (parent + parallel child); 5 calls: analyst, writer, critic, aggregator, writer
    assert rows == {"runs": 2, "messages": 5, "ledger": 5}
    assert len(stub.for_model("m-flaky")) == 4  # 3 attempts for the first writer call, 1 later
    assert run is not None and run["status"] == "succeeded" and run["llm_calls"] == 5
    assert run["agent_versions"] == {"analyst": 1, "writer": 1, "critic": 1, "aggregator": 1}
    assert child is not None and child["parent_workflow_id"] == handle.workflow_id
    # in completion order (the two parallel branches may finish either way round)
    agents = [m["agent"] for m in archived]
    assert agents[0] == "analyst" and agents[3:] == ["aggregator", "writer"]
    assert sorted(agents[1:3]) == ["critic", "writer"]
    assert {m["workflow_id"] for m in archived} == {handle.workflow_id, child["workflow_id"]}
    assert float(run["cost_usd"]) == pytest.approx((11 * 1.0 + 7 * 5.0) / 1e6)


@pytest.mark.parametrize("retried_in", ["the same attempt", "the next attempt"])
async def test_completion_is_reused_when_recording_fails(
    client, make_settings, stub, monkeypatch, retried_in
):
    """A completion received but not recorded is recorded later, never bought again: by the
    same attempt (it retries recording until its deadline nears), or, when the deadline is
    near, by the next attempt from the first one's heartbeat details."""
    if retried_in == "the next attempt":
        import activities.llm

        monkeypatch.setattr(activities.llm, "RECORD_DEADLINE_MARGIN_S", 10_000.0)
    settings = make_settings([agent("analyst", ["local:m-once"])], local_base_url=stub.base_url)
    real_record = db.record_call
    failures: list[int] = []

    async def flaky_record(*args, **kwargs):
        if not failures:
            failures.append(1)
            raise asyncpg.InterfaceError("connection lost (injected)")
        await real_record(*args, **kwargs)

    monkeypatch.setattr(db, "record_call", flaky_record)
    clients = ProviderClients.from_settings(settings)
    async with running_worker(client, settings, real_llm(settings, clients)) as chorus:
        result = await chorus.run_sequential("t", ["analyst"])
        message = await (await chorus.pool()).fetchrow(
            "SELECT attempt, completion FROM messages WHERE workflow_id = $1", result.workflow_id
        )
    await clients.close()
    assert len(stub.for_model("m-once")) == 1  # the provider was paid once
    assert failures == [1]
    # one or two activity attempts...
    assert result.steps[0].attempts == (1 if retried_in == "the same attempt" else 2)
    assert message is not None and message["attempt"] == 1  # ...the provider called in the first
    assert message["completion"] == result.output


async def test_ten_megabyte_document_goes_by_reference(client, make_settings, stub):
    settings = make_settings(
        [agent("analyst", ["local:m-big"]), agent("summarizer", ["local:m-big"])],
        local_base_url=stub.base_url,
    )
    line = "2026-11-21T10:00:00Z sshd[42]: Failed password for invalid user admin from 10.0.0.1\n"
    document = line * (10_000_000 // len(line) + 1)
    assert len(document.encode()) > 10_000_000
    clients = ProviderClients.from_settings(settings)
    async with running_worker(client, settings, real_llm(settings, clients)) as chorus:
        handle = await chorus.start_sequential(
            "Find the attacks",
            ["analyst", "summarizer"],
            document=document,
            document_name="big.log",
        )
        result = await handle.result()
        desc = await client.get_workflow_handle(handle.workflow_id).describe()
        pool = await chorus.pool()
        blobs = await pool.fetchval("SELECT count(*) FROM blobs")
        run = await db.run_row(pool, handle.workflow_id)
    await clients.close()

    info = desc.raw_description.workflow_execution_info
    assert info.history_size_bytes < 200_000  # the 10 MB stays out of the history
    assert blobs == 1  # stored once, read by both agents
    assert run is not None and run["document_bytes"] == len(document.encode())
    assert all(s.truncated_chars > 9_900_000 for s in result.steps)  # cut to the context window
    bodies = [json.dumps(r.body) for r in stub.for_model("m-big")]
    assert len(bodies) == 2 and all(len(b) < 40_000 for b in bodies)
    assert "Failed password" in bodies[0]


async def test_config_change_mid_run_and_rollback(client, make_settings, fake_llm):
    settings = make_settings([agent("analyst", ["local:fake"]), agent("writer", ["local:fake"])])
    gate = fake_llm.gate("writer")
    async with running_worker(client, settings, lambda _pool: fake_llm.call_llm) as chorus:
        before = await chorus.start_sequential("t", ["analyst", "writer"])
        await asyncio.wait_for(fake_llm.started["writer"].wait(), 20)
        # Change the writer while `before` is running, without restarting the worker.
        old = (await chorus.agents())["writer"]
        new = old.model_copy(update={"instructions": "You are writer, version two."})
        assert await chorus.set_agents([new], author="alice", comment="tone") == [
            ("writer", 2, True)
        ]
        gate.set()
        before_result = await before.result()
        after_result = await chorus.run_sequential("t", ["analyst", "writer"])
        rolled = await chorus.rollback_agent("writer", 1, author="bob")
        rolled_result = await chorus.run_sequential("t", ["writer"])
        history = await chorus.agent_history("writer")

    writer_calls = [c for c in fake_llm.calls if c.agent == "writer"]
    assert [c.instructions for c in writer_calls] == [
        "You are writer.",  # started before the change: keeps v1
        "You are writer, version two.",  # started after: v2, same worker
        "You are writer.",  # after rollback to v1's configuration (stored as v3)
    ]
    assert before_result.steps[1].agent_version == 1
    assert after_result.steps[1].agent_version == 2
    assert rolled.version == 3 and rolled_result.steps[0].agent_version == 3
    assert [(h.version, h.author, h.comment) for h in history] == [
        (3, "bob", "rollback to v1"),
        (2, "alice", "tone"),
        (1, f"seed:{settings.agents_file.name}", "seeded from the agent catalog file"),
    ]


async def test_bad_configuration_changes_store_nothing(client, make_settings, tmp_path: Path):
    settings = make_settings([agent("analyst", ["local:fake"])])
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "agents:\n"
        "  - {name: analyst, instructions: changed, providers: [local:fake]}\n"
        "  - {name: writer, instructions: x, providers: [local:fake], max_tokens: 0}\n"
    )
    async with sdk(client, settings) as chorus:
        before = await chorus.agent_history("analyst")
        with pytest.raises(CatalogError, match="agent 'writer': max_tokens"):
            load_catalog(bad)
        with pytest.raises(db.AgentConfigError, match="unknown agent 'nobody'"):
            await chorus.agent_history("nobody")
        with pytest.raises(db.AgentConfigError, match="has no version 9; kept versions: 1"):
            await chorus.rollback_agent("analyst", 9, author="x")
        # A batch is all or nothing: the second insert fails, the first is rolled back.
        good = AgentSpec.model_validate(agent("analyst", ["local:fake"], instructions="new"))
        pool = await chorus.pool()
        await pool.execute("ALTER TABLE agent_configs ADD CONSTRAINT no_x CHECK (name <> 'xbreak')")
        broken = AgentSpec.model_validate(agent("xbreak", ["local:fake"]))
        with pytest.raises(asyncpg.CheckViolationError):
            await chorus.set_agents([good, broken], author="x")
        assert await chorus.agent_history("analyst") == before


async def test_unreachable_database_is_named(tmp_path: Path):
    settings = Settings(database_url="postgresql://chorus:secret@127.0.0.1:9/chorus")
    with pytest.raises(db.DatabaseError) as err:
        await db.create_pool(settings)
    message = str(err.value)
    assert "cannot connect to PostgreSQL at postgresql://chorus:***@127.0.0.1:9/chorus" in message
    assert "secret" not in message
    with pytest.raises(db.DatabaseError, match="set DATABASE_URL, or start the embedded one"):
        db.database_url(Settings(data_dir=tmp_path))


async def test_costs_and_health(client, make_settings, stub):
    settings = make_settings(
        [agent("analyst", ["anthropic:claude-haiku-4-5"]), agent("writer", ["local:m-free"])],
        local_base_url=stub.base_url,
    )
    clients = ProviderClients.from_settings(settings)
    async with running_worker(client, settings, real_llm(settings, clients)) as chorus:
        await chorus.run_sequential("t", ["analyst", "writer"])
        await chorus.run_sequential("t", ["analyst"])
        by_agent = {r.key: r for r in await chorus.costs(by="agent")}
        by_model = {r.key: r for r in await chorus.costs(by="model")}
        by_day = await chorus.costs(by="day")
        report = await check_health(settings)
    await clients.close()

    assert by_agent["analyst"].calls == 2 and by_agent["writer"].calls == 1
    assert by_agent["analyst"].cost_usd == pytest.approx(2 * (11 * 1.0 + 7 * 5.0) / 1e6)
    assert by_model["local:m-free"].cost_usd == 0 and by_model["local:m-free"].input_tokens == 13
    assert len(by_day) == 1 and by_day[0].calls == 3
    assert report.status == "healthy", report.reasons
    assert {c.name for c in report.checks} == {
        "temporal",
        "postgres",
        "provider anthropic",
        "provider local",
    }
    assert all(c.latency_ms is not None for c in report.checks)


async def test_health_names_what_is_down(make_settings):
    settings = make_settings(
        [agent("analyst", ["local:m"])], local_base_url="http://127.0.0.1:9/v1"
    )
    report = await check_health(
        settings.model_copy(update={"database_url": "postgresql://x@127.0.0.1:9/x"})
    )
    assert report.status == "unhealthy"
    assert any(r.startswith("postgres is down") for r in report.reasons)
    assert any("no reachable provider for agent(s)" in r for r in report.reasons)


@pytest.mark.parametrize("timezone", ["UTC", "America/New_York"])
async def test_archived_transcript_reads_like_the_live_one(database_url, timezone):
    """created_at in the archive (built in SQL) is Python's isoformat() of the UTC time."""
    from datetime import UTC, datetime

    from chorus.contracts.models import StartRunInput

    pool = await db.open_store(Settings(database_url=database_url))
    try:
        name = await pool.fetchval("SELECT current_database()")
        await pool.execute(f"ALTER DATABASE \"{name}\" SET timezone = '{timezone}'")
        await pool.expire_connections()
        now = datetime.now(UTC)
        run = StartRunInput(
            pattern="sequential", task="t", names=["a"], root_workflow_id="w", started_at=now
        )
        await db.record_run_started(pool, run, workflow_id="w", run_id="r", agent_versions={})
        for n, stamp in enumerate(["10:00:00.120000", "10:00:00", "10:00:00.123456"]):
            await db.record_call(
                pool, workflow_id="w", root_workflow_id="w", activity_id=str(n), agent="a",
                agent_version=None, provider="openai", model="m", system_prompt="s",
                user_prompt="u", completion="c", input_tokens=1, output_tokens=1, cost_usd=0.1,
                cost_known=True, latency_ms=1.5, attempt=1, truncated_chars=0,
            )  # fmt: skip
            await pool.execute(
                "UPDATE messages SET created_at = $1::timestamptz WHERE activity_id = $2",
                datetime.fromisoformat(f"2026-01-01T{stamp}+00:00"),
                str(n),
            )
        await db.record_run_finished(
            pool, workflow_id="w", status="succeeded", finished_at=now, totals={}, output=None,
            error=None, archive=True,
        )  # fmt: skip
        archived = await db.transcript(pool, "w")
        await pool.execute("DELETE FROM transcripts")
        live = await db.transcript(pool, "w")
    finally:
        await pool.close()
    assert [m["created_at"] for m in archived] == [
        "2026-01-01T10:00:00.120000+00:00",
        "2026-01-01T10:00:00+00:00",
        "2026-01-01T10:00:00.123456+00:00",
    ]
    assert archived == live


async def test_run_start_and_finish_each_take_one_statement(database_url):
    """Issue 19: ``chorus.start_run`` reads a top-level run's agents and inserts its row in one
    statement (only when every agent is known); ``chorus.finish_run`` closes the row and writes
    the run's ``run_finished`` stream event in one statement (migration 0016)."""
    from datetime import UTC, datetime

    from chorus.contracts.models import StartRunInput

    pool = await db.open_store(Settings(database_url=database_url))
    try:
        spec = AgentSpec.model_validate(
            {"name": "a", "instructions": "hi", "providers": ["local:m"]}
        )
        await db.seed_agents(pool, {"a": spec}, "test")
        now = datetime.now(UTC)

        def run(*names: str) -> StartRunInput:
            return StartRunInput(
                pattern="sequential", task="t", names=list(names), root_workflow_id="w",
                started_at=now,
            )  # fmt: skip

        unknown = await db.resolve_and_record_run(
            pool, run("a", "ghost"), workflow_id="w", run_id="r1"
        )
        assert (set(unknown.agents), unknown.stored_run_id, unknown.inserted) == (
            {"a"},
            None,
            False,
        )
        assert await db.run_row(pool, "w") is None

        first = await db.resolve_and_record_run(pool, run("a", "a"), workflow_id="w", run_id="r1")
        assert (first.agents["a"].version, first.stored_run_id, first.inserted) == (1, "r1", True)
        row = await db.run_row(pool, "w")
        assert row is not None
        assert (row["agents"], row["agent_versions"], row["status"]) == (
            ["a", "a"],
            {"a": 1},
            "running",
        )
        again = await db.resolve_and_record_run(pool, run("a"), workflow_id="w", run_id="r1")
        assert (again.stored_run_id, again.inserted) == ("r1", False)
        reused = await db.resolve_and_record_run(pool, run("a"), workflow_id="w", run_id="r2")
        assert (reused.stored_run_id, reused.inserted) == ("r1", False)

        await db.forget_run_started(pool, "w", "r2")  # not its row: nothing happens
        assert await db.run_row(pool, "w") is not None

        def finish(workflow_id: str, archive: bool) -> Awaitable[asyncpg.Record | None]:
            return db.record_run_finished(
                pool, workflow_id=workflow_id, status="succeeded", finished_at=now, totals={},
                output="o", error=None, archive=archive,
            )  # fmt: skip

        before = await finish("w", archive=True)
        assert before is not None and before["status"] == "running"
        assert (await db.run_row(pool, "w") or {})["status"] == "succeeded"
        assert await finish("no-row", archive=True) is None  # the event is written all the same
        assert await finish("child", archive=False) is None
        events = await pool.fetch(
            "SELECT run_id, text FROM stream_events WHERE kind = 'run_finished' ORDER BY id"
        )
        assert [(e["run_id"], e["text"]) for e in events] == [
            ("w", "succeeded"),
            ("no-row", "succeeded"),
        ]

        second = await db.resolve_and_record_run(pool, run("a"), workflow_id="w2", run_id="r3")
        await db.forget_run_started(pool, "w2", "r3")  # a run that could not start after all
        assert second.inserted and await db.run_row(pool, "w2") is None
    finally:
        await pool.close()


async def test_a_last_call_closes_only_a_running_row(database_url):
    """Issue 19: the run's last call closes the row with ``only_running``. Once the row is
    closed (by an earlier attempt of that call, or by ``chorus.finish_run``), a stale attempt
    writes nothing: not the row, not the transcript, not a second ``run_finished``."""
    from datetime import UTC, datetime, timedelta

    from chorus.contracts.models import StartRunInput

    pool = await db.open_store(Settings(database_url=database_url))
    try:
        now = datetime.now(UTC)
        run = StartRunInput(
            pattern="sequential", task="t", names=["a"], root_workflow_id="w", started_at=now
        )
        await db.record_run_started(pool, run, workflow_id="w", run_id="r", agent_versions={})

        def close(attempts: int, at: datetime) -> Awaitable[asyncpg.Record | None]:
            return db.record_run_finished(
                pool, workflow_id="w", status="succeeded", finished_at=at,
                totals={"llm_calls": 1, "attempts": attempts}, output=f"o{attempts}", error=None,
                archive=True, only_running=True,
            )  # fmt: skip

        first = await close(2, now + timedelta(seconds=1))
        assert first is not None and first["status"] == "running"
        stale = await close(1, now + timedelta(seconds=2))
        assert stale is None
        row = await db.run_row(pool, "w")
        assert row is not None
        assert (row["status"], row["attempts"], row["output"]) == ("succeeded", 2, "o2")
        assert row["finished_at"] == now + timedelta(seconds=1)
        events = await pool.fetchval(
            "SELECT count(*) FROM stream_events WHERE kind = 'run_finished' AND run_id = 'w'"
        )
        assert events == 1
        # chorus.finish_run (without only_running) still rewrites a closed row.
        rewritten = await db.record_run_finished(
            pool, workflow_id="w", status="cancelled", finished_at=now, totals={}, output=None,
            error="cancelled", archive=True,
        )  # fmt: skip
        assert rewritten is not None and rewritten["status"] == "succeeded"
        assert (await db.run_row(pool, "w") or {})["status"] == "cancelled"
    finally:
        await pool.close()
