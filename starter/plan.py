"""Turn the CLI's ``--agents`` text or a ``--plan`` YAML file into orchestration steps.

``--agents`` is a comma-separated list of steps; within one step:

- ``a>b>c`` is a sequential sub-pipeline (run as a child workflow), handy inside a parallel run;
- ``a|b|c`` is a parallel group merged by the run's aggregator, handy inside a sequential run.

With ``--loop-until``/``--max-iterations`` (:func:`loop_from_flags`) a sequential run's steps
become the body of one loop.

Deeper nesting comes from a plan file: YAML with ``pattern`` (``sequential``/``parallel``),
``steps`` (a list of steps), and for a parallel plan ``aggregator`` and ``min_successes``.
A step is an agent name (a string) or a mapping with a ``kind``:

- ``{kind: sequential, steps: [...]}``: steps in order, as a child workflow;
- ``{kind: parallel, branches: [...], aggregator: NAME, min_successes: N}``: fan out, fan in;
- ``{kind: loop, body: [...], until: "reviewer.verdict=ready", max_iterations: 3,
  max_cost_usd: 0.5, output_from: writer}``: repeat the body until the predicate holds
  (``until`` also as a mapping: ``{agent, field, equals | one_of}`` or ``{phrase}``);
- ``{kind: router, agent: NAME, routes: {billing: agent-or-step, ...}, max_routes: 1}``: an
  agent picks the route that runs;
- ``{kind: handoff, start: NAME, agents: {triage: [billing], billing: []}, max_hops: 4}``:
  agents hand the conversation on until one answers;
- ``{kind: group_chat, manager: NAME, participants: [a, b], until: ..., max_turns: 6}``: a
  manager picks each next speaker;
- ``{kind: gate, name: NAME, question: ..., approvers: [alice, "role:legal"], timeout_s: N,
  on_timeout: fail}``: wait for people to approve, reject or edit (names unique in a plan).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from chorus.contracts.control import MAX_LOOP_ITERATIONS
from chorus.contracts.models import (
    FILE_STRICTNESS,
    MAX_PLAN_DEPTH,
    AgentStep,
    ParallelStep,
    SequentialStep,
    Step,
    plan_agents,
    step_label,
)
from starter.sdk import ChorusInputError
from starter.sdk.plans import check_plan, loop, parse_until

_STEP = TypeAdapter(Step)
_PLAN_KEYS = ("pattern", "steps", "aggregator", "min_successes")
_MAX_NESTING_SEEN = 64
"""Nesting beyond which a plan file is refused outright (the limit that runs is
``MAX_PLAN_DEPTH``); it also stops a YAML alias that contains itself."""
NO_AGGREGATOR = frozenset({"none", "null", ""})
"""``aggregator:`` values meaning no aggregator, as ``--aggregator none`` on the CLI."""


@dataclass(frozen=True)
class Plan:
    """A parsed plan: the pattern, its top-level steps, and parallel options."""

    pattern: str
    steps: list[Step]
    aggregator: str | None = "aggregator"
    min_successes: int = 1


def parse_agents(text: str, pattern: str, aggregator: str | None) -> list[Step]:
    """Parse ``--agents`` (see module docstring).

    Raises:
        ChorusInputError: Empty items or an invalid agent name (the message quotes the item).

    """
    steps: list[Step] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            raise ChorusInputError(f"--agents: empty item in {text!r}")
        try:
            if ">" in item and "|" in item:
                raise ChorusInputError(
                    f"--agents: {item!r} mixes '>' and '|'; use --plan FILE for deeper nesting"
                )
            if ">" in item:
                steps.append(
                    SequentialStep(steps=[AgentStep(agent=a.strip()) for a in item.split(">")])
                )
            elif "|" in item:
                steps.append(
                    ParallelStep(
                        branches=[AgentStep(agent=a.strip()) for a in item.split("|")],
                        aggregator=aggregator,
                    )
                )
            else:
                steps.append(AgentStep(agent=item))
        except ValidationError as exc:
            raise ChorusInputError(f"--agents: invalid step {item!r}: {_first(exc)}") from exc
    return steps


def load_plan(path: Path) -> Plan:
    """Read a plan file (see module docstring).

    Raises:
        ChorusInputError: Unreadable file, invalid YAML, or a step that fails validation.

    """
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ChorusInputError(f"--plan: cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ChorusInputError(f"--plan: {path} is not valid YAML: {exc}") from exc
    except RecursionError:
        raise ChorusInputError(
            f"--plan: {path} nests too deep to read; a plan has at most {MAX_PLAN_DEPTH} levels"
        ) from None
    return plan_from_data(data, f"--plan: {path}")


def plan_from_data(data: Any, where: str = "plan") -> Plan:
    """Check a plan already parsed from YAML or JSON (the HTTP API's ``plan`` field).

    Args:
        data: A mapping with ``pattern``, ``steps`` and, for a parallel plan, ``aggregator``
            and ``min_successes`` (see the module docstring for the step forms).
        where: How errors name the plan, e.g. ``"--plan: review.yaml"`` or ``"plan"``.

    Raises:
        ChorusInputError: Not a mapping, an unknown key, no steps, or a step that fails
            validation (the message names the step's position and the rule).
    """
    if not isinstance(data, dict) or data.get("pattern") not in ("sequential", "parallel"):
        raise ChorusInputError(f"{where} needs 'pattern: sequential' or 'pattern: parallel'")
    unknown = sorted(str(key) for key in data if key not in _PLAN_KEYS)
    if unknown:
        raise ChorusInputError(
            f"{where}: unknown key(s) {', '.join(unknown)} (a plan has {', '.join(_PLAN_KEYS)})"
        )
    items = data.get("steps")
    if not isinstance(items, list) or not items:
        raise ChorusInputError(f"{where} needs a non-empty 'steps' list")
    try:
        steps = [
            _step(item, f"{where.removeprefix('--plan: ')}: steps[{i}]")
            for i, item in enumerate(items)
        ]
    except RecursionError:
        # A plan nested hundreds deep, or a YAML alias that contains itself (&a [*a]).
        raise ChorusInputError(
            f"{where} nests too deep or refers to itself through a YAML alias; a plan "
            f"has at most {MAX_PLAN_DEPTH} levels"
        ) from None
    check_plan(steps, where=where)
    aggregator = data.get("aggregator", "aggregator")
    if aggregator is not None and str(aggregator).lower() in NO_AGGREGATOR:
        aggregator = None  # as `--aggregator none`: join the outputs under headings
    try:
        min_successes = int(data.get("min_successes", 1))
    except (TypeError, ValueError):
        raise ChorusInputError(
            f"{where}: min_successes must be a whole number, not {data.get('min_successes')!r}"
        ) from None
    return Plan(
        pattern=data["pattern"],
        steps=steps,
        aggregator=aggregator,
        min_successes=min_successes,
    )


def _normalise(item: Any, depth: int = 0) -> Any:
    if depth > _MAX_NESTING_SEEN:
        raise RecursionError  # reported by load_plan, long before Python's own limit
    if isinstance(item, str):
        return {"kind": "agent", "agent": item}
    if isinstance(item, dict):
        out = dict(item)
        aggregator = out.get("aggregator")
        if isinstance(aggregator, str) and aggregator.lower() in NO_AGGREGATOR:
            out["aggregator"] = None
        for key in ("steps", "branches", "body"):
            if isinstance(out.get(key), list):
                out[key] = [_normalise(x, depth + 1) for x in out[key]]
        if isinstance(out.get("routes"), dict):
            out["routes"] = {k: _normalise(v, depth + 1) for k, v in out["routes"].items()}
        if isinstance(out.get("until"), str):
            out["until"] = parse_until(out["until"], where="until").model_dump(exclude_none=True)
        if "kind" not in out and "agent" in out:
            out["kind"] = "agent"
        return out
    return item


def _step(item: Any, where: str) -> Step:
    try:
        return _STEP.validate_python(_normalise(item), extra=FILE_STRICTNESS)
    except ValidationError as exc:
        raise ChorusInputError(f"--plan: {where}: {_first(exc)}") from exc
    except ChorusInputError as exc:  # a predicate's text form (parse_until)
        raise ChorusInputError(f"--plan: {where}: {exc}") from exc


def loop_from_flags(
    steps: list[Step],
    *,
    until_text: str | None,
    max_iterations: int | None,
    max_cost_usd: float | None,
    output_from: str | None,
) -> list[Step]:
    """``chorus run sequential``'s loop flags: the steps become the body of one loop.

    Without ``--loop-until`` and ``--max-iterations`` the steps come back unchanged (and
    ``--max-cost-usd``/``--loop-output`` are refused: they only shape a loop).

    Args:
        steps: The ``--agents`` steps (the loop's body).
        until_text: ``--loop-until``, the predicate's text form (see
            :func:`starter.sdk.plans.parse_until`).
        max_iterations: ``--max-iterations`` (1-50; default 3).
        max_cost_usd: ``--max-cost-usd``: ends the loop once its calls cost this much (USD,
            > 0, <= 10,000).
        output_from: ``--loop-output``: the agent whose output is the loop's output.

    Returns:
        ``[loop]``, or ``steps`` unchanged.

    Raises:
        ChorusInputError: A bad value; the message names the flag and the limit.
    """
    if until_text is None and max_iterations is None:
        given = [
            flag
            for flag, value in (("--max-cost-usd", max_cost_usd), ("--loop-output", output_from))
            if value is not None
        ]
        if given:
            raise ChorusInputError(
                f"{given[0]}: only shapes a loop; add --loop-until or --max-iterations"
            )
        return steps
    if max_iterations is not None and not 1 <= max_iterations <= MAX_LOOP_ITERATIONS:
        raise ChorusInputError(
            f"--max-iterations: {max_iterations}, must be between 1 and {MAX_LOOP_ITERATIONS}"
        )
    if max_cost_usd is not None and not 0 < max_cost_usd <= 10_000:
        raise ChorusInputError(
            f"--max-cost-usd: {max_cost_usd:g}, must be more than 0 and at most 10000 (USD)"
        )
    until = parse_until(until_text, where="--loop-until") if until_text is not None else None
    agents = plan_agents(steps)
    names = list(dict.fromkeys([*agents, *(step_label(s) for s in steps)]))
    if output_from is not None and output_from not in names:
        raise ChorusInputError(
            f"--loop-output: {output_from!r} is not one of the loop's steps ({', '.join(names)})"
        )
    if until is not None and until.agent is not None and until.agent not in agents:
        raise ChorusInputError(
            f"--loop-until: {until.agent!r} is not one of the --agents ({', '.join(agents)})"
        )
    return [
        loop(
            steps,
            until=until,
            max_iterations=max_iterations or 3,
            max_cost_usd=max_cost_usd,
            output_from=output_from,
        )
    ]


def _first(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    return f"{loc}: {err['msg']}" if loc else err["msg"]
