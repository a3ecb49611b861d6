"""Chorus activities: all I/O (LLM providers, PostgreSQL) happens here, never in workflows.

Activities are methods of classes that receive their clients and the connection pool in
``__init__`` (built once per worker in ``worker.py``).
"""

from activities.approvals import ApprovalActivities
from activities.callbacks import CallbackActivities
from activities.drafts import DraftActivities
from activities.llm import LLMActivities, ProviderClients
from activities.runs import RunActivities
from activities.tool_calls import ToolActivities

__all__ = [
    "ApprovalActivities",
    "CallbackActivities",
    "DraftActivities",
    "LLMActivities",
    "ProviderClients",
    "RunActivities",
    "ToolActivities",
]
