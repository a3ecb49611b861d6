"""``GET /v1/runs/{id}/events`` across a worker kill -9: resumed with ``Last-Event-ID``, no
duplicated text.

A real worker process streams a slow completion from the loopback stub (one word every 0.1 s);
an SSE client reads a dozen token events, then the worker is SIGKILLed and the client's
connection dropped. A new worker takes the activity over when its heartbeat times out
(attempt 2); the client reconnects with the last id it saw. Every event arrives once, in id
order; ``attempt_restarted`` tells the client to drop attempt 1's partial text; the text it
assembles is exactly the step's durable result.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx
from temporalio.client import Client

from chorus.streaming import StreamEvent, assemble
from starter.api import build_app
from tests.api.support import SERVER_SECRET, new_key, serving
from tests.conftest import agent, sdk
from tests.stub_llm import Reply, StubLLM
from tests.worker_procs import WorkerProcess

WORDS = 60
TEXT = " ".join(f"word{i}" for i in range(WORDS))


async def read_events(
    http: httpx.AsyncClient,
    path: str,
    last_id: int,
    into: list[StreamEvent],
    stop_after_tokens: int | None = None,
) -> bool:
    """Read SSE events into ``into``; True once ``run_finished`` arrived."""
    headers = {"Last-Event-ID": str(last_id)} if last_id else {}
    tokens = 0
    async with http.stream("GET", path, headers=headers) as stream:
        assert stream.status_code == 200, await stream.aread()
        async for line in stream.aiter_lines():
            if not line.startswith("data: "):
                continue
            event = StreamEvent.model_validate(json.loads(line[6:]))
            into.append(event)
            if event.kind == "run_finished":
                return True
            if event.kind == "token":
                tokens += 1
                if stop_after_tokens is not None and tokens >= stop_after_tokens:
                    return False
    return False


async def test_sse_resumes_after_worker_kill_without_duplicated_text(
    client: Client, make_settings: Any, tmp_path: Path
) -> None:
    settings = make_settings(
        [agent("writer", ["openai:gpt-4o-mini"])], api_key_secret=SERVER_SECRET
    )
    with StubLLM() as stub:
        stub.script(
            "gpt-4o-mini",
            Reply(text=TEXT, token_delay_s=0.1),  # attempt 1: killed part-way
            Reply(text=TEXT, token_delay_s=0.02),  # attempt 2, on the new worker
        )
        worker = WorkerProcess(settings, tmp_path, "worker", stub.base_url)
        async with sdk(client, settings) as chorus:
            key = await new_key(chorus, settings, "sse", ["runs:read", "runs:write"])
            try:
                worker.start()
                await worker.wait_polling(chorus)
                async with (
                    serving(build_app(settings, chorus=chorus)) as base,
                    httpx.AsyncClient(
                        base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=120
                    ) as http,
                ):
                    r = await http.post("/v1/runs", json={"task": "Write", "agents": ["writer"]})
                    assert r.status_code == 202, r.text
                    wf = r.json()["workflow_id"]
                    path = f"/v1/runs/{wf}/events"
                    events: list[StreamEvent] = []
                    finished = await asyncio.wait_for(
                        read_events(http, path, 0, events, stop_after_tokens=12), 60
                    )
                    assert not finished
                    worker.kill()  # mid-stream: attempt 1 never completes
                    killed_at = time.monotonic()
                    worker.start()
                    # reconnect at once, resuming after the last event seen (the new
                    # attempt starts when the heartbeat timeout expires)
                    while not finished:
                        finished = await asyncio.wait_for(
                            read_events(http, path, events[-1].id, events), 120
                        )
                    recovered_s = time.monotonic() - killed_at
                    result = await chorus.runs.result(wf)
            finally:
                worker.stop()

    ids = [e.id for e in events]
    assert ids == sorted(set(ids)), "an event arrived twice or out of order"
    kinds = [e.kind for e in events]
    assert kinds[0] == "step_started" and kinds[-1] == "run_finished"
    assert "attempt_restarted" in kinds
    restarted = kinds.index("attempt_restarted")
    assert {e.attempt for e in events[:restarted] if e.attempt} == {1}
    assert {e.attempt for e in events[restarted:] if e.attempt} == {2}
    # attempt 1 streamed part of the text before the kill
    partial = "".join(e.text for e in events[:restarted] if e.kind == "token")
    assert TEXT.startswith(partial) and 0 < len(partial) < len(TEXT)
    # what a client assembles is the durable result, once
    (text,) = assemble(events).values()
    assert text == TEXT == result.steps[0].output
    print(f"recovered {recovered_s:.1f} s after the kill; {len(events)} events")
