"""``ChorusPlugin``: everything a Temporal client, worker or replayer needs to run Chorus.

One plugin (Temporal's ``SimplePlugin``) carries the wiring that used to be repeated in five
places (the worker, the SDK client, the replay tests, the test fixtures, the benchmarks):

- the data converter: pydantic JSON that refuses undecodable entry payloads
  (:mod:`chorus.runtime.converter`), with the AES-GCM codec and the encoded-attributes failure
  converter when ``CHORUS_CODEC_KEYS`` is set;
- the interceptors: run context on every activity's log lines
  (:mod:`chorus.observability.log_context`) and OpenTelemetry tracing when an OTLP endpoint is
  configured;
- the workflow sandbox: a worker passes through :data:`SANDBOX_PASSTHROUGH` (each with its
  reason; Chorus's own ``workflows`` package among them, so a run does not re-execute it); a
  replayer re-imports everything but :data:`STRICT_SANDBOX_PASSTHROUGH` for every history, so
  the replay tests check every import and call workflow code makes; both run on
  :class:`chorus.runtime.sandbox.ChorusSandboxedWorkflowRunner` (temporalio's runner, with its
  per-payload serialization-context asks made without re-entering the sandbox);
- the workflows (when asked: the run task queue's worker) and the activities given to it.

Use it on the client (``Client.connect(..., plugins=[ChorusPlugin(settings)])``, which
:func:`chorus.runtime.converter.connect` does) and on each worker
(``Worker(client, task_queue=..., plugins=[ChorusPlugin(settings, activities=[...],
register_workflows=True)])``; :func:`worker.build_worker` does); workers built from a client
that has it get its converter, interceptors and sandbox too, and applying it twice is
harmless. ``Replayer(workflows=[], plugins=[ChorusPlugin()])`` replays with the same setup.

Modelled on pydantic-ai's ``durable_exec/temporal`` plugin and the public face of
temporalio's ``contrib/openai_agents``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from temporalio.activity import _Definition
from temporalio.converter import DataConverter
from temporalio.plugin import SimplePlugin
from temporalio.worker import (
    ReplayerConfig,
    UnsandboxedWorkflowRunner,
    WorkerConfig,
    WorkflowRunner,
)
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from chorus.config.settings import Settings
from chorus.observability import tracing
from chorus.observability.log_context import LogContextInterceptor
from chorus.runtime.code_cache import install_code_cache
from chorus.runtime.converter import chorus_data_converter, data_converter
from chorus.runtime.sandbox import ChorusSandboxedWorkflowRunner

PLUGIN_NAME: Final = "chorus.ChorusPlugin"

STRICT_SANDBOX_PASSTHROUGH: Final[dict[str, str]] = {
    "chorus.contracts": (
        "Chorus's pure contracts (payload models, names, limits, errors, validation): no I/O,"
        " no clock, no randomness at import or call; one copy shared with activities and the"
        " SDK, so a payload class is the same class on both sides"
    ),
    "pydantic": "payload models are pydantic models; deterministic, and slow to re-import per run",
    "pydantic_core": "pydantic's compiled core: an extension module cannot be re-imported",
    "annotated_types": "imported by pydantic for field constraints; pure",
}
"""Modules a replayer's sandbox takes from the process's own imports, and why each is safe.
Everything else a workflow imports is re-imported for each history and checked against the
sandbox's restrictions (storage, HTTP and clock code would fail there): the replay tests run
Chorus's workflow code this way."""

SANDBOX_PASSTHROUGH: Final[dict[str, str]] = {
    **STRICT_SANDBOX_PASSTHROUGH,
    "workflows": (
        "Chorus's workflow code: constants, functions and classes only, no module-level state"
        " a run could change (tests/workflows/test_replay.py checks it), no I/O at import;"
        " re-executing its ~2,900 lines cost ~13 ms of every run's first workflow task"
        " (issue 19, bench.profile); the replayer still re-imports and checks it"
    ),
}
"""Modules a worker's sandbox takes from the worker's own imports instead of re-importing for
each workflow run: :data:`STRICT_SANDBOX_PASSTHROUGH` and Chorus's ``workflows`` package. The
sandbox's runtime restrictions (the ``datetime``/``random``/``os`` members it forbids inside
code it imported, and restricted builtins) stay in force for the modules it imports; the
workflow package's own imports are checked where replays run (:func:`sandbox_runner` with
``strict=True``)."""


