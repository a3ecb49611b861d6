"""Replay checked-in histories: a change that breaks determinism fails here.

The files in tests/histories were recorded from real runs on the dev server
(``CHORUS_RECORD_HISTORIES=1 CHORUS_RECORD_SUFFIX=_vN pytest tests/workflows/test_workflows.py
tests/workflows/test_drafts.py``; the suffix names the code version, the recorder never overwrites).
Never re-record them to make this test pass: a failure means old runs in flight would break on
the new code; gate the change with ``workflow.patched`` instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from chorus.runtime.plugin import ChorusPlugin

HISTORIES = sorted((Path(__file__).parents[1] / "histories").glob("*.json"))


def test_histories_are_checked_in():
    names = {p.stem for p in HISTORIES}
    assert {
        "draft_lifecycle",
        "draft_after_continue_as_new",
        "draft_by_reference",
        "draft_lifecycle_v2",
        # v6: without the chorus-local-bookkeeping call; chorus-llm-wait-cancellation and
        # chorus-budget-alert-activity deprecated (issue 19). Still replay: a deprecated marker
        # without a matching call is skipped.
        "sequential_3_agents_v6",
        "parallel_failed_branch_v6",
        "provider_fallback_v6",
        "sequential_with_parallel_child_v6",
        "gate_approved_la_split_v6",
        "gate_approved_v6",
        "gate_edited_v6",
        "gate_in_loop_v6",
        # v7: runs no longer call deprecate_patch(chorus-llm-wait-cancellation) (step 3, issue
        # 19); v5 and the unversioned control-flow, gate and tool histories recorded it
        # undeprecated and are in histories/retired. Every run pattern is recorded anew.
        "sequential_3_agents_v7",
        "parallel_failed_branch_v7",
        "provider_fallback_v7",
        "sequential_with_parallel_child_v7",
        "parallel_with_sequential_child_v7",
        "sequential_child_v7",
        "parallel_child_v7",
        # tools (issue 14): the model->tool loop, parallel tool activities, errors to the model
        "tools_openai_parallel_v7",
        "tools_anthropic_v7",
        "tools_errors_to_model_v7",
        "tools_mcp_stdio_v7",
        # control flow and gates (issue 15): ChorusControl children, decide updates
        "loop_in_sequential_v7",
        "loop_predicate_v7",
        "loop_continued_as_new_v7",
        "router_routed_v7",
        "handoff_answered_v7",
        "group_chat_phrase_v7",
        "gate_approved_v7",
        "gate_edited_v7",
        "gate_in_loop_v7",
        # v8: the run's last call closes the run row, no chorus.finish_run (issue 19;
        # CHORUS_CLOSE_RUN_IN_LAST_CALL). Code before it cannot replay these.
        "sequential_closed_by_last_call_v8",
        "parallel_closed_by_aggregator_v8",
        "cancelled_after_the_closing_call_v8",
        # a run that cannot start (unknown agent): v8 failed with the bare error and kept
        # ChorusStatus=running; v9 (chorus-start-failure-recorded) records it failed.
        "cannot_start_v8",
        "cannot_start_v9",
    } <= names


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_replay_checked_in_history(path: Path):
    recorded = json.loads(path.read_text())
    history = WorkflowHistory.from_json(recorded["workflow_id"], recorded["history"])
    replayer = Replayer(workflows=[], plugins=[ChorusPlugin()])
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None


async def test_patch_after_a_local_activity_split_over_two_workflow_tasks_replays():
    """Issue 19: under load the SDK recorded ``chorus.start_run``'s local-activity marker with
    the first workflow task and handed the workflow its result in the second, so the marker of
    the patch the first LLM call evaluates landed in the second task. Replaying that with the
    patch undeprecated failed ("Non-deprecated patch marker encountered"); deprecated, it
    replays. This history was recorded by the gate test under CPU load."""
    from temporalio.api.enums.v1 import EventType

    recorded = json.loads((HISTORIES[0].parent / "gate_approved_la_split_v6.json").read_text())
    history = WorkflowHistory.from_json(recorded["workflow_id"], recorded["history"])
    kinds = [e.event_type for e in history.events]
    first_done = kinds.index(EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)
    la_marker = history.events[first_done + 1].marker_recorded_event_attributes
    assert la_marker.marker_name == "core_local_activity"
    assert kinds[first_done + 2] == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED  # the split
    patch_at = next(
        i
        for i, e in enumerate(history.events)
        if e.marker_recorded_event_attributes.marker_name == "core_patch"
    )
    assert patch_at > first_done + 2  # the patch marker is in a later workflow task
    result = await Replayer(workflows=[], plugins=[ChorusPlugin()]).replay_workflow(
        history, raise_on_replay_failure=True
    )
    assert result.replay_failure is None


async def test_sandbox_compiles_workflow_modules_once():
    """chorus/runtime/code_cache.py: a second run's sandbox re-imports workflows/ without
    compiling."""
    from chorus.runtime.code_cache import CachingSourceLoader, install_code_cache

    install_code_cache()
    recorded = json.loads((HISTORIES[0].parent / "sequential_3_agents_v7.json").read_text())
    history = WorkflowHistory.from_json(recorded["workflow_id"], recorded["history"])
    replayer = Replayer(workflows=[], plugins=[ChorusPlugin()])
    await replayer.replay_workflow(history)
    assert any(p.endswith("workflows/_base.py") for p in CachingSourceLoader.codes)
    compiled = CachingSourceLoader.compiled
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None
    assert CachingSourceLoader.compiled == compiled


def test_workflow_code_imports_only_the_contracts():
    """Issue 18: the sandbox passes through only ``chorus.contracts`` (ChorusPlugin), so
    workflow modules must not import storage, governance, HTTP or clock code."""
    import ast

    from chorus.runtime.plugin import SANDBOX_PASSTHROUGH, STRICT_SANDBOX_PASSTHROUGH

    root = Path(__file__).resolve().parents[2] / "workflows"
    offenders = []
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                if name.split(".")[0] == "chorus" and not name.startswith("chorus.contracts"):
                    offenders.append(f"{path.name}: {name}")
    assert offenders == []
    assert set(STRICT_SANDBOX_PASSTHROUGH) == {
        "chorus.contracts",
        "pydantic",
        "pydantic_core",
        "annotated_types",
    }
    assert set(SANDBOX_PASSTHROUGH) == {*STRICT_SANDBOX_PASSTHROUGH, "workflows"}


def test_workflow_modules_hold_no_state_a_run_could_change():
    """Issue 19: a worker passes ``workflows`` through the sandbox (one copy for every run),
    so no module global or class attribute of it may be a mutable container: one run's change
    would be the next run's state. (The replayer re-imports it per history.)"""
    import importlib
    import inspect
    import pkgutil

    import workflows

    mutable = (list, dict, set, bytearray)
    offenders = []
    names = [m.name for m in pkgutil.iter_modules(workflows.__path__, "workflows.")]
    for module in [workflows, *(importlib.import_module(n) for n in names)]:
        for name, value in vars(module).items():
            if isinstance(value, mutable) and not name.startswith("__"):
                offenders.append(f"{module.__name__}.{name}")
            if inspect.isclass(value) and value.__module__ == module.__name__:
                for attr, member in vars(value).items():
                    if isinstance(member, mutable) and not attr.startswith("__"):
                        offenders.append(f"{module.__name__}.{name}.{attr}")
    assert len(names) >= 6
    assert offenders == []


