"""Careless input at the CLI/SDK: a clear message and exit 2, never a traceback (issue 20)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from chorus.contracts.drafting import EditRequest, RevisionRequest
from starter.plan import load_plan
from starter.sdk import ChorusInputError
from tests.conftest import agent, running_worker
from tests.workflows.test_drafts import no_llm


def chorus_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TEMPORAL_ADDRESS": "127.0.0.1:1"}  # never reached: input first
    return subprocess.run(
        [sys.executable, "-m", "starter.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cyclic_and_deep_plans_are_refused_with_a_message(tmp_path: Path):
    cyclic = tmp_path / "cyclic.yaml"
    cyclic.write_text("pattern: sequential\nsteps: &s\n  - {kind: sequential, steps: *s}\n")
    deep: object = "a1"
    for _ in range(300):
        deep = {"kind": "sequential", "steps": [deep]}
    nested = tmp_path / "deep.yaml"
    nested.write_text(json.dumps({"pattern": "sequential", "steps": [deep]}))
    for plan in (cyclic, nested):
        proc = chorus_cli("run", "sequential", "--plan", str(plan), "--task", "x")
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        assert "at most 4 levels" in proc.stderr


def test_error_text_keeps_its_brackets():
    """The terminal formatting ate '[a-z]' out of the agent-name rule."""
    proc = chorus_cli("run", "sequential", "--agents", "Bad!", "--task", "x")
    assert proc.returncode == 2
    assert "^[a-z][a-z0-9_-]{0,63}$" in proc.stderr


def test_plan_file_aggregator_none_joins_outputs(tmp_path: Path):
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "pattern: parallel\naggregator: none\nsteps:\n  - a1\n"
        "  - {kind: parallel, branches: [a2, a3], aggregator: None}\n"
    )
    parsed = load_plan(plan)
    assert parsed.aggregator is None
    assert parsed.steps[1].aggregator is None  # type: ignore[union-attr]


async def test_sdk_refusals_are_input_errors(client, make_settings):
    settings = make_settings([agent("a1", ["local:fake"]), agent("writer", ["local:fake"])])
    async with running_worker(client, settings, no_llm) as chorus:
        with pytest.raises(ChorusInputError, match="branches: List should have at most 50"):
            await chorus.start_parallel("x", ["a1"] * 500, aggregator=None)
        draft_id = await chorus.start_draft("T", "alice", content="hello")
        with pytest.raises(ChorusInputError, match="unknown agent 'nope'"):
            await chorus.draft_update(
                draft_id,
                "request_revision",
                RevisionRequest(user="alice", base_version=1, agent="nope", instruction="x"),
            )
        history = await client.get_workflow_handle(draft_id).fetch_history()
        assert "request_revision" not in history.to_json()
        # Refusals are final: retrying the same request cannot succeed.
        for request in (
            EditRequest(user="mallory", base_version=1, content="x"),
            EditRequest(user="alice", base_version=9, content="x"),
        ):
            with pytest.raises(WorkflowUpdateFailedError) as failure:
                await client.get_workflow_handle(draft_id).execute_update("edit", request)
            cause = failure.value.cause
            assert isinstance(cause, ApplicationError) and cause.non_retryable


def test_bidi_overrides_and_format_characters():
    """Issue 20: U+202E, U+2028, U+FEFF, U+FFFF were accepted in draft text and printed raw."""
    from chorus.contracts.validation import for_display, strip_controls, text_problem

    tricky = "pay \u202eevil\u202c \ufeffnow\uffff\u2028next"
    assert strip_controls(tricky) == "pay evil now\nnext"
    assert for_display("a\u202eb\u2066c") == "abc"
    problem = text_problem("edit text", tricky)
    assert problem is not None and "U+202E at position 4" in problem


async def test_draft_edit_refuses_bidi_override(client, make_settings):
    settings = make_settings([agent("writer", ["local:fake"])])
    async with running_worker(client, settings, no_llm) as chorus:
        draft_id = await chorus.start_draft("T", "alice", content="hello")
        request = EditRequest(user="alice", base_version=1, content="safe \u202eevil")
        with pytest.raises(WorkflowUpdateFailedError) as failure:
            await client.get_workflow_handle(draft_id).execute_update("edit", request)
        assert "U+202E" in str(failure.value.cause)
        # Through the SDK the character is stripped and the edit lands.
        assert (await chorus.draft_update(draft_id, "edit", request)).version == 2
        assert (await chorus.draft(draft_id, user="alice")).content == "safe evil"
