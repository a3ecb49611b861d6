"""Chorus's Prometheus metrics (prometheus-client), registered once per process.

The worker serves them on ``/metrics`` (``chorus/observability/probes.py``, port
``CHORUS_METRICS_PORT``,
default 9464) next to the Temporal SDK's own metrics (``CHORUS_SDK_METRICS_PORT``, default
9465). Nothing here runs inside workflow code: activities record events as they happen, and the
gauges that describe PostgreSQL state (budgets, drafts) are refreshed by :func:`refresh_gauges`
when ``/metrics`` is scraped, so every worker reports the same fleet-wide values.

Metric families (label values are bounded: providers, configured models, agents, error types):

- ``chorus_llm_request_duration_seconds{provider,model,agent,outcome}``: histogram of provider
  HTTP calls; ``outcome`` is ``ok`` or the :mod:`chorus.contracts.errors` type (``RateLimited``...).
- ``chorus_llm_tokens_total{provider,model,agent,direction}``: ``direction`` is ``input``
  (prompt) or ``output`` (completion) tokens, from the provider's usage report.
- ``chorus_llm_cost_usd_total{provider,model,agent}``: USD priced by
:mod:`chorus.governance.pricing`.
- ``chorus_llm_retries_total{provider,model,agent}``: activity attempts after the first.
- ``chorus_llm_fallbacks_total{agent,provider}``: agent calls answered by a provider other
  than the head of the agent's chain (counted when the run finishes).
- ``chorus_runs_finished_total{pattern,status}`` and
  ``chorus_run_duration_seconds{pattern,status}``: top-level runs only.
- ``chorus_budget_spent_usd{scope}``, ``chorus_budget_reserved_usd{scope}``,
  ``chorus_budget_limit_usd{scope}``, ``chorus_budget_alert_usd{scope}``,
  ``chorus_budget_remaining_usd{scope}``: today's standing (``chorus budget show``).
- ``chorus_drafts_active``: drafts not archived (their draft workflows are open).
- ``chorus_stream_events_total{kind}``, ``chorus_stream_flush_failures_total``: live token
  streaming (:mod:`chorus.streaming.publisher`).
- ``chorus_circuit_state{provider}`` (0 closed, 1 half-open, 2 open; with per-model breakers
  the provider's worst), ``chorus_circuit_transitions_total{provider,to}`` and
  ``chorus_circuit_rejections_total{provider}`` (calls sent to the next provider because the
  breaker was open): the fleet-wide circuit breakers (:mod:`chorus.governance.circuit_breaker`).
- Counters kept from before: ``chorus_budget_refusals_total{budget}``,
  ``chorus_budget_alerts_total``, ``chorus_budget_settled_usd_total``,
  ``chorus_pii_redactions_total{kind,policy}``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from prometheus_client import Counter, Gauge, Histogram

from chorus.config.settings import Settings
from chorus.governance import budget
from chorus.storage import circuit_rows, draft_rows
from chorus.storage.db import DB_ERRORS

LLM_LATENCY_BUCKETS: tuple[float, ...] = (
    0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.5,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0,
)  # fmt: skip
"""Buckets of ``chorus_llm_request_duration_seconds``, in seconds.

Chat completions take ~0.3-3 s for short answers and 10-60 s for long ones (hosted APIs and
small local models alike); agents time out at 120 s by default (``AgentSpec.timeout_s``).
``histogram_quantile`` interpolates linearly inside a bucket, so its error is at most the
bucket's width: steps of 0.25-1 s up to 5 s and of 5-15 s up to 60 s keep P95/P99 within about
20 % of the true value in the ranges where alerts fire (P99 > 30 s).
"""

RUN_DURATION_BUCKETS: tuple[float, ...] = (
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 90.0,
    120.0, 180.0, 300.0, 450.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0,
)  # fmt: skip
"""Buckets of ``chorus_run_duration_seconds``, in seconds.

