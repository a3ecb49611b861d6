"""The producer's buffer, the PII filter and the client-side assembly, without servers.

The database is replaced by a recorder of ``chorus_stream_append`` calls (or one that fails,
or is slow), so the timing of writes can be asserted exactly.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from chorus.observability import metrics
from chorus.streaming import (
    Assembler,
    EventKind,
    PublishedText,
    StepKey,
    StepStream,
    StreamEvent,
    StreamPublisher,
    assemble,
)
from chorus.streaming.publisher import CLOSE_TIMEOUT_S

KEY = StepKey(
    run_id="run", workflow_id="run", step="run/r1/1", agent="writer", activity_id="1", attempt=1
)


class RecordingPool:
    """Stands in for the pool: records each append (kinds, texts, monotonic time)."""

    def __init__(self, delay_s: float = 0.0, error: Exception | None = None) -> None:
        self.writes: list[tuple[list[str], list[str], float]] = []
        self.delay_s = delay_s
        self.error = error

    async def fetchval(self, query: str, *args: Any) -> int:
        assert "chorus_stream_append" in query
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.error is not None:
            raise self.error
        self.writes.append((list(args[6]), list(args[7]), time.monotonic()))
        return len(self.writes)

    def events(self) -> list[tuple[str, str]]:
        return [
            (k, t) for kinds, texts, _ in self.writes for k, t in zip(kinds, texts, strict=True)
        ]


def stream(
    pool: RecordingPool, key: StepKey = KEY, text: PublishedText | None = None
) -> StepStream:
    return StreamPublisher(pool, interval_s=0.05, max_chars=1024).step(key, text)  # type: ignore[arg-type]


async def test_first_text_goes_out_at_once_then_batches_every_interval():
    pool = RecordingPool()
    s = stream(pool)
    s.started("openai:gpt-4o-mini")
    await asyncio.sleep(0.02)
    began = time.monotonic()
    s.token("Hello")
    await asyncio.sleep(0.01)
    assert pool.events()[-1] == ("token", "Hello")  # the first token is not held back
    assert pool.writes[-1][2] - began < 0.01
    for n in range(100):  # 100 deltas over ~0.3 s: written in a handful of batches
        s.token(f" {n}")
        await asyncio.sleep(0.003)
    await s.completed("Hello" + "".join(f" {n}" for n in range(100)))
    events = pool.events()
    assert events[0] == ("step_started", "openai:gpt-4o-mini")
    assert events[-1][0] == "step_completed"
    tokens = "".join(t for k, t in events if k == "token")
    assert tokens == events[-1][1]
    assert 4 <= len(pool.writes) <= 15
    gaps = [b[2] - a[2] for a, b in zip(pool.writes[2:], pool.writes[3:-1], strict=False)]
    assert all(gap >= 0.045 for gap in gaps), gaps
    assert s.events_written == len(events)


async def test_a_kilobyte_waiting_is_written_before_the_interval():
    pool = RecordingPool()
    s = StreamPublisher(pool, interval_s=10.0, max_chars=1024).step(KEY)  # type: ignore[arg-type]
    s.started("local:m")
    await asyncio.sleep(0.01)
    s.token("a")  # the first token: at once
    await asyncio.sleep(0.01)
    s.token("b" * 1100)  # past 1 KB: at once, though the interval is 10 s
    await asyncio.sleep(0.05)
    assert [t for k, t in pool.events() if k == "token"] == ["a", "b" * 1100]
    await s.close()


async def test_a_retried_attempt_announces_itself_before_it_starts():
    pool = RecordingPool()
    retry = KEY.__class__(**{**KEY.__dict__, "attempt": 2})
    s = stream(pool, retry)
    s.started("openai:m")
    await s.failed("ProviderUnavailable: connection lost mid-stream (ReadError)")
    assert pool.events() == [
        ("attempt_restarted", ""),
        ("step_started", "openai:m"),
        ("step_failed", "ProviderUnavailable: connection lost mid-stream (ReadError)"),
    ]


async def test_a_failing_database_never_fails_the_call():
    pool = RecordingPool(error=OSError("connection refused"))
    before = metrics.STREAM_FLUSH_FAILURES._value.get()
    s = stream(pool)
    s.started("openai:m")
    for n in range(50):
        s.token(f"{n} ")
    await s.completed("done")  # returns normally
    assert s.batches_failed >= 1 and s.events_written == 0
    assert metrics.STREAM_FLUSH_FAILURES._value.get() - before == s.batches_failed


async def test_a_slow_database_never_holds_the_token_loop():
    pool = RecordingPool(delay_s=0.3)
    s = stream(pool)
    s.started("openai:m")
    began = time.perf_counter()
    for _ in range(5000):
        s.token("x")
    assert time.perf_counter() - began < 0.2  # no waiting on the database
    began = time.perf_counter()
    await s.completed("x" * 5000)
    assert time.perf_counter() - began <= CLOSE_TIMEOUT_S + 0.5
    assert "".join(t for k, t in pool.events() if k == "token") == "x" * 5000


def test_placeholders_split_across_deltas_are_restored():
    text = PublishedText(placeholders={"<<EMAIL_1>>": "jane@example.com"})
    out = [text.feed(d) for d in ("Write to <<EMA", "IL_1>> and", " EMAIL_1", " today")]
    out.append(text.finish())
    assert "".join(out) == "Write to jane@example.com and jane@example.com today"
    assert "<<" not in "".join(out)


def test_record_pii_releases_whole_lines_redacted():
    text = PublishedText(record_pii="redact")
    assert text.feed("Call (415) 55") == ""
    assert text.feed("5-0132 today.\nThen ") == "Call [PHONE] today.\n"
    assert text.feed("mail bob@example.com") == ""
    assert text.finish() == "Then mail [EMAIL]"
    assert text.final("Call (415) 555-0132") == "Call [PHONE]"


def test_no_policy_passes_deltas_through():
    text = PublishedText()
    assert text.passthrough and text.feed("<<EMAIL_1>> ") == "<<EMAIL_1>> "


def _event(
    n: int, kind: EventKind, text: str = "", attempt: int | None = 1, step: str | None = "s"
) -> StreamEvent:
    return StreamEvent(
        id=n,
        run_id="run",
        workflow_id="run",
        step=step,
        agent="writer" if step else None,
        attempt=attempt if step else None,
        kind=kind,
        text=text,
        at=datetime.now(UTC),
    )


def test_assembly_drops_the_text_of_a_replaced_attempt():
    events = [
        _event(1, "step_started", "openai:m"),
        _event(2, "token", "The quick "),
        _event(3, "token", "brown"),
        _event(4, "step_failed", "ProviderUnavailable: connection lost"),
        _event(5, "attempt_restarted", attempt=2),
        _event(6, "step_started", "openai:m", attempt=2),
        _event(7, "token", "The quick ", attempt=2),
        _event(8, "token", "fox", attempt=1),  # a superseded attempt still streaming
        _event(9, "token", "brown fox.", attempt=2),
        _event(9, "token", "brown fox.", attempt=2),  # delivered twice: applied once
        _event(10, "run_finished", "succeeded", step=None),
    ]
    naive = "".join(e.text for e in events if e.kind == "token")
    assert naive.count("The quick") == 2  # what a client without the rules would show
    assert assemble(events) == {"s": "The quick brown fox."}
    assembler = Assembler()
    applied = [assembler.apply(e) for e in events]
    assert applied.count(False) == 2
    step = assembler.steps["s"]
    assert (step.attempt, step.status, step.label, assembler.finished) == (
        2,
        "running",
        "openai:m",
        "succeeded",
    )


def test_a_completed_step_shows_its_final_output():
    events = [
        _event(1, "step_started", "local:m"),
        _event(2, "token", '{"verdict": '),
        _event(3, "step_completed", '{"verdict": "ready"}'),
    ]
    assert assemble(events) == {"s": '{"verdict": "ready"}'}


@pytest.mark.parametrize("kind", ["token", "step_completed"])
def test_the_event_json_shape(kind: EventKind):
    event = _event(42, kind, "text")
    assert set(event.model_dump(mode="json")) == {
        "id",
        "run_id",
        "workflow_id",
        "step",
        "agent",
        "attempt",
        "kind",
        "text",
        "at",
    }
    assert StreamEvent.model_validate_json(event.model_dump_json()) == event
