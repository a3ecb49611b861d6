"""Input validation shared by the SDK/CLI boundary and the workflows' own checks.

Two layers, on purpose:

- **At the boundary** (the SDK, ``starter/sdk/``, so the CLI too): text is *cleaned* — control
  characters other than tab, newline and carriage return are stripped — then checked for size,
  ids and nesting depth, then passed to the **prohibited-content check**
  (:mod:`chorus.governance.content_check`: it reads the environment and imports the configured
  function, so it is policy, not a contract).
- **In workflows and update validators** (deterministic, no I/O): the same size, character and
  id rules are checked again, because a plain Temporal client can start a workflow or send an
  update without the SDK. There, control characters are refused (a validator cannot change its
  input) with an error naming the field.

Every error names the field and the limit.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from chorus.contracts.errors import ChorusInputError
from chorus.contracts.limits import MAX_CALLBACK_URL_CHARS as MAX_CALLBACK_URL_CHARS

CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
"""C0 controls except tab/newline/carriage return, DEL and C1 controls."""
FORMAT_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069\ufeff\ufffe\uffff]")
"""Bidirectional embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069: they make
text display in another order than it reads, the "Trojan Source" trick), the byte order mark
U+FEFF and the noncharacters U+FFFE/U+FFFF. Stripped by the SDK, refused in draft edits,
removed from what the CLI prints."""
LINE_SEPARATORS = re.compile("[\u2028\u2029]")
"""U+2028/U+2029: allowed, but turned into a newline by the SDK (terminals print them raw)."""
IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}$")
"""Workflow ids (runs, drafts) and user ids: 1-200 characters, no spaces or controls."""


class InputValidationError(ChorusInputError):
    """Input breaks a rule; the message names the field and the limit."""


def strip_controls(text: str) -> str:
    """Remove control and bidi/format characters, keeping tab, newline and carriage return.

    See :data:`FORMAT_CONTROLS`; U+2028/U+2029 become newlines.
    """
    return LINE_SEPARATORS.sub("\n", FORMAT_CONTROLS.sub("", CONTROL_CHARS.sub("", text)))


def for_display(text: str) -> str:
    """``text`` without bidi overrides and other format controls, for printing."""
    return FORMAT_CONTROLS.sub("", text)


def text_problem(field: str, text: str) -> str | None:
    """Like :func:`control_problem`, also naming the first bidi/format control character."""
    problem = control_problem(field, text)
    if problem is None and (match := FORMAT_CONTROLS.search(text)):
        problem = (
            f"{field}: contains U+{ord(match.group()):04X} at position {match.start()} (bidi "
            "overrides and isolates, U+FEFF and U+FFFE/U+FFFF are not allowed)"
        )
    return problem


def control_problem(field: str, text: str) -> str | None:
    """A message naming ``field`` and the first control character in ``text``, if any."""
    match = CONTROL_CHARS.search(text)
    if match is None:
        return None
    return (
        f"{field}: contains control character U+{ord(match.group()):04X} at position "
        f"{match.start()} (only tab, newline and carriage return are allowed)"
    )


def clean_text(field: str, text: str, *, max_chars: int, required: bool = False) -> str:
    """Strip control characters and check the length.

    Args:
        field: Field name for the message.
        text: The input.
        max_chars: Largest length in characters (after cleaning).
        required: Refuse empty (or whitespace-only) text.

    Returns:
        The cleaned text.

    Raises:
        InputValidationError: Empty when required, or longer than ``max_chars``.
    """
    cleaned = strip_controls(text)
    if required and not cleaned.strip():
        raise InputValidationError(f"{field}: must not be empty")
    if len(cleaned) > max_chars:
        raise InputValidationError(f"{field}: {len(cleaned)} characters, the limit is {max_chars}")
    return cleaned


def check_identifier(field: str, value: str) -> None:
    """Refuse ids that are not 1-200 of ``A-Z a-z 0-9 . _ : @ -`` starting alphanumeric.

    Raises:
        InputValidationError: The message names the field and the rule.
    """
    if not IDENTIFIER.match(value):
        raise InputValidationError(
            f"{field}: {value[:60]!r} is not a valid id (1-200 characters of letters, digits "
            "and . _ : @ -, starting with a letter or digit)"
        )


def validate_callback_url(url: str, field: str = "callback_url") -> str:
    """Check that ``url`` can be a callback URL: absolute ``http``/``https``, <= 2048 characters.

    Args:
        url: The URL as given.
        field: Field name used in error messages.

    Returns:
        ``url`` unchanged.

    Raises:
        ValueError: The message names ``field`` and the rule broken.

    """
    if len(url) > MAX_CALLBACK_URL_CHARS:
        raise ValueError(f"{field}: {len(url)} characters, the limit is {MAX_CALLBACK_URL_CHARS}")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ValueError(f"{field}: not a valid URL ({exc})") from exc
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{field}: scheme must be http or https, got {parts.scheme or 'none'!r}")
    if not parts.hostname:
        raise ValueError(f"{field}: {url!r} has no host")
    return url


def url_host(url: str) -> str:
    """Return ``scheme://host[:port]`` of ``url``: safe to log (no path or query tokens)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
