"""Typed interfaces of Chorus's activities, for workflow code to call.

Workflows call ``workflow.execute_activity_method(LLMCalls.call_llm, request, ...)`` with these
interfaces instead of an activity name and a ``result_type=``, so mypy checks each argument and
result type end to end and go-to-definition lands here. Each is a ``typing.Protocol`` whose
methods carry the activity's Temporal name (:mod:`chorus.contracts.names`) and signature; the
worker registers the class that implements it (in ``activities/``) under the same names.
``tests/workflows/test_replay.py`` checks that every implementation's parameter and return
types match its interface, so the two cannot drift apart.

This is the interface pattern of Temporal's Java and Go SDKs (an activity interface the
workflow stub calls, an implementation the worker registers), in Python: the declarations
are pure, so the workflow sandbox passes them through with the rest of ``chorus.contracts``
and workflow code never imports provider SDKs or database drivers.
"""

from __future__ import annotations

from typing import Protocol

from temporalio import activity

from chorus.contracts.control import CloseGateInput, OpenGateInput
from chorus.contracts.drafting import SaveDraftInput
from chorus.contracts.models import (
    BudgetAlert,
    DeliverCallbackInput,
    FinishRunInput,
    LLMRequest,
    LLMResponse,
    ResolveAgentsInput,
    ResolveAgentsResult,
    StartRunInput,
)
from chorus.contracts.names import (
    CALL_LLM_ACTIVITY,
    CALL_TOOL_ACTIVITY,
    CLOSE_GATE_ACTIVITY,
    DELIVER_BUDGET_ALERT_ACTIVITY,
    DELIVER_CALLBACK_ACTIVITY,
    FINISH_RUN_ACTIVITY,
    OPEN_GATE_ACTIVITY,
    RESOLVE_AGENTS_ACTIVITY,
    RESOLVE_TOOLS_ACTIVITY,
    SAVE_DRAFT_ACTIVITY,
    START_RUN_ACTIVITY,
)
from chorus.contracts.tools import CallToolInput, ResolveToolsInput, ToolResult, ToolSpec


class LLMCalls(Protocol):
    """Implemented by ``activities.llm.LLMActivities``."""

    @activity.defn(name=CALL_LLM_ACTIVITY)
    async def call_llm(self, req: LLMRequest) -> LLMResponse:
        """One completion from one provider, recorded in PostgreSQL."""
        ...


class RunBookkeeping(Protocol):
    """Implemented by ``activities.runs.RunActivities``."""

    @activity.defn(name=START_RUN_ACTIVITY)
    async def start_run(self, input: StartRunInput) -> ResolveAgentsResult:
        """Pin a run's agent configurations and record its row."""
        ...

    @activity.defn(name=RESOLVE_AGENTS_ACTIVITY)
    async def resolve_agents(self, input: ResolveAgentsInput) -> ResolveAgentsResult:
        """The current configurations of the named agents."""
        ...

    @activity.defn(name=FINISH_RUN_ACTIVITY)
    async def finish_run(self, input: FinishRunInput) -> None:
        """Close a run's row; archive the transcript of a top-level run."""
        ...


class DraftSaving(Protocol):
    """Implemented by ``activities.drafts.DraftActivities``."""

    @activity.defn(name=SAVE_DRAFT_ACTIVITY)
    async def save_draft(self, input: SaveDraftInput) -> None:
        """Save a draft's text, revisions and comments."""
        ...


class Deliveries(Protocol):
    """Implemented by ``activities.callbacks.CallbackActivities``."""

    @activity.defn(name=DELIVER_CALLBACK_ACTIVITY)
    async def deliver_callback(self, input: DeliverCallbackInput) -> None:
        """POST a run's result to its callback URL, signed."""
        ...

    @activity.defn(name=DELIVER_BUDGET_ALERT_ACTIVITY)
    async def deliver_budget_alert(self, alert: BudgetAlert) -> None:
        """POST a budget alert to ``CHORUS_BUDGET_ALERT_WEBHOOK_URL``, signed."""
        ...


class ToolCalls(Protocol):
    """Implemented by ``activities.tool_calls.ToolActivities``."""

    @activity.defn(name=RESOLVE_TOOLS_ACTIVITY)
    async def resolve_tools(self, input: ResolveToolsInput) -> list[ToolSpec]:
        """The specs of an agent's tools (registry and MCP servers), pinned in the history."""
        ...

    @activity.defn(name=CALL_TOOL_ACTIVITY)
    async def call_tool(self, input: CallToolInput) -> ToolResult:
        """Run one tool call, recorded in PostgreSQL."""
        ...


class Approvals(Protocol):
    """Implemented by ``activities.approvals.ApprovalActivities``."""

    @activity.defn(name=OPEN_GATE_ACTIVITY)
    async def open_gate(self, input: OpenGateInput) -> list[str]:
        """Record a gate that starts waiting; return its approvers with roles expanded."""
        ...

    @activity.defn(name=CLOSE_GATE_ACTIVITY)
    async def close_gate(self, input: CloseGateInput) -> None:
        """Record a gate's outcome: the decision, its author and comment, or the time-out."""
        ...


INTERFACES: tuple[type, ...] = (
    LLMCalls,
    RunBookkeeping,
    DraftSaving,
    Deliveries,
    ToolCalls,
    Approvals,
)
"""Every activity interface (the test matches each method against its implementation)."""
