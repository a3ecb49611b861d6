"""Stable Temporal names: task queue, workflow, activity, query names and id prefixes.

Stored workflow histories refer to these names, so they must never change once released.
"""

from typing import Any, Final

from temporalio.common import SearchAttributeIndexedValueType, SearchAttributeKey

DEFAULT_TASK_QUEUE: Final = "chorus-agents"
"""Task queue polled by Chorus workers unless ``CHORUS_TASK_QUEUE`` says otherwise."""

SEQUENTIAL_WORKFLOW: Final = "ChorusSequential"
PARALLEL_WORKFLOW: Final = "ChorusParallel"
DRAFT_WORKFLOW: Final = "ChorusDraft"
CONTROL_WORKFLOW: Final = "ChorusControl"
"""A run's loop, router, handoff or group chat step, as a child workflow."""
WORKFLOW_TYPES: Final = (SEQUENTIAL_WORKFLOW, PARALLEL_WORKFLOW)

CALL_LLM_ACTIVITY: Final = "chorus.call_llm"
START_RUN_ACTIVITY: Final = "chorus.start_run"
RESOLVE_AGENTS_ACTIVITY: Final = "chorus.resolve_agents"
FINISH_RUN_ACTIVITY: Final = "chorus.finish_run"
SAVE_DRAFT_ACTIVITY: Final = "chorus.save_draft"
DELIVER_CALLBACK_ACTIVITY: Final = "chorus.deliver_callback"
DELIVER_BUDGET_ALERT_ACTIVITY: Final = "chorus.deliver_budget_alert"
RESOLVE_TOOLS_ACTIVITY: Final = "chorus.resolve_tools"
CALL_TOOL_ACTIVITY: Final = "chorus.call_tool"
OPEN_GATE_ACTIVITY: Final = "chorus.open_gate"
CLOSE_GATE_ACTIVITY: Final = "chorus.close_gate"

PROGRESS_QUERY: Final = "progress"


def llm_task_queue(task_queue: str, provider: str) -> str:
    """Task queue of one provider's LLM calls (its workers cap their concurrency at the limit)."""
    return f"{task_queue}-llm-{provider}"


WORKFLOW_ID_PREFIX: Final = {"sequential": "seq", "parallel": "par", "draft": "draft"}
"""Workflow ids read ``<prefix>-<task slug>-<short id>``, e.g. ``seq-summarize-report-1a2b3c4d``."""


# --- search attributes -------------------------------------------------------------------------
# Custom search attributes make runs and drafts filterable in the Temporal UI and with
# ``temporal workflow list --query 'ChorusPattern="parallel"'``. They must be registered on the
# namespace before a workflow sets them (``chorus dev up`` and the test server register them; in
# production run ``temporal operator search-attribute create --name <name> --type <type>`` once
# per pair of ``search_attribute_types()``).

PATTERN_ATTR: Final = SearchAttributeKey.for_keyword("ChorusPattern")
"""Orchestration pattern of a run: ``sequential`` or ``parallel``."""
AGENTS_ATTR: Final = SearchAttributeKey.for_keyword_list("ChorusAgents")
"""Names of the agents a run uses (query with ``ChorusAgents = "critic"``)."""
STATUS_ATTR: Final = SearchAttributeKey.for_keyword("ChorusStatus")
"""Run status: ``running``, ``succeeded``, ``failed`` or ``cancelled``."""
COST_ATTR: Final = SearchAttributeKey.for_float("ChorusCostUsd")
"""Total cost of a run in USD (set when it ends; child runs included in the parent's total)."""
DRAFT_STATUS_ATTR: Final = SearchAttributeKey.for_keyword("ChorusDraftStatus")
"""Draft status: ``drafting``, ``in_review``, ``approved``, ``published`` or ``archived``."""
AWAITING_ATTR: Final = SearchAttributeKey.for_keyword_list("ChorusAwaiting")
"""Gates a workflow waits at (``chorus approvals list`` queries ``ChorusAwaiting IS NOT NULL``);
emptied when they are decided."""

SEARCH_ATTRIBUTES: Final[tuple[SearchAttributeKey[Any], ...]] = (
    PATTERN_ATTR,
    AGENTS_ATTR,
    STATUS_ATTR,
    COST_ATTR,
    DRAFT_STATUS_ATTR,
    AWAITING_ATTR,
)
"""Every Chorus search attribute, in registration order."""

_CLI_TYPE_NAMES: Final = {
    SearchAttributeIndexedValueType.KEYWORD: "Keyword",
    SearchAttributeIndexedValueType.KEYWORD_LIST: "KeywordList",
    SearchAttributeIndexedValueType.DOUBLE: "Double",
}


def search_attribute_types() -> list[tuple[str, str]]:
    """Return ``(name, type)`` of every Chorus search attribute, for registration.

    Types are spelled as the temporal CLI and server expect them (``Keyword``, ``KeywordList``,
    ``Double``).
    """
    return [(key.name, _CLI_TYPE_NAMES[key.indexed_value_type]) for key in SEARCH_ATTRIBUTES]
