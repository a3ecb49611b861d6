"""Prices: genai-prices, a prices file, cached tokens."""

from __future__ import annotations

from pathlib import Path

import pytest

from chorus.governance.pricing import PRICE_DATA_VERSION, context_window, cost_usd, is_priced


def test_prices_match_dated_snapshots_and_local_is_free():
    assert cost_usd("openai", "gpt-4o-mini-2024-07-18", 1_000_000, 1_000_000) == (0.75, True)
    assert cost_usd("local", "anything", 10**6, 10**6) == (0.0, True)
    assert cost_usd("openai", "mystery-model", 10, 10) == (0.0, False)
    assert cost_usd("anthropic", "claude-haiku-4-5-20251001", 10**6, 10**6) == cost_usd(
        "anthropic", "claude-haiku-4-5", 10**6, 10**6
    )
    assert context_window("anthropic", "claude-sonnet-4-5", 8192) == 200_000
    assert context_window("local", "smollm2", 8192) == 8192


def test_prices_file_overrides(tmp_path: Path, monkeypatch):
    prices = tmp_path / "prices.yaml"
    prices.write_text("openai:\n  my-finetune: {input: 2.0, output: 4.0}\n")
    monkeypatch.setenv("CHORUS_PRICES_FILE", str(prices))
    assert cost_usd("openai", "my-finetune", 500_000, 250_000) == (2.0, True)
    prices.write_text("openai:\n  my-finetune: {input: 2.0, outptu: 4.0}\n")
    from chorus.governance.pricing import _load_overrides

    _load_overrides.cache_clear()
    with pytest.raises(ValueError, match="my-finetune: needs input and output"):
        cost_usd("openai", "my-finetune", 1, 1)


def test_genai_prices_models_and_cached_tokens():
    """Issue 13: gpt-5, gpt-5-mini, o4-mini, claude-opus-4-1 cost $0 and bypassed budgets."""
    from genai_prices import Usage, calc_price

    for provider, model in [
        ("openai", "gpt-5"),
        ("openai", "gpt-5-mini"),
        ("openai", "o4-mini"),
        ("anthropic", "claude-opus-4-1"),
    ]:
        cost, known = cost_usd(provider, model, 1000, 100)
        assert known and cost > 0 and is_priced(provider, model), model
    assert not is_priced("openai", "mystery-model") and is_priced("local", "anything")
    plain, _ = cost_usd("openai", "gpt-4o-mini", 10_000, 100)
    cached, _ = cost_usd("openai", "gpt-4o-mini", 10_000, 100, cached_input_tokens=8_000)
    expected = calc_price(
        Usage(input_tokens=10_000, output_tokens=100, cache_read_tokens=8_000),
        "gpt-4o-mini",
        provider_id="openai",
    ).total_price
    assert cached < plain and cached == float(expected)
    assert PRICE_DATA_VERSION.startswith("genai-prices ")
    assert context_window("openai", "gpt-5-mini", 1) == 400_000


def test_linear_fast_path_equals_the_library_for_every_flat_price():
    """Issue 19: cost_usd prices flat (untiered) library prices from per-token rates taken
    once; for every model of every provider genai-prices lists, at usages with and without
    cache reads and writes, that equals calc_price to the last digit. Tiered prices take the
    library's own path."""
    import random

    from genai_prices import Usage, calc_price
    from genai_prices.data_snapshot import get_snapshot

    from chorus.governance.pricing import _linear_cost

    rng = random.Random(19)
    compared = tiered = 0
    for provider in get_snapshot().providers:
        for model in provider.models:
            for _ in range(3):
                tin = rng.randrange(0, 300_000)
                cached = rng.randrange(0, tin + 1) if rng.random() < 0.5 else 0
                written = rng.randrange(0, tin - cached + 1) if rng.random() < 0.3 else 0
                tout = rng.randrange(0, 64_000)
                try:
                    expected = calc_price(
                        Usage(
                            input_tokens=tin,
                            output_tokens=tout,
                            cache_read_tokens=cached or None,
                            cache_write_tokens=written or None,
                        ),
                        model.id,
                        provider_id=provider.id,
                    ).total_price
                except (LookupError, ValueError):
                    continue
                fast = _linear_cost(provider.id, model.id, tin, tout, cached, written)
                if fast is None:
                    tiered += 1
                    continue
                compared += 1
                assert fast == float(expected), (provider.id, model.id, tin, tout, cached, written)
    assert compared > 1000 and tiered > 0, (compared, tiered)
    # cost_usd itself takes the fast path and agrees
    cost, known = cost_usd("openai", "gpt-4o-mini", 10_000, 100, cached_input_tokens=8_000)
    assert known and cost == _linear_cost("openai", "gpt-4o-mini", 10_000, 100, 8_000, 0)
