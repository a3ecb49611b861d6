"""Live token streaming: what a run's LLM calls write, to readers, as it is written (issue 16).

Transport: PostgreSQL. The LLM activity appends events to the ``stream_events`` table and
``NOTIFY`` on ``chorus_stream`` in the same statement; readers ``LISTEN`` (one connection per
process, :class:`StreamHub`) and read the rows. The durable result is still the completed
activity's: events only show progress, and a retried attempt is announced
(``attempt_restarted``) so readers drop the text of the attempt it replaces.

- :class:`StreamEvent` (the public JSON shape), :data:`EventKind`, :class:`Assembler` and
  :func:`assemble` (text per step without duplicated retry text): :mod:`.stream_event`.
- :func:`subscribe` and :class:`StreamHub` (the reader): :mod:`.reader`.
- :class:`StreamPublisher`, :class:`StepStream`, :func:`publish_run_finished`,
  :class:`RetentionSweeper` (the producer, used by the worker's activities): :mod:`.publisher`.
- :class:`PublishedText` (PII policies on published text): :mod:`.published_text`.
"""

from chorus.streaming.published_text import PublishedText
from chorus.streaming.publisher import (
    RetentionSweeper,
    StepKey,
    StepStream,
    StreamPublisher,
    publish_run_finished,
    step_key,
)
from chorus.streaming.reader import StreamHub, subscribe
from chorus.streaming.stream_event import (
    Assembler,
    EventKind,
    StepText,
    StreamEvent,
    assemble,
)

__all__ = [
    "Assembler",
    "EventKind",
    "PublishedText",
    "RetentionSweeper",
    "StepKey",
    "StepStream",
    "StepText",
    "StreamEvent",
    "StreamHub",
    "StreamPublisher",
    "assemble",
    "publish_run_finished",
    "step_key",
    "subscribe",
]
