"""The worker's workflow sandbox asks for payload contexts directly (issue 19)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():  # the sandbox re-imports this test module
    import pytest
    from temporalio.client import Client
    from temporalio.worker import Replayer, Worker
    from temporalio.worker.workflow_sandbox import _runner as sdk_runner

    from chorus.runtime import sandbox
    from chorus.runtime.plugin import ChorusPlugin, sandbox_runner


@activity.defn(name="test.sandbox.shout")
async def shout(text: str) -> str:
    return text.upper()


@workflow.defn(name="TestSandboxContexts")
class ContextsWorkflow:
    @workflow.run
    async def run(self, text: str) -> str:
        first = await workflow.execute_activity(
            shout, text, start_to_close_timeout=timedelta(seconds=10), summary="shout once"
        )
        return await workflow.execute_local_activity(
            shout, first + "!", start_to_close_timeout=timedelta(seconds=10), summary="again"
        )


def test_fast_path_fits_the_installed_temporalio():
    """A temporalio release that moves the sandbox's internals turns this red: the runner then
    falls back to the SDK's slower per-payload path (chorus/runtime/sandbox.py)."""
    assert sandbox.fast_path_available()
    for strict in (False, True):
        assert isinstance(sandbox_runner(strict=strict), sandbox.ChorusSandboxedWorkflowRunner)


async def test_contexts_are_asked_directly_and_runs_and_replays_unchanged(
    client: Client, monkeypatch: pytest.MonkeyPatch
):
    """Every serialization/external-store context ask of a real run (activity, local activity,
    summaries, result) takes the direct path: none reaches the SDK's exec-under-the-importer
    path; the run's result and its replay are those of the SDK's runner."""
    asked: dict[str, int] = {"direct": 0, "sdk": 0, "activations": 0}

    def counting(name: str, key: str) -> None:
        for cls in (sandbox._Instance, sdk_runner._Instance):
            if name not in cls.__dict__:
                continue
            original = cls.__dict__[name]
            counter = "direct" if cls is sandbox._Instance else "sdk"

            def wrapper(self: Any, info: Any, _o: Any = original, _c: str = counter) -> Any:
                asked[_c] += 1
                return _o(self, info)

            monkeypatch.setattr(cls, name, wrapper)

    counting("get_serialization_context", "ser")
    counting("get_external_store_context", "store")
    original_activate = sdk_runner._Instance.activate

    def activate(self: Any, act: Any) -> Any:
        asked["activations"] += 1
        return original_activate(self, act)

    monkeypatch.setattr(sdk_runner._Instance, "activate", activate)

    queue = f"test-sandbox-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue, workflows=[ContextsWorkflow], activities=[shout]):
        handle = await client.start_workflow(
            ContextsWorkflow.run, "hi", id=f"test-sandbox-{uuid.uuid4()}", task_queue=queue
        )
        assert await handle.result() == "HI!"
    assert asked["activations"] >= 2
    assert asked["direct"] >= 4, asked  # input, summaries, results, the workflow's result
    assert asked["sdk"] == 0, asked
    assert sandbox._compiled  # activations' source strings, compiled once

    history = await handle.fetch_history()
    for strict in (True, False):
        replayer = Replayer(
            workflows=[ContextsWorkflow],
            plugins=[ChorusPlugin()],
            workflow_runner=sandbox_runner(strict=strict),
        )
        await replayer.replay_workflow(history)


def test_a_sandboxed_instance_of_another_shape_is_asked_the_sdks_way(
    monkeypatch: pytest.MonkeyPatch,
):
    """A temporalio whose sandboxed instance lacks the method, or takes other arguments, is
    asked through the SDK's own path, call by call (no workflow task fails on it)."""
    from types import SimpleNamespace

    monkeypatch.setattr(sdk_runner._Instance, "get_serialization_context", lambda s, i: "sdk")
    monkeypatch.setattr(sdk_runner._Instance, "get_external_store_context", lambda s, i: "sdk")
    instance: Any = object.__new__(sandbox._Instance)
    instance.importer = SimpleNamespace(restriction_context=SimpleNamespace(is_runtime=False))

    def with_target(target: object) -> tuple[Any, Any]:
        instance.globals_and_locals = {"__temporal_in_sandbox": target}
        return (
            instance.get_serialization_context(None),
            instance.get_external_store_context(None),
        )

    class Other:
        def get_serialization_context(self) -> str:  # no command_info: TypeError
            return "direct"

    class Same:
        def get_serialization_context(self, info: object) -> str:
            return "direct"

        def get_external_store_context(self, info: object) -> str:
            return "direct"

    assert with_target(object()) == ("sdk", "sdk")
    assert with_target(Other()) == ("sdk", "sdk")
    assert with_target(Same()) == ("direct", "direct")
    assert instance.importer.restriction_context.is_runtime is False
