"""Tools agents call: Python tools registered with the worker, and MCP servers' tools.

- :mod:`chorus.tools.registry`: the ``@tool`` decorator and :class:`ToolRegistry`;
- :mod:`chorus.tools.host`, :mod:`chorus.tools.log_files`, :mod:`chorus.tools.network`: the
  built-in ``chorus.*`` tools (read-only; confined to ``CHORUS_TOOL_ROOTS`` and
  ``CHORUS_TOOL_ALLOWED_HOSTS``);
- :mod:`chorus.tools.mcp_servers`: MCP servers (``CHORUS_MCP_SERVERS``) over stdio or
  streamable HTTP, through the official ``mcp`` SDK.
"""

from chorus.tools.registry import (
    DEFAULT_REGISTRY,
    RegisteredTool,
    ToolArgumentsError,
    ToolError,
    ToolRegistry,
    tool,
)

__all__ = [
    "DEFAULT_REGISTRY",
    "RegisteredTool",
    "ToolArgumentsError",
    "ToolError",
    "ToolRegistry",
    "tool",
]
