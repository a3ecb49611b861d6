"""Control-flow plan kinds: plan files, the loop flags, ``parse_until`` and the SDK builders."""

from __future__ import annotations

from pathlib import Path

import pytest

from chorus.contracts.control import GateStep, GroupChatStep, HandoffStep, Until
from chorus.contracts.models import (
    AgentStep,
    LoopStep,
    RouterStep,
    SequentialStep,
    plan_agents,
    plan_gates,
)
from starter.plan import load_plan, loop_from_flags, parse_agents
from starter.sdk import (
    ChorusInputError,
    gate,
    group_chat,
    handoff,
    loop,
    parse_until,
    router,
    until,
)
from starter.sdk.plans import check_plan

EVERY_KIND = """\
pattern: sequential
steps:
  - analyst
  - kind: loop
    body: [writer, critic]
    until: critic.verdict=ready|approved
    max_iterations: 4
    max_cost_usd: 0.5
    output_from: writer
  - kind: router
    agent: triage
    max_routes: 2
    routes:
      billing: billing-agent
      tech: {kind: sequential, steps: [tech, writer]}
      review: {kind: loop, body: [writer, {kind: gate, name: inner-ok}], max_iterations: 2}
  - kind: handoff
    start: triage
    agents: {triage: [billing-agent, tech], billing-agent: [], tech: [triage]}
    max_hops: 3
  - kind: group_chat
    manager: moderator
    participants: [writer, critic]
    until: {phrase: CONSENSUS}
    max_turns: 5
  - kind: gate
    name: legal
    question: Publish this?
    approvers: [alice, "role:legal"]
    timeout_s: 3600
    on_timeout: reject
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    return path


def test_a_plan_file_with_every_kind_loads(tmp_path: Path):
    plan = load_plan(write(tmp_path, EVERY_KIND))
    assert plan.pattern == "sequential"
    first, looped, routed, handed, chat, legal = plan.steps
    assert first == AgentStep(agent="analyst")
    assert isinstance(looped, LoopStep) and looped.body == [
        AgentStep(agent="writer"),
        AgentStep(agent="critic"),
    ]
    assert looped.until == Until(agent="critic", field="verdict", one_of=["ready", "approved"])
    assert (looped.max_iterations, looped.max_cost_usd, looped.output_from) == (4, 0.5, "writer")
    assert isinstance(routed, RouterStep) and routed.max_routes == 2
    assert routed.routes["billing"] == AgentStep(agent="billing-agent")
    assert isinstance(routed.routes["tech"], SequentialStep)
    inner = routed.routes["review"]
    assert isinstance(inner, LoopStep) and isinstance(inner.body[1], GateStep)
    assert isinstance(handed, HandoffStep) and handed.agents["tech"] == ["triage"]
    assert isinstance(chat, GroupChatStep) and chat.until == Until(phrase="CONSENSUS")
    assert isinstance(legal, GateStep) and legal.on_timeout == "reject"
    assert legal.approvers == ["alice", "role:legal"]
    assert plan_gates(plan.steps) == ["inner-ok", "legal"]
    assert {"triage", "moderator", "billing-agent", "tech"} <= set(plan_agents(plan.steps))


@pytest.mark.parametrize(
    ("step", "message"),
    [
        (
            "{kind: loop, body: [writer], max_iterations: 51}",
            r": loop\.max_iterations: .* 50",
        ),
        ("{kind: loop, body: [Writer]}", r": loop\.body\.0\.agent\.agent"),
        (
            "{kind: loop, body: [writer], until: 'verdict'}",
            r": until: 'verdict' has no '='",
        ),
        ("{kind: loop, body: [writer], untill: x=1}", r": loop\.untill: Extra inputs"),
        ("{kind: loop, body: [writer], output_from: critic}", r"\.output_from"),
        ("{kind: loop, body: [writer], until: critic.v=ok}", r"\.until\.agent"),
        ("{kind: router, agent: r, routes: {done: a}}", r": router\.routes: .*'done'"),
        ("{kind: router, agent: r, routes: {a: Bad}}", r": router\.routes\.a\.agent"),
        ("{kind: handoff, start: x, agents: {a: []}}", r": .*start agent 'x'"),
        (
            "{kind: group_chat, manager: m, participants: [a]}",
            r": group_chat\.participants: .* 2",
        ),
        ("{kind: gate, name: Legal}", r": gate\.name: String should match"),
        ("{kind: gate, name: g, timeout_s: 0}", r": gate\.timeout_s"),
        ("{kind: gate, name: g, approvers: ['role:']}", r": gate\.approvers"),
    ],
)
def test_a_bad_step_is_refused_naming_the_path_and_the_field(
    tmp_path: Path, step: str, message: str
):
    path = write(tmp_path, f"pattern: sequential\nsteps:\n  - {step}\n")
    with pytest.raises(ChorusInputError, match=r"steps\[0\]" + message) as caught:
        load_plan(path)
    assert str(caught.value).startswith(f"--plan: {path}")


def test_a_gate_name_used_twice_is_refused(tmp_path: Path):
    path = write(
        tmp_path,
        "pattern: sequential\nsteps:\n  - {kind: gate, name: ok}\n"
        "  - {kind: loop, body: [writer, {kind: gate, name: ok}]}\n",
    )
    with pytest.raises(ChorusInputError, match="gate 'ok' appears 2 times"):
        load_plan(path)
    with pytest.raises(ChorusInputError, match="gate 'ok' appears 2 times"):
        check_plan([gate("ok"), router("r", {"a": gate("ok")})])


def test_the_top_level_still_needs_a_pattern(tmp_path: Path):
    path = write(tmp_path, "pattern: loop\nsteps: [writer]\n")
    with pytest.raises(ChorusInputError, match="needs 'pattern: sequential'"):
        load_plan(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("critic.verdict=ready", Until(agent="critic", field="verdict", equals="ready")),
        (" critic.verdict = Ready ", Until(agent="critic", field="verdict", equals="Ready")),
        (
            "critic.verdict=ready|approved",
            Until(agent="critic", field="verdict", one_of=["ready", "approved"]),
        ),
        ("critic.review.score=3", Until(agent="critic", field="review.score", equals=3)),
        ('verdict="3"', Until(field="verdict", equals="3")),
        ("ok=true", Until(field="ok", equals=True)),
        ("phrase:APPROVED", Until(phrase="APPROVED")),
        ("critic:phrase: looks good", Until(agent="critic", phrase="looks good")),
    ],
)
def test_parse_until_forms(text: str, expected: Until):
    assert parse_until(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty predicate"),
        ("critic", "has no '='"),
        ("Critic.verdict=ok", "'Critic' .* is not an agent name"),
        ("critic.9=ok", "'9' .* is not a field path"),
        ("critic.verdict=", "empty value"),
        ("critic.verdict=a||b", "empty value"),
        ("phrase:", "no text after 'phrase:'"),
        ("phrase:" + "x" * 201, "201 characters, the limit is 200"),
        ("v=" + "|".join(str(i) for i in range(21)), "21 values .* the limit is 20"),
    ],
)
def test_parse_until_errors_name_where(text: str, message: str):
    with pytest.raises(ChorusInputError, match=f"^--loop-until: .*{message}"):
        parse_until(text, where="--loop-until")


def test_builders_return_the_contract_models():
    built = loop(["writer", "critic"], until="critic.verdict=ready", output_from="writer")
    assert built == LoopStep(
        body=[AgentStep(agent="writer"), AgentStep(agent="critic")],
        until=Until(agent="critic", field="verdict", equals="ready"),
        output_from="writer",
    )
    assert until("verdict", one_of=["a", "b"], agent="critic").one_of == ["a", "b"]
    routed = router("triage", {"billing": "billing", "fix": loop(["fixer"], max_iterations=2)})
    assert routed.routes["billing"] == AgentStep(agent="billing")
    assert isinstance(routed.routes["fix"], LoopStep)
    assert handoff("a", {"a": ["b"], "b": []}, max_hops=2).max_hops == 2
    chat = group_chat("mod", ["a", "b"], until="phrase:DONE", max_turns=3)
    assert chat.until == Until(phrase="DONE") and chat.max_turns == 3
    legal = gate("legal", question="Ship?", approvers=("alice",), timeout_s=60)
    assert legal == GateStep(name="legal", question="Ship?", approvers=["alice"], timeout_s=60)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: loop(["writer"], max_iterations=51), "max_iterations: .*less than or equal to 50"),
        (lambda: loop("writer"), "loop.body: give a list"),
        (lambda: loop(["Writer"]), "loop.body: 'Writer' is not an agent name"),
        (lambda: loop(["writer"], max_cost_usd=0), "max_cost_usd: .*greater than 0"),
        (lambda: loop(["writer"], output_from="critic"), "loop.output_from: 'critic'"),
        (lambda: loop(["writer"], until="critic.v=1"), "loop.until.agent: 'critic'"),
        (lambda: loop(["writer"], until="nope"), "loop.until: 'nope' has no '='"),
        (lambda: until("verdict"), "needs 'equals' or 'one_of'"),
        (lambda: until(), "either 'field'"),
        (lambda: router("r", {"done": "a"}), "routes: .*'done'"),
        (lambda: router("r", {"a": "B"}), r"router.routes.a: 'B' is not an agent name"),
        (lambda: router("r", {}), "routes: .*at least 1"),
        (lambda: handoff("a", {"a": ["b"]}), "may hand to 'b'"),
        (lambda: group_chat("m", ["a"]), "participants: .*at least 2"),
        (lambda: group_chat("m", ["a", "a"]), "each agent once"),
        (lambda: group_chat("m", ["a", "b"], max_turns=51), "max_turns"),
        (lambda: group_chat("m", ["a", "b"], until="x.v=1"), "until.agent: 'x'"),
        (lambda: gate("Legal"), "name: String should match"),
        (lambda: gate("g", approvers="alice"), "gate.approvers: give a list"),
        (lambda: gate("g", on_timeout="later"), "on_timeout"),  # type: ignore[arg-type]
        (lambda: gate("g", timeout_s=400 * 24 * 3600.0), "timeout_s: .*less than or equal"),
    ],
)
def test_builder_errors_name_the_field_and_limit(build, message: str):
    with pytest.raises(ChorusInputError, match=message):
        build()


def test_loop_flags_make_the_agents_a_loop():
    steps = parse_agents("writer,critic", "sequential", None)
    assert (
        loop_from_flags(
            steps, until_text=None, max_iterations=None, max_cost_usd=None, output_from=None
        )
        == steps
    )
    [looped] = loop_from_flags(
        steps,
        until_text="critic.verdict=ready",
        max_iterations=None,
        max_cost_usd=1.5,
        output_from="writer",
    )
    assert isinstance(looped, LoopStep) and looped.body == steps
    assert (looped.max_iterations, looped.max_cost_usd, looped.output_from) == (3, 1.5, "writer")
    [counted] = loop_from_flags(
        steps, until_text=None, max_iterations=2, max_cost_usd=None, output_from=None
    )
    assert isinstance(counted, LoopStep) and counted.until is None
    assert counted.max_iterations == 2


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"max_iterations": 0}, "^--max-iterations: 0, must be between 1 and 50"),
        ({"max_iterations": 51}, "^--max-iterations: 51"),
        ({"max_iterations": 2, "max_cost_usd": -1.0}, "^--max-cost-usd: -1, must be more than 0"),
        ({"max_cost_usd": 1.0}, "^--max-cost-usd: only shapes a loop"),
        ({"output_from": "writer"}, "^--loop-output: only shapes a loop"),
        ({"until_text": "critic=ready|"}, "^--loop-until: .*empty value"),
        ({"until_text": "editor.v=ok"}, "^--loop-until: 'editor' is not one of the --agents"),
        ({"max_iterations": 2, "output_from": "editor"}, "^--loop-output: 'editor' is not one"),
    ],
)
def test_loop_flag_errors_name_the_flag(flags: dict[str, object], message: str):
    steps = parse_agents("writer,critic", "sequential", None)
    given: dict[str, object] = {
        "until_text": None,
        "max_iterations": None,
        "max_cost_usd": None,
        "output_from": None,
        **flags,
    }
    with pytest.raises(ChorusInputError, match=message):
        loop_from_flags(steps, **given)  # type: ignore[arg-type]
