"""``chorus keys`` in-process (typer's CliRunner) against the dev server and PostgreSQL."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from temporalio.client import Client
from typer.testing import CliRunner, Result

from chorus.config.settings import get_settings
from starter.cli import app

SECRET = "k" * 40
KEY_RE = re.compile(r"chorus_[0-9a-f]{16}_[0-9a-f]{64}")


@pytest.fixture
def keys(
    client: Client, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Result]]:
    monkeypatch.setenv("TEMPORAL_ADDRESS", client.service_client.config.target_host)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("CHORUS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CHORUS_API_KEY_SECRET", SECRET)
    monkeypatch.setenv("COLUMNS", "250")
    get_settings.cache_clear()
    runner = CliRunner()

    def chorus(*args: str) -> Result:
        get_settings.cache_clear()
        return runner.invoke(app, ["keys", *args])

    try:
        yield chorus
    finally:
        get_settings.cache_clear()


def test_create_prints_the_key_once_and_list_never_shows_it(keys):
    made = keys("create", "--name", "ci", "--scopes", "runs:write,runs:read,drafts:edit",
                "--budget-daily", "5", "--rpm", "60", "--author", "ops")  # fmt: skip
    assert made.exit_code == 0, made.output
    key = made.stdout.strip()
    assert KEY_RE.fullmatch(key), made.stdout  # the key alone on stdout
    assert "shown only once" in made.stderr and key not in made.stderr
    assert "API key 'ci' created" in made.stderr and "daily budget $5" in made.stderr

    listed = keys("list")
    assert listed.exit_code == 0, listed.output
    assert "ci" in listed.stdout and "runs:read, runs:write, drafts:edit" in listed.stdout
    assert key not in listed.stdout and key.rsplit("_", 1)[1][:12] not in listed.stdout
    rows = json.loads(keys("list", "--json").stdout)
    assert [(r["name"], r["budget_daily_usd"], r["rpm"], r["created_by"]) for r in rows] == [
        ("ci", 5.0, 60, "ops")
    ]
    assert all("hash" not in r and key not in json.dumps(r) for r in rows)

    as_json = json.loads(keys("create", "--name", "nightly", "--scopes", "costs:read",
                              "--json").stdout)  # fmt: skip
    assert KEY_RE.fullmatch(as_json["key"]) and as_json["api_key"]["name"] == "nightly"
    assert "shown only once" in as_json["warning"]


def test_revoke_and_rotate(keys):
    first = keys("create", "--name", "ci", "--scopes", "runs:read").stdout.strip()
    rotated = keys("rotate", "ci", "--overlap", "30")
    assert rotated.exit_code == 0, rotated.output
    second = rotated.stdout.strip()
    assert KEY_RE.fullmatch(second) and second != first
    assert "keeps working for 30 s" in rotated.stderr and "shown only once" in rotated.stderr
    old_id = first.split("_")[1]
    assert [r["id"] for r in json.loads(keys("list", "--json").stdout)] == [
        second.split("_")[1],
        old_id,
    ]
    revoked = keys("revoke", old_id)
    assert revoked.exit_code == 0 and f"(id {old_id}) revoked" in revoked.stdout
    assert keys("revoke", "ci").exit_code == 0
    assert json.loads(keys("list", "--json").stdout) == []
    everything = json.loads(keys("list", "--all", "--json").stdout)
    assert len(everything) == 2 and all(r["revoked_at"] for r in everything)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create", "--name", "ci", "--scopes", "runs:read,runs:delete"],
         "scopes: unknown scope(s) 'runs:delete'; known: runs:read"),
        (["create", "--name", "ci", "--scopes", "runs:read", "--budget-daily", "-1"],
         "budget_daily_usd: must be between 0 and 99999999 USD, got -1.0"),
        (["create", "--name", "ci", "--scopes", "runs:read", "--rpm", "0"],
         "rpm: must be between 1 and 1000000, got 0"),
        (["create", "--name", "Bad Name", "--scopes", "runs:read"], "name: 'Bad Name' must match"),
        (["revoke", "nobody"], "no API key named 'nobody'"),
        (["rotate", "nobody"], "no API key named 'nobody'"),
    ],
)  # fmt: skip
def test_bad_input_names_the_field(keys, args: list[str], message: str):
    result = keys(*args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr


def test_duplicate_names_and_a_missing_secret_are_refused(keys, monkeypatch):
    assert keys("create", "--name", "ci", "--scopes", "runs:read").exit_code == 0
    again = keys("create", "--name", "ci", "--scopes", "runs:read", "--json")
    assert again.exit_code == 2
    assert "name: an API key named 'ci' already exists" in json.loads(again.stdout)["error"]
    monkeypatch.delenv("CHORUS_API_KEY_SECRET")
    missing = keys("create", "--name", "other", "--scopes", "runs:read")
    assert missing.exit_code == 2 and "CHORUS_API_KEY_SECRET is not set" in missing.stderr
    assert keys("list").exit_code == 0  # listing needs no secret
