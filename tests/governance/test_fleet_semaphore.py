"""Fleet-wide concurrency slots: lingering slots save round trips and still free up (real
PostgreSQL; two semaphores on two pools stand for two workers)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from chorus.config.settings import Settings
from chorus.governance.provider_limits import FleetSemaphore, SlotTimeoutError
from chorus.storage import db

LINGER_S = 0.2


@pytest_asyncio.fixture
async def pools(database_url: str, tmp_path: Path) -> AsyncIterator[list[asyncpg.Pool]]:
    """Two migrated pools on one fresh database: two workers' connections."""
    settings = Settings(database_url=database_url, data_dir=tmp_path / "data")
    first = await db.create_pool(settings)
    second = await db.create_pool(settings)
    try:
        yield [first, second]
    finally:
        await first.close()
        await second.close()


async def _slot_locks(pool: asyncpg.Pool) -> int:
    """Advisory locks granted in the database (slots held by any session)."""
    return int(
        await pool.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted")
    )


async def test_a_released_slot_lingers_and_is_reused_without_a_statement(pools):
    sem = FleetSemaphore(pools[0], {"openai": 1}, linger_s=LINGER_S)
    slot = await sem.acquire("openai")
    assert slot == 0 and sem.statements == 1
    await sem.release("openai", slot)
    assert sem.lingering == 1
    assert await _slot_locks(pools[1]) == 1  # still locked: other workers see it busy
    assert await sem.acquire("openai") == 0
    assert sem.statements == 1  # taken back without a round trip
    await sem.release("openai", 0)
    await asyncio.sleep(LINGER_S * 3)
    assert sem.lingering == 0
    assert sem.statements == 2  # the one unlock, after lingering unused
    assert await _slot_locks(pools[1]) == 0
    assert pools[0].get_idle_size() == pools[0].get_size()  # the connection went back


async def test_another_worker_gets_a_lingering_slot_once_it_expires(pools):
    mine = FleetSemaphore(pools[0], {"openai": 1}, linger_s=LINGER_S)
    theirs = FleetSemaphore(pools[1], {"openai": 1}, linger_s=LINGER_S)
    await mine.release("openai", await mine.acquire("openai"))
    with pytest.raises(SlotTimeoutError):  # the limit holds while it lingers
        await theirs.acquire("openai", wait_s=0.0)
    started = asyncio.get_running_loop().time()
    assert await theirs.acquire("openai", wait_s=5.0) == 0
    waited = asyncio.get_running_loop().time() - started
    assert waited < LINGER_S + 0.5  # freed by the linger's end, not by a timeout
    await theirs.release("openai", 0)
    await theirs.close()
    assert await _slot_locks(pools[0]) == 0


async def test_a_slot_held_past_max_hold_is_unlocked_on_release(pools):
    sem = FleetSemaphore(pools[0], {"openai": 2}, linger_s=5.0, max_hold_s=0.2)
    slot = await sem.acquire("openai")
    await sem.release("openai", slot)
    assert await sem.acquire("openai") == slot  # reused within the hold
    await asyncio.sleep(0.3)
    await sem.release("openai", slot)  # locked 0.3 s > max_hold: unlocked at once
    assert sem.lingering == 0
    assert await _slot_locks(pools[1]) == 0
    assert sem.statements == 2


async def test_close_unlocks_lingering_slots_and_busy_ones_stay(pools):
    sem = FleetSemaphore(pools[0], {"openai": 3}, linger_s=60.0)
    slots = [await sem.acquire("openai") for _ in range(3)]
    await sem.release("openai", slots[0])
    await sem.release("openai", slots[1])
    assert await _slot_locks(pools[1]) == 3
    await sem.close()
    assert sem.lingering == 0
    assert await _slot_locks(pools[1]) == 1  # the busy one is still held
    await sem.release("openai", slots[2])
    assert await _slot_locks(pools[1]) == 0


async def test_a_lost_session_forgets_its_slots(pools):
    sem = FleetSemaphore(pools[0], {"openai": 2}, linger_s=60.0)
    first = await sem.acquire("openai")
    second = await sem.acquire("openai")
    await sem.release("openai", first)
    conn = sem._conn
    assert conn is not None
    # PostgreSQL ends the session (restart, idle timeout): every lock of it is gone.
    await pools[1].execute("SELECT pg_terminate_backend($1)", conn.get_server_pid())
    await sem.close()  # unlocking the lingering slot fails: the session is gone
    assert sem.lingering == 0
    await sem.release("openai", second)  # nothing left to unlock, no error
    statements = sem.statements
    slot = await sem.acquire("openai")
    assert slot in (0, 1)
    assert sem.statements == statements + 1  # locked for real on a new session
    assert await _slot_locks(pools[1]) == 1
    await sem.close()
    await sem.release("openai", slot)  # after close: unlocked at once
    assert await _slot_locks(pools[1]) == 0


async def test_linger_zero_unlocks_on_every_release(pools):
    sem = FleetSemaphore(pools[0], {"openai": 1}, linger_s=0.0)
    for _ in range(3):
        await sem.release("openai", await sem.acquire("openai"))
    assert sem.statements == 6
    assert await _slot_locks(pools[1]) == 0
