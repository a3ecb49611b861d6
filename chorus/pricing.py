"""Price table for LLM calls: USD per 1,000,000 input and output tokens.

Sources (list prices for standard, non-batch, non-cached usage):

- OpenAI: https://platform.openai.com/docs/pricing and https://openai.com/api/pricing/ ,
  as published on 2026-05 (gpt-4o, gpt-4o-mini, gpt-4.1 family unchanged since their launch).
- Anthropic: https://docs.anthropic.com/en/docs/about-claude/pricing , as published on
  2025-11-25 (Claude Haiku 4.5, Sonnet 4.5, Opus 4.5).
- ``local``: self-hosted models cost 0.

Prices change: a deployment can override or extend the table with ``CHORUS_PRICES_FILE``
(YAML: ``provider: {model: {input: USD, output: USD}}``). A model missing from the table is
priced 0 and flagged ``cost_known=False`` so totals never silently look complete.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml


@dataclass(frozen=True)
class Price:
    """USD per 1M input tokens and per 1M output tokens."""

    input_per_mtok: float
    output_per_mtok: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """Cost in USD of ``input_tokens`` prompt and ``output_tokens`` completion tokens."""
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6


PRICES: dict[str, dict[str, Price]] = {
    "openai": {
        "gpt-4o-mini": Price(0.15, 0.60),
        "gpt-4o": Price(2.50, 10.00),
        "gpt-4.1": Price(2.00, 8.00),
        "gpt-4.1-mini": Price(0.40, 1.60),
        "gpt-4.1-nano": Price(0.10, 0.40),
        "o3-mini": Price(1.10, 4.40),
    },
    "anthropic": {
        "claude-haiku-4-5": Price(1.00, 5.00),
        "claude-sonnet-4-5": Price(3.00, 15.00),
        "claude-sonnet-4": Price(3.00, 15.00),
        "claude-opus-4-5": Price(5.00, 25.00),
        "claude-3-5-haiku": Price(0.80, 4.00),
    },
}


@lru_cache(maxsize=4)
def _load_overrides(path: str) -> dict[str, dict[str, Price]]:
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    table: dict[str, dict[str, Price]] = {}
    for provider, models in data.items():
        for model, p in (models or {}).items():
            table.setdefault(str(provider), {})[str(model)] = Price(
                float(p["input"]), float(p["output"])
            )
    return table


def lookup_price(provider: str, model: str) -> Price | None:
    """Find the price of ``provider``/``model``.

    Dated snapshots match their family: ``gpt-4o-mini-2024-07-18`` is priced as ``gpt-4o-mini``
    and ``claude-haiku-4-5-20251001`` as ``claude-haiku-4-5`` (longest matching prefix wins).

    Args:
        provider: ``openai``, ``anthropic`` or ``local``.
        model: Model name as requested or as reported by the provider.

    Returns:
        The price, ``Price(0, 0)`` for ``local``, or ``None`` when the model is unknown.

    Raises:
        OSError, yaml.YAMLError, KeyError: When ``CHORUS_PRICES_FILE`` is unreadable or malformed.

    """
    if provider == "local":
        return Price(0.0, 0.0)
    table = dict(PRICES.get(provider, {}))
    override_file = os.environ.get("CHORUS_PRICES_FILE")
    if override_file:
        table.update(_load_overrides(override_file).get(provider, {}))
    if model in table:
        return table[model]
    matches = [name for name in table if model.startswith(name + "-")]
    return table[max(matches, key=len)] if matches else None


def cost_usd(
    provider: str, model: str, input_tokens: int, output_tokens: int
) -> tuple[float, bool]:
    """Price one call.

    Returns:
        ``(cost in USD, known)``; ``known`` is ``False`` (and the cost 0) for unpriced models.

    """
    price = lookup_price(provider, model)
    if price is None:
        return 0.0, False
    return price.cost(input_tokens, output_tokens), True


CONTEXT_WINDOWS: dict[str, dict[str, int]] = {
    # Context windows in tokens, from the same providers' model pages.
    "openai": {
        "gpt-4o-mini": 128_000,
        "gpt-4o": 128_000,
        "gpt-4.1": 1_047_576,
        "gpt-4.1-mini": 1_047_576,
        "gpt-4.1-nano": 1_047_576,
        "o3-mini": 200_000,
    },
    "anthropic": {"claude": 200_000},
}
DEFAULT_CONTEXT_WINDOW = 32_000
"""Assumed for remote models missing from :data:`CONTEXT_WINDOWS` (conservative)."""


def context_window(provider: str, model: str, local_tokens: int) -> int:
    """Context window in tokens of ``provider``/``model``.

    Args:
        provider: ``openai``, ``anthropic`` or ``local``.
        model: Model name.
        local_tokens: The local server's window (``CHORUS_LOCAL_CONTEXT_TOKENS``).

    """
    if provider == "local":
        return local_tokens
    table = CONTEXT_WINDOWS.get(provider, {})
    matches = [name for name in table if model == name or model.startswith(name + "-")]
    return table[max(matches, key=len)] if matches else DEFAULT_CONTEXT_WINDOW
