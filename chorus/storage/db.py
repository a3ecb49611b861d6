"""PostgreSQL access (asyncpg): connection pool, migrations, and every query Chorus runs.

Shared by the storage activities (worker) and the CLI/SDK (``chorus agents``, ``chorus costs``,
``chorus history``, large documents). Every multi-row change runs in one transaction, so a
failure leaves nothing half-written.

Where the database is: ``DATABASE_URL`` if set, else the embedded server that ``chorus dev up``
started (its URI is recorded in ``<data dir>/run/postgres.json``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import asyncpg
from pydantic import BaseModel

from chorus.config.catalog import CatalogError, load_catalog
from chorus.config.settings import Settings
from chorus.contracts.errors import ChorusInputError, ChorusUnavailableError
from chorus.contracts.models import AgentSpec, StartRunInput, TextRef

_log = logging.getLogger("chorus.storage.db")
MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_MIGRATION_LOCK = 7_201_337_001
"""pg_advisory_xact_lock key held while migrating, so concurrent workers migrate once."""


DB_ERRORS: tuple[type[Exception], ...] = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)
"""What asyncpg raises when PostgreSQL is unreachable or refuses a statement."""


class DatabaseError(ChorusUnavailableError):
    """PostgreSQL is not configured or cannot be reached; the message says which and how."""


class AgentConfigError(ChorusInputError):
    """An agent configuration change was refused (unknown agent or version, invalid spec)."""


def redact_url(url: str) -> str:
    """Hide the password of a ``postgresql://user:password@host/db`` URL."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def embedded_uri_file(settings: Settings) -> Path:
    """Where ``chorus dev up`` records the embedded server's connection URI."""
    return settings.data_dir / "run" / "postgres.json"


def database_url(settings: Settings) -> str:
    """The URL to connect to.

    Raises:
        DatabaseError: Neither ``DATABASE_URL`` nor a running embedded server is known.
    """
    if settings.database_url:
        return settings.database_url
    try:
        return str(json.loads(embedded_uri_file(settings).read_text())["uri"])
    except (OSError, ValueError, KeyError):
        raise DatabaseError(
            "no PostgreSQL configured: set DATABASE_URL, or start the embedded one with "
            "`chorus dev up`"
        ) from None


class ChorusConnection(asyncpg.Connection):
    """The pool's connections: asyncpg's, plus whether the session holds state to reset."""

    session_state = False
    """Set by :func:`mark_session_state`; read by the pool's reset."""


def _raw(conn: Any) -> Any:
    """The connection behind a pool's proxy (or ``conn`` itself)."""
    return getattr(conn, "_con", None) or conn


def mark_session_state(conn: Any) -> None:
    """Note that ``conn`` holds session state (advisory locks, ``LISTEN``).

    The pool then runs asyncpg's full reset (``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN
    *; RESET ALL``) when the connection comes back; see :func:`_reset_connection`. A plain
    connection (not from :func:`create_pool`) is not reset by a pool and is left alone.

    Args:
        conn: A pooled connection (its proxy) or a plain ``asyncpg.Connection``.
    """
    raw = _raw(conn)
    if isinstance(raw, ChorusConnection):
        raw.session_state = True


def clear_session_state(conn: Any) -> None:
    """Note that ``conn`` holds no session state any more (it released every advisory lock)."""
    raw = _raw(conn)
    if isinstance(raw, ChorusConnection):
        raw.session_state = False


async def _reset_connection(conn: asyncpg.Connection) -> None:
    """What the pool runs when a connection comes back, after asyncpg's own cleanup.

    asyncpg's default reset sends one statement per release (~0.3-0.5 ms and a backend wake-up
    each; a 3-step run released 26 connections: ``bench/profile.py``). Chorus sets no session
    state except advisory locks and ``LISTEN``, whose holders call :func:`mark_session_state`;
    only those connections get the full reset. asyncpg has already rolled back an open
    transaction and dropped the client-side listeners (``Connection._reset``).
    """
    if not isinstance(conn, ChorusConnection) or conn.session_state:
        await conn.execute(conn.get_reset_query())
        clear_session_state(conn)


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(settings: Settings, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """Open a connection pool and bring the schema up to date.

    Args:
        settings: Where the database is (see :func:`database_url`).
        min_size: Connections opened at once.
        max_size: Upper bound on connections.

    Raises:
        DatabaseError: Not configured, unreachable, or the migration failed; the message
            names the server (password hidden) and the cause.
    """
    url = database_url(settings)
    try:
        pool = await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            command_timeout=60,
            init=_init_connection,
            reset=_reset_connection,
            connection_class=ChorusConnection,
        )
    except DB_ERRORS as exc:
        raise DatabaseError(f"cannot connect to PostgreSQL at {redact_url(url)}: {exc}") from exc
    assert pool is not None
    try:
        await migrate(pool)
    except Exception:
        await pool.close()
        raise
    return pool