def sandbox_runner(*, strict: bool = False) -> SandboxedWorkflowRunner:
    """Return the workflow runner with Chorus's pass-through.

    Args:
        strict: Re-import Chorus's workflow code for every run and check it
            (:data:`STRICT_SANDBOX_PASSTHROUGH`, a replayer's choice); otherwise pass it
            through (:data:`SANDBOX_PASSTHROUGH`, a worker's).
    """
    passthrough = STRICT_SANDBOX_PASSTHROUGH if strict else SANDBOX_PASSTHROUGH
    restrictions = SandboxRestrictions.default.with_passthrough_modules(*passthrough)
    return ChorusSandboxedWorkflowRunner(restrictions=restrictions)


def _runner(existing: WorkflowRunner | None) -> WorkflowRunner:
    """Return Chorus's worker sandbox, unless the worker was given ``UnsandboxedWorkflowRunner``.

    An explicit unsandboxed runner (a benchmark pricing the sandbox, or a debugger) is kept;
    production always sandboxes.
    """
    if isinstance(existing, UnsandboxedWorkflowRunner):
        return existing
    return sandbox_runner()


def activity_name(fn: Callable[..., Any]) -> str | None:
    """The Temporal activity name of ``fn`` (``None`` if it is not an activity)."""
    defn = _Definition.from_callable(fn)
    return defn.name if defn is not None else None


def _workflows() -> list[type]:
    from workflows import WORKFLOWS  # deferred: workflows import this package's contracts

    return list(WORKFLOWS)


class ChorusPlugin(SimplePlugin):
    """Temporal plugin that configures clients, workers and replayers for Chorus.

    Args:
        settings: Read for ``CHORUS_CODEC_KEYS`` (the codec); ``None`` means no codec (the
            replay tests and anything that never sees encrypted payloads).
        activities: Activity callables a worker registers (normally
            :func:`worker.default_activities`, bound to the worker's pool and provider
            clients; a provider's LLM task queue takes only ``chorus.call_llm``).
        register_workflows: Register Chorus's workflows on the worker (the run task queue's
            worker; not a client's plugin, whose workers may poll other queues).

    Raises:
        chorus.runtime.codec.CodecError: ``CHORUS_CODEC_KEYS`` is malformed.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        activities: Sequence[Callable[..., Any]] = (),
        register_workflows: bool = False,
    ) -> None:
        converter = data_converter(settings) if settings is not None else chorus_data_converter
        self._converter: DataConverter = converter
        self._activities = list(activities)
        self._register_workflows = register_workflows
        self._log_context = LogContextInterceptor()
        super().__init__(
            PLUGIN_NAME,
            data_converter=converter,
            interceptors=tracing.client_interceptors(),  # [] unless OTLP is configured
            workflow_runner=_runner,
        )

    def configure_worker(self, config: WorkerConfig) -> WorkerConfig:
        """Register the workflows, activities, interceptors and sandbox on a worker.

        Idempotent, so a worker may see this plugin from its client and again in its own
        ``plugins``: workflows and interceptors are added once, activities by name once.
        """
        config = super().configure_worker(config)
        have = {activity_name(a) for a in config.get("activities") or ()}
        wanted = [a for a in self._activities if activity_name(a) not in have]
        if wanted:
            config["activities"] = [*(config.get("activities") or ()), *wanted]
        if self._register_workflows:
            present = set(config.get("workflows") or ())
            missing = [w for w in _workflows() if w not in present]
            if missing:
                config["workflows"] = [*(config.get("workflows") or ()), *missing]
        interceptors = list(config.get("interceptors") or ())
        if not any(isinstance(i, LogContextInterceptor) for i in interceptors):
            config["interceptors"] = [*interceptors, self._log_context]
        return config

    def configure_replayer(self, config: ReplayerConfig) -> ReplayerConfig:
        """Set the converter, the strict sandbox, workflows and interceptors of a replayer."""
        config = super().configure_replayer(config)
        if not isinstance(config.get("workflow_runner"), UnsandboxedWorkflowRunner):
            config["workflow_runner"] = sandbox_runner(strict=True)
            install_code_cache()  # it re-imports workflows/ per history: compile it once
        present = set(config.get("workflows") or ())
        config["workflows"] = [
            *(config.get("workflows") or ()),
            *(w for w in _workflows() if w not in present),
        ]
        interceptors = list(config.get("interceptors") or ())
        if not any(isinstance(i, LogContextInterceptor) for i in interceptors):
            config["interceptors"] = [*interceptors, self._log_context]
        return config
