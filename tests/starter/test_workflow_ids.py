"""Generated workflow ids: readable, and never quoting PII."""

from __future__ import annotations

from starter.sdk import make_workflow_id


def test_workflow_ids_are_readable():
    wid = make_workflow_id("sequential", "Summarize the Q3 report, please!")
    assert wid.startswith("seq-summarize-the-q3-report-ple")
    assert len(wid.rsplit("-", 1)[1]) == 8


def test_generated_workflow_ids_do_not_quote_pii():
    """Issue 20: ids are never encrypted and land in logs: `seq-summarize-for-bob-corp-...`."""
    from starter.sdk import make_workflow_id, slugify

    workflow_id = make_workflow_id("sequential", "Summarize for bob@corp.example.com")
    assert workflow_id.startswith("seq-summarize-for-email-")
    assert "bob" not in workflow_id and "corp" not in workflow_id
    assert "4111" not in slugify("card 4111 1111 1111 1111 declined")