def migration_files() -> list[tuple[int, str, Path]]:
    """Ordered ``(version, name, path)`` of ``chorus/storage/migrations/NNNN_name.sql``."""
    found = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        number, _, name = path.stem.partition("_")
        found.append((int(number), name, path))
    return found


async def migrate(pool: asyncpg.Pool) -> list[int]:
    """Apply pending migrations, each in the one transaction that records it.

    Returns:
        Versions applied now (empty when the schema was current).
    """
    applied_now: list[int] = []
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, name, path in migration_files():
            if version in done:
                continue
            await conn.execute(path.read_text(encoding="utf-8"))
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
            )
            applied_now.append(version)
    return applied_now


async def schema_version(pool: asyncpg.Pool) -> int:
    """Highest applied migration version (0 for an empty database)."""
    value = await pool.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations")
    return int(value)


async def open_store(settings: Settings, *, max_size: int = 10) -> asyncpg.Pool:
    """Open the worker's connection pool, migrate the schema and seed agent configurations.

    Agents of ``CHORUS_AGENTS_FILE`` that PostgreSQL does not know yet are stored as version 1;
    later changes go through ``chorus agents set``.

    Raises:
        DatabaseError: PostgreSQL unreachable or not configured.
        CatalogError: The catalog file is invalid and the database holds no agents yet.
    """
    pool = await create_pool(settings, max_size=max_size)
    try:
        catalog = load_catalog(settings.agents_file)
    except CatalogError:
        if not await current_agents(pool):
            await pool.close()
            raise
        _log.warning(
            "agent catalog file invalid; using the configurations in PostgreSQL", exc_info=True
        )
        return pool
    seeded = await seed_agents(pool, catalog, author=f"seed:{settings.agents_file.name}")
    if seeded:
        _log.info("seeded agent configurations: %s", ", ".join(seeded))
    return pool


# --- Large text by reference ---------------------------------------------------------------


def text_ref(blob_id: uuid.UUID | str, text: str, sha: str) -> TextRef:
    """Describe stored text: id, size, hash and a short preview."""
    return TextRef(
        blob_id=str(blob_id),
        size_bytes=len(text.encode("utf-8")),
        sha256=sha,
        preview=text[:200],
        chars=len(text),
    )


async def put_text(pool: asyncpg.Pool, text: str) -> TextRef:
    """Store ``text`` once (content-addressed by SHA-256) and return its reference."""
    sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    existing = await pool.fetchval("SELECT id FROM blobs WHERE sha256 = $1", sha)
    if existing is not None:
        return text_ref(existing, text, sha)
    blob_id = await pool.fetchval(
        "INSERT INTO blobs (id, sha256, size_bytes, content) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (sha256) DO UPDATE SET sha256 = EXCLUDED.sha256 RETURNING id",
        uuid.uuid4(),
        sha,
        len(text.encode("utf-8")),
        text,
    )
    return text_ref(blob_id, text, sha)


async def get_text(pool: asyncpg.Pool, ref: TextRef) -> str:
    """Load stored text.

    Raises:
        LookupError: No blob has that id.
    """
    content = await pool.fetchval("SELECT content FROM blobs WHERE id = $1", uuid.UUID(ref.blob_id))
    if content is None:
        raise LookupError(f"no stored text with id {ref.blob_id}")
    return str(content)


async def stored_text(pool: asyncpg.Pool, blob_id: str) -> str:
    """Load stored text by its blob id (the HTTP API's ``document_id``).

    Raises:
        LookupError: ``blob_id`` is not a UUID, or no blob has that id.
    """
    try:
        key = uuid.UUID(blob_id)
    except ValueError:
        raise LookupError(f"{blob_id!r} is not a stored text id") from None
    content = await pool.fetchval("SELECT content FROM blobs WHERE id = $1", key)
    if content is None:
        raise LookupError(f"no stored text with id {blob_id}")
    return str(content)


async def run_api_key(pool: asyncpg.Pool, workflow_id: str) -> str | None:
    """Name of the API key that started a run (``runs.api_key``), or ``None``."""
    value = await pool.fetchval("SELECT api_key FROM runs WHERE workflow_id = $1", workflow_id)
    return str(value) if value is not None else None


# --- Agent configuration -------------------------------------------------------------------


