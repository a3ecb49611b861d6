"""The draft workflow on a real dev server and PostgreSQL."""

from __future__ import annotations

import asyncio
import random

import asyncpg
import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from chorus.contracts.drafting import (
    CollaboratorRequest,
    CommentRequest,
    EditRequest,
    ResolveCommentRequest,
    RevisionRequest,
    TextEdit,
    UserRequest,
    apply_edit,
)
from starter.sdk import ChorusInputError, DraftRefusedError
from tests.conftest import agent, running_worker
from tests.workflows.test_workflows import replay


def no_llm(_pool):
    from tests.conftest import FakeLLM

    return FakeLLM().call_llm


async def wait_saved(pool: asyncpg.Pool, draft_id: str, version: int) -> None:
    for _ in range(200):
        if (
            await pool.fetchval("SELECT version FROM drafts WHERE draft_id = $1", draft_id)
            == version
        ):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{draft_id} never saved version {version}")


async def stored_revisions(pool: asyncpg.Pool, draft_id: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT version, author, base_version, edit, content_after, diff FROM draft_revisions"
        " WHERE draft_id = $1 ORDER BY version",
        draft_id,
    )


async def test_lifecycle_permissions_and_refusals(client, make_settings):
    settings = make_settings([agent("writer", ["local:fake"])])
    async with running_worker(client, settings, no_llm) as chorus:
        draft_id = await chorus.start_draft(
            "Release notes", "alice", content="Hello world.", collaborators={"bob": "editor"}
        )
        edit = EditRequest(user="bob", base_version=1, edit=TextEdit(start=6, end=11, text="team"))
        assert (await chorus.draft_update(draft_id, "edit", edit)).version == 2
        refusals = {
            "not a collaborator": EditRequest(user="mallory", base_version=2, content="x"),
            "outside the text": EditRequest(
                user="bob", base_version=2, edit=TextEdit(start=50, end=60, text="x")
            ),
            "does not exist": EditRequest(user="bob", base_version=9, content="x"),
        }
        for message, request in refusals.items():
            with pytest.raises(DraftRefusedError, match=message):
                await chorus.draft_update(draft_id, "edit", request)
        await chorus.draft_signal(
            draft_id,
            "add_collaborator",
            CollaboratorRequest(user="alice", collaborator="carol", role="reviewer"),
        )
        await chorus.draft_signal(
            draft_id, "comment", CommentRequest(user="carol", text="Which team?", start=6, end=10)
        )
        with pytest.raises(DraftRefusedError, match="cannot approve a draft that is drafting"):
            await chorus.draft_update(draft_id, "approve", UserRequest(user="carol"))
        await chorus.draft_update(draft_id, "submit", UserRequest(user="bob"))
        with pytest.raises(
            DraftRefusedError, match="'bob' has role editor; approve needs one of: owner, reviewer"
        ):
            await chorus.draft_update(draft_id, "approve", UserRequest(user="bob"))
        await chorus.draft_signal(
            draft_id, "resolve_comment", ResolveCommentRequest(user="bob", comment_id=1)
        )
        await chorus.draft_update(draft_id, "approve", UserRequest(user="carol"))
        await chorus.draft_update(draft_id, "publish", UserRequest(user="alice"))
        with pytest.raises(DraftRefusedError, match="published and read-only") as ro:
            await chorus.draft_update(
                draft_id, "edit", EditRequest(user="bob", base_version=2, content="changed")
            )
        assert ro.value.error_type == "ReadOnly"
        view = await chorus.draft(draft_id)
        history = await client.get_workflow_handle(draft_id).fetch_history()
        await replay(client, draft_id, record_as="draft_lifecycle")
        pool = await chorus.pool()
        await wait_saved(pool, draft_id, 2)
        row = await pool.fetchrow(
            "SELECT status, content, comments FROM drafts WHERE draft_id = $1", draft_id
        )

    assert (view.content, view.version, view.status) == ("Hello team.", 2, "published")
    assert view.collaborators == {"alice": "owner", "bob": "editor", "carol": "reviewer"}
    assert view.open_comments == 0
    accepted = [
        e
        for e in history.events
        if e.HasField("workflow_execution_update_accepted_event_attributes")
    ]
    assert len(accepted) == 4  # edit, submit, approve, publish: refusals never entered history
    assert row is not None and row["status"] == "published" and row["content"] == "Hello team."
    assert row["comments"][0]["resolved"] is True


