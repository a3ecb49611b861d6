"""MCP servers agents' ``mcp:<server>/<tool>`` tools come from (``CHORUS_MCP_SERVERS``).

The setting is JSON text, or the path of a ``.json``/``.yaml``/``.yml`` file, mapping a server
name to how to reach it::

    {
      "files": {
        "transport": "stdio",
        "command": "python",
        "args": ["-m", "chorus.tools.example_mcp_server", "--root", "/srv/docs"],
        "env": {"LOG_LEVEL": "warning", "API_TOKEN": "${FILES_API_TOKEN}"},
        "timeout_s": 30
      },
      "tickets": {
        "transport": "http",
        "url": "https://mcp.example.com/mcp",
        "headers": {"X-Team": "ops"},
        "headers_env": {"Authorization": "TICKETS_MCP_AUTHORIZATION"}
      }
    }

- ``stdio``: the worker starts ``command`` with ``args`` as a subprocess and talks to it over
  its stdin/stdout. Its environment is a minimal inherited one (``PATH``, ``HOME``, ``LANG``...)
  plus ``env``, whose values may name the worker's environment variables as ``${VAR}``
  (expanded when the server starts, so secrets stay out of the file).
- ``http``: streamable HTTP at ``url``. ``headers`` are sent as written and must not be
  secrets (``Authorization``, cookies, tokens and keys are refused there); ``headers_env`` maps
  a header name to the *name* of an environment variable whose value is sent, read when the
  connection opens.

``timeout_s`` bounds connecting (process start or HTTP handshake) and is the default
start-to-close of each of the server's tool calls (an agent's catalog entry may override it).

Files are validated strictly: an unknown or misspelt key is an error, and every error names the
server and the field (:class:`~chorus.contracts.errors.ChorusInputError`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import Field, TypeAdapter, ValidationError, field_validator

from chorus.contracts.errors import ChorusInputError
from chorus.contracts.wire import FILE_STRICTNESS, WireModel

SETTING: Final = "CHORUS_MCP_SERVERS"
SERVER_NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
"""A server's name, as it appears in ``mcp:<server>/<tool>``."""
ENV_VAR_PATTERN: Final = r"^[A-Za-z_][A-Za-z0-9_]*$"
HEADER_NAME_PATTERN: Final = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"
"""An HTTP header name (RFC 9110 token)."""
SECRET_HEADERS: Final = frozenset({"authorization", "proxy-authorization", "cookie"})
SECRET_HEADER_WORDS: Final = ("token", "secret", "password", "api-key", "apikey")
"""Header names in ``headers`` containing these are refused: they belong in ``headers_env``."""

_SERVER_NAME = re.compile(SERVER_NAME_PATTERN)


class StdioServer(WireModel):
    """An MCP server the worker runs as a subprocess, speaking MCP over stdin/stdout.

    Attributes:
        transport: ``"stdio"``.
        command: The executable (looked up on ``PATH`` when not a path).
        args: Its arguments.
        env: Extra environment variables, over a minimal inherited environment; a value may
            reference the worker's variables as ``${VAR}`` (expanded at start).
        cwd: Working directory of the process (default: the worker's).
        timeout_s: Seconds to start and initialize; default start-to-close of each tool call.
    """

    transport: Literal["stdio"]
    command: str = Field(min_length=1)
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    timeout_s: float = Field(30.0, gt=0.0, le=3600.0)

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not re.match(ENV_VAR_PATTERN, name):
                raise ValueError(f"{name!r} is not an environment variable name")
        return value


