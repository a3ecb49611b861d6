"""A worker killed with SIGKILL mid-stream: the reader keeps following, learns that the attempt
restarted, and the assembled text holds the new attempt's text once.

The worker is a real process (``python -m worker``), so the kill is a real crash: no
``step_failed`` is written for the lost attempt; the next attempt, on the restarted worker,
begins once the LLM activity's heartbeat timeout (30 s) has passed and announces itself with
``attempt_restarted``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from temporalio.client import Client

from chorus.config.settings import Settings
from chorus.streaming import StreamEvent, assemble
from tests.conftest import agent, sdk
from tests.stub_llm import Reply, StubLLM
from tests.worker_procs import WorkerProcess

TEXT = " ".join(f"w{n}" for n in range(60)) + "."


async def test_a_worker_killed_mid_stream_restarts_the_text_once(
    client: Client, make_settings: Callable[..., Settings], tmp_path: Path
):
    settings = make_settings([agent("writer", ["openai:gpt-4o-mini"])])
    with StubLLM(default_token_delay_s=0.1) as stub:  # 61 words: 6 s of streaming
        stub.script("gpt-4o-mini", Reply(text=TEXT), Reply(text=TEXT))
        worker = WorkerProcess(settings, tmp_path, "worker", stub.base_url)
        async with sdk(client, settings) as chorus:
            try:
                worker.start()
                await worker.wait_polling(chorus)
                handle = await chorus.start_sequential("Write it", ["writer"])
                events: list[StreamEvent] = []
                killed_at: list[float] = []

                async def follow() -> None:
                    async for event in handle.stream(heartbeat_s=2.0):
                        events.append(event)
                        tokens = [e for e in events if e.kind == "token"]
                        if not killed_at and len("".join(e.text for e in tokens)) > 40:
                            await asyncio.to_thread(worker.kill)  # mid-stream
                            killed_at.append(time.monotonic())
                            worker.start()

                await asyncio.wait_for(follow(), 120)
                result = await handle.result()
            finally:
                worker.stop()
    assert killed_at, "the stream ended before the kill"
    step = result.steps[0]
    kinds = [(e.kind, e.attempt) for e in events if e.kind != "token"]
    assert kinds == [
        ("step_started", 1),
        ("attempt_restarted", 2),
        ("step_started", 2),
        ("step_completed", 2),
        ("run_finished", None),
    ]
    first = "".join(e.text for e in events if e.kind == "token" and e.attempt == 1)
    second = "".join(e.text for e in events if e.kind == "token" and e.attempt == 2)
    assert len(first) > 40 and step.output.startswith(first)  # cut short by the kill
    assert second == step.output and step.attempts == 2
    assert assemble(events) == {events[0].step: step.output}
    assert [e.id for e in events] == sorted({e.id for e in events})  # nothing twice
