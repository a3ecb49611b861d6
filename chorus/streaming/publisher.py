"""The producer side of live streaming: events of LLM calls and runs, written to PostgreSQL.

``chorus.call_llm`` opens a :class:`StepStream` per attempt (:meth:`StreamPublisher.step`),
marks it started, feeds it the model's deltas as they arrive and closes it completed or failed.
The deltas are buffered and written by a background task of the stream, never by the token
loop: the first text goes out at once (time to first token), later text at most every
:data:`FLUSH_INTERVAL_S` or as soon as :data:`FLUSH_CHARS` characters wait, each batch one
``chorus_stream_append`` round trip (insert + ``NOTIFY``). Consecutive deltas of a batch are
merged into one ``token`` event. ``step_started`` waits up to :data:`FLUSH_INTERVAL_S` for the
first text, so a call that answers within it costs two writes, not three (issue 19: each write
is a PostgreSQL round trip on the worker's CPU); the end of a step goes out at once.

A write that fails (PostgreSQL down or slow past :data:`WRITE_TIMEOUT_S`) drops that batch,
logs a warning and counts ``chorus_stream_flush_failures_total``; it never fails or delays the
call. Readers then miss some text of the step until its ``step_completed``, which carries the
whole output.

``chorus.finish_run`` writes the ``run_finished`` event of top-level runs in the statement that
closes the run's row (:func:`chorus.storage.db.record_run_finished`) and sweeps expired events
(:class:`RetentionSweeper`); :func:`publish_run_finished` writes one on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import timedelta

import asyncpg

from chorus.config.settings import Settings
from chorus.observability import metrics
from chorus.storage import stream_rows
from chorus.streaming.published_text import PublishedText

_log = logging.getLogger("chorus.streaming")

FLUSH_INTERVAL_S = 0.05
"""Least time between two writes of one step's events, in seconds (after the first)."""
_ENDS = frozenset({"step_completed", "step_failed"})
FLUSH_CHARS = 1024
"""Characters waiting that trigger a write before :data:`FLUSH_INTERVAL_S` has passed."""
WRITE_TIMEOUT_S = 5.0
"""A write (connection wait included) that takes longer is abandoned and its batch dropped."""
CLOSE_TIMEOUT_S = 2.0
"""How long the end of a call waits for its last events to be written, in seconds."""


@dataclass(frozen=True)
class StepKey:
    """Where a step's events belong.

    Attributes:
        run_id: Top-level workflow id.
        workflow_id: Workflow that made the call.
        step: The call's key in the run (:func:`step_key`).
        agent: Agent name.
        activity_id: Temporal activity id.
        attempt: Activity attempt, from 1.
    """

    run_id: str
    workflow_id: str
    step: str
    agent: str
    activity_id: str
    attempt: int


def step_key(workflow_id: str, workflow_run_id: str, activity_id: str) -> str:
    """The key of one LLM call in its run: ``<workflow id>/<temporal run id>/<activity id>``.

    Activity ids restart at 1 after a continue-as-new (loops, group chats), hence the run id.
    """
    return f"{workflow_id}/{workflow_run_id}/{activity_id}"


