"""Load and validate agent catalogs (YAML files of :class:`~chorus.contracts.models.AgentSpec`).

The file looks like ``chorus/config/agents.yaml``: a top-level ``agents:`` list. It seeds the agent
configurations in PostgreSQL and is the input of ``chorus agents set``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import ValidationError

from chorus.contracts.errors import ChorusInputError
from chorus.contracts.models import FILE_STRICTNESS, AgentSpec

logger = logging.getLogger(__name__)


class CatalogError(ChorusInputError):
    """An agent catalog that cannot be read or fails validation; the message says where."""


def load_catalog(path: Path) -> dict[str, AgentSpec]:
    """Read, validate and return the agents of a catalog file, keyed by name.

    Args:
        path: YAML file with a top-level ``agents`` list.

    Returns:
        Mapping of agent name to its validated specification, in file order.

    Raises:
        CatalogError: The file is missing or unreadable, is not valid YAML, has no ``agents``
            list, repeats a name, or an agent fails validation (the message names the agent,
            the field and the rule).

    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"agent catalog {path}: cannot read it ({exc.strerror})") from exc
    return parse_catalog(text, source=str(path))


def parse_catalog(text: str, *, source: str = "<catalog>") -> dict[str, AgentSpec]:
    """Validate catalog YAML text; see :func:`load_catalog` for the format and errors."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatalogError(f"agent catalog {source}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("agents"), list):
        raise CatalogError(f"agent catalog {source}: expected a top-level 'agents:' list")
    agents: dict[str, AgentSpec] = {}
    for index, raw in enumerate(data["agents"]):
        label = raw.get("name", f"#{index + 1}") if isinstance(raw, dict) else f"#{index + 1}"
        try:
            spec = AgentSpec.model_validate(raw, extra=FILE_STRICTNESS)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'agent'}: {err['msg']}"
                for err in exc.errors()
            )
            raise CatalogError(f"agent catalog {source}: agent {label!r}: {problems}") from exc
        if spec.output_schema is not None:
            try:
                Draft202012Validator.check_schema(spec.output_schema)
            except SchemaError as exc:
                where = "/".join(str(p) for p in exc.path) or "(top)"
                raise CatalogError(
                    f"agent catalog {source}: agent {spec.name!r}: output_schema is not a valid "
                    f"JSON Schema (draft 2020-12) at {where}: {exc.message}"
                ) from None
        if problem := cache_warning(spec):
            logger.warning("agent catalog %s: agent %r: %s", source, spec.name, problem)
        if spec.name in agents:
            raise CatalogError(f"agent catalog {source}: agent {spec.name!r} is defined twice")
        agents[spec.name] = spec
    if not agents:
        raise CatalogError(f"agent catalog {source}: the 'agents' list is empty")
    return agents


def cache_warning(spec: AgentSpec) -> str | None:
    """Why an agent's ``cache`` will never be used, or ``None`` (a warning, not an error).

    The response cache (:mod:`activities.response_cache`) skips calls at temperature > 0
    unless ``allow_nonzero_temperature`` is set, and agents whose ``record_pii`` is not
    ``off``.
    """
    if spec.cache is None:
        return None
    if spec.temperature > 0 and not spec.cache.allow_nonzero_temperature:
        return (
            f"cache is never used: temperature is {spec.temperature:g}; set temperature: 0 or "
            "cache.allow_nonzero_temperature: true"
        )
    if spec.record_pii != "off":
        return (
            f"cache is never used: record_pii is {spec.record_pii!r} (a cache entry would store "
            "the completion unredacted)"
        )
    return None
