"""Plan parsing: ``--agents`` groups and plan files."""

from __future__ import annotations

from pathlib import Path

import pytest

from chorus.contracts.models import ParallelStep, SequentialStep
from starter.plan import load_plan, parse_agents
from starter.sdk import ChorusInputError


def test_parse_agents_groups():
    steps = parse_agents("analyst, summarizer|critic ,writer", "sequential", "aggregator")
    assert isinstance(steps[1], ParallelStep)
    assert [getattr(b, "agent", None) for b in steps[1].branches] == ["summarizer", "critic"]
    steps = parse_agents("analyst>writer,critic", "parallel", "aggregator")
    assert isinstance(steps[0], SequentialStep)
    with pytest.raises(ChorusInputError, match="empty item"):
        parse_agents("a,,b", "sequential", None)
    with pytest.raises(ChorusInputError, match="invalid step 'Bad Name'"):
        parse_agents("Bad Name", "sequential", None)


def test_load_plan_nested(tmp_path: Path):
    path = tmp_path / "plan.yaml"
    path.write_text(
        "pattern: parallel\naggregator: aggregator\nmin_successes: 2\nsteps:\n"
        "  - analyst\n"
        "  - {kind: sequential, steps: [summarizer,\n"
        "                               {kind: parallel, branches: [critic, writer]}]}\n"
    )
    plan = load_plan(path)
    assert plan.pattern == "parallel" and plan.min_successes == 2
    inner = plan.steps[1]
    assert isinstance(inner, SequentialStep) and isinstance(inner.steps[1], ParallelStep)
    path.write_text("pattern: parallel\nsteps: [{kind: sequential, steps: []}]\n")
    with pytest.raises(ChorusInputError, match="steps\\[0\\]"):
        load_plan(path)