class StepStream:
    """The events of one attempt of one LLM call; see the module docstring.

    Made by :meth:`StreamPublisher.step`. :meth:`started` and :meth:`token` never wait;
    :meth:`completed`, :meth:`failed` and :meth:`close` wait at most :data:`CLOSE_TIMEOUT_S`
    for the events to be written, and never raise for a failed write.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        key: StepKey,
        text: PublishedText,
        *,
        interval_s: float = FLUSH_INTERVAL_S,
        max_chars: int = FLUSH_CHARS,
        close_timeout_s: float = CLOSE_TIMEOUT_S,
        live: bool = True,
    ) -> None:
        self.key = key
        self.live = live
        """Written as it happens (a reader watches the run); otherwise every event waits for
        :meth:`close` and goes out in one write, and the call does not stream its text."""
        self.text = text
        """The PII policies applied to published text (:class:`PublishedText`)."""
        self._pool = pool
        self._interval_s = interval_s
        self._max_chars = max_chars
        self._close_timeout_s = close_timeout_s
        self._pending: list[tuple[str, str]] = []
        self._pending_chars = 0
        self._wake = asyncio.Event()
        self._urgent = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._last_write = asyncio.get_running_loop().time()
        """When the last batch went out; the start counts as one (``step_started`` waits)."""
        self._first_token = True
        self.events_written = 0
        """Events written so far."""
        self.batches_failed = 0
        """Batches dropped because their write failed."""

    def go_live(self) -> None:
        """Write events as they come from now on (a reader watches the run).

        What is queued goes out with the first batch (``step_started`` waits up to one
        interval for the first text, as from the start). No-op once live or closing.
        """
        if self.live or self._closing:
            return
        self.live = True
        if self._pending:
            self._task = asyncio.get_running_loop().create_task(self._run())
            self._wake.set()

    def started(self, label: str) -> None:
        """Queue ``step_started`` (after ``attempt_restarted`` from attempt 2 on).

        Args:
            label: ``provider:model`` of the attempt.
        """
        if self.key.attempt > 1:
            self._queue("attempt_restarted", "")
        self._queue("step_started", label)

    def token(self, delta: str) -> None:
        """Queue a delta of the model's text (PII policies applied: :class:`PublishedText`)."""
        text = self.text.feed(delta)
        if text:
            self._queue("token", text)

    async def completed(self, output: str) -> None:
        """Queue the held-back text and ``step_completed`` with ``output``, then close.

        Args:
            output: The activity's output (placeholders restored; ``record_pii`` is applied
                here).
        """
        rest = self.text.finish()
        if rest:
            self._queue("token", rest)
        self._queue("step_completed", self.text.final(output))
        await self.close()

    async def failed(self, error: str) -> None:
        """Queue ``step_failed`` with the error message (``record_pii`` applied), then close."""
        self._queue("step_failed", self.text.final(error))
        await self.close()

    async def close(self) -> None:
        """Write what is queued (waiting at most :data:`CLOSE_TIMEOUT_S`) and stop."""
        self._closing = True
        if not self.live:
            batch, self._pending, self._pending_chars = self._pending, [], 0
            if batch:
                try:
                    await asyncio.wait_for(self._write(batch), self._close_timeout_s)
                except TimeoutError:
                    self._failed("the step's events were not written in time")
            return
        task = self._task
        if task is None or task.done():
            return
        self._wake.set()
        self._urgent.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), self._close_timeout_s)
        except TimeoutError:
            task.cancel()
            self._failed("the last events were not written in time")
        except asyncio.CancelledError:
            task.cancel()
            raise

    def _queue(self, kind: str, text: str) -> None:
        if self._pending and kind == "token" and self._pending[-1][0] == "token":
            self._pending[-1] = ("token", self._pending[-1][1] + text)
        else:
            self._pending.append((kind, text))
        self._pending_chars += len(text)
        if not self.live:
            return
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        self._wake.set()
        if kind in _ENDS or (kind == "token" and self._first_token):
            # The step's end and its first text go out at once (time to first token); its
            # start waits for the first text, at most one interval.
            self._urgent.set()
        elif self._pending_chars >= self._max_chars:
            self._urgent.set()
        if kind == "token":
            self._first_token = False

    async def _run(self) -> None:
        """Write batches until closed; the first one at once, then throttled."""
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            delay = self._last_write + self._interval_s - loop.time()
            if delay > 0 and not self._urgent.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._urgent.wait(), delay)
            batch, self._pending, self._pending_chars = self._pending, [], 0
            self._wake.clear()
            self._urgent.clear()
            if batch:
                await self._write(batch)
            self._last_write = loop.time()
            if self._closing and not self._pending:
                return

    async def _write(self, batch: list[tuple[str, str]]) -> None:
        key = self.key
        try:
            await asyncio.wait_for(
                stream_rows.append(
                    self._pool,
                    run_id=key.run_id,
                    workflow_id=key.workflow_id,
                    step=key.step,
                    agent=key.agent,
                    activity_id=key.activity_id,
                    attempt=key.attempt,
                    kinds=[kind for kind, _ in batch],
                    texts=[text for _, text in batch],
                ),
                WRITE_TIMEOUT_S,
            )
        except Exception as exc:  # never fail the call: readers get step_completed anyway
            self._failed(f"{type(exc).__name__}: {exc}")
            return
        self.events_written += len(batch)
        for kind, _ in batch:
            metrics.STREAM_EVENTS.labels(kind=kind).inc()

    def _failed(self, why: str) -> None:
        """Count a dropped batch; log only the step's first.

        A database that is down would otherwise be logged every :data:`FLUSH_INTERVAL_S`.
        """
        self.batches_failed += 1
        metrics.STREAM_FLUSH_FAILURES.inc()
        if self.batches_failed == 1:
            _log.warning(
                "live stream of agent %s (%s, attempt %d): events dropped: %s",
                self.key.agent,
                self.key.step,
                self.key.attempt,
                why,
            )


