"""Chorus workflows: durable, replayable orchestration of agents.

Only deterministic code lives here; LLM calls and storage are activities.
"""

from workflows.draft import DraftWorkflow
from workflows.parallel import ParallelWorkflow
from workflows.sequential import SequentialWorkflow

WORKFLOWS = [SequentialWorkflow, ParallelWorkflow, DraftWorkflow]

__all__ = ["WORKFLOWS", "DraftWorkflow", "ParallelWorkflow", "SequentialWorkflow"]
