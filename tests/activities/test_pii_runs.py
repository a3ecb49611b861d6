"""PII never reaches the provider (real workflows + LLM activity, loopback echo stub)."""

from __future__ import annotations

import json

from activities import LLMActivities, ProviderClients
from tests.conftest import agent, running_worker
from tests.pii_corpus import NEAR_MISSES, POSITIVES
from tests.stub_llm import StubLLM

VALUES = sorted({value for sample in POSITIVES for _kind, value in sample.expected})
# Near misses that contain a value as a substring (a card inside a longer digit run, which must
# stay unredacted) would trip the substring check below; tests/governance/test_pii.py covers them.
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


async def test_record_pii_keeps_pii_out_of_the_stored_record(client, make_settings, database_url):
    """Issue 20 item 9: an agent's ``record_pii`` and ``CHORUS_RECORD_PII`` redact what
    PostgreSQL keeps (prompts, completion, transcript, the run's task and output), while the
    run's result still holds the originals the ``placeholder`` policy restored."""
    import asyncpg

    task = "Repeat it for jane.doe@example.com"
    with StubLLM(echo=True) as stub:
        settings = make_settings(
            [
                {
                    **agent("keeper", ["local:echo"]),
                    "pii": "placeholder",
                    "record_pii": "redact",
                    "max_tokens": 4096,
                }
            ],
            local_base_url=stub.base_url,
            local_context_tokens=32_000,
            record_pii="redact",
        )
        clients = ProviderClients.from_settings(settings)
        try:
            async with running_worker(
                client, settings, lambda pool: LLMActivities(clients, settings, pool).call_llm
            ) as chorus:
                handle = await chorus.start_sequential(task, ["keeper"], document=DOCUMENT)
                result = await handle.result()
        finally:
            await clients.close()

    assert all(v in result.output for v in VALUES)  # the result: originals restored
    conn = await asyncpg.connect(database_url)
    try:
        stored = await conn.fetchrow(
            "SELECT r.task, r.output, m.system_prompt, m.user_prompt, m.completion,"
            " t.transcript::text AS transcript FROM runs r"
            " JOIN messages m ON m.workflow_id = r.workflow_id"
            " JOIN transcripts t ON t.workflow_id = r.workflow_id WHERE r.workflow_id = $1",
            handle.workflow_id,
        )
    finally:
        await conn.close()
    assert stored is not None
    for column, text in dict(stored).items():
        leaked = [v for v in [*VALUES, "jane.doe@example.com"] if v in (text or "")]
        assert leaked == [], f"{column} stores PII: {leaked[:5]}"
    assert "[EMAIL]" in stored["completion"] and "[EMAIL]" in stored["task"]
    assert "<<EMAIL_" not in stored["completion"]
