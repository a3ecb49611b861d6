"""The plan files in ``examples/plans``: each loads, and names only bundled agents."""

from __future__ import annotations

from pathlib import Path

import pytest

from chorus.config.catalog import load_catalog
from chorus.config.settings import BUNDLED_AGENTS_FILE
from chorus.contracts.control import GateStep, GroupChatStep, HandoffStep
from chorus.contracts.models import LoopStep, RouterStep, plan_agents
from starter.plan import load_plan

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "plans"
PLANS = sorted(EXAMPLES.glob("*.yaml"))


def test_the_examples_are_there():
    assert {p.name for p in PLANS} >= {
        "review-loop.yaml",
        "triage-router.yaml",
        "gated-publish.yaml",
        "handoff.yaml",
        "group-chat.yaml",
    }


@pytest.mark.parametrize("path", PLANS, ids=lambda p: p.name)
def test_example_plan_loads_and_names_bundled_agents(path: Path):
    plan = load_plan(path)
    catalog = load_catalog(BUNDLED_AGENTS_FILE)
    named = plan_agents(plan.steps)
    if plan.pattern == "parallel" and plan.aggregator:
        named.append(plan.aggregator)
    missing = [name for name in named if name not in catalog]
    assert not missing, f"{path.name} names agents the bundled catalog lacks: {missing}"


def test_example_plans_use_each_control_kind():
    kinds = {type(step) for path in PLANS for step in load_plan(path).steps}
    assert {LoopStep, RouterStep, HandoffStep, GroupChatStep, GateStep} <= kinds


def test_review_loop_ends_on_the_reviewers_schema():
    """The loop's predicate tests a field the reviewer's output schema requires, with a value
    its enum allows: a reviewer answer can end the loop."""
    (step,) = load_plan(EXAMPLES / "review-loop.yaml").steps
    assert isinstance(step, LoopStep) and step.until is not None
    assert (step.until.agent, step.until.field, step.until.equals) == (
        "reviewer",
        "verdict",
        "ready",
    )
    assert (step.max_iterations, step.output_from) == (3, "writer")
    schema = load_catalog(BUNDLED_AGENTS_FILE)["reviewer"].output_schema
    assert schema is not None and "verdict" in schema["required"]
    assert "ready" in schema["properties"]["verdict"]["enum"]


def test_gated_publish_waits_for_alice_or_an_editor():
    steps = load_plan(EXAMPLES / "gated-publish.yaml").steps
    gates = [s for s in steps if isinstance(s, GateStep)]
    assert len(gates) == 1
    gate = gates[0]
    assert (gate.name, gate.approvers, gate.timeout_s, gate.on_timeout) == (
        "publish",
        ["alice", "role:editor"],
        86400,
        "reject",
    )
