"""The reader side of live streaming: a run's events as they are written, resumable by id.

:func:`subscribe` yields a run's stored events with ``id > after_id`` in id order, then each new
one as it is written, and returns after ``run_finished``. It yields ``None`` after every
``heartbeat_s`` of silence (an SSE server sends a comment then, to keep proxies from closing
the connection).

All subscribers of a process share one :class:`StreamHub` per pool:

- one pool connection runs ``LISTEN chorus_stream`` (payload: the run id) for the whole
  process, however many subscribers; it is taken when the first subscriber comes and given
  back when the last one leaves;
- one *feed* per run followed: on each notification (and every ``poll_s`` in case one was
  lost, e.g. while the listening connection was being re-opened) it reads the run's new
  events once and hands them to every subscriber of that run. 100 subscribers of one run cost
  one ``SELECT`` per notification, not 100. The feed also marks the run *watched*
  (``stream_watchers``, renewed while it lasts): only a watched run's LLM calls stream their
  tokens (``chorus/streaming/publisher.py``); a call that started before anyone watched
  appears whole, ``step_started`` and ``step_completed``, when it ends.

No gaps, no duplicates: a subscriber joins its run's feed (which delivers every event above
the feed's cursor from then on) *before* it reads the stored events, and skips ids it has
already yielded. Writers append through ``chorus_stream_append``, which makes the ids of one
run visible in id order, so a reader's "id > last seen" never skips a late commit. A
subscriber that falls more than ``queue_limit`` events behind drops its queue and re-reads
from its last id: a slow client costs memory up to that limit, never the others' progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any, ClassVar

import asyncpg

from chorus.storage import stream_rows
from chorus.streaming.stream_event import StreamEvent

_log = logging.getLogger("chorus.streaming")

PAGE = 1000
"""Events read per query."""
POLL_S = 2.0
"""A feed reads its run's new events at least this often, notified or not (seconds)."""
WATCH_TTL = timedelta(seconds=60)
"""A feed marks its run watched this long and renews it while it lasts (``stream_watchers``):
a watched run's LLM calls stream their tokens, others write their start and end together."""
QUEUE_LIMIT = 10_000
"""Events a subscriber may have waiting before it re-reads from PostgreSQL instead."""
PING_S = 30.0
"""The listening connection is checked after this long without a notification (seconds)."""

ClosedCheck = Callable[[], Awaitable[bool]]
"""Says whether the run has ended some other way (e.g. terminated): the reader then returns."""


class _Subscriber:
    """One reader's queue of events handed over by its run's feed."""

    def __init__(self, limit: int) -> None:
        self.queue: deque[StreamEvent] = deque()
        self.signal = asyncio.Event()
        self.overflow = False
        self._limit = limit

    def push(self, events: list[StreamEvent]) -> None:
        if self.overflow:
            return
        if len(self.queue) + len(events) > self._limit:
            self.queue.clear()  # the reader re-reads from PostgreSQL
            self.overflow = True
        else:
            self.queue.extend(events)
        self.signal.set()


