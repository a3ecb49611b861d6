"""The prohibited-content check run on task, document and draft text at the SDK boundary.

A pluggable function (``CHORUS_CONTENT_CHECK=module:function``, taking ``(field, text)`` and
returning a reason or ``None``); the default, :func:`blocked_terms_check`, refuses the regexes
in ``CHORUS_BLOCKED_TERMS``. Policy, not a contract: it reads the environment and imports code.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable

from chorus.contracts.validation import InputValidationError

ContentCheck = Callable[[str, str], str | None]
"""``check(field, text) -> reason or None``; a reason refuses the input."""


def blocked_terms_check(field: str, text: str) -> str | None:
    """Default prohibited-content check: refuse text matching ``CHORUS_BLOCKED_TERMS``.

    ``CHORUS_BLOCKED_TERMS`` is a comma-separated list of case-insensitive regular
    expressions (unset: nothing is blocked).

    Returns:
        A reason naming the matched term, or ``None``.
    """
    terms = [t.strip() for t in os.environ.get("CHORUS_BLOCKED_TERMS", "").split(",")]
    for term in filter(None, terms):
        if re.search(term, text, flags=re.IGNORECASE):
            return f"{field}: contains blocked content (matches {term!r}, CHORUS_BLOCKED_TERMS)"
    return None


def load_content_check(spec: str | None) -> ContentCheck:
    """The prohibited-content check named by ``module:function`` (default: blocked terms).

    Raises:
        InputValidationError: The module or function cannot be loaded (names the setting).
    """
    if not spec:
        return blocked_terms_check
    module_name, _, attr = spec.partition(":")
    try:
        check = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise InputValidationError(
            f"CHORUS_CONTENT_CHECK: cannot load {spec!r} (expected module:function): {exc}"
        ) from exc
    if not callable(check):
        raise InputValidationError(f"CHORUS_CONTENT_CHECK: {spec!r} is not callable")
    return check  # type: ignore[no-any-return]


def check_content(check: ContentCheck, fields: dict[str, str]) -> None:
    """Run the prohibited-content check over each field.

    Raises:
        InputValidationError: The check refused a field (its reason is the message).
    """
    for field, text in fields.items():
        if text and (reason := check(field, text)):
            raise InputValidationError(reason)
