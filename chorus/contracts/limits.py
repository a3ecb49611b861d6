"""Size, count and rate limits of what Chorus accepts: one place for every bound.

Pure constants (the workflow sandbox passes this module through). Each says what it bounds,
the unit, and why it has that value; the refusal messages quote them.
"""

from typing import Final

MAX_INSTRUCTIONS_CHARS: Final = 20_000
"""Longest agent system prompt (characters)."""

MAX_PROVIDER_CHAIN: Final = 8
"""Most providers in one agent's fallback chain."""

MAX_PLAN_STEPS: Final = 50
"""Most steps (or branches) at one level of a plan."""

MAX_PLAN_DEPTH: Final = 4
"""Deepest nesting of sequential/parallel groups in a plan."""

INLINE_CONTENT_CHARS: Final = 65_536
"""Drafts up to this many characters are held in workflow memory (and returned by the ``draft``
query). A longer draft is held **by reference**: its text lives in PostgreSQL only
(``drafts.content``, rebuilt by the save activity from the edits), and the workflow keeps its
length and the recent edits, which is all that validating and rebasing edits needs. So neither
the history nor the continue-as-new input ever carries a large text."""

MAX_CONTENT_CHARS: Final = 2_000_000
"""Largest draft text (characters). Bounded by the save activity, which rewrites the
``drafts.content`` row on each save, not by Temporal (large drafts are held by reference)."""

MAX_EDIT_CHARS: Final = 250_000
"""Longest text in one edit (characters): the ``edit`` update carries it, and an update's
payload must stay under Temporal's 2 MB blob limit (250,000 characters is at most 1.5 MB as
JSON, with escapes). Replace a longer draft in range edits."""

MAX_UPDATE_BYTES: Final = 1_600_000
"""Largest draft update request, encoded (bytes). Temporal hands an update to the workflow
before it may refuse it, and the refusal echoes the whole request: above Temporal's 2 MB blob
limit that echo fails the workflow task with PAYLOADS_TOO_LARGE, over and over while the
client retries (issue 20: a 2.1 MB update sent with the plain ``temporal`` CLI blocked a draft
for ~20 s). So the servers Chorus runs set ``history.maxInFlightUpdatePayloads`` to this
(``chorus dev up``, ``deploy/temporal/dynamicconfig.yaml``, the tests' server): a larger
update is refused by the server at once (RESOURCE_EXHAUSTED) and never reaches the draft. The
SDK refuses one before sending it. Above the largest edit (``MAX_EDIT_CHARS``, at most
1.5 MB as JSON)."""

MAX_COMMENT_CHARS: Final = 2_000
"""Longest comment (characters)."""

MAX_COMMENTS: Final = 300
"""Most comments a draft holds (resolved ones included)."""

MAX_COMMENTS_PER_USER: Final = 100
"""Most comments one collaborator may have on a draft."""

MAX_COMMENT_BYTES: Final = 256 * 1024
"""Most comment text a draft holds, in UTF-8 bytes: every save and every continue-as-new carries
the comments, so they must stay far below Temporal's 2 MB payload limit (issue 20: a flood of
140 comments of 5,000 emoji jammed a draft with PAYLOADS_TOO_LARGE)."""

COMMENTS_PER_MINUTE: Final = 20
"""Most comments one collaborator may add per minute (workflow time)."""

REVISION_MAX_CHARS: Final = 60_000
"""Longest draft an agent revises (``request_revision``): the agent answers with the complete
text, and an answer is limited by the model's output tokens (about 16,000 for gpt-4o-mini,
OpenAI model page, 2026), roughly 60,000 characters of English."""

MAX_CALLBACK_URL_CHARS: Final = 2048
"""Longest callback URL accepted (the de-facto limit of browsers and many proxies)."""

SLOT_WAIT_S: Final = 60.0
"""Longest an LLM activity attempt waits for its provider's rate and a concurrency slot,
together, before failing as ``RateLimited`` (retried by the LLM retry policy). The activity's
start-to-close timeout includes it."""
