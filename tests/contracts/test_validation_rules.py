"""Validation rules at the SDK boundary and the content check."""

from __future__ import annotations

import pytest


def test_validation_strips_controls_and_names_fields(monkeypatch):

    from chorus.contracts import validation
    from chorus.governance import content_check

    assert validation.strip_controls("a\x00b\x1bc\td\ne\r\x85f") == "abc\td\ne\rf"
    assert validation.control_problem("task", "ok\x07") == (
        "task: contains control character U+0007 at position 2 (only tab, newline and "
        "carriage return are allowed)"
    )
    with pytest.raises(validation.InputValidationError, match="task: 12 characters, the limit"):
        validation.clean_text("task", "x" * 12, max_chars=10)
    with pytest.raises(validation.InputValidationError, match="title: must not be empty"):
        validation.clean_text("title", " \x00 ", max_chars=10, required=True)
    with pytest.raises(validation.InputValidationError, match="draft_id: 'bad id'"):
        validation.check_identifier("draft_id", "bad id")
    validation.check_identifier("draft_id", "draft-release-notes-1a2b3c4d")
    monkeypatch.setenv("CHORUS_BLOCKED_TERMS", r"top secret,\bproject x\b")
    check = content_check.load_content_check(None)
    with pytest.raises(validation.InputValidationError, match="document: contains blocked"):
        content_check.check_content(check, {"task": "fine", "document": "About Project X today"})
    with pytest.raises(validation.InputValidationError, match="CHORUS_CONTENT_CHECK"):
        content_check.load_content_check("no_such_module:check")
