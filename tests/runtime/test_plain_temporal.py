"""Bad input through the plain ``temporal`` CLI, which skips Chorus's SDK and its checks.

Before issue 12 a workflow started with an input that did not decode stayed RUNNING for good
while its first workflow task failed and retried ("Failed decoding arguments"). Each case here
starts a workflow, sends an update or a signal with the real ``temporal`` binary and checks
that the input is refused for good within seconds, naming the field, and that nothing is stuck:
no workflow task ever failed.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus

from chorus.contracts.drafting import CollaboratorRequest, DraftInput, EditRequest, TextEdit
from chorus.contracts.names import DRAFT_WORKFLOW, PARALLEL_WORKFLOW, SEQUENTIAL_WORKFLOW
from starter.dev import temporal_binary
from starter.sdk import ChorusInputError
from tests.conftest import agent, running_worker


def no_llm(_pool):
    from tests.conftest import FakeLLM

    return FakeLLM().call_llm


async def temporal_cli(client: Client, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the real ``temporal`` CLI without blocking the event loop (the worker runs on it)."""
    argv = [temporal_binary(), *args, "--address", client.service_client.config.target_host]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return subprocess.CompletedProcess(argv, proc.returncode, out.decode(), err.decode())


async def failed_workflow_tasks(client: Client, workflow_id: str) -> int:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return sum(
        1 for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
    )


async def wait_closed(client: Client, workflow_id: str, within_s: float = 15) -> str:
    handle = client.get_workflow_handle(workflow_id)
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        desc = await handle.describe()
        if desc.status != WorkflowExecutionStatus.RUNNING:
            return desc.status.name if desc.status else "UNKNOWN"
        await asyncio.sleep(0.2)
    raise AssertionError(f"{workflow_id} still RUNNING after {within_s} s")


BAD_STARTS = [
    pytest.param(SEQUENTIAL_WORKFLOW, '{"nonsense": 1}', ["task", "steps"], id="unknown-field"),
    pytest.param(SEQUENTIAL_WORKFLOW, '"just a string"', ["SequentialInput"], id="a-string"),
    pytest.param(SEQUENTIAL_WORKFLOW, '{"task": "x", "steps": []}', ["steps"], id="no-steps"),
    pytest.param(SEQUENTIAL_WORKFLOW, None, ["without an input", "task"], id="no-input"),
    pytest.param(SEQUENTIAL_WORKFLOW, "null", ["without an input"], id="null"),
    pytest.param(
        PARALLEL_WORKFLOW,
        '{"task": "x", "branches": [{"kind": "agent", "agent": "Bad Name"}]}',
        ["branches.0", "agent"],
        id="parallel-bad-agent-name",
    ),
    pytest.param(DRAFT_WORKFLOW, '{"title": "", "owner": "alice"}', ["title"], id="draft"),
    pytest.param(DRAFT_WORKFLOW, "[1, 2]", ["DraftInput"], id="draft-a-list"),
]


@pytest.mark.parametrize(("workflow_type", "payload", "named"), BAD_STARTS)
async def test_undecodable_start_fails_at_once_with_invalid_input(
    client, make_settings, workflow_type, payload, named
):
    settings = make_settings([agent("a1", ["local:fake"])])
    workflow_id = f"plain-{uuid.uuid4().hex[:8]}"
    async with running_worker(client, settings, no_llm) as chorus:
        started = time.monotonic()
        args = ["workflow", "start", "--type", workflow_type]
        args += ["--task-queue", settings.task_queue, "--workflow-id", workflow_id]
        if payload is not None:
            args += ["--input", payload]
        proc = await temporal_cli(client, *args)
        assert proc.returncode == 0, proc.stderr
        assert await wait_closed(client, workflow_id) == "FAILED"
        elapsed = time.monotonic() - started
        status = await chorus.status(workflow_id)
    assert elapsed < 15
    assert status.status == "FAILED"
    assert status.error_type == "InvalidInput"
    assert status.error is not None
    for word in named:
        assert word in status.error, status.error
    assert await failed_workflow_tasks(client, workflow_id) == 0