async def test_stale_edits_merge_or_conflict(client, make_settings):
    settings = make_settings([agent("writer", ["local:fake"])])
    async with running_worker(client, settings, no_llm) as chorus:
        draft_id = await chorus.start_draft("d", "alice", content="one two three four")
        await chorus.draft_update(
            draft_id,
            "edit",
            EditRequest(user="alice", base_version=1, edit=TextEdit(start=0, end=3, text="ONE")),
        )
        merged = await chorus.draft_update(
            draft_id,
            "edit",
            EditRequest(user="alice", base_version=1, edit=TextEdit(start=14, end=18, text="4")),
        )
        assert (merged.version, merged.rebased_from) == (3, 1)
        with pytest.raises(DraftRefusedError, match="overlaps the change made in version 2") as c:
            await chorus.draft_update(
                draft_id,
                "edit",
                EditRequest(user="alice", base_version=1, edit=TextEdit(start=2, end=5, text="x")),
            )
        assert c.value.error_type == "EditConflict"
        with pytest.raises(DraftRefusedError, match="whole-text edit made on version 2"):
            await chorus.draft_update(
                draft_id, "edit", EditRequest(user="alice", base_version=2, content="replaced")
            )
        assert (await chorus.draft(draft_id)).content == "ONE two three 4"


async def test_twenty_editors_twenty_five_edits_each(client, make_settings):
    settings = make_settings([agent("writer", ["local:fake"])])
    editors = [f"editor{i:02d}" for i in range(20)]
    # each editor owns one line; some edits also hit a shared first line, so some conflict
    initial = "SHARED HEADER\n" + "".join(f"{e}: start\n" for e in editors)
    async with running_worker(client, settings, no_llm) as chorus:
        draft_id = await chorus.start_draft(
            "Team doc", "owner", content=initial, collaborators=dict.fromkeys(editors, "editor")
        )
        accepted: list[tuple[str, int]] = []
        refused: list[str] = []

        async def editor(name: str, seed: int) -> None:
            rng = random.Random(seed)
            for n in range(25):
                view = await chorus.draft(draft_id)
                if rng.random() < 0.15:  # the shared header: overlapping edits conflict
                    start, end = 0, len("SHARED HEADER")
                    request = EditRequest(
                        user=name,
                        base_version=view.version,
                        edit=TextEdit(start=start, end=end, text="SHARED HEADER"),
                    )
                else:
                    content = view.content or ""
                    line = content.index(f"{name}: ")
                    end = content.index("\n", line)
                    request = EditRequest(
                        user=name,
                        base_version=view.version,
                        edit=TextEdit(start=line, end=end, text=f"{name}: edit {n}"),
                    )
                await asyncio.sleep(rng.random() * 0.02)  # others edit meanwhile: stale bases
                try:
                    result = await chorus.draft_update(draft_id, "edit", request)
                    accepted.append((name, result.version))
                except DraftRefusedError as exc:
                    assert exc.error_type == "EditConflict", exc
                    refused.append(name)

        await asyncio.gather(*(editor(name, i) for i, name in enumerate(editors)))
        final = await chorus.draft(draft_id)
        pool = await chorus.pool()
        await wait_saved(pool, draft_id, final.version)
        rows = await stored_revisions(pool, draft_id)

    assert len(accepted) + len(refused) == 500
    assert len({v for _, v in accepted}) == len(accepted)  # each accepted edit: one version
    assert final.version == 1 + len(accepted)
    assert [r["version"] for r in rows] == list(range(1, final.version + 1))
    assert sorted((r["author"], r["version"]) for r in rows[1:]) == sorted(accepted)
    # replaying the accepted edits in order from the initial text gives the final text
    text = initial
    for row in rows[1:]:
        text = apply_edit(text, TextEdit.model_validate(row["edit"]))
        assert text == row["content_after"]
    assert text == final.content
    for name in editors:
        assert f"{name}: edit " in final.content
    print(f"\n20x25 edits: {len(accepted)} accepted, {len(refused)} refused as conflicts")


