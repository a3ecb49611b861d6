"""Drafts: start collaborative drafts, edit, comment, and read them and their saved revisions."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from temporalio.client import WorkflowUpdateFailedError
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from chorus.contracts import validation
from chorus.contracts.drafting import (
    INLINE_CONTENT_CHARS,
    MAX_COMMENT_CHARS,
    MAX_CONTENT_CHARS,
    MAX_EDIT_CHARS,
    MAX_UPDATE_BYTES,
    CollaboratorRequest,
    CommentRequest,
    DraftInput,
    DraftView,
    EditRequest,
    EditResult,
    ResolveCommentRequest,
    RevisionRequest,
    Role,
    UserRequest,
)
from chorus.contracts.names import DRAFT_STATUS_ATTR, DRAFT_WORKFLOW
from chorus.storage import db
from starter.sdk.client_base import FocusedClient, input_refusals
from starter.sdk.sdk_errors import ChorusInputError, DraftRefusedError, raise_if_unregistered
from starter.sdk.workflow_ids import id_taken, slugify

DraftRequest = EditRequest | RevisionRequest | UserRequest | CommentRequest
"""A request whose text the SDK cleans before it reaches the draft workflow."""


class DraftsClient(FocusedClient):
    """Start drafts, send their updates and signals, read their text and saved revisions.

    Reached as ``ChorusClient.drafts``. A draft is one long-lived workflow; every version it
    makes is saved in PostgreSQL (``drafts``, ``draft_revisions``).
    """

    async def start(
        self,
        title: str,
        owner: str,
        *,
        content: str = "",
        brief: str | None = None,
        collaborators: dict[str, Role] | None = None,
        draft_id: str | None = None,
    ) -> str:
        """Start a draft workflow; return its id (``draft-<title slug>-<8 hex>``).

        Args:
            title: Draft title (<= 200 characters).
            owner: User id of the owner.
            content: Initial text (e.g. a template); empty with ``brief`` set lets the writer
                agent write version 1.
            brief: What to write, for the writer agent (<= 10,000 characters).
            collaborators: Further users and their roles.
            draft_id: Override the generated id.

        A text longer than ``INLINE_CONTENT_CHARS`` (65,536) characters is stored in
        PostgreSQL first and the workflow gets its reference, so it never enters the history.

        Raises:
            ChorusInputError: Empty or too long title/owner, text over MAX_CONTENT_CHARS
                (2,000,000) characters, or the draft id is already used.
            SearchAttributesMissingError: The namespace lacks the Chorus search attributes.
        """
        with input_refusals():
            for field, user in [
                ("owner", owner),
                *(("collaborators", u) for u in collaborators or {}),
            ]:
                validation.check_identifier(field, user)
            if draft_id is not None:
                validation.check_identifier("draft_id", draft_id)
            title = validation.clean_text("title", title, max_chars=200, required=True)
            content = validation.clean_text("content", content, max_chars=MAX_CONTENT_CHARS)
            if brief is not None:
                brief = validation.clean_text("brief", brief, max_chars=10_000)
        self._check_content({"title": title, "content": content, "brief": brief or ""})
        try:
            draft_input = DraftInput(
                title=title,
                owner=owner,
                content=content if len(content) <= INLINE_CONTENT_CHARS else "",
                brief=brief,
                collaborators=collaborators or {},
            )
        except ValueError as exc:
            raise ChorusInputError(str(exc)) from exc
        if len(content) > INLINE_CONTENT_CHARS:
            draft_input.content_ref = await db.put_text(await self._pool(), content)
        # With encrypted history the id must not quote the title (ids are never encrypted).
        slug = "draft" if self.settings.codec_keys else slugify(title)
        draft_id = draft_id or f"draft-{slug}-{uuid.uuid4().hex[:8]}"
        try:
            await self.client.start_workflow(
                DRAFT_WORKFLOW,
                draft_input,
                id=draft_id,
                task_queue=self.settings.task_queue,
                static_summary=f"Draft: {title[:200]} (owner {owner})",
                search_attributes=TypedSearchAttributes(
                    [SearchAttributePair(DRAFT_STATUS_ATTR, "drafting")]
                ),
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            )
        except WorkflowAlreadyStartedError as exc:
            raise ChorusInputError(id_taken(draft_id, "draft")) from exc
        except RPCError as exc:
            raise_if_unregistered(exc)
            raise
        return draft_id

    async def update(
        self, draft_id: str, update: str, request: EditRequest | RevisionRequest | UserRequest
    ) -> EditResult:
        """Run a draft update and return the version it produced.

        Updates: ``edit``, ``request_revision``, ``submit``, ``approve``, ``publish``,
        ``archive``. Retries while the server refuses for too many updates in flight
        (RESOURCE_EXHAUSTED), backing off from 0.05 s to 1 s, 40 attempts at most.

        Raises:
            DraftRefusedError: The validator or handler refused (``error_type`` says why:
                EditConflict, PermissionDenied, IllegalTransition, ReadOnly, InvalidEdit), or
                the server stayed busy (``Busy``).
            ChorusInputError: ``request_revision`` names an agent the catalog does not have,
                or the request is over ``MAX_UPDATE_BYTES`` encoded.
        """
        cleaned = self._clean_request(request)
        if isinstance(cleaned, RevisionRequest):
            # The workflow cannot read the catalog in a validator: check here, so an unknown
            # agent is refused before the update enters the draft's history.
            known = await db.current_agents(await self._pool())
            if cleaned.agent not in known:
                raise ChorusInputError(
                    f"agent: unknown agent {cleaned.agent!r}; known: {', '.join(sorted(known))}"
                )
        size = sum(p.ByteSize() for p in await self.client.data_converter.encode([cleaned]))
        if size > MAX_UPDATE_BYTES:
            raise ChorusInputError(
                f"{update}: the request is {size:,} bytes encoded; the limit is "
                f"{MAX_UPDATE_BYTES:,} bytes (replace a large text in range edits of at most "
                f"{MAX_EDIT_CHARS:,} characters)"
            )
        handle = self.client.get_workflow_handle(draft_id)
        delay = 0.05
        for _ in range(40):
            try:
                result: EditResult = await handle.execute_update(
                    update, cleaned, result_type=EditResult
                )
                return result
            except WorkflowUpdateFailedError as exc:
                cause = exc.cause
                if isinstance(cause, ApplicationError):
                    raise DraftRefusedError(cause.message, cause.type or "Refused") from exc
                raise DraftRefusedError(str(cause or exc), "Refused") from exc
            except RPCError as exc:
                if exc.status != RPCStatusCode.RESOURCE_EXHAUSTED:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
        raise DraftRefusedError(f"{update} on {draft_id}: server busy, gave up", "Busy")

    def _clean_request(self, request: DraftRequest) -> DraftRequest:
        """Strip control characters from the text a draft request carries; content check.

        Raises:
            ChorusInputError: The prohibited-content check refused the text.
        """
        fields: dict[str, str] = {}
        if isinstance(request, EditRequest):
            if request.edit is not None:
                edit = request.edit.model_copy(
                    update={"text": validation.strip_controls(request.edit.text)}
                )
                request = request.model_copy(update={"edit": edit})
                fields["edit text"] = edit.text
            if request.content is not None:
                request = request.model_copy(
                    update={"content": validation.strip_controls(request.content)}
                )
                fields["content"] = request.content or ""
        elif isinstance(request, RevisionRequest):
            request = request.model_copy(
                update={"instruction": validation.strip_controls(request.instruction)}
            )
            fields["instruction"] = request.instruction
        elif isinstance(request, CommentRequest):
            request = request.model_copy(update={"text": validation.strip_controls(request.text)})
            fields["comment"] = request.text
        self._check_content(fields)
        return request

    async def signal(
        self,
        draft_id: str,
        signal: str,
        request: CommentRequest | CollaboratorRequest | ResolveCommentRequest,
    ) -> None:
        """Send ``comment``, ``add_collaborator`` or ``resolve_comment`` (fire and forget).

        Raises:
            ChorusInputError: The comment text was refused by the prohibited-content check or
                is over ``MAX_COMMENT_CHARS``, or the request would demote the draft's last
                owner (the workflow would ignore it: a signal cannot be refused, so the SDK
                says so first).
        """
        handle = self.client.get_workflow_handle(draft_id)
        if isinstance(request, CommentRequest):
            cleaned = self._clean_request(request)
            assert isinstance(cleaned, CommentRequest)
            request = cleaned
            if len(request.text) > MAX_COMMENT_CHARS:  # the workflow would drop it
                raise ChorusInputError(
                    f"text: {len(request.text)} characters, the limit is {MAX_COMMENT_CHARS}"
                )
        if isinstance(request, CollaboratorRequest) and request.role != "owner":
            view: DraftView = await handle.query("draft", result_type=DraftView)
            owners = {u for u, r in view.collaborators.items() if r == "owner"}
            if owners == {request.collaborator}:
                raise ChorusInputError(
                    f"collaborator: {request.collaborator!r} is the draft's last owner and "
                    "cannot be demoted; make someone else owner first"
                )
        await handle.signal(signal, request)

    async def check_reader(self, draft_id: str, user: str) -> None:
        """Refuse a reader who is not a collaborator of the draft.

        Reads the collaborators the draft saved in PostgreSQL (the workflow saves each change
        of roles), or asks the workflow when it has not saved yet. Anyone with Temporal access
        can still query the workflow directly: Temporal access is full access (README, "What
        is stored in plain text").

        Raises:
            PermissionError: ``user`` is not a collaborator (the message names both).
            LookupError: No draft with that id exists.
        """
        collaborators: dict[str, Any]
        try:
            row = await db.draft_row(await self._pool(), draft_id)
            saved = row["collaborators"]
            collaborators = json.loads(saved) if isinstance(saved, str) else dict(saved)
        except LookupError:
            try:
                handle = self.client.get_workflow_handle(draft_id)
                view: DraftView = await handle.query("draft", result_type=DraftView)
            except RPCError as exc:
                raise LookupError(f"no draft {draft_id!r}: {exc.message}") from exc
            collaborators = view.collaborators
        if user not in collaborators:
            raise PermissionError(f"{user!r} is not a collaborator on draft {draft_id!r}")

    async def view(
        self, draft_id: str, *, wait_seconds: float = 10.0, user: str | None = None
    ) -> DraftView:
        """The draft's current text and metadata (the ``draft`` query).

        A draft held by reference (longer than INLINE_CONTENT_CHARS) has no text in the query
        result; it is read from PostgreSQL once the workflow has saved that version (the saved
        version is returned, which may be newer than the queried one).

        Args:
            draft_id: The draft's workflow id.
            wait_seconds: Seconds to wait for the queried version to be saved.
            user: The reader; when given, a non-collaborator is refused
                (:meth:`check_reader`).

        Raises:
            PermissionError: ``user`` is not a collaborator.
            TimeoutError: A large draft's queried version was not saved within ``wait_seconds``.
            RPCError: The query failed (after backing off while the server said the workflow
                was busy, RESOURCE_EXHAUSTED).
        """
        if user is not None:
            await self.check_reader(draft_id, user)
        handle = self.client.get_workflow_handle(draft_id)
        delay = 0.05
        for attempt in range(20):
            try:
                view: DraftView = await handle.query("draft", result_type=DraftView)
                break
            except RPCError as exc:
                # "consistent query buffer is full": the workflow is busy; back off and retry
                if exc.status != RPCStatusCode.RESOURCE_EXHAUSTED or attempt == 19:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
        if view.content is not None:
            return view
        pool = await self._pool()
        deadline = asyncio.get_running_loop().time() + wait_seconds
        while True:
            try:
                row = await db.draft_row(pool, draft_id)
            except LookupError:  # not saved yet
                row = None
            if row is not None and row["version"] >= view.version:
                text = str(row["content"])
                return view.model_copy(
                    update={"content": text, "content_chars": len(text), "version": row["version"]}
                )
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(
                    f"{draft_id}: version {view.version} not saved in {wait_seconds} s"
                )
            await asyncio.sleep(0.1)

    # -- the record in PostgreSQL ------------------------------------------------------------

    async def saved(self, draft_id: str) -> dict[str, Any]:
        """The draft's row as last saved in PostgreSQL (title, status, version, content, ...).

        Does not check the reader: call :meth:`check_reader` first when acting for a user.

        Raises:
            LookupError: No draft with that id has been saved.
        """
        return await db.draft_row(await self._pool(), draft_id)

    async def revisions(self, draft_id: str, after_version: int = 0) -> list[dict[str, Any]]:
        """Saved revisions after ``after_version``, oldest first.

        Each holds ``version``, ``author``, ``author_kind``, ``base_version``, ``edit``,
        ``summary``, ``diff`` (unified), ``content_after`` and ``created_at``. Does not check
        the reader: call :meth:`check_reader` first when acting for a user.
        """
        return await db.draft_revisions(await self._pool(), draft_id, after_version)
