"""The save activity's local diffs of large drafts."""

from __future__ import annotations


def test_edit_diff_matches_a_whole_text_diff():
    """The local diff of a large draft's revision equals difflib over the whole texts."""
    import random

    from activities.drafts import edit_diff, unified_diff
    from chorus.contracts.drafting import TextEdit, apply_edit

    rng = random.Random(7)
    before = "".join(f"line {i}\n" for i in range(60))
    for _ in range(300):
        start = rng.randrange(len(before) + 1)
        end = min(len(before), start + rng.choice([0, 1, 5, 30]))
        edit = TextEdit(start=start, end=end, text=rng.choice(["", "X", "new\nlines\n", "\n"]))
        after = apply_edit(before, edit)
        assert edit_diff(before, edit, 5) == unified_diff(before, after, 5), edit
