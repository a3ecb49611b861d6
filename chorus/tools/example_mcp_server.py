r"""A small MCP server, ``files``: read-only access to one directory tree.

Written with the official ``mcp`` SDK (``MCPServer``), it serves as an example of an MCP server
agents can use and as the server the tests talk to. Its tools, all read-only
(``readOnlyHint``, so Chorus retries them like any idempotent tool):

- ``read_text_file(path, max_chars=20000)``: a text file's content, cut at ``max_chars``;
- ``list_directory(path=".")``: a directory's entries (``name/`` for directories, sizes);
- ``search_files(pattern, path=".")``: files and directories under ``path`` whose name matches
  a glob pattern (``*.log``) or contains the text (``error``), case-insensitively.

Every path is relative to the root (``--root``, default: the current directory); it is resolved,
symlinks followed, before the check, so nothing outside the root can be read or listed, and an
attempt is answered with an error result (``isError``).

Run it over stdio (how a worker starts it)::

    python -m chorus.tools.example_mcp_server --root /srv/docs

or over streamable HTTP, on loopback unless told otherwise, optionally requiring
``Authorization: Bearer <token>`` with the token read from an environment variable::

    FILES_TOKEN=... python -m chorus.tools.example_mcp_server --root /srv/docs \
        --transport streamable-http --host 127.0.0.1 --port 8931 --token-env FILES_TOKEN

``CHORUS_MCP_SERVERS`` entries for the two::

    {"files": {"transport": "stdio", "command": "python",
               "args": ["-m", "chorus.tools.example_mcp_server", "--root", "/srv/docs"]}}
    {"files": {"transport": "http", "url": "http://127.0.0.1:8931/mcp",
               "headers_env": {"Authorization": "FILES_AUTHORIZATION"}}}

(with ``FILES_AUTHORIZATION="Bearer <token>"`` in the worker's environment).
"""

from __future__ import annotations

import argparse
import fnmatch
import hmac
import ipaddress
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations
from pydantic import Field
from starlette.types import ASGIApp, Receive, Scope, Send

SERVER_NAME = "files"
MAX_READ_CHARS = 1_000_000
"""Largest ``max_chars`` of ``read_text_file``."""
MAX_LIST_ENTRIES = 1_000
"""Most entries ``list_directory`` returns."""
MAX_SEARCH_RESULTS = 200
"""Most matches ``search_files`` returns."""
MAX_SEARCH_VISITS = 100_000
"""Most directory entries one search looks at before it stops, saying so."""

READ_ONLY = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)


class FileRoot:
    """The directory the tools are confined to.

    Args:
        root: The directory (resolved, symlinks followed, at construction).

    Raises:
        NotADirectoryError: ``root`` is not an existing directory.
    """

    def __init__(self, root: Path) -> None:
        resolved = Path(root).resolve()
        if not resolved.is_dir():
            raise NotADirectoryError(f"--root {root}: not a directory")
        self.root = resolved

    def resolve(self, path: str) -> Path:
        """The absolute, resolved path of ``path`` (relative to the root, or absolute).

        Raises:
            ToolError: The resolved path (symlinks followed) is outside the root.
        """
        if "\x00" in path:
            raise ToolError(f"{path!r}: a path cannot contain NUL characters")
        target = (self.root / path).resolve()
        if not target.is_relative_to(self.root):
            raise ToolError(
                f"{path}: outside the directory this server serves (paths are resolved, "
                "symlinks followed, and must stay inside it); use a path relative to it"
            )
        return target

    def show(self, path: Path) -> str:
        """``path`` relative to the root, as the tools print it (``.`` for the root)."""
        relative = path.relative_to(self.root)
        return str(relative) if relative.parts else "."


