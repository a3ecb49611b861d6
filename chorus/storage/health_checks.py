"""SQL of the worker's readiness probe (``/readyz``, :mod:`chorus.observability.probes`)."""

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