class _Feed:
    """Reads one run's new events once for all of its subscribers."""

    def __init__(self, pool: asyncpg.Pool, run_id: str, poll_s: float) -> None:
        self.run_id = run_id
        self.subscribers: set[_Subscriber] = set()
        self.ready = asyncio.Event()
        self._pool = pool
        self._poll_s = poll_s
        self._wake = asyncio.Event()
        self._cursor = 0
        self._watched_at = 0.0
        self.task = asyncio.get_running_loop().create_task(self._run())

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        backoff = 0.2
        while not self.ready.is_set():
            try:
                # Every event up to this id is committed (ids of a run commit in order):
                # a subscriber reading after this point sees them all; later ones come here.
                # The same statement marks the run watched: its LLM calls stream tokens now.
                self._cursor = await stream_rows.watch(self._pool, self.run_id, WATCH_TTL)
                self._watched_at = asyncio.get_running_loop().time()
                self.ready.set()
            except Exception as exc:
                _log.warning("stream of %s: cannot read its position: %s", self.run_id, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_s)
            self._wake.clear()
            try:
                await self._read()
                await self._keep_watching()
                backoff = 0.2
            except Exception as exc:
                _log.warning("stream of %s: cannot read new events: %s", self.run_id, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _keep_watching(self) -> None:
        """Renew the run's watcher row a third of :data:`WATCH_TTL` before it lapses."""
        now = asyncio.get_running_loop().time()
        if now - self._watched_at >= WATCH_TTL.total_seconds() / 3:
            await stream_rows.watch(self._pool, self.run_id, WATCH_TTL)
            self._watched_at = now

    async def _read(self) -> None:
        while True:
            rows = await stream_rows.events_after(self._pool, self.run_id, self._cursor, PAGE)
            if rows:
                events = [StreamEvent.from_row(row) for row in rows]
                self._cursor = events[-1].id
                for subscriber in list(self.subscribers):
                    subscriber.push(events)
            if len(rows) < PAGE:
                return


class StreamHub:
    """One ``LISTEN`` connection and one feed per run, shared by a process's subscribers.

    Get the pool's hub with :meth:`for_pool`; see the module docstring.

    Args:
        pool: The PostgreSQL pool to read from (one of its connections listens while the hub
            has subscribers).
        poll_s: See :data:`POLL_S`.
        queue_limit: See :data:`QUEUE_LIMIT`.
    """

    _hubs: ClassVar[dict[int, StreamHub]] = {}
    """Hubs by ``id(pool)`` (asyncpg pools take no weak references). A hub leaves when its
    last subscriber does, so the registry never keeps a closed pool alive."""

    def __init__(
        self, pool: asyncpg.Pool, *, poll_s: float = POLL_S, queue_limit: int = QUEUE_LIMIT
    ) -> None:
        self._pool = pool
        self._poll_s = poll_s
        self._queue_limit = queue_limit
        self._feeds: dict[str, _Feed] = {}
        self._users = 0
        self._listener: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self._notified = asyncio.Event()
        self.notifications = 0
        """Notifications received (for tests and benchmarks)."""

    @classmethod
    def for_pool(cls, pool: asyncpg.Pool) -> StreamHub:
        """The process's hub for ``pool`` (made on first use)."""
        hub = cls._hubs.get(id(pool))
        if hub is None or hub._pool is not pool:
            hub = cls._hubs[id(pool)] = cls(pool)
        return hub

    @property
    def subscribers(self) -> int:
        """Subscribers currently reading through this hub."""
        return self._users

    @property
    def feeds(self) -> int:
        """Runs currently followed (one query per notification each)."""
        return len(self._feeds)

    async def subscribe(
        self,
        run_id: str,
        *,
        after_id: int = 0,
        heartbeat_s: float = 15.0,
        closed: ClosedCheck | None = None,
    ) -> AsyncGenerator[StreamEvent | None, None]:
        """A run's events from ``after_id`` on; see :func:`subscribe`."""
        subscriber = _Subscriber(self._queue_limit)
        self._join()
        feed: _Feed | None = None
        try:
            while not self._listening.is_set():
                if not await _wait(self._listening, heartbeat_s):
                    yield None
            feed = self._feed(run_id)
            feed.subscribers.add(subscriber)
            while not feed.ready.is_set():
                if not await _wait(feed.ready, heartbeat_s):
                    yield None
            last = after_id
            catch_up = True
            while True:
                if catch_up or subscriber.overflow:
                    subscriber.overflow = catch_up = False
                    try:
                        async for event in self._stored(run_id, last):
                            yield event
                            last = event.id
                            if event.kind == "run_finished":
                                return
                    except Exception as exc:  # PostgreSQL away: try again after a heartbeat
                        _log.warning("stream of %s: cannot read events: %s", run_id, exc)
                        catch_up = True
                        await asyncio.sleep(min(heartbeat_s, 1.0))
                        yield None
                        continue
                while subscriber.queue:
                    event = subscriber.queue.popleft()
                    if event.id <= last:
                        continue
                    yield event
                    last = event.id
                    if event.kind == "run_finished":
                        return
                if subscriber.overflow:
                    continue
                subscriber.signal.clear()
                if await _wait(subscriber.signal, heartbeat_s):
                    continue
                yield None
                if closed is not None and await closed():
                    # Ended without run_finished (terminated): hand over what is stored.
                    async for event in self._stored(run_id, last):
                        yield event
                        last = event.id
                    return
        finally:
            if feed is not None:
                feed.subscribers.discard(subscriber)
                if not feed.subscribers and self._feeds.get(run_id) is feed:
                    del self._feeds[run_id]
                    feed.task.cancel()
            self._leave()

    async def _stored(self, run_id: str, after_id: int) -> AsyncIterator[StreamEvent]:
        """Stored events with ``id > after_id``, page by page."""
        while True:
            rows = await stream_rows.events_after(self._pool, run_id, after_id, PAGE)
            for row in rows:
                event = StreamEvent.from_row(row)
                after_id = event.id
                yield event
            if len(rows) < PAGE:
                return

    def _feed(self, run_id: str) -> _Feed:
        feed = self._feeds.get(run_id)
        if feed is None:
            feed = self._feeds[run_id] = _Feed(self._pool, run_id, self._poll_s)
        return feed

    def _join(self) -> None:
        self._users += 1
        if self._listener is None:
            self._listener = asyncio.get_running_loop().create_task(self._listen())

    def _leave(self) -> None:
        self._users -= 1
        if self._users == 0:
            if self._hubs.get(id(self._pool)) is self:
                del self._hubs[id(self._pool)]
            if self._listener is not None:
                self._listener.cancel()
                self._listener = None
            self._listening.clear()

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, run_id: str) -> None:
        self.notifications += 1
        self._notified.set()
        feed = self._feeds.get(run_id)
        if feed is not None:
            feed.wake()

    async def _listen(self) -> None:
        """Hold the listening connection; re-open it when it breaks."""
        backoff = 0.2
        while True:
            conn: Any = None
            try:
                conn = await self._pool.acquire()
                await stream_rows.listen(conn, self._on_notify)
                self._listening.set()
                backoff = 0.2
                for feed in self._feeds.values():
                    feed.wake()  # notifications sent while no connection listened are lost
                while True:
                    self._notified.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._notified.wait(), PING_S)
                    if not self._notified.is_set():
                        await stream_rows.ping(conn, 5.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _log.warning("live stream: the listening connection failed: %s", exc)
            finally:
                self._listening.clear()
                if conn is not None:
                    await _give_back(self._pool, conn, self._on_notify)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)


