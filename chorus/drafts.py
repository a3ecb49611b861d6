"""Collaborative drafts: payload models and the pure, deterministic editing rules.

Everything here is plain computation (no I/O, no clock), so the draft workflow can use it and
tests can exercise it directly.

Concurrency policy (documented for users in the README): every edit names the ``base_version``
it was made against. If that is the current version, it applies. If other edits landed since,
a **range** edit is rebased over them and applied when it does not overlap any of them (its
offsets shift by what was inserted or removed before it); an overlapping range edit, or a
**whole-text** replacement against a stale base, is refused with a conflict error naming the
versions it conflicts with. Two insertions at the same offset do not overlap: the later one
lands first (before the earlier one's text).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Role = Literal["owner", "editor", "reviewer", "viewer"]
DraftStatus = Literal["drafting", "in_review", "approved", "published", "archived"]

EDIT_ROLES: frozenset[str] = frozenset({"owner", "editor"})
"""Roles allowed to change the text."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextEdit(_Model):
    """Replace ``content[start:end]`` with ``text`` (offsets in characters).

    ``start == end`` inserts; ``text == ""`` deletes.
    """

    start: int = Field(ge=0)
    end: int = Field(ge=0)
    text: str = ""

    @model_validator(mode="after")
    def _ordered(self) -> TextEdit:
        if self.end < self.start:
            raise ValueError(f"range end ({self.end}) is before its start ({self.start})")
        return self

    @property
    def delta(self) -> int:
        """Change in length the edit causes."""
        return len(self.text) - (self.end - self.start)


class EditConflictError(ValueError):
    """A stale edit overlaps edits made since its base version."""


def apply_edit(content: str, edit: TextEdit) -> str:
    """Apply ``edit`` to ``content``.

    Raises:
        ValueError: The range lies outside the content (names the range and the length).
    """
    if edit.end > len(content):
        raise ValueError(
            f"range {edit.start}-{edit.end} is outside the text ({len(content)} characters)"
        )
    return content[: edit.start] + edit.text + content[edit.end :]


def rebase(edit: TextEdit, applied: TextEdit) -> TextEdit | None:
    """Move ``edit`` (made on the same text as ``applied``) to the text after ``applied``.

    Returns:
        The shifted edit, or ``None`` when the two ranges overlap.
    """
    if edit.end <= applied.start:  # entirely before (touching or same-point insert included)
        return edit
    if edit.start >= applied.end:  # entirely after: shift by what ``applied`` added/removed
        return TextEdit(
            start=edit.start + applied.delta, end=edit.end + applied.delta, text=edit.text
        )
    return None


def rebase_over(edit: TextEdit, base_version: int, since: list[tuple[int, TextEdit]]) -> TextEdit:
    """Rebase ``edit`` over the edits applied after ``base_version``, in order.

    Args:
        edit: The edit as made against ``base_version``.
        base_version: Version the author saw.
        since: ``(version, edit)`` of every revision after ``base_version``, oldest first.

    Raises:
        EditConflictError: The edit overlaps one of them (the message names the version).
    """
    current = edit
    for version, applied in since:
        moved = rebase(current, applied)
        if moved is None:
            raise EditConflictError(
                f"edit {edit.start}-{edit.end} made on version {base_version} overlaps the "
                f"change made in version {version}; reload and edit version "
                f"{since[-1][0]} instead"
            )
        current = moved
    return current