async def test_state_survives_continue_as_new_and_worker_restart(client, make_settings):
    settings = make_settings([agent("writer", ["local:fake"])])
    async with running_worker(client, settings, no_llm) as chorus:
        handle = await client.start_workflow(
            "ChorusDraft",
            {"title": "Long", "owner": "alice", "content": "", "max_updates_per_run": 10},
            id="draft-long-test",
            task_queue=settings.task_queue,
        )
        first_run = handle.result_run_id
        for n in range(25):
            await chorus.draft_update(
                handle.id,
                "edit",
                EditRequest(
                    user="alice", base_version=n + 1, edit=TextEdit(start=0, end=0, text=f"{n};")
                ),
            )
        await chorus.draft_signal(handle.id, "comment", CommentRequest(user="alice", text="keep"))
        before = await chorus.draft(handle.id)
    # a new worker (same task queue): the draft replays from history and keeps its state
    async with running_worker(client, settings, no_llm) as chorus:
        after = await chorus.draft(handle.id)
        desc = await client.get_workflow_handle(handle.id).describe()
        comments = await client.get_workflow_handle(handle.id).query("comments")
        more = await chorus.draft_update(
            handle.id,
            "edit",
            EditRequest(
                user="alice", base_version=after.version, edit=TextEdit(start=0, end=0, text="x;")
            ),
        )
        pool = await chorus.pool()
        await wait_saved(pool, handle.id, more.version)
        rows = await stored_revisions(pool, handle.id)

    assert desc.run_id != first_run  # continued as new (at least twice for 25 updates)
    await replay(client, handle.id, record_as="draft_after_continue_as_new")
    assert after == before and after.version == 26
    assert after.content == "".join(f"{n};" for n in reversed(range(25)))
    assert [c["text"] for c in comments] == ["keep"]
    assert [r["version"] for r in rows] == list(range(1, 28))


async def test_first_draft_from_brief_and_agent_revision(client, make_settings, fake_llm):
    settings = make_settings([agent("writer", ["local:fake"])])
    async with running_worker(client, settings, lambda _pool: fake_llm.call_llm) as chorus:
        draft_id = await chorus.start_draft(
            "Launch post", "alice", brief="Announce Chorus 1.0 to developers"
        )
        for _ in range(100):  # the first draft is written by the agent, then edits open
            view = await chorus.draft(draft_id)
            if view.content:
                break
            await asyncio.sleep(0.05)
        assert view.content == "writer output [saw: ]" and view.version == 1
        result = await chorus.draft_update(
            draft_id,
            "request_revision",
            RevisionRequest(user="alice", base_version=1, instruction="friendlier tone"),
        )
        with pytest.raises(DraftRefusedError, match="whole-text edit made on version 1"):
            await chorus.draft_update(
                draft_id,
                "request_revision",
                RevisionRequest(user="alice", base_version=1, instruction="shorter"),
            )
        ghost_request = RevisionRequest(
            user="alice", base_version=2, instruction="x", agent="ghost"
        )
        # The SDK checks the catalog first (issue 20: the update entered the history, then
        # failed); a plain client still gets the workflow's own UnknownAgent.
        with pytest.raises(ChorusInputError, match=r"unknown agent 'ghost'"):
            await chorus.draft_update(draft_id, "request_revision", ghost_request)
        with pytest.raises(WorkflowUpdateFailedError) as ghost:
            await client.get_workflow_handle(draft_id).execute_update(
                "request_revision", ghost_request
            )
        assert isinstance(ghost.value.cause, ApplicationError)
        assert ghost.value.cause.type == "UnknownAgent"
        assert "unknown agent(s): ghost" in ghost.value.cause.message
        history = await client.get_workflow_handle(draft_id).query("history")
        pool = await chorus.pool()
        await wait_saved(pool, draft_id, 2)
        rows = await stored_revisions(pool, draft_id)
    assert result.version == 2
    assert history[-1]["author"] == "agent:writer" and history[-1]["author_kind"] == "agent"
    assert "friendlier tone (asked by alice)" == history[-1]["summary"]
    assert [c.task for c in fake_llm.calls] == [
        "Write the first draft of: Announce Chorus 1.0 to developers",
        "Revise the document: friendlier tone. Answer with the complete revised document only.",
    ]
    assert fake_llm.calls[1].document == "writer output [saw: ]"
    assert [r["author"] for r in rows] == ["alice", "agent:writer"]


async def test_edit_result_brings_a_stale_copy_up_to_date(client, make_settings):
    settings = make_settings([agent("writer", ["local:fake"])])
    async with running_worker(client, settings, no_llm) as chorus:
        draft_id = await chorus.start_draft("d", "alice", content="alpha beta gamma")
        mine = "alpha beta gamma"  # my copy, at version 1
        await chorus.draft_update(
            draft_id,
            "edit",
            EditRequest(user="alice", base_version=1, edit=TextEdit(start=0, end=5, text="ALPHA")),
        )
        result = await chorus.draft_update(
            draft_id,
            "edit",
            EditRequest(
                user="alice", base_version=1, edit=TextEdit(start=11, end=16, text="GAMMA")
            ),
        )
        for revision in result.changes:  # no query needed
            mine = apply_edit(mine, revision.edit)
        current = await chorus.draft(draft_id)
    assert [r.version for r in result.changes] == [2, 3]
    assert mine == current.content == "ALPHA beta GAMMA"


