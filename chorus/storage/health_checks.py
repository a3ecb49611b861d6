"""SQL of the health checks.

The worker's ``/readyz`` (:mod:`chorus.observability.probes`), ``chorus health`` and
``chorus dev up``.
"""

from __future__ import annotations

import asyncpg

PING_SQL = "SELECT 1"
"""The statement the PostgreSQL check runs; its name in the probe's report."""


async def ping(pool: asyncpg.Pool, timeout_s: float) -> None:
    """Run ``SELECT 1`` through ``pool``: a connection is free and the server answers.

    Args:
        pool: The worker's pool.
        timeout_s: Longest wait, in seconds.

    Raises:
        TimeoutError: No answer within ``timeout_s``.
        OSError, asyncpg.PostgresError, asyncpg.InterfaceError: PostgreSQL failed.
    """
    await pool.fetchval(PING_SQL, timeout=timeout_s)


async def server_version(conn: asyncpg.Connection | asyncpg.Pool) -> str:
    """The PostgreSQL server's version string (``SHOW server_version``), e.g. ``"18.1"``.

    Raises:
        OSError, asyncpg.PostgresError, asyncpg.InterfaceError: PostgreSQL failed.
    """
    return str(await conn.fetchval("SHOW server_version"))
