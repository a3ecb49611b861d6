"""Rolling upgrades: payloads from the next version (with fields this code does not know) decode
and replay; files a person writes stay strict.

Before issue 12 every payload model had ``extra="forbid"``, so a worker one version older than
the payload failed with ``extra_forbidden`` as soon as a field was added.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from temporalio.api.common.v1 import Payload
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from chorus.config.catalog import CatalogError, parse_catalog
from chorus.contracts.drafting import DraftInput, EditRequest
from chorus.contracts.models import AgentSpec, LLMResponse, SequentialInput
from chorus.runtime.converter import chorus_data_converter
from starter.plan import load_plan
from starter.sdk import ChorusInputError
from workflows import WORKFLOWS

HISTORIES = Path(__file__).parents[1] / "histories"
NEW_FIELD = "field_from_the_next_version"


def widen(value: Any, *, is_model: bool) -> Any:
    """Add an unknown field to every JSON object that is a model (top level, list items)."""
    if isinstance(value, dict):
        widened = {k: widen(v, is_model=False) for k, v in value.items()}
        if is_model:
            widened[NEW_FIELD] = {"added": True}
        return widened
    if isinstance(value, list):
        return [widen(v, is_model=True) for v in value]
    return value


def widen_payloads(node: Any) -> int:
    """Rewrite every json/plain payload in a history (JSON form) in place; count them."""
    count = 0
    if isinstance(node, dict):
        encoding = node.get("metadata", {}).get("encoding") if "data" in node else None
        if encoding and base64.b64decode(encoding) == b"json/plain":
            data = json.loads(base64.b64decode(node["data"]))
            if isinstance(data, dict):
                node["data"] = base64.b64encode(
                    json.dumps(widen(data, is_model=True)).encode()
                ).decode()
                count += 1
        for child in node.values():
            count += widen_payloads(child)
    elif isinstance(node, list):
        for child in node:
            count += widen_payloads(child)
    return count


@pytest.mark.parametrize(
    "name",
    [
        "sequential_3_agents_v7",
        "sequential_closed_by_last_call_v8",
        "sequential_with_parallel_child_v7",
        "provider_fallback_v7",
        "draft_lifecycle_v2",
        "draft_after_continue_as_new_v2",
    ],
)
async def test_history_with_newer_payloads_replays(name: str):
    recorded = json.loads((HISTORIES / f"{name}.json").read_text())
    widened = widen_payloads(recorded["history"])
    assert widened >= 3  # the input, activity results, markers, update arguments
    history = WorkflowHistory.from_json(recorded["workflow_id"], recorded["history"])
    replayer = Replayer(workflows=WORKFLOWS, data_converter=chorus_data_converter)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None


@pytest.mark.parametrize(
    ("model", "body"),
    [
        (SequentialInput, {"task": "t", "steps": [{"kind": "agent", "agent": "a1"}]}),
        (EditRequest, {"user": "alice", "base_version": 1, "content": "x"}),
        (DraftInput, {"title": "T", "owner": "alice"}),
        (LLMResponse, {"provider": "local", "model": "m", "output": "o"}),
    ],
)
def test_wire_models_ignore_unknown_fields(model: type[BaseModel], body: dict[str, Any]):
    newer = widen(body, is_model=True)
    payload = Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(newer).encode())
    [value] = chorus_data_converter.payload_converter.from_payloads([payload], [model])
    assert isinstance(value, model)
    assert NEW_FIELD not in value.model_dump()


def test_agent_catalog_file_stays_strict():
    text = (
        "agents:\n  - name: a1\n    instructions: hi\n    providers: [local:smollm2]\n"
        "    temprature: 0.2\n"
    )
    with pytest.raises(CatalogError, match="temprature"):
        parse_catalog(text)
    # ...while the same spec stored by a newer version (PostgreSQL, the wire) is read.
    spec = AgentSpec.model_validate(
        {"name": "a1", "instructions": "hi", "providers": ["local:smollm2"], NEW_FIELD: 1}
    )
    assert spec.name == "a1"


def test_plan_file_stays_strict(tmp_path: Path):
    plan = tmp_path / "plan.yaml"
    plan.write_text("pattern: sequential\nsteps:\n  - {kind: sequential, steps: [a1], nmae: x}\n")
    with pytest.raises(ChorusInputError, match="nmae"):
        load_plan(plan)
    plan.write_text("pattern: sequential\nstep: [a1]\n")
    with pytest.raises(ChorusInputError, match="unknown key"):
        load_plan(plan)