async def test_large_draft_is_held_by_reference(client, make_settings):
    """A draft over INLINE_CONTENT_CHARS: text only in PostgreSQL, edits/rebase/CAN still work."""
    from chorus.contracts.drafting import INLINE_CONTENT_CHARS, MAX_EDIT_CHARS, DraftInput
    from chorus.storage import db

    marker = "MIDDLE-OF-THE-LARGE-DRAFT"
    lines = [f"line {i:06d} {'x' * 40}\n" for i in range(4000)]
    lines[2000] = f"line 002000 {marker}\n"
    text = "".join(lines)
    assert len(text) > 3 * INLINE_CONTENT_CHARS
    settings = make_settings([agent("writer", ["local:fake"])])
    async with running_worker(client, settings, no_llm) as chorus:
        pool = await chorus.pool()
        handle = await client.start_workflow(
            "ChorusDraft",
            DraftInput(
                title="Big",
                owner="alice",
                content_ref=await db.put_text(pool, text),
                collaborators={"bob": "editor"},
                max_updates_per_run=10,
            ),
            id="draft-big-test",
            task_queue=settings.task_queue,
        )
        first_run = handle.result_run_id
        # 25 same-length edits, all made against version 1: each is rebased over the others
        expected = text
        offsets = [text.index(f"line {i:06d}") for i in range(0, 4000, 160)]
        for n, offset in enumerate(offsets):
            edit = TextEdit(start=offset, end=offset + 4, text="LINE")
            result = await chorus.draft_update(
                handle.id, "edit", EditRequest(user="bob", base_version=1, edit=edit)
            )
            assert result.version == n + 2 and (n == 0 or result.rebased_from == 1)
            expected = apply_edit(expected, edit)
        refusals: dict[str, tuple[str, EditRequest | RevisionRequest]] = {
            f"the limit is {MAX_EDIT_CHARS} per edit": (
                "edit",
                EditRequest(user="bob", base_version=26, content="y" * (MAX_EDIT_CHARS + 1)),
            ),
            "agents revise drafts up to": (
                "request_revision",
                RevisionRequest(user="bob", base_version=26, instruction="shorter"),
            ),
        }
        for message, (update, request) in refusals.items():
            with pytest.raises(DraftRefusedError, match=message) as refused:
                await chorus.draft_update(handle.id, update, request)
            assert refused.value.error_type == "InvalidEdit"
        end = len(expected)
        await chorus.draft_signal(
            handle.id, "comment", CommentRequest(user="bob", text="end", start=end - 5, end=end)
        )
        queried = await handle.query("draft")
        await wait_saved(pool, handle.id, 26)
        view = await chorus.draft(handle.id)
        stored = await pool.fetchval("SELECT content FROM drafts WHERE draft_id = $1", handle.id)
        rows = await stored_revisions(pool, handle.id)
        comments = await handle.query("comments")
        desc = await handle.describe()
        history = await handle.fetch_history()

    assert queried["content"] is None and queried["content_chars"] == len(expected)
    assert view.content == stored == expected and view.version == 26
    assert [r["version"] for r in rows] == list(range(1, 27))
    assert all(r["content_after"] is None for r in rows)
    assert "-line 000160" in rows[2]["diff"] and "@@ -158,7 +158,7 @@" in rows[2]["diff"]
    assert [c["text"] for c in comments] == ["end"]
    assert desc.run_id != first_run  # continued as new, twice, without carrying the text
    assert marker not in history.to_json()
    await replay(client, handle.id, record_as="draft_by_reference")


async def test_draft_moves_to_reference_when_it_grows(client, make_settings):
    from chorus.contracts.drafting import INLINE_CONTENT_CHARS

    text = "a" * INLINE_CONTENT_CHARS
    settings = make_settings([agent("writer", ["local:fake"])])
    async with running_worker(client, settings, no_llm) as chorus:
        draft_id = await chorus.start_draft("Grows", "alice", content=text)
        assert (await chorus.draft(draft_id)).content == text  # inline
        edit = TextEdit(start=10, end=10, text="b" * 100)
        await chorus.draft_update(
            draft_id, "edit", EditRequest(user="alice", base_version=1, edit=edit)
        )
        queried = await client.get_workflow_handle(draft_id).query("draft")
        view = await chorus.draft(draft_id)
    assert queried["content"] is None and queried["content_chars"] == INLINE_CONTENT_CHARS + 100
    assert view.content == apply_edit(text, edit) and view.version == 2
