"""Stable Temporal names: task queue, workflow, activity, query names and id prefixes.

Stored workflow histories refer to these names, so they must never change once released.
"""

from typing import Final

DEFAULT_TASK_QUEUE: Final = "chorus-agents"
"""Task queue polled by Chorus workers unless ``CHORUS_TASK_QUEUE`` says otherwise."""

SEQUENTIAL_WORKFLOW: Final = "ChorusSequential"
PARALLEL_WORKFLOW: Final = "ChorusParallel"
DRAFT_WORKFLOW: Final = "ChorusDraft"
WORKFLOW_TYPES: Final = (SEQUENTIAL_WORKFLOW, PARALLEL_WORKFLOW)

CALL_LLM_ACTIVITY: Final = "chorus.call_llm"
START_RUN_ACTIVITY: Final = "chorus.start_run"
RESOLVE_AGENTS_ACTIVITY: Final = "chorus.resolve_agents"
FINISH_RUN_ACTIVITY: Final = "chorus.finish_run"
SAVE_DRAFT_ACTIVITY: Final = "chorus.save_draft"
DELIVER_CALLBACK_ACTIVITY: Final = "chorus.deliver_callback"

PROGRESS_QUERY: Final = "progress"


def llm_task_queue(task_queue: str, provider: str) -> str:
    """Task queue of one provider's LLM calls (rate-limited by the server for the whole fleet)."""
    return f"{task_queue}-llm-{provider}"


WORKFLOW_ID_PREFIX: Final = {"sequential": "seq", "parallel": "par", "draft": "draft"}
"""Workflow ids read ``<prefix>-<task slug>-<short id>``, e.g. ``seq-summarize-report-1a2b3c4d``."""
