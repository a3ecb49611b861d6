"""API keys (issue 16) on a real PostgreSQL: issue, check, limit, revoke, rotate; the per-key
daily budget end to end through a workflow with the loopback OpenAI stub."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import stat
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from activities import LLMActivities, ProviderClients
from chorus.config.settings import Settings
from chorus.contracts.errors import ChorusInputError
from chorus.contracts.models import AgentStep, SequentialStep
from chorus.governance import api_keys, budget
from chorus.governance.api_keys import (
    ApiKeyInvalid,
    ApiKeyNotFound,
    ApiKeyRateLimited,
    ApiKeyScopeError,
    ApiKeySecretMissing,
)
from chorus.storage import db
from starter.sdk import RunFailedError
from tests.conftest import agent, running_worker
from tests.stub_llm import Reply, StubLLM

SECRET = "s" * 40
KEY_RE = re.compile(r"^chorus_([0-9a-f]{16})_([0-9a-f]{64})$")


def _settings(database_url: str, tmp_path: Path, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "data_dir": tmp_path / "data",
        "api_key_secret": SECRET,
        **extra,
    }
    return Settings(**values)


@pytest_asyncio.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    store = await db.create_pool(Settings(database_url=database_url))
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return _settings(database_url, tmp_path)


async def _create(pool: asyncpg.Pool, settings: Settings, name: str = "ci", **extra: Any):
    fields: dict[str, Any] = {"scopes": ["runs:write", "runs:read"], "author": "ops", **extra}
    return await api_keys.create_key(pool, settings, name=name, **fields)


async def test_a_key_is_shown_once_and_only_its_hmac_is_stored(pool, settings):
    key, plaintext = await _create(
        pool, settings, scopes=["runs:read", "drafts:edit", "runs:write"], budget_daily_usd=5,
        rpm=60,
    )  # fmt: skip
    match = KEY_RE.fullmatch(plaintext)
    assert match is not None and match.group(1) == key.id
    assert (key.name, key.created_by, key.budget_daily_usd, key.rpm) == ("ci", "ops", 5.0, 60)
    assert key.scopes == ["runs:read", "runs:write", "drafts:edit"]  # SCOPES order
    assert "hash" not in key.model_dump()

    row = await pool.fetchrow("SELECT hash, t::text AS whole FROM api_keys t WHERE id = $1", key.id)
    secret_part = match.group(2)
    assert secret_part not in row["whole"] and plaintext not in row["whole"]
    expected = hmac.new(SECRET.encode(), plaintext.encode(), hashlib.sha256).digest()
    assert bytes(row["hash"]) == expected

    checked = await api_keys.authenticate(pool, settings, plaintext)
    assert checked.id == key.id and checked.scopes == key.scopes
    assert checked.last_used_at is None  # the record as looked up; the touch comes after
    listed = await api_keys.list_keys(pool)
    assert [k.id for k in listed] == [key.id] and listed[0].last_used_at is not None


async def test_every_bad_key_gets_the_same_answer(pool, settings):
    key, plaintext = await _create(pool, settings)
    other, other_plain = await _create(pool, settings, name="other")
    secret = plaintext.rsplit("_", 1)[1]
    wrong_secret = f"chorus_{key.id}_{'0' * 64}"
    unknown_id = f"chorus_{'0' * 16}_{secret}"
    swapped = f"chorus_{other.id}_{secret}"  # a real secret under another real id
    malformed = [
        "",
        "chorus_",
        plaintext[:-1],
        plaintext + "0",
        plaintext.upper(),
        plaintext.replace("chorus_", "chorux_"),
        f"Bearer {plaintext}",
        "chorus_" + key.id + "_" + secret[:-2] + "zz",
    ]
    await api_keys.revoke_key(pool, "other", author="ops")
    messages = set()
    for presented in [wrong_secret, unknown_id, swapped, other_plain, *malformed]:
        with pytest.raises(ApiKeyInvalid) as refused:
            await api_keys.authenticate(pool, settings, presented)
        messages.add(str(refused.value))
    assert messages == {"invalid or revoked API key"}
    # Surrounding whitespace (a pasted key) is forgiven; the key itself still works.
    assert (await api_keys.authenticate(pool, settings, f" {plaintext}\n")).id == key.id


async def test_list_revoke_and_unknown_keys(pool, settings):
    ci, ci_plain = await _create(pool, settings)
    nightly, _ = await _create(pool, settings, name="nightly", scopes=["costs:read"])
    assert [k.name for k in await api_keys.list_keys(pool)] == ["ci", "nightly"]

    revoked = await api_keys.revoke_key(pool, "ci", author="alice")
    assert revoked.id == ci.id and revoked.revoked_at is not None
    with pytest.raises(ApiKeyInvalid):
        await api_keys.authenticate(pool, settings, ci_plain)
    assert [k.name for k in await api_keys.list_keys(pool)] == ["nightly"]
    everything = await api_keys.list_keys(pool, include_revoked=True)
    assert [(k.name, k.revoked_at is not None) for k in everything] == [
        ("ci", True),
        ("nightly", False),
    ]
    with pytest.raises(ApiKeyNotFound, match="no API key named 'ci'"):
        await api_keys.revoke_key(pool, "ci", author="alice")
    with pytest.raises(ApiKeyNotFound):
        await api_keys.revoke_key(pool, ci.id, author="alice")
    # The name is free again once its key is revoked; by id works too.
    again, _ = await _create(pool, settings)
    assert again.id != ci.id
    assert (await api_keys.revoke_key(pool, nightly.id, author="alice")).name == "nightly"
    assert await pool.fetchval("SELECT revoked_by FROM api_keys WHERE id = $1", ci.id) == "alice"


async def test_rotation_replaces_the_key_and_keeps_name_scopes_and_limits(pool, settings):
    old, old_plain = await _create(pool, settings, budget_daily_usd=2.5, rpm=30)
    new, new_plain = await api_keys.rotate_key(pool, settings, "ci", author="bob")
    assert new.id != old.id and new_plain != old_plain and new.rotated_from == old.id
    assert (new.name, new.scopes, new.budget_daily_usd, new.rpm, new.created_by) == (
        "ci", old.scopes, 2.5, 30, "bob",
    )  # fmt: skip
    with pytest.raises(ApiKeyInvalid):  # no overlap by default
        await api_keys.authenticate(pool, settings, old_plain)
    assert (await api_keys.authenticate(pool, settings, new_plain)).id == new.id
    with pytest.raises(ApiKeyNotFound, match="is active"):
        await api_keys.rotate_key(pool, settings, old.id, author="bob")

    # With an overlap window both keys work until it ends; the name belongs to the new one.
    newer, newer_plain = await api_keys.rotate_key(pool, settings, "ci", author="bob", overlap_s=60)
    assert (await api_keys.authenticate(pool, settings, new_plain)).id == new.id
    assert (await api_keys.authenticate(pool, settings, newer_plain)).id == newer.id
    assert [k.id for k in await api_keys.list_keys(pool)] == [newer.id, new.id]
    with pytest.raises(ApiKeyNotFound, match="already rotated"):  # in its overlap window
        await api_keys.rotate_key(pool, settings, new.id, author="bob")
    assert (await api_keys.revoke_key(pool, new.id, author="bob")).id == new.id  # end it early
    with pytest.raises(ApiKeyInvalid):
        await api_keys.authenticate(pool, settings, new_plain)
    with pytest.raises(ChorusInputError, match="overlap_s: must be between 0 and 86400"):
        await api_keys.rotate_key(pool, settings, "ci", author="bob", overlap_s=86_401)
    with pytest.raises(ApiKeyNotFound):
        await api_keys.rotate_key(pool, settings, "nobody", author="bob")


async def test_an_overlap_window_ends_by_itself(pool, settings):
    _, old_plain = await _create(pool, settings)
    await api_keys.rotate_key(pool, settings, "ci", author="bob", overlap_s=0.5)
    await api_keys.authenticate(pool, settings, old_plain)
    await asyncio.sleep(0.7)
    with pytest.raises(ApiKeyInvalid):
        await api_keys.authenticate(pool, settings, old_plain)


def test_scopes_are_checked_by_name():
    key = api_keys.ApiKey.model_validate(
        {"id": "0" * 16, "name": "ci", "scopes": ["runs:read"], "created_at": "2026-01-01T00:00Z",
         "created_by": "ops"}
    )  # fmt: skip
    api_keys.require_scope(key, "runs:read")
    with pytest.raises(ApiKeyScopeError, match="lacks the scope 'runs:write'") as refused:
        api_keys.require_scope(key, "runs:write")
    assert refused.value.scope == "runs:write"
    with pytest.raises(ValueError, match="unknown scope 'runs:delete'"):
        api_keys.require_scope(key, "runs:delete")
    assert set(api_keys.SCOPES) == {
        "runs:read", "runs:write", "drafts:read", "drafts:edit", "approvals:decide",
        "costs:read", "agents:read", "keys:admin",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "CI"}, r"name: 'CI' must match"),
        ({"name": "a:b"}, r"name: 'a:b' must match"),
        ({"scopes": ["runs:read", "runs:delete"]}, r"scopes: unknown scope\(s\) 'runs:delete'"),
        ({"scopes": [" ", ""]}, "scopes: give at least one of runs:read"),
        ({"budget_daily_usd": -1.0}, "budget_daily_usd: must be between 0 and 99999999 USD"),
        ({"budget_daily_usd": float("nan")}, "budget_daily_usd: must be between 0"),
        ({"rpm": 0}, "rpm: must be between 1 and 1000000, got 0"),
    ],
)
async def test_bad_fields_are_refused_naming_the_field(pool, settings, fields, message):
    values = {"name": "ci", **fields}
    with pytest.raises(ChorusInputError, match=message):
        await _create(pool, settings, **values)
    assert await pool.fetchval("SELECT count(*) FROM api_keys") == 0


async def test_a_name_belongs_to_one_live_key(pool, settings):
    await _create(pool, settings)
    with pytest.raises(ChorusInputError, match="name: an API key named 'ci' already exists"):
        await _create(pool, settings, scopes=["keys:admin"])


async def test_rate_limit_refuses_with_a_retry_after(pool, settings):
    slow, _ = await _create(pool, settings, rpm=6)  # 1 per 10 s, burst ceil(6*10/60) = 1
    fast, _ = await _create(pool, settings, name="fast", rpm=60)  # burst 10
    free, _ = await _create(pool, settings, name="free")
    assert api_keys.burst(6) == 1 and api_keys.burst(60) == 10 and api_keys.burst(1) == 1

    await api_keys.admit_request(pool, slow)
    with pytest.raises(ApiKeyRateLimited) as refused:
        await api_keys.admit_request(pool, slow)
    assert 9.0 < refused.value.retry_after_s <= 10.0
    assert "API key 'ci': more than 6 requests per minute" in str(refused.value)
    with pytest.raises(ApiKeyRateLimited):  # a refusal counted nothing: still ~10 s away
        await api_keys.admit_request(pool, slow)

    for _ in range(10):  # the burst passes at once, the next one is refused
        await api_keys.admit_request(pool, fast)
    with pytest.raises(ApiKeyRateLimited) as refused_fast:
        await api_keys.admit_request(pool, fast)
    assert 0 < refused_fast.value.retry_after_s <= 1.0

    for _ in range(50):
        await api_keys.admit_request(pool, free)  # no rpm: no query, no row
    rows = await pool.fetch("SELECT provider FROM llm_rate_limits ORDER BY provider")
    assert sorted(r["provider"] for r in rows) == sorted(
        [api_keys.rate_row(slow), api_keys.rate_row(fast)]
    )


async def test_rate_limit_holds_across_concurrent_processes(pool, settings, database_url):
    key, _ = await _create(pool, settings, rpm=60)  # burst 10
    other = await db.create_pool(Settings(database_url=database_url))
    try:
        results = await asyncio.gather(
            *(api_keys.admit_request(p, key) for p in [pool, other] * 15), return_exceptions=True
        )
    finally:
        await other.close()
    admitted = [r for r in results if r is None]
    refused = [r for r in results if isinstance(r, ApiKeyRateLimited)]
    assert len(admitted) in (10, 11) and len(refused) == 30 - len(admitted)


async def test_without_a_server_secret_keys_cannot_be_made_or_checked(pool, database_url, tmp_path):
    settings = _settings(database_url, tmp_path, api_key_secret=None)
    with pytest.raises(ApiKeySecretMissing, match="CHORUS_API_KEY_SECRET is not set"):
        await _create(pool, settings)
    with pytest.raises(ApiKeySecretMissing, match="CHORUS_API_KEY_SECRET is not set"):
        await api_keys.authenticate(pool, settings, f"chorus_{'0' * 16}_{'0' * 64}")
    short = _settings(database_url, tmp_path, api_key_secret="short")
    with pytest.raises(ApiKeySecretMissing, match="at least 32 characters"):
        await _create(pool, short)
    assert await pool.fetchval("SELECT count(*) FROM api_keys") == 0

    # `chorus dev up` writes a development secret; processes without the variable use it.
    path = api_keys.dev_secret_file(settings)
    secret = api_keys.ensure_dev_secret(path)
    assert len(secret) >= 43 and api_keys.ensure_dev_secret(path) == secret
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key, plaintext = await _create(pool, settings)
    assert (await api_keys.authenticate(pool, settings, plaintext)).id == key.id
    explicit = _settings(database_url, tmp_path, api_key_secret=secret)
    assert (await api_keys.authenticate(pool, explicit, plaintext)).id == key.id


async def test_the_server_secret_rotates_without_reissuing_keys(pool, database_url, tmp_path):
    old_secret, new_secret = "a" * 32, "b" * 32
    first = _settings(database_url, tmp_path, api_key_secret=old_secret)
    key, plaintext = await _create(pool, first)
    only_new = _settings(database_url, tmp_path, api_key_secret=new_secret)
    with pytest.raises(ApiKeyInvalid):
        await api_keys.authenticate(pool, only_new, plaintext)
    both = _settings(database_url, tmp_path, api_key_secret=f"{new_secret}, {old_secret}")
    assert (await api_keys.authenticate(pool, both, plaintext)).id == key.id  # re-hashed
    assert (await api_keys.authenticate(pool, only_new, plaintext)).id == key.id
    with pytest.raises(ApiKeyInvalid):
        await api_keys.authenticate(pool, first, plaintext)


async def test_last_used_is_written_at_most_once_a_minute(pool, settings):
    key, plaintext = await _create(pool, settings)
    await api_keys.authenticate(pool, settings, plaintext)
    first = await pool.fetchval("SELECT last_used_at FROM api_keys WHERE id = $1", key.id)
    for _ in range(5):
        await api_keys.authenticate(pool, settings, plaintext)
    assert await pool.fetchval("SELECT last_used_at FROM api_keys WHERE id = $1", key.id) == first
    await pool.execute(
        "UPDATE api_keys SET last_used_at = now() - interval '61 seconds' WHERE id = $1", key.id
    )
    await api_keys.authenticate(pool, settings, plaintext)
    later = await pool.fetchval("SELECT last_used_at FROM api_keys WHERE id = $1", key.id)
    assert later > first


async def test_authentication_takes_one_lookup(pool, settings):
    """Measured, not asserted tightly: one indexed lookup and an HMAC per request."""
    _, plaintext = await _create(pool, settings)
    await api_keys.authenticate(pool, settings, plaintext)
    n = 200
    started = time.perf_counter()
    for _ in range(n):
        await api_keys.authenticate(pool, settings, plaintext)
    per_call_ms = (time.perf_counter() - started) / n * 1000
    started = time.perf_counter()
    for _ in range(n):
        with pytest.raises(ApiKeyInvalid):
            await api_keys.authenticate(pool, settings, f"chorus_{'0' * 16}_{'0' * 64}")
    unknown_ms = (time.perf_counter() - started) / n * 1000
    print(f"authenticate: {per_call_ms:.3f} ms per valid key, {unknown_ms:.3f} ms per unknown id")
    assert per_call_ms < 50


# --- The per-key daily budget ---------------------------------------------------------------


def _call(activity_id: str, amount: float, **extra: Any) -> dict[str, Any]:
    return {
        "workflow_id": "wf-1",
        "activity_id": activity_id,
        "root_workflow_id": "wf-1",
        "agent": "writer",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "amount_usd": amount,
        **extra,
    }


async def test_key_budget_is_reserved_and_shown(pool, settings):
    await _create(pool, settings, budget_daily_usd=0.01)
    held = await budget.reserve(pool, settings, **_call("1", 0.006, api_key="ci"))
    assert held.held
    with pytest.raises(budget.BudgetExceededError) as refused:
        await budget.reserve(pool, settings, **_call("2", 0.006, api_key="ci"))
    error = refused.value
    assert (error.budget, error.limit_usd) == ("key:ci", 0.01)
    assert error.period.startswith("key:ci:")
    assert "budget 'key:ci' (the daily budget of API key 'ci')" in str(error)
    assert "limit $0.010000" in str(error)
    # Another key, and calls without a key, are not limited by it.
    assert (await budget.reserve(pool, settings, **_call("3", 0.006))).held is False
    assert (
        await budget.reserve(pool, settings, **_call("4", 0.006, api_key="other"))
    ).held is False
    await budget.settle(pool, settings, workflow_id="wf-1", activity_id="1", cost_usd=0.004,
                        root_workflow_id="wf-1", agent="writer", api_key="ci")  # fmt: skip
    lines = {line.scope: line for line in await budget.standing(pool, settings)}
    assert lines["key:ci"].limit_usd == 0.01
    assert lines["key:ci"].spent_usd == pytest.approx(0.004)
    assert lines["key:ci"].remaining_usd == pytest.approx(0.006)
    # The limit follows the name through rotation, and a change applies to the next call.
    await api_keys.rotate_key(pool, settings, "ci", author="ops")
    assert (await budget.reserve(pool, settings, **_call("5", 0.005, api_key="ci"))).held
    with pytest.raises(ValueError, match="is an API key's daily budget"):
        await budget.set_limit(pool, "key:ci", 1.0)


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[StubLLM]:
    with StubLLM() as server:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        yield server


async def test_a_keys_daily_budget_refuses_the_call_that_would_pass_it(client, make_settings, stub):
    """$0.01 a day for key 'ci': the first priced call passes, the second (in a child workflow)
    is refused before the provider is called; a run without a key is not limited."""
    # gpt-4o: $2.50 / $10 per 1M tokens; 600 output tokens make a ~$0.0065 worst case.
    settings = make_settings(
        [{**agent(n, ["openai:gpt-4o"]), "max_tokens": 600} for n in ("analyst", "writer")],
        api_key_secret=SECRET,
    )
    amount, priced = budget.worst_case_usd("openai", "gpt-4o", 400, 600)
    assert priced and 0.005 < amount < 0.01
    # The first call reports 500 output tokens ($0.005), so the second would pass $0.01.
    stub.script("gpt-4o", Reply(usage={"completion_tokens": 500}))
    clients = ProviderClients.from_settings(settings)
    try:
        async with running_worker(
            client, settings, lambda pool: LLMActivities(clients, settings, pool).call_llm
        ) as chorus:
            await chorus.keys.create("ci", ["runs:write"], budget_daily_usd=0.01, author="t")
            handle = await chorus.start_sequential(
                "Review the plan",
                ["analyst", SequentialStep(steps=[AgentStep(agent="writer")])],
                api_key="ci",
            )
            with pytest.raises(RunFailedError) as failure:
                await handle.result()
            pool = await chorus.pool()
            rows = await pool.fetch(
                "SELECT workflow_id, api_key FROM runs WHERE root_workflow_id = $1"
                " ORDER BY workflow_id",
                handle.workflow_id,
            )
            keyless = await chorus.start_sequential(
                "Review the plan", ["analyst", SequentialStep(steps=[AgentStep(agent="writer")])]
            )
            result = await keyless.result()
            keyless_row = await db.run_row(pool, keyless.workflow_id)
            standing = {line.scope: line for line in await chorus.spend.budgets()}
    finally:
        await clients.close()
    message = str(failure.value)
    assert "budget 'key:ci' (the daily budget of API key 'ci')" in message, message
    assert "limit $0.010000" in message
    assert [r["api_key"] for r in rows] == ["ci", "ci"]  # the run and its child workflow
    assert rows[0]["workflow_id"] == handle.workflow_id
    assert len([s for s in result.steps if s.status == "succeeded"]) == 2
    assert keyless_row is not None and keyless_row["api_key"] is None
    # Three calls reached the provider: the keyed run's first, and the keyless run's two.
    assert len(stub.for_model("gpt-4o")) == 3
    assert standing["key:ci"].spent_usd == pytest.approx(0.005, rel=0.2)


async def test_an_invalid_key_name_on_a_run_is_refused(client, make_settings):
    from tests.workflows.test_drafts import no_llm

    settings = make_settings([agent("analyst", ["local:fake"])])
    async with running_worker(client, settings, no_llm) as chorus:
        with pytest.raises(ChorusInputError, match="api_key"):
            await chorus.start_sequential("Review", ["analyst"], api_key="Not A Name")
