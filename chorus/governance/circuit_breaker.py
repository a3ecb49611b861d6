"""A circuit breaker per provider (or per provider and model) shared by every worker.

Without it, a provider that is down costs every call its whole retry budget (4 attempts, up
to ~40 s with the LLM retry policy) before the workflow falls back, on every run and every
worker. With it:

- **closed**: calls go through. Provider-caused failures are counted in PostgreSQL
  (``circuit_breakers``, migration 0012): outages (``ProviderUnavailable``: 5xx, timeouts,
  connection errors) and, only with ``CHORUS_CIRCUIT_COUNT_429``, rate limits
  (``RateLimited``), each kind counted apart. The ``CHORUS_CIRCUIT_FAILURES``-th failure of one
  kind within ``CHORUS_CIRCUIT_WINDOW_S`` opens the breaker. Requests the provider refused as
  malformed, answers that failed the output schema, budget refusals, auth and model errors
  never count: they say nothing about the provider being up.
- **open**: every worker refuses calls before they reach the provider (``CircuitOpen``,
  non-retryable), so the workflow moves to the agent's next provider at once; the refusal is
  the provider's entry in ``providers_tried``. After ``CHORUS_CIRCUIT_COOLDOWN_S``...
- **half-open**: ...exactly one caller in the fleet wins the probe (one ``UPDATE ...
  RETURNING``); the others keep being refused. The probe's success (any answer that is not a
  counted failure) closes the breaker; its failure opens it for another cool-down. A probe
  that never reports (its worker died) stops holding the others back after one cool-down.

Each transition is one statement (:mod:`chorus.storage.circuit_rows`), logged at WARNING,
reported to the ``on_transition`` callback (the LLM activity counts it in
``chorus_circuit_transitions_total{provider,to}``) and shown by the
``chorus_circuit_state{provider}`` gauge, ``chorus providers list`` and ``chorus top``;
``chorus providers reset NAME`` closes a breaker by hand.

Cost on the hot path: a successful call in the closed state writes nothing, and a breaker read
as closed with no failure in its window is trusted for ``CHORUS_CIRCUIT_CACHE_S`` (0.5 s) per
worker, so healthy calls cost no query (one primary-key read per provider per worker every
0.5 s at most). Once failures are counted the breaker is read before every call. The price of
the cache: another worker's calls may reach a provider up to that long after the breaker
opened. PostgreSQL not answering never fails a call here: the breaker lets it through (the call
guard's own PostgreSQL wait handles the outage).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from datetime import datetime

import asyncpg

from chorus.config.settings import Settings
from chorus.contracts import errors
from chorus.contracts.errors import ChorusRefusedError
from chorus.storage import circuit_rows
from chorus.storage.db import DB_ERRORS

logger = logging.getLogger(__name__)

STATES = ("closed", "half_open", "open")
"""Breaker states, as stored and shown."""

_KINDS = {errors.PROVIDER_UNAVAILABLE: "outage", errors.RATE_LIMITED: "rate_limit"}


class CircuitOpenError(ChorusRefusedError):
    """A call refused because its provider's circuit breaker is open (or half-open).

    Attributes:
        provider: Provider name.
        model: Model name of a per-model breaker, ``''`` for the provider-wide one.
        probe_in_s: Seconds until a probe call may go (0: one is in flight now).
    """

    error_type = errors.CIRCUIT_OPEN

    def __init__(self, message: str, provider: str, model: str, probe_in_s: float) -> None:
        super().__init__(message)
        self.provider = provider
        self.model = model
        self.probe_in_s = probe_in_s


@dataclasses.dataclass(frozen=True)
class Admission:
    """A call let through by :meth:`CircuitBreaker.admit`.

    Attributes:
        provider: Provider name.
        model: The breaker's model (``''`` unless ``CHORUS_CIRCUIT_PER_MODEL``).
        probe: Whether this call is the half-open breaker's probe.
    """

    provider: str
    model: str
    probe: bool = False


@dataclasses.dataclass(frozen=True)
class BreakerStatus:
    """One breaker as ``chorus providers list`` and ``chorus top`` show it.

    Attributes:
        provider: Provider name.
        model: Model of a per-model breaker, ``''`` for the provider-wide one.
        state: ``closed``, ``half_open`` or ``open``.
        failures: Outages counted in the current window (at opening, when open).
        rate_limits: 429s counted in the current window (only with ``CHORUS_CIRCUIT_COUNT_429``).
        opened_at: When it last opened (``None`` when closed).
        probe_in_s: Open: seconds until the next probe may go (0: now); half-open: until the
            probe in flight stops holding calls back; ``None`` when closed.
        probes: Probe calls let through since it last closed.
        last_error: The last counted failure's message.
    """

    provider: str
    model: str
    state: str
    failures: int = 0
    rate_limits: int = 0
    opened_at: datetime | None = None
    probe_in_s: float | None = None
    probes: int = 0
    last_error: str | None = None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> BreakerStatus:
        """Build from a :mod:`chorus.storage.circuit_rows` row."""
        closed = row["state"] == "closed"
        return cls(
            provider=row["provider"],
            model=row["model"],
            state=row["state"],
            failures=row["failures"],
            rate_limits=row["rate_limits"],
            opened_at=None if closed else row["opened_at"],
            probe_in_s=None if closed else max(0.0, float(row["probe_in_s"] or 0.0)),
            probes=row["probes"],
            last_error=row["last_error"],
        )


@dataclasses.dataclass
class _Seen:
    """What this process last read of one breaker (monotonic times, in seconds)."""

    state: str
    clean: bool
    """Closed with no failure in its current window: trusted for the cache time."""
    read_at: float
    probe_at: float = 0.0
    """Open/half-open: monotonic time of ``probe_at``."""
    message: str = ""


class CircuitBreaker:
    """The fleet-wide circuit breakers, as one worker process uses them.

    Args:
        pool: Chorus's PostgreSQL pool.
        settings: ``CHORUS_CIRCUIT_*`` settings.
        clock: Monotonic clock in seconds (tests pass their own).
        on_transition: Called with ``(provider, new state)`` on each state change this process
            makes (metrics live above this package).
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        clock: Callable[[], float] = time.monotonic,
        on_transition: Callable[[str, str], None] | None = None,
    ) -> None:
        self._pool = pool
        self._on_transition = on_transition
        self._threshold = settings.circuit_failures
        self._window_s = settings.circuit_window_s
        self._cooldown_s = settings.circuit_cooldown_s
        self._count_429 = settings.circuit_count_429
        self._per_model = settings.circuit_per_model
        self._cache_s = settings.circuit_cache_s
        self._clock = clock
        self._seen: dict[tuple[str, str], _Seen] = {}

    @property
    def enabled(self) -> bool:
        """Whether breakers are on (``CHORUS_CIRCUIT_FAILURES`` > 0)."""
        return self._threshold > 0

    def breaker_model(self, model: str) -> str:
        """The breaker key's model for a call to ``model`` (``''`` unless per model)."""
        return model if self._per_model else ""

    def counted_kind(self, error_type: str | None) -> str | None:
        """``outage``, ``rate_limit`` or ``None`` (not counted) for an error type."""
        kind = _KINDS.get(error_type or "")
        if kind == "rate_limit" and not self._count_429:
            return None
        return kind

    async def admit(self, provider: str, model: str) -> Admission:
        """Let a call to ``provider:model`` through, or refuse it while the breaker is open.

        Args:
            provider: Provider name.
            model: Model name.

        Returns:
            The admission to pass to :meth:`record` after the call (``probe`` set for the one
            probe call of a half-open breaker).

        Raises:
            CircuitOpenError: The breaker is open (cool-down not over), or half-open with a
                probe in flight elsewhere; the message names the breaker, its failures, the
                next probe and how to reset it.
        """
        key = (provider, self.breaker_model(model))
        if not self.enabled:
            return Admission(*key)
        now = self._clock()
        seen = self._seen.get(key)
        if seen is not None and now - seen.read_at < self._cache_s:
            if seen.state == "closed" and seen.clean:
                return Admission(*key)
            if seen.state != "closed" and now < seen.probe_at:
                raise self._refusal(key, seen, now)
        try:
            row = await circuit_rows.read(self._pool, *key)
            if row is None or row["state"] == "closed":
                self._seen[key] = _Seen("closed", clean=_clean(row, self._window_s), read_at=now)
                return Admission(*key)
            probe_in_s = float(row["probe_in_s"] or 0.0)
            if probe_in_s > 0:
                seen = self._remember(key, row["state"], now, probe_in_s, _open_message(row))
                raise self._refusal(key, seen, now)
            won = await circuit_rows.claim_probe(self._pool, *key, self._cooldown_s)
        except DB_ERRORS as exc:
            logger.warning("circuit breaker %s: cannot read PostgreSQL (%s)", _name(key), exc)
            return Admission(*key)
        if won:
            self._remember(key, "half_open", now, self._cooldown_s, _open_message(row))
            self._transition(key, row["state"], "half_open", "a probe call goes through")
            return Admission(*key, probe=True)
        # Another worker won the probe a moment ago: refused, and read again next time.
        seen = self._remember(key, "half_open", now, 0.0, _open_message(row))
        raise self._refusal(key, seen, now)

    async def record(self, admission: Admission, error_type: str | None, message: str = "") -> None:
        """Record an admitted call's outcome.

        A counted failure (see :meth:`counted_kind`) is one statement; a success writes only
        when the call was the probe (it closes the breaker). Any other outcome of the probe
        (an auth error, an answer that failed the schema: the provider answered) closes it too.
        PostgreSQL errors are logged, never raised.

        Args:
            admission: What :meth:`admit` returned for the call.
            error_type: The call's ``ApplicationError`` type, ``None`` when it succeeded.
            message: The error's message (stored as the breaker's ``last_error``).
        """
        if not self.enabled:
            return
        key = (admission.provider, admission.model)
        kind = self.counted_kind(error_type)
        try:
            if kind is None:
                if admission.probe and await circuit_rows.close_after_probe(self._pool, *key):
                    self._seen[key] = _Seen("closed", clean=True, read_at=self._clock())
                    self._transition(key, "half_open", "closed", "the probe call succeeded")
                return
            row = await circuit_rows.record_failure(
                self._pool,
                *key,
                kind=kind,
                threshold=self._threshold,
                window_s=self._window_s,
                cooldown_s=self._cooldown_s,
                error=message[:500],
            )
        except DB_ERRORS as exc:
            logger.warning(
                "circuit breaker %s: cannot record the call in PostgreSQL (%s)", _name(key), exc
            )
            return
        now = self._clock()
        state, previous = row["o_state"], row["o_previous"]
        if state == "closed":
            self._seen[key] = _Seen("closed", clean=False, read_at=now)
            return
        text = (
            f"{row['o_failures']} outage(s), {row['o_rate_limits']} rate limit(s) within "
            f"{self._window_s:g} s; last: {message[:200]}"
        )
        self._remember(key, state, now, float(row["o_probe_in_s"]), text)
        if previous != state:
            why = (
                "the probe call failed"
                if previous == "half_open"
                else f"{self._threshold} failures of one kind within {self._window_s:g} s"
            )
            self._transition(
                key,
                previous,
                state,
                f"{why} ({message[:200]}); next probe in {self._cooldown_s:g} s",
            )

    def _remember(
        self, key: tuple[str, str], state: str, now: float, probe_in_s: float, message: str
    ) -> _Seen:
        seen = _Seen(state, clean=False, read_at=now, probe_at=now + probe_in_s, message=message)
        self._seen[key] = seen
        return seen

    def _refusal(self, key: tuple[str, str], seen: _Seen, now: float) -> CircuitOpenError:
        probe_in_s = max(0.0, seen.probe_at - now)
        if seen.state == "half_open":
            when = (
                f"a probe call is in flight (if it never reports, another may go in "
                f"{probe_in_s:.0f} s)"
            )
        else:
            when = f"next probe call in {probe_in_s:.0f} s"
        return CircuitOpenError(
            f"circuit breaker of {_name(key)} is {seen.state.replace('_', '-')} "
            f"({seen.message}); {when}; `chorus providers reset {key[0]}` closes it",
            key[0],
            key[1],
            probe_in_s,
        )

    def _transition(self, key: tuple[str, str], previous: str, state: str, why: str) -> None:
        if self._on_transition is not None:
            self._on_transition(key[0], state)
        logger.warning("circuit breaker %s: %s -> %s: %s", _name(key), previous, state, why)


