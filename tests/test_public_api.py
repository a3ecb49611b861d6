"""The public face (``chorus.__all__``) and the test helpers users get (``chorus.testing``)."""

from __future__ import annotations

import subprocess
import sys


def test_every_public_name_resolves():
    import chorus

    for name in chorus.__all__:
        assert getattr(chorus, name) is not None, name


def test_importing_chorus_stays_cheap():
    """The sandbox re-imports ``chorus`` per workflow run: it must not pull in the SDK,
    database drivers or provider SDKs."""
    heavy = ("asyncpg", "openai", "anthropic", "starter")
    code = f"import sys, chorus; print(','.join(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


async def test_fake_llm_and_running_worker_are_public(client, make_settings):
    from chorus.testing import FakeLLM, running_worker
    from tests.conftest import agent

    fake = FakeLLM()
    settings = make_settings([agent("writer", ["local:fake"])])
    async with running_worker(client, settings, lambda _pool: fake.call_llm) as chorus:
        result = await (await chorus.start_sequential("Brief me", ["writer"])).result()
    assert result.output == "writer output [saw: ]"
    assert [c.agent for c in fake.calls] == ["writer"]


def test_all_lists_exactly_the_exports():
    import chorus

    assert set(chorus.__all__) == {"__version__", *chorus._EXPORTS}
