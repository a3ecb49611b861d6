"""The text a step publishes: the model's deltas with the agent's PII policies applied.

Two policies touch a completion (``chorus/governance/pii.py``):

- ``pii: placeholder``: the model saw ``<<EMAIL_1>>`` instead of the address and may write the
  token; the activity's result has the original put back. Published text gets the originals
  back too, as the result does: run readers see what the run returns.
- ``record_pii: redact|mask``: what Chorus keeps in PostgreSQL is redacted. Stream events are
  rows in PostgreSQL (kept ``CHORUS_STREAM_RETENTION_HOURS``), so published text is redacted
  the same way, and ``step_completed`` carries the completion as the record stores it.

Both work on whole pieces of text, and a delta may end inside a token or a phone number, so
text is held back until it is safe to pass on: up to the last whitespace for placeholders
(tokens contain none), up to the last line break for ``record_pii`` (PII matches never span
lines). Deltas without either policy pass through unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping

from chorus.contracts.models import RecordPiiPolicy
from chorus.governance.pii import Redactor, restore

MAX_HELD_WORD = 256
"""A whitespace-free run longer than this (characters) is released but for its last
:data:`HELD_TAIL` characters, so a long URL does not stall the stream."""
HELD_TAIL = 32


class PublishedText:
    """Turns a step's deltas into published text (see the module docstring).

    Args:
        placeholders: Token -> original of the prompt's ``placeholder`` redaction (empty for
            other policies).
        record_pii: The agent's ``record_pii`` policy: ``off``, ``redact`` or ``mask``.
        redactor: The redactor applying ``record_pii``.
    """

    def __init__(
        self,
        *,
        placeholders: Mapping[str, str] | None = None,
        record_pii: RecordPiiPolicy = "off",
        redactor: Redactor | None = None,
    ) -> None:
        self._placeholders = dict(placeholders or {})
        self._record_pii = record_pii
        self._redactor = redactor or Redactor()
        self._held = ""

    def add_placeholders(self, placeholders: Mapping[str, str]) -> None:
        """Restore these tokens too (the prompt's mapping, known once it is redacted)."""
        self._placeholders.update(placeholders)

    @property
    def passthrough(self) -> bool:
        """Whether deltas are published unchanged (no policy applies)."""
        return not self._placeholders and self._record_pii == "off"

    def feed(self, delta: str) -> str:
        """Take a delta; return the text that may be published now (possibly empty)."""
        if self.passthrough:
            return delta
        self._held += delta
        text = self._held
        if self._record_pii != "off":
            cut = text.rfind("\n") + 1
        else:
            cut = max(text.rfind(" "), text.rfind("\n"), text.rfind("\t")) + 1
            if len(text) - cut > MAX_HELD_WORD:
                cut = len(text) - HELD_TAIL
        self._held = text[cut:]
        return self._apply(text[:cut])

    def finish(self) -> str:
        """The text still held back, once the model has finished."""
        text, self._held = self._held, ""
        return self._apply(text)

    def final(self, output: str) -> str:
        """The step's final output as published in ``step_completed``.

        Args:
            output: The activity's output (placeholders already restored).
        """
        if self._record_pii == "off":
            return output
        return self._redactor.redact(output, self._record_pii).text

    def _apply(self, text: str) -> str:
        if not text:
            return text
        if self._placeholders:
            text = restore(text, self._placeholders)
        if self._record_pii != "off":
            text = self._redactor.redact(text, self._record_pii).text
        return text