A run is a few LLM calls (seconds to minutes) plus retries and fallbacks (up to the hour-long
schedule-to-close of a call). Roughly geometric steps (x1.5-2) keep the relative error of a
P95 read with ``histogram_quantile`` under ~25 % from 100 ms to an hour.
"""

LLM_LABELS = ("provider", "model", "agent")

BUDGET_REFUSALS = Counter(
    "chorus_budget_refusals_total",
    "LLM calls refused because their worst-case cost would pass a budget.",
    ["budget"],
)
BUDGET_ALERTS = Counter(
    "chorus_budget_alerts_total",
    "Times the daily spend crossed the alert threshold (once per UTC day).",
)
BUDGET_SPENT = Counter(
    "chorus_budget_settled_usd_total",
    "USD settled against budgets by this worker (real cost of reserved calls).",
)
PII_REDACTIONS = Counter(
    "chorus_pii_redactions_total",
    "PII items replaced in prompts before they reached a provider, by kind and policy.",
    ["kind", "policy"],
)

LLM_REQUEST_DURATION = Histogram(
    "chorus_llm_request_duration_seconds",
    "Wall time of one provider HTTP call in seconds, by outcome (ok or the error type).",
    [*LLM_LABELS, "outcome"],
    buckets=LLM_LATENCY_BUCKETS,
)
TOOL_CALLS = Counter(
    "chorus_tool_calls_total",
    "Tool calls by tool and outcome (ok, or the error type: ToolError, ToolArgumentsInvalid,"
    " Timeout, MCPUnavailable...); one per activity attempt.",
    ["tool", "outcome"],
)
TOOL_CALL_DURATION = Histogram(
    "chorus_tool_call_duration_seconds",
    "Time in one tool call attempt in seconds, by tool.",
    ["tool"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
LLM_TOKENS = Counter(
    "chorus_llm_tokens_total",
    "Tokens reported by providers; direction is input (prompt) or output (completion).",
    [*LLM_LABELS, "direction"],
)
LLM_COST = Counter(
    "chorus_llm_cost_usd_total",
    "USD cost of successful provider calls, priced with chorus.governance.pricing.",
    list(LLM_LABELS),
)
LLM_RETRIES = Counter(
    "chorus_llm_retries_total",
    "chorus.call_llm activity attempts after the first (Temporal retries).",
    list(LLM_LABELS),
)
LLM_FALLBACKS = Counter(
    "chorus_llm_fallbacks_total",
    "Agent calls answered by a provider other than the head of the agent's chain.",
    ["agent", "provider"],
)
RUNS_FINISHED = Counter(
    "chorus_runs_finished_total",
    "Top-level runs finished, by pattern and status.",
    ["pattern", "status"],
)
RUN_DURATION = Histogram(
    "chorus_run_duration_seconds",
    "Wall time of top-level runs in seconds, by pattern and status.",
    ["pattern", "status"],
    buckets=RUN_DURATION_BUCKETS,
)
BUDGET_GAUGES = {
    field: Gauge(
        f"chorus_budget_{field}",
        f"Budget {field.removesuffix('_usd')} in USD for the current period, by scope "
        "(refreshed from PostgreSQL on scrape).",
        ["scope"],
    )
    for field in ("spent_usd", "reserved_usd", "limit_usd", "alert_usd", "remaining_usd")
}
DRAFTS_ACTIVE = Gauge(
    "chorus_drafts_active",
    "Drafts not archived, i.e. open draft workflows (refreshed from PostgreSQL on scrape).",
)
STREAM_EVENTS = Counter(
    "chorus_stream_events_total",
    "Live stream events written to PostgreSQL for run readers, by kind (step_started, token,"
    " step_completed...; a token event holds ~50 ms of text).",
    ["kind"],
)
STREAM_FLUSH_FAILURES = Counter(
    "chorus_stream_flush_failures_total",
    "Batches of live stream events dropped because PostgreSQL did not take them in time (the"
    " LLM call goes on; readers get the whole text with step_completed).",
)
CIRCUIT_STATE_VALUES = {"closed": 0, "half_open": 1, "open": 2}
"""Values of ``chorus_circuit_state`` by breaker state."""
CIRCUIT_STATE = Gauge(
    "chorus_circuit_state",
    "State of the provider's fleet-wide circuit breaker: 0 closed, 1 half-open, 2 open (the"
    " worst of its models' breakers with CHORUS_CIRCUIT_PER_MODEL; refreshed on scrape).",
    ["provider"],
)
CIRCUIT_TRANSITIONS = Counter(
    "chorus_circuit_transitions_total",
    "Circuit breaker state changes made by this process, by provider and new state (open,"
    " half_open, closed).",
    ["provider", "to"],
)
CIRCUIT_REJECTIONS = Counter(
    "chorus_circuit_rejections_total",
    "LLM calls refused before reaching the provider because its circuit breaker was open (the"
    " workflow tried the agent's next provider).",
    ["provider"],
)
LLM_CACHE = Counter(
    "chorus_llm_cache_total",
    "Response-cache lookups of agents with a cache (activities/response_cache.py), by result:"
    " hit (no provider call, cost 0) or miss (the provider was called and the answer stored).",
    ["result"],
)
GAUGE_REFRESH_ERRORS = Counter(
    "chorus_metrics_refresh_errors_total",
    "Scrapes whose PostgreSQL-backed gauges could not be refreshed (values are stale).",
)


def observe_llm_call(
    *,
    provider: str,
    model: str,
    agent: str,
    outcome: str,
    seconds: float,
    input_tokens: int = 0,
    output_tokens: int = 0,
    cost_usd: float = 0.0,
) -> None:
    """Record one provider HTTP call.

    Args:
        provider: Provider name (``openai``, ``anthropic``, ``local``).
        model: Requested model (the agent's configured name, so label values stay bounded).
        agent: Agent name.
        outcome: ``ok`` or the :mod:`chorus.contracts.errors` type the failure was mapped to.
        seconds: Wall time of the call in seconds.
        input_tokens: Prompt tokens reported by the provider.
        output_tokens: Completion tokens reported by the provider.
        cost_usd: Cost of the call in USD.

    """
    labels = {"provider": provider, "model": model, "agent": agent}
    LLM_REQUEST_DURATION.labels(**labels, outcome=outcome).observe(seconds)
    if outcome != "ok":
        return
    LLM_TOKENS.labels(**labels, direction="input").inc(input_tokens)
    LLM_TOKENS.labels(**labels, direction="output").inc(output_tokens)
    LLM_COST.labels(**labels).inc(cost_usd)


def observe_circuit_transition(provider: str, state: str) -> None:
    """Count a circuit breaker transition this process made and show the new state at once.

    Args:
        provider: Provider name.
        state: The new state: ``closed``, ``half_open`` or ``open``.
    """
    CIRCUIT_TRANSITIONS.labels(provider=provider, to=state).inc()
    CIRCUIT_STATE.labels(provider=provider).set(CIRCUIT_STATE_VALUES[state])


def observe_run_finished(
    run: Any, status: str, wall_s: float, fallbacks: list[dict[str, str]]
) -> None:
    """Count a finished run and the provider fallbacks of its agent calls.

    Args:
        run: The run row before it was closed (``pattern``, ``parent_workflow_id``).
        status: ``succeeded``, ``failed`` or ``cancelled``.
        wall_s: Wall time of the run in seconds.
        fallbacks: The run's own calls (children count theirs) answered by other than their
            agent's first provider and model, ``[{"agent": ..., "provider": ...}]``
            (:func:`chorus.storage.db.record_run_finished` finds them).
    """
    if run["parent_workflow_id"] is None:
        RUNS_FINISHED.labels(pattern=run["pattern"], status=status).inc()
        RUN_DURATION.labels(pattern=run["pattern"], status=status).observe(wall_s)
    for call in fallbacks:
        LLM_FALLBACKS.labels(agent=call["agent"], provider=call["provider"]).inc()


async def refresh_gauges(pool: asyncpg.Pool, settings: Settings, timeout_s: float = 2.0) -> bool:
    """Set the budget, draft and circuit breaker gauges from PostgreSQL (on each scrape).

    Budget values come from :func:`chorus.governance.budget.standing`; a scope without a
    configured limit
    has no ``limit``/``alert``/``remaining`` sample. On failure the previous values stay and
    ``chorus_metrics_refresh_errors_total`` is incremented, so a scrape never fails because
    PostgreSQL is down (``/readyz`` reports that).

    Args:
        pool: Pool of the worker.
        settings: Settings (budget limits from the environment).
        timeout_s: Bound on the refresh, in seconds.

    Returns:
        ``True`` when the gauges were refreshed.

    """
    try:
        async with asyncio.timeout(timeout_s):
            lines = await budget.standing(pool, settings)
            drafts = await draft_rows.active_draft_count(pool)
            breakers = await circuit_rows.list_all(pool)
    except DB_ERRORS:  # TimeoutError is an OSError
        GAUGE_REFRESH_ERRORS.inc()
        return False
    for gauge in BUDGET_GAUGES.values():
        gauge.clear()
    for line in lines:
        if line.scope == "run":  # a per-run limit has no period-wide standing
            BUDGET_GAUGES["limit_usd"].labels(scope="run").set(line.limit_usd or 0.0)
            continue
        values = {
            "spent_usd": line.spent_usd,
            "reserved_usd": line.reserved_usd,
            "limit_usd": line.limit_usd,
            "alert_usd": line.alert_usd,
            "remaining_usd": line.remaining_usd,
        }
        for field, value in values.items():
            if value is not None:
                BUDGET_GAUGES[field].labels(scope=line.scope).set(value)
    DRAFTS_ACTIVE.set(drafts)
    set_circuit_gauges(breakers)
    return True


def set_circuit_gauges(rows: list[Any]) -> None:
    """Set ``chorus_circuit_state`` from the ``circuit_breakers`` rows.

    Providers without a row keep their sample (a breaker reset by hand keeps its row, closed).

    Args:
        rows: Rows with ``provider`` and ``state`` (``closed``, ``half_open`` or ``open``).
    """
    worst: dict[str, int] = {}
    for row in rows:
        value = CIRCUIT_STATE_VALUES.get(row["state"], 0)
        worst[row["provider"]] = max(worst.get(row["provider"], 0), value)
    for provider, value in worst.items():
        CIRCUIT_STATE.labels(provider=provider).set(value)
