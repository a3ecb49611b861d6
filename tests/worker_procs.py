"""Chorus workers as real processes (``python -m worker``) for fault and scale-out tests.

Only a separate process can be killed with SIGKILL mid-call, as a crash or an OOM kill would.
Each incarnation logs (JSON, stdout and stderr) to its own file, never to a pipe: a worker
whose pipe fills up stops polling.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from chorus.config.settings import Settings
from starter.sdk import ChorusClient
from tests.stub_llm import Recorded

ROOT = Path(__file__).resolve().parent.parent
AGENTS = ("analyst", "writer", "critic")
"""The agents of every fault-test run (a sequential pipeline of three calls)."""
MARKER = re.compile(r"fault-run-(\d+)")
AGENT_OF = re.compile(r"You are (\w+)\.")


def call_key(request: Recorded) -> tuple[int, str]:
    """Identify an LLM call by (run number, agent): the task names the run, the system the agent.

    Args:
        request: A request the stub received (OpenAI chat format).

    Returns:
        ``(run number, agent name)``; the earlier agents' outputs in the user prompt never
        carry the marker, so the first match is the run's own task.

    """
    messages = request.body["messages"]
    system = next(m["content"] for m in messages if m["role"] == "system")
    user = next(m["content"] for m in messages if m["role"] == "user")
    run = MARKER.search(user)
    name = AGENT_OF.search(system)
    assert run is not None and name is not None, request.body
    return int(run.group(1)), name.group(1)


async def assert_one_record_per_call(chorus: ChorusClient, workflow_ids: set[str]) -> None:
    """Assert PostgreSQL holds one run row per run and one message/ledger row per agent call."""
    pool = await chorus.pool()
    runs = await pool.fetch("SELECT workflow_id, status FROM runs")
    assert sorted(r["workflow_id"] for r in runs) == sorted(workflow_ids)
    assert {r["status"] for r in runs} == {"succeeded"}
    for table in ("messages", "cost_ledger"):
        rows = await pool.fetch(
            f"SELECT workflow_id, agent, count(*) AS n, count(DISTINCT activity_id) AS ids"
            f" FROM {table} GROUP BY workflow_id, agent"
        )
        assert {(r["workflow_id"], r["agent"]) for r in rows} == {
            (w, a) for w in workflow_ids for a in AGENTS
        }, table
        duplicates = [dict(r) for r in rows if (r["n"], r["ids"]) != (1, 1)]
        assert duplicates == [], f"duplicate {table} rows: {duplicates}"


def worker_env(settings: Settings, openai_base_url: str) -> dict[str, str]:
    """Return the environment of a worker process serving ``settings``' task queue.

    Args:
        settings: Test settings (Temporal address, task queue, database, agents file).
        openai_base_url: ``OPENAI_BASE_URL`` of the process (a loopback stub, ends in ``/v1``).

    """
    env = dict(os.environ)
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "TEMPORAL_ADDRESS": settings.temporal_address,
            "TEMPORAL_NAMESPACE": settings.temporal_namespace,
            "DATABASE_URL": settings.database_url or "",
            "CHORUS_TASK_QUEUE": settings.task_queue,
            "CHORUS_AGENTS_FILE": str(settings.agents_file),
            "CHORUS_DATA_DIR": str(settings.data_dir),
            "CHORUS_LOCAL_BASE_URL": settings.local_base_url,
            "CHORUS_METRICS_PORT": "0",  # several workers on one host: no fixed ports
            "CHORUS_SDK_METRICS_PORT": "0",
            "OPENAI_BASE_URL": openai_base_url,
            "OPENAI_API_KEY": "sk-test",
        }
    )
    return env


class WorkerProcess:
    """One worker slot: ``start`` launches an incarnation, ``kill`` SIGKILLs it.

    Args:
        settings: Settings the worker serves.
        log_dir: Directory of the log files (``<name>-<incarnation>.log``).
        name: Slot name, for log file names.
        openai_base_url: ``OPENAI_BASE_URL`` of the process.

    """

    def __init__(self, settings: Settings, log_dir: Path, name: str, openai_base_url: str) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.name = name
        self.env = worker_env(settings, openai_base_url)
        self.proc: subprocess.Popen[bytes] | None = None
        self.incarnations = 0

    def start(self) -> int:
        """Start a new incarnation; return its PID."""
        self.incarnations += 1
        path = self.log_dir / f"{self.name}-{self.incarnations}.log"
        with open(path, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "worker"],
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self.proc.pid

    async def wait_polling(self, chorus: ChorusClient, timeout_s: float = 90.0) -> None:
        """Wait until this incarnation polls the task queue (its ``pid@host`` identity is listed).

        Raises:
            AssertionError: It exited or did not poll within ``timeout_s`` seconds.

        """
        assert self.proc is not None
        prefix = f"{self.proc.pid}@"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"worker exited: {self.log_tail()}"
            if any(identity.startswith(prefix) for identity in await chorus.task_queue_pollers()):
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"worker {self.proc.pid} did not poll in {timeout_s} s")

    def kill(self) -> None:
        """SIGKILL the running incarnation and reap it (no shutdown code runs)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM the running incarnation (SIGKILL after 20 s) and reap it."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, chars: int = 2000) -> str:
        """Last ``chars`` characters of the current incarnation's log."""
        path = self.log_dir / f"{self.name}-{self.incarnations}.log"
        try:
            return path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""
