"""The draft editing rules: range edits, rebasing stale edits, conflicts."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from chorus.contracts.drafting import EditConflictError, TextEdit, apply_edit, rebase, rebase_over


def test_apply_replace_insert_delete():
    text = "The quick brown fox"
    assert apply_edit(text, TextEdit(start=4, end=9, text="slow")) == "The slow brown fox"
    assert apply_edit(text, TextEdit(start=0, end=0, text="See: ")) == "See: The quick brown fox"
    assert apply_edit(text, TextEdit(start=9, end=15)) == "The quick fox"
    with pytest.raises(ValueError, match="range 10-40 is outside the text \\(19 characters\\)"):
        apply_edit(text, TextEdit(start=10, end=40, text="x"))
    with pytest.raises(ValidationError, match="range end \\(2\\) is before its start \\(5\\)"):
        TextEdit(start=5, end=2)


def test_rebase_shifts_after_keeps_before_refuses_overlap():
    applied = TextEdit(start=4, end=9, text="slow and steady")  # +10 characters
    assert rebase(TextEdit(start=0, end=3, text="A"), applied) == TextEdit(start=0, end=3, text="A")
    assert rebase(TextEdit(start=10, end=15, text="red"), applied) == TextEdit(
        start=20, end=25, text="red"
    )
    assert rebase(TextEdit(start=8, end=12, text="x"), applied) is None
    # touching ranges do not overlap
    assert rebase(TextEdit(start=9, end=10, text="!"), applied) == TextEdit(
        start=19, end=20, text="!"
    )


def test_stale_edit_merges_or_conflicts_naming_the_version():
    base = "one two three four"
    v2 = TextEdit(start=0, end=3, text="ONE")  # made on v1
    v3 = TextEdit(start=14, end=18, text="FOUR!")  # made on v2
    stale = TextEdit(start=4, end=7, text="2")  # made on v1: "two" -> "2"
    moved = rebase_over(stale, 1, [(2, v2), (3, v3)])
    text = apply_edit(apply_edit(apply_edit(base, v2), v3), moved)
    assert text == "ONE 2 three FOUR!"
    with pytest.raises(EditConflictError, match="overlaps the change made in version 3"):
        rebase_over(TextEdit(start=12, end=16, text="x"), 1, [(2, v2), (3, v3)])


def test_random_non_overlapping_edits_commute_after_rebase():
    rng = random.Random(20261121)
    for _ in range(300):
        base = "".join(rng.choice("abcdef \n") for _ in range(rng.randint(20, 200)))
        # cut the text into disjoint ranges and edit some of them, all against the base
        cuts = sorted(rng.sample(range(len(base) + 1), 6))
        ranges = [(cuts[i], cuts[i + 1]) for i in range(0, 6, 2)]
        edits = [TextEdit(start=s, end=e, text=rng.choice(["", "X", "YYYY"])) for s, e in ranges]
        rng.shuffle(edits)
        # expected: apply directly from the highest offset down (no shifting needed)
        expected = base
        for edit in sorted(edits, key=lambda e: e.start, reverse=True):
            expected = apply_edit(expected, edit)
        # actual: each edit arrives stale and is rebased over those applied before it
        text, applied = base, list[tuple[int, TextEdit]]()
        for version, edit in enumerate(edits, start=2):
            moved = rebase_over(edit, 1, applied)
            text = apply_edit(text, moved)
            # history stores each edit in the coordinates of the text it was applied to
            applied.append((version, moved))
        assert text == expected


async def test_edit_result_never_silently_misses_a_revision(client, make_settings):
    """Issue 20: a second edit on base 1 after a 100,001-character insertion (v2) returned
    changes=[v3]: v2 had left the kept window, and a client applying `changes` ended with the
    wrong text and no error."""
    from chorus.contracts.drafting import EditRequest, TextEdit, apply_edit
    from tests.conftest import running_worker
    from tests.workflows.test_drafts import no_llm

    def insert(base: int, at: int, text: str) -> EditRequest:
        return EditRequest(
            user="alice", base_version=base, edit=TextEdit(start=at, end=at, text=text)
        )

    settings = make_settings([{"name": "writer", "instructions": "w", "providers": ["local:x"]}])
    async with running_worker(client, settings, no_llm) as chorus:
        draft_id = await chorus.start_draft("Big", "alice", content="ABCDEFGHIJ\n")
        assert (
            await chorus.draft_update(draft_id, "edit", insert(1, 5, "x" * 100_001))
        ).version == 2
        result = await chorus.draft_update(draft_id, "edit", insert(1, 0, "Z"))
        assert (result.version, result.rebased_from, result.changes_complete) == (3, 1, True)
        assert [r.version for r in result.changes] == [2, 3]
        text = "ABCDEFGHIJ\n"
        for revision in result.changes:
            text = apply_edit(text, revision.edit)
        assert text == (await chorus.draft(draft_id)).content
        # Too much text since the base to carry: no partial list, a flag to reload instead.
        assert (
            await chorus.draft_update(draft_id, "edit", insert(3, 0, "y" * 200_000))
        ).version == 4
        late = await chorus.draft_update(draft_id, "edit", insert(3, 0, "w" * 60_000))
        assert (late.version, late.changes_complete, late.changes) == (5, False, [])
