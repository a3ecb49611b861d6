"""Tool-use contracts: what an agent may call, one call, its result, one model turn.

Pure (the workflow sandbox passes this module through). The model->tool loop is workflow code
(:func:`workflows._base.call_agent`): every model turn is a ``chorus.call_llm`` activity and
every tool call a ``chorus.call_tool`` activity, so the history holds the whole conversation
and a crashed worker resumes it without calling anything twice that already answered.

Tool names:

- built-in Python tools registered with the worker: dotted lower-case names, for example
  ``chorus.disk_usage`` (:mod:`chorus.tools.registry`);
- tools of a configured MCP server: ``mcp:<server>/<tool>``, for example
  ``mcp:files/read_text_file`` (:mod:`chorus.tools.mcp_servers`).

Providers allow ``[a-zA-Z0-9_-]{1,64}`` as a function name (OpenAI; Anthropic allows 128), so
each tool has a *wire name* derived from its name (:func:`wire_name`).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Final, Literal

from pydantic import Field, model_validator

from chorus.contracts.wire import TextRef, WireModel

TOOL_NAME_PATTERN: Final = (
    r"^(?:[a-z][a-z0-9_]{0,63}(?:\.[a-z][a-z0-9_]{0,63}){1,3}"
    r"|mcp:[A-Za-z0-9][A-Za-z0-9_-]{0,63}/[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})$"
)
"""Built-in ``package.tool`` (2-4 dotted lower-case parts) or ``mcp:<server>/<tool>``."""

MAX_TOOLS_PER_AGENT: Final = 32
"""Most tools one agent may declare (every tool's schema is sent with every model turn)."""
MAX_TOOL_CALLS_PER_STEP: Final = 64
"""Upper bound of an agent's ``max_tool_calls`` (tool calls in one step)."""
MAX_TOOL_CALLS_PER_RUN: Final = 200
"""Most tool calls one run workflow makes, all steps together; the next one fails the step
with ``ToolCallLimit`` (a runaway loop across steps ends here)."""
MAX_TOOL_ROUNDS: Final = 32
"""Most model turns of one step that ask for tools: a model that keeps asking ends the step."""
INLINE_TOOL_RESULT_CHARS: Final = 16_000
"""A tool result longer than this (characters) is stored in PostgreSQL and goes by reference
(``ToolResult.output_ref``), like a large document: the history carries a preview only."""
MAX_TOOL_RESULT_CHARS: Final = 1_000_000
"""Longest tool result kept (characters); the rest is cut, saying so."""
MAX_TOOL_ARGUMENTS_CHARS: Final = 32_000
"""Longest arguments object of one tool call, as JSON (characters)."""

_WIRE_OK = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def wire_name(name: str) -> str:
    """The function name a provider sees for tool ``name``.

    ``chorus.disk_usage`` -> ``chorus__disk_usage``; ``mcp:files/read_text_file`` ->
    ``mcp__files__read_text_file``; characters providers refuse become ``_``; a name longer than
    64 characters keeps 55 and ends with 8 hex digits of its SHA-256 (stable across versions).
    """
    wire = name.replace(":", "__").replace("/", "__").replace(".", "__")
    wire = re.sub(r"[^A-Za-z0-9_-]", "_", wire)
    if not _WIRE_OK.match(wire):
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        wire = f"{wire[:55]}_{digest}"
    return wire


class ToolRef(WireModel):
    """A tool as an agent's catalog entry names it, with optional per-agent overrides.

    A bare string ``"chorus.disk_usage"`` is accepted for ``{"name": "chorus.disk_usage"}``.

    Attributes:
        name: Tool name (see the module docstring).
        timeout_s: Start-to-close of one attempt, seconds (default: the tool's own, 30 s).
        max_attempts: Attempts before the error goes back to the model (default: the tool's;
            3 for an idempotent tool, 1 otherwise).
        idempotent: Whether repeating a call is harmless (default: the tool's; MCP tools are
            idempotent when the server marks them read-only or idempotent).
        fatal: A failure of this tool fails the step instead of going back to the model.
        requires_approval: A person must approve each call. Accepted, and refused at run time
            until approval gates exist (issue 15).
    """

    name: str = Field(pattern=TOOL_NAME_PATTERN)
    timeout_s: float | None = Field(None, ge=0.1, le=3600.0)
    max_attempts: int | None = Field(None, ge=1, le=10)
    idempotent: bool | None = None
    fatal: bool | None = None
    requires_approval: bool = False

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"name": value}
        return value


