"""MCP servers' tools, through the official ``mcp`` SDK: ``mcp:<server>/<tool>``.

One :class:`MCPServers` per worker (or CLI) process holds one long-lived MCP session per
configured server (``CHORUS_MCP_SERVERS``, :mod:`chorus.config.mcp_config`), opened on first
use: a stdio server is started as a subprocess and kept running; a streamable-HTTP server keeps
its MCP session id. A background task holds each session's context managers (transport, then
``ClientSession``) open until the session ends or :meth:`MCPServers.aclose`; any number of calls
share the session concurrently.

Failures:

- the server cannot be started or reached, or does not initialize within its ``timeout_s``:
  :class:`MCPUnavailable` (retryable: the next call tries to connect again);
- the session dies (the stdio process exits, the HTTP transport fails): calls in flight fail
  with :class:`MCPUnavailable` (whether the tool ran is unknown); the next call opens a new
  session. A call reconnects at most once: when an HTTP server answers that it no longer knows
  the session (it restarted), the call reconnects and is sent again, since the server did not
  run it;
- a call that outlasts its ``timeout_s``: ``TimeoutError`` (the server is told to cancel it,
  the session stays up);
- the tool itself fails (``CallToolResult.isError``) or the server refuses the request (an MCP
  error such as an unknown tool or invalid arguments): an :class:`MCPToolOutcome` with
  ``is_error``, the message as its text, for the model to read.

A stdio server's stderr goes to ``<log_dir>/mcp-<server>.log`` when ``log_dir`` is given (its
last lines are quoted when the server fails to start), else it is discarded; it never reaches
the worker's own output.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TextIO, TypeVar

import httpx2
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp import types as mcp_types
from mcp.client.stdio import get_default_environment
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher
from pydantic import ValidationError

from chorus.config.mcp_config import HttpServer, MCPServerConfig, StdioServer
from chorus.contracts.errors import TOOL_UNAVAILABLE, ChorusInputError, ChorusUnavailableError
from chorus.contracts.tools import TOOL_NAME_PATTERN, ToolSpec

logger = logging.getLogger(__name__)

T = TypeVar("T")

TOOLS_CACHE_S: Final = 60.0
"""How long one server's tool list is reused before it is asked again (seconds)."""
CLOSE_TIMEOUT_S: Final = 10.0
"""How long :meth:`MCPServers.aclose` waits for one session to end (a stdio server gets its
stdin closed, 2 s to exit, then SIGTERM and SIGKILL) before cancelling it."""
MAX_TOOL_PAGES: Final = 100
"""Most ``tools/list`` pages read from one server (a paginator that never ends stops here)."""
LOST_REASON_WAIT_S: Final = 0.5
"""How long a call whose session died waits for the reason before it reports the loss."""
STDERR_TAIL_CHARS: Final = 1_000
"""Characters of a stdio server's stderr quoted when it fails to start."""
INHERITED_ENV: Final = ("LANG", "LC_ALL", "LC_CTYPE", "TZ")
"""Variables a stdio server inherits besides the SDK's minimal set (``PATH``, ``HOME``...)."""

_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_TOOL_NAME = re.compile(TOOL_NAME_PATTERN)


class MCPUnavailable(ChorusUnavailableError):
    """An MCP server cannot be reached, or its session died; retryable.

    Args:
        message: What happened, naming the server.
        server: The server's name, when known.
        reason: The cause alone (``"All connection attempts failed"``...), when known.
    """

    error_type: str = TOOL_UNAVAILABLE

    def __init__(self, message: str, *, server: str | None = None, reason: str | None = None):
        super().__init__(message)
        self.server = server
        self.reason = reason


