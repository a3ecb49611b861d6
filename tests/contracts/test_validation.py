"""Input validation at the SDK boundary and again inside the workflows (real dev server)."""

from __future__ import annotations

import pytest
from temporalio.client import WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from chorus.contracts.drafting import EditRequest, TextEdit
from starter.sdk import ChorusInputError
from tests.conftest import agent, running_worker


async def test_sdk_cleans_and_workflows_refuse_what_a_plain_client_sends(
    client, make_settings, fake_llm, monkeypatch
):
    monkeypatch.setenv("CHORUS_BLOCKED_TERMS", r"project nightingale")
    settings = make_settings([agent("analyst", ["local:fake"])])
    async with running_worker(client, settings, lambda _pool: fake_llm.call_llm) as chorus:
        # the SDK strips control characters and runs the prohibited-content check
        result = await (
            await chorus.start_sequential("Sum\x1b[31mmarize", ["analyst"], document="a\x00b")
        ).result()
        with pytest.raises(ChorusInputError, match="document: contains blocked content"):
            await chorus.start_sequential("x", ["analyst"], document="About Project Nightingale")
        with pytest.raises(ChorusInputError, match="workflow_id: 'has space'"):
            await chorus.start_sequential("x", ["analyst"], workflow_id="has space")
        # a plain Temporal client skips the SDK: the workflow itself refuses the input
        handle = await client.start_workflow(
            "ChorusSequential",
            {"task": "bad\x07task", "steps": [{"kind": "agent", "agent": "analyst"}]},
            id="seq-plain-client-control-chars",
            task_queue=settings.task_queue,
        )
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
        draft_id = await chorus.start_draft("Notes", "alice", content="hello")
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await client.get_workflow_handle(draft_id).execute_update(
                "edit",
                EditRequest(
                    user="alice", base_version=1, edit=TextEdit(start=0, end=0, text="\x00")
                ),
            )
    assert "edit text: contains control character U+0000" in str(refused.value.cause)
    call = fake_llm.calls[0]
    assert call.task == "Sum[31mmarize" and call.document == "ab"  # ESC and NUL are gone
    assert result.output
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "InvalidInput"
    assert "task: contains control character U+0007 at position 3" in cause.message