async def statuses(pool: asyncpg.Pool) -> list[BreakerStatus]:
    """Every breaker PostgreSQL holds (providers without a row are closed), by provider."""
    return [BreakerStatus.from_row(row) for row in await circuit_rows.list_all(pool)]


async def reset(pool: asyncpg.Pool, provider: str, model: str | None = None) -> dict[str, str]:
    """Close a provider's breakers by hand (``chorus providers reset``).

    Workers that cached the breaker as open notice within ``CHORUS_CIRCUIT_CACHE_S``.

    Args:
        pool: Chorus's PostgreSQL pool.
        provider: Provider name.
        model: Only this model's breaker (per-model breakers); every one of the provider's
            when ``None``.

    Returns:
        Breaker model (``''``: provider-wide) -> its state before the reset; empty when the
        provider had no breaker row (it was closed).
    """
    rows = await circuit_rows.reset(pool, provider, model)
    for row in rows:
        if row["previous"] != "closed":
            logger.warning(
                "circuit breaker %s: %s -> closed: reset by hand",
                _name((provider, row["model"])),
                row["previous"],
            )
    return {row["model"]: row["previous"] for row in rows}


def _name(key: tuple[str, str]) -> str:
    provider, model = key
    return f"{provider}:{model}" if model else provider


def _clean(row: asyncpg.Record | None, window_s: float) -> bool:
    """Closed with no failure in the current window (or no row at all)."""
    if row is None or (row["failures"] == 0 and row["rate_limits"] == 0):
        return True
    age_s = row["window_age_s"]
    return age_s is not None and float(age_s) >= window_s


def _open_message(row: asyncpg.Record) -> str:
    return (
        f"{row['failures']} outage(s), {row['rate_limits']} rate limit(s) counted; last: "
        f"{(row['last_error'] or '')[:200]}"
    )
