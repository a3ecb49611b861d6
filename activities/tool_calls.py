"""The tool activities: ``chorus.resolve_tools`` and ``chorus.call_tool``.

The model->tool loop is workflow code (:func:`workflows._base.call_agent`); these activities
do the I/O. A tool's failure is an answer for the model, not a failed run: the activity
retries a retryable failure within the tool's ``max_attempts`` (Temporal's retry policy, set
by the workflow from the pinned :class:`~chorus.contracts.tools.ToolSpec`) and, on the last
attempt, returns the error as the call's result (``is_error``). Every answered call is
recorded in PostgreSQL (``tool_calls``) and counted (``chorus_tool_calls_total``,
``chorus_tool_call_duration_seconds``).
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeats import with_heartbeats
from activities.runs import workflow_ids
from activities.storage_outage import retry_storage, storage_error
from chorus.config.settings import Settings
from chorus.contracts import errors
from chorus.contracts.names import CALL_TOOL_ACTIVITY, RESOLVE_TOOLS_ACTIVITY
from chorus.contracts.tools import (
    INLINE_TOOL_RESULT_CHARS,
    MAX_TOOL_RESULT_CHARS,
    CallToolInput,
    ResolveToolsInput,
    ToolCall,
    ToolResult,
    ToolSpec,
)
from chorus.contracts.wire import TextRef
from chorus.observability import metrics
from chorus.observability.logs import SecretScrubber, secret_values
from chorus.storage import db
from chorus.storage.db import DB_ERRORS
from chorus.storage.tool_records import record_tool_call
from chorus.tools.mcp_servers import MCPServers, MCPUnavailable
from chorus.tools.registry import ToolArgumentsError, ToolError, ToolRegistry

RECORD_BUDGET_S = 20.0
"""How long a tool call's record waits for PostgreSQL before the call is reported without it
(the history still holds the result; repeating a non-idempotent tool to record it is worse)."""
PREVIEW_CHARS = 2_000
"""Characters of a by-reference result kept inline (the history and the step result)."""


class ToolActivities:
    """Tool resolution and execution for one worker.

    Args:
        settings: Worker settings.
        pool: PostgreSQL pool (records, large results).
        registry: The Python tools this worker serves.
        mcp: The MCP servers this worker reaches (``CHORUS_MCP_SERVERS``), or ``None``.
    """

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        registry: ToolRegistry,
        mcp: MCPServers | None,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._registry = registry
        self._mcp = mcp

    @activity.defn(name=RESOLVE_TOOLS_ACTIVITY)
    async def resolve_tools(self, input: ResolveToolsInput) -> list[ToolSpec]:
        """The specs of an agent's tools, with the catalog entry's overrides applied.

        Returns:
            One spec per entry, in the catalog's order (pinned in the run's history).

        Raises:
            ApplicationError: ``UnknownTool`` (non-retryable) naming the tool and what this
                worker has; ``ApprovalRequired`` (non-retryable) for a tool marked
                ``requires_approval``; ``ToolUnavailable`` (retried) when an MCP server does
                not answer.
        """
        specs = []
        for ref in input.tools:
            spec = await self._spec(ref.name, input.agent)
            spec = spec.with_overrides(ref)
            if spec.requires_approval:
                raise ApplicationError(
                    f"agent {input.agent}: tool {spec.name} requires approval "
                    "(requires_approval: true) and approval gates are not available yet; "
                    "remove the flag or the tool from the agent",
                    type=errors.APPROVAL_REQUIRED,
                    non_retryable=True,
                )
            specs.append(spec)
        return specs

    async def _spec(self, name: str, agent: str) -> ToolSpec:
        if name.startswith("mcp:"):
            server, tool = name[4:].split("/", 1)
            if self._mcp is None or server not in self._mcp.names():
                configured = ", ".join(self._mcp.names()) if self._mcp else "none"
                raise ApplicationError(
                    f"agent {agent}: tool {name}: no MCP server named {server} on this worker "
                    f"(CHORUS_MCP_SERVERS has: {configured})",
                    type=errors.UNKNOWN_TOOL,
                    non_retryable=True,
                )
            try:
                offered = await self._mcp.list_tools(server)
            except MCPUnavailable as exc:
                raise ApplicationError(str(exc), type=errors.TOOL_UNAVAILABLE) from None
            found = next((s for s in offered if s.name == name), None)
            if found is None:
                names = ", ".join(s.name.split("/", 1)[1] for s in offered) or "none"
                raise ApplicationError(
                    f"agent {agent}: MCP server {server} has no tool {tool} (it has: {names})",
                    type=errors.UNKNOWN_TOOL,
                    non_retryable=True,
                )
            return found
        registered = self._registry.get(name)
        if registered is None:
            known = ", ".join(s.name for s in self._registry.specs()) or "none"
            raise ApplicationError(
                f"agent {agent}: no tool named {name} is registered with this worker "
                f"(registered: {known}; CHORUS_TOOL_MODULES adds modules)",
                type=errors.UNKNOWN_TOOL,
                non_retryable=True,
            )
        return registered.spec

    @activity.defn(name=CALL_TOOL_ACTIVITY)
    async def call_tool(self, input: CallToolInput) -> ToolResult:
        """Run one tool call and record it.

        Returns:
            The result; a failure on the last attempt (or one not worth retrying: bad
            arguments, a tool error the tool calls final) comes back as ``is_error`` with the
            message for the model.

        Raises:
            ApplicationError: ``ToolError``/``ToolUnavailable``/``Timeout`` (retryable) while
                attempts remain.
        """
        info = activity.info()
        spec, call = input.spec, input.call
        last = info.attempt >= spec.max_attempts
        started = time.perf_counter()
        outcome = "ok"
        try:
            text = await with_heartbeats(self._run(spec, call))
            result = ToolResult(call_id=call.id, name=call.name, output=text)
        except ToolArgumentsError as exc:
            outcome = errors.TOOL_ARGUMENTS_INVALID
            result = _error_result(call, outcome, str(exc))
        except (ToolError, MCPUnavailable, TimeoutError) as exc:
            if isinstance(exc, TimeoutError):
                outcome, message = "Timeout", f"{call.name} timed out after {spec.timeout_s} s"
                retryable = True
            elif isinstance(exc, MCPUnavailable):
                outcome, message, retryable = errors.TOOL_UNAVAILABLE, str(exc), True
            else:
                outcome, message, retryable = errors.TOOL_ERROR, str(exc), exc.retryable
            message = SecretScrubber(secret_values()).scrub(message)
            if retryable and not last:
                raise ApplicationError(message, type=outcome) from None
            result = _error_result(call, outcome, message)
        except Exception as exc:  # a bug in the tool: the model hears of it, the log has it
            outcome = errors.TOOL_ERROR
            activity.logger.exception("tool %s raised", call.name)
            message = SecretScrubber(secret_values()).scrub(f"{type(exc).__name__}: {exc}")
            if not last:
                raise ApplicationError(message, type=outcome) from None
            result = _error_result(call, outcome, message)
        finally:
            seconds = time.perf_counter() - started
            metrics.TOOL_CALLS.labels(tool=call.name, outcome=outcome).inc()
            metrics.TOOL_CALL_DURATION.labels(tool=call.name).observe(seconds)
        result.latency_ms = round(seconds * 1000.0, 3)
        result.attempts = info.attempt
        await self._record(input, result, info)
        return await self._by_reference(result)

    async def _run(self, spec: ToolSpec, call: ToolCall) -> str:
        if call.arguments_error:
            raise ToolArgumentsError(f"{call.name}: {call.arguments_error}")
        async with asyncio.timeout(spec.timeout_s):
            if spec.source == "mcp":
                if self._mcp is None:
                    raise MCPUnavailable(f"{call.name}: no MCP servers configured on this worker")
                server, tool = call.name[4:].split("/", 1)
                outcome = await self._mcp.call_tool(server, tool, call.arguments, spec.timeout_s)
                if outcome.is_error:
                    raise ToolError(outcome.text or f"{call.name} reported an error")
                text = outcome.text
            else:
                registered = self._registry.get(call.name)
                if registered is None:
                    raise ToolError(f"no tool named {call.name} is registered with this worker")
                text = await registered.call(call.arguments)
        if len(text) > MAX_TOOL_RESULT_CHARS:
            cut = len(text) - MAX_TOOL_RESULT_CHARS
            text = text[:MAX_TOOL_RESULT_CHARS] + f"\n[... {cut} characters cut ...]"
        return text

    async def _record(self, input: CallToolInput, result: ToolResult, info: activity.Info) -> None:
        workflow_id, _ = workflow_ids(info)

        async def write() -> None:
            try:
                await record_tool_call(
                    self._pool,
                    workflow_id=workflow_id,
                    root_workflow_id=input.root_workflow_id or workflow_id,
                    activity_id=info.activity_id,
                    agent=input.agent,
                    tool=input.call.name,
                    call_id=input.call.id,
                    arguments=input.call.arguments,
                    output=result.output,
                    is_error=result.is_error,
                    error_type=result.error_type,
                    latency_ms=result.latency_ms,
                    attempt=result.attempts,
                )
            except DB_ERRORS as exc:
                raise storage_error(f"cannot record the tool call: {exc}") from exc

        try:
            await retry_storage(write, RECORD_BUDGET_S)
        except ApplicationError as exc:
            activity.logger.warning(
                "tool call %s of agent %s not recorded in PostgreSQL (%s); its result is in "
                "the workflow history",
                input.call.name,
                input.agent,
                exc,
            )

    async def _by_reference(self, result: ToolResult) -> ToolResult:
        """A long result goes to PostgreSQL; the history keeps a preview and the reference."""
        if len(result.output) <= INLINE_TOOL_RESULT_CHARS:
            return result

        async def store() -> TextRef:
            try:
                return await db.put_text(self._pool, result.output)
            except DB_ERRORS as exc:
                raise storage_error(f"cannot store a large tool result: {exc}") from exc

        try:
            ref = await retry_storage(store, RECORD_BUDGET_S)
        except ApplicationError as exc:  # the history can take it (<= MAX_TOOL_RESULT_CHARS)
            activity.logger.warning("large tool result kept inline: %s", exc)
            return result
        preview = result.output[:PREVIEW_CHARS]
        return result.model_copy(update={"output": preview, "output_ref": ref})


def _error_result(call: ToolCall, error_type: str, message: str) -> ToolResult:
    return ToolResult(
        call_id=call.id, name=call.name, output=message, is_error=True, error_type=error_type
    )
