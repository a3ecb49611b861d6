"""``chorus serve``: the HTTP API, a thin, stateless layer over the SDK.

Every endpoint calls :class:`starter.sdk.ChorusClient`, the same code the CLI uses, so input
is validated by the same rules with the same messages; the API adds authentication
(:mod:`starter.api.auth`), problem documents (:mod:`starter.api.problems`), request ids and
the body limit (:mod:`starter.api.middleware`). It keeps no state of its own: run any number
of replicas behind a load balancer. Idempotency lives in Temporal (an ``Idempotency-Key``
becomes the workflow id), rates and budgets in PostgreSQL.

Endpoints (all under ``/v1`` need an API key with the scope shown):

================================================  ===============  =====================
endpoint                                          scope            SDK call
================================================  ===============  =====================
``POST /v1/runs``                                 runs:write       ``start_sequential`` /
                                                                   ``start_parallel``
``GET /v1/runs``                                  runs:read        ``runs.list_page``
``GET /v1/runs/{id}``                             runs:read        ``status`` (+ result)
``POST /v1/runs/{id}/cancel``                     runs:write       ``cancel``
``GET /v1/runs/{id}/transcript``                  runs:read        ``transcript``
``GET /v1/runs/{id}/events``                      runs:read        Server-Sent Events
``POST /v1/documents``                            runs:write       stores a document
``GET /v1/approvals``                             runs:read        ``pending_approvals``
``POST /v1/runs/{id}/gates/{gate}``               approvals:decide ``decide``
``GET /v1/costs``                                 costs:read       ``costs``
``GET /v1/agents``                                agents:read      ``agents``
``POST /v1/drafts``, ``GET /v1/drafts/{id}``...   drafts:edit /    ``start_draft``,
                                                  drafts:read      ``draft_update``...
================================================  ===============  =====================

``/openapi.json``, ``/docs`` (Swagger UI) and ``/redoc`` describe them; ``/healthz`` and
``/readyz`` need no key.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import structlog
from fastapi import Body, Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.middleware.cors import CORSMiddleware
from temporalio.service import RPCError, RPCStatusCode

from chorus.config.settings import Settings, get_settings
from chorus.contracts import validation
from chorus.contracts.control import GateRecord
from chorus.contracts.drafting import (
    CollaboratorRequest,
    CommentRequest,
    DraftView,
    EditRequest,
    EditResult,
    RevisionRequest,
    UserRequest,
)
from chorus.contracts.models import RunResult, Step
from chorus.storage import db, health_checks
from starter.api import problems
from starter.api.auth import Caller, requires
from starter.api.middleware import ApiMiddleware
from starter.api.problems import ApiProblem
from starter.api.schemas import (
    DocumentCreated,
    DraftAct,
    DraftCollaborator,
    DraftComment,
    DraftCreate,
    DraftCreated,
    DraftEdit,
    DraftRevise,
    GateDecisionBody,
    Health,
    RunCreate,
    RunCreated,
    RunLinks,
    RunPage,
    RunRow,
    RunView,
)
from starter.plan import parse_agents, plan_from_data
from starter.sdk import ChorusClient, ChorusInputError

log = structlog.get_logger("chorus.api")

API_VERSION = "1"
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")
"""An ``Idempotency-Key`` is 1-200 printable ASCII characters without spaces."""
REQUEST_DIGEST_MEMO = "chorus_request_sha256"
"""Memo field holding the SHA-256 of the request that started a run under an
``Idempotency-Key``: the same key with a different request is refused (422)."""
MAX_PAGE_SIZE = 100
_FILTER_VALUE = re.compile(r"^[A-Za-z0-9._:\-]{1,100}$")


@dataclass
class ApiState:
    """What every request shares: the settings and one connected SDK client (its pool)."""

    settings: Settings
    chorus: ChorusClient


def _state(request: Request) -> ApiState:
    state: ApiState = request.app.state.chorus_api
    return state


def _links(request: Request, workflow_id: str, state: ApiState) -> RunLinks:
    base = str(request.base_url).rstrip("/")
    return RunLinks(
        self=f"{base}/v1/runs/{workflow_id}",
        events=f"{base}/v1/runs/{workflow_id}/events",
        transcript=f"{base}/v1/runs/{workflow_id}/transcript",
        cancel=f"{base}/v1/runs/{workflow_id}/cancel",
        ui=state.chorus.runs.ui_url(workflow_id),
    )


def _steps(body: RunCreate) -> tuple[str, list[Step], str | None, int]:
    """The pattern, steps, aggregator and min_successes of a run request."""
    if (body.agents is None) == (body.plan is None):
        raise ChorusInputError("agents/plan: give exactly one of 'agents' and 'plan'")
    if body.plan is not None:
        plan = plan_from_data(body.plan, "plan")
        return plan.pattern, plan.steps, plan.aggregator, plan.min_successes
    assert body.agents is not None
    steps: list[Step] = []
    for i, item in enumerate(body.agents):
        if "," in item:
            raise ChorusInputError(f"agents[{i}]: {item!r} holds a comma; give one step per item")
        try:
            steps.extend(parse_agents(item, body.pattern, body.aggregator))
        except ChorusInputError as exc:
            raise ChorusInputError(str(exc).replace("--agents", f"agents[{i}]", 1)) from None
    return body.pattern, steps, body.aggregator, body.min_successes


def _idempotent_id(caller: Caller, key: str, pattern: str) -> str:
    """The workflow id an ``Idempotency-Key`` maps to, per API key (two keys never collide)."""
    digest = hashlib.sha256(f"{caller.key_id or '-'}\x00{key}".encode()).hexdigest()[:32]
    return f"{'seq' if pattern == 'sequential' else 'par'}-idem-{digest}"


def _request_digest(body: RunCreate) -> str:
    return hashlib.sha256(
        # ``stream`` only says how the run is watched, not what it does.
        json.dumps(body.model_dump(mode="json", exclude={"stream"}), sort_keys=True).encode()
    ).hexdigest()


def build_app(settings: Settings | None = None, chorus: ChorusClient | None = None) -> FastAPI:
    """Build the HTTP API's ASGI app.

    Args:
        settings: Defaults to :func:`chorus.config.settings.get_settings`.
        chorus: A connected client to use (tests); ``None`` connects one at start-up
            (``TEMPORAL_ADDRESS``, ``DATABASE_URL``) and closes it at shutdown.

    Returns:
        The FastAPI app; serve it with uvicorn (``chorus serve`` does).

    Raises:
        RuntimeError: At start-up, when Temporal cannot be reached.
    """
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = chorus or await ChorusClient.connect(settings)
        app.state.chorus_api = ApiState(settings=settings, chorus=client)
        try:
            yield
        finally:
            if chorus is None:
                await client.close()

    app = FastAPI(
        title="Chorus API",
        version=API_VERSION,
        summary="Durable multi-agent LLM orchestration on Temporal",
        description=(
            "Start and follow multi-agent runs, decide approval gates and edit drafts. "
            "Authenticate with `Authorization: Bearer <key>` (create one with "
            "`chorus keys create`). Errors are `application/problem+json`."
        ),
        lifespan=lifespan,
    )
    if settings.api_cors_origins.strip():
        app.add_middleware(
            CORSMiddleware,
            allow_origins=[
                o.strip().rstrip("/") for o in settings.api_cors_origins.split(",") if o.strip()
            ],
            allow_methods=["GET", "POST"],
            allow_headers=[
                "Authorization",
                "X-API-Key",
                "Content-Type",
                "Idempotency-Key",
                "Last-Event-ID",
                "X-Request-ID",
            ],
            expose_headers=["X-Request-ID", "Retry-After", "Location"],
        )
    app.add_middleware(ApiMiddleware, max_body_bytes=settings.api_max_body_bytes)
    problems.install(app)
    _add_health(app)
    _add_runs(app)
    _add_documents(app)
    _add_approvals(app)
    _add_catalog(app)
    _add_drafts(app)
    from starter.api import events, pages

    events.install(app)
    pages.install(app)
    return app


# -- health ---------------------------------------------------------------------------------


def _add_health(app: FastAPI) -> None:
    @app.get("/healthz", response_model=Health, tags=["health"])
    async def healthz() -> Health:
        """The process is up (no dependency is checked)."""
        return Health(status="ok", checks={})

    @app.get("/readyz", response_model=Health, tags=["health"], responses={503: {}})
    async def readyz(request: Request, response: Response) -> Health:
        """Temporal and PostgreSQL answer (the gRPC health check, and a ping)."""
        state = _state(request)
        checks: dict[str, str] = {}
        try:
            await state.chorus.client.service_client.check_health(timeout=timedelta(seconds=5))
            checks["temporal"] = "ok"
        except Exception as exc:  # reported, not raised: this is the health check
            checks["temporal"] = f"unavailable: {exc}"
        try:
            await health_checks.ping(await state.chorus.pool(), timeout_s=5)
            checks["postgresql"] = "ok"
        except Exception as exc:
            checks["postgresql"] = f"unavailable: {exc}"
        ok = all(v == "ok" for v in checks.values())
        if not ok:
            response.status_code = 503
        return Health(status="ok" if ok else "unavailable", checks=checks)


# -- runs -----------------------------------------------------------------------------------

RunId = Annotated[str, Path(max_length=200, description="The run's workflow id.")]


def _check_id(field: str, value: str) -> str:
    try:
        validation.check_identifier(field, value)
    except ValueError as exc:
        raise ChorusInputError(str(exc)) from None
    return value


def _add_runs(app: FastAPI) -> None:
    @app.post(
        "/v1/runs",
        status_code=202,
        response_model=RunCreated,
        tags=["runs"],
        responses={409: {}, 422: {}},
    )
    async def create_run(
        request: Request,
        response: Response,
        body: RunCreate,
        caller: Annotated[Caller, Depends(requires("runs:write"))],
        idempotency_key: Annotated[
            str | None,
            Header(
                description="Retrying a POST with the same key never starts a second run: "
                "the key maps to the workflow id (per API key)."
            ),
        ] = None,
    ) -> RunCreated:
        """Start a run; returns at once with its id and links (follow ``links.events``)."""
        state = _state(request)
        pattern, steps, aggregator, min_successes = _steps(body)
        document = body.document
        if body.document_id is not None:
            if body.document:
                raise ChorusInputError("document/document_id: give one of them, not both")
            document = await _stored_document(state, body.document_id)
        workflow_id = body.workflow_id
        digest = None
        if idempotency_key is not None:
            if not IDEMPOTENCY_KEY.match(idempotency_key):
                raise ChorusInputError(
                    "Idempotency-Key: must be 1-200 printable ASCII characters without spaces"
                )
            if workflow_id is not None:
                raise ChorusInputError(
                    "workflow_id/Idempotency-Key: give one of them; the key chooses the id"
                )
            workflow_id = _idempotent_id(caller, idempotency_key, pattern)
            digest = _request_digest(body)
            found = await _existing_run(request, state, workflow_id, digest)
            if found is not None:
                response.status_code = 202
                response.headers["Location"] = found.links.self
                return found
        kwargs: dict[str, Any] = {
            "document": document,
            "document_name": body.document_name,
            "workflow_id": workflow_id,
            "callback_url": body.callback_url,
            "api_key": caller.key_name,
            "stream": body.stream,
        }
        if digest is not None:
            kwargs["idempotency_digest"] = digest
        if pattern == "sequential":
            handle = await state.chorus.start_sequential(body.task, steps, **kwargs)
        else:
            handle = await state.chorus.start_parallel(
                body.task, steps, aggregator=aggregator, min_successes=min_successes, **kwargs
            )
        if digest is not None:
            # Two identical POSTs at once: both "start" the same workflow (conflict policy
            # USE_EXISTING); a different body under the same key must still be refused.
            found = await _existing_run(request, state, handle.workflow_id, digest)
            if found is not None and found.run_id != handle.run_id:
                return found
        links = _links(request, handle.workflow_id, state)
        response.headers["Location"] = links.self
        log.info("api.run_started", workflow_id=handle.workflow_id, api_key=caller.key_name)
        return RunCreated(workflow_id=handle.workflow_id, run_id=handle.run_id, links=links)

    @app.get("/v1/runs", response_model=RunPage, tags=["runs"])
    async def list_runs(
        request: Request,
        _: Annotated[Caller, Depends(requires("runs:read"))],
        status: Annotated[
            Literal["running", "completed", "failed", "canceled", "terminated", "timed_out"] | None,
            Query(description="Temporal execution status."),
        ] = None,
        pattern: Annotated[Literal["sequential", "parallel"] | None, Query()] = None,
        agent: Annotated[str | None, Query(description="Runs that use this agent.")] = None,
        started_after: Annotated[datetime | None, Query()] = None,
        top_level: Annotated[bool, Query(description="Hide child workflows.")] = True,
        page_size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 20,
        page_token: Annotated[str | None, Query(max_length=4096)] = None,
    ) -> RunPage:
        """Runs, newest first, filtered on their search attributes; paginated."""
        state = _state(request)
        clauses: list[str] = []
        if status is not None:
            clauses.append(f"ExecutionStatus = '{status.title().replace('_o', 'O')}'")
        if pattern is not None:
            clauses.append(f"ChorusPattern = '{pattern}'")
        if agent is not None:
            if not _FILTER_VALUE.match(agent):
                raise ChorusInputError("agent: 1-100 of letters, digits and . _ : -")
            clauses.append(f"ChorusAgents = '{agent}'")
        if started_after is not None:
            when = started_after if started_after.tzinfo else started_after.replace(tzinfo=UTC)
            clauses.append(f"StartTime > '{when.astimezone(UTC).isoformat()}'")
        if top_level:
            clauses.append("ParentWorkflowId IS NULL")
        rows, token = await state.chorus.runs.list_page(
            " AND ".join(clauses) or None, page_size=page_size, page_token=page_token
        )
        return RunPage(
            runs=[
                RunRow(
                    workflow_id=r.workflow_id,
                    workflow_type=r.workflow_type,
                    status=r.status,
                    started_at=r.started_at,
                    closed_at=r.closed_at,
                    parent_id=r.parent_id,
                )
                for r in rows
            ],
            next_page_token=token,
        )

    @app.get("/v1/runs/{workflow_id}", response_model=RunView, tags=["runs"])
    async def get_run(
        request: Request,
        workflow_id: RunId,
        _: Annotated[Caller, Depends(requires("runs:read"))],
        progress: Annotated[
            bool,
            Query(
                description="Also the progress of a closed run (Temporal replays its history "
                "on a worker to answer; a completed run's result already lists its steps)."
            ),
        ] = False,
    ) -> RunView:
        """The run's status and live progress; its result once it has completed."""
        state = _state(request)
        _check_id("workflow_id", workflow_id)
        status = await _status(state, workflow_id, progress)
        result: RunResult | None = None
        if status.status == "COMPLETED":
            result = await state.chorus.runs.result(workflow_id)
        return RunView(
            workflow_id=status.workflow_id,
            run_id=status.run_id,
            workflow_type=status.workflow_type,
            status=status.status,
            started_at=status.started_at,
            closed_at=status.closed_at,
            summary=status.summary,
            error=status.error,
            error_type=status.error_type,
            progress=status.progress,
            result=result,
            api_key=await _run_key(state, workflow_id),
            links=_links(request, workflow_id, state),
        )

    @app.post("/v1/runs/{workflow_id}/cancel", status_code=202, tags=["runs"])
    async def cancel_run(
        request: Request,
        workflow_id: RunId,
        _: Annotated[Caller, Depends(requires("runs:write"))],
    ) -> dict[str, str]:
        """Ask the run to stop; in-flight LLM calls are cancelled and it ends CANCELED."""
        _check_id("workflow_id", workflow_id)
        await _state(request).chorus.runs.cancel(workflow_id)
        return {"workflow_id": workflow_id, "status": "cancel_requested"}

    @app.get("/v1/runs/{workflow_id}/transcript", tags=["runs"])
    async def transcript(
        request: Request,
        workflow_id: RunId,
        _: Annotated[Caller, Depends(requires("runs:read"))],
    ) -> list[dict[str, Any]]:
        """Every agent call of the run from PostgreSQL: prompts, completion, tokens, cost."""
        _check_id("workflow_id", workflow_id)
        rows = await _state(request).chorus.runs.transcript(workflow_id)
        plain: list[dict[str, Any]] = jsonable_encoder(rows)
        return plain


