"""Chorus: durable multi-agent LLM orchestration on Temporal.

The public face. Import what you need from here::

    from chorus import ChorusClient, ChorusPlugin, Settings, SequentialInput

Everything else (``chorus.contracts``, ``chorus.storage``, ``chorus.governance``,
``chorus.observability``, ``chorus.runtime``, ``chorus.config``, ``chorus.integrations``) is
Chorus's own layout and may move between releases; the README's "Architecture" section says
what each package holds and which way the dependencies point. Test helpers for your own tests
are in :mod:`chorus.testing`.

Names load on first access (PEP 562): the workflow sandbox imports this package for every
workflow run, so importing it must stay cheap and free of I/O.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # client side
    "ChorusClient": "starter.sdk",
    "RunHandle": "starter.sdk",
    # Temporal wiring and settings
    "ChorusPlugin": "chorus.runtime.plugin",
    "Settings": "chorus.config.settings",
    "get_settings": "chorus.config.settings",
    # errors
    "ChorusError": "chorus.contracts.errors",
    "ChorusInputError": "chorus.contracts.errors",
    "ChorusRefusedError": "chorus.contracts.errors",
    "ChorusUnavailableError": "chorus.contracts.errors",
    # payload models: agents, plans, runs
    "AgentSpec": "chorus.contracts.models",
    "AgentStep": "chorus.contracts.models",
    "ParallelInput": "chorus.contracts.models",
    "ParallelStep": "chorus.contracts.models",
    "RunProgress": "chorus.contracts.models",
    "RunResult": "chorus.contracts.models",
    "RunSubject": "chorus.contracts.models",
    "SequentialInput": "chorus.contracts.models",
    "SequentialStep": "chorus.contracts.models",
    "StepResult": "chorus.contracts.models",
    "TextRef": "chorus.contracts.models",
    # payload models: drafts
    "CommentRequest": "chorus.contracts.drafting",
    "DraftInput": "chorus.contracts.drafting",
    "DraftView": "chorus.contracts.drafting",
    "EditRequest": "chorus.contracts.drafting",
    "EditResult": "chorus.contracts.drafting",
    "RevisionRequest": "chorus.contracts.drafting",
    "TextEdit": "chorus.contracts.drafting",
}

__all__ = [
    "AgentSpec",
    "AgentStep",
    "ChorusClient",
    "ChorusError",
    "ChorusInputError",
    "ChorusPlugin",
    "ChorusRefusedError",
    "ChorusUnavailableError",
    "CommentRequest",
    "DraftInput",
    "DraftView",
    "EditRequest",
    "EditResult",
    "ParallelInput",
    "ParallelStep",
    "RevisionRequest",
    "RunHandle",
    "RunProgress",
    "RunResult",
    "RunSubject",
    "SequentialInput",
    "SequentialStep",
    "Settings",
    "StepResult",
    "TextEdit",
    "TextRef",
    "__version__",
    "get_settings",
]

if TYPE_CHECKING:
    from chorus.config.settings import Settings, get_settings
    from chorus.contracts.drafting import (
        CommentRequest,
        DraftInput,
        DraftView,
        EditRequest,
        EditResult,
        RevisionRequest,
        TextEdit,
    )
    from chorus.contracts.errors import (
        ChorusError,
        ChorusInputError,
        ChorusRefusedError,
        ChorusUnavailableError,
    )
    from chorus.contracts.models import (
        AgentSpec,
        AgentStep,
        ParallelInput,
        ParallelStep,
        RunProgress,
        RunResult,
        RunSubject,
        SequentialInput,
        SequentialStep,
        StepResult,
        TextRef,
    )
    from chorus.runtime.plugin import ChorusPlugin
    from starter.sdk import ChorusClient, RunHandle


def __getattr__(name: str) -> Any:
    """Load a public name on first access (PEP 562).

    Raises:
        AttributeError: ``name`` is not part of the public face.
    """
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'chorus' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
