"""Server-Sent Events: a run's step transitions and tokens, a draft's new versions and comments.

``GET /v1/runs/{id}/events`` streams the run's events from :mod:`chorus.streaming` (rows in
PostgreSQL, woken by ``LISTEN``/``NOTIFY``): one SSE message per event, ``id`` the event's
database id, ``event`` its kind (``step_started``, ``token``, ``attempt_restarted``,
``step_completed``, ``step_failed``, ``run_finished``), ``data`` the event as JSON. A client
that reconnects with ``Last-Event-ID`` (browsers' ``EventSource`` do it by themselves) gets
exactly the events after that id: nothing twice, nothing missed, even when the worker was
killed in between (the activity's next attempt announces itself with ``attempt_restarted``,
after which the step's text starts over). The stream ends after ``run_finished``.

``GET /v1/drafts/{id}/events`` streams ``version`` messages (``id`` the version: each saved
revision with its author, summary and the text after it) and ``comments`` messages (the
draft's comments whenever they change); ``Last-Event-ID: N`` resumes after version ``N``.

Both send a ``: keep-alive`` comment every ``HEARTBEAT_S`` seconds of silence so proxies keep
the connection open.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Annotated, Any

import structlog
from fastapi import Depends, FastAPI, Header, Path, Query, Request
from starlette.responses import StreamingResponse
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from chorus.contracts import validation
from chorus.streaming import StreamEvent, StreamHub
from starter.api.auth import Caller, requires
from starter.sdk import ChorusInputError

log = structlog.get_logger("chorus.api")

HEARTBEAT_S = 15.0
"""Seconds of silence after which a ``: keep-alive`` comment is sent."""
DRAFT_POLL_S = 0.5
"""How often a draft's event stream reads the draft's saved version (one indexed row read)."""
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(event_id: int | str | None, event: str, data: Any) -> bytes:
    """One Server-Sent Events message (``data`` as one line of JSON)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, default=str)}\n\n".encode()


ENCODED_CACHE = 4096
"""Run events kept encoded: every subscriber of a run gets the same bytes, encoded once."""
_encoded: OrderedDict[tuple[str, int], bytes] = OrderedDict()


def encoded(event: StreamEvent) -> bytes:
    """The SSE message of a run event, encoded once for all of its subscribers."""
    key = (event.run_id, event.id)
    found = _encoded.get(key)
    if found is None:
        found = _encoded[key] = sse(event.id, event.kind, event.model_dump(mode="json"))
        if len(_encoded) > ENCODED_CACHE:
            _encoded.popitem(last=False)
    return found


def _last_id(header: str | None, query: int | None) -> int:
    raw = header if header is not None else (str(query) if query is not None else "0")
    if not raw.strip().isdigit():
        raise ChorusInputError("Last-Event-ID: must be the id of an event this stream sent")
    return int(raw)


def install(app: FastAPI) -> None:
    """Add the two event-stream endpoints."""

    @app.get(
        "/v1/runs/{workflow_id}/events",
        tags=["runs"],
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def run_events(
        request: Request,
        workflow_id: Annotated[str, Path(max_length=200)],
        _: Annotated[Caller, Depends(requires("runs:read"))],
        last_event_id: Annotated[str | None, Header()] = None,
        after: Annotated[int | None, Query(ge=0, description="As Last-Event-ID.")] = None,
    ) -> StreamingResponse:
        """The run's events as Server-Sent Events (see the module docstring)."""
        try:
            validation.check_identifier("workflow_id", workflow_id)
        except ValueError as exc:
            raise ChorusInputError(str(exc)) from None
        start_after = _last_id(last_event_id, after)
        state = request.app.state.chorus_api
        handle = state.chorus.client.get_workflow_handle(workflow_id)
        try:
            await handle.describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise LookupError(f"no run {workflow_id!r}") from None
            raise
        hub = StreamHub.for_pool(await state.chorus.pool())

        async def closed() -> bool:
            # A run terminated from outside writes no run_finished: end the stream once the
            # workflow is closed and its stored events are sent.
            try:
                desc = await handle.describe()
            except RPCError:
                return False
            return desc.status not in (None, WorkflowExecutionStatus.RUNNING)

        async def stream() -> AsyncIterator[bytes]:
            async for event in hub.subscribe(
                workflow_id, after_id=start_after, heartbeat_s=HEARTBEAT_S, closed=closed
            ):
                # No is_disconnected() per event: StreamingResponse listens for the client
                # going away and cancels this generator (its cost showed in the fan-out bench).
                if event is None:
                    yield b": keep-alive\n\n"
                    continue
                yield encoded(event)

        return StreamingResponse(stream(), media_type="text/event-stream", headers=SSE_HEADERS)

    @app.get(
        "/v1/drafts/{draft_id}/events",
        tags=["drafts"],
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def draft_events(
        request: Request,
        draft_id: Annotated[str, Path(max_length=200)],
        user: Annotated[str, Query(max_length=100)],
        _: Annotated[Caller, Depends(requires("drafts:read"))],
        last_event_id: Annotated[str | None, Header()] = None,
        after: Annotated[int | None, Query(ge=0, description="As Last-Event-ID.")] = None,
    ) -> StreamingResponse:
        """New versions (who changed what) and comment changes of a draft, as SSE."""
        try:
            validation.check_identifier("draft_id", draft_id)
        except ValueError as exc:
            raise ChorusInputError(str(exc)) from None
        drafts = request.app.state.chorus_api.chorus.drafts
        await drafts.check_reader(draft_id, user)
        version = _last_id(last_event_id, after)

        async def stream() -> AsyncIterator[bytes]:
            nonlocal version
            comments_seen: Any = None
            quiet = 0.0
            while not await request.is_disconnected():
                sent = False
                try:
                    row = await drafts.saved(draft_id)
                except LookupError:
                    row = None
                if row is not None and int(row["version"]) > version:
                    for rev in await drafts.revisions(draft_id, version):
                        version = max(version, int(rev["version"]))
                        yield sse(rev["version"], "version", _revision(rev, row))
                        sent = True
                if row is not None:
                    comments = row.get("comments")
                    if isinstance(comments, str):
                        comments = json.loads(comments)
                    if comments != comments_seen:
                        comments_seen = comments
                        yield sse(None, "comments", {"comments": comments or []})
                        sent = True
                    if row.get("status") in ("archived",):
                        yield sse(None, "closed", {"status": row["status"]})
                        return
                quiet = 0.0 if sent else quiet + DRAFT_POLL_S
                if quiet >= HEARTBEAT_S:
                    quiet = 0.0
                    yield b": keep-alive\n\n"
                await asyncio.sleep(DRAFT_POLL_S)

        return StreamingResponse(stream(), media_type="text/event-stream", headers=SSE_HEADERS)


def _revision(rev: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": rev["version"],
        "author": rev["author"],
        "author_kind": rev.get("author_kind"),
        "summary": rev.get("summary"),
        "diff": rev.get("diff"),
        "content": rev.get("content_after"),
        "status": row.get("status"),
        "created_at": rev.get("created_at"),
    }