async def _status(state: ApiState, workflow_id: str, query_closed: bool = False) -> Any:
    try:
        return await state.chorus.runs.status(workflow_id, query_closed=query_closed)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise LookupError(f"no run {workflow_id!r}") from None
        raise


async def _run_key(state: ApiState, workflow_id: str) -> str | None:
    return await db.run_api_key(await state.chorus.pool(), workflow_id)


async def _existing_run(
    request: Request, state: ApiState, workflow_id: str, digest: str
) -> RunCreated | None:
    """The run an ``Idempotency-Key`` already started, or ``None``.

    Raises:
        ApiProblem: 422 ``IdempotencyKeyReused`` when that run was started by another request.
    """
    handle = state.chorus.client.get_workflow_handle(workflow_id)
    try:
        desc = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    memo = await desc.memo()
    if memo.get(REQUEST_DIGEST_MEMO) != digest:
        raise ApiProblem(
            422,
            "IdempotencyKeyReused",
            "Idempotency-Key: already used for a different request; use a new key for a new run",
        )
    return RunCreated(
        workflow_id=workflow_id,
        run_id=desc.run_id,
        replayed=True,
        links=_links(request, workflow_id, state),
    )


# -- documents ------------------------------------------------------------------------------


async def _stored_document(state: ApiState, document_id: str) -> str:
    try:
        return await db.stored_text(await state.chorus.pool(), document_id)
    except LookupError as exc:
        raise ChorusInputError(f"document_id: {exc}") from None