class AgentVersion(BaseModel):
    """One stored version of an agent's configuration."""

    name: str
    version: int
    spec: AgentSpec
    author: str
    comment: str
    created_at: datetime


def _spec_json(spec: AgentSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json", exclude={"version"})


def _row_to_version(row: asyncpg.Record) -> AgentVersion:
    spec = AgentSpec.model_validate({**row["spec"], "version": row["version"]})
    return AgentVersion(
        name=row["name"],
        version=row["version"],
        spec=spec,
        author=row["author"],
        comment=row["comment"],
        created_at=row["created_at"],
    )


async def seed_agents(pool: asyncpg.Pool, catalog: dict[str, AgentSpec], author: str) -> list[str]:
    """Store version 1 of each catalog agent that has no stored version yet.

    Returns:
        Names seeded now.
    """
    seeded = []
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK + 1)
        known = {r["name"] for r in await conn.fetch("SELECT DISTINCT name FROM agent_configs")}
        for name, spec in catalog.items():
            if name in known:
                continue
            await conn.execute(
                "INSERT INTO agent_configs (name, version, spec, author, comment) "
                "VALUES ($1, 1, $2, $3, 'seeded from the agent catalog file')",
                name,
                _spec_json(spec),
                author,
            )
            seeded.append(name)
    return seeded


async def current_agents(
    pool: asyncpg.Pool, names: Sequence[str] | None = None
) -> dict[str, AgentSpec]:
    """The latest version of every agent (or of those in ``names`` that exist), by name.

    A run needs its own agents only: reading and validating the whole catalog for each run
    cost the worker CPU per run in proportion to the catalog (issue 19).
    """
    rows = await pool.fetch(
        "SELECT DISTINCT ON (name) name, version, spec, author, comment, created_at "
        "FROM agent_configs WHERE $1::text[] IS NULL OR name = ANY($1::text[]) "
        "ORDER BY name, version DESC",
        None if names is None else list(names),
    )
    return {r["name"]: _row_to_version(r).spec for r in rows}


async def agent_names(pool: asyncpg.Pool) -> list[str]:
    """Every agent's name, sorted."""
    rows = await pool.fetch("SELECT DISTINCT name FROM agent_configs ORDER BY name")
    return [r["name"] for r in rows]


async def agent_history(pool: asyncpg.Pool, name: str) -> list[AgentVersion]:
    """Every kept version of ``name``, newest first.

    Raises:
        AgentConfigError: Unknown agent.
    """
    rows = await pool.fetch(
        "SELECT name, version, spec, author, comment, created_at FROM agent_configs "
        "WHERE name = $1 ORDER BY version DESC",
        name,
    )
    if not rows:
        raise AgentConfigError(f"unknown agent {name!r}")
    return [_row_to_version(r) for r in rows]


async def agent_version(pool: asyncpg.Pool, name: str, version: int) -> AgentVersion:
    """One stored version.

    Raises:
        AgentConfigError: Unknown agent, or that version is not kept (lists the kept ones).
    """
    history = await agent_history(pool, name)
    for item in history:
        if item.version == version:
            return item
    kept = ", ".join(str(h.version) for h in history)
    raise AgentConfigError(f"agent {name!r} has no version {version}; kept versions: {kept}")


async def set_agents(
    pool: asyncpg.Pool,
    specs: Sequence[AgentSpec],
    *,
    author: str,
    comment: str = "",
    keep: int = 20,
) -> list[tuple[str, int, bool]]:
    """Write a new version of each agent whose configuration changed, all or nothing.

    Specs are validated by their model before they get here; unchanged agents keep their
    current version. Only the newest ``keep`` versions of each agent are kept.

    Returns:
        ``(name, version now current, changed)`` per spec.
    """
    results = []
    async with pool.acquire() as conn, conn.transaction():
        for spec in specs:
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", spec.name)
            row = await conn.fetchrow(
                "SELECT version, spec FROM agent_configs WHERE name = $1 "
                "ORDER BY version DESC LIMIT 1",
                spec.name,
            )
            if row is not None and row["spec"] == _spec_json(spec):
                results.append((spec.name, int(row["version"]), False))
                continue
            version = 1 if row is None else int(row["version"]) + 1
            await conn.execute(
                "INSERT INTO agent_configs (name, version, spec, author, comment) "
                "VALUES ($1, $2, $3, $4, $5)",
                spec.name,
                version,
                _spec_json(spec),
                author,
                comment,
            )
            await conn.execute(
                "DELETE FROM agent_configs WHERE name = $1 AND version <= $2",
                spec.name,
                version - keep,
            )
            results.append((spec.name, version, True))
    return results


