"""Typed declarations of Chorus's activities, for workflow code to call.

Workflows call ``workflow.execute_activity(call_llm, request, ...)`` with these declarations
instead of an activity name and a ``result_type=``, so mypy checks each argument and result
type end to end and go-to-definition lands here. Each declaration carries the activity's
Temporal name (:mod:`chorus.contracts.names`) and its signature; its body only raises, because
the worker registers the implementation (the class methods in ``activities/``) under the same
name. ``tests/workflows/test_replay.py`` checks that every implementation's parameter and
return types match its declaration, so the two cannot drift apart.

This is the interface pattern of Temporal's Java and Go SDKs (an activity interface the
workflow stub calls, an implementation the worker registers), in Python: the declarations
are pure, so the workflow sandbox passes them through with the rest of ``chorus.contracts``
and workflow code never imports provider SDKs or database drivers.
"""

from __future__ import annotations

from typing import NoReturn

from temporalio import activity

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
    DELIVER_BUDGET_ALERT_ACTIVITY,
    DELIVER_CALLBACK_ACTIVITY,
    FINISH_RUN_ACTIVITY,
    RESOLVE_AGENTS_ACTIVITY,
    SAVE_DRAFT_ACTIVITY,
    START_RUN_ACTIVITY,
)


def _declaration(name: str) -> NoReturn:
    raise NotImplementedError(
        f"{name} is a declaration for workflow code; the worker registers its implementation"
    )


@activity.defn(name=CALL_LLM_ACTIVITY)
async def call_llm(request: LLMRequest) -> LLMResponse:
    """One completion from one provider: ``activities.llm.LLMActivities.call_llm``."""
    _declaration(CALL_LLM_ACTIVITY)


@activity.defn(name=START_RUN_ACTIVITY)
async def start_run(input: StartRunInput) -> ResolveAgentsResult:
    """Pin a run's agents and record its row: ``activities.runs.RunActivities.start_run``."""
    _declaration(START_RUN_ACTIVITY)


@activity.defn(name=RESOLVE_AGENTS_ACTIVITY)
async def resolve_agents(input: ResolveAgentsInput) -> ResolveAgentsResult:
    """Current agent configurations: ``activities.runs.RunActivities.resolve_agents``."""
    _declaration(RESOLVE_AGENTS_ACTIVITY)


@activity.defn(name=FINISH_RUN_ACTIVITY)
async def finish_run(input: FinishRunInput) -> None:
    """Close a run's row and archive it: ``activities.runs.RunActivities.finish_run``."""
    _declaration(FINISH_RUN_ACTIVITY)


@activity.defn(name=SAVE_DRAFT_ACTIVITY)
async def save_draft(input: SaveDraftInput) -> None:
    """Save a draft's text and revisions: ``activities.drafts.DraftActivities.save_draft``."""
    _declaration(SAVE_DRAFT_ACTIVITY)


@activity.defn(name=DELIVER_CALLBACK_ACTIVITY)
async def deliver_callback(input: DeliverCallbackInput) -> None:
    """POST a run's result to its callback URL: ``activities.callbacks``."""
    _declaration(DELIVER_CALLBACK_ACTIVITY)


@activity.defn(name=DELIVER_BUDGET_ALERT_ACTIVITY)
async def deliver_budget_alert(alert: BudgetAlert) -> None:
    """POST a budget alert to the alert webhook: ``activities.callbacks``."""
    _declaration(DELIVER_BUDGET_ALERT_ACTIVITY)


DECLARATIONS = (
    call_llm,
    start_run,
    resolve_agents,
    finish_run,
    save_draft,
    deliver_callback,
    deliver_budget_alert,
)
"""Every declared activity (the test matches each against its implementation)."""
