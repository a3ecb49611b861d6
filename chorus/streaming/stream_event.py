"""What a run reader receives: :class:`StreamEvent`, and how to assemble text from events.

The events of one run, in id order, tell a reader what each LLM call of the run is writing:

- ``step_started``: an LLM call (a *step* of the stream: one ``chorus.call_llm`` activity,
  retries included) began an attempt; ``text`` is ``provider:model``.
- ``attempt_restarted``: written just before the ``step_started`` of attempt 2 or later of the
  same step. The text earlier attempts streamed for this step is void: drop it.
- ``token``: text the model wrote, in order (a few tokens: the producer batches ~50 ms).
- ``step_completed``: the attempt succeeded; ``text`` is the step's final output, the same as
  the completed activity's (a late reader gets the whole text here).
- ``step_failed``: the attempt failed; ``text`` is the error. Temporal may retry it (then an
  ``attempt_restarted`` follows) or the workflow may fall back to the next provider (a new step).
- ``run_finished``: the run ended; ``text`` is ``succeeded``, ``failed`` or ``cancelled``.
  Nothing follows.

An event of an attempt older than one already seen for the same step comes from a superseded
attempt (a worker that lost its activity but still streamed) and must be ignored:
:class:`Assembler` does both rules.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

EventKind = Literal[
    "step_started", "attempt_restarted", "token", "step_completed", "step_failed", "run_finished"
]
"""The kinds of :class:`StreamEvent`, in the order a step writes them."""

STEP_KINDS: frozenset[str] = frozenset(
    {"step_started", "attempt_restarted", "token", "step_completed", "step_failed"}
)


class StreamEvent(BaseModel):
    """One event of a run's live stream (JSON: ``StreamEvent.model_dump_json()``).

    Attributes:
        id: Event id, increasing within the run; resume after it (SSE ``Last-Event-ID``).
        run_id: Workflow id of the top-level run.
        workflow_id: Workflow that made the LLM call (a child workflow for nested steps).
        step: The LLM call, unique in the run (``<workflow id>/<temporal run id>/<activity
            id>``); ``None`` for ``run_finished``.
        agent: Agent name; ``None`` for ``run_finished``.
        attempt: Activity attempt, from 1; ``None`` for ``run_finished``.
        kind: See the module docstring.
        text: Kind-specific text (delta, final output, error, ``provider:model``, status).
        at: When the event was written (PostgreSQL's clock, UTC).
    """

    model_config = ConfigDict(frozen=True)

    id: int
    run_id: str
    workflow_id: str
    step: str | None = None
    agent: str | None = None
    attempt: int | None = None
    kind: EventKind
    text: str = ""
    at: datetime

    @classmethod
    def from_row(cls, row: Any) -> StreamEvent:
        """Build from a ``stream_events`` row (:func:`chorus.storage.stream_rows.events_after`)."""
        return cls(
            id=row["id"],
            run_id=row["run_id"],
            workflow_id=row["workflow_id"],
            step=row["step"],
            agent=row["agent"],
            attempt=row["attempt"],
            kind=row["kind"],
            text=row["text"],
            at=row["created_at"],
        )


StepStatus = Literal["running", "completed", "failed"]


@dataclass
class StepText:
    """One step's text as a reader should show it.

    Attributes:
        step: The step key (:attr:`StreamEvent.step`).
        agent: Agent name.
        attempt: The newest attempt seen.
        label: ``provider:model`` of that attempt.
        text: Its text so far (the final output once completed).
        status: ``running``, ``completed`` or ``failed`` (the newest attempt's).
        error: The failure's message when ``failed``.
    """

    step: str
    agent: str | None
    attempt: int
    label: str = ""
    text: str = ""
    status: StepStatus = "running"
    error: str | None = None


class Assembler:
    """Builds each step's text from events, applying the retry rules of the module docstring.

    Feed events in id order with :meth:`apply`; read :attr:`steps` (in order of first
    appearance) and :attr:`finished` (the run's status once ``run_finished`` arrived).
    """

    def __init__(self) -> None:
        self.steps: dict[str, StepText] = {}
        self.finished: str | None = None
        self.last_id = 0

    def apply(self, event: StreamEvent) -> bool:
        """Apply one event.

        Returns:
            ``False`` when the event was ignored: an id already applied, or an event of an
            attempt older than the step's newest (a superseded attempt).
        """
        if event.id <= self.last_id:
            return False
        self.last_id = event.id
        if event.kind == "run_finished":
            self.finished = event.text
            return True
        if event.step is None:
            return False
        attempt = event.attempt or 1
        current = self.steps.get(event.step)
        if current is None:
            current = self.steps[event.step] = StepText(event.step, event.agent, attempt)
        if attempt < current.attempt:
            return False
        if attempt > current.attempt or event.kind == "attempt_restarted":
            # A new attempt: whatever earlier attempts wrote is void.
            current.attempt, current.text, current.status, current.error = (
                attempt,
                "",
                "running",
                None,
            )
        if event.kind == "step_started":
            current.label = event.text
        elif event.kind == "token":
            current.text += event.text
        elif event.kind == "step_completed":
            current.text, current.status = event.text, "completed"
        elif event.kind == "step_failed":
            current.status, current.error = "failed", event.text
        return True


def assemble(events: Iterable[StreamEvent]) -> dict[str, str]:
    """Each step's text from a run's events (in id order), without duplicated retry text.

    Args:
        events: Events of one run, in id order (a resumed reader's events included).

    Returns:
        Step key -> its text: the final output of a completed step, else what the newest
        attempt streamed so far.
    """
    assembler = Assembler()
    for event in events:
        assembler.apply(event)
    return {key: step.text for key, step in assembler.steps.items()}