async def rollback_agent(
    pool: asyncpg.Pool, name: str, version: int, *, author: str, keep: int = 20
) -> AgentVersion:
    """Make version ``version``'s configuration current again, as a new version.

    The audit trail stays linear: rolling back writes ``max + 1`` with the old spec and a
    comment naming the version restored.

    Raises:
        AgentConfigError: Unknown agent or version.
    """
    target = await agent_version(pool, name, version)
    ((_, current, _changed),) = await set_agents(
        pool, [target.spec], author=author, comment=f"rollback to v{version}", keep=keep
    )
    return await agent_version(pool, name, current)


# --- Runs, messages, ledger, transcripts ---------------------------------------------------


_RUN_ROW_COLUMNS = (
    "workflow_id, run_id, parent_workflow_id, root_workflow_id, pattern, task, agents,"
    " document_name, document_blob_id, document_bytes, started_at, api_key, status,"
    " agent_versions"
)
"""The columns a run's start writes: :func:`_run_row_args` gives the first twelve ($1-$12)."""


def _run_row_args(run: StartRunInput, workflow_id: str, run_id: str) -> tuple[Any, ...]:
    """The values of the first twelve :data:`_RUN_ROW_COLUMNS`, in order."""
    return (
        workflow_id,
        run_id,
        run.parent_workflow_id,
        run.root_workflow_id,
        run.pattern,
        run.task,
        run.names,
        run.document_name,
        uuid.UUID(run.document_ref.blob_id) if run.document_ref else None,
        run.document_bytes,
        run.started_at,
        run.api_key,
    )


async def record_run_started(
    pool: asyncpg.Pool,
    run: StartRunInput,
    *,
    workflow_id: str,
    run_id: str,
    agent_versions: dict[str, int],
) -> str:
    """Insert the run row (idempotent: a retry or a second call changes nothing).

    Args:
        pool: The connection pool.
        run: The run as ``chorus.start_run`` received it (pattern, task, agent names,
            document name/reference/size, lineage, start time, the name of the API key that
            started it), stored as given.
        workflow_id: The run's workflow id (the row's key).
        run_id: Its Temporal run id.
        agent_versions: Configuration version pinned for each agent.

    Returns:
        The run id the row holds: ``run_id`` unless an earlier run of the same workflow id
        recorded it first (the caller refuses such a reuse, see ``chorus.start_run``).
    """
    stored = await pool.fetchval(
        f"WITH ins AS (INSERT INTO runs ({_RUN_ROW_COLUMNS})"
        " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,'running',$13)"
        " ON CONFLICT (workflow_id) DO NOTHING RETURNING run_id)"
        " SELECT run_id FROM ins UNION ALL"
        " SELECT run_id FROM runs WHERE workflow_id = $1 AND NOT EXISTS (SELECT 1 FROM ins)",
        *_run_row_args(run, workflow_id, run_id),
        agent_versions,
    )
    return str(stored)


_START_RUN_SQL = f"""
WITH cfg AS (
    SELECT DISTINCT ON (name) name, version, spec, author, comment, created_at
    FROM agent_configs WHERE name = ANY($13::text[]) ORDER BY name, version DESC
), ins AS (
    -- Only when every agent is known: an unknown one fails the run before it has a row.
    INSERT INTO runs ({_RUN_ROW_COLUMNS})
    SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'running',
        (SELECT coalesce(jsonb_object_agg(name, version), '{{}}'::jsonb) FROM cfg)
    WHERE (SELECT count(*) FROM cfg) = cardinality($13::text[])
    ON CONFLICT (workflow_id) DO NOTHING RETURNING run_id
), stored AS (
    SELECT run_id, true AS inserted FROM ins UNION ALL
    SELECT run_id, false FROM runs WHERE workflow_id = $1 AND NOT EXISTS (SELECT 1 FROM ins)
)
SELECT c.name, c.version, c.spec, c.author, c.comment, c.created_at,
    (SELECT run_id FROM stored LIMIT 1) AS stored_run_id,
    coalesce((SELECT inserted FROM stored LIMIT 1), false) AS inserted
FROM cfg c
"""


@dataclass(frozen=True)
class RunStart:
    """What :func:`resolve_and_record_run` found and wrote."""

    agents: dict[str, AgentSpec]
    """The current version of each requested agent that exists, by name."""
    stored_run_id: str | None
    """The run id the run's row holds (``None``: no row, because an agent is unknown)."""
    inserted: bool
    """Whether this call inserted the row."""


