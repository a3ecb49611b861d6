"""The built-in ``chorus.*`` tools, called through the default registry as an activity would.

Settings come from the environment (``CHORUS_TOOL_ROOTS``, ``CHORUS_DATA_DIR``,
``CHORUS_TOOL_ALLOWED_HOSTS``) through ``get_settings()``, whose cache each test clears. No
Temporal, no PostgreSQL: temp directories, a loopback TCP server and a loopback HTTP server.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from chorus.config.settings import Settings, get_settings
from chorus.contracts.errors import ChorusInputError
from chorus.tools import DEFAULT_REGISTRY, ToolArgumentsError, ToolError, log_files
from chorus.tools.builtin import BUILTIN_MODULES, load_builtin_tools, load_tool_modules
from chorus.tools.confinement import allowed_host, allowed_path, human_bytes, tool_roots

load_builtin_tools()

TOOLS = {
    "chorus.cpu_memory",
    "chorus.disk_usage",
    "chorus.top_processes",
    "chorus.list_logs",
    "chorus.read_log_tail",
    "chorus.search_log",
    "chorus.resolve_dns",
    "chorus.tcp_check",
    "chorus.http_check",
}


@dataclass
class Tree:
    root: Path
    data_logs: Path
    outside: Path
    secret: Path


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Tree]:
    """A root with logs, a data dir with logs, a directory outside both; settings from env."""
    root = tmp_path / "root"
    (root / "app" / "deep" / "deeper" / "deepest" / "abyss").mkdir(parents=True)
    (root / "app.log").write_text("".join(f"line {i}\n" for i in range(1, 5001)))
    (root / "app" / "worker.log").write_text("ERROR one\ninfo two\nerror three\n")
    (root / "app" / "deep" / "deeper" / "deepest" / "abyss" / "too-deep.log").write_text("x\n")
    data = tmp_path / "data"
    (data / "logs").mkdir(parents=True)
    (data / "logs" / "chorus-worker.log").write_text("started\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.txt"
    secret.write_text("password=hunter2\n")
    (root / "link-out.log").symlink_to(secret)
    (root / "dir-out").symlink_to(outside, target_is_directory=True)
    monkeypatch.setenv("CHORUS_TOOL_ROOTS", f"{root}, ")
    monkeypatch.setenv("CHORUS_DATA_DIR", str(data))
    monkeypatch.setenv("CHORUS_TOOL_ALLOWED_HOSTS", "localhost,127.0.0.1,::1")
    get_settings.cache_clear()
    yield Tree(root=root, data_logs=data / "logs", outside=outside, secret=secret)
    get_settings.cache_clear()


async def call(name: str, **arguments: Any) -> Any:
    registered = DEFAULT_REGISTRY.get(name)
    assert registered is not None, name
    text = await registered.call(arguments)
    return text if name == "chorus.read_log_tail" else json.loads(text)


# --- registry and schemas -------------------------------------------------------------------


def test_builtin_tools_are_registered_once():
    load_builtin_tools()  # again: module caching, no duplicate registration
    assert TOOLS <= {spec.name for spec in DEFAULT_REGISTRY.specs()}
    assert BUILTIN_MODULES == (
        "chorus.tools.host",
        "chorus.tools.log_files",
        "chorus.tools.network",
    )
    for name in TOOLS:
        spec = DEFAULT_REGISTRY.get(name).spec  # type: ignore[union-attr]
        assert spec.idempotent and spec.source == "builtin" and spec.description
        assert 5 <= spec.timeout_s <= 60


def test_schemas_describe_every_argument_with_bounds():
    def props(name: str) -> dict[str, Any]:
        registered = DEFAULT_REGISTRY.get(name)
        assert registered is not None
        schema = registered.spec.parameters
        assert schema["additionalProperties"] is False
        for field, prop in schema["properties"].items():
            assert prop.get("description"), f"{name}.{field} has no description"
        return dict(schema["properties"])

    assert props("chorus.cpu_memory") == {}
    top = props("chorus.top_processes")
    assert (top["limit"]["minimum"], top["limit"]["maximum"], top["limit"]["default"]) == (
        1,
        50,
        10,
    )
    assert top["sort_by"]["enum"] == ["cpu", "memory"]
    assert "CHORUS_TOOL_ROOTS" in props("chorus.disk_usage")["path"]["description"]
    assert "CHORUS_TOOL_ROOTS" in props("chorus.list_logs")["directory"]["description"]
    tail = props("chorus.read_log_tail")
    assert (tail["lines"]["minimum"], tail["lines"]["maximum"], tail["lines"]["default"]) == (
        1,
        2000,
        100,
    )
    search = props("chorus.search_log")
    assert (search["pattern"]["minLength"], search["pattern"]["maxLength"]) == (1, 200)
    assert (search["max_matches"]["minimum"], search["max_matches"]["maximum"]) == (1, 500)
    assert search["regex"]["default"] is False and search["ignore_case"]["default"] is True
    assert "CHORUS_TOOL_ALLOWED_HOSTS" in props("chorus.resolve_dns")["host"]["description"]
    tcp = props("chorus.tcp_check")
    assert (tcp["port"]["minimum"], tcp["port"]["maximum"]) == (1, 65535)
    assert (tcp["timeout_s"]["minimum"], tcp["timeout_s"]["maximum"]) == (0.1, 10)
    http = props("chorus.http_check")
    assert (http["timeout_s"]["minimum"], http["timeout_s"]["maximum"]) == (0.1, 30)
    assert http["expect_status"]["anyOf"][0] == {"maximum": 599, "minimum": 100, "type": "integer"}


async def test_arguments_out_of_bounds_are_refused(tree: Tree):
    cases: list[tuple[str, dict[str, Any]]] = [
        ("chorus.top_processes", {"limit": 51}),
        ("chorus.top_processes", {"sort_by": "disk"}),
        ("chorus.read_log_tail", {"path": "app.log", "lines": 0}),
        ("chorus.search_log", {"path": "app.log", "pattern": "x" * 201}),
        ("chorus.search_log", {"path": "app.log", "pattern": ""}),
        ("chorus.tcp_check", {"host": "localhost", "port": 0}),
        ("chorus.tcp_check", {"host": "localhost", "port": 80, "timeout_s": 11}),
        ("chorus.http_check", {"url": "http://localhost/", "timeout_s": 31}),
    ]
    for name, arguments in cases:
        with pytest.raises(ToolArgumentsError):
            await call(name, **arguments)


# --- host -----------------------------------------------------------------------------------


async def test_cpu_memory():
    result = await call("chorus.cpu_memory")
    assert 0 <= result["cpu_percent"] <= 100
    assert set(result["load_average"]) == {"1m", "5m", "15m"}
    assert result["cores"]["logical"] >= 1
    memory = result["memory"]
    assert memory["total_bytes"] > memory["available_bytes"] > 0
    assert 0 < memory["used_percent"] < 100 and memory["total"].endswith("iB")
    assert {"total_bytes", "used_bytes", "used_percent"} <= set(result["swap"])


async def test_disk_usage_of_a_root_and_of_the_default(tree: Tree):
    result = await call("chorus.disk_usage", path=str(tree.root / "app"))
    assert result["path"] == str((tree.root / "app").resolve())
    assert result["total_bytes"] >= result["used_bytes"] > 0 and result["free_bytes"] > 0
    assert 0 < result["used_percent"] <= 100 and result["total"].endswith("iB")
    assert Path(result["path"]).is_relative_to(result["mount_point"])
    default = await call("chorus.disk_usage")
    assert default["path"] == str(tree.root.resolve())  # the first root
    with pytest.raises(ToolError, match=r"outside the allowed roots.*CHORUS_TOOL_ROOTS"):
        await call("chorus.disk_usage", path="/")


async def test_top_processes_without_command_lines():
    result = await call("chorus.top_processes", limit=5, sort_by="memory")
    rows = result["processes"]
    assert 1 <= len(rows) <= 5 and result["processes_seen"] >= len(rows)
    assert all(set(row) == {"pid", "name", "user", "cpu_percent", "rss_mb"} for row in rows)
    assert [r["rss_mb"] for r in rows] == sorted((r["rss_mb"] for r in rows), reverse=True)
    everyone = await call("chorus.top_processes", limit=50)
    assert everyone["sorted_by"] == "cpu"
    cpu = [r["cpu_percent"] for r in everyone["processes"]]
    assert cpu == sorted(cpu, reverse=True)
    assert "cmdline" not in json.dumps(everyone) and "environ" not in json.dumps(everyone)


# --- log files ------------------------------------------------------------------------------


async def test_list_logs_of_every_root_newest_first(tree: Tree):
    os.utime(tree.root / "app" / "worker.log", (2_000_000_000, 2_000_000_000))
    result = await call("chorus.list_logs")
    paths = [f["path"] for f in result["files"]]
    assert result["directories"] == [str(tree.root.resolve()), str(tree.data_logs.resolve())]
    assert paths[0] == str(tree.root / "app" / "worker.log")  # newest first
    assert str(tree.root / "app.log") in paths
    assert str(tree.data_logs / "chorus-worker.log") in paths  # the data dir's logs, always
    assert not any("secret" in p or "dir-out" in p or "link-out" in p for p in paths)
    assert not any("too-deep" in p for p in paths)  # deeper than 3 levels
    assert result["skipped_unreadable_or_outside"] == 2  # link-out.log, dir-out
    assert result["truncated"] is True  # the depth limit left a directory unlisted
    app = next(f for f in result["files"] if f["path"].endswith("app.log"))
    assert app["size_bytes"] == (tree.root / "app.log").stat().st_size
    assert app["size"].endswith("KiB") and app["modified"].endswith("+00:00")


async def test_list_logs_of_one_directory_caps_entries(tree: Tree):
    many = tree.root / "many"
    many.mkdir()
    for i in range(205):
        (many / f"f{i:03}.log").write_text("x")
    result = await call("chorus.list_logs", directory=str(many))
    assert len(result["files"]) == 200 and result["files_found"] == 205
    assert result["truncated"] is True
    with pytest.raises(ToolError, match="is a file"):
        await call("chorus.list_logs", directory=str(tree.root / "app.log"))
    with pytest.raises(ToolError, match="outside the allowed roots"):
        await call("chorus.list_logs", directory=str(tree.root / "dir-out"))


async def test_read_log_tail(tree: Tree):
    text = await call("chorus.read_log_tail", path=str(tree.root / "app.log"))
    header, *lines = text.split("\n")
    assert header.startswith(f"==> {tree.root / 'app.log'} (") and "last 100 line(s)" in header
    assert lines == [f"line {i}" for i in range(4901, 5001)]
    relative = await call("chorus.read_log_tail", path="app.log", lines=1)
    assert relative.split("\n")[1:] == ["line 5000"]
    everything = await call("chorus.read_log_tail", path="app/worker.log", lines=2000)
    assert everything.split("\n")[1:] == ["ERROR one", "info two", "error three"]
    odd = tree.root / "odd.log"
    odd.write_bytes(b"first\r\nbad \xff\xfe bytes\r\nno newline at the end")
    assert (await call("chorus.read_log_tail", path=str(odd), lines=2)).split("\n")[1:] == [
        "bad \ufffd\ufffd bytes",
        "no newline at the end",
    ]
    (tree.root / "wide.log").write_text("w" * 5000 + "\nend\n")
    wide = (await call("chorus.read_log_tail", path="wide.log")).split("\n")[1:]
    assert wide == ["w" * 2000 + "…", "end"]  # long lines cut at 2000 characters
    (tree.root / "empty.log").write_text("")
    assert "last 0 line(s)" in await call("chorus.read_log_tail", path="empty.log")


async def test_read_log_tail_reads_only_the_end(tree: Tree, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(log_files, "TAIL_BLOCK_BYTES", 256)
    monkeypatch.setattr(log_files, "MAX_TAIL_BYTES", 1024)
    big = tree.root / "big.log"
    big.write_text("".join(f"{i:09} " + "y" * 90 + "\n" for i in range(100_000)))  # 10 MB
    text = await call("chorus.read_log_tail", path=str(big), lines=5)
    assert [line[:9] for line in text.split("\n")[1:]] == [
        f"{i:09}" for i in range(99_995, 100_000)
    ]
    short = await call("chorus.read_log_tail", path=str(big), lines=50)  # > 1 KiB back
    header, *lines = short.split("\n")
    assert "stopped reading 1.0 KiB back from the end" in header
    assert 1 <= len(lines) < 50 and lines[-1].startswith("000099999")
    assert all(len(line) == 100 for line in lines)  # the partial first line was dropped
    (tree.root / "one-line.log").write_text("z" * 5000)
    one = (await call("chorus.read_log_tail", path="one-line.log")).split("\n")
    assert one[1] == "…" + "z" * 1024  # the line's last KiB, marked as partial


async def test_search_log(tree: Tree):
    found = await call("chorus.search_log", path="app/worker.log", pattern="error")
    assert found["matches"] == [
        {"line": 1, "text": "ERROR one"},
        {"line": 3, "text": "error three"},
    ]
    assert found["match_count"] == 2 and found["lines_searched"] == 3 and "stopped" not in found
    exact = await call(
        "chorus.search_log", path="app/worker.log", pattern="error", ignore_case=False
    )
    assert [m["line"] for m in exact["matches"]] == [3]
    regex = await call(
        "chorus.search_log", path=str(tree.root / "app.log"), pattern=r"^line 4\d{3}$", regex=True
    )
    assert regex["match_count"] == 1000 and len(regex["matches"]) == 50
    assert regex["matches"][0] == {"line": 4000, "text": "line 4000"}
    assert "the first 50 are shown" in regex["note"]
    literal = await call("chorus.search_log", path="app.log", pattern="line 4.", max_matches=500)
    assert literal["match_count"] == 0  # not a regex: "." is a dot
    long_line = tree.root / "long.log"
    long_line.write_text("a" * 2000 + " needle\nshort\n")
    cut = await call("chorus.search_log", path=str(long_line), pattern="NEEDLE")
    assert cut["matches"][0]["text"] == "a" * 500 + "…"


async def test_search_log_refuses_bad_patterns_and_stops(tree: Tree, monkeypatch):
    with pytest.raises(ToolError, match="invalid regular expression"):
        await call("chorus.search_log", path="app.log", pattern="(unclosed", regex=True)
    for pattern in ["(a+)+$", r"(\w+\s?)*x", "(.*)*", "(?:x+){2,}"]:
        with pytest.raises(ToolError, match="exponential"):
            await call("chorus.search_log", path="app.log", pattern=pattern, regex=True)
    ok = await call(
        "chorus.search_log", path="app.log", pattern=r"([+-]\d)+|(\d+\.){3}", regex=True
    )
    assert ok["match_count"] == 0
    monkeypatch.setattr(log_files, "MAX_SEARCH_BYTES", 1000)
    stopped = await call("chorus.search_log", path="app.log", pattern="line")
    assert stopped["stopped"].startswith("stopped after reading 1000 B of ")
    assert stopped["lines_searched"] < 200


async def test_special_and_compressed_files_are_refused(tree: Tree):
    os.mkfifo(tree.root / "pipe.log")
    with pytest.raises(ToolError, match="not a regular file"):
        await call("chorus.read_log_tail", path="pipe.log")
    with pytest.raises(ToolError, match="is a directory"):
        await call("chorus.search_log", path=str(tree.root / "app"), pattern="x")
    (tree.root / "old.log.gz").write_bytes(b"\x1f\x8b\x08\x00")
    with pytest.raises(ToolError, match="compressed"):
        await call("chorus.read_log_tail", path="old.log.gz")
    listed = await call("chorus.list_logs", directory=str(tree.root))
    assert not any(f["path"].endswith("pipe.log") for f in listed["files"])


# --- confinement ----------------------------------------------------------------------------


def escapes(tree: Tree) -> list[str]:
    return [
        f"{tree.root}/../outside/secret.txt",  # ../ traversal from inside a root
        "../outside/secret.txt",  # relative, resolved against the root
        str(tree.secret),  # absolute, elsewhere
        str(tree.root / "link-out.log"),  # a link inside the root pointing out
        str(tree.root / "dir-out" / "secret.txt"),  # through a linked directory
        "/proc/self/environ",
        "/etc/passwd",
        f"{tree.root}-sibling/x.log",  # /…/root-sibling is not inside /…/root
        str(tree.outside / "missing.log"),  # outside and missing: still "outside"
    ]


@pytest.mark.parametrize(
    ("name", "field", "extra"),
    [
        ("chorus.read_log_tail", "path", {}),
        ("chorus.search_log", "path", {"pattern": "password"}),
        ("chorus.list_logs", "directory", {}),
        ("chorus.disk_usage", "path", {}),
    ],
)
async def test_paths_outside_the_roots_are_refused(tree: Tree, name, field, extra):
    (tree.root.parent / "root-sibling").mkdir()
    (tree.root.parent / "root-sibling" / "x.log").write_text("x")
    for path in escapes(tree):
        with pytest.raises(ToolError) as refused:
            await call(name, **{field: path}, **extra)
        message = str(refused.value)
        assert "is outside the allowed roots" in message, (path, message)
        assert f"{tree.root.resolve()}, {tree.data_logs.resolve()} (CHORUS_TOOL_ROOTS)" in message
        assert "hunter2" not in message


async def test_missing_and_empty_paths(tree: Tree):
    with pytest.raises(ToolError, match=r"path nope\.log does not exist \(allowed roots: "):
        await call("chorus.read_log_tail", path="nope.log")
    with pytest.raises(ToolError, match="path is empty"):
        await call("chorus.read_log_tail", path="  ")
    with pytest.raises(ToolError, match="NUL"):
        await call("chorus.read_log_tail", path="app.log\x00")
    (tree.root / "loop.log").symlink_to(tree.root / "loop.log")
    with pytest.raises(ToolError, match="cannot be resolved"):
        await call("chorus.read_log_tail", path="loop.log")


def test_allowed_path_and_roots(tmp_path: Path):
    root = tmp_path / "r"
    root.mkdir()
    (root / "a.log").write_text("a")
    (root / "x").mkdir()
    settings = Settings(tool_roots=f"{root},{root}/,/nonexistent-root", data_dir=tmp_path / "d")
    assert tool_roots(settings) == [root, Path("/nonexistent-root"), tmp_path / "d" / "logs"]
    assert allowed_path("a.log", settings) == root / "a.log"
    assert allowed_path(f"{root}/./x/../a.log", settings) == root / "a.log"
    assert human_bytes(512) == "512 B" and human_bytes(1536) == "1.5 KiB"
    assert human_bytes(3 * 1024**3) == "3.0 GiB"


def test_allowed_hosts():
    settings = Settings(tool_allowed_hosts="LocalHost, 127.0.0.1,[::1],db.internal.")
    for host in ["localhost", "LOCALHOST", "localhost.", "127.0.0.1", "::1", "[::1]",
                 "0:0:0:0:0:0:0:1", "db.internal", "DB.Internal."]:  # fmt: skip
        assert allowed_host(host, settings) == host.lower().strip("[]").rstrip(".")
    for host in ["example.com", "127.0.0.2", "sub.localhost", "internal", "10.0.0.1", "::2"]:
        with pytest.raises(ToolError, match=r"not in the allowed hosts: localhost, 127\.0\.0\.1"):
            allowed_host(host, settings)
    with pytest.raises(ToolError, match="CHORUS_TOOL_ALLOWED_HOSTS"):
        allowed_host("evil.example", settings)
    with pytest.raises(ToolError, match="host is empty"):
        allowed_host(" [] ", settings)
    assert allowed_host("anything.example", Settings(tool_allowed_hosts="*")) == "anything.example"
    with pytest.raises(ToolError, match="allowed hosts: none"):
        allowed_host("localhost", Settings(tool_allowed_hosts=""))


# --- network --------------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_resolve_dns(tree: Tree):
    result = await call("chorus.resolve_dns", host="localhost")
    assert result["resolved"] is True and result["latency_ms"] >= 0
    assert {"address": "127.0.0.1", "family": "IPv4"} in result["addresses"]
    literal = await call("chorus.resolve_dns", host="[::1]")
    assert literal["host"] == "::1"
    with pytest.raises(ToolError, match=r"example\.com is not in the allowed hosts.*ALLOWED_HOSTS"):
        await call("chorus.resolve_dns", host="example.com")


async def test_tcp_check_open_and_closed(tree: Tree):
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        opened = await call("chorus.tcp_check", host="127.0.0.1", port=port)
        assert opened == {
            "host": "127.0.0.1",
            "port": port,
            "state": "open",
            "latency_ms": opened["latency_ms"],
        }
        assert opened["latency_ms"] < 1000
    finally:
        server.close()
        await server.wait_closed()
    closed = await call("chorus.tcp_check", host="localhost", port=closed_port(), timeout_s=1)
    assert closed["state"] in ("closed", "error")  # localhost may try ::1, then 127.0.0.1
    refused = await call("chorus.tcp_check", host="127.0.0.1", port=closed_port())
    assert refused["state"] == "closed"
    with pytest.raises(ToolError, match="CHORUS_TOOL_ALLOWED_HOSTS"):
        await call("chorus.tcp_check", host="192.0.2.1", port=80)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "http://example.com/elsewhere")
            self.end_headers()
            return
        status = 404 if self.path == "/missing" else 200
        body = ("é" + "x" * 999).encode() if status == 200 else b"not here"
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_http_check(tree: Tree, http_server: str):
    up = await call("chorus.http_check", url=f"{http_server}/health")
    assert (up["up"], up["status"], up["ok"], up["reason"]) == (True, 200, True, "OK")
    assert up["content_type"].startswith("text/plain") and 0 < up["latency_ms"] < 5000
    assert up["body_start"] == "é" + "x" * 499 + "…" and "location" not in up
    moved = await call("chorus.http_check", url=f"{http_server}/redirect")
    assert (moved["status"], moved["location"]) == (302, "http://example.com/elsewhere")
    assert moved["ok"] is True  # a redirect answers; it is reported, not followed
    missing = await call("chorus.http_check", url=f"{http_server}/missing")
    assert (missing["status"], missing["ok"], missing["body_start"]) == (404, False, "not here")
    expected = await call("chorus.http_check", url=f"{http_server}/missing", expect_status=404)
    assert expected["ok"] is True
    wrong = await call("chorus.http_check", url=f"{http_server}/health", expect_status=204)
    assert wrong["ok"] is False


async def test_http_check_down_and_refused(tree: Tree):
    down = await call("chorus.http_check", url=f"http://127.0.0.1:{closed_port()}/", timeout_s=2)
    assert down["up"] is False and down["ok"] is False and "ConnectError" in down["error"]
    with pytest.raises(ToolError, match=r"example\.com is not in the allowed hosts.*ALLOWED_HOSTS"):
        await call("chorus.http_check", url="https://example.com/")
    with pytest.raises(ToolError, match="only http:// and https://"):
        await call("chorus.http_check", url="file:///etc/passwd")
    with pytest.raises(ToolError, match="has no host"):
        await call("chorus.http_check", url="http:///path")
    with pytest.raises(ToolError, match="url http://localhost:99999/"):
        await call("chorus.http_check", url="http://localhost:99999/")


# --- user tool modules ----------------------------------------------------------------------


def test_load_tool_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    assert load_tool_modules("") == []
    assert load_tool_modules(" json , ,os.path") == ["json", "os.path"]
    with pytest.raises(ChorusInputError, match=r"'no_such_tools_module'.*ModuleNotFoundError"):
        load_tool_modules("json,no_such_tools_module")
    (tmp_path / "broken_tools_module.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ChorusInputError, match=r"CHORUS_TOOL_MODULES.*broken_tools_module.*boom"):
        load_tool_modules("broken_tools_module")
