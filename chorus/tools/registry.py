"""Python tools: a decorator turns a typed async function into a tool a model can call.

    from chorus.tools import tool

    @tool("acme.lookup_order", timeout_s=10)
    async def lookup_order(order_id: str, include_lines: bool = False) -> dict[str, Any]:
        \"\"\"Look up one order in the order system.

Args:
            order_id: The order's id, e.g. ``A-1001``.
            include_lines: Also return the order lines.
        \"\"\"

The function's type hints give the arguments' JSON Schema (pydantic: models, enums,
``Annotated[..., Field(...)]`` and defaults all work), its docstring's first paragraph the
description and its ``Args:`` section (Google style) each parameter's description. Arguments
are validated with the same schema before the function runs; the return value is sent to the
model as text (a ``str`` as it is, anything else as JSON through pydantic).

A worker serves the tools of :data:`DEFAULT_REGISTRY` (the built-in ``chorus.*`` tools and every
module that ``CHORUS_TOOL_MODULES`` names, imported at start-up) or the registry it is given.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, get_type_hints

import pydantic
from pydantic import BaseModel, ConfigDict, ValidationError

from chorus.contracts.tools import TOOL_NAME_PATTERN, ToolSpec

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


class ToolError(Exception):
    """A tool's failure, reported to the model as the call's result (``is_error``).

    Args:
        message: What went wrong, for the model (no secrets).
        retryable: Whether another attempt may succeed (a timeout, a busy service); the
            activity's retry policy then tries again, within the tool's ``max_attempts``.
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class ToolArgumentsError(ToolError):
    """The arguments do not match the tool's schema (never retried; the model may correct)."""


@dataclass(frozen=True)
class RegisteredTool:
    """A tool in a registry: its spec, its argument model and the function."""

    spec: ToolSpec
    arguments: type[BaseModel]
    function: Callable[..., Awaitable[Any]]

    async def call(self, arguments: dict[str, Any]) -> str:
        """Validate ``arguments`` and run the tool.

        Returns:
            The result as text for the model.

        Raises:
            ToolArgumentsError: The arguments do not match the schema (names the field).
            ToolError: The tool failed.
        """
        try:
            parsed = self.arguments.model_validate(arguments)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}"
                for e in exc.errors()
            )
            raise ToolArgumentsError(
                f"invalid arguments for {self.spec.name}: {problems}"
            ) from None
        kwargs = {name: getattr(parsed, name) for name in type(parsed).model_fields}
        return result_text(await self.function(**kwargs))


def result_text(value: Any) -> str:
    """A tool's return value as the text the model reads (``str`` unchanged, else JSON)."""
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    return json.dumps(pydantic.TypeAdapter(Any).dump_python(value, mode="json"), ensure_ascii=False)


class ToolRegistry:
    """Named Python tools; a worker serves one registry."""

    def __init__(self) -> None:
        self._tools: dict[str, RegisteredTool] = {}

    def register(
        self,
        function: Callable[..., Awaitable[Any]],
        *,
        name: str,
        description: str | None = None,
        timeout_s: float = 30.0,
        max_attempts: int | None = None,
        idempotent: bool = True,
        fatal: bool = False,
        requires_approval: bool = False,
    ) -> RegisteredTool:
        """Register ``function`` as tool ``name``.

        Args:
            function: An ``async def`` with type hints on every parameter.
            name: Dotted lower-case name, ``package.tool`` (2-4 parts).
            description: For the model (default: the docstring's first paragraph).
            timeout_s: Start-to-close of one attempt, seconds.
            max_attempts: Attempts per call (default 3 if idempotent, else 1).
            idempotent: Repeating a call is harmless (read-only tools are).
            fatal: A failure fails the step instead of going back to the model.
            requires_approval: Each call needs a person's approval (refused until gates exist).

        Raises:
            ValueError: Bad name, duplicate name, not a coroutine function, or a parameter
                without a type hint.
        """
        if not re.match(TOOL_NAME_PATTERN, name) or name.startswith("mcp:"):
            raise ValueError(f"tool name {name!r}: must be package.tool, lower-case, dotted")
        if name in self._tools:
            raise ValueError(f"tool {name} is already registered")
        if not inspect.iscoroutinefunction(function):
            raise ValueError(f"tool {name}: {function.__qualname__} must be an async function")
        doc = inspect.getdoc(function) or ""
        arguments = _arguments_model(function, name, _arg_docs(doc))
        schema = arguments.model_json_schema()
        schema.pop("title", None)
        spec = ToolSpec(
            name=name,
            description=description or _summary(doc) or name,
            parameters=schema,
            source="builtin",
            timeout_s=timeout_s,
            max_attempts=max_attempts or (3 if idempotent else 1),
            idempotent=idempotent,
            fatal=fatal,
            requires_approval=requires_approval,
        )
        registered = RegisteredTool(spec=spec, arguments=arguments, function=function)
        self._tools[name] = registered
        return registered

    def tool(self, name: str, **options: Any) -> Callable[[F], F]:
        """Decorator form of :meth:`register`."""

        def decorate(function: F) -> F:
            self.register(function, name=name, **options)
            return function

        return decorate

    def get(self, name: str) -> RegisteredTool | None:
        """The tool called ``name``, if registered."""
        return self._tools.get(name)

    def specs(self) -> list[ToolSpec]:
        """Every tool's spec, by name."""
        return [self._tools[n].spec for n in sorted(self._tools)]

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)


DEFAULT_REGISTRY = ToolRegistry()
"""The registry ``@tool`` adds to and workers serve by default."""


def tool(name: str, **options: Any) -> Callable[[F], F]:
    """Register an async function in :data:`DEFAULT_REGISTRY` (:meth:`ToolRegistry.register`)."""
    return DEFAULT_REGISTRY.tool(name, **options)


def _arguments_model(
    function: Callable[..., Any], name: str, docs: dict[str, str]
) -> type[BaseModel]:
    hints = get_type_hints(function, include_extras=True)
    fields: dict[str, Any] = {}
    for param in inspect.signature(function).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ValueError(f"tool {name}: *args/**kwargs are not supported")
        if param.name not in hints:
            raise ValueError(f"tool {name}: parameter {param.name} needs a type hint")
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (
            hints[param.name],
            pydantic.Field(default, description=docs.get(param.name)),
        )
    model_name = "".join(part.title() for part in re.split(r"[._]", name)) + "Arguments"
    return pydantic.create_model(model_name, __config__=ConfigDict(extra="forbid"), **fields)


def _summary(doc: str) -> str:
    return doc.split("\n\n", 1)[0].replace("\n", " ").strip()


def _arg_docs(doc: str) -> dict[str, str]:
    """Parameter descriptions from a Google-style ``Args:`` section."""
    match = re.search(r"^Args:\n((?:[ \t]+.*\n?|\n)+)", doc, re.M)
    if not match:
        return {}
    docs: dict[str, str] = {}
    current = None
    for line in match.group(1).splitlines():
        item = re.match(r"^\s{2,8}(\w+)(?: \(.*?\))?:\s*(.*)$", line)
        if item:
            current = item.group(1)
            docs[current] = item.group(2).strip()
        elif current and line.strip():
            docs[current] += " " + line.strip()
    return docs
