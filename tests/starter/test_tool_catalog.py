"""``chorus tools list`` / ``chorus tools call`` and the SDK's ToolCatalog behind them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from chorus.config.settings import Settings
from chorus.contracts.errors import ChorusInputError
from starter.sdk.tool_catalog import ToolCatalog


def mcp_servers(root: Path) -> str:
    return json.dumps(
        {
            "files": {
                "transport": "stdio",
                "command": sys.executable,
                "args": ["-m", "chorus.tools.example_mcp_server", "--root", str(root)],
            },
            "down": {"transport": "http", "url": "http://127.0.0.1:9/mcp", "timeout_s": 2},
        }
    )


async def test_catalog_lists_and_calls_builtin_and_mcp_tools(tmp_path: Path):
    (tmp_path / "a.log").write_text("one\ntwo\nthree\n")
    settings = Settings(
        tool_roots=str(tmp_path), data_dir=tmp_path / "data", mcp_servers=mcp_servers(tmp_path)
    )
    catalog = ToolCatalog(settings)
    try:
        listing = await catalog.list()
        names = {t.name for t in listing.tools}
        assert {"chorus.disk_usage", "chorus.read_log_tail", "mcp:files/read_text_file"} <= names
        assert list(listing.unreachable) == ["down"]  # reported, not raised
        mcp = await catalog.call("mcp:files/read_text_file", {"path": "a.log"})
        assert (mcp.output, mcp.is_error) == ("one\ntwo\nthree\n", False)
        refused = await catalog.call("mcp:files/read_text_file", {"path": "/etc/passwd"})
        assert refused.is_error
        with pytest.raises(ChorusInputError, match=r"no tool named 'chorus\.nope'"):
            await catalog.call("chorus.nope", {})
        with pytest.raises(ChorusInputError, match="no MCP server named 'ghost'"):
            await catalog.call("mcp:ghost/x", {})
    finally:
        await catalog.aclose()


def test_cli_tools_list_and_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from typer.testing import CliRunner

    from chorus.config.settings import get_settings
    from starter.cli import app

    (tmp_path / "app.log").write_text("ok\nERROR disk full\nok\n")
    monkeypatch.setenv("CHORUS_TOOL_ROOTS", str(tmp_path))
    monkeypatch.setenv("CHORUS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("CHORUS_MCP_SERVERS", raising=False)
    get_settings.cache_clear()
    runner = CliRunner()

    def chorus(*args: str) -> Any:
        return runner.invoke(app, ["tools", *args])

    try:
        listed = json.loads(chorus("list", "--json").stdout)
        assert len([t for t in listed["tools"] if t["name"].startswith("chorus.")]) == 9
        found = chorus(
            "call",
            "chorus.search_log",
            "--args",
            json.dumps({"path": "app.log", "pattern": "error"}),
        )
        assert found.exit_code == 0 and "ERROR disk full" in found.stdout
        outside = chorus(
            "call", "chorus.read_log_tail", "--args", '{"path": "/etc/passwd"}', "--json"
        )
        assert outside.exit_code == 1 and json.loads(outside.stdout)["is_error"] is True
        bad = chorus("call", "chorus.read_log_tail", "--args", "{not json")
        assert bad.exit_code == 2 and "--args: not valid JSON" in bad.stderr
        unknown = chorus("call", "chorus.nope")
        assert unknown.exit_code == 2 and "no tool named 'chorus.nope'" in unknown.stderr
    finally:
        get_settings.cache_clear()
