"""Chorus's Prometheus metrics (prometheus-client), registered once per process.

The worker exposes them next to the Temporal SDK's own metrics.
"""

from __future__ import annotations

from prometheus_client import Counter

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
