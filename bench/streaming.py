"""Live token streaming: time to first token through Chorus against the provider directly, and
what streaming costs a whole call.

One process starts its own stack: embedded PostgreSQL, a file-backed Temporal dev server with
``chorus dev up``'s flags, a loopback OpenAI-compatible stub in a process of its own (its CPU
is not the worker's, as a provider's is not) that answers after ``--first-s`` (its time to
first token) and then streams ``--words`` words ``--word-s`` apart (a plain answer comes after
the same time), and the production worker (``worker.build_worker``, the real
``chorus.call_llm`` against the stub as the ``openai`` provider). The reader is
:func:`chorus.streaming.subscribe` on its own pool, as an SSE server would hold it. In the
same run, rounds interleaved:

a. time to first token: a one-agent run started (``start_sequential``) -> the first ``token``
   event seen by a subscriber that follows the run from before its start, against a direct
   streaming ``AsyncOpenAI`` call with the very request body Chorus sent -> its first text
   delta. The Chorus time splits into orchestration (run start -> the request reaching the
   stub, both on this process's clock) and the rest (the provider's first token, then the
   activity's write, ``NOTIFY``, the reader's ``SELECT``);
b. what streaming costs a call: the same run on two workers of this process, one with
   ``CHORUS_STREAM_TOKENS=true`` and one with ``false`` (plain calls), for a paced answer
   (the stub's pacing) and a burst (``--burst-words`` words at once): the ``chorus.call_llm``
   activity's duration from the history (the server's clock) and the run's wall time, with
   the rows and transactions each streamed call wrote;
c. with ``--with-model``, (a) on the bundled local model (llama-cpp-python server, as ``chorus
   dev up`` starts it).

The table is printed and, with ``--write``, appended to ``bench/RESULTS.md``.

    python -m bench.streaming [--rounds 20] [--with-model] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import asyncpg
import yaml
from openai import AsyncOpenAI
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from activities import ProviderClients
from bench._support import CHORUS_DEV_FLAGS, embedded_postgres, machine, temporal_dev_server
from chorus.config.settings import Settings
from chorus.contracts.names import CALL_LLM_ACTIVITY
from chorus.storage import db
from chorus.streaming import subscribe
from starter.dev import LOCAL_MODEL_ALIAS, free_port, llm_argv
from starter.sdk import ChorusClient
from tests.stub_llm import StubLLM
from worker import WorkerOptions, build_worker, default_activities

MODEL = "gpt-4o-mini"
RESULTS = Path(__file__).with_name("RESULTS.md")
TASK = "Describe the river in a few sentences."


def _settings(tmp: Path, database_url: str, provider: str, **extra: Any) -> Settings:
    catalog = tmp / f"agents-{uuid.uuid4().hex[:6]}.yaml"
    writer = {"name": "writer", "instructions": "You are writer.", "providers": [provider]}
    catalog.write_text(yaml.safe_dump({"agents": [{**writer, "max_tokens": 256}]}))
    return Settings(
        agents_file=catalog,
        database_url=database_url,
        task_queue=f"bench-{uuid.uuid4().hex[:6]}",
        daily_budget_usd=None,
        run_budget_usd=None,
        provider_limits={"openai": {"concurrency": 0, "rpm": 0}},
        **extra,
    )


@contextlib.asynccontextmanager
async def chorus_worker(client: Client, settings: Settings) -> AsyncIterator[ChorusClient]:
    """The production worker with the real LLM activity; yields an SDK client on its pool."""
    pool = await db.open_store(settings, max_size=10)
    clients = ProviderClients.from_settings(settings)
    options = WorkerOptions(max_concurrent_activities=20, max_concurrent_workflow_tasks=20)
    worker = build_worker(client, settings, default_activities(settings, pool, clients), options)
    try:
        async with worker:
            yield ChorusClient(client, settings, pool)
    finally:
        await clients.close()
        await pool.close()


async def chorus_ttft(
    chorus: ChorusClient, reader_pool: asyncpg.Pool, task: str = TASK
) -> tuple[float | None, float, str]:
    """Start a one-agent run followed by a subscriber; return (run start -> first token event
    seen, or ``None`` when the model wrote no text; run start on the monotonic clock; the
    workflow id)."""
    workflow_id = f"bench-stream-{uuid.uuid4().hex[:10]}"
    first: list[float] = []

    async def follow() -> None:
        async for event in subscribe(reader_pool, workflow_id, heartbeat_s=5.0):
            if event is not None and event.kind == "token" and not first:
                first.append(time.monotonic())
            if event is not None and event.kind == "run_finished":
                return

    reading = asyncio.create_task(follow())
    await asyncio.sleep(0.2)  # the subscriber follows the run before it starts
    started = time.monotonic()
    handle = await chorus.start_sequential(task, ["writer"], workflow_id=workflow_id)
    await handle.result()
    await asyncio.wait_for(reading, 30)
    return (first[0] - started if first else None), started, workflow_id


async def direct_ttft(direct: AsyncOpenAI, body: dict[str, Any]) -> float | None:
    """A streaming call with ``body``: seconds to its first text delta (read to the end);
    ``None`` when it wrote no text."""
    started = time.monotonic()
    first = None
    stream = await direct.chat.completions.create(
        **{**body, "stream": True, "stream_options": {"include_usage": True}}
    )
    async with stream:
        async for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.monotonic() - started
    return first


def _serve_stub(conn: Connection) -> None:
    """The stub's process: answer every request as configured over ``conn``.

    Messages: ``("config", first byte s, seconds between words, text)``; ``("requests",)``
    returns ``[(body, arrival on the monotonic clock)]`` of the requests since the last call;
    ``("stop",)``.
    """
    with StubLLM() as stub:
        # http.server listens with a backlog of 5; a burst of connections would wait on SYN
        # retries.
        stub._server.socket.listen(128)
        conn.send(stub.port)
        seen = 0
        while True:
            message = conn.recv()
            if message[0] == "config":
                _, stub.default_delay_s, stub.default_token_delay_s, stub.default_text = message
                conn.send(None)
            elif message[0] == "requests":
                new, seen = stub.requests[seen:], len(stub.requests)
                conn.send([(r.body, r.at) for r in new])
            else:
                conn.send(None)
                return


class StubProcess:
    """The loopback stub in a process of its own (Linux's monotonic clock is shared)."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve_stub, args=(child,), daemon=True)
        self._proc.start()
        self.base_url = f"http://127.0.0.1:{self._conn.recv()}/v1"

    async def configure(self, words: int, word_s: float, first_s: float) -> None:
        """Answer ``words`` words, ``word_s`` apart, after ``first_s`` seconds."""
        text = " ".join(f"word{n}" for n in range(words)) + "."
        await asyncio.to_thread(self._rpc, ("config", first_s, word_s, text))

    async def requests(self) -> list[tuple[dict[str, Any], float]]:
        """The requests received since the last call: ``(body, arrival)``."""
        found: list[tuple[dict[str, Any], float]] = await asyncio.to_thread(
            self._rpc, ("requests",)
        )
        return found

    def close(self) -> None:
        self._rpc(("stop",))
        self._proc.join(10)

    def _rpc(self, message: tuple[Any, ...]) -> Any:
        self._conn.send(message)
        return self._conn.recv()


async def measure_ttft(
    client: Client, tmp: Path, database_url: str, stub: StubProcess, args: argparse.Namespace
) -> dict[str, list[float]]:
    """(a) on the stub."""
    settings = _settings(tmp, database_url, f"openai:{MODEL}")
    await stub.configure(args.words, args.word_s, args.first_s)
    out: dict[str, list[float]] = {"chorus": [], "direct": [], "orchestration": [], "rest": []}
    reader_pool = await db.create_pool(settings, max_size=4)
    direct = AsyncOpenAI(max_retries=0)
    try:
        async with chorus_worker(client, settings) as chorus:
            for n in range(args.rounds + 2):  # two warm-up rounds
                ttft, started, _ = await chorus_ttft(chorus, reader_pool)
                assert ttft is not None, "the stub's answer has words"
                body, arrived = (await stub.requests())[-1]
                direct_s = await direct_ttft(direct, body)
                assert direct_s is not None, "the stub's answer has words"
                await stub.requests()
                if n < 2:
                    continue
                out["chorus"].append(ttft * 1000)
                out["direct"].append(direct_s * 1000)
                out["orchestration"].append((arrived - started) * 1000)
                out["rest"].append((ttft - (arrived - started)) * 1000)
    finally:
        await direct.close()
        await reader_pool.close()
    return out


async def call_ms(client: Client, workflow_id: str) -> float:
    """Duration of the run's ``chorus.call_llm`` activity (started -> completed), in ms."""
    started = completed = 0.0
    async for e in client.get_workflow_handle(workflow_id).fetch_history_events():
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            assert e.activity_task_scheduled_event_attributes.activity_type.name == (
                CALL_LLM_ACTIVITY
            )
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            started = e.event_time.ToNanoseconds() / 1e6
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            completed = e.event_time.ToNanoseconds() / 1e6
    return completed - started


async def measure_cost(
    client: Client,
    tmp: Path,
    database_url: str,
    stub: StubProcess,
    args: argparse.Namespace,
    reply: tuple[int, float, float],
) -> dict[str, list[float]]:
    """(b) for one kind of answer: ``reply`` is (words, seconds between words, first byte s)."""
    await stub.configure(*reply)
    on = _settings(tmp, database_url, f"openai:{MODEL}", stream_tokens=True)
    off = _settings(tmp, database_url, f"openai:{MODEL}", stream_tokens=False)
    keys = ("call_on", "call_off", "run_on", "run_off", "rows", "writes", "sdk_on", "sdk_off")
    out: dict[str, list[float]] = {k: [] for k in keys}
    direct = AsyncOpenAI(max_retries=0)
    async with chorus_worker(client, on) as streaming, chorus_worker(client, off) as plain:
        pool = await streaming.pool()
        for n in range(args.rounds + 2):
            await stub.requests()
            for key, chorus in (("on", streaming), ("off", plain)):
                started = time.perf_counter()
                handle = await chorus.start_sequential(TASK, ["writer"])
                await handle.result()
                run_ms = (time.perf_counter() - started) * 1000
                if n < 2:
                    continue
                out[f"run_{key}"].append(run_ms)
                out[f"call_{key}"].append(await call_ms(client, handle.workflow_id))
                if key == "on":
                    row = await pool.fetchrow(
                        "SELECT count(*) AS n, count(DISTINCT created_at) AS writes"
                        " FROM stream_events WHERE run_id = $1 AND kind <> 'run_finished'",
                        handle.workflow_id,
                    )
                    assert row is not None
                    out["rows"].append(float(row["n"]))
                    out["writes"].append(float(row["writes"]))
            # The same call made directly, plain and streamed: what the SDK's streaming costs.
            body = {k: v for k, v in (await stub.requests())[-1][0].items() if k != "stream"}
            for key in ("sdk_on", "sdk_off"):
                started = time.perf_counter()
                if key == "sdk_on":
                    stream = await direct.chat.completions.create(**{**body, "stream": True})
                    async with stream:
                        async for _chunk in stream:
                            pass
                else:
                    await direct.chat.completions.create(**body)
                if n >= 2:
                    out[key].append((time.perf_counter() - started) * 1000)
    await direct.close()
    return out


async def measure_model(
    client: Client, tmp: Path, database_url: str, args: argparse.Namespace
) -> dict[str, list[float]]:
    """(c): (a) on the bundled local model."""
    port = free_port()
    settings = _settings(
        tmp,
        database_url,
        f"local:{LOCAL_MODEL_ALIAS}",
        local_base_url=f"http://127.0.0.1:{port}/v1",
    )
    server = await asyncio.create_subprocess_exec(
        *llm_argv(settings), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    direct = AsyncOpenAI(base_url=settings.local_base_url, api_key="x", max_retries=0)
    reader_pool = await db.create_pool(settings, max_size=4)
    out: dict[str, list[float]] = {"chorus": [], "direct": [], "empty": []}
    try:
        for _ in range(300):
            try:
                await direct.models.list()
                break
            except Exception:
                await asyncio.sleep(0.2)
        else:
            raise RuntimeError("the llama.cpp server did not start in 60 s")
        async with chorus_worker(client, settings) as chorus:
            pool = await chorus.pool()
            for n in range(args.model_rounds + 1):
                # A fresh nonce at the head of each prompt: llama.cpp reuses the KV cache of
                # a repeated prompt prefix, which would favour whichever call comes second.
                nonce = uuid.uuid4().hex[:8]
                ttft, _, workflow_id = await chorus_ttft(chorus, reader_pool, f"[{nonce}] {TASK}")
                sent = await pool.fetchrow(
                    "SELECT system_prompt, user_prompt FROM messages WHERE workflow_id = $1",
                    workflow_id,
                )
                assert sent is not None
                other = uuid.uuid4().hex[:8]
                body = {
                    "model": LOCAL_MODEL_ALIAS,
                    "messages": [
                        {"role": "system", "content": sent["system_prompt"]},
                        {"role": "user", "content": sent["user_prompt"].replace(nonce, other)},
                    ],
                    "max_tokens": 256,
                    "temperature": 0.3,
                }
                direct_s = await direct_ttft(direct, body)
                if ttft is None or direct_s is None:  # the model answered nothing: no first token
                    out["empty"].append(1.0)
                    continue
                if n < 1:
                    continue
                out["chorus"].append(ttft * 1000)
                out["direct"].append(direct_s * 1000)
    finally:
        await direct.close()
        await reader_pool.close()
        server.terminate()
        await asyncio.wait_for(server.wait(), 30)
    return out


def report(r: dict[str, Any], args: argparse.Namespace) -> str:
    """The results as a Markdown table (medians of the rounds) and notes."""
    med = statistics.median
    lines = ["| measure | Chorus | direct / off | difference |", "|---|---:|---:|---:|"]
    if "ttft" in r:
        t = r["ttft"]
        lines.append(
            f"| (a) time to first token, stub ({args.first_s * 1000:.0f} ms to first byte), ms "
            f"| {med(t['chorus']):.1f} | {med(t['direct']):.1f} "
            f"| +{med(t['chorus']) - med(t['direct']):.1f} |"
        )
        lines.append(
            f"| (a) of which orchestration (run start -> request at the provider) / the rest "
            f"(provider's first token + write + NOTIFY + read), ms "
            f"| {med(t['orchestration']):.1f} / {med(t['rest']):.1f} | | |"
        )
    for key, label in (("paced", "paced answer"), ("burst", "burst answer")):
        if key not in r:
            continue
        c = r[key]
        lines.append(
            f"| (b) `chorus.call_llm` duration, {label}, streaming on / off, ms "
            f"| {med(c['call_on']):.1f} | {med(c['call_off']):.1f} "
            f"| {med(c['call_on']) - med(c['call_off']):+.1f} |"
        )
        lines.append(
            f"| (b) run wall time, {label}, streaming on / off, ms "
            f"| {med(c['run_on']):.1f} | {med(c['run_off']):.1f} "
            f"| {med(c['run_on']) - med(c['run_off']):+.1f} |"
        )
        lines.append(
            f"| (b) the same call made directly with the SDK, streamed / plain, {label}, ms "
            f"| {med(c['sdk_on']):.1f} | {med(c['sdk_off']):.1f} "
            f"| {med(c['sdk_on']) - med(c['sdk_off']):+.1f} |"
        )
        lines.append(
            f"| (b) rows / write transactions per streamed call, {label} "
            f"| {med(c['rows']):.0f} / {med(c['writes']):.0f} | | |"
        )
    if "model" in r:
        m = r["model"]
        lines.append(
            f"| (c) time to first token, local model, ms | {med(m['chorus']):.1f} "
            f"| {med(m['direct']):.1f} | +{med(m['chorus']) - med(m['direct']):.1f} |"
        )
    notes = [
        f"stub: {args.words} words {args.word_s * 1000:.0f} ms apart after "
        f"{args.first_s * 1000:.0f} ms (paced); {args.burst_words} words at once (burst); "
        f"{args.rounds} rounds each, interleaved, after 2 warm-up rounds",
    ]
    for key, values in r.items():
        notes.append(
            f"{key} per round: "
            + "; ".join(f"{k} {', '.join(f'{v:.0f}' for v in vals)}" for k, vals in values.items())
        )
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="timed rounds of (a) and (b)")
    parser.add_argument("--model-rounds", type=int, default=5, help="timed rounds of (c)")
    parser.add_argument("--words", type=int, default=40, help="words of a paced answer")
    parser.add_argument("--word-s", type=float, default=0.02, help="seconds between words")
    parser.add_argument("--first-s", type=float, default=0.2, help="stub's first byte, s")
    parser.add_argument("--burst-words", type=int, default=400, help="words of a burst answer")
    parser.add_argument("--with-model", action="store_true", help="(c): the bundled model")
    parser.add_argument(
        "--parts", default="ttft,paced,burst", help="comma-separated subset of ttft,paced,burst"
    )
    parser.add_argument("--write", action="store_true", help="append the table to RESULTS.md")
    args = parser.parse_args()

    os.environ["OPENAI_API_KEY"] = "bench-not-a-secret"
    results: dict[str, Any] = {}
    stub = StubProcess()
    with (
        contextlib.closing(stub),
        tempfile.TemporaryDirectory() as tmpdir,
        embedded_postgres(Path(tmpdir)) as database_url,
    ):
        os.environ["OPENAI_BASE_URL"] = stub.base_url
        tmp = Path(tmpdir)
        async with temporal_dev_server(tmp / "temporal.db", CHORUS_DEV_FLAGS) as client:
            parts = set(args.parts.split(","))
            if "ttft" in parts:
                results["ttft"] = await measure_ttft(client, tmp, database_url, stub, args)
            answers = {
                "paced": (args.words, args.word_s, args.first_s),
                "burst": (args.burst_words, 0.0, 0.0),
            }
            for key, answer in answers.items():
                if key in parts:
                    results[key] = await measure_cost(client, tmp, database_url, stub, args, answer)
            if args.with_model:
                results["model"] = await measure_model(client, tmp, database_url, args)
    table = report(results, args)
    title = (
        f"## Live token streaming (`python -m bench.streaming {' '.join(sys.argv[1:])}`), "
        f"{datetime.now(UTC):%Y-%m-%d}"
    )
    print(title)
    print(machine(["openai", "asyncpg"]))
    print(table)
    if args.write:
        with RESULTS.open("a") as f:
            f.write(f"\n{title}\n\nMachine: {machine(['openai', 'asyncpg'])}.\n\n{table}")


if __name__ == "__main__":
    asyncio.run(main())