async def _give_back(pool: asyncpg.Pool, conn: Any, callback: stream_rows.NotifyCallback) -> None:
    """Stop listening and return the connection to the pool, whatever state it is in."""
    try:
        await stream_rows.unlisten(conn, callback)
        await pool.release(conn)
    except Exception:
        with contextlib.suppress(Exception):
            conn.terminate()
            await pool.release(conn)


async def _wait(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait for ``event`` at most ``timeout_s`` seconds; whether it was set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout_s)
    return event.is_set()


def subscribe(
    pool: asyncpg.Pool,
    run_id: str,
    *,
    after_id: int = 0,
    heartbeat_s: float = 15.0,
    closed: ClosedCheck | None = None,
) -> AsyncGenerator[StreamEvent | None, None]:
    """Follow a run's live events: stored ones first, then each as it is written.

    Use ``async with contextlib.aclosing(subscribe(...)) as events: async for event in
    events: ...`` so that leaving the loop early releases the subscription at once.

    Args:
        pool: PostgreSQL pool (its process-wide :class:`StreamHub` is used).
        run_id: Workflow id of the top-level run.
        after_id: Yield events with a greater id only (the last id a client saw; SSE
            ``Last-Event-ID``); 0 for all.
        heartbeat_s: Yield ``None`` after this many seconds without an event.
        closed: Called after each heartbeat; when it returns ``True`` the reader yields what is
            stored and returns. For runs that end without ``run_finished`` (terminated or timed
            out in Temporal), e.g. a check of the workflow's status.

    Yields:
        :class:`~chorus.streaming.stream_event.StreamEvent` in id order, or ``None`` for a
        heartbeat. Returns after the ``run_finished`` event.
    """
    return StreamHub.for_pool(pool).subscribe(
        run_id, after_id=after_id, heartbeat_s=heartbeat_s, closed=closed
    )
