"""The reader (``chorus.streaming.reader``) and the table under it, on a real PostgreSQL.

Events are written the way the producer writes them (``stream_rows.append``, i.e.
``chorus_stream_append``); no Temporal is involved.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest_asyncio

from chorus.config.settings import Settings
from chorus.storage import db, stream_rows
from chorus.streaming import StreamEvent, StreamHub, subscribe

RUN = "seq-stream-test"


@pytest_asyncio.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await db.create_pool(Settings(database_url=database_url), max_size=8)
    try:
        yield pool
    finally:
        await asyncio.wait_for(pool.close(), 10)


async def append(
    pool: asyncpg.Pool, *events: tuple[str, str], run: str = RUN, step: str = "s1"
) -> int:
    return await stream_rows.append(
        pool,
        run_id=run,
        workflow_id=run,
        step=step,
        agent="writer",
        activity_id="1",
        attempt=1,
        kinds=[k for k, _ in events],
        texts=[t for _, t in events],
    )


async def finish(pool: asyncpg.Pool, run: str = RUN) -> int:
    return await stream_rows.append(
        pool,
        run_id=run,
        workflow_id=run,
        step=None,
        agent=None,
        activity_id=None,
        attempt=None,
        kinds=["run_finished"],
        texts=["succeeded"],
    )


async def read_all(
    events: AsyncIterator[StreamEvent | None], timeout_s: float = 20
) -> list[StreamEvent]:
    """Every event until the iterator ends (heartbeats dropped)."""

    async def go() -> list[StreamEvent]:
        return [e async for e in events if e is not None]

    return await asyncio.wait_for(go(), timeout_s)


async def listening(pool: asyncpg.Pool) -> int:
    """Backends currently holding ``LISTEN chorus_stream`` (by their last statement)."""
    value = await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE 'LISTEN %chorus_stream%'"
        " AND pid <> pg_backend_pid()"
    )
    return int(value)


async def test_stored_events_from_an_id_then_the_end(pool: asyncpg.Pool):
    await append(pool, ("step_started", "openai:m"), ("token", "Hello "))
    middle = await append(pool, ("token", "world"))
    await append(pool, ("step_completed", "Hello world"))
    await finish(pool)
    everything = await read_all(subscribe(pool, RUN))
    assert [e.kind for e in everything] == [
        "step_started",
        "token",
        "token",
        "step_completed",
        "run_finished",
    ]
    assert [e.id for e in everything] == sorted(e.id for e in everything)
    assert everything[1].text == "Hello " and everything[1].agent == "writer"
    assert everything[-1].text == "succeeded" and everything[-1].step is None
    resumed = await read_all(subscribe(pool, RUN, after_id=middle))
    assert [e.kind for e in resumed] == ["step_completed", "run_finished"]
    assert resumed == everything[3:]  # the same events, byte for byte
    assert (await read_all(subscribe(pool, "another-run", heartbeat_s=0.1, closed=_true))) == []


async def _true() -> bool:
    return True


async def test_live_events_from_concurrent_writers_arrive_once_in_id_order(pool: asyncpg.Pool):
    """Parallel branches of one run append at once (on any worker); a reader following the
    run sees every event once, in id order, whatever order the transactions commit in."""
    events = subscribe(pool, RUN, heartbeat_s=0.5)
    seen: list[StreamEvent] = []

    async def reader() -> None:
        async for event in events:
            if event is not None:
                seen.append(event)

    async def writer(branch: int) -> None:
        for n in range(40):
            batch = [("token", f"b{branch}-{n}-{i}") for i in range(1 + n % 3)]
            await append(pool, *batch, step=f"s{branch}")
            await asyncio.sleep(0)

    async with contextlib.aclosing(events):
        reading = asyncio.create_task(reader())
        await asyncio.sleep(0.3)  # the reader is following before the first write
        await asyncio.gather(*(writer(b) for b in range(6)))
        await finish(pool)
        await asyncio.wait_for(reading, 20)
    stored = [r["id"] for r in await pool.fetch("SELECT id FROM stream_events ORDER BY id")]
    assert [e.id for e in seen] == stored
    assert len(stored) == 6 * sum(1 + n % 3 for n in range(40)) + 1


async def test_a_hundred_subscribers_share_one_listening_connection(pool: asyncpg.Pool):
    hub = StreamHub.for_pool(pool)
    assert StreamHub.for_pool(pool) is hub
    streams = [hub.subscribe(RUN, heartbeat_s=1.0) for _ in range(100)]
    readers = [asyncio.create_task(read_all(s, 30)) for s in streams]
    for _ in range(100):
        if hub.subscribers == 100 and hub.feeds == 1 and await listening(pool) == 1:
            break
        await asyncio.sleep(0.05)
    assert (hub.subscribers, hub.feeds, await listening(pool)) == (100, 1, 1)
    for n in range(20):
        await append(pool, ("token", f"t{n} "))
        await asyncio.sleep(0.01)
    await finish(pool)
    results = await asyncio.gather(*readers)
    texts = ["".join(e.text for e in r if e.kind == "token") for r in results]
    assert set(texts) == {"".join(f"t{n} " for n in range(20))}
    assert all(r[-1].kind == "run_finished" for r in results)
    assert (hub.subscribers, hub.feeds) == (0, 0)
    for _ in range(50):  # the listening connection goes back to the pool
        if await listening(pool) == 0:
            break
        await asyncio.sleep(0.05)
    assert await listening(pool) == 0


async def test_heartbeats_while_silent_and_the_end_of_a_run_without_run_finished(
    pool: asyncpg.Pool,
):
    checks = 0

    async def closed() -> bool:
        nonlocal checks
        checks += 1
        return checks >= 2

    events = subscribe(pool, RUN, heartbeat_s=0.2, closed=closed)
    got: list[StreamEvent | None] = []
    async with contextlib.aclosing(events):
        got.append(await asyncio.wait_for(anext(events), 5))
        await append(pool, ("step_started", "openai:m"))
        got += [e async for e in events]
    kinds = [e.kind if e else None for e in got]
    # A heartbeat, the event, a heartbeat (closed: no), a heartbeat (closed: yes) -> the end.
    assert kinds[0] is None and "step_started" in kinds and checks == 2
    assert kinds[-1] is None


async def test_a_lagging_subscriber_rereads_from_the_database(pool: asyncpg.Pool):
    hub = StreamHub(pool, queue_limit=5, poll_s=0.2)
    events = hub.subscribe(RUN, heartbeat_s=0.5)
    async with contextlib.aclosing(events):
        await append(pool, ("step_started", "openai:m"))
        first = await asyncio.wait_for(anext(events), 5)
        assert first is not None and first.kind == "step_started"
        for n in range(30):  # nobody reads: the queue overflows
            await append(pool, ("token", f"{n},"))
        await finish(pool)
        await asyncio.sleep(0.6)
        rest = await read_all(events)
    assert "".join(e.text for e in rest if e.kind == "token") == "".join(f"{n}," for n in range(30))
    assert [e.id for e in rest] == sorted({e.id for e in rest})


async def test_the_listening_connection_is_reopened_when_it_breaks(pool: asyncpg.Pool):
    events = subscribe(pool, RUN, heartbeat_s=0.5)
    async with contextlib.aclosing(events):
        await append(pool, ("step_started", "openai:m"))
        assert (await asyncio.wait_for(anext(events), 5)) is not None
        killed = await pool.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE query ILIKE 'LISTEN %chorus_stream%' AND pid <> pg_backend_pid()"
        )
        assert killed == 1
        await asyncio.sleep(0.5)
        await append(pool, ("token", "after the break"))
        await finish(pool)
        rest = await read_all(events)
    assert [e.text for e in rest if e.kind == "token"] == ["after the break"]


async def test_retention_deletes_finished_runs_and_old_unfinished_ones(pool: asyncpg.Pool):
    await append(pool, ("token", "old"), run="finished-long-ago")
    await finish(pool, run="finished-long-ago")
    await append(pool, ("token", "recent"), run="finished-recently")
    await finish(pool, run="finished-recently")
    await append(pool, ("token", "x"), run="terminated-long-ago")
    await append(pool, ("token", "x"), run="running-quietly")
    await pool.execute(
        "UPDATE stream_events SET created_at = now() - interval '25 hours'"
        " WHERE run_id IN ('finished-long-ago', 'running-quietly')"
    )
    await pool.execute(
        "UPDATE stream_events SET created_at = now() - interval '8 days'"
        " WHERE run_id = 'terminated-long-ago'"
    )
    deleted = await stream_rows.delete_expired(pool, timedelta(hours=24))
    left = {r["run_id"] for r in await pool.fetch("SELECT DISTINCT run_id FROM stream_events")}
    assert deleted == 3
    assert left == {"finished-recently", "running-quietly"}