async def resolve_and_record_run(
    pool: asyncpg.Pool, run: StartRunInput, *, workflow_id: str, run_id: str
) -> RunStart:
    """Read the current version of each of the run's agents and insert its row; one statement.

    Does what :func:`current_agents` then :func:`record_run_started` do for a top-level run,
    in one round trip (issue 19: two statements in the first workflow task of every run
    before). The row (pinning the versions read) is inserted only when every agent exists.
    Idempotent like :func:`record_run_started`.

    Args:
        pool: The connection pool.
        run: The run as ``chorus.start_run`` received it; ``run.names`` are the agents.
        workflow_id: The run's workflow id (the row's key).
        run_id: Its Temporal run id.

    Returns:
        The agents found, the run id the row holds (``run_id`` unless an earlier run of the
        same workflow id recorded it first) and whether this call inserted it.
    """
    rows = await pool.fetch(
        _START_RUN_SQL, *_run_row_args(run, workflow_id, run_id), list(dict.fromkeys(run.names))
    )
    stored = rows[0]["stored_run_id"] if rows else None
    return RunStart(
        agents={r["name"]: _row_to_version(r).spec for r in rows},
        stored_run_id=None if stored is None else str(stored),
        inserted=bool(rows and rows[0]["inserted"]),
    )


async def forget_run_started(pool: asyncpg.Pool, workflow_id: str, run_id: str) -> None:
    """Delete the row :func:`resolve_and_record_run` inserted for a run that cannot start.

    Only a row of ``run_id`` still running is deleted: nothing else refers to it yet.
    """
    await pool.execute(
        "DELETE FROM runs WHERE workflow_id = $1 AND run_id = $2 AND status = 'running'",
        workflow_id,
        run_id,
    )


_FINISH_RUN_SQL = """
WITH old AS (
    -- $13 (only_running): close the row only while it is running; else nothing is written.
    SELECT workflow_id, pattern, parent_workflow_id, status, started_at
    FROM runs WHERE workflow_id = $1 AND (NOT $13::boolean OR status = 'running') FOR UPDATE
), closed AS (
    UPDATE runs r SET status = $2, finished_at = $3, llm_calls = $4, attempts = $5,
        input_tokens = $6, output_tokens = $7, cost_usd = $8, wall_ms = $9, output = $10,
        error = $11
    FROM old WHERE r.workflow_id = old.workflow_id
    RETURNING r.workflow_id
), archived AS (
    INSERT INTO transcripts (workflow_id, transcript)
    SELECT $1, coalesce(jsonb_agg(jsonb_build_object(
            'workflow_id', m.workflow_id, 'agent', m.agent, 'agent_version', m.agent_version,
            'provider', m.provider, 'model', m.model, 'system_prompt', m.system_prompt,
            'user_prompt', m.user_prompt, 'completion', m.completion,
            'input_tokens', m.input_tokens, 'output_tokens', m.output_tokens,
            'cost_usd', m.cost_usd::float8, 'latency_ms', m.latency_ms, 'attempt', m.attempt,
            'cached', m.cached,
            'created_at', to_char(m.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
                || CASE WHEN extract(microseconds FROM m.created_at)::bigint % 1000000 <> 0
                        THEN to_char(m.created_at AT TIME ZONE 'UTC', '.US') ELSE '' END
                || '+00:00') ORDER BY m.id), '[]'::jsonb)
    -- created_at as Python's isoformat() of the UTC time writes it (the live transcript's
    -- form): microseconds only when non-zero, whatever the session's TimeZone.
    FROM messages m WHERE m.root_workflow_id = $1 AND $12::boolean
    HAVING $12::boolean AND (NOT $13::boolean OR EXISTS (SELECT 1 FROM old))
    ON CONFLICT (workflow_id) DO UPDATE SET transcript = EXCLUDED.transcript, created_at = now()
    RETURNING 1
), fallbacks AS (
    -- This run's own calls answered by other than the agent's first provider and model.
    SELECT m.agent, m.provider FROM messages m
    JOIN agent_configs c ON c.name = m.agent AND c.version = m.agent_version
    WHERE m.workflow_id = $1
      AND (m.provider IS DISTINCT FROM c.spec -> 'providers' -> 0 ->> 'provider'
           OR NOT starts_with(m.model, coalesce(c.spec -> 'providers' -> 0 ->> 'model', '')))
)
, finished_event AS (
    -- A top-level run's run_finished stream event, committed with the closed row: a reader
    -- that stops there finds the run recorded (chorus_stream_write, migration 0016).
    SELECT chorus_stream_write($1, $1, NULL, NULL, NULL, NULL, ARRAY['run_finished'],
        ARRAY[$2::text]) AS id
    WHERE $12::boolean AND (NOT $13::boolean OR EXISTS (SELECT 1 FROM old))
)
-- One row whether or not the run has one (old's columns are NULL then), so finished_event
-- is written in both cases.
SELECT old.pattern, old.parent_workflow_id, old.status, old.started_at,
    (SELECT count(*) FROM closed) + (SELECT count(*) FROM archived) AS written,
    (SELECT coalesce(jsonb_agg(jsonb_build_object('agent', f.agent, 'provider', f.provider)),
        '[]'::jsonb) FROM fallbacks f) AS fallbacks,
    (SELECT id FROM finished_event) AS finished_event_id
FROM (SELECT 1) AS one LEFT JOIN old ON true
"""


