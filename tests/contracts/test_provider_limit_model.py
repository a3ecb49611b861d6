"""The provider limit model and its defaults."""

from __future__ import annotations

import pytest


def test_provider_rate_burst_defaults_to_a_minutes_worth():
    """Unset, a provider's burst is ceil(rpm) calls (at least 1); it is validated."""
    import pydantic

    from chorus.config.settings import Settings
    from chorus.governance.provider_limits import DEFAULT_PROVIDER_LIMITS, ProviderLimit

    openai, anthropic, local = (
        DEFAULT_PROVIDER_LIMITS[p] for p in ("openai", "anthropic", "local")
    )
    assert (openai.concurrency, openai.rpm, openai.effective_burst) == (16, 500, 500)
    assert (anthropic.concurrency, anthropic.rpm, anthropic.effective_burst) == (8, 50, 50)
    assert (local.concurrency, local.rpm) == (1, 0)
    assert ProviderLimit(rpm=600, burst=3).effective_burst == 3
    assert ProviderLimit(rpm=60.5).effective_burst == 61
    assert ProviderLimit(rpm=0.5).effective_burst == 1
    for bad in (0, 10_001):
        with pytest.raises(pydantic.ValidationError, match="burst"):
            ProviderLimit(rpm=60, burst=bad)
    settings = Settings(provider_limits={"openai": {"rpm": 120, "burst": 4}})
    assert settings.provider_limits["openai"].effective_burst == 4
    assert settings.provider_limits["anthropic"] == anthropic  # the others keep their defaults