def _add_documents(app: FastAPI) -> None:
    @app.post("/v1/documents", status_code=201, response_model=DocumentCreated, tags=["runs"])
    async def create_document(
        request: Request,
        _: Annotated[Caller, Depends(requires("runs:write"))],
        text: Annotated[str, Body(media_type="text/plain")],
    ) -> DocumentCreated:
        """Store a document (the request body, UTF-8 text) to pass as a run's ``document_id``."""
        state = _state(request)
        limit = state.settings.max_document_bytes
        size = len(text.encode("utf-8"))
        if size > limit:
            raise ChorusInputError(
                f"document: {size} bytes, the limit is {limit} bytes (CHORUS_MAX_DOCUMENT_BYTES)"
            )
        if "\x00" in text:
            raise ChorusInputError("document: contains NUL characters; is it a binary file?")
        ref = await db.put_text(await state.chorus.pool(), validation.strip_controls(text))
        return DocumentCreated(
            document_id=ref.blob_id, size_bytes=ref.size_bytes, sha256=ref.sha256
        )


# -- approvals, costs, agents ---------------------------------------------------------------


def _add_approvals(app: FastAPI) -> None:
    @app.get("/v1/approvals", response_model=list[GateRecord], tags=["approvals"])
    async def pending(
        request: Request,
        _: Annotated[Caller, Depends(requires("runs:read"))],
        user: Annotated[str | None, Query(max_length=100)] = None,
    ) -> list[GateRecord]:
        """Gates waiting for a decision (only those ``user`` may decide, when given)."""
        return await _state(request).chorus.pending_approvals(user=user)

    @app.post("/v1/runs/{workflow_id}/gates/{gate}", response_model=GateRecord, tags=["approvals"])
    async def decide(
        request: Request,
        workflow_id: RunId,
        gate: Annotated[str, Path(max_length=100)],
        body: GateDecisionBody,
        _: Annotated[Caller, Depends(requires("approvals:decide"))],
    ) -> GateRecord:
        """Approve, reject or edit a pending gate (``user`` must be one of its approvers)."""
        _check_id("workflow_id", workflow_id)
        return await _state(request).chorus.decide(
            workflow_id, gate, body.decision, body.user, body.comment, body.content
        )


