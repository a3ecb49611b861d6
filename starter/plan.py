"""Turn the CLI's ``--agents`` text or a ``--plan`` YAML file into orchestration steps.

``--agents`` is a comma-separated list of steps; within one step:

- ``a>b>c`` is a sequential sub-pipeline (run as a child workflow), handy inside a parallel run;
- ``a|b|c`` is a parallel group merged by the run's aggregator, handy inside a sequential run.

Deeper nesting comes from a plan file: YAML with ``pattern`` (``sequential``/``parallel``),
``steps`` (a list whose items are agent names or ``{kind: sequential, steps: [...]}`` /
``{kind: parallel, branches: [...], aggregator: NAME, min_successes: N}``), and for a parallel
plan ``aggregator`` and ``min_successes``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from chorus.contracts.models import (
    FILE_STRICTNESS,
    MAX_PLAN_DEPTH,
    AgentStep,
    ParallelStep,
    SequentialStep,
    Step,
)
from starter.sdk import ChorusInputError

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
    if not isinstance(data, dict) or data.get("pattern") not in ("sequential", "parallel"):
        raise ChorusInputError(f"--plan: {path} needs 'pattern: sequential' or 'pattern: parallel'")
    unknown = sorted(str(key) for key in data if key not in _PLAN_KEYS)
    if unknown:
        raise ChorusInputError(
            f"--plan: {path}: unknown key(s) {', '.join(unknown)} "
            f"(a plan has {', '.join(_PLAN_KEYS)})"
        )
    items = data.get("steps")
    if not isinstance(items, list) or not items:
        raise ChorusInputError(f"--plan: {path} needs a non-empty 'steps' list")
    try:
        steps = [_step(item, f"{path}: steps[{i}]") for i, item in enumerate(items)]
    except RecursionError:
        # A plan nested hundreds deep, or a YAML alias that contains itself (&a [*a]).
        raise ChorusInputError(
            f"--plan: {path} nests too deep or refers to itself through a YAML alias; a plan "
            f"has at most {MAX_PLAN_DEPTH} levels"
        ) from None
    aggregator = data.get("aggregator", "aggregator")
    if aggregator is not None and str(aggregator).lower() in NO_AGGREGATOR:
        aggregator = None  # as `--aggregator none`: join the outputs under headings
    try:
        min_successes = int(data.get("min_successes", 1))
    except (TypeError, ValueError):
        raise ChorusInputError(
            f"--plan: {path}: min_successes must be a whole number, not "
            f"{data.get('min_successes')!r}"
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
        for key in ("steps", "branches"):
            if isinstance(out.get(key), list):
                out[key] = [_normalise(x, depth + 1) for x in out[key]]
        if "kind" not in out and "agent" in out:
            out["kind"] = "agent"
        return out
    return item


def _step(item: Any, where: str) -> Step:
    try:
        return _STEP.validate_python(_normalise(item), extra=FILE_STRICTNESS)
    except ValidationError as exc:
        raise ChorusInputError(f"--plan: {where}: {_first(exc)}") from exc


def _first(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    return f"{loc}: {err['msg']}" if loc else err["msg"]
