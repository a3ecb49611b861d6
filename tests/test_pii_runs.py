"""PII never reaches the provider (real workflows + LLM activity, loopback echo stub)."""

from __future__ import annotations

import json

from activities import LLMActivities, ProviderClients
from tests.conftest import agent, running_worker
from tests.pii_corpus import NEAR_MISSES, POSITIVES
from tests.stub_llm import StubLLM

VALUES = sorted({value for sample in POSITIVES for _kind, value in sample.expected})
# Near misses that contain a value as a substring (a card inside a longer digit run, which must
# stay unredacted) would trip the substring check below; tests/test_pii.py covers them.
DOCUMENT = "\n".join(
    sample.text
    for sample in POSITIVES + [n for n in NEAR_MISSES if not any(v in n.text for v in VALUES)]
)


async def test_no_pii_reaches_the_provider_and_placeholders_come_back(client, make_settings):
    with StubLLM(echo=True) as stub:
        settings = make_settings(
            [
                {**agent("redacting", ["local:echo"]), "pii": "redact", "max_tokens": 4096},
                {**agent("restoring", ["local:echo"]), "pii": "placeholder", "max_tokens": 4096},
            ],
            local_base_url=stub.base_url,
            local_context_tokens=32_000,
        )
        clients = ProviderClients.from_settings(settings)
        try:
            async with running_worker(
                client, settings, lambda pool: LLMActivities(clients, settings, pool).call_llm
            ) as chorus:
                redacted = await (
                    await chorus.start_sequential("Repeat it", ["redacting"], document=DOCUMENT)
                ).result()
                restored = await (
                    await chorus.start_sequential("Repeat it", ["restoring"], document=DOCUMENT)
                ).result()
        finally:
            await clients.close()

    assert len(stub.requests) == 2 and len(VALUES) > 60
    for request in stub.requests:
        sent = json.dumps(request.body, ensure_ascii=False)
        leaked = [v for v in VALUES if v in sent]
        assert leaked == [], f"PII reached the provider: {leaked[:5]}"
    assert "<<EMAIL_1>>" in json.dumps(stub.requests[1].body)
    # redact: the answer holds the redaction marks; placeholder: the originals are restored
    assert "[EMAIL]" in redacted.output and not any(v in redacted.output for v in VALUES)
    assert all(v in restored.output for v in VALUES)
    assert "<<" not in restored.output
