"""Chorus workflows: durable, replayable orchestration of agents.

Only deterministic code lives here; LLM calls and storage are activities.

``WORKFLOWS`` (and each workflow class) is loaded on first access rather than at package
import: the workflow sandbox re-imports a workflow's module for every new workflow run, and an
eager package import would re-import all three workflow modules each time (measured with
py-spy: ~15% of the worker's CPU on no-op runs, ``bench/RESULTS.md``).
"""

from __future__ import annotations

import importlib
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workflows.control_flow import ControlWorkflow
    from workflows.draft import DraftWorkflow
    from workflows.parallel import ParallelWorkflow
    from workflows.sequential import SequentialWorkflow

    WORKFLOWS: list[type]

_CLASSES = MappingProxyType(
    {
        "SequentialWorkflow": "workflows.sequential",
        "ParallelWorkflow": "workflows.parallel",
        "DraftWorkflow": "workflows.draft",
        "ControlWorkflow": "workflows.control_flow",
    }
)

__all__ = [
    "WORKFLOWS",
    "ControlWorkflow",
    "DraftWorkflow",
    "ParallelWorkflow",
    "SequentialWorkflow",
]


def __getattr__(name: str) -> Any:
    """Load ``WORKFLOWS`` or a workflow class on first access (PEP 562)."""
    if name == "WORKFLOWS":
        return [
            __getattr__(n)
            for n in ("SequentialWorkflow", "ParallelWorkflow", "DraftWorkflow", "ControlWorkflow")
        ]
    if name in _CLASSES:
        return getattr(importlib.import_module(_CLASSES[name]), name)
    raise AttributeError(f"module 'workflows' has no attribute {name!r}")