class ToolSpec(WireModel):
    """A tool as the model and the executor see it, pinned in the history when a step starts.

    Attributes:
        name: Tool name.
        description: What the tool does (sent to the model).
        parameters: JSON Schema of the arguments object.
        source: ``builtin`` (a Python function registered with the worker) or ``mcp``.
        timeout_s: Start-to-close of one attempt, seconds.
        max_attempts: Attempts of one call (Temporal retries, 1 s doubling).
        idempotent: Repeating a call is harmless. A non-idempotent tool gets one attempt unless
            its ``max_attempts`` says otherwise: after a worker crash mid-call it is not
            repeated, the model is told the outcome is unknown.
        fatal: A failure fails the step instead of going back to the model.
        requires_approval: Refused at run time until approval gates exist.
    """

    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    source: Literal["builtin", "mcp"] = "builtin"
    timeout_s: float = 30.0
    max_attempts: int = 3
    idempotent: bool = True
    fatal: bool = False
    requires_approval: bool = False

    @property
    def wire_name(self) -> str:
        """The function name providers see (:func:`wire_name`)."""
        return wire_name(self.name)

    def with_overrides(self, ref: ToolRef) -> ToolSpec:
        """This spec with the catalog entry's overrides applied.

        A non-idempotent tool's default attempts are 1, unless the entry sets them.
        """
        idempotent = self.idempotent if ref.idempotent is None else ref.idempotent
        attempts = ref.max_attempts or (self.max_attempts if idempotent else 1)
        return self.model_copy(
            update={
                "timeout_s": ref.timeout_s or self.timeout_s,
                "max_attempts": attempts,
                "idempotent": idempotent,
                "fatal": self.fatal if ref.fatal is None else ref.fatal,
                "requires_approval": self.requires_approval or ref.requires_approval,
            }
        )


class ToolCall(WireModel):
    """One call a model asked for.

    Attributes:
        id: The provider's call id (OpenAI ``tool_calls[].id``, Anthropic ``tool_use.id``).
        name: Tool name (the catalog name, translated back from the wire name).
        arguments: The arguments object. When the model sent text that is not a JSON object,
            it is ``{}`` and ``arguments_error`` says why (the call is answered with that
            error, not run).
        arguments_error: Why the model's arguments could not be read, if they could not.
    """

    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    arguments_error: str | None = None

    def summary(self, limit: int = 80) -> str:
        """``name(key=value, …)``, cut to ``limit`` characters (for the Temporal UI)."""
        parts = ", ".join(f"{k}={_short(v)}" for k, v in self.arguments.items())
        text = f"{self.name}({parts})"
        return text if len(text) <= limit else text[: limit - 1] + "…"


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:39] + "…"


class ToolResult(WireModel):
    """What a tool call returned, as the model will read it.

    Attributes:
        call_id: The call's id.
        name: Tool name.
        output: The result as text (JSON for structured results), or the error message; a
            preview when ``output_ref`` is set.
        output_ref: The full result in PostgreSQL, when longer than
            ``INLINE_TOOL_RESULT_CHARS``.
        is_error: The call failed; ``output`` says why, for the model.
        error_type: The failure's type (``ToolError``, ``ToolArgumentsInvalid``, ``Timeout``…).
        latency_ms: Time in the tool, last attempt, milliseconds.
        attempts: Activity attempts made.
    """

    call_id: str
    name: str
    output: str = ""
    output_ref: TextRef | None = None
    is_error: bool = False
    error_type: str | None = None
    latency_ms: float = 0.0
    attempts: int = 1


class ToolTurn(WireModel):
    """One model turn that asked for tools, and the tools' answers.

    Attributes:
        text: Text the model wrote alongside its calls (may be empty).
        calls: The calls, in the model's order.
        results: One result per call, same order.
    """

    text: str = ""
    calls: list[ToolCall] = Field(default_factory=list)
    results: list[ToolResult] = Field(default_factory=list)


class ToolCallRecord(WireModel):
    """A tool call as a step's result lists it.

    Attributes:
        name: Tool name.
        arguments: The arguments object.
        output: The result (a preview of at most 2,000 characters), or the error.
        is_error: The call failed.
        error_type: The failure's type.
        latency_ms: Time in the tool, milliseconds.
        attempts: Activity attempts made.
    """

    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    output: str = ""
    is_error: bool = False
    error_type: str | None = None
    latency_ms: float = 0.0
    attempts: int = 1

    @classmethod
    def of(cls, call: ToolCall, result: ToolResult) -> ToolCallRecord:
        """The record of ``call`` answered by ``result``."""
        return cls(
            name=call.name,
            arguments=call.arguments,
            output=result.output[:2000],
            is_error=result.is_error,
            error_type=result.error_type,
            latency_ms=result.latency_ms,
            attempts=result.attempts,
        )


class ResolveToolsInput(WireModel):
    """Input of ``chorus.resolve_tools``: the tools an agent declares."""

    agent: str
    tools: list[ToolRef]


class CallToolInput(WireModel):
    """Input of ``chorus.call_tool``: one call and the spec it was pinned with.

    Attributes:
        agent: The agent that asked.
        root_workflow_id: Top-level run, under which the call is recorded.
        call: The call.
        spec: The tool's pinned spec (timeout, attempts, source).
    """

    agent: str
    root_workflow_id: str | None = None
    call: ToolCall
    spec: ToolSpec
