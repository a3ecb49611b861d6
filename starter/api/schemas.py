"""Request and response bodies of the HTTP API.

The payload types a run or a draft carries are the SDK's own pydantic models
(:class:`~chorus.contracts.models.RunProgress`, :class:`~chorus.contracts.models.RunResult`,
:class:`~chorus.contracts.drafting.DraftView`, ...), so the OpenAPI document describes exactly
what the SDK and the workflows exchange. The request bodies here refuse unknown fields (a
misspelt ``min_sucesses`` is a 422 naming it, not a silently ignored option); responses may
gain fields in later versions, so clients should ignore fields they do not know.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from chorus.contracts.control import GateRecord
from chorus.contracts.drafting import Role, TextEdit
from chorus.contracts.limits import MAX_CALLBACK_URL_CHARS
from chorus.contracts.models import RunProgress, RunResult


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunCreate(_Request):
    """``POST /v1/runs``: start a run (the CLI's ``chorus run``).

    Give the steps either as ``agents`` (the CLI's ``--agents`` syntax, one item per step:
    ``"analyst"``, ``"a>b"`` a sequential group, ``"a|b"`` a parallel group) or as ``plan``
    (a plan file's content as JSON: ``pattern``, ``steps`` with any step kind, ``aggregator``,
    ``min_successes``).
    """

    task: str = Field(description="What the agents should do (<= CHORUS_MAX_TASK_CHARS).")
    pattern: Literal["sequential", "parallel"] = "sequential"
    agents: list[str] | None = Field(None, min_length=1, max_length=50)
    plan: dict[str, Any] | None = None
    document: str = Field("", description="Input document text (<= CHORUS_MAX_DOCUMENT_BYTES).")
    document_name: str | None = Field(None, max_length=200)
    document_id: str | None = Field(
        None, description="Instead of ``document``: the id ``POST /v1/documents`` returned."
    )
    aggregator: str | None = Field(
        "aggregator", description="Parallel runs: the merging agent; null joins the outputs."
    )
    min_successes: int = Field(1, ge=1)
    callback_url: str | None = Field(None, max_length=MAX_CALLBACK_URL_CHARS)
    workflow_id: str | None = Field(None, max_length=200)
    stream: bool = Field(
        True,
        description="Stream the LLM calls' text to GET /v1/runs/{id}/events from the first "
        "call on (false: only while a reader is connected; a call that started before appears "
        "whole when it ends). Streaming costs the worker ~15 ms of CPU per call.",
    )


class RunLinks(BaseModel):
    """Where to follow a run."""

    self: str
    events: str
    transcript: str
    cancel: str
    ui: str


class RunCreated(BaseModel):
    """``202`` answer of ``POST /v1/runs``.

    Attributes:
        replayed: ``true`` when an earlier request with the same ``Idempotency-Key`` started
            the run and this one only found it.
    """

    workflow_id: str
    run_id: str | None
    replayed: bool = False
    links: RunLinks


class RunView(BaseModel):
    """``GET /v1/runs/{id}``: the run's status, live progress and, when done, its result."""

    workflow_id: str
    run_id: str | None
    workflow_type: str
    status: str
    started_at: datetime | None
    closed_at: datetime | None
    summary: str | None
    error: str | None = None
    error_type: str | None = None
    progress: RunProgress | None = None
    result: RunResult | None = None
    api_key: str | None = Field(None, description="Name of the API key that started the run.")
    links: RunLinks


class RunRow(BaseModel):
    """One run of ``GET /v1/runs``."""

    workflow_id: str
    workflow_type: str
    status: str
    started_at: datetime | None
    closed_at: datetime | None
    parent_id: str | None


class RunPage(BaseModel):
    """A page of ``GET /v1/runs``; pass ``next_page_token`` as ``page_token`` for the next."""

    runs: list[RunRow]
    next_page_token: str | None


class DocumentCreated(BaseModel):
    """``POST /v1/documents``: a stored document to reference as ``document_id``."""

    document_id: str
    size_bytes: int
    sha256: str


class DraftCreate(_Request):
    """``POST /v1/drafts`` (the CLI's ``chorus draft new``)."""

    title: str = Field(max_length=200)
    owner: str = Field(max_length=100)
    content: str = ""
    brief: str | None = Field(None, max_length=10_000)
    collaborators: dict[str, Role] = Field(default_factory=dict)
    draft_id: str | None = Field(None, max_length=200)


class DraftCreated(BaseModel):
    """``201`` answer of ``POST /v1/drafts``."""

    draft_id: str
    links: dict[str, str]


class DraftEdit(_Request):
    """``POST /v1/drafts/{id}/edits``: replace a range (``edit``) or the whole text (``content``).

    ``base_version`` is the version the user edited; an edit on an older version is rebased
    when the ranges do not overlap, else refused with 409 ``EditConflict``.
    """

    user: str = Field(max_length=100)
    base_version: int = Field(ge=1)
    edit: TextEdit | None = None
    content: str | None = None
    summary: str = Field("", max_length=500)


class DraftComment(_Request):
    """``POST /v1/drafts/{id}/comments``: a comment on characters ``start``-``end``."""

    user: str = Field(max_length=100)
    text: str = Field(min_length=1, max_length=5000)
    start: int = Field(0, ge=0)
    end: int = Field(0, ge=0)


class DraftRevise(_Request):
    """``POST /v1/drafts/{id}/revisions``: ask an agent to revise the draft."""

    user: str = Field(max_length=100)
    base_version: int = Field(ge=1)
    instruction: str = Field(min_length=1, max_length=2000)
    agent: str = "writer"


class DraftAct(_Request):
    """``POST /v1/drafts/{id}/{submit|approve|publish|archive}``."""

    user: str = Field(max_length=100)


class DraftCollaborator(_Request):
    """``POST /v1/drafts/{id}/collaborators``: add someone or change their role."""

    user: str = Field(max_length=100)
    collaborator: str = Field(max_length=100)
    role: Role


class GateDecisionBody(_Request):
    """``POST /v1/runs/{id}/gates/{gate}``: decide a pending approval gate."""

    user: str = Field(max_length=100)
    decision: Literal["approve", "reject", "edit"]
    comment: str = Field("", max_length=5000)
    content: str | None = None


class PendingGate(BaseModel):
    """One row of ``GET /v1/approvals``."""

    workflow_id: str
    gate: GateRecord


class Health(BaseModel):
    """``GET /healthz`` and ``/readyz``."""

    status: Literal["ok", "unavailable"]
    checks: dict[str, str]