def build_server(root: Path) -> MCPServer[Any]:
    """The ``files`` server confined to ``root``.

    Raises:
        NotADirectoryError: ``root`` is not an existing directory.
    """
    files = FileRoot(root)
    server: MCPServer[Any] = MCPServer(
        SERVER_NAME,
        instructions=(
            "Read-only access to one directory tree. Paths are relative to its root; "
            "list_directory('.') shows the top."
        ),
        log_level="WARNING",
    )

    @server.tool(annotations=READ_ONLY, structured_output=False)
    def read_text_file(
        path: Annotated[str, Field(description="File path, relative to the root.")],
        max_chars: Annotated[
            int, Field(ge=1, le=MAX_READ_CHARS, description="Characters returned at most.")
        ] = 20_000,
    ) -> str:
        """Read a text file (UTF-8; undecodable bytes are replaced), cut at max_chars."""
        target = files.resolve(path)
        if not target.is_file():
            raise ToolError(f"{path}: no such file" + (" (a directory)" if target.is_dir() else ""))
        try:
            with target.open(encoding="utf-8", errors="replace") as handle:
                text = handle.read(max_chars + 1)
            size = target.stat().st_size
        except OSError as exc:
            raise ToolError(f"{path}: cannot read it ({exc.strerror})") from None
        if "\x00" in text[:8192]:
            raise ToolError(f"{path}: a binary file ({size} bytes), not text")
        if len(text) > max_chars:
            text = text[:max_chars] + f"\n[... cut at {max_chars} characters; {size} bytes ...]"
        return text

    @server.tool(annotations=READ_ONLY, structured_output=False)
    def list_directory(
        path: Annotated[str, Field(description="Directory path, relative to the root.")] = ".",
    ) -> str:
        """List a directory: one entry a line, 'name/' for directories, sizes of files."""
        target = files.resolve(path)
        if not target.is_dir():
            raise ToolError(f"{path}: no such directory")
        try:
            entries = sorted(
                os.scandir(target),
                key=lambda e: (not e.is_dir(follow_symlinks=False), e.name.lower()),
            )
        except OSError as exc:
            raise ToolError(f"{path}: cannot list it ({exc.strerror})") from None
        lines = []
        for entry in entries[:MAX_LIST_ENTRIES]:
            if entry.is_symlink():
                lines.append(f"{entry.name} (symlink)")
            elif entry.is_dir():
                lines.append(f"{entry.name}/")
            else:
                try:
                    lines.append(f"{entry.name} ({entry.stat().st_size} bytes)")
                except OSError:
                    lines.append(entry.name)
        if len(entries) > MAX_LIST_ENTRIES:
            lines.append(f"[... {len(entries) - MAX_LIST_ENTRIES} more entries ...]")
        return "\n".join(lines) if lines else f"{files.show(target)}: empty directory"

    @server.tool(annotations=READ_ONLY, structured_output=False)
    def search_files(
        pattern: Annotated[
            str,
            Field(
                min_length=1,
                description="Glob pattern for names (*.log), or text a name contains (error).",
            ),
        ],
        path: Annotated[str, Field(description="Directory searched, relative to the root.")] = ".",
    ) -> str:
        """Find files and directories under path whose name matches (case-insensitive)."""
        target = files.resolve(path)
        if not target.is_dir():
            raise ToolError(f"{path}: no such directory")
        glob = pattern.lower() if any(c in pattern for c in "*?[") else f"*{pattern.lower()}*"
        found: list[str] = []
        visited = 0
        stopped = ""
        for directory, subdirs, names in os.walk(target):  # symlinked directories not entered
            subdirs.sort()
            here = Path(directory)
            for name in [*subdirs, *sorted(names)]:
                visited += 1
                if fnmatch.fnmatchcase(name.lower(), glob):
                    shown = files.show(here / name)
                    found.append(shown + "/" if name in subdirs else shown)
                if len(found) >= MAX_SEARCH_RESULTS:
                    stopped = f"[... stopped at {MAX_SEARCH_RESULTS} matches ...]"
                    break
                if visited >= MAX_SEARCH_VISITS:
                    stopped = f"[... stopped after looking at {MAX_SEARCH_VISITS} entries ...]"
                    break
            if stopped:
                break
        if not found:
            return f"no names matching {pattern!r} under {files.show(target)}"
        return "\n".join([*found, stopped] if stopped else found)

    return server


class BearerTokenGate:
    """ASGI middleware: HTTP requests must carry ``Authorization: Bearer <token>``.

    Args:
        app: The application behind it.
        token: The token (compared in constant time).
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse an HTTP request without the token (401); pass everything else through."""
        if scope["type"] == "http":
            sent = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(sent, self.expected):
                body = b'{"error": "unauthorized"}'
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"www-authenticate", b"Bearer"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


async def serve_http(
    server: MCPServer[Any], *, host: str, port: int, path: str, token: str | None
) -> None:
    """Serve ``server`` over streamable HTTP at ``http://host:port/path`` until cancelled."""
    import uvicorn

    app: ASGIApp = server.streamable_http_app(streamable_http_path=path, host=host)
    if token:
        app = BearerTokenGate(app, token)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    await uvicorn.Server(config).serve()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m chorus.tools.example_mcp_server [--root DIR] [...]``."""
    parser = argparse.ArgumentParser(
        prog="python -m chorus.tools.example_mcp_server",
        description="The 'files' MCP server: read-only access to one directory tree.",
    )
    parser.add_argument("--root", default=".", help="directory served (default: current)")
    parser.add_argument("--transport", choices=("stdio", "streamable-http"), default="stdio")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP: address (default loopback)")
    parser.add_argument("--port", type=int, default=8931, help="HTTP: port (default 8931)")
    parser.add_argument("--path", default="/mcp", help="HTTP: endpoint path (default /mcp)")
    parser.add_argument(
        "--token-env",
        metavar="VAR",
        help="HTTP: require 'Authorization: Bearer <token>', the token read from $VAR",
    )
    args = parser.parse_args(argv)
    try:
        server = build_server(Path(args.root))
    except NotADirectoryError as exc:
        parser.error(str(exc))
    if args.transport == "stdio":
        server.run("stdio")
        return
    token = None
    if args.token_env:
        token = os.environ.get(args.token_env)
        if not token:
            parser.error(f"--token-env {args.token_env}: the variable is not set or empty")
    elif not _is_loopback(args.host):
        print(
            f"warning: serving {args.host} without --token-env: anyone who reaches the port "
            "can read the files",
            file=sys.stderr,
        )
    anyio.run(
        lambda: serve_http(server, host=args.host, port=args.port, path=args.path, token=token)
    )


if __name__ == "__main__":
    main()