async def paid_totals(pool: asyncpg.Pool, workflow_id: str) -> dict[str, Any] | None:
    """Totals of what a run's calls, its child workflows' included, recorded in ``messages``.

    ``messages`` has one row per paid or free call that returned a completion.

    Returns:
        ``llm_calls``, ``input_tokens``, ``output_tokens``, ``cost_usd`` (USD) and
        ``llm_latency_ms``, or ``None`` when the run has no row.
    """
    row = await pool.fetchrow(
        "SELECT count(m.id) AS llm_calls, coalesce(sum(m.input_tokens), 0) AS input_tokens,"
        " coalesce(sum(m.output_tokens), 0) AS output_tokens,"
        " coalesce(sum(m.cost_usd), 0)::float8 AS cost_usd,"
        " coalesce(sum(m.latency_ms), 0)::float8 AS llm_latency_ms"
        " FROM runs r LEFT JOIN messages m ON m.root_workflow_id = r.root_workflow_id"
        "  AND (m.workflow_id = r.workflow_id OR starts_with(m.workflow_id, r.workflow_id || '-s'))"
        " WHERE r.workflow_id = $1 GROUP BY r.workflow_id",
        workflow_id,
    )
    return dict(row) if row is not None else None


async def record_run_finished(
    pool: asyncpg.Pool,
    *,
    workflow_id: str,
    status: Literal["succeeded", "failed", "cancelled"],
    finished_at: datetime,
    totals: dict[str, Any],
    output: str | None,
    error: str | None,
    archive: bool,
    only_running: bool = False,
) -> asyncpg.Record | None:
    """Close the run row; if ``archive``, also store its transcript and end its live stream.

    One statement, one transaction: with ``archive`` it writes the run's ``run_finished``
    stream event too. ``archive`` is for top-level runs: their readers follow them under
    their workflow id and stop at ``run_finished``, which commits with the closed row. A
    repeat writes the event again; readers stop at the first.

    Returns:
        The run row as it was before (``pattern``, ``parent_workflow_id``, ``status``,
        ``started_at``) and ``fallbacks``, the run's own calls answered by other than their
        agent's first provider/model (``[{"agent", "provider"}]``); ``None`` when the run has
        no row (the transcript and the event are stored all the same). With ``only_running``
        (a run's last call closing it: ``LLMRequest.close_run``) the statement writes nothing
        unless the row is ``running``, and returns ``None`` then: a stale attempt of that call
        cannot overwrite what a later one or ``chorus.finish_run`` wrote.
    """
    row = await pool.fetchrow(
        _FINISH_RUN_SQL,
        workflow_id,
        status,
        finished_at,
        totals.get("llm_calls", 0),
        totals.get("attempts", 0),
        totals.get("input_tokens", 0),
        totals.get("output_tokens", 0),
        Decimal(str(totals.get("cost_usd", 0))),
        totals.get("wall_ms"),
        output,
        error,
        archive,
        only_running,
    )
    return row if row is not None and row["status"] is not None else None


