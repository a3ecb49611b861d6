"""The tools this process can see, listed and called directly (``chorus tools``).

A direct call runs the tool here, not through Temporal: it is how a person checks a tool
before an agent uses it. The built-in ``chorus.*`` tools and ``CHORUS_TOOL_MODULES`` come from
the registry; ``mcp:<server>/<tool>`` tools from the servers in ``CHORUS_MCP_SERVERS``, each
started (stdio) or connected (HTTP) on first use and closed by :meth:`ToolCatalog.aclose`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from chorus.config.mcp_config import load_mcp_servers
from chorus.config.settings import Settings
from chorus.contracts.errors import ChorusInputError, ChorusUnavailableError
from chorus.contracts.tools import ToolSpec
from chorus.tools import DEFAULT_REGISTRY, ToolError, ToolRegistry
from chorus.tools.builtin import load_builtin_tools, load_tool_modules
from chorus.tools.mcp_servers import MCPServers


@dataclass
class ToolListing:
    """Every tool this process can see, and the MCP servers that could not be reached.

    Attributes:
        tools: Specs, built-in first, then each MCP server's.
        unreachable: MCP server name -> why it could not be listed.
    """

    tools: list[ToolSpec]
    unreachable: dict[str, str] = field(default_factory=dict)


@dataclass
class DirectCall:
    """The outcome of one direct tool call.

    Attributes:
        name: Tool name.
        output: Result text, or the error message.
        is_error: The tool failed.
        latency_ms: Time in the tool, milliseconds.
    """

    name: str
    output: str
    is_error: bool
    latency_ms: float


class ToolCatalog:
    """Lists and calls tools in this process.

    Args:
        settings: ``CHORUS_TOOL_MODULES``, ``CHORUS_MCP_SERVERS``, tool roots and hosts.
        registry: Python tools (default: the built-in ones and ``CHORUS_TOOL_MODULES``).
        mcp: MCP servers (default: built from ``CHORUS_MCP_SERVERS``).

    Raises:
        ChorusInputError: ``CHORUS_MCP_SERVERS`` is invalid or a tool module cannot be imported.
    """

    def __init__(
        self,
        settings: Settings,
        registry: ToolRegistry | None = None,
        mcp: MCPServers | None = None,
    ) -> None:
        if registry is None:
            load_builtin_tools()
            load_tool_modules(settings.tool_modules)
            registry = DEFAULT_REGISTRY
        self._registry = registry
        self._own_mcp = mcp is None
        self._mcp = mcp or MCPServers(load_mcp_servers(settings.mcp_servers))

    async def list(self) -> ToolListing:
        """Every tool's spec; an unreachable MCP server is reported, not raised."""
        listing = ToolListing(tools=self._registry.specs())
        for server in self._mcp.names():
            try:
                listing.tools += await self._mcp.list_tools(server)
            except ChorusUnavailableError as exc:
                listing.unreachable[server] = str(exc)
        return listing

    async def call(self, name: str, arguments: dict[str, Any]) -> DirectCall:
        """Call tool ``name`` once with ``arguments``.

        Returns:
            The result; a tool's own failure is ``is_error`` (as an agent would see it).

        Raises:
            ChorusInputError: No such tool (names the ones there are).
            ChorusUnavailableError: Its MCP server cannot be reached.
        """
        started = time.perf_counter()
        if name.startswith("mcp:"):
            server, _, tool = name[4:].partition("/")
            if server not in self._mcp.names():
                raise ChorusInputError(
                    f"tool {name}: no MCP server named {server!r} "
                    f"(CHORUS_MCP_SERVERS has: {', '.join(self._mcp.names()) or 'none'})"
                )
            specs = {s.name: s for s in await self._mcp.list_tools(server)}
            if name not in specs:
                raise ChorusInputError(
                    f"MCP server {server} has no tool {tool!r} (it has: "
                    f"{', '.join(n.split('/', 1)[1] for n in specs) or 'none'})"
                )
            outcome = await self._mcp.call_tool(server, tool, arguments, specs[name].timeout_s)
            output, is_error = outcome.text, outcome.is_error
        else:
            registered = self._registry.get(name)
            if registered is None:
                known = ", ".join(s.name for s in self._registry.specs())
                raise ChorusInputError(f"no tool named {name!r} (registered: {known})")
            try:
                output, is_error = await registered.call(arguments), False
            except ToolError as exc:
                output, is_error = str(exc), True
        return DirectCall(
            name=name,
            output=output,
            is_error=is_error,
            latency_ms=round((time.perf_counter() - started) * 1000.0, 3),
        )

    async def aclose(self) -> None:
        """Stop the MCP servers this catalog started."""
        if self._own_mcp:
            await self._mcp.aclose()
