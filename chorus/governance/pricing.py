"""Prices and context windows of LLM calls, from ``genai-prices`` (Pydantic's price database).

``genai-prices`` (the price data pydantic-ai uses) prices a call from its token usage,
including the provider's rules for cached input: OpenAI's ``prompt_tokens_details.
cached_tokens`` at the discounted rate, Anthropic's cache reads and cache writes at theirs.
Reasoning tokens are part of the output tokens the providers report. The data ships inside
the installed package and is never updated over the network at run time (its
``UpdatePrices`` is not used): :data:`PRICE_DATA_VERSION` names the data a cost came from and
is recorded with each ledger row.

What this module adds:

- ``local`` models cost 0 (self-hosted).
- ``CHORUS_PRICES_FILE`` (YAML ``provider: {model: {input: USD, output: USD, cached_input:
  USD}}``, USD per 1,000,000 tokens; ``cached_input`` defaults to ``input``) prices models the
  library lacks or overrides it; a model matches its dated snapshots by prefix.
- Registry providers (``CHORUS_PROVIDERS_FILE``, :mod:`chorus.config.providers`): the entry's
  ``prices`` (by alias, provider model id, dated-snapshot prefix, or ``"*"``), else the library
  under the entry kind's price-table provider (:data:`KIND_PRICE_PROVIDER`: ``azure-openai`` as
  ``azure``, ``gemini`` as ``google``, ``bedrock`` as ``aws``) for the model's provider id, or
  for the alias when the library does not know the id (an Azure deployment name); an
  ``openai-compatible`` model without a price in the entry is unpriced. ``CHORUS_PRICES_FILE``
  still wins over both. The entry's ``context_tokens`` is the context window of its models.
- :func:`is_priced`: a paid model with no price cannot be limited by any budget, so the LLM
  activity refuses to call it unless ``CHORUS_ALLOW_UNPRICED_MODELS`` is set.
- Context windows come from the library's model data; ``local`` from settings; otherwise the
  conservative :data:`DEFAULT_CONTEXT_WINDOW`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

import genai_prices
import yaml
from genai_prices import Usage, calc_price
from genai_prices.types import ModelPrice, TieredPrices

from chorus.config.providers import ProviderEntry, read_registry_file
from chorus.contracts.models import PROVIDERS

PRICE_DATA_VERSION = f"genai-prices {genai_prices.__version__}"
"""The price data in use (recorded with every ledger row)."""

DEFAULT_CONTEXT_WINDOW = 32_000
"""Assumed for remote models without a known context window (conservative), in tokens."""

_FILE_KEYS = frozenset({"input", "output", "cached_input"})

KIND_PRICE_PROVIDER: dict[str, str] = {
    "openai": "openai",
    "anthropic": "anthropic",
    "azure-openai": "azure",
    "gemini": "google",
    "bedrock": "aws",
}
"""``genai-prices`` provider id of each registry kind (its ``providers`` list, 2026);
``openai-compatible`` endpoints serve any model at any price, so they have none."""


@dataclass(frozen=True)
class Price:
    """USD per 1M input, output and cached-input tokens (a ``CHORUS_PRICES_FILE`` entry)."""

    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float | None = None

    def cost(self, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0) -> float:
        """Cost in USD; ``cached_input_tokens`` are part of ``input_tokens``."""
        cached = min(cached_input_tokens, input_tokens)
        cached_rate = (
            self.input_per_mtok
            if self.cached_input_per_mtok is None
            else self.cached_input_per_mtok
        )
        return (
            (input_tokens - cached) * self.input_per_mtok
            + cached * cached_rate
            + output_tokens * self.output_per_mtok
        ) / 1e6


@lru_cache(maxsize=4)
def _load_overrides(path: str) -> dict[str, dict[str, Price]]:
    """Parse a prices file (strict: unknown keys are errors naming the entry).

    Raises:
        OSError, yaml.YAMLError: Unreadable or not YAML.
        ValueError: A malformed entry (names provider, model and the problem).
    """
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    table: dict[str, dict[str, Price]] = {}
    for provider, models in data.items():
        for model, entry in (models or {}).items():
            where = f"CHORUS_PRICES_FILE {path}: {provider}.{model}"
            if not isinstance(entry, dict) or not {"input", "output"} <= set(entry):
                raise ValueError(f"{where}: needs input and output (USD per 1M tokens)")
            if unknown := set(entry) - _FILE_KEYS:
                raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
            cached = entry.get("cached_input")
            table.setdefault(str(provider), {})[str(model)] = Price(
                float(entry["input"]),
                float(entry["output"]),
                None if cached is None else float(cached),
            )
    return table


def _file_price(provider: str, model: str) -> Price | None:
    path = os.environ.get("CHORUS_PRICES_FILE")
    if not path:
        return None
    table = _load_overrides(path).get(provider, {})
    if model in table:
        return table[model]
    matches = [name for name in table if model.startswith(name + "-")]
    return table[max(matches, key=len)] if matches else None


def _registry_entry(provider: str) -> ProviderEntry | None:
    """The registry entry of a non-built-in provider (``CHORUS_PROVIDERS_FILE``), if any."""
    path = os.environ.get("CHORUS_PROVIDERS_FILE")
    if not path or provider in PROVIDERS:
        return None
    return read_registry_file(Path(path)).get(provider)


def _price_source(provider: str, model: str) -> tuple[Price | None, str | None, str]:
    """Where ``provider``/``model`` is priced: a fixed price, or a library (provider, model).

    Returns:
        ``(price, None, model)`` for a fixed price (prices file or registry entry), else
        ``(None, library provider id or None, model id)``.
    """
    fixed = _file_price(provider, model)
    if fixed is not None:
        return fixed, None, model
    entry = _registry_entry(provider)
    if entry is None:
        return None, provider, model
    listed = entry.price(model)
    if listed is not None:
        return Price(listed.input, listed.output, listed.cached_input), None, model
    library = KIND_PRICE_PROVIDER.get(entry.kind)
    model_id = entry.model_id(model)
    if library is not None and _library_model(library, model_id) is None:
        # An Azure deployment's name says nothing; an alias named after the model does
        # (``models: {gpt-4o: my-deployment}``).
        if _library_model(library, model) is not None:
            model_id = model
    return None, library, model_id


@lru_cache(maxsize=512)
def _library_model(provider: str, model: str) -> genai_prices.types.ModelInfo | None:
    try:
        return calc_price(Usage(input_tokens=0, output_tokens=0), model, provider_id=provider).model
    except LookupError:
        return None


def is_priced(provider: str, model: str) -> bool:
    """Whether a call to ``provider``/``model`` can be priced (``local`` always is)."""
    if provider == "local":
        return True
    price, library, model_id = _price_source(provider, model)
    return price is not None or (
        library is not None and _library_model(library, model_id) is not None
    )


def cost_usd(
    provider: str,
    model: str,
    input_tokens: int,
    output_tokens: int,
    *,
    cached_input_tokens: int = 0,
    cache_write_tokens: int = 0,
) -> tuple[float, bool]:
    """Price one call.

    Args:
        provider: ``openai``, ``anthropic`` or ``local``.
        model: Model name as requested or as reported by the provider.
        input_tokens: All input tokens, cached ones included.
        output_tokens: Output tokens (reasoning tokens included, as the providers report).
        cached_input_tokens: Input tokens read from the provider's prompt cache.
        cache_write_tokens: Input tokens written to the cache (Anthropic bills them apart).

    Returns:
        ``(cost in USD, known)``; ``known`` is ``False`` (and the cost 0) for unpriced models.

    Raises:
        ValueError, OSError: ``CHORUS_PRICES_FILE`` is malformed or unreadable.
        chorus.config.providers.ProviderRegistryError: ``CHORUS_PROVIDERS_FILE`` is invalid.
    """
    if provider == "local":
        return 0.0, True
    price, library, model = _price_source(provider, model)
    if price is not None:
        return price.cost(input_tokens, output_tokens, cached_input_tokens), True
    if library is None:
        return 0.0, False
    linear = _linear_cost(
        library, model, input_tokens, output_tokens, cached_input_tokens, cache_write_tokens
    )
    if linear is not None:
        return linear, True
    try:
        calculation = calc_price(
            Usage(
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cache_read_tokens=cached_input_tokens or None,
                cache_write_tokens=cache_write_tokens or None,
            ),
            model,
            provider_id=library,
        )
    except LookupError:
        return 0.0, False
    return float(calculation.total_price), True


_MTOK = 1_000_000
_Rates = tuple[Decimal, Decimal, Decimal, Decimal, Decimal]
_rates: dict[int, tuple[ModelPrice, _Rates | None]] = {}
"""``id(ModelPrice)`` → (that price, its per-token rates or ``None`` when not linear)."""


def _linear_cost(
    library: str, model: str, input_tokens: int, output_tokens: int, cached: int, written: int
) -> float | None:
    """The library's price of a call, from per-token rates the library computed once.

    ``genai-prices`` prices every call through its unit decomposition and validation (0.17 ms
    a call, two calls per LLM activity: the budget's worst case and the cost; issue 19; this
    path 0.01 ms, measured with ``timeit`` on gpt-4o-mini). A price without tiers is linear in
    the token counts: the cost is the per-request fee (some providers charge one) + uncached
    input × its rate + cache reads × theirs + cache writes × theirs + output × its rate. The
    fee and the four rates are the library's own prices of one request with no tokens and
    with one million tokens of each kind (``ModelPrice.calc_price``), taken once per price
    object; the price object is the one the library picks for this moment
    (``ModelInfo.get_prices``, so dated price changes apply). Tiered prices and anything the
    library refuses go the library's whole way (``None`` here).
    ``tests/governance/test_pricing.py`` checks this against ``calc_price`` for every flat
    price of every provider the library lists.
    """
    info = _library_model(library, model)
    if info is None or cached < 0 or written < 0 or cached + written > input_tokens:
        return None
    price = info.get_prices(datetime.now(tz=UTC))
    known = _rates.get(id(price))
    if known is None or known[0] is not price:
        known = _rates[id(price)] = (price, _price_rates(price))
    rates = known[1]
    if rates is None:
        return None
    fee, uncached_rate, output_rate, read_rate, write_rate = rates
    total = (
        fee
        + uncached_rate * (input_tokens - cached - written)
        + read_rate * cached
        + write_rate * written
        + output_rate * output_tokens
    )
    return float(total)


def _price_rates(price: ModelPrice) -> _Rates | None:
    """USD per request, and per token of uncached input, output, cache reads and writes.

    ``None`` when the price has tiers (not linear) or the library cannot price tokens with it.
    """
    if any(isinstance(value, TieredPrices) for value in vars(price).values()):
        return None
    try:

        def usd(**usage: int) -> Decimal:
            return price.calc_price(Usage(**usage))["total_price"]

        fee = usd(input_tokens=0, output_tokens=0)

        def per_token(**usage: int) -> Decimal:
            return (usd(**usage) - fee) / _MTOK

        return (
            fee,
            per_token(input_tokens=_MTOK, output_tokens=0),
            per_token(input_tokens=0, output_tokens=_MTOK),
            per_token(input_tokens=_MTOK, output_tokens=0, cache_read_tokens=_MTOK),
            per_token(input_tokens=_MTOK, output_tokens=0, cache_write_tokens=_MTOK),
        )
    except (LookupError, ValueError, TypeError, ArithmeticError):
        return None


def context_window(provider: str, model: str, local_tokens: int) -> int:
    """Context window in tokens of ``provider``/``model``.

    Args:
        provider: ``openai``, ``anthropic`` or ``local``.
        model: Model name.
        local_tokens: The local server's window (``CHORUS_LOCAL_CONTEXT_TOKENS``).
    """
    if provider == "local":
        return local_tokens
    entry = _registry_entry(provider)
    if entry is not None and entry.context_tokens:
        return entry.context_tokens
    _price, library, model = _price_source(provider, model)
    info = _library_model(library, model) if library is not None else None
    window = getattr(info, "context_window", None) if info is not None else None
    return int(window) if window else DEFAULT_CONTEXT_WINDOW
