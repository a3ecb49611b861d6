"""Worker interceptor that puts the Temporal context of each activity on its log lines.

``activity.logger`` already attaches the activity's info to its own records, but lines logged
through structlog or plain stdlib loggers from code an activity calls (``chorus.storage.db``,
``chorus.integrations.webhooks``, the provider SDKs) would carry nothing.
:class:`LogContextInterceptor`
binds structlog context variables in the task that runs the activity instead, so every line
logged while it runs carries ``workflow_id``, ``run_id``, ``workflow_type``, ``activity_id``,
``activity_type``, ``attempt``, ``task_queue``, ``root_workflow_id`` and, for activities whose
input names one (``chorus.call_llm``), ``agent``.

``activity.info()`` does not say which top-level run an activity belongs to (child runs have
their own workflow ids, ``<parent>-s<n>``). The workflow side of the interceptor therefore adds
a ``chorus-root-workflow-id`` header, taken from ``workflow.info().root`` (exact, and
deterministic: headers are not compared on replay), to every activity it schedules; activities
scheduled before the header existed fall back to the input's ``root_workflow_id`` field, then
to their own workflow id.
"""

from __future__ import annotations

from typing import Any

import structlog
from temporalio import activity, workflow
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadConverter
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
    StartActivityInput,
    StartLocalActivityInput,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)

ROOT_WORKFLOW_HEADER = "chorus-root-workflow-id"
"""Activity header carrying the id of the top-level workflow of the run."""


def root_workflow_id(info: workflow.Info) -> str:
    """Return the id of the top-level workflow of the run ``info`` belongs to."""
    return info.root.workflow_id if info.root is not None else info.workflow_id


class LogContextInterceptor(Interceptor):
    """Bind each activity's Temporal context (and agent) to structlog's context variables.

    Register it on every :class:`temporalio.worker.Worker` (``interceptors=[...]``); it is
    stateless, so one instance can serve several workers.
    """

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        """Wrap activity executions (see the module docstring)."""
        return _ActivityInbound(next)

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        """Add the root workflow header to the activities workflows schedule."""
        return _WorkflowInbound


class _ActivityInbound(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        # Bound without a reset on purpose: the SDK runs each activity in its own asyncio task
        # (a copy of the poller's context), and logs the outcome ("Completing activity as
        # failed") in that task after this returns; those lines need the fields too. The
        # bindings die with the task.
        structlog.contextvars.bind_contextvars(**activity_log_context(input))
        return await super().execute_activity(input)


def activity_log_context(input: ExecuteActivityInput) -> dict[str, Any]:
    """Return the log fields of the activity execution ``input`` (call inside the activity).

    Args:
        input: The interceptor input; its headers and first argument are read.

    Returns:
        ``workflow_id``, ``run_id``, ``workflow_type``, ``activity_id``, ``activity_type``,
        ``attempt``, ``task_queue``, ``root_workflow_id`` and, when the first argument has a
        string ``agent`` attribute, ``agent``. Fields that are unknown (an activity started by
        a client rather than a workflow) are left out.

    """
    info = activity.info()
    arg = input.args[0] if input.args else None
    fields: dict[str, Any] = {
        "workflow_id": info.workflow_id,
        "run_id": info.workflow_run_id,
        "workflow_type": info.workflow_type,
        "activity_id": info.activity_id,
        "activity_type": info.activity_type,
        "attempt": info.attempt,
        "task_queue": info.task_queue,
        "root_workflow_id": _header_root(input.headers)
        or getattr(arg, "root_workflow_id", None)
        or info.workflow_id,
        "agent": getattr(arg, "agent", None),
    }
    return {key: value for key, value in fields.items() if value is not None and value != ""}


def _header_root(headers: Any) -> str | None:
    payload = headers.get(ROOT_WORKFLOW_HEADER) if headers else None
    if payload is None:
        return None
    try:
        value = PayloadConverter.default.from_payload(payload, str)
    except Exception:  # a header we cannot read only costs a log field
        return None
    return value if isinstance(value, str) else None


class _WorkflowInbound(WorkflowInboundInterceptor):
    def init(self, outbound: WorkflowOutboundInterceptor) -> None:
        super().init(_WorkflowOutbound(outbound))


class _WorkflowOutbound(WorkflowOutboundInterceptor):
    def start_activity(self, input: StartActivityInput) -> workflow.ActivityHandle[Any]:
        input.headers = {**input.headers, ROOT_WORKFLOW_HEADER: _root_payload()}
        return super().start_activity(input)

    def start_local_activity(self, input: StartLocalActivityInput) -> workflow.ActivityHandle[Any]:
        input.headers = {**input.headers, ROOT_WORKFLOW_HEADER: _root_payload()}
        return super().start_local_activity(input)


def _root_payload() -> Payload:
    return PayloadConverter.default.to_payload(root_workflow_id(workflow.info()))
