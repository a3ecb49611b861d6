"""Control flow and people in the loop: predicates, gates, decisions and what a control step did.

Plan kinds that decide at run time what runs next (issue 15). The step models that contain
other steps (``loop``, ``router``) live in :mod:`chorus.contracts.models` next to the ``Step``
union; the ones that name agents only (``handoff``, ``group_chat``) and the ``gate`` live here
with the models their results and decisions use. Pure pydantic models: the workflow sandbox
passes this module through.

Limits (every kind has one that ends it, see :data:`MAX_LOOP_ITERATIONS` and below) are
checked when a plan is validated, so a run never starts with an unbounded loop.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any, Final, Literal

from pydantic import Field, field_validator, model_validator

from chorus.contracts.wire import EntryInput, WireModel

AGENT_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"
"""Same as :data:`chorus.contracts.models.AGENT_NAME_PATTERN` (repeated: no import cycle)."""
GATE_NAME_PATTERN: Final = r"^[a-z][a-z0-9_-]{0,63}$"
"""Gate and route names: what ``chorus approvals approve RUN --gate NAME`` and routers use."""
USER_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,99}$"
"""A user name as approvers and decisions spell it (e.g. ``alice``, ``alice@example.com``)."""
APPROVER_PATTERN: Final = r"^(role:[a-z][a-z0-9_-]{0,63}|[A-Za-z0-9][A-Za-z0-9_.@+-]{0,99})$"
"""An approver entry: a user name, or ``role:<role>`` (members from ``CHORUS_APPROVER_ROLES``)."""

MAX_LOOP_ITERATIONS: Final = 50
"""Most iterations a ``loop`` may be allowed (``max_iterations`` <= this)."""
MAX_ROUTES_TAKEN: Final = 20
"""Most routes one ``router`` step may run (``max_routes`` <= this)."""
MAX_HANDOFF_HOPS: Final = 20
"""Most hand-offs one ``handoff`` step may make (``max_hops`` <= this)."""
MAX_CHAT_TURNS: Final = 50
"""Most speaker turns one ``group_chat`` may have (``max_turns`` <= this)."""
MAX_CHAT_PARTICIPANTS: Final = 12
"""Most participants in one ``group_chat``."""
MAX_GATE_WAIT_S: Final = 365 * 24 * 3600.0
"""Longest a gate may wait for a decision (``timeout_s``, seconds): a year. Waiting costs
nothing but history (one timer)."""
MAX_GATE_CONTENT_CHARS: Final = 250_000
"""Longest replacement text of an ``edit`` decision (characters): an update's payload must
stay under Temporal's 2 MB blob limit (as :data:`chorus.contracts.limits.MAX_EDIT_CHARS`)."""
MAX_COMMENT_CHARS: Final = 4_000
"""Longest comment on a decision (characters)."""
GATE_PREVIEW_CHARS: Final = 2_000
"""Characters of the text under review kept in the workflow (query, search, callback); the
whole text is recorded in PostgreSQL (``gates.subject``)."""
CONTINUE_AS_NEW_EVERY: Final = 10
"""Default rounds (iterations, routes, hops or turns) a control workflow runs before it
continues as new, carrying its state (also earlier when Temporal suggests it)."""

DECIDE_UPDATE: Final = "decide"
"""Temporal update name of a gate decision (``temporal workflow update execute --name decide``)."""
GATES_QUERY: Final = "gates"
"""Temporal query name: the gates of a workflow, pending and decided."""

Decision = Literal["approve", "reject", "edit"]
GateOutcomeKind = Literal["approved", "rejected", "edited", "timed_out"]