class StreamPublisher:
    """Opens :class:`StepStream` objects for a worker's LLM calls; one per worker.

    Args:
        pool: The worker's PostgreSQL pool.
        tokens: Whether calls stream their text (``CHORUS_STREAM_TOKENS``) while a reader
            watches their run; without it, or unwatched, each step's start and end are
            published together when it ends (:meth:`watched`).
        interval_s: See :data:`FLUSH_INTERVAL_S`.
        max_chars: See :data:`FLUSH_CHARS`.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        tokens: bool = True,
        interval_s: float = FLUSH_INTERVAL_S,
        max_chars: int = FLUSH_CHARS,
    ) -> None:
        self._pool = pool
        self.tokens = tokens
        self._interval_s = interval_s
        self._max_chars = max_chars

    @classmethod
    def from_settings(cls, pool: asyncpg.Pool, settings: Settings) -> StreamPublisher:
        """A publisher as the settings say (``CHORUS_STREAM_TOKENS``)."""
        return cls(pool, tokens=settings.stream_tokens)

    def step(
        self, key: StepKey, text: PublishedText | None = None, *, live: bool = True
    ) -> StepStream:
        """A stream for one attempt of one call.

        Args:
            key: Where its events belong.
            text: The PII policies to apply (default: none).
            live: Write events as they come (see :attr:`StepStream.live`).
        """
        return StepStream(
            self._pool,
            key,
            text or PublishedText(),
            interval_s=self._interval_s,
            max_chars=self._max_chars,
            live=live,
        )

    async def watched(self, run_id: str) -> bool:
        """Whether a reader watches ``run_id`` now, so a call of it should stream live.

        Streaming a call costs the worker the provider SDK's chunk parsing and a write every
        :data:`FLUSH_INTERVAL_S` (issue 19: ~15 ms per call measured); nobody reading, the
        step's start and end go out together in one write when it ends, so a later reader
        still replays every step. One query (``stream_watchers``), none when tokens are off
        (``CHORUS_STREAM_TOKENS``); a failed query counts as unwatched (it never fails the
        call). Calls under a requests-per-minute limit learn it from the statement that takes
        their rate start instead (``activities.llm_guard.ProviderCallGuard.begin``).
        """
        if not self.tokens:
            return False
        try:
            return await asyncio.wait_for(stream_rows.watched(self._pool, run_id), WRITE_TIMEOUT_S)
        except Exception as exc:
            _log.debug("live stream of %s: cannot read its watchers: %s", run_id, exc)
            return False


async def publish_run_finished(pool: asyncpg.Pool, run_id: str, status: str) -> int:
    """Write a top-level run's ``run_finished`` event: its readers stop after it.

    Args:
        pool: PostgreSQL pool.
        run_id: The run's workflow id.
        status: ``succeeded``, ``failed`` or ``cancelled``.

    Returns:
        The event's id.

    Raises:
        asyncpg.PostgresError: The write failed.
        OSError: PostgreSQL cannot be reached.
    """
    event_id = await stream_rows.append(
        pool,
        run_id=run_id,
        workflow_id=run_id,
        step=None,
        agent=None,
        activity_id=None,
        attempt=None,
        kinds=["run_finished"],
        texts=[status],
    )
    metrics.STREAM_EVENTS.labels(kind="run_finished").inc()
    return event_id


class RetentionSweeper:
    """Deletes expired stream events, at most once per ``every_s`` (one per worker process).

    Args:
        pool: PostgreSQL pool.
        retention: How long a finished run's events are kept
            (``CHORUS_STREAM_RETENTION_HOURS``).
        every_s: Least time between two sweeps, in seconds.
    """

    def __init__(self, pool: asyncpg.Pool, retention: timedelta, every_s: float = 600.0) -> None:
        self._pool = pool
        self._retention = retention
        self._every_s = every_s
        self._last = float("-inf")

    async def maybe_sweep(self) -> int | None:
        """Sweep if the last sweep is ``every_s`` old; a failure is logged, never raised.

        Returns:
            Rows deleted, or ``None`` when no sweep ran (too soon, or it failed).
        """
        now = time.monotonic()
        if now - self._last < self._every_s:
            return None
        self._last = now
        try:
            return await stream_rows.delete_expired(self._pool, self._retention)
        except Exception as exc:  # the next finished run sweeps again
            _log.warning("stream events: retention sweep failed: %s: %s", type(exc).__name__, exc)
            self._last = float("-inf")
            return None
