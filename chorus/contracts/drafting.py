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

from datetime import datetime
from typing import Literal

from pydantic import Field, model_validator

from chorus.contracts.errors import ChorusRefusedError
from chorus.contracts.limits import COMMENTS_PER_MINUTE as COMMENTS_PER_MINUTE
from chorus.contracts.limits import INLINE_CONTENT_CHARS as INLINE_CONTENT_CHARS
from chorus.contracts.limits import MAX_COMMENT_BYTES as MAX_COMMENT_BYTES
from chorus.contracts.limits import MAX_COMMENT_CHARS as MAX_COMMENT_CHARS
from chorus.contracts.limits import MAX_COMMENTS as MAX_COMMENTS
from chorus.contracts.limits import MAX_COMMENTS_PER_USER as MAX_COMMENTS_PER_USER
from chorus.contracts.limits import MAX_CONTENT_CHARS as MAX_CONTENT_CHARS
from chorus.contracts.limits import MAX_EDIT_CHARS as MAX_EDIT_CHARS
from chorus.contracts.limits import MAX_UPDATE_BYTES as MAX_UPDATE_BYTES
from chorus.contracts.limits import REVISION_MAX_CHARS as REVISION_MAX_CHARS
from chorus.contracts.models import EntryInput, TextRef, WireModel

Role = Literal["owner", "editor", "reviewer", "viewer"]
DraftStatus = Literal["drafting", "in_review", "approved", "published", "archived"]

EDIT_ROLES: frozenset[str] = frozenset({"owner", "editor"})
"""Roles allowed to change the text."""


class TextEdit(WireModel):
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


class EditConflictError(ChorusRefusedError, ValueError):
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


# --- Payloads -------------------------------------------------------------------------------


class Comment(WireModel):
    """A comment anchored to ``content[start:end]`` of ``version``."""

    id: int
    author: str
    text: str = Field(min_length=1, max_length=5000)
    start: int = Field(ge=0)
    end: int = Field(ge=0)
    version: int
    resolved: bool = False
    created_at: datetime


class Revision(WireModel):
    """One accepted change: who, when, against which base, and the edit as applied.

    ``edit`` is expressed in the coordinates of the text it was applied to (version - 1), so
    replaying every revision's edit in order from version 1 rebuilds the content.
    """

    version: int
    author: str
    author_kind: Literal["person", "agent"] = "person"
    base_version: int
    edit: TextEdit
    created_at: datetime
    summary: str = ""


class DraftState(WireModel):
    """Everything a draft is; carried whole across continue-as-new."""

    title: str
    content: str | None
    """The text, or ``None`` while the draft is held by reference (see INLINE_CONTENT_CHARS)."""
    content_chars: int = 0
    """Length of the text in characters (kept whether or not the text is held)."""
    version: int = 1
    status: DraftStatus = "drafting"
    collaborators: dict[str, Role]
    comments: list[Comment] = Field(default_factory=list)
    next_comment_id: int = 1
    revisions: list[Revision] = Field(default_factory=list)
    """The most recent revisions (enough to rebase stale edits); all of them are in PostgreSQL."""
    last_editor: str | None = None
    created_at: datetime
    initial_content: str = ""
    initial_content_ref: TextRef | None = None
    """A large initial text stored by the client (claim check), until the first save."""

    @model_validator(mode="after")
    def _length_known(self) -> DraftState:
        if self.content is not None:
            self.content_chars = len(self.content)
        return self


class DraftInput(EntryInput):
    """Input of the draft workflow: a new draft, or the state carried by continue-as-new.

    Attributes:
        title: Draft title (1-200 characters).
        owner: User id of the owner (gets role ``owner``).
        content: Initial text (for example from a template).
        content_ref: A large initial text by reference (``TextRef.chars`` must be set).
        brief: What to write; the ``writer`` agent drafts the first version from it.
        writer: Agent that writes first drafts.
        collaborators: Further users and their roles.
        state: Set only by continue-as-new.
        pending_revisions: Set only by continue-as-new: revisions still to save.
        max_updates_per_run: Continue-as-new after this many accepted updates (Temporal caps
            updates per run; the default stays far below its limit).
    """

    title: str = Field(min_length=1, max_length=200)
    owner: str = Field(min_length=1, max_length=100)
    content: str = ""
    content_ref: TextRef | None = None
    """A large initial text stored in PostgreSQL by the client (set instead of ``content``)."""
    collaborators: dict[str, Role] = Field(default_factory=dict)
    brief: str | None = Field(None, max_length=10_000)
    """When set (and ``content`` is empty), the ``writer`` agent writes the first draft."""
    writer: str = "writer"
    state: DraftState | None = None
    pending_revisions: list[Revision] = Field(default_factory=list)
    """Revisions accepted but not yet saved when the previous run continued as new."""
    max_updates_per_run: int = Field(500, ge=10)