async def test_replayer_checks_workflow_code_in_the_strict_sandbox():
    """The replayer re-imports ``workflows`` for each history (the worker does not)."""
    from temporalio.worker import ReplayerConfig
    from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

    from chorus.runtime.plugin import STRICT_SANDBOX_PASSTHROUGH

    config = ChorusPlugin().configure_replayer(ReplayerConfig(workflows=[]))
    runner = config["workflow_runner"]
    assert isinstance(runner, SandboxedWorkflowRunner)
    assert "workflows" not in runner.restrictions.passthrough_modules
    assert set(STRICT_SANDBOX_PASSTHROUGH) <= runner.restrictions.passthrough_modules


def test_activity_declarations_match_their_implementations():
    """Workflows call activities through typed declarations (chorus.contracts.activities);
    each must have an implementation of the same name, parameter and return types."""
    import inspect
    import typing

    import activities as implementations
    from chorus.contracts.activities import INTERFACES
    from chorus.runtime.plugin import activity_name

    implemented = {}
    for cls in vars(implementations).values():
        if inspect.isclass(cls):
            for _, fn in inspect.getmembers(cls, inspect.isfunction):
                name = activity_name(fn)
                if name is not None:
                    implemented[name] = fn
    declarations = [
        fn
        for interface in INTERFACES
        for _, fn in inspect.getmembers(interface, inspect.isfunction)
        if activity_name(fn) is not None
    ]
    assert len(declarations) == 11
    for declaration in declarations:
        name = activity_name(declaration)
        assert name in implemented, f"{name} has no implementation in activities/"
        declared = typing.get_type_hints(declaration)
        actual = typing.get_type_hints(implemented[name])
        assert list(declared.values()) == list(actual.values()), name
