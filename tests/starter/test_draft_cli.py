"""Drafts driven through the `chorus draft` CLI and the plain `temporal` CLI, as documented."""

from __future__ import annotations

import asyncio
import json
import os
import sys

from starter.dev import temporal_binary
from tests.conftest import agent, running_worker
from tests.workflows.test_drafts import no_llm, wait_saved


async def run(*argv: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_draft_through_chorus_and_temporal_clis(client, make_settings):
    settings = make_settings([agent("writer", ["local:fake"])])
    address = client.service_client.config.target_host
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": address,
        "DATABASE_URL": settings.database_url or "",
        "CHORUS_TASK_QUEUE": settings.task_queue,
    }

    async def chorus(*args: str) -> str:
        code, out, err = await run(sys.executable, "-m", "starter.cli", "draft", *args, env=env)
        assert code == 0, err
        return out

    async def temporal(*args: str) -> str:
        code, out, err = await run(
            temporal_binary(), "workflow", *args, "--address", address, env=env
        )
        assert code == 0, err
        return out

    async with running_worker(client, settings, no_llm) as sdk:
        created = json.loads(
            await chorus(
                "new",
                "--title",
                "Notes <v2>",
                "--user",
                "alice",
                "--template",
                "release-notes",
                "--collaborator",
                "bob=editor",
                "--collaborator",
                "carol=reviewer",
                "--json",
            )
        )
        draft_id = created["draft_id"]
        edited = json.loads(
            await chorus(
                "edit",
                draft_id,
                "--user",
                "bob",
                "--base",
                "1",
                "--start",
                "0",
                "--end",
                "0",
                "--text",
                "<script>alert(1)</script> & Co\n",
                "--json",
            )
        )
        assert edited["version"] == 2
        # the plain Temporal CLI, exactly as the README documents it
        out = await temporal(
            "update",
            "execute",
            "--workflow-id",
            draft_id,
            "--name",
            "edit",
            "--input",
            '{"user": "bob", "base_version": 2, "edit": {"start": 0, "end": 0, "text": "Hi "}}',
        )
        assert "version:3" in out  # the CLI prints the update result as a Go map
        await temporal(
            "signal",
            "--workflow-id",
            draft_id,
            "--name",
            "comment",
            "--input",
            '{"user": "carol", "text": "Looks good", "start": 0, "end": 2}',
        )
        queried = await temporal("query", "--workflow-id", draft_id, "--name", "draft")
        view = json.loads(queried.split("QueryResult", 1)[1].strip())
        assert view["version"] == 3 and view["open_comments"] == 1
        code, _, err = await run(
            sys.executable,
            "-m",
            "starter.cli",
            "draft",
            "edit",
            draft_id,
            "--user",
            "mallory",
            "--base",
            "3",
            "--start",
            "0",
            "--end",
            "0",
            "--text",
            "x",
            env=env,
        )
        assert code == 2 and "'mallory' is not a collaborator on this draft" in err
        await chorus("submit", draft_id, "--user", "bob")
        await chorus("approve", draft_id, "--user", "carol")
        await chorus("publish", draft_id, "--user", "alice")
        await wait_saved(await sdk.pool(), draft_id, 3)
        for _ in range(100):
            row = await (await sdk.pool()).fetchval(
                "SELECT status FROM drafts WHERE draft_id = $1", draft_id
            )
            if row == "published":
                break
            await asyncio.sleep(0.05)
        page = await chorus("export", draft_id, "--user", "carol", "--format", "html")
        markdown = await chorus("export", draft_id, "--user", "carol", "--format", "md")
        exported = json.loads(
            await chorus("export", draft_id, "--user", "carol", "--format", "json")
        )
        history = json.loads(await chorus("history", draft_id, "--user", "bob", "--json"))
        watched = await chorus("watch", draft_id, "--user", "alice", "--timeout", "1")
        # Reads need a collaborator (issue 20: anyone read any draft).
        for command in (["show"], ["export", "--format", "md"], ["history"]):
            code, _, err = await run(
                sys.executable,
                "-m",
                "starter.cli",
                "draft",
                command[0],
                draft_id,
                "--user",
                "mallory",
                *command[1:],
                env=env,
            )
            assert code == 2 and "'mallory' is not a collaborator" in err, (command, err)

    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co" in page and "<script>" not in page
    assert "<title>Notes &lt;v2&gt;</title>" in page
    assert markdown.startswith("# Notes <v2>\n\nHi <script>alert(1)</script> & Co\n## Highlights")
    assert exported["status"] == "published" and exported["version"] == 3
    assert exported["comments"][0]["text"] == "Looks good"
    assert [h["author"] for h in history] == ["alice", "bob", "bob"]
    assert [line.split()[0] for line in watched.splitlines()] == ["v1", "v2", "v3"]