async def record_call(
    pool: asyncpg.Pool,
    *,
    workflow_id: str,
    root_workflow_id: str,
    activity_id: str,
    agent: str,
    agent_version: int | None,
    provider: str,
    model: str,
    system_prompt: str,
    user_prompt: str,
    completion: str,
    input_tokens: int,
    output_tokens: int,
    cost_usd: float,
    cost_known: bool,
    latency_ms: float,
    attempt: int,
    truncated_chars: int,
    cached_input_tokens: int = 0,
    cache_write_tokens: int = 0,
    price_data: str | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    cached: bool = False,
    settle_periods: list[str] | None = None,
    settle_alert: Decimal | None = None,
) -> str | None:
    """Write one agent call's message row and cost-ledger row, in one transaction.

    ``tool_calls`` are the tools the model asked for in this turn (``ToolCall`` dumps);
    ``cached`` marks a completion reused from the response cache (cost 0, no provider call).

    With ``settle_periods`` the same statement settles the call's budget
    (``chorus_budget_settle``, migration 0006, as :func:`chorus.governance.budget.settle`:
    those periods, ``settle_alert`` the daily alert threshold from the settings) and returns
    the period whose alert threshold the call crossed, if any: one round trip for the record
    and the settlement (issue 19), committed together. Without it, returns ``None``.

    The ledger row also keeps the cached input tokens and cache writes of the call and the
    price data that priced it (``chorus.governance.pricing.PRICE_DATA_VERSION``).

    Keyed on (workflow id, activity id): a retried activity replaces its row instead of adding
    one, so each call leaves exactly one message and one ledger row, matching the attempt whose
    result the workflow recorded.
    """
    cost = Decimal(str(round(cost_usd, 8)))
    settle: tuple[Any, ...] = ()
    ledger_cte, tail = "", ""
    if settle_periods is not None:
        ledger_cte = "ledger AS ("
        tail = (
            " RETURNING 1)"
            " SELECT chorus_budget_settle($1, $3, $13, $23::numeric, $24::text[], $4, $6, $7)"
        )
        settle = (settle_alert, settle_periods)
    # One statement (one round trip, one implicit transaction) writes both rows (and settles).
    crossed: str | None = await pool.fetchval(
        "WITH message AS ("
        " INSERT INTO messages (workflow_id, root_workflow_id, activity_id, agent,"
        " agent_version, provider, model, system_prompt, user_prompt, completion,"
        " input_tokens, output_tokens, cost_usd, latency_ms, attempt, truncated_chars,"
        " tool_calls, cached)"
        " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$21,$22)"
        " ON CONFLICT (workflow_id, activity_id) DO UPDATE SET provider = EXCLUDED.provider,"
        " model = EXCLUDED.model, system_prompt = EXCLUDED.system_prompt,"
        " user_prompt = EXCLUDED.user_prompt, completion = EXCLUDED.completion,"
        " input_tokens = EXCLUDED.input_tokens, output_tokens = EXCLUDED.output_tokens,"
        " cost_usd = EXCLUDED.cost_usd, latency_ms = EXCLUDED.latency_ms,"
        " attempt = EXCLUDED.attempt, truncated_chars = EXCLUDED.truncated_chars,"
        " tool_calls = EXCLUDED.tool_calls, cached = EXCLUDED.cached"
        " RETURNING 1)"
        + (", " + ledger_cte if ledger_cte else "")
        + " INSERT INTO cost_ledger (workflow_id, root_workflow_id, activity_id, agent, provider,"
        " model, input_tokens, output_tokens, cost_usd, cost_known, cached_input_tokens,"
        " cache_write_tokens, price_data)"
        " VALUES ($1,$2,$3,$4,$6,$7,$11,$12,$13,$17,$18,$19,$20)"
        " ON CONFLICT (workflow_id, activity_id) DO UPDATE SET provider = EXCLUDED.provider,"
        " model = EXCLUDED.model, input_tokens = EXCLUDED.input_tokens,"
        " output_tokens = EXCLUDED.output_tokens, cost_usd = EXCLUDED.cost_usd,"
        " cost_known = EXCLUDED.cost_known, cached_input_tokens = EXCLUDED.cached_input_tokens,"
        " cache_write_tokens = EXCLUDED.cache_write_tokens, price_data = EXCLUDED.price_data"
        + tail,
        workflow_id,
        root_workflow_id,
        activity_id,
        agent,
        agent_version,
        provider,
        model,
        system_prompt,
        user_prompt,
        completion,
        input_tokens,
        output_tokens,
        cost,
        latency_ms,
        attempt,
        truncated_chars,
        cost_known,
        cached_input_tokens,
        cache_write_tokens,
        price_data,
        tool_calls or None,
        cached,
        *settle,
    )
    return crossed


async def recorded_call(
    pool: asyncpg.Pool, workflow_id: str, activity_id: str
) -> asyncpg.Record | None:
    """The recorded completion of one LLM activity (message joined with its ledger row).

    ``tool_calls`` is the turn's tool calls (a list of ``ToolCall`` dumps), or ``None``;
    ``cached`` whether it came from the response cache.
    """
    return await pool.fetchrow(
        "SELECT m.provider, m.model, m.completion, m.input_tokens, m.output_tokens, m.cost_usd,"
        " coalesce(l.cost_known, true) AS cost_known, m.latency_ms, m.attempt,"
        " m.truncated_chars, coalesce(l.cached_input_tokens, 0) AS cached_input_tokens,"
        " coalesce(l.cache_write_tokens, 0) AS cache_write_tokens, m.tool_calls, m.cached"
        " FROM messages m LEFT JOIN cost_ledger l"
        " ON l.workflow_id = m.workflow_id AND l.activity_id = m.activity_id"
        " WHERE m.workflow_id = $1 AND m.activity_id = $2",
        workflow_id,
        activity_id,
    )


