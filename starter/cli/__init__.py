"""The ``chorus`` command line (typer + rich).

Every command takes ``--json`` for machine-readable output. Exit codes: 0 success, 1 the run
failed or was cancelled, 2 bad input or an unreachable service.

One module per group of commands, each over the SDK (:mod:`starter.sdk`) only:

- :mod:`~starter.cli.run_commands`: ``run``, ``status``, ``result``, ``cancel``, ``list``,
  ``history``.
- :mod:`~starter.cli.budget_commands`: ``costs`` and ``budget``.
- :mod:`~starter.cli.fleet_commands`: ``health`` and ``top``.
- :mod:`~starter.cli.dev_commands`: ``dev`` and ``worker``.
- :mod:`~starter.cli.agent_commands`, :mod:`~starter.cli.draft_commands`,
  :mod:`~starter.cli.codec_commands`, :mod:`~starter.cli.callback_commands`: ``agents``,
  ``draft``, ``codec``, ``callbacks``.
- :mod:`~starter.cli.tool_commands`: ``tools list`` and ``tools call``.
- :mod:`~starter.cli.approval_commands`: ``approvals list``, ``approve``, ``reject``, ``edit``.
- :mod:`~starter.cli.key_commands`: ``keys create``, ``list``, ``revoke``, ``rotate``.
- :mod:`~starter.cli.provider_commands`: ``providers list`` and ``providers reset``.
- :mod:`~starter.cli.serve_commands`: ``serve`` (the HTTP API).
- :mod:`~starter.cli.support`: the consoles, ``--json``, exit codes, the SDK client.

This module builds the root app: the commands are registered here, in the order ``chorus
--help`` lists them.
"""

from __future__ import annotations

import os
import sys

import typer

from starter.cli import (
    agent_commands,
    approval_commands,
    budget_commands,
    callback_commands,
    codec_commands,
    dev_commands,
    draft_commands,
    fleet_commands,
    key_commands,
    provider_commands,
    run_commands,
    serve_commands,
    tool_commands,
)

app = typer.Typer(
    help="Chorus: durable multi-agent LLM orchestration on Temporal.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command()(run_commands.run)
app.command()(run_commands.status)
app.command()(run_commands.result)
app.command()(run_commands.cancel)
app.command("list")(run_commands.list_runs)
app.command()(budget_commands.costs)
app.command()(run_commands.history)
app.command()(fleet_commands.health)
app.command()(dev_commands.worker)
app.command()(fleet_commands.top)
app.command()(serve_commands.serve)
app.add_typer(agent_commands.agents_app, name="agents")
app.add_typer(dev_commands.dev_app, name="dev")
app.add_typer(draft_commands.draft_app, name="draft")
app.add_typer(budget_commands.budget_app, name="budget")
app.add_typer(codec_commands.codec_app, name="codec")
app.add_typer(callback_commands.callbacks_app, name="callbacks")
app.add_typer(tool_commands.tools_app, name="tools")
app.add_typer(approval_commands.approvals_app, name="approvals")
app.add_typer(key_commands.keys_app, name="keys")
app.add_typer(provider_commands.providers_app, name="providers")


def main() -> None:
    """Console-script entry point.

    Exits with ``os._exit`` once the command is done and its output flushed: the Temporal
    client's native runtime threads can race Python's interpreter finalization and abort the
    process ("PyGILState_Release ... finalizing", seen intermittently here), turning a
    successful command into a crash exit code. Skipping finalization is safe for this
    short-lived process: every pool and client is closed by the commands themselves.
    """
    code = 0
    try:
        app()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
