"""SQL of the fleet-wide circuit breakers: the ``circuit_breakers`` table (migration 0012).

The policy (what counts, thresholds, the per-process cache, messages, metrics) is in
:mod:`chorus.governance.circuit_breaker`; these functions only run its statements, one per
transition, on the database clock:

- closed -> open: :func:`record_failure` (``chorus_circuit_failure``) on the threshold-th
  failure within the window; half_open -> open when the probe fails;
- open -> half_open: :func:`claim_probe`, an ``UPDATE ... WHERE probe_at <= now RETURNING``
  that exactly one caller wins;
- half_open -> closed: :func:`close_after_probe`; any -> closed: :func:`reset`.

A provider (or provider and model) without a row is closed.
"""

from __future__ import annotations

import asyncpg

_COLUMNS = """provider, model, state, failures, rate_limits, window_start, opened_at, probe_at,
    probes, last_error, updated_at,
    extract(epoch FROM probe_at - clock_timestamp())::float8 AS probe_in_s,
    extract(epoch FROM clock_timestamp() - window_start)::float8 AS window_age_s"""

_READ = f"SELECT {_COLUMNS} FROM circuit_breakers WHERE provider = $1 AND model = $2"
_LIST = f"SELECT {_COLUMNS} FROM circuit_breakers ORDER BY provider, model"

_FAILURE = "SELECT * FROM chorus_circuit_failure($1, $2, $3, $4, $5, $6, $7)"

# Exactly one caller moves an open breaker whose cool-down is over to half_open (the row lock
# orders concurrent callers; the later ones see probe_at in the future and update nothing). A
# half-open breaker whose probe lease expired (the probe's worker died) is claimed the same way.
_CLAIM_PROBE = """
UPDATE circuit_breakers
SET state = 'half_open', probe_at = clock_timestamp() + make_interval(secs => $3::float8),
    probes = probes + 1, updated_at = clock_timestamp()
WHERE provider = $1 AND model = $2 AND state IN ('open', 'half_open')
    AND probe_at <= clock_timestamp()
RETURNING state
"""

_CLOSED = """state = 'closed', failures = 0, rate_limits = 0, window_start = NULL, opened_at = NULL,
    probe_at = NULL, probes = 0, updated_at = clock_timestamp()"""

_CLOSE_AFTER_PROBE = f"""
UPDATE circuit_breakers SET {_CLOSED}
WHERE provider = $1 AND model = $2 AND state = 'half_open'
RETURNING state
"""

# The CTE reads each row's state before the update (locked: the UPDATE sees the same version).
_RESET = f"""
WITH before AS (
    SELECT provider, model, state FROM circuit_breakers
    WHERE provider = $1 AND ($2::text IS NULL OR model = $2) FOR UPDATE
)
UPDATE circuit_breakers AS c SET {_CLOSED}
FROM before
WHERE c.provider = before.provider AND c.model = before.model
RETURNING c.model, before.state AS previous
"""


async def read(pool: asyncpg.Pool, provider: str, model: str) -> asyncpg.Record | None:
    """One breaker's row, or ``None``.

    Besides the table's columns: ``probe_in_s`` (seconds until ``probe_at``) and
    ``window_age_s`` (seconds since ``window_start``), on the database clock.
    """
    return await pool.fetchrow(_READ, provider, model)


async def list_all(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    """Every breaker row, by provider and model (with ``probe_in_s``)."""
    return list(await pool.fetch(_LIST))


async def record_failure(
    pool: asyncpg.Pool,
    provider: str,
    model: str,
    *,
    kind: str,
    threshold: int,
    window_s: float,
    cooldown_s: float,
    error: str,
) -> asyncpg.Record:
    """Count one failure and open the breaker on the ``threshold``-th within ``window_s``.

    Args:
        pool: Chorus's PostgreSQL pool.
        provider: Provider name.
        model: Model name, or ``''`` for the provider-wide breaker.
        kind: ``outage`` or ``rate_limit`` (counted separately, against the same threshold).
        threshold: Failures of one kind within the window that open the breaker.
        window_s: Counting window in seconds (starts at the first failure counted).
        cooldown_s: Seconds an opened breaker stays open before a probe may go.
        error: The failure's message (stored as ``last_error``).

    Returns:
        ``o_previous``, ``o_state`` (``closed``/``open``/``half_open``), ``o_failures``,
        ``o_rate_limits`` and ``o_probe_in_s`` (seconds until the next probe; 0 when closed).
    """
    row = await pool.fetchrow(
        _FAILURE, provider, model, kind, threshold, window_s, cooldown_s, error
    )
    assert row is not None  # the function always returns one row
    return row


async def claim_probe(pool: asyncpg.Pool, provider: str, model: str, lease_s: float) -> bool:
    """Take the one probe call of an open breaker whose cool-down is over.

    Args:
        pool: Chorus's PostgreSQL pool.
        provider: Provider name.
        model: Model name, or ``''``.
        lease_s: Seconds the probe holds the others back (then another caller may probe).

    Returns:
        Whether this caller won the probe (the breaker is now ``half_open``).
    """
    return await pool.fetchval(_CLAIM_PROBE, provider, model, lease_s) is not None


async def close_after_probe(pool: asyncpg.Pool, provider: str, model: str) -> bool:
    """Close a half-open breaker (its probe succeeded); True if this call closed it."""
    return await pool.fetchval(_CLOSE_AFTER_PROBE, provider, model) is not None


async def reset(
    pool: asyncpg.Pool, provider: str, model: str | None = None
) -> list[asyncpg.Record]:
    """Close a provider's breakers by hand (every model's, or ``model``'s only).

    Returns:
        One row per breaker reset: ``model`` and ``previous`` (its state before).
    """
    return list(await pool.fetch(_RESET, provider, model))
