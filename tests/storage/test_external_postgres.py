"""DATABASE_URL pointing at an external PostgreSQL: Debian's ``postgresql`` package, over TCP.

Skipped where the machine has no Debian PostgreSQL server binaries (``.ci/run`` installs them).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

from chorus.storage import db
from starter import dev
from starter.dev import free_port
from tests.conftest import agent, running_worker

INITDB = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))


def _postgres_user() -> str | None:
    try:
        return pwd.getpwnam("postgres").pw_name
    except KeyError:
        return None


pytestmark = pytest.mark.skipif(
    not INITDB or _postgres_user() is None or os.geteuid() != 0 or not shutil.which("runuser"),
    reason="needs Debian's postgresql server package, its postgres user, root and runuser",
)


@pytest.fixture(scope="module")
def external_url() -> Iterator[str]:
    bindir = os.path.dirname(INITDB[-1])
    data = tempfile.mkdtemp(prefix="chorus-ext-pg-", dir="/tmp")
    user = pwd.getpwnam("postgres")
    os.chown(data, user.pw_uid, user.pw_gid)
    port = free_port()

    def as_postgres(*args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *args], check=True, capture_output=True, timeout=120
        )

    as_postgres(f"{bindir}/initdb", "-D", f"{data}/db", "-U", "postgres", "--auth=trust")
    as_postgres(
        f"{bindir}/pg_ctl",
        "-D",
        f"{data}/db",
        "-l",
        f"{data}/log",
        "-w",
        "-o",
        f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off",
        "start",
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        as_postgres(f"{bindir}/pg_ctl", "-D", f"{data}/db", "-m", "fast", "-w", "stop")
        shutil.rmtree(data, ignore_errors=True)


async def test_runs_are_recorded_in_an_external_database(
    client, make_settings, fake_llm, external_url
):
    settings = make_settings([agent("analyst", ["local:fake"])], database_url=external_url)
    async with running_worker(client, settings, lambda _pool: fake_llm.call_llm) as chorus:
        result = await chorus.run_sequential("t", ["analyst"])
        pool = await chorus.pool()
        row = await db.run_row(pool, result.workflow_id)
        version = await pool.fetchval("SHOW server_version")
        schema = await db.schema_version(pool)
    assert row is not None and row["status"] == "succeeded"
    assert version.startswith(os.path.basename(os.path.dirname(os.path.dirname(INITDB[-1]))))
    assert schema == max(v for v, _, _ in db.migration_files())


async def test_dev_stack_uses_database_url_instead_of_embedded(make_settings, external_url):
    settings = make_settings([agent("analyst", ["local:fake"])], database_url=external_url)
    events: list[str] = []
    rows = await dev.up(settings, ("postgres",), on_event=events.append)
    assert rows[0].name == "postgres" and rows[0].healthy
    assert "external (DATABASE_URL)" in rows[0].detail
    assert not dev.pgdata_dir(settings).exists()  # no embedded server was created
    assert events and "already running" in events[0]