class EditRequest(EntryInput):
    """Input of the ``edit`` update: a range edit or a whole-text replacement.

    Exactly one of ``edit`` and ``content`` is set.
    """

    user: str
    base_version: int = Field(ge=1)
    edit: TextEdit | None = None
    content: str | None = None
    summary: str = Field("", max_length=500)

    @model_validator(mode="after")
    def _one_kind(self) -> EditRequest:
        if (self.edit is None) == (self.content is None):
            raise ValueError("give exactly one of 'edit' (a range) and 'content' (whole text)")
        return self


class EditResult(WireModel):
    """Result of ``edit`` and the lifecycle updates: the version now current.

    Attributes:
        version: The version now current.
        rebased_from: The stale base version the edit was rebased from, when it was.
        changes: For ``edit``: every revision after the caller's base version up to and
            including this one. Applying their edits in order to the text of the base version
            gives the text of ``version``, so an editor stays current without a query.
        changes_complete: ``False`` when ``changes`` cannot carry every revision since the
            base (they hold more than ``MAX_EDIT_CHARS`` of text, or older ones are no longer
            kept): ``changes`` is then empty and the client must reload the draft.
    """

    version: int
    rebased_from: int | None = None
    changes: list[Revision] = Field(default_factory=list)
    changes_complete: bool = True


class RevisionRequest(EntryInput):
    """Input of the ``request_revision`` update: an agent rewrites the whole draft.

    Attributes:
        user: Who asks (owner or editor).
        base_version: The version the instruction refers to; must be current.
        instruction: What to change, e.g. "friendlier tone", "half the length",
            "for executives" (1-2,000 characters).
        agent: Agent that rewrites (default ``writer``).
    """

    user: str
    base_version: int = Field(ge=1)
    instruction: str = Field(min_length=1, max_length=2000)
    agent: str = "writer"


class UserRequest(EntryInput):
    """Input of ``submit``, ``approve``, ``publish`` and ``archive``: who asks."""

    user: str


class CommentRequest(EntryInput):
    """Input of the ``comment`` signal."""

    user: str
    text: str = Field(min_length=1, max_length=5000)
    """At most 5,000 characters decode (histories hold such comments); the workflow keeps
    comments of at most ``MAX_COMMENT_CHARS`` (the SDK refuses longer ones)."""
    start: int = Field(0, ge=0)
    end: int = Field(0, ge=0)


class CollaboratorRequest(EntryInput):
    """Input of the ``add_collaborator`` signal (only owners may add)."""

    user: str
    collaborator: str = Field(min_length=1, max_length=100)
    role: Role


class ResolveCommentRequest(EntryInput):
    """Input of the ``resolve_comment`` signal."""

    user: str
    comment_id: int


class DraftView(WireModel):
    """Result of the ``draft`` query (and of the workflow, when archived)."""

    draft_id: str
    title: str
    content: str | None
    """The text; ``None`` when the draft is held by reference (longer than
    INLINE_CONTENT_CHARS): read it from PostgreSQL (``ChorusClient.draft`` does)."""
    content_chars: int = 0
    version: int
    status: DraftStatus
    collaborators: dict[str, Role]
    open_comments: int
    last_editor: str | None


class SaveDraftInput(WireModel):
    """Input of ``chorus.save_draft``: revisions not yet in PostgreSQL, and the current state."""

    title: str
    status: DraftStatus
    version: int
    content_chars: int
    """Length of the text at ``version``; the activity checks its replay against it."""
    content_sha256: str | None = None
    """Hex SHA-256 of the UTF-8 text at ``version`` when the workflow holds the text."""
    initial_content: str
    initial_content_ref: TextRef | None = None
    collaborators: dict[str, Role]
    comments: list[Comment]
    revisions: list[Revision]
    created_at: datetime