async def test_draft_refuses_undecodable_updates_and_drops_bad_signals(client, make_settings):
    settings = make_settings([agent("writer", ["local:fake"])])
    async with running_worker(client, settings, no_llm) as chorus:
        draft_id = await chorus.start_draft("Notes", "alice", content="Hello world.")
        for bad in ['"garbage"', '{"user": "alice", "base_version": "one"}', "[]"]:
            proc = await temporal_cli(
                client,
                *("workflow", "update", "execute", "--workflow-id", draft_id),
                *("--name", "edit", "--input", bad),
            )
            assert proc.returncode != 0
            assert "InvalidInput" in proc.stderr or "invalid EditRequest" in proc.stderr, (
                proc.stderr
            )
        for bad in ['"garbage"', '{"user": 5}']:
            proc = await temporal_cli(
                client,
                *("workflow", "signal", "--workflow-id", draft_id),
                *("--name", "comment", "--input", bad),
            )
            assert proc.returncode == 0, proc.stderr  # a signal cannot be refused: dropped
        # The draft still works: an edit through the SDK lands, the queries answer.
        edit = EditRequest(user="alice", base_version=1, edit=TextEdit(start=0, end=5, text="Hi"))
        assert (await chorus.draft_update(draft_id, "edit", edit)).version == 2
        view = await chorus.draft(draft_id)
        assert view.content == "Hi world."
        query = await temporal_cli(
            client, "workflow", "query", "--workflow-id", draft_id, "--name", "comments"
        )
        assert query.returncode == 0, query.stderr
    assert await failed_workflow_tasks(client, draft_id) == 0


async def test_last_owner_cannot_demote_themselves(client, make_settings):
    """Issue 20: an owner who demoted themselves left no owner, and the continue-as-new after
    max_updates_per_run failed its workflow task forever, stranding the accepted edits."""
    settings = make_settings([agent("writer", ["local:fake"])])
    async with running_worker(client, settings, no_llm) as chorus:
        draft_id = f"draft-owner-{uuid.uuid4().hex[:6]}"
        await client.start_workflow(
            DRAFT_WORKFLOW,
            DraftInput(title="T", owner="alice", content="x", max_updates_per_run=10),
            id=draft_id,
            task_queue=settings.task_queue,
        )
        with pytest.raises(ChorusInputError, match="last owner"):
            await chorus.draft_signal(
                draft_id,
                "add_collaborator",
                CollaboratorRequest(user="alice", collaborator="alice", role="editor"),
            )
        # The plain CLI skips that check: the workflow ignores the demotion.
        proc = await temporal_cli(
            client,
            *("workflow", "signal", "--workflow-id", draft_id, "--name", "add_collaborator"),
            *("--input", '{"user": "alice", "collaborator": "alice", "role": "editor"}'),
        )
        assert proc.returncode == 0, proc.stderr
        for version in range(1, 13):  # past max_updates_per_run: a continue-as-new
            edit = EditRequest(
                user="alice", base_version=version, edit=TextEdit(start=0, end=0, text="a")
            )
            assert (await chorus.draft_update(draft_id, "edit", edit)).version == version + 1
        view = await chorus.draft(draft_id)
        runs = [e async for e in client.list_workflows(f"WorkflowId = '{draft_id}'")]
    assert view.version == 13 and view.content == "a" * 12 + "x"
    assert view.collaborators["alice"] == "owner"
    assert len(runs) >= 2  # it continued as new
    assert await failed_workflow_tasks(client, draft_id) == 0