class HttpServer(WireModel):
    """An MCP server reached over streamable HTTP.

    Attributes:
        transport: ``"http"``.
        url: The MCP endpoint, ``http://`` or ``https://`` (no credentials in it).
        headers: Headers sent as written: not secrets.
        headers_env: Header name -> name of the environment variable whose value is sent
            (read when the connection opens; the variable must be set then).
        timeout_s: Seconds to connect and initialize; default start-to-close of each tool call.
    """

    transport: Literal["http"]
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    headers_env: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(30.0, gt=0.0, le=3600.0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        if parts.username or parts.password:
            raise ValueError("credentials do not belong in the URL: send them with headers_env")
        return value

    @field_validator("headers")
    @classmethod
    def _plain_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            _check_header_name(name)
            lowered = name.lower()
            if lowered in SECRET_HEADERS or any(w in lowered for w in SECRET_HEADER_WORDS):
                raise ValueError(
                    f"{name} looks like a secret: put its value in an environment variable and "
                    f'name that variable in headers_env ({{{json.dumps(name)}: "ENV_VAR_NAME"}})'
                )
        return value

    @field_validator("headers_env")
    @classmethod
    def _env_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, variable in value.items():
            _check_header_name(name)
            if not re.match(ENV_VAR_PATTERN, variable):
                raise ValueError(
                    f"{name}: {variable!r} is not an environment variable name (the value is "
                    "the name of the variable holding the header's value, not the value)"
                )
        return value


def _check_header_name(name: str) -> None:
    if not re.match(HEADER_NAME_PATTERN, name):
        raise ValueError(f"{name!r} is not an HTTP header name")


MCPServerConfig = Annotated[StdioServer | HttpServer, Field(discriminator="transport")]
"""One server's configuration: :class:`StdioServer` or :class:`HttpServer`."""

_ADAPTER: TypeAdapter[StdioServer | HttpServer] = TypeAdapter(MCPServerConfig)


def load_mcp_servers(value: str | None) -> dict[str, MCPServerConfig]:
    """Read and validate ``CHORUS_MCP_SERVERS``.

    Args:
        value: JSON text (an object, starting with ``{``), or the path of a ``.json``,
            ``.yaml`` or ``.yml`` file holding the same mapping; ``None`` or blank means no
            servers.

    Returns:
        Server name -> its configuration, in the order written.

    Raises:
        ChorusInputError: The file cannot be read, the text is not JSON/YAML, the top level is
            not a mapping, a server name breaks ``SERVER_NAME_PATTERN``, or a server's entry
            fails validation (``"CHORUS_MCP_SERVERS: server files: command: field required"``).
    """
    if value is None or not value.strip():
        return {}
    text = value.strip()
    if text.startswith("{"):
        source = SETTING
        try:
            data: Any = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ChorusInputError(f"{SETTING}: not valid JSON: {exc}") from None
    else:
        data, source = _read_file(Path(text).expanduser())
    return parse_mcp_servers(data, source=source)


def _read_file(path: Path) -> tuple[Any, str]:
    source = f"{SETTING} file {path}"
    suffix = path.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise ChorusInputError(
            f"{SETTING}: {str(path)!r} is neither JSON text (starting with '{{') nor the path "
            "of a .json, .yaml or .yml file"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ChorusInputError(f"{source}: cannot read it ({exc.strerror})") from None
    try:
        if suffix == ".json":
            return json.loads(text), source
        return yaml.safe_load(text), source
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        kind = "JSON" if suffix == ".json" else "YAML"
        raise ChorusInputError(f"{source}: not valid {kind}: {exc}") from None


def parse_mcp_servers(data: Any, *, source: str = SETTING) -> dict[str, MCPServerConfig]:
    """Validate already-parsed configuration; see :func:`load_mcp_servers`.

    Args:
        data: The parsed JSON/YAML (``None`` means no servers).
        source: Where it came from, for error messages.

    Raises:
        ChorusInputError: As :func:`load_mcp_servers`.
    """
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ChorusInputError(
            f"{source}: expected a mapping of server name to its configuration, "
            f"got {type(data).__name__}"
        )
    servers: dict[str, MCPServerConfig] = {}
    for name, raw in data.items():
        if not isinstance(name, str) or not _SERVER_NAME.match(name):
            raise ChorusInputError(
                f"{source}: server name {name!r} must match {SERVER_NAME_PATTERN} "
                "(letters, digits, '_' and '-', at most 64)"
            )
        where = f"{source}: server {name}"
        if not isinstance(raw, dict):
            raise ChorusInputError(f"{where}: expected a mapping, got {type(raw).__name__}")
        transport = raw.get("transport")
        if transport not in ("stdio", "http"):
            got = "missing" if transport is None else f"got {transport!r}"
            raise ChorusInputError(f"{where}: transport: must be 'stdio' or 'http' ({got})")
        try:
            servers[name] = _ADAPTER.validate_python(raw, extra=FILE_STRICTNESS)
        except ValidationError as exc:
            problems = "; ".join(_describe(err) for err in exc.errors())
            raise ChorusInputError(f"{where}: {problems}") from None
    return servers


def _describe(err: Any) -> str:
    loc = [str(part) for part in err["loc"]]
    if loc and loc[0] in ("stdio", "http"):  # the union's tag
        loc = loc[1:]
    message = str(err["msg"])
    if message.startswith("Value error, "):  # ours, written as meant
        message = message[len("Value error, ") :]
    else:  # pydantic's: "Field required" -> "field required"
        message = message[:1].lower() + message[1:]
    return f"{'.'.join(loc) or 'entry'}: {message}"