async def transcript(pool: asyncpg.Pool, workflow_id: str) -> list[dict[str, Any]]:
    """A run's archived transcript, or its live messages if it has not finished.

    Raises:
        LookupError: No run has that workflow id.
    """
    stored = await pool.fetchval(
        "SELECT transcript FROM transcripts WHERE workflow_id = $1", workflow_id
    )
    if stored is not None:
        return list(stored)
    exists = await pool.fetchval("SELECT 1 FROM runs WHERE workflow_id = $1", workflow_id)
    if not exists:
        raise LookupError(f"no run {workflow_id!r} in the database")
    rows = await pool.fetch(
        "SELECT workflow_id, agent, agent_version, provider, model, system_prompt, user_prompt,"
        " completion, input_tokens, output_tokens, cost_usd, latency_ms, attempt, cached,"
        " created_at FROM messages WHERE root_workflow_id = $1 ORDER BY id",
        workflow_id,
    )
    return [
        {**dict(r), "cost_usd": float(r["cost_usd"]), "created_at": r["created_at"].isoformat()}
        for r in rows
    ]


async def run_row(pool: asyncpg.Pool, workflow_id: str) -> dict[str, Any] | None:
    """The run row as a dict, or ``None``."""
    row = await pool.fetchrow("SELECT * FROM runs WHERE workflow_id = $1", workflow_id)
    return dict(row) if row else None


# --- Usage statistics ----------------------------------------------------------------------

CostGrouping = Literal["agent", "provider", "model", "day"]
_GROUP_SQL: dict[str, str] = {
    "agent": "agent",
    "provider": "provider",
    "model": "provider || ':' || model",
    "day": "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
}


class CostRow(BaseModel):
    """One line of ``chorus costs``."""

    key: str
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    unpriced_calls: int


async def cost_summary(
    pool: asyncpg.Pool, *, by: CostGrouping = "agent", since: datetime | None = None
) -> list[CostRow]:
    """Calls, tokens and USD from the cost ledger, grouped, most expensive first.

    Args:
        pool: Connection pool.
        by: ``agent``, ``provider``, ``model`` or ``day`` (UTC).
        since: Only calls at or after this time.
    """
    key = _GROUP_SQL[by]
    rows = await pool.fetch(
        # ``key`` comes from the fixed _GROUP_SQL table, never from user input.
        f"SELECT {key} AS key, count(*) AS calls, sum(input_tokens) AS input_tokens,"
        " sum(output_tokens) AS output_tokens, sum(cost_usd) AS cost_usd,"
        " count(*) FILTER (WHERE NOT cost_known) AS unpriced_calls"
        " FROM cost_ledger WHERE ($1::timestamptz IS NULL OR created_at >= $1)"
        " GROUP BY 1 ORDER BY sum(cost_usd) DESC, 1",
        since,
    )
    return [
        CostRow(
            key=r["key"],
            calls=r["calls"],
            input_tokens=r["input_tokens"] or 0,
            output_tokens=r["output_tokens"] or 0,
            cost_usd=float(r["cost_usd"] or 0),
            unpriced_calls=r["unpriced_calls"],
        )
        for r in rows
    ]


# --- Drafts --------------------------------------------------------------------------------


async def draft_row(pool: asyncpg.Pool, draft_id: str) -> dict[str, Any]:
    """The saved state of a draft.

    Raises:
        LookupError: No draft with that id has been saved.
    """
    row = await pool.fetchrow("SELECT * FROM drafts WHERE draft_id = $1", draft_id)
    if row is None:
        raise LookupError(f"no draft {draft_id!r} in the database")
    return dict(row)


async def draft_revisions(
    pool: asyncpg.Pool, draft_id: str, after_version: int = 0
) -> list[dict[str, Any]]:
    """Saved revisions of a draft after ``after_version``, oldest first."""
    rows = await pool.fetch(
        "SELECT version, author, author_kind, base_version, edit, summary, diff, content_after,"
        " created_at FROM draft_revisions WHERE draft_id = $1 AND version > $2 ORDER BY version",
        draft_id,
        after_version,
    )
    return [dict(r) for r in rows]
