"""Readable workflow ids for runs and drafts, free of personal data.

Workflow ids are never encrypted: they appear in logs, the Temporal UI and search, so the task
or title a slug is made from is PII-redacted first.
"""

from __future__ import annotations

import re
import uuid
from typing import Literal

from chorus.contracts.names import WORKFLOW_ID_PREFIX
from chorus.governance.pii import Redactor

Pattern = Literal["sequential", "parallel"]
"""The orchestration pattern of a run."""

_ID_REDACTOR = Redactor()


def slugify(text: str, max_len: int = 30) -> str:
    """Lower-case ``text`` into ``a-z0-9-`` words, at most ``max_len`` characters.

    PII is redacted first (:mod:`chorus.governance.pii`: e-mail addresses, phone numbers, card
    numbers, SSNs, IP addresses become their kind, e.g. ``email``): workflow ids are never
    encrypted and appear in logs, the UI and search, so they must not quote personal data.
    Only the first 500 characters of ``text`` are read; an empty slug becomes ``run``.
    """
    text = _ID_REDACTOR.redact(text[:500], "redact").text
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:max_len].rstrip("-") or "run"


def make_workflow_id(pattern: Pattern, task: str) -> str:
    """Make a readable, unique workflow id: ``seq-<task slug>-<8 hex>`` or ``par-...``."""
    return f"{WORKFLOW_ID_PREFIX[pattern]}-{slugify(task)}-{uuid.uuid4().hex[:8]}"


def id_taken(workflow_id: str, what: str) -> str:
    """The message for a workflow id that an earlier run or draft (``what``) already used."""
    return (
        f"--workflow-id: {workflow_id!r} is already used by a {what} (running or finished); "
        f"Chorus keeps one record per workflow id, so ids are not reused: choose another, "
        f"or leave it out for a generated one"
    )