class UnknownMCPServer(ChorusInputError, KeyError):
    """A server name that ``CHORUS_MCP_SERVERS`` does not configure; the message lists those."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class MCPToolOutcome:
    """What one MCP tool call returned.

    Attributes:
        text: The result as text: text blocks as they are, then other blocks described
            (``[image image/png, about 1024 bytes]``, ``[resource file:///x]``), joined by newlines;
            the structured result as JSON when there is no text block.
        is_error: The tool reported a failure (``isError``) or the server refused the request;
            ``text`` says why.
    """

    text: str
    is_error: bool = False


def _unavailable(server: str, reason: str) -> MCPUnavailable:
    return MCPUnavailable(f"MCP server {server}: {reason}", server=server, reason=reason)


class _ConfigProblem(Exception):
    """A configured value cannot be used (an environment variable it names is not set)."""


class _WatchedDispatcher(JSONRPCDispatcher[Any]):
    """The SDK's JSON-RPC dispatcher, telling when its receive loop ends (the session is dead)."""

    def __init__(self, *args: Any, on_end: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_end = on_end

    async def run(self, *args: Any, **kwargs: Any) -> None:
        try:
            await super().run(*args, **kwargs)
        finally:
            self._on_end()


class _Connection:
    """One MCP session with one server, held open by a background task.

    ``closed`` turns true when the session ends (the server went away, :meth:`stop` was called,
    or it never opened); a closed connection is never used again.
    """

    def __init__(self, name: str, config: MCPServerConfig, log_dir: Path | None) -> None:
        self.name = name
        self.config = config
        self.closed = False
        self.failure: str | None = None
        self.undelivered = False
        """The session died of a failed TCP connect: no request was delivered since."""
        self.http_status: int | None = None
        """The last HTTP error status the server answered (for messages)."""
        self._stopping = False
        self._log_path = log_dir / f"mcp-{name}.log" if log_dir is not None else None
        self._wake = asyncio.Event()
        self._ready: asyncio.Future[ClientSession] = asyncio.get_running_loop().create_future()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"mcp-session-{self.name}")

    async def session(self) -> ClientSession:
        """The initialized session, once it is (bounded by the server's ``timeout_s``).

        Raises:
            MCPUnavailable: It could not be opened, or not within ``timeout_s``.
        """
        timeout_s = self.config.timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.shield(self._ready)
        except TimeoutError:  # ours: a caller's own deadline passes through as cancellation
            self.stop()
            raise _unavailable(
                self.name, f"did not start and answer within {timeout_s} s"
            ) from None

    def stop(self) -> None:
        """End the session (without waiting); calls in flight fail with ``CONNECTION_CLOSED``."""
        self.closed = True
        self._stopping = True
        self._wake.set()
        if self._task is not None and not self._ready.done():
            self._task.cancel()  # still connecting: nothing to wind down politely

    def when_closed(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the background task has finished."""
        if self._task is None or self._task.done():
            callback()
        else:
            self._task.add_done_callback(lambda _: callback())

    async def wait_closed(self, timeout_s: float = CLOSE_TIMEOUT_S, *, cancel: bool = True) -> None:
        """Wait for the background task to finish; after ``timeout_s``, cancel it if told to."""
        if self._task is None:
            return
        done, _ = await asyncio.wait({self._task}, timeout=timeout_s)
        if not done and cancel:
            logger.warning("MCP server %s: session did not close within %s s", self.name, timeout_s)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _ended(self) -> None:
        self.closed = True
        self._wake.set()

    async def _run(self) -> None:
        errlog: TextIO | None = None
        start = 0
        try:
            errlog, start = self._open_errlog()
            async with contextlib.AsyncExitStack() as stack:
                read, write = await stack.enter_async_context(self._transport(errlog))
                dispatcher = _WatchedDispatcher(read, write, on_end=self._ended)
                session = await stack.enter_async_context(
                    ClientSession(dispatcher=dispatcher, client_info=_CLIENT_INFO)
                )
                await session.initialize()
                logger.info("MCP server %s: session open", self.name)
                self._ready.set_result(session)
                await self._wake.wait()
                if not self._stopping:
                    self.failure = "the server closed the session" + self._stderr_tail(start)
                    logger.warning("MCP server %s: %s", self.name, self.failure)
        except BaseException as exc:
            if not (self._stopping and isinstance(exc, asyncio.CancelledError)):
                self.failure = _describe(exc, self.http_status) + self._stderr_tail(start)
                leaves = [e for e in _leaves(exc) if not isinstance(e, asyncio.CancelledError)]
                self.undelivered = bool(leaves) and all(
                    isinstance(e, httpx2.ConnectError) for e in leaves
                )
                if self._ready.done():
                    logger.warning("MCP server %s: session lost: %s", self.name, self.failure)
            if not isinstance(exc, Exception):
                raise
        finally:
            self.closed = True
            if errlog is not None:
                errlog.close()
            if not self._ready.done():
                reason = self.failure or "closed before it was ready"
                self._ready.set_exception(_unavailable(self.name, reason))
                self._ready.exception()  # retrieved: no "never retrieved" warning
            logger.info("MCP server %s: session closed", self.name)

    @contextlib.asynccontextmanager
    async def _transport(self, errlog: TextIO) -> AsyncIterator[Any]:
        config = self.config
        if isinstance(config, StdioServer):
            parameters = StdioServerParameters(
                command=config.command, args=config.args, env=_stdio_env(config), cwd=config.cwd
            )
            async with stdio_client(parameters, errlog=errlog) as streams:
                yield streams
        else:
            timeout = httpx2.Timeout(config.timeout_s, read=None)  # calls bound their own reads
            hooks = {"response": [self._note_status]}
            async with (
                httpx2.AsyncClient(
                    headers=_http_headers(config), timeout=timeout, event_hooks=hooks
                ) as http,
                streamable_http_client(config.url, http_client=http) as streams,
            ):
                yield streams

    async def _note_status(self, response: httpx2.Response) -> None:
        if response.status_code >= 400:
            self.http_status = response.status_code

    def _open_errlog(self) -> tuple[TextIO, int]:
        if self._log_path is None or not isinstance(self.config, StdioServer):
            return open(os.devnull, "w"), 0  # closed when the session ends
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        handle = self._log_path.open("a", encoding="utf-8")
        return handle, handle.tell()

    def _stderr_tail(self, start: int) -> str:
        if self._log_path is None or not isinstance(self.config, StdioServer):
            return ""
        try:
            with self._log_path.open("rb") as handle:
                handle.seek(start)
                text = handle.read().decode("utf-8", "replace").strip()
        except OSError:
            return ""
        if not text:
            return ""
        return f" (stderr, {self._log_path}: ...{text[-STDERR_TAIL_CHARS:]})"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("chorus")
    except PackageNotFoundError:
        return "0"


_CLIENT_INFO = mcp_types.Implementation(name="chorus", version=_version())


def _expand(value: str, where: str) -> str:
    def substitute(match: re.Match[str]) -> str:
        variable = match.group(1)
        if variable not in os.environ:
            raise _ConfigProblem(f"{where}: ${{{variable}}} is not set in the environment")
        return os.environ[variable]

    return _ENV_REFERENCE.sub(substitute, value)


def _stdio_env(config: StdioServer) -> dict[str, str]:
    """The SDK's minimal inherited environment, locale variables, then ``env`` expanded."""
    env = get_default_environment()
    env.update({name: os.environ[name] for name in INHERITED_ENV if name in os.environ})
    env.update({name: _expand(value, f"env {name}") for name, value in config.env.items()})
    return env


def _http_headers(config: HttpServer) -> dict[str, str]:
    headers = dict(config.headers)
    for header, variable in config.headers_env.items():
        value = os.environ.get(variable)
        if not value:
            raise _ConfigProblem(
                f"headers_env {header}: environment variable {variable} is not set or empty"
            )
        headers[header] = value
    return headers


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _describe(exc: BaseException, http_status: int | None = None) -> str:
    """One line on why a session failed, from the exception (groups flattened)."""
    parts: list[str] = []
    for leaf in _leaves(exc):
        if isinstance(leaf, asyncio.CancelledError):
            continue
        if isinstance(leaf, MCPUnavailable) and leaf.reason:
            text = leaf.reason
        elif isinstance(leaf, MCPError | _ConfigProblem):
            text = str(leaf)
        elif isinstance(leaf, OSError) and leaf.strerror:
            text = f"{leaf.strerror}" + (f": {leaf.filename}" if leaf.filename else "")
        else:
            text = f"{type(leaf).__name__}: {leaf}" if str(leaf) else type(leaf).__name__
        if text not in parts:
            parts.append(text)
    if http_status is not None:
        parts.append(f"HTTP {http_status}")
    return "; ".join(parts) or "cancelled"


def _connection_lost(exc: MCPError) -> bool:
    return exc.code == mcp_types.CONNECTION_CLOSED


def _session_unknown(exc: MCPError) -> bool:
    """An HTTP server answered 404 for our session id: it restarted and did not run the call."""
    return exc.code == mcp_types.INVALID_REQUEST and exc.message == "Session terminated"


def render_result(result: mcp_types.CallToolResult) -> str:
    """A tool result as text (see :class:`MCPToolOutcome`)."""
    parts: list[str] = []
    has_text = False
    for block in result.content:
        if isinstance(block, mcp_types.TextContent):
            parts.append(block.text)
            has_text = True
        elif isinstance(block, mcp_types.ImageContent | mcp_types.AudioContent):
            kind = "image" if isinstance(block, mcp_types.ImageContent) else "audio"
            size = len(block.data) * 3 // 4  # base64
            parts.append(f"[{kind} {block.mime_type}, about {size} bytes]")
        elif isinstance(block, mcp_types.ResourceLink):
            label = f" {block.name}" if block.name and block.name != block.uri else ""
            parts.append(f"[resource {block.uri}{label}]")
        elif isinstance(block, mcp_types.EmbeddedResource):
            resource = block.resource
            if isinstance(resource, mcp_types.TextResourceContents):
                parts.append(f"[resource {resource.uri}]\n{resource.text}")
            else:
                mime = f" {resource.mime_type}" if resource.mime_type else ""
                parts.append(
                    f"[resource {resource.uri}{mime}, about {len(resource.blob) * 3 // 4} bytes]"
                )
    if not has_text and result.structured_content is not None:
        parts.insert(0, json.dumps(result.structured_content, ensure_ascii=False))
    return "\n".join(parts)


class MCPServers:
    """The MCP servers one process reaches, one long-lived session each.

    Args:
        configs: Server name -> configuration (:func:`chorus.config.mcp_config.load_mcp_servers`).
        log_dir: Where stdio servers' stderr is appended (``mcp-<server>.log``); ``None``
            discards it.

    Use from one event loop; close with :meth:`aclose` (stdio servers are stopped then).
    """

    def __init__(
        self, configs: Mapping[str, MCPServerConfig], *, log_dir: Path | None = None
    ) -> None:
        self._configs = dict(configs)
        self._log_dir = log_dir
        self._connections: dict[str, _Connection] = {}
        self._retired: set[_Connection] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._tools: dict[str, tuple[float, list[ToolSpec]]] = {}
        self._closed = False

    def names(self) -> list[str]:
        """The configured server names, in configuration order."""
        return list(self._configs)

    def config(self, server: str) -> MCPServerConfig:
        """The configuration of ``server``.

        Raises:
            UnknownMCPServer: (a ``ChorusInputError`` and ``KeyError``) no such server; the
                message lists the configured ones.
        """
        try:
            return self._configs[server]
        except KeyError:
            configured = ", ".join(self._configs) or "none"
            raise UnknownMCPServer(
                f"no MCP server named {server!r} (CHORUS_MCP_SERVERS has: {configured})"
            ) from None

    async def list_tools(self, server: str) -> list[ToolSpec]:
        """The tools ``server`` offers, as specs named ``mcp:<server>/<tool>`` (cached 60 s).

        Each spec's ``parameters`` is the tool's ``inputSchema``, ``timeout_s`` the server's
        ``timeout_s``, and ``idempotent`` true when the server marks the tool read-only or
        idempotent (``readOnlyHint``/``idempotentHint``; false when it says nothing: a tool of
        unknown effect gets one attempt). Tools whose names do not fit ``TOOL_NAME_PATTERN``
        are left out (logged).

        Raises:
            UnknownMCPServer: ``server`` is not configured.
            MCPUnavailable: The server cannot be reached or did not list its tools within its
                ``timeout_s``.
        """
        config = self.config(server)
        cached = self._tools.get(server)
        if cached is not None and time.monotonic() - cached[0] < TOOLS_CACHE_S:
            return list(cached[1])
        try:
            async with asyncio.timeout(config.timeout_s):
                tools = await self._request(server, _list_all_tools, resend=True)
        except TimeoutError:
            raise _unavailable(
                server, f"did not list its tools within {config.timeout_s} s"
            ) from None
        except MCPError as exc:
            raise _unavailable(server, f"listing its tools failed: {exc.message}") from None
        specs = [spec for tool in tools if (spec := _spec(server, config, tool)) is not None]
        self._tools[server] = (time.monotonic(), specs)
        return list(specs)

    async def call_tool(
        self, server: str, tool: str, arguments: dict[str, Any], timeout_s: float
    ) -> MCPToolOutcome:
        """Call ``tool`` of ``server`` with ``arguments``.

        Args:
            server: A configured server name.
            tool: The tool's name on that server (without ``mcp:<server>/``).
            arguments: The arguments object (JSON-compatible).
            timeout_s: Seconds for the whole call, connecting included.

        Returns:
            The outcome; a tool failure or a refused request is ``is_error``, not an exception.

        Raises:
            UnknownMCPServer: ``server`` is not configured.
            MCPUnavailable: The server cannot be reached, or the session died during the call
                (whether the tool ran is then unknown). Retryable.
            TimeoutError: No answer within ``timeout_s`` (the server is asked to cancel).
        """
        self.config(server)

        async def call(session: ClientSession) -> mcp_types.CallToolResult:
            return await session.call_tool(tool, arguments)

        try:
            async with asyncio.timeout(timeout_s):
                result = await self._request(server, call, resend=False)
        except TimeoutError:
            raise TimeoutError(
                f"MCP server {server}: tool {tool} did not answer within {timeout_s} s"
            ) from None
        except MCPUnavailable:
            raise
        except MCPError as exc:
            return MCPToolOutcome(f"MCP error {exc.code}: {exc.message}", is_error=True)
        except (RuntimeError, ValidationError) as exc:  # input required, malformed result...
            return MCPToolOutcome(f"{type(exc).__name__}: {exc}", is_error=True)
        return MCPToolOutcome(render_result(result), is_error=result.is_error)

    async def aclose(self) -> None:
        """End every session (stdio servers are stopped) and wait for them to close."""
        self._closed = True
        connections = [*self._connections.values(), *self._retired]
        self._connections.clear()
        self._retired.clear()
        for connection in connections:
            connection.stop()
        await asyncio.gather(*(c.wait_closed() for c in connections))

    async def _request(
        self, server: str, operation: Callable[[ClientSession], Awaitable[T]], *, resend: bool
    ) -> T:
        """Run ``operation`` on the server's session, reconnecting at most once.

        A session found closed before the request is replaced. A session that dies during it
        is dropped, and the request is sent again on a new session (once) only when that is
        known to be harmless: ``resend`` (read-only requests), or the server never got it (an
        HTTP server that no longer knows the session, or could not be connected to).
        """
        for retry in (False, True):
            connection, fresh = await self._live(server)
            try:
                return await operation(await connection.session())
            except MCPError as exc:
                if not (_connection_lost(exc) or _session_unknown(exc)):
                    raise
                await self._drop(server, connection)
                not_run = _session_unknown(exc) or connection.undelivered
                if retry or fresh or not (resend or not_run):
                    raise self._lost(server, connection, exc) from None
        raise AssertionError("unreachable: the second try returns or raises")

    @staticmethod
    def _lost(server: str, connection: _Connection, exc: MCPError) -> MCPUnavailable:
        reason = connection.failure or exc.message
        if connection.undelivered or _session_unknown(exc):
            return _unavailable(server, f"the request could not be delivered ({reason})")
        return _unavailable(
            server,
            f"the session ended during the request, which may or may not have run ({reason})",
        )

    async def _live(self, server: str) -> tuple[_Connection, bool]:
        """The server's open connection, or a new one (``True`` when new)."""
        if self._closed:
            raise _unavailable(server, "the MCP servers of this process are closed")
        lock = self._locks.setdefault(server, asyncio.Lock())
        async with lock:
            connection = self._connections.get(server)
            if connection is not None and not connection.closed:
                return connection, False
            if connection is not None:
                self._retire(server, connection)
            connection = _Connection(server, self._configs[server], self._log_dir)
            connection.start()
            self._connections[server] = connection
            logger.info("MCP server %s: connecting", server)
            return connection, True

    async def _drop(self, server: str, connection: _Connection) -> None:
        """Retire a dead connection; wait a moment for its task to say why it died."""
        self._retire(server, connection)
        await connection.wait_closed(LOST_REASON_WAIT_S, cancel=False)

    def _retire(self, server: str, connection: _Connection) -> None:
        connection.stop()
        if self._connections.get(server) is connection:
            del self._connections[server]
        self._retired.add(connection)
        connection.when_closed(lambda: self._retired.discard(connection))


async def _list_all_tools(session: ClientSession) -> list[mcp_types.Tool]:
    tools: list[mcp_types.Tool] = []
    cursor: str | None = None
    for _ in range(MAX_TOOL_PAGES):
        params = mcp_types.PaginatedRequestParams(cursor=cursor) if cursor else None
        page = await session.list_tools(params=params)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            break
    return tools


def _spec(server: str, config: MCPServerConfig, tool: mcp_types.Tool) -> ToolSpec | None:
    name = f"mcp:{server}/{tool.name}"
    if not _TOOL_NAME.match(name):
        logger.warning("MCP server %s: tool %r left out: its name is not usable", server, tool.name)
        return None
    hints = tool.annotations
    idempotent = bool(hints and (hints.read_only_hint or hints.idempotent_hint))
    return ToolSpec(
        name=name,
        description=tool.description or tool.title or (hints.title if hints else None) or "",
        parameters=tool.input_schema,
        source="mcp",
        timeout_s=config.timeout_s,
        max_attempts=3 if idempotent else 1,
        idempotent=idempotent,
    )
