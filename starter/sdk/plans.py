"""Plan builders: loops, routers, hand-offs, group chats and gates, as plain function calls.

Each builder returns the contract model the run's input carries
(:mod:`chorus.contracts.models`, :mod:`chorus.contracts.control`); a string where a step is
expected is an agent step. Errors name the field and the limit (:class:`ChorusInputError`)::

    from starter.sdk import gate, loop, until

    steps = [
        "analyst",
        loop(["writer", "critic"], until=until("verdict", equals="ready", agent="critic"),
             max_iterations=4, output_from="writer"),
        gate("legal", question="Publish this?", approvers=["role:legal"]),
    ]
    await chorus.runs.start_sequential("Write the launch note", steps)

:func:`parse_until` reads the short text form the CLI's ``--loop-until`` and plan files
take (``reviewer.verdict=ready``, ``reviewer.verdict=ready|approved``, ``phrase:APPROVED``).
:func:`check_plan` holds the rules across steps that no single model can check (gate names
unique in a plan; a loop's ``until`` and ``output_from`` naming one of its steps).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Literal

from chorus.contracts.control import (
    GateStep,
    GroupChatStep,
    HandoffStep,
    Until,
)
from chorus.contracts.models import (
    AGENT_NAME_PATTERN,
    AgentStep,
    LoopStep,
    ParallelStep,
    RouterStep,
    SequentialStep,
    Step,
    plan_agents,
    plan_gates,
    step_label,
)
from starter.sdk.client_base import validated
from starter.sdk.sdk_errors import ChorusInputError

__all__ = [
    "check_plan",
    "gate",
    "group_chat",
    "handoff",
    "loop",
    "parse_until",
    "router",
    "until",
]

UntilValue = str | int | float | bool
_AGENT = re.compile(AGENT_NAME_PATTERN)
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_PHRASE_PREFIX = "phrase:"


def _as_step(item: str | Step) -> Step:
    return AgentStep(agent=item) if isinstance(item, str) else item


def _steps(field: str, items: Sequence[str | Step]) -> list[Step]:
    """``items`` with strings as agent steps.

    Raises:
        ChorusInputError: ``items`` is a single string (a common slip for ``[name]``), or an
            agent name is invalid; the message names ``field``.
    """
    if isinstance(items, str):
        raise ChorusInputError(f"{field}: give a list of steps, e.g. [{items!r}], not a string")
    try:
        return [_as_step(item) for item in items]
    except ValueError as exc:  # pydantic's ValidationError: a bad agent name
        bad = next((i for i in items if isinstance(i, str) and not _AGENT.match(i)), None)
        raise ChorusInputError(
            f"{field}: {bad!r} is not an agent name ({AGENT_NAME_PATTERN})"
            if bad is not None
            else f"{field}: {exc}"
        ) from None


def until(
    field: str | None = None,
    *,
    equals: UntilValue | None = None,
    one_of: Sequence[UntilValue] | None = None,
    phrase: str | None = None,
    agent: str | None = None,
) -> Until:
    """The predicate that ends a loop or a group chat.

    Args:
        field: Dotted path into the tested output parsed as a JSON object (``verdict``,
            ``review.verdict``); with ``equals`` or ``one_of``.
        equals: The value that ends it (strings compare without case and outer spaces).
        one_of: Values any of which ends it (1-20).
        phrase: Instead of ``field``: ends it when the output contains this text
            (case-insensitive, 1-200 characters).
        agent: Whose output is tested (default: the last step of the iteration, or the last
            speaker of a chat).

    Raises:
        ChorusInputError: Neither or both of ``field`` and ``phrase``; ``field`` without
            ``equals``/``one_of``; a bad field path, agent name or a limit broken.
    """
    return validated(
        Until,
        field=field,
        equals=equals,
        one_of=list(one_of) if one_of is not None else None,
        phrase=phrase,
        agent=agent,
    )


def parse_until(text: str, *, where: str = "until") -> Until:
    """Read the short form of a predicate.

    Forms:

    - ``critic.verdict=ready``: the agent ``critic``'s output has ``verdict`` equal to
      ``ready`` (the first dotted part is the agent; the rest the field, e.g.
      ``critic.review.verdict=ready``);
    - ``verdict=ready``: no dot, no agent: the last step's output is tested;
    - ``critic.verdict=ready|approved``: any of the values;
    - ``phrase:APPROVED`` or ``critic:phrase:APPROVED``: the output contains the text.

    Values that read as JSON numbers or booleans (``3``, ``0.5``, ``true``) compare as such;
    quote one (``"3"``) to compare it as text.

    Args:
        text: The predicate as written.
        where: Where it was written, e.g. ``--loop-until``; starts each error message.

    Raises:
        ChorusInputError: The text matches none of the forms; the message names ``where``,
            quotes the text and shows the forms.
    """
    forms = "write AGENT.FIELD=VALUE, AGENT.FIELD=V1|V2, FIELD=VALUE or [AGENT:]phrase:TEXT"
    raw = text.strip()
    if not raw:
        raise ChorusInputError(f"{where}: empty predicate; {forms}")
    head, sep, rest = raw.partition(":")
    if sep and head.strip() == "phrase":
        return _phrase(rest, None, where, text)
    if sep and rest.lstrip().startswith(_PHRASE_PREFIX) and _AGENT.match(head.strip()):
        return _phrase(rest.lstrip()[len(_PHRASE_PREFIX) :], head.strip(), where, text)
    path, sep, value_text = raw.partition("=")
    path = path.strip()
    if not sep:
        raise ChorusInputError(f"{where}: {text!r} has no '=' and is not a phrase; {forms}")
    agent: str | None = None
    field = path
    if "." in path:
        agent, _, field = path.partition(".")
        if not _AGENT.match(agent):
            raise ChorusInputError(
                f"{where}: {agent!r} in {text!r} is not an agent name ({AGENT_NAME_PATTERN})"
            )
    if not _FIELD.match(field):
        raise ChorusInputError(
            f"{where}: {field!r} in {text!r} is not a field path (letters, digits and _, "
            f"parts joined by '.'); {forms}"
        )
    values = [_value(v) for v in value_text.split("|")]
    if any(v == "" for v in values):
        raise ChorusInputError(f"{where}: {text!r} has an empty value after '='; {forms}")
    if len(values) > 20:
        raise ChorusInputError(f"{where}: {len(values)} values in {text!r}, the limit is 20")
    try:
        if len(values) == 1:
            return until(field, equals=values[0], agent=agent)
        return until(field, one_of=values, agent=agent)
    except ChorusInputError as exc:
        raise ChorusInputError(f"{where}: {text!r}: {exc}") from None


def _phrase(phrase: str, agent: str | None, where: str, text: str) -> Until:
    phrase = phrase.strip()
    if not phrase:
        raise ChorusInputError(f"{where}: {text!r} has no text after 'phrase:'")
    if len(phrase) > 200:
        raise ChorusInputError(f"{where}: the phrase is {len(phrase)} characters, the limit is 200")
    try:
        return until(phrase=phrase, agent=agent)
    except ChorusInputError as exc:
        raise ChorusInputError(f"{where}: {text!r}: {exc}") from None


def _value(text: str) -> UntilValue:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, bool | int | float) else text


def _until_of(value: Until | str | None, where: str) -> Until | None:
    return parse_until(value, where=where) if isinstance(value, str) else value


def loop(
    body: Sequence[str | Step],
    *,
    until: Until | str | None = None,
    max_iterations: int = 3,
    max_cost_usd: float | None = None,
    output_from: str | None = None,
    name: str | None = None,
) -> LoopStep:
    """Repeat ``body`` until ``until`` holds, ``max_iterations`` ran or the cost is reached.

    Args:
        body: Steps of one iteration, in order (agent names or steps; 1-50).
        until: The ending predicate (:func:`until`, or its text form, see
            :func:`parse_until`); ``None``: exactly ``max_iterations`` iterations.
        max_iterations: Iterations at most (1-50).
        max_cost_usd: Ends the loop once its calls cost this much (USD, > 0, <= 10,000).
        output_from: Whose output is the loop's output (an agent or step name of the body;
            default the last step).
        name: The step's name in progress and results (<= 64 characters).

    Raises:
        ChorusInputError: A limit broken or a bad name; the message names the field.
    """
    steps = _steps("loop.body", body)
    step = validated(
        LoopStep,
        body=steps,
        until=_until_of(until, "loop.until"),
        max_iterations=max_iterations,
        max_cost_usd=max_cost_usd,
        output_from=output_from,
        name=name,
    )
    _raise_problems(_loop_problems(step, "loop"))
    return step


def router(
    agent: str,
    routes: Mapping[str, str | Step],
    *,
    max_routes: int = 1,
    name: str | None = None,
) -> RouterStep:
    """An agent picks the route that runs next (or ``done``), up to ``max_routes`` times.

    Args:
        agent: The router agent (the workflow sets its output schema).
        routes: Route name (``[a-z][a-z0-9_-]*``, not ``done``) -> the step it runs (an agent
            name or a step); 1-20 routes.
        max_routes: Routes one router step may run (1-20; 1: pick once).
        name: The step's name in progress and results.

    Raises:
        ChorusInputError: A bad route or agent name, or a limit broken.
    """
    if not isinstance(routes, Mapping):
        raise ChorusInputError("router.routes: give a mapping of route name -> step")
    built = {
        route: _steps(f"router.routes.{route}", [target])[0] for route, target in routes.items()
    }
    return validated(RouterStep, agent=agent, routes=built, max_routes=max_routes, name=name)


def handoff(
    start: str,
    agents: Mapping[str, Sequence[str]],
    *,
    max_hops: int = 4,
    name: str | None = None,
) -> HandoffStep:
    """Agents hand the conversation to one another until one answers.

    Args:
        start: The agent that takes the conversation first (a key of ``agents``).
        agents: Every agent of the hand-off -> the agents it may hand to (``[]``: it must
            answer); 1-12 agents.
        max_hops: Hand-offs allowed (0-20); one more fails the step with ``HandoffLimit``.
        name: The step's name in progress and results.

    Raises:
        ChorusInputError: ``start`` or a target not among ``agents``, or a limit broken.
    """
    return validated(
        HandoffStep,
        start=start,
        agents={k: list(v) for k, v in agents.items()},
        max_hops=max_hops,
        name=name,
    )


def group_chat(
    manager: str,
    participants: Sequence[str],
    *,
    until: Until | str | None = None,
    max_turns: int = 6,
    max_cost_usd: float | None = None,
    name: str | None = None,
) -> GroupChatStep:
    """A manager agent picks who speaks next among ``participants``, turn by turn.

    Args:
        manager: The agent that picks the next speaker (or ``done``).
        participants: The agents that may speak (2-12, each once).
        until: Ends the chat when a speaker's message satisfies it (or its text form).
        max_turns: Speaker turns before the chat ends (1-50).
        max_cost_usd: Ends the chat once its calls cost this much (USD, > 0).
        name: The step's name in progress and results.

    Raises:
        ChorusInputError: A bad agent name, a repeated participant, or a limit broken.
    """
    if isinstance(participants, str):
        raise ChorusInputError(
            f"group_chat.participants: give a list of agents, not the string {participants!r}"
        )
    step = validated(
        GroupChatStep,
        manager=manager,
        participants=list(participants),
        until=_until_of(until, "group_chat.until"),
        max_turns=max_turns,
        max_cost_usd=max_cost_usd,
        name=name,
    )
    _raise_problems(_chat_problems(step, "group_chat"))
    return step


def gate(
    name: str,
    *,
    question: str = "Approve this?",
    approvers: Sequence[str] = (),
    timeout_s: float | None = None,
    on_timeout: Literal["approve", "reject", "fail"] = "fail",
    remind_after_s: float | None = None,
) -> GateStep:
    """Stop the run until people approve, reject or edit the text that flows on.

    Args:
        name: The gate's name (``[a-z][a-z0-9_-]*``, <= 64), unique in its plan; decisions
            name it (``chorus approvals approve RUN --gate NAME``).
        question: What the approvers are asked (1-500 characters).
        approvers: User names and ``role:<role>`` entries (roles from
            ``CHORUS_APPROVER_ROLES``); empty: anyone may decide.
        timeout_s: Seconds to wait before ``on_timeout`` applies (1 s to one year); ``None``:
            no limit.
        on_timeout: ``approve`` (go on), ``reject`` (the run fails as rejected) or ``fail``
            (the run fails with ``GateTimedOut``).
        remind_after_s: Announce the pending gate again on the run's callback after this many
            seconds (once).

    Raises:
        ChorusInputError: A bad name or approver entry, or a limit broken (the message names
            the field; the longest wait is ``MAX_GATE_WAIT_S`` seconds).
    """
    if isinstance(approvers, str):
        raise ChorusInputError(f"gate.approvers: give a list, e.g. [{approvers!r}]")
    return validated(
        GateStep,
        name=name,
        question=question,
        approvers=list(approvers),
        timeout_s=timeout_s,
        on_timeout=on_timeout,
        remind_after_s=remind_after_s,
    )


# --- rules across steps --------------------------------------------------------------------


def check_plan(steps: Sequence[Step], *, where: str = "plan") -> None:
    """Refuse what no single step model can see: repeated gate names, dangling references.

    Checks: each gate name appears once in the plan (decisions name the gate); a loop's
    ``until.agent`` and ``output_from`` and a group chat's ``until.agent`` name one of its
    own agents or steps.

    Args:
        steps: The plan's top-level steps (nested ones are visited).
        where: Where the plan comes from (e.g. ``--plan plan.yaml``); starts the message.

    Raises:
        ChorusInputError: The first problem found, naming the gate or the step's field.
    """
    names = plan_gates(list(steps))
    repeated = list(dict.fromkeys(n for n in names if names.count(n) > 1))
    if repeated:
        raise ChorusInputError(
            f"{where}: gate {repeated[0]!r} appears {names.count(repeated[0])} times; gate "
            "names must be unique in a plan (decisions name the gate)"
        )
    problems: list[str] = []

    def visit(step: Step, path: str) -> None:
        if isinstance(step, LoopStep):
            problems.extend(_loop_problems(step, path))
            inner: list[tuple[str, Step]] = [
                (f"{path}.body[{i}]", s) for i, s in enumerate(step.body)
            ]
        elif isinstance(step, RouterStep):
            inner = [(f"{path}.routes.{k}", s) for k, s in step.routes.items()]
        elif isinstance(step, SequentialStep):
            inner = [(f"{path}.steps[{i}]", s) for i, s in enumerate(step.steps)]
        elif isinstance(step, ParallelStep):
            inner = [(f"{path}.branches[{i}]", s) for i, s in enumerate(step.branches)]
        else:
            if isinstance(step, GroupChatStep):
                problems.extend(_chat_problems(step, path))
            inner = []
        for sub_path, sub in inner:
            visit(sub, sub_path)

    for i, step in enumerate(steps):
        visit(step, f"steps[{i}]")
    if problems:
        raise ChorusInputError(f"{where}: {problems[0]}")


def _loop_problems(step: LoopStep, path: str) -> list[str]:
    agents = plan_agents(list(step.body))
    names = list(dict.fromkeys([*agents, *(step_label(s) for s in step.body)]))
    problems = []
    if step.until is not None and step.until.agent and step.until.agent not in agents:
        problems.append(
            f"{path}.until.agent: {step.until.agent!r} is not an agent of the loop's body "
            f"({', '.join(agents)})"
        )
    if step.output_from is not None and step.output_from not in names:
        problems.append(
            f"{path}.output_from: {step.output_from!r} is not a step of the loop's body "
            f"({', '.join(names)})"
        )
    return problems


def _chat_problems(step: GroupChatStep, path: str) -> list[str]:
    speakers = [*step.participants, step.manager]
    if step.until is not None and step.until.agent and step.until.agent not in speakers:
        return [
            f"{path}.until.agent: {step.until.agent!r} is not a participant "
            f"({', '.join(step.participants)})"
        ]
    return []


def _raise_problems(problems: list[str]) -> None:
    if problems:
        raise ChorusInputError(problems[0])