class Until(WireModel):
    """When a ``loop`` or ``group_chat`` ends: a predicate on one step's output.

    Exactly one of ``field`` (with ``equals`` or ``one_of``) or ``phrase``.

    Attributes:
        agent: Whose output is tested (default: the last step of the iteration, or the last
            speaker of a chat turn).
        field: Dotted path into the output parsed as a JSON object, e.g. ``verdict`` or
            ``review.verdict``; give the agent an ``output_schema`` so it always answers JSON.
        equals: The value that ends it (strings compare without case and surrounding spaces).
        one_of: Values any of which ends it.
        phrase: Ends it when the output contains this text (case-insensitive).
    """

    agent: str | None = Field(None, pattern=AGENT_NAME_PATTERN)
    field: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
    equals: str | int | float | bool | None = None
    one_of: list[str | int | float | bool] | None = Field(None, min_length=1, max_length=20)
    phrase: str | None = Field(None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _one_rule(self) -> Until:
        if (self.field is None) == (self.phrase is None):
            raise ValueError("until: give either 'field' (with 'equals' or 'one_of') or 'phrase'")
        if self.field is not None and self.equals is None and self.one_of is None:
            raise ValueError(f"until.field {self.field!r} needs 'equals' or 'one_of'")
        return self

    def holds(self, output: str) -> bool:
        """Whether ``output`` (an agent's answer) satisfies this predicate."""
        if self.phrase is not None:
            return self.phrase.casefold() in output.casefold()
        try:
            value: Any = json.loads(output)
        except ValueError:
            return False
        for part in (self.field or "").split("."):
            if not isinstance(value, dict) or part not in value:
                return False
            value = value[part]
        wanted = [self.equals] if self.one_of is None else self.one_of
        return any(_same(value, w) for w in wanted)

    def describe(self) -> str:
        """The predicate in words, e.g. ``critic.verdict == 'ready'``."""
        who = f"{self.agent}." if self.agent else ""
        if self.phrase is not None:
            return f"{self.agent or 'output'} contains {self.phrase!r}"
        if self.one_of is not None:
            return f"{who}{self.field} in {self.one_of!r}"
        return f"{who}{self.field} == {self.equals!r}"


def _same(value: Any, wanted: Any) -> bool:
    if isinstance(value, str) and isinstance(wanted, str):
        return value.strip().casefold() == wanted.strip().casefold()
    if isinstance(value, bool) or isinstance(wanted, bool):
        return value is wanted
    return bool(value == wanted)


class HandoffStep(WireModel):
    """Agents hand the conversation to one another until one answers.

    Each agent answers ``{"reply": ..., "handoff_to": <one of its allowed agents, or "none">}``
    (the workflow sets that output schema); the next agent sees every earlier reply.

    Attributes:
        start: The agent that takes the conversation first.
        agents: Every agent in the hand-off and whom it may hand to (``[]``: it must answer).
        max_hops: Hand-offs allowed; one more fails the step with ``HandoffLimit``.
    """

    kind: Literal["handoff"] = "handoff"
    name: str | None = Field(None, max_length=64)
    start: str = Field(pattern=AGENT_NAME_PATTERN)
    agents: dict[str, list[str]] = Field(min_length=1, max_length=MAX_CHAT_PARTICIPANTS)
    max_hops: int = Field(4, ge=0, le=MAX_HANDOFF_HOPS)

    @model_validator(mode="after")
    def _closed(self) -> HandoffStep:
        if self.start not in self.agents:
            raise ValueError(f"handoff: start agent {self.start!r} is not in 'agents'")
        for name, targets in self.agents.items():
            for target in targets:
                if target not in self.agents:
                    raise ValueError(
                        f"handoff: {name} may hand to {target!r}, which is not in 'agents' "
                        f"(list every agent of the hand-off as a key)"
                    )
        return self


class GroupChatStep(WireModel):
    """A manager agent picks who speaks next among the participants, turn by turn.

    The manager answers ``{"route": <participant or "done">, "reason": ...}`` (the workflow
    sets that output schema); each speaker sees the whole conversation so far.

    Attributes:
        manager: The agent that picks the next speaker.
        participants: The agents that may speak (2-12).
        until: Ends the chat when a speaker's message satisfies it (e.g. a phrase).
        max_turns: Speaker turns before the chat ends (``ended_by: max_turns``).
        max_cost_usd: Ends the chat once its calls cost this much (USD).
    """

    kind: Literal["group_chat"] = "group_chat"
    name: str | None = Field(None, max_length=64)
    manager: str = Field(pattern=AGENT_NAME_PATTERN)
    participants: list[str] = Field(min_length=2, max_length=MAX_CHAT_PARTICIPANTS)
    until: Until | None = None
    max_turns: int = Field(6, ge=1, le=MAX_CHAT_TURNS)
    max_cost_usd: float | None = Field(None, gt=0, le=10_000)

    @field_validator("participants")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.match(AGENT_NAME_PATTERN, name):
                raise ValueError(f"participants: {name!r} is not an agent name")
        if len(set(value)) != len(value):
            raise ValueError("participants: each agent once")
        return value

    @model_validator(mode="after")
    def _manager_apart(self) -> GroupChatStep:
        if self.manager in self.participants:
            raise ValueError(
                f"participants: the manager {self.manager!r} picks the speakers and cannot be one"
            )
        return self


class GateStep(WireModel):
    """Stop and wait for people to approve, reject or edit the text that flows on.

    Attributes:
        name: The gate's name, as decisions name it (``--gate NAME``); unique in its plan.
        question: What the approvers are asked.
        approvers: Users (``alice``) and roles (``role:editor``) who may decide; empty:
            anyone.
        timeout_s: Seconds to wait before ``on_timeout`` applies; ``None``: no limit.
        on_timeout: ``approve`` (go on), ``reject`` (the run fails as rejected) or ``fail``
            (the run fails with ``GateTimedOut``).
        remind_after_s: Announce the pending gate again on the run's callback after this
            many seconds (once).
    """

    kind: Literal["gate"] = "gate"
    name: str = Field(pattern=GATE_NAME_PATTERN)
    question: str = Field("Approve this?", min_length=1, max_length=500)
    approvers: list[str] = Field(default_factory=list, max_length=100)
    timeout_s: float | None = Field(None, ge=1, le=MAX_GATE_WAIT_S)
    on_timeout: Literal["approve", "reject", "fail"] = "fail"
    remind_after_s: float | None = Field(None, ge=1, le=MAX_GATE_WAIT_S)

    @field_validator("approvers")
    @classmethod
    def _approvers(cls, value: list[str]) -> list[str]:
        for item in value:
            if not re.match(APPROVER_PATTERN, item):
                raise ValueError(f"approvers: {item!r} is neither a user name nor 'role:<role>'")
        return value


class GateDecision(EntryInput):
    """A person's decision on a pending gate: the ``decide`` update's argument.

    Attributes:
        gate: The gate's name.
        decision: ``approve``, ``reject`` or ``edit`` (replace the text that flows on).
        user: Who decides (must be an approver of the gate).
        comment: Why (recorded with the decision).
        content: The replacement text; required for ``edit``, refused otherwise.
    """

    gate: str = Field(pattern=GATE_NAME_PATTERN)
    decision: Decision
    user: str = Field(pattern=USER_PATTERN)
    comment: str = Field("", max_length=MAX_COMMENT_CHARS)
    content: str | None = Field(None, max_length=MAX_GATE_CONTENT_CHARS)

    @model_validator(mode="after")
    def _content(self) -> GateDecision:
        if self.decision == "edit" and not (self.content or "").strip():
            raise ValueError("content: an 'edit' decision needs the replacement text")
        if self.decision != "edit" and self.content is not None:
            raise ValueError(
                f"content: only an 'edit' decision carries text, not {self.decision!r}"
            )
        return self


class GateRecord(WireModel):
    """A gate as its workflow holds it: pending until ``outcome`` is set.

    Attributes:
        gate: The gate's name.
        key: Unique id of this opening (``<run id>:<n>``; a gate in a loop opens again).
        workflow_id: The workflow that waits (a child workflow for a gate inside a loop).
        question: What the approvers are asked.
        subject_name: The step whose output is under review (``None`` at the start of a plan).
        subject_preview: Its first ``GATE_PREVIEW_CHARS`` characters (all of it is in
            PostgreSQL).
        approvers: As the plan says (users and ``role:`` entries).
        allowed_users: ``approvers`` with roles expanded (from ``CHORUS_APPROVER_ROLES`` when
            the gate opened; pinned in the history by ``chorus.open_gate``).
        opened_at: When the gate opened (workflow time).
        deadline: When ``on_timeout`` applies, if ever.
        on_timeout: What happens at the deadline.
        outcome: ``approved``, ``rejected``, ``edited`` or ``timed_out``; ``None`` while pending.
        decided_by: The user who decided (``None`` for a time-out).
        comment: The decision's comment.
        decided_at: When it was decided.
    """

    gate: str
    key: str
    workflow_id: str
    question: str
    subject_name: str | None = None
    subject_preview: str = ""
    approvers: list[str] = Field(default_factory=list)
    allowed_users: list[str] = Field(default_factory=list)
    opened_at: datetime
    deadline: datetime | None = None
    on_timeout: Literal["approve", "reject", "fail"] = "fail"
    outcome: GateOutcomeKind | None = None
    decided_by: str | None = None
    comment: str = ""
    decided_at: datetime | None = None

    @property
    def pending(self) -> bool:
        """Whether nobody has decided yet."""
        return self.outcome is None

    def may_decide(self, user: str) -> bool:
        """Whether ``user`` may decide this gate (anyone when the plan lists no approver).

        A gate whose approvers are only roles with no members can be decided by nobody
        (until its time-out): an empty role never means "anyone".
        """
        return not self.approvers or user in self.allowed_users


class OpenGateInput(WireModel):
    """Input of ``chorus.open_gate``: record a gate that starts waiting.

    Attributes:
        record: The gate as the workflow holds it (``allowed_users`` still empty).
        root_workflow_id: The top-level run.
        subject: The whole text under review.
    """

    record: GateRecord
    root_workflow_id: str
    subject: str = ""


class CloseGateInput(WireModel):
    """Input of ``chorus.close_gate``: record a gate's outcome.

    Attributes:
        record: The gate with its outcome set.
        content: The replacement text of an ``edit`` decision.
    """

    record: GateRecord
    content: str | None = None


class RouteChoice(WireModel):
    """One decision of a router, a manager or a hand-off.

    Attributes:
        by: The agent that decided.
        choice: The route, speaker or agent chosen (``done``/``none`` to stop).
        reason: Why, in the deciding agent's words.
    """

    by: str
    choice: str
    reason: str = ""


class ControlOutcome(WireModel):
    """What a control step did: rounds, choices, and what ended it.

    Attributes:
        ended_by: ``predicate``, ``max_iterations``, ``max_cost`` (loop, chat), ``done``
            (router or manager said so), ``routed`` (a router with ``max_routes: 1`` ran its
            route), ``answered`` (hand-off), ``phrase``, ``max_turns``, or for a gate its
            outcome (``approved``, ``edited``, ``rejected``, ``timed_out``).
        rounds: Iterations (loop), routes taken (router), hops (handoff) or turns (chat).
        choices: Each decision, in order.
        gate: The gate's record (gate steps).
        continued_as_new: Times the control workflow continued as new.
    """

    ended_by: str
    rounds: int = 0
    choices: list[RouteChoice] = Field(default_factory=list)
    gate: GateRecord | None = None
    continued_as_new: int = 0


def router_schema(routes: list[str]) -> dict[str, Any]:
    """JSON Schema a router (or group-chat manager) answers with: a route name or ``done``."""
    return {
        "type": "object",
        "properties": {
            "route": {"type": "string", "enum": [*routes, "done"]},
            "reason": {"type": "string", "maxLength": 300},
        },
        "required": ["route", "reason"],
        "additionalProperties": False,
    }


def handoff_schema(targets: list[str]) -> dict[str, Any]:
    """JSON Schema a hand-off agent answers with: its reply, and whom to hand to or ``none``."""
    return {
        "type": "object",
        "properties": {
            "reply": {"type": "string"},
            "handoff_to": {"type": "string", "enum": [*targets, "none"]},
        },
        "required": ["reply", "handoff_to"],
        "additionalProperties": False,
    }
