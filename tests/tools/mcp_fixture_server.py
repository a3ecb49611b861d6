"""A test-only MCP server (stdio), run as a script: tools to crash, stall and inspect it.

``python tests/tools/mcp_fixture_server.py`` (it imports only the ``mcp`` SDK).
"""

from __future__ import annotations

import os
import sys

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations

server: MCPServer = MCPServer("fixture", log_level="WARNING")
print("fixture server starting", file=sys.stderr, flush=True)


@server.tool(annotations=ToolAnnotations(read_only_hint=True), structured_output=False)
def pid() -> str:
    """This server's process id."""
    return str(os.getpid())


@server.tool(annotations=ToolAnnotations(idempotent_hint=True), structured_output=False)
def env(name: str) -> str:
    """The value of an environment variable of this server, or <unset>."""
    return os.environ.get(name, "<unset>")


@server.tool(structured_output=False)
async def sleep(seconds: float) -> str:
    """Sleep, then answer."""
    await anyio.sleep(seconds)
    return "slept"


@server.tool(structured_output=False)
def exit_now() -> str:
    """End this server's process at once (a crash mid-call)."""
    os._exit(3)


@server.tool(structured_output=False)
def fail(message: str) -> str:
    """Report a tool failure."""
    raise ToolError(message)


@server.tool()
def totals() -> dict[str, int]:
    """A structured result only."""
    return {"files": 3, "bytes": 42}


if __name__ == "__main__":
    server.run("stdio")
