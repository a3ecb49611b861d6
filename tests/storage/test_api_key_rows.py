"""The ``api_keys`` table and ``runs.api_key`` (migration 0010) on a real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
import pytest_asyncio

from chorus.config.settings import Settings
from chorus.contracts.models import RunSubject, StartRunInput
from chorus.storage import api_key_rows, db


@pytest_asyncio.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    store = await db.create_pool(Settings(database_url=database_url))
    try:
        yield store
    finally:
        await store.close()


async def _insert(pool: asyncpg.Pool, key_id: str, name: str = "ci") -> asyncpg.Record:
    return await api_key_rows.insert_key(
        pool,
        key_id=key_id,
        name=name,
        key_hash=bytes(32),
        scopes=["runs:read"],
        budget_daily_usd=None,
        rpm=None,
        created_by="t",
    )


async def test_migration_creates_the_table_and_the_run_column(pool):
    assert await db.schema_version(pool) >= 10
    columns = {
        r["column_name"]: r["data_type"]
        for r in await pool.fetch(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_name = 'api_keys'"
        )
    }
    assert columns["hash"] == "bytea" and columns["scopes"] == "ARRAY"
    assert "hash" not in api_key_rows.COLUMNS
    assert (
        await pool.fetchval(
            "SELECT data_type FROM information_schema.columns"
            " WHERE table_name = 'runs' AND column_name = 'api_key'"
        )
        == "text"
    )


async def test_one_live_key_per_name_enforced_by_the_database(pool):
    await _insert(pool, "a" * 16)
    with pytest.raises(api_key_rows.NameTakenError):
        await _insert(pool, "b" * 16)
    assert await api_key_rows.revoke(pool, "a" * 16, revoked_by="t") is not None
    assert await api_key_rows.revoke(pool, "a" * 16, revoked_by="t") is None  # already
    await _insert(pool, "b" * 16)
    with pytest.raises(asyncpg.CheckViolationError):  # a hash is 32 bytes, never text
        await api_key_rows.insert_key(
            pool, key_id="c" * 16, name="x", key_hash=b"chorus_plain", scopes=[],
            budget_daily_usd=None, rpm=None, created_by="t",
        )  # fmt: skip


async def test_find_prefers_the_id_and_rotate_is_all_or_nothing(pool):
    await _insert(pool, "a" * 16)
    found = await api_key_rows.find_key(pool, "ci")
    assert found is not None and found["id"] == "a" * 16 and found["active"]
    assert (await api_key_rows.find_key(pool, "a" * 16))["name"] == "ci"  # type: ignore[index]
    assert await api_key_rows.find_key(pool, "nobody") is None

    new = await api_key_rows.rotate(
        pool, old_id="a" * 16, new_id="b" * 16, new_hash=bytes(32), overlap_s=0, author="t"
    )
    assert new is not None and new["rotated_from"] == "a" * 16 and new["name"] == "ci"
    again = await api_key_rows.rotate(
        pool, old_id="a" * 16, new_id="c" * 16, new_hash=bytes(32), overlap_s=0, author="t"
    )
    assert again is None
    assert await pool.fetchval("SELECT count(*) FROM api_keys") == 2  # nothing half-written


async def test_the_run_row_records_the_key_name(pool):
    subject = RunSubject(task="Review", api_key="ci")
    run = StartRunInput.for_run(
        subject,
        pattern="sequential",
        names=["analyst"],
        pinned=None,
        parent_workflow_id=None,
        root_workflow_id="wf-1",
        started_at=datetime.now(UTC),
    )
    assert run.api_key == "ci"
    await db.record_run_started(pool, run, workflow_id="wf-1", run_id="r1", agent_versions={})
    row = await db.run_row(pool, "wf-1")
    assert row is not None and row["api_key"] == "ci"


def test_old_payloads_without_the_field_decode():
    old = RunSubject.model_validate({"task": "Review", "document": "", "context": []})
    assert old.api_key is None
    assert StartRunInput.model_validate(
        {"pattern": "sequential", "task": "t", "names": [], "root_workflow_id": "w",
         "started_at": "2026-01-01T00:00:00Z"}
    ).api_key is None  # fmt: skip
    with pytest.raises(ValueError, match="api_key"):
        RunSubject(task="Review", api_key="has:colon")
