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
