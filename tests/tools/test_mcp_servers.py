"""MCP servers through the official SDK: real stdio and streamable-HTTP servers, no mocks.

The stdio servers are the bundled example server (``chorus.tools.example_mcp_server``) and a
test-only one (``mcp_fixture_server.py``, tools to crash, stall and inspect it); the HTTP server
is the example server started as a subprocess on a loopback port.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from mcp import types as mcp_types

from chorus.config.mcp_config import HttpServer, StdioServer, load_mcp_servers
from chorus.contracts.errors import ChorusInputError, ChorusUnavailableError
from chorus.contracts.tools import TOOL_NAME_PATTERN
from chorus.tools.mcp_servers import (
    MCPServers,
    MCPToolOutcome,
    MCPUnavailable,
    UnknownMCPServer,
    render_result,
)

FIXTURE_SERVER = str(Path(__file__).with_name("mcp_fixture_server.py"))


def _stdio(*args: str, **extra: object) -> dict[str, object]:
    return {"transport": "stdio", "command": sys.executable, "args": list(args), **extra}


def _example(root: Path) -> dict[str, object]:
    return _stdio("-m", "chorus.tools.example_mcp_server", "--root", str(root))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("mcp")
    (base / "outside.txt").write_text("secret outside the root\n")
    served = base / "served"
    (served / "logs").mkdir(parents=True)
    (served / "notes.txt").write_text("first line\nsecond line\n")
    (served / "logs" / "app.log").write_text("ERROR disk full\n")
    (served / "logs" / "error-report.txt").write_text("x" * 500)
    (served / "escape").symlink_to(base / "outside.txt")
    (served / "escape-dir").symlink_to(base)
    return served


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def servers(root: Path) -> AsyncIterator[MCPServers]:
    """The example server and the fixture server over stdio, shared by the module's tests."""
    configs = load_mcp_servers(
        json.dumps({"files": _example(root), "fx": _stdio(FIXTURE_SERVER, timeout_s=20)})
    )
    mcp = MCPServers(configs)
    yield mcp
    await mcp.aclose()


# --- stdio: the example server ---------------------------------------------------------------


async def test_lists_the_example_servers_tools_with_schemas(servers: MCPServers):
    specs = {spec.name: spec for spec in await servers.list_tools("files")}

    assert set(specs) == {
        "mcp:files/read_text_file",
        "mcp:files/list_directory",
        "mcp:files/search_files",
    }
    read = specs["mcp:files/read_text_file"]
    assert read.source == "mcp"
    assert read.idempotent is True  # readOnlyHint
    assert read.max_attempts == 3
    assert read.timeout_s == 30.0
    assert "text file" in read.description
    assert read.parameters["type"] == "object"
    assert read.parameters["required"] == ["path"]
    assert read.parameters["properties"]["max_chars"]["default"] == 20000
    assert specs["mcp:files/list_directory"].parameters["properties"]["path"]["default"] == "."


async def test_reads_lists_and_searches_inside_the_root(servers: MCPServers):
    read = await servers.call_tool("files", "read_text_file", {"path": "notes.txt"}, 10)
    assert read == MCPToolOutcome("first line\nsecond line\n", is_error=False)

    cut = await servers.call_tool(
        "files", "read_text_file", {"path": "logs/error-report.txt", "max_chars": 10}, 10
    )
    assert cut.text.startswith("xxxxxxxxxx\n[... cut at 10 characters; 500 bytes")

    listing = await servers.call_tool("files", "list_directory", {}, 10)
    assert listing.text.splitlines()[0] == "logs/"
    assert "notes.txt (23 bytes)" in listing.text

    found = await servers.call_tool("files", "search_files", {"pattern": "*.log"}, 10)
    assert found.text == "logs/app.log"
    found = await servers.call_tool("files", "search_files", {"pattern": "ERROR"}, 10)
    assert found.text == "logs/error-report.txt"


@pytest.mark.parametrize(
    "path",
    ["../outside.txt", "escape", "escape-dir/outside.txt", "/etc/passwd", "logs/../../outside.txt"],
)
async def test_escapes_come_back_as_tool_errors(servers: MCPServers, path: str):
    outcome = await servers.call_tool("files", "read_text_file", {"path": path}, 10)

    assert outcome.is_error is True
    assert "outside the directory this server serves" in outcome.text
    assert "secret" not in outcome.text


async def test_a_refused_request_is_an_error_outcome_not_an_exception(servers: MCPServers):
    unknown = await servers.call_tool("files", "no_such_tool", {}, 10)
    bad_arguments = await servers.call_tool("files", "read_text_file", {"paht": "x"}, 10)

    assert unknown.is_error and "no_such_tool" in unknown.text
    assert bad_arguments.is_error and "path" in bad_arguments.text


