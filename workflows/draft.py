"""Draft workflow: one long-lived workflow per draft, changed by updates and signals.

Updates (validated before they are accepted, so a refused request never enters the history):
``edit``, ``submit``, ``approve``, ``publish``, ``archive``; each returns the current version.
Signals (fire and forget; checked when applied, and ignored with a warning in the workflow log
when invalid): ``comment``, ``add_collaborator``, ``resolve_comment``. Queries: ``draft``,
``history``, ``comments``, ``status``.

Every accepted revision is saved to PostgreSQL by the ``chorus.save_draft`` activity, in
batches, from the workflow's main loop (so an edit's latency is not a database round trip);
the workflow continues as new, carrying its whole state, when Temporal suggests it or after
``max_updates_per_run`` accepted updates — after every handler has finished, carrying the
revisions not yet saved, so no accepted edit is lost.

A draft longer than ``INLINE_CONTENT_CHARS`` is held by reference: the workflow drops the text
and keeps its length and the recent edits (enough to validate and rebase edits and anchor
comments); the save activity rebuilds the text in PostgreSQL from the edits, and the ``draft``
query returns ``content: null`` with ``content_chars`` (``ChorusClient.draft`` reads the text
from PostgreSQL). So no payload in the history carries a large text.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import timedelta
from types import MappingProxyType
from typing import Literal

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, FailureError

from workflows._base import (
    PROVIDER_TASK_QUEUES_PATCH,
    await_deliveries,
    call_agent,
    describe_activity_failure,
    require_input,
    start_budget_alert,
)

with workflow.unsafe.imports_passed_through():
    from chorus.contracts import activities
    from chorus.contracts.drafting import (
        COMMENTS_PER_MINUTE,
        EDIT_ROLES,
        INLINE_CONTENT_CHARS,
        MAX_COMMENT_BYTES,
        MAX_COMMENT_CHARS,
        MAX_COMMENTS,
        MAX_COMMENTS_PER_USER,
        MAX_CONTENT_CHARS,
        MAX_EDIT_CHARS,
        REVISION_MAX_CHARS,
        CollaboratorRequest,
        Comment,
        CommentRequest,
        DraftInput,
        DraftState,
        DraftStatus,
        DraftView,
        EditConflictError,
        EditRequest,
        EditResult,
        ResolveCommentRequest,
        Revision,
        RevisionRequest,
        SaveDraftInput,
        TextEdit,
        UserRequest,
        apply_edit,
        rebase_over,
    )
    from chorus.contracts.models import ResolveAgentsInput, RunSubject
    from chorus.contracts.names import (
        DRAFT_STATUS_ATTR,
        DRAFT_WORKFLOW,
    )
    from chorus.contracts.validation import control_problem, text_problem

REVISIONS_KEPT = 200
"""Revisions kept in workflow state (at most); an edit based on an older version is refused."""
REVISIONS_KEPT_CHARS = 100_000
"""...and at most this many characters of edit text across them (the newest always kept)."""
DRAFT_SEARCH_ATTRIBUTES_PATCH = "chorus-draft-search-attributes"
"""Patch id: drafts upsert ChorusDraftStatus when each run starts and on every status change
(older histories have no such commands and replay without them)."""
COMMENT_LIMITS_PATCH = "chorus-comment-limits"
"""Patch id: comments over a limit (size, count per draft and per user, rate, total bytes;
``chorus.contracts.drafting``) are dropped; drafts that accepted them before keep replaying as
they ran."""
SAVE_RETRY_POLICY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500), maximum_interval=timedelta(seconds=30)
)

TRANSITIONS: Mapping[str, tuple[DraftStatus, tuple[DraftStatus, ...], tuple[str, ...]]] = (
    MappingProxyType(
        {
            # update: (new status, statuses it may follow, roles allowed)
            "submit": ("in_review", ("drafting",), ("owner", "editor")),
            "approve": ("approved", ("in_review",), ("owner", "reviewer")),
            "publish": ("published", ("approved",), ("owner",)),
            "archive": ("archived", ("drafting", "in_review", "approved", "published"), ("owner",)),
        }
    )
)


@workflow.defn(name=DRAFT_WORKFLOW)
class DraftWorkflow:
    """A collaborative draft (see the module docstring for its API)."""

    @workflow.init
    def __init__(self, input: DraftInput | None = None) -> None:
        if input is None:  # started without an input: run() fails it with InvalidInput
            input = DraftInput(title="(no input)", owner="(none)")
        self._alerts: list[workflow.ActivityHandle[None]] = []  # budget alert deliveries
        if input.state is not None:
            self.state = input.state
        else:
            collaborators = {**input.collaborators, input.owner: "owner"}
            ref = input.content_ref
            self.state = DraftState(
                title=input.title,
                content=input.content if ref is None else None,
                content_chars=len(input.content) if ref is None else (ref.chars or 0),
                collaborators=collaborators,
                created_at=workflow.now(),
                initial_content=input.content if ref is None else "",
                initial_content_ref=ref,
            )
        self._generating = False
        self._max_updates = input.max_updates_per_run
        self._accepted_updates = 0
        self._unsaved: list[Revision] = list(input.pending_revisions)
        self._dirty = input.state is None  # a new draft is saved once at start

    # --- main loop ---------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: DraftInput | None = None) -> DraftView:
        """Save revisions as they land; continue as new when due; end when archived.

        Raises:
            ApplicationError: ``InvalidInput`` (non-retryable) when started without an input.
        """
        input = require_input(input, DraftInput, DRAFT_WORKFLOW)
        try:
            return await self._main_loop(input)
        except (FailureError, workflow.NondeterminismError):
            raise  # Temporal's own outcomes; a nondeterminism error must fail the task, not the run
        except Exception as err:
            # A bug here would otherwise fail the workflow task forever, stranding the edits
            # accepted since the last save (issue 20). Save them, then fail the draft loudly.
            workflow.logger.exception("draft workflow failed; saving accepted edits first")
            while self._dirty or self._unsaved:
                await self._save()
            raise ApplicationError(
                f"draft workflow failed ({type(err).__name__}: {err}); every accepted edit up "
                f"to version {self.state.version} is saved in PostgreSQL",
                type="DraftFailed",
                non_retryable=True,
            ) from err

    async def _main_loop(self, input: DraftInput) -> DraftView:
        self._upsert_status()
        if input.state is None and input.brief and not input.content:
            await self._first_draft(input.brief, input.writer)
        while True:
            await workflow.wait_condition(
                lambda: (
                    self._dirty
                    or self._unsaved != []
                    or self._continue_due()
                    or self.state.status == "archived"
                )
            )
            if self._dirty or self._unsaved:
                await self._save()
            if self.state.status == "archived" or self._continue_due():
                await workflow.wait_condition(workflow.all_handlers_finished)
                while self._alerts:  # budget alerts of agent calls (advisory, retried)
                    await await_deliveries(self._alerts)
                    await workflow.wait_condition(workflow.all_handlers_finished)
                if self.state.status == "archived":
                    while self._dirty or self._unsaved:  # no edits are accepted any more
                        await self._save()
                    return self._view()
                # Nothing is awaited from here to continue_as_new, so every revision accepted
                # until now is either saved or carried to the next run.
                workflow.continue_as_new(
                    DraftInput(
                        title=self.state.title,
                        owner=self._owner(),
                        state=self.state,
                        pending_revisions=self._unsaved,
                        max_updates_per_run=self._max_updates,
                    )
                )

    async def _first_draft(self, brief: str, writer: str) -> None:
        """Have the writer agent write version 1 from the brief; edits wait until it is done."""
        self._generating = True
        try:
            text = await self._agent_text(
                writer,
                task=f"Write the first draft of: {brief}",
                document="",
            )
        finally:
            self._generating = False
        self.state.content = text
        self.state.content_chars = len(text)
        self.state.initial_content = text

    async def _agent_text(self, agent: str, *, task: str, document: str) -> str:
        """Ask ``agent`` (with provider fallback) and return its text, or raise AgentFailed."""
        try:
            resolved = await workflow.execute_activity_method(
                activities.RunBookkeeping.resolve_agents,
                ResolveAgentsInput(names=[agent]),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=SAVE_RETRY_POLICY,
                summary=f"Pin agent {agent}",
            )
        except ActivityError as err:
            error_type, message, _ = describe_activity_failure(err)
            raise ApplicationError(message, type=error_type) from err
        step = await call_agent(
            resolved.agents[agent],
            RunSubject(task=task, document=document, document_name=self.state.title),
            root_workflow_id=workflow.info().workflow_id,
            # Drafts stay open for weeks: one started before per-provider queues keeps its own.
            provider_queues=workflow.patched(PROVIDER_TASK_QUEUES_PATCH),
            on_budget_alert=lambda alert: self._alerts.append(start_budget_alert(alert)),
        )
        if step.status != "succeeded" or not step.output.strip():
            raise ApplicationError(
                f"agent {agent} failed: {step.error or 'it returned no text'}",
                type="AgentFailed",
            )
        return step.output.strip()

    def _continue_due(self) -> bool:
        return (
            workflow.info().is_continue_as_new_suggested()
            or self._accepted_updates >= self._max_updates
        )

    async def _save(self) -> None:
        batch, self._unsaved, self._dirty = self._unsaved, [], False
        s = self.state
        sha = None if s.content is None else hashlib.sha256(s.content.encode()).hexdigest()
        await workflow.execute_activity_method(
            activities.DraftSaving.save_draft,
            SaveDraftInput(
                title=s.title,
                status=s.status,
                version=s.version,
                content_chars=s.content_chars,
                content_sha256=sha,
                initial_content=s.initial_content,
                initial_content_ref=s.initial_content_ref,
                collaborators=s.collaborators,
                comments=s.comments,
                revisions=batch,
                created_at=s.created_at,
            ),
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=SAVE_RETRY_POLICY,
            summary=f"Save v{s.version} ({len(batch)} new revision(s))",
        )
        # The initial text is only needed until the draft's first save; don't carry it.
        s.initial_content, s.initial_content_ref = "", None

    # --- updates -----------------------------------------------------------------------------

    @workflow.update(name="edit")
    def edit(self, request: EditRequest) -> EditResult:
        """Apply an edit (rebased when stale and not overlapping); return the new version."""
        edit, rebased_from = self._prepare_edit(request)
        return self._apply(
            edit, request, author=request.user, summary=request.summary, rebased_from=rebased_from
        )

    def _apply(
        self,
        edit: TextEdit,
        request: EditRequest,
        *,
        author: str,
        summary: str,
        rebased_from: int | None = None,
        author_kind: Literal["person", "agent"] = "person",
    ) -> EditResult:
        """Apply a validated edit as a new revision; return it with the changes since base."""
        s = self.state
        if s.content is not None:
            s.content = apply_edit(s.content, edit)
        s.content_chars += edit.delta
        if s.content_chars > INLINE_CONTENT_CHARS:
            s.content = None  # held by reference from now on; the save activity has the edits
        s.version += 1
        # The revisions since the caller's base, taken before the kept window is trimmed (a
        # large new edit can push earlier ones out of it, issue 20).
        earlier = [r for r in s.revisions if r.version > request.base_version]
        revision = Revision(
            version=s.version,
            author=author,
            author_kind=author_kind,
            base_version=request.base_version,
            edit=edit,
            created_at=workflow.now(),
            summary=summary,
        )
        self._record(revision, request.user)
        changes = [*earlier, revision]
        complete = len(changes) == s.version - request.base_version and (
            sum(len(r.edit.text) for r in changes) <= MAX_EDIT_CHARS
        )
        return EditResult(
            version=s.version,
            rebased_from=rebased_from,
            changes=changes if complete else [],
            changes_complete=complete,
        )

    def _record(self, revision: Revision, editor: str) -> None:
        """Keep a new revision (bounded window), queue it for saving, count the update."""
        kept = [*self.state.revisions, revision][-REVISIONS_KEPT:]
        chars = 0
        for index in range(len(kept) - 1, -1, -1):
            chars += len(kept[index].edit.text)
            if chars > REVISIONS_KEPT_CHARS and index < len(kept) - 1:
                kept = kept[index + 1 :]
                break
        self.state.revisions = kept
        self.state.last_editor = editor
        self._unsaved.append(revision)
        self._accepted_updates += 1

    @edit.validator
    def validate_edit(self, request: EditRequest) -> None:
        """Refuse before acceptance: permissions, status, ranges, size, conflicts."""
        self._prepare_edit(request)

    def _prepare_edit(self, request: EditRequest) -> tuple[TextEdit, int | None]:
        s = self.state
        self._require_role(request.user, EDIT_ROLES, "edit")
        if self._generating:
            raise ApplicationError(
                "the first draft is still being written; try again shortly", type="NotReady"
            )
        if s.status in ("published", "archived"):
            raise ApplicationError(
                f"the draft is {s.status} and read-only", type="ReadOnly", non_retryable=True
            )
        if request.base_version > s.version:
            raise ApplicationError(
                f"base_version {request.base_version} does not exist; current is {s.version}",
                type="InvalidEdit",
                non_retryable=True,
            )
        if request.content is not None:
            edit = TextEdit(start=0, end=s.content_chars, text=request.content)
            if request.base_version != s.version:
                raise ApplicationError(
                    f"whole-text edit made on version {request.base_version}, but the draft is "
                    f"at version {s.version}; reload and edit version {s.version}",
                    type="EditConflict",
                    non_retryable=True,
                )
        else:
            assert request.edit is not None
            edit = request.edit
        if problem := text_problem("edit text", edit.text):
            raise ApplicationError(problem, type="InvalidEdit", non_retryable=True)
        if len(edit.text) > MAX_EDIT_CHARS:
            raise ApplicationError(
                f"the edit's text is {len(edit.text)} characters; the limit is {MAX_EDIT_CHARS} "
                "per edit (send a long text as several range edits)",
                type="InvalidEdit",
                non_retryable=True,
            )
        rebased_from = None
        if request.base_version != s.version:
            since = [(r.version, r.edit) for r in s.revisions if r.version > request.base_version]
            if len(since) != s.version - request.base_version:
                raise ApplicationError(
                    f"base_version {request.base_version} is too old to merge (only recent "
                    f"revisions are kept); reload and edit version {s.version}",
                    type="EditConflict",
                    non_retryable=True,
                )
            try:
                edit = rebase_over(edit, request.base_version, since)
            except EditConflictError as exc:
                raise ApplicationError(str(exc), type="EditConflict", non_retryable=True) from exc
            rebased_from = request.base_version
        if edit.end > s.content_chars:
            raise ApplicationError(
                f"range {edit.start}-{edit.end} is outside the text ({s.content_chars} "
                f"characters at version {s.version})",
                type="InvalidEdit",
                non_retryable=True,
            )
        if s.content_chars + edit.delta > MAX_CONTENT_CHARS:
            raise ApplicationError(
                f"the edit would make the draft {s.content_chars + edit.delta} characters; the "
                f"limit is {MAX_CONTENT_CHARS}",
                type="InvalidEdit",
                non_retryable=True,
            )
        return edit, rebased_from

    @workflow.update(name="request_revision")
    async def request_revision(self, request: RevisionRequest) -> EditResult:
        """Have an agent rewrite the draft per an instruction; a new revision by the agent.

        Refused with ``EditConflict`` if the draft changed while the agent was writing, and like
        any whole-text edit if it became read-only or the text is too long.
        """
        self._check_revisable()
        assert self.state.content is not None
        text = await self._agent_text(
            request.agent,
            task=(
                f"Revise the document: {request.instruction}. Answer with the complete revised "
                "document only."
            ),
            document=self.state.content,
        )
        self._check_revisable()
        # The draft may have changed, been published or archived, while the agent wrote: the
        # agent's text is checked by the same rules as a whole-text edit made now.
        as_edit = EditRequest(user=request.user, base_version=request.base_version, content=text)
        edit, _ = self._prepare_edit(as_edit)
        return self._apply(
            edit,
            as_edit,
            author=f"agent:{request.agent}",
            author_kind="agent",
            summary=f"{request.instruction} (asked by {request.user})",
        )

    @request_revision.validator
    def validate_request_revision(self, request: RevisionRequest) -> None:
        """Same rules as a whole-text edit: editors, not read-only, current base version."""
        self._prepare_edit(
            EditRequest(user=request.user, base_version=request.base_version, content="")
        )
        self._check_revisable()

    def _check_revisable(self) -> None:
        chars = self.state.content_chars
        if self.state.content is None or chars > REVISION_MAX_CHARS:
            raise ApplicationError(
                f"the draft is {chars} characters; agents revise drafts up to "
                f"{REVISION_MAX_CHARS} (they answer with the whole text); edit it in sections",
                type="InvalidEdit",
                non_retryable=True,
            )

    def _transition(self, name: str, request: UserRequest) -> EditResult:
        new_status = TRANSITIONS[name][0]
        self.state.status = new_status
        self._upsert_status()
        self._accepted_updates += 1
        self._dirty = True
        return EditResult(version=self.state.version)

    def _upsert_status(self) -> None:
        """Set ChorusDraftStatus to the draft's status (drafts started after the patch)."""
        if workflow.patched(DRAFT_SEARCH_ATTRIBUTES_PATCH):
            workflow.upsert_search_attributes([DRAFT_STATUS_ATTR.value_set(self.state.status)])

    def _check_transition(self, name: str, request: UserRequest) -> None:
        _, allowed_from, roles = TRANSITIONS[name]
        self._require_role(request.user, frozenset(roles), name)
        if self.state.status not in allowed_from:
            raise ApplicationError(
                f"cannot {name} a draft that is {self.state.status} (allowed from: "
                f"{', '.join(allowed_from)})",
                type="IllegalTransition",
                non_retryable=True,
            )
        if name == "approve" and request.user == self.state.last_editor:
            raise ApplicationError(
                f"{request.user} made the last edit and cannot approve it; another reviewer must",
                type="PermissionDenied",
                non_retryable=True,
            )

    @workflow.update(name="submit")
    def submit(self, request: UserRequest) -> EditResult:
        """Send the draft for review (drafting → in_review)."""
        return self._transition("submit", request)

    @submit.validator
    def validate_submit(self, request: UserRequest) -> None:
        """Only owners and editors submit, and only a draft in drafting."""
        self._check_transition("submit", request)

    @workflow.update(name="approve")
    def approve(self, request: UserRequest) -> EditResult:
        """Approve the draft (in_review → approved)."""
        return self._transition("approve", request)

    @approve.validator
    def validate_approve(self, request: UserRequest) -> None:
        """Only a reviewer (or owner) who is not the last editor approves."""
        self._check_transition("approve", request)

    @workflow.update(name="publish")
    def publish(self, request: UserRequest) -> EditResult:
        """Publish the draft (approved → published); it becomes read-only."""
        return self._transition("publish", request)

    @publish.validator
    def validate_publish(self, request: UserRequest) -> None:
        """Only the owner publishes, and only an approved draft."""
        self._check_transition("publish", request)

    @workflow.update(name="archive")
    def archive(self, request: UserRequest) -> EditResult:
        """Archive the draft; the workflow ends after saving."""
        return self._transition("archive", request)

    @archive.validator
    def validate_archive(self, request: UserRequest) -> None:
        """Only the owner archives."""
        self._check_transition("archive", request)

    # --- signals -----------------------------------------------------------------------------

    @workflow.signal(name="comment")
    def comment(self, request: CommentRequest) -> None:
        """Add a comment anchored to a text range (ignored if the user or range is invalid)."""
        s = self.state
        if request.user not in s.collaborators:
            workflow.logger.warning("comment from non-collaborator %s ignored", request.user)
            return
        if control_problem("comment", request.text):
            workflow.logger.warning("comment with control characters ignored")
            return
        if not (request.start <= request.end <= s.content_chars):
            workflow.logger.warning(
                "comment range %d-%d outside the text ignored", request.start, request.end
            )
            return
        if workflow.patched(COMMENT_LIMITS_PATCH) and (reason := self._comment_limit(request)):
            # A signal cannot be refused: the comment is dropped and the reason logged.
            workflow.logger.warning("comment from %s dropped: %s", request.user, reason)
            return
        s.comments = [
            *s.comments,
            Comment(
                id=s.next_comment_id,
                author=request.user,
                text=request.text,
                start=request.start,
                end=request.end,
                version=s.version,
                created_at=workflow.now(),
            ),
        ]
        s.next_comment_id += 1
        self._dirty = True

    def _comment_limit(self, request: CommentRequest) -> str | None:
        """Which comment limit (``chorus.contracts.drafting``) ``request`` breaks, if any."""
        s = self.state
        if len(request.text) > MAX_COMMENT_CHARS:
            return f"{len(request.text)} characters, the limit is {MAX_COMMENT_CHARS}"
        if len(s.comments) >= MAX_COMMENTS:
            return f"the draft has {len(s.comments)} comments, the limit is {MAX_COMMENTS}"
        mine = [c for c in s.comments if c.author == request.user]
        if len(mine) >= MAX_COMMENTS_PER_USER:
            return f"{len(mine)} comments by this user, the limit is {MAX_COMMENTS_PER_USER}"
        now = workflow.now()
        recent = [c for c in mine if (now - c.created_at).total_seconds() < 60]
        if len(recent) >= COMMENTS_PER_MINUTE:
            return f"more than {COMMENTS_PER_MINUTE} comments in a minute"
        held = sum(len(c.text.encode()) for c in s.comments)
        if held + len(request.text.encode()) > MAX_COMMENT_BYTES:
            return f"the draft's comments would pass {MAX_COMMENT_BYTES} bytes of text"
        return None

    @workflow.signal(name="add_collaborator")
    def add_collaborator(self, request: CollaboratorRequest) -> None:
        """Add or change a collaborator's role (owners only; otherwise ignored)."""
        collaborators = self.state.collaborators
        if collaborators.get(request.user) != "owner":
            workflow.logger.warning("add_collaborator by non-owner %s ignored", request.user)
            return
        owners = {u for u, r in collaborators.items() if r == "owner"}
        if request.role != "owner" and owners == {request.collaborator}:
            workflow.logger.warning(
                "add_collaborator ignored: %s is the last owner and cannot be demoted",
                request.collaborator,
            )
            return
        self.state.collaborators = {
            **self.state.collaborators,
            request.collaborator: request.role,
        }
        self._dirty = True

    @workflow.signal(name="resolve_comment")
    def resolve_comment(self, request: ResolveCommentRequest) -> None:
        """Resolve a comment (its author, owners and editors; otherwise ignored)."""
        s = self.state
        role = s.collaborators.get(request.user)
        for comment in s.comments:
            if comment.id == request.comment_id:
                if request.user == comment.author or role in EDIT_ROLES:
                    comment.resolved = True
                    self._dirty = True
                else:
                    workflow.logger.warning("resolve by %s not allowed", request.user)
                return
        workflow.logger.warning("resolve of unknown comment %d ignored", request.comment_id)

    # --- queries -----------------------------------------------------------------------------

    @workflow.query(name="draft")
    def draft(self) -> DraftView:
        """The current text and metadata."""
        return self._view()

    @workflow.query(name="history")
    def history(self) -> list[Revision]:
        """The recent revisions kept in the workflow (all of them are in PostgreSQL)."""
        return self.state.revisions

    @workflow.query(name="comments")
    def comments(self) -> list[Comment]:
        """All comments, resolved ones included."""
        return self.state.comments

    @workflow.query(name="status")
    def status(self) -> DraftStatus:
        """The lifecycle status."""
        return self.state.status

    # --- helpers -----------------------------------------------------------------------------

    def _view(self) -> DraftView:
        s = self.state
        return DraftView(
            draft_id=workflow.info().workflow_id,
            title=s.title,
            content=s.content,
            content_chars=s.content_chars,
            version=s.version,
            status=s.status,
            collaborators=s.collaborators,
            open_comments=sum(not c.resolved for c in s.comments),
            last_editor=s.last_editor,
        )

    def _owner(self) -> str:
        """An owner (drafts from before the last-owner rule may have none: any collaborator)."""
        owners = [u for u, r in self.state.collaborators.items() if r == "owner"]
        return (owners or list(self.state.collaborators) or ["(no owner)"])[0]

    def _require_role(self, user: str, roles: frozenset[str], action: str) -> None:
        role = self.state.collaborators.get(user)
        if role is None:
            raise ApplicationError(
                f"{user!r} is not a collaborator on this draft",
                type="PermissionDenied",
                non_retryable=True,
            )
        if role not in roles:
            raise ApplicationError(
                f"{user!r} has role {role}; {action} needs one of: {', '.join(sorted(roles))}",
                type="PermissionDenied",
                non_retryable=True,
            )