def _add_catalog(app: FastAPI) -> None:
    @app.get("/v1/costs", tags=["costs"])
    async def costs(
        request: Request,
        _: Annotated[Caller, Depends(requires("costs:read"))],
        since: Annotated[datetime | None, Query()] = None,
        by: Annotated[Literal["agent", "provider", "model", "day"], Query()] = "agent",
    ) -> Any:
        """Calls, tokens and USD from the cost ledger, grouped.

        Grouped ``by`` agent, provider, model or UTC day; since ``since`` (all time if unset).
        """
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        report = await _state(request).chorus.costs(by=by, since=since)
        return jsonable_encoder(report)

    @app.get("/v1/agents", tags=["agents"])
    async def agents(
        request: Request, _: Annotated[Caller, Depends(requires("agents:read"))]
    ) -> dict[str, Any]:
        """The current agent configurations (name → provider chain, model, prompt, limits)."""
        current = await _state(request).chorus.agents()
        return {name: spec.model_dump(mode="json") for name, spec in current.items()}


# -- drafts ---------------------------------------------------------------------------------

DraftId = Annotated[str, Path(max_length=200, description="The draft's workflow id.")]


def _add_drafts(app: FastAPI) -> None:
    @app.post("/v1/drafts", status_code=201, response_model=DraftCreated, tags=["drafts"])
    async def create_draft(
        request: Request,
        response: Response,
        body: DraftCreate,
        _: Annotated[Caller, Depends(requires("drafts:edit"))],
    ) -> DraftCreated:
        """Start a draft (a long-lived workflow; every version is saved in PostgreSQL)."""
        draft_id = await _state(request).chorus.start_draft(
            body.title,
            body.owner,
            content=body.content,
            brief=body.brief,
            collaborators=body.collaborators,
            draft_id=body.draft_id,
        )
        base = str(request.base_url).rstrip("/")
        response.headers["Location"] = f"{base}/v1/drafts/{draft_id}"
        return DraftCreated(
            draft_id=draft_id,
            links={
                "self": f"{base}/v1/drafts/{draft_id}",
                "events": f"{base}/v1/drafts/{draft_id}/events",
                "page": f"{base}/drafts/{draft_id}",
            },
        )

    @app.get("/v1/drafts/{draft_id}", response_model=DraftView, tags=["drafts"])
    async def show_draft(
        request: Request,
        draft_id: DraftId,
        user: Annotated[str, Query(max_length=100, description="The reader (a collaborator).")],
        _: Annotated[Caller, Depends(requires("drafts:read"))],
    ) -> DraftView:
        """The draft's current text, version, status and collaborators."""
        _check_id("draft_id", draft_id)
        return await _state(request).chorus.draft(draft_id, user=user)

    @app.get("/v1/drafts/{draft_id}/revisions", tags=["drafts"])
    async def draft_revisions(
        request: Request,
        draft_id: DraftId,
        user: Annotated[str, Query(max_length=100)],
        _: Annotated[Caller, Depends(requires("drafts:read"))],
        after_version: Annotated[int, Query(ge=0)] = 0,
    ) -> list[dict[str, Any]]:
        """Saved revisions after ``after_version``: who changed what (with diffs), oldest first."""
        _check_id("draft_id", draft_id)
        drafts = _state(request).chorus.drafts
        await drafts.check_reader(draft_id, user)
        rows = await drafts.revisions(draft_id, after_version)
        plain: list[dict[str, Any]] = jsonable_encoder(rows)
        return plain

    @app.get("/v1/drafts/{draft_id}/comments", tags=["drafts"])
    async def draft_comments(
        request: Request,
        draft_id: DraftId,
        user: Annotated[str, Query(max_length=100)],
        _: Annotated[Caller, Depends(requires("drafts:read"))],
    ) -> list[dict[str, Any]]:
        """The draft's comments as last saved (open and resolved)."""
        _check_id("draft_id", draft_id)
        drafts = _state(request).chorus.drafts
        await drafts.check_reader(draft_id, user)
        row = await drafts.saved(draft_id)
        comments = row.get("comments") or []
        if isinstance(comments, str):
            comments = json.loads(comments)
        return list(comments)

    async def update(request: Request, draft_id: str, name: str, req: Any) -> EditResult:
        _check_id("draft_id", draft_id)
        return await _state(request).chorus.draft_update(draft_id, name, req)

    @app.post("/v1/drafts/{draft_id}/edits", response_model=EditResult, tags=["drafts"])
    async def edit_draft(
        request: Request,
        draft_id: DraftId,
        body: DraftEdit,
        _: Annotated[Caller, Depends(requires("drafts:edit"))],
    ) -> EditResult:
        """Edit the draft (the ``edit`` update): a range replacement or the whole text."""
        req = EditRequest(**body.model_dump())
        return await update(request, draft_id, "edit", req)

    @app.post("/v1/drafts/{draft_id}/revisions", response_model=EditResult, tags=["drafts"])
    async def revise_draft(
        request: Request,
        draft_id: DraftId,
        body: DraftRevise,
        _: Annotated[Caller, Depends(requires("drafts:edit"))],
    ) -> EditResult:
        """Ask an agent to revise the draft (the ``request_revision`` update)."""
        return await update(
            request, draft_id, "request_revision", RevisionRequest(**body.model_dump())
        )

    for action in ("submit", "approve", "publish", "archive"):
        _add_lifecycle(app, action, update)

    @app.post("/v1/drafts/{draft_id}/comments", status_code=202, tags=["drafts"])
    async def comment_draft(
        request: Request,
        draft_id: DraftId,
        body: DraftComment,
        _: Annotated[Caller, Depends(requires("drafts:edit"))],
    ) -> dict[str, str]:
        """Comment on the draft (the ``comment`` signal: accepted, applied in order)."""
        _check_id("draft_id", draft_id)
        await _state(request).chorus.draft_signal(
            draft_id, "comment", CommentRequest(**body.model_dump())
        )
        return {"draft_id": draft_id, "status": "accepted"}

    @app.post("/v1/drafts/{draft_id}/collaborators", status_code=202, tags=["drafts"])
    async def add_collaborator(
        request: Request,
        draft_id: DraftId,
        body: DraftCollaborator,
        _: Annotated[Caller, Depends(requires("drafts:edit"))],
    ) -> dict[str, str]:
        """Add a collaborator or change a role (the ``add_collaborator`` signal)."""
        _check_id("draft_id", draft_id)
        await _state(request).chorus.draft_signal(
            draft_id, "add_collaborator", CollaboratorRequest(**body.model_dump())
        )
        return {"draft_id": draft_id, "status": "accepted"}


def _add_lifecycle(app: FastAPI, action: str, update: Any) -> None:
    async def act(
        request: Request,
        draft_id: DraftId,
        body: DraftAct,
        _: Annotated[Caller, Depends(requires("drafts:edit"))],
    ) -> EditResult:
        result: EditResult = await update(request, draft_id, action, UserRequest(user=body.user))
        return result

    act.__doc__ = f"The ``{action}`` update: move the draft along its review lifecycle."
    app.post(
        f"/v1/drafts/{{draft_id}}/{action}",
        response_model=EditResult,
        tags=["drafts"],
        name=f"{action}_draft",
    )(act)


__all__ = ["ApiState", "build_app"]