async def test_ten_concurrent_calls_share_one_session(servers: MCPServers):
    read = {"path": "notes.txt"}
    reads = await asyncio.gather(
        *(servers.call_tool("files", "read_text_file", read, 10) for _ in range(10))
    )
    pids = await asyncio.gather(*(servers.call_tool("fx", "pid", {}, 10) for _ in range(10)))

    assert {r.text for r in reads} == {"first line\nsecond line\n"}
    assert len({p.text for p in pids}) == 1  # one server process answered them all


# --- stdio: crashes, timeouts, restarts (the fixture server) ---------------------------------


def _wait_dead(pid: int, timeout_s: float = 5.0) -> None:
    """Until ``pid`` has exited (a zombie counts: its pipes are closed)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.02)
    raise AssertionError(f"process {pid} still alive")


async def test_a_killed_server_is_restarted_by_the_next_call(servers: MCPServers):
    tools_before = await servers.list_tools("fx")
    first = int((await servers.call_tool("fx", "pid", {}, 10)).text)

    os.kill(first, signal.SIGKILL)
    _wait_dead(first)
    await asyncio.sleep(0.2)  # the session reads EOF

    assert await servers.list_tools("fx") == tools_before  # cached: no server needed
    second = await servers.call_tool("fx", "pid", {}, 20)
    assert second.is_error is False
    assert int(second.text) != first


async def test_a_server_dying_mid_call_is_unavailable_then_restarted(servers: MCPServers):
    before = (await servers.call_tool("fx", "pid", {}, 10)).text

    with pytest.raises(MCPUnavailable) as caught:
        await servers.call_tool("fx", "exit_now", {}, 10)

    assert isinstance(caught.value, ChorusUnavailableError)
    assert caught.value.server == "fx"
    assert "may or may not have run" in str(caught.value)
    after = await servers.call_tool("fx", "pid", {}, 20)
    assert after.text != before


async def test_a_slow_call_times_out_and_the_session_survives(servers: MCPServers):
    before = (await servers.call_tool("fx", "pid", {}, 20)).text
    started = time.monotonic()

    with pytest.raises(TimeoutError, match=r"fx: tool sleep did not answer within 0\.3 s"):
        await servers.call_tool("fx", "sleep", {"seconds": 30}, 0.3)

    assert time.monotonic() - started < 2
    assert (await servers.call_tool("fx", "pid", {}, 10)).text == before


async def test_fixture_tools_hints_errors_and_structured_results(servers: MCPServers):
    specs = {spec.name: spec for spec in await servers.list_tools("fx")}
    failed = await servers.call_tool("fx", "fail", {"message": "disk on fire"}, 10)
    totals = await servers.call_tool("fx", "totals", {}, 10)

    assert specs["mcp:fx/pid"].idempotent is True  # readOnlyHint
    assert specs["mcp:fx/env"].idempotent is True  # idempotentHint
    assert specs["mcp:fx/exit_now"].idempotent is False  # no hints: unknown effect
    assert specs["mcp:fx/exit_now"].max_attempts == 1
    assert failed.is_error and failed.text.endswith("disk on fire")
    assert json.loads(totals.text) == {"files": 3, "bytes": 42}


async def test_stdio_environment_is_minimal_and_expands_references(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("CHORUS_TEST_MCP_TOKEN", "tok-123")
    monkeypatch.setenv("CHORUS_TEST_NOT_INHERITED", "leak")
    configs = load_mcp_servers(
        json.dumps(
            {
                "fx": _stdio(
                    FIXTURE_SERVER,
                    env={"TOKEN": "Bearer ${CHORUS_TEST_MCP_TOKEN}", "PLAIN": "p"},
                ),
                "missing": _stdio(FIXTURE_SERVER, env={"X": "${CHORUS_TEST_UNSET_VARIABLE}"}),
            }
        )
    )
    mcp = MCPServers(configs, log_dir=tmp_path)
    try:
        token = await mcp.call_tool("fx", "env", {"name": "TOKEN"}, 20)
        leaked = await mcp.call_tool("fx", "env", {"name": "CHORUS_TEST_NOT_INHERITED"}, 10)
        path = await mcp.call_tool("fx", "env", {"name": "PATH"}, 10)
        with pytest.raises(MCPUnavailable, match=r"missing: env X: \$\{CHORUS_TEST_UNSET_VARIABLE"):
            await mcp.call_tool("missing", "pid", {}, 10)
    finally:
        await mcp.aclose()

    assert token.text == "Bearer tok-123"
    assert leaked.text == "<unset>"
    assert path.text == os.environ["PATH"]
    # stderr went to the log file, not to our output
    assert "fixture server starting" in (tmp_path / "mcp-fx.log").read_text()


async def test_a_server_that_cannot_start_is_unavailable_with_its_stderr(tmp_path: Path):
    crash = "import sys; sys.stderr.write('boom: no config'); sys.exit(3)"
    configs = load_mcp_servers(
        json.dumps(
            {
                "crash": _stdio("-c", crash),
                "nope": {"transport": "stdio", "command": str(tmp_path / "no-such-binary")},
            }
        )
    )
    mcp = MCPServers(configs, log_dir=tmp_path)
    try:
        with pytest.raises(MCPUnavailable, match=r"MCP server crash: .*boom: no config"):
            await mcp.list_tools("crash")
        with pytest.raises(MCPUnavailable, match="MCP server nope: No such file or directory"):
            await mcp.call_tool("nope", "x", {}, 10)
    finally:
        await mcp.aclose()


async def test_an_unknown_server_names_the_configured_ones(servers: MCPServers):
    with pytest.raises(UnknownMCPServer, match=r"no MCP server named 'ghost' \(.*: files, fx\)"):
        await servers.call_tool("ghost", "pid", {}, 10)
    with pytest.raises(ChorusInputError):
        await servers.list_tools("ghost")
    with pytest.raises(KeyError):
        servers.config("ghost")
    assert servers.names() == ["files", "fx"]


# --- streamable HTTP ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def http_server(root: Path) -> Iterator[str]:
    """The example server over streamable HTTP on a loopback port, requiring a bearer token."""
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chorus.tools.example_mcp_server",
            "--root",
            str(root),
            "--transport",
            "streamable-http",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--token-env",
            "CHORUS_TEST_FILES_TOKEN",
        ],
        env={**os.environ, "CHORUS_TEST_FILES_TOKEN": "t0ken"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("the example HTTP server did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()


async def test_http_server_with_a_header_from_the_environment(
    http_server: str, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("CHORUS_TEST_FILES_AUTH", "Bearer t0ken")
    configs = load_mcp_servers(
        json.dumps(
            {
                "web": {
                    "transport": "http",
                    "url": http_server,
                    "headers": {"X-Team": "ops"},
                    "headers_env": {"Authorization": "CHORUS_TEST_FILES_AUTH"},
                },
                "anonymous": {"transport": "http", "url": http_server},
            }
        )
    )
    mcp = MCPServers(configs)
    try:
        specs = await mcp.list_tools("web")
        reads = await asyncio.gather(
            *(mcp.call_tool("web", "read_text_file", {"path": "notes.txt"}, 10) for _ in range(5))
        )
        escape = await mcp.call_tool("web", "read_text_file", {"path": "escape"}, 10)
        with pytest.raises(MCPUnavailable, match=r"MCP server anonymous: .*HTTP 401"):
            await mcp.list_tools("anonymous")
    finally:
        await mcp.aclose()

    assert [s.name for s in specs] == [
        "mcp:web/read_text_file",
        "mcp:web/list_directory",
        "mcp:web/search_files",
    ]
    assert {r.text for r in reads} == {"first line\nsecond line\n"}
    assert escape.is_error


async def test_an_unset_header_variable_is_unavailable(http_server: str):
    configs = load_mcp_servers(
        json.dumps(
            {
                "web": {
                    "transport": "http",
                    "url": http_server,
                    "headers_env": {"Authorization": "CHORUS_TEST_UNSET_VARIABLE"},
                }
            }
        )
    )
    mcp = MCPServers(configs)
    try:
        with pytest.raises(MCPUnavailable, match="CHORUS_TEST_UNSET_VARIABLE is not set"):
            await mcp.call_tool("web", "read_text_file", {"path": "notes.txt"}, 10)
    finally:
        await mcp.aclose()


async def test_an_unreachable_http_server_is_unavailable_quickly():
    url = f"http://127.0.0.1:{_free_port()}/mcp"  # nothing listens there
    mcp = MCPServers(load_mcp_servers(json.dumps({"down": {"transport": "http", "url": url}})))
    started = time.monotonic()
    try:
        with pytest.raises(MCPUnavailable, match="MCP server down: ConnectError") as caught:
            await mcp.call_tool("down", "read_text_file", {"path": "x"}, 10)
        with pytest.raises(MCPUnavailable):  # tried again, not remembered as dead
            await mcp.list_tools("down")
    finally:
        await mcp.aclose()

    assert caught.value.server == "down"
    assert time.monotonic() - started < 3


# --- results as text --------------------------------------------------------------------------


def test_result_blocks_become_text():
    result = mcp_types.CallToolResult(
        content=[
            mcp_types.TextContent(text="two files"),
            mcp_types.ImageContent(data="aGVsbG8h", mime_type="image/png"),
            mcp_types.ResourceLink(uri="file:///srv/a.txt", name="a.txt"),
            mcp_types.EmbeddedResource(
                resource=mcp_types.TextResourceContents(uri="file:///srv/b.txt", text="bee")
            ),
        ],
        structured_content={"ignored": True},
    )

    assert render_result(result) == (
        "two files\n[image image/png, about 6 bytes]\n[resource file:///srv/a.txt a.txt]\n"
        "[resource file:///srv/b.txt]\nbee"
    )
    structured = mcp_types.CallToolResult(content=[], structured_content={"n": 1})
    assert render_result(structured) == '{"n": 1}'


# --- configuration ----------------------------------------------------------------------------


def test_config_from_json_text_and_files(tmp_path: Path):
    text = json.dumps(
        {
            "files": {"transport": "stdio", "command": "python", "args": ["-m", "x"]},
            "web": {
                "transport": "http",
                "url": "https://mcp.example.com/mcp",
                "headers_env": {"Authorization": "WEB_AUTH"},
                "timeout_s": 5,
            },
        }
    )
    yaml_file = tmp_path / "mcp.yaml"
    yaml_file.write_text(
        "files:\n  transport: stdio\n  command: python\n  env: {TOKEN: '${FILES_TOKEN}'}\n"
    )
    json_file = tmp_path / "mcp.json"
    json_file.write_text(text)

    servers = load_mcp_servers(text)
    assert isinstance(servers["files"], StdioServer) and servers["files"].args == ["-m", "x"]
    assert isinstance(servers["web"], HttpServer) and servers["web"].timeout_s == 5
    assert load_mcp_servers(str(json_file)) == servers
    from_yaml = load_mcp_servers(str(yaml_file))["files"]
    assert isinstance(from_yaml, StdioServer) and from_yaml.env == {"TOKEN": "${FILES_TOKEN}"}
    assert load_mcp_servers(None) == {} and load_mcp_servers("  ") == {}
    assert TOOL_NAME_PATTERN  # names built from these servers are checked against it


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"files": {"transport": "stdio"}}, "server files: command: field required"),
        (
            {"files": {"transport": "stdio", "command": "x", "argz": []}},
            "server files: argz: extra inputs are not permitted",
        ),
        ({"files": {"command": "x"}}, "server files: transport: must be 'stdio' or 'http'"),
        (
            {"web": {"transport": "http", "url": "ftp://host/x"}},
            "server web: url: 'ftp://host/x' is not an http:// or https:// URL",
        ),
        (
            {"web": {"transport": "http", "url": "https://u:p@host/x"}},
            "server web: url: credentials do not belong in the URL",
        ),
        (
            {"web": {"transport": "http", "url": "https://h/", "headers": {"Authorization": "x"}}},
            "server web: headers: Authorization looks like a secret",
        ),
        (
            {"web": {"transport": "http", "url": "https://h/", "headers_env": {"X-Key": "a b"}}},
            "server web: headers_env: X-Key: 'a b' is not an environment variable name",
        ),
        (
            {"web": {"transport": "http", "url": "https://h/", "timeout_s": 0}},
            "server web: timeout_s: input should be greater than 0",
        ),
        ({"bad name": {"transport": "stdio", "command": "x"}}, "server name 'bad name' must"),
        ({"files": ["python"]}, "server files: expected a mapping, got list"),
    ],
)
def test_config_errors_name_the_server_and_the_field(config: object, message: str):
    with pytest.raises(ChorusInputError) as caught:
        load_mcp_servers(json.dumps(config))

    assert str(caught.value).startswith("CHORUS_MCP_SERVERS: ")
    assert message in str(caught.value)


def test_config_file_errors(tmp_path: Path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("files: [unclosed\n")
    text = tmp_path / "servers.txt"
    text.write_text("{}")

    with pytest.raises(ChorusInputError, match=r"file .*broken.yaml: not valid YAML"):
        load_mcp_servers(str(broken))
    with pytest.raises(ChorusInputError, match="cannot read it"):
        load_mcp_servers(str(tmp_path / "missing.json"))
    with pytest.raises(ChorusInputError, match=r"neither JSON text .* nor the path of a \.json"):
        load_mcp_servers(str(text))
    with pytest.raises(ChorusInputError, match="CHORUS_MCP_SERVERS: not valid JSON"):
        load_mcp_servers("{not json")