async def test_comment_flood_cannot_jam_a_draft(client, make_settings):
    """Issue 20: 140 comments of 5,000 emoji from a viewer made every save too large
    (PAYLOADS_TOO_LARGE); the draft's workflow task failed for good and edits were refused."""
    from chorus.contracts.drafting import (
        COMMENTS_PER_MINUTE,
        MAX_COMMENT_BYTES,
        CommentRequest,
        Role,
    )

    settings = make_settings([agent("writer", ["local:fake"])])
    viewers: dict[str, Role] = {f"viewer{i}": "viewer" for i in range(8)}
    async with running_worker(client, settings, no_llm) as chorus:
        draft_id = await chorus.start_draft(
            "Flood", "alice", content="Hello world.", collaborators=viewers
        )
        handle = client.get_workflow_handle(draft_id)
        for user in viewers:
            for _ in range(25):
                await handle.signal("comment", CommentRequest(user=user, text="😀" * 2_000))
        oversized = {"user": "viewer0", "text": "😀" * 5_000, "start": 0, "end": 0}
        proc = await temporal_cli(
            client,
            *("workflow", "signal", "--workflow-id", draft_id, "--name", "comment"),
            *("--input", json.dumps(oversized)),
        )
        assert proc.returncode == 0, proc.stderr
        edit = EditRequest(user="alice", base_version=1, edit=TextEdit(start=0, end=5, text="Hi"))
        assert (await chorus.draft_update(draft_id, "edit", edit)).version == 2
        comments = await handle.query("comments", result_type=list[dict[str, Any]])
    held = sum(len(c["text"].encode()) for c in comments)
    assert held <= MAX_COMMENT_BYTES
    per_user = {u: sum(c["author"] == u for c in comments) for u in viewers}
    assert max(per_user.values()) <= COMMENTS_PER_MINUTE
    assert 0 < len(comments) < 8 * 25
    assert await failed_workflow_tasks(client, draft_id) == 0


async def test_oversized_update_is_refused_by_the_server_not_the_draft(
    client, make_settings, tmp_path
):
    """Issue 20 item 6: a 2.1 MB update sent with the plain CLI reached the draft, whose
    refusal echoed it past the 2 MB blob limit: 3 workflow tasks failed (PAYLOADS_TOO_LARGE)
    and the draft was blocked ~20 s. The server now refuses it (maxInFlightUpdatePayloads):
    it never reaches the draft, which keeps taking edits at once."""
    from chorus.contracts.drafting import MAX_UPDATE_BYTES

    settings = make_settings([agent("writer", ["local:fake"])])
    async with running_worker(client, settings, no_llm) as chorus:
        draft_id = await chorus.start_draft("Big", "alice", content="Hello world.")
        big = tmp_path / "update.json"
        big.write_text(json.dumps({"user": "alice", "base_version": 1, "content": "x" * 2_100_000}))
        started = time.monotonic()
        proc = await temporal_cli(
            client,
            *("workflow", "update", "execute", "--workflow-id", draft_id),
            *("--name", "edit", "--input-file", str(big), "--command-timeout", "8s"),
        )
        refused_s = time.monotonic() - started
        # RESOURCE_EXHAUSTED: the Go SDK under the CLI retries it until --command-timeout, so
        # the CLI user sees a timeout (the server logs "update registry size limit reached").
        assert proc.returncode != 0
        # The draft is not blocked: an edit lands at once.
        started = time.monotonic()
        edit = EditRequest(user="alice", base_version=1, edit=TextEdit(start=0, end=5, text="Hi"))
        assert (await chorus.draft_update(draft_id, "edit", edit)).version == 2
        edit_s = time.monotonic() - started
        # The SDK refuses such a request before sending it, naming the limit.
        whole = EditRequest(user="alice", base_version=2, content="y" * 1_700_000)
        with pytest.raises(ChorusInputError, match=f"{MAX_UPDATE_BYTES:,} bytes"):
            await chorus.draft_update(draft_id, "edit", whole)
    assert await failed_workflow_tasks(client, draft_id) == 0
    assert refused_s < 10 and edit_s < 5, (refused_s, edit_s)
