"""Temporal's workflow sandbox without two per-payload costs of its runner (issue 19).

temporalio's :class:`~temporalio.worker.workflow_sandbox.SandboxedWorkflowRunner` (1.35) asks
the sandboxed workflow instance for a serialization context and an external-storage context
for every payload it encodes or decodes: each command's input and summary, each activity
result, each marker and search attribute. Each ask runs ``exec`` on a two-line source string (a
fresh compile, ~34 µs) under the sandbox's importer (``sys.modules``, ``__import__`` and the
restricted builtins swapped on thread-locals, then back). Measured on a 3-step Chorus run
(issue 19, ``bench.profile``'s stack, wrapper timing): 48 serialization-context and 11
external-store-context asks per run at ~0.2 ms each, 12.4 ms of every run's workflow tasks
(naive Temporal: 25 asks, 5.7 ms).

Both answers only read the instance's info and its pending commands
(``_WorkflowInstanceImpl.get_serialization_context`` in
``temporalio/worker/_workflow_instance.py``): no workflow code runs and nothing is imported, so
:class:`ChorusSandboxedWorkflowRunner` asks the sandboxed instance directly. Activations and
queries still run under the importer exactly as before; their source strings are compiled once
per process instead of once per call.

The runner leans on two internals of temporalio's sandbox (``_Instance`` and its
``globals_and_locals``). If a release changes them it falls back to the SDK's own behaviour
(:func:`fast_path_available`; a sandboxed instance whose methods changed shape is asked the
SDK's way, call by call); ``tests/runtime/test_sandbox.py`` fails then, so the change is seen
rather than silently slower.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import CodeType
from typing import Any

import temporalio.converter
from temporalio.worker import WorkflowInstance, WorkflowInstanceDetails
from temporalio.worker._command_aware_visitor import CommandInfo
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox import _runner as _sdk_runner

_IN_SANDBOX = "__temporal_in_sandbox"

_compiled: dict[str, CodeType] = {}
"""Source string → code object; the runner execs a handful of fixed strings (bounded)."""


def _code(source: str) -> CodeType:
    code = _compiled.get(source)
    if code is None:
        code = _compiled[source] = compile(source, "<workflow sandbox>", "exec")
    return code


def fast_path_available() -> bool:
    """Whether temporalio's sandbox internals are those this module was written against."""
    instance = getattr(_sdk_runner, "_Instance", None)
    return instance is not None and all(
        hasattr(instance, name)
        for name in ("_run_code", "get_serialization_context", "get_external_store_context")
    )


if fast_path_available():

    class _Instance(_sdk_runner._Instance):
        """The SDK's sandboxed instance; context asks go straight to the sandboxed object."""

        def _run_code(self, code: str, **extra_globals: Any) -> None:
            # The SDK execs ``code`` with ``exec``, which takes a code object as well.
            super()._run_code(_code(code), **extra_globals)  # type: ignore[arg-type]

        def _in_sandbox(self) -> Any:
            return getattr(self, "globals_and_locals", {}).get(_IN_SANDBOX)

        def get_serialization_context(
            self, command_info: CommandInfo | None
        ) -> temporalio.converter.SerializationContext | None:
            found, result = self._ask("get_serialization_context", command_info)
            if not found:
                return super().get_serialization_context(command_info)
            context: temporalio.converter.SerializationContext | None = result
            return context

        def get_external_store_context(self, command_info: CommandInfo | None) -> Any:
            found, result = self._ask("get_external_store_context", command_info)
            if not found:
                return super().get_external_store_context(command_info)
            return result

        def _ask(self, name: str, command_info: CommandInfo | None) -> tuple[bool, Any]:
            """Ask the sandboxed instance's ``name`` directly.

            Returns:
                ``(True, answer)``, or ``(False, None)`` when the instance does not have the
                shape this module expects (the caller then takes the SDK's path, which raises
                whatever a genuine error would).
            """
            ask = getattr(self._in_sandbox(), name, None)
            if ask is None:
                return False, None
            context = self.importer.restriction_context
            context.is_runtime = True
            try:
                return True, ask(command_info)
            except (TypeError, AttributeError):
                return False, None
            finally:
                context.is_runtime = False


@dataclass(frozen=True)
class ChorusSandboxedWorkflowRunner(SandboxedWorkflowRunner):
    """:class:`SandboxedWorkflowRunner` with per-payload context asks made directly.

    Same restrictions, same pass-through, same workflow semantics; see the module docstring.
    """

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        """Implements :py:meth:`WorkflowRunner.create_instance`.

        The SDK's own instance when the fast path does not fit the installed temporalio.
        """
        if not fast_path_available():
            return super().create_instance(det)
        return _Instance(det, self.runner_class, self.restrictions)
