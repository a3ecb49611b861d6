"""``chorus dev`` (the embedded stack) and ``chorus worker`` (a worker in the foreground)."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from chorus.config.settings import get_settings
from chorus.observability.logs import configure_logging
from starter import dev
from starter.cli.support import JsonOpt, err, fail, out, run_async

dev_app = typer.Typer(
    help="The embedded stack: Temporal dev server, local LLM, worker.", no_args_is_help=True
)

ServicesOpt = Annotated[
    str | None,
    typer.Option(help="Comma-separated subset of postgres,temporal,llm,worker (and api)."),
]
ApiOpt = Annotated[
    bool, typer.Option("--api", help="Also start the HTTP API (chorus serve) on CHORUS_API_PORT.")
]


@dev_app.command("up")
def dev_up(services: ServicesOpt = None, api: ApiOpt = False, as_json: JsonOpt = False) -> None:
    """Start the embedded stack on loopback and wait until every part is healthy."""
    settings = get_settings()
    names = tuple(_services(services, as_json))
    if api and "api" not in names:
        names += ("api",)
    started = time.monotonic()
    rows = run_async(
        dev.up(
            settings,
            names,
            on_event=(lambda m: None) if as_json else (lambda m: err.print(m, highlight=False)),
        ),
        as_json,
    )
    if as_json:
        out.print_json(json.dumps([_status_dict(r) for r in rows], default=str))
        return
    out.print(_status_table(rows))
    out.print(
        f"ready in {time.monotonic() - started:.1f} s — Temporal UI: {settings.temporal_ui_url}"
    )
    if "api" in names:
        out.print(
            f"HTTP API: http://{settings.api_host}:{settings.api_port} (docs /docs); create a "
            "key with `chorus keys create --name NAME --scopes runs:write,runs:read`"
        )


@dev_app.command("down")
def dev_down(as_json: JsonOpt = False) -> None:
    """Stop the embedded stack started from this data dir (by PID)."""
    events: list[str] = []
    dev.down(
        get_settings(),
        on_event=events.append if as_json else (lambda m: err.print(m, highlight=False)),
    )
    if as_json:
        out.print_json(json.dumps({"events": events}))


@dev_app.command("status")
def dev_status(as_json: JsonOpt = False) -> None:
    """Say what runs where: PIDs, addresses, health, log files."""
    rows = run_async(dev.status(get_settings()), as_json)
    if as_json:
        out.print_json(json.dumps([_status_dict(r) for r in rows], default=str))
    else:
        out.print(_status_table(rows))
    if not all(r.healthy for r in rows):
        raise typer.Exit(1)


def _services(services: str | None, as_json: bool) -> list[str]:
    try:
        return list(dev.iter_services(services))
    except ValueError as exc:
        fail(str(exc), as_json=as_json)


def _status_dict(row: dev.ServiceStatus) -> dict[str, Any]:
    return {**row.__dict__, "log_file": str(row.log_file)}


def _status_table(rows: list[dev.ServiceStatus]) -> Table:
    table = Table()
    for col in ("service", "pid", "healthy", "address", "detail", "log"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r.name,
            str(r.pid or "-"),
            Text("yes" if r.healthy else "no", style="green" if r.healthy else "red"),
            r.address,
            r.detail,
            str(r.log_file),
        )
    return table


def worker(
    max_concurrent_activities: Annotated[
        int, typer.Option(help="LLM calls in flight at once.")
    ] = 20,
    max_concurrent_workflow_tasks: Annotated[
        int, typer.Option(help="Workflow tasks at once.")
    ] = 50,
) -> None:
    """Run a worker in the foreground (JSON logs on stderr) until Ctrl-C/SIGTERM."""
    import worker as worker_module

    settings = get_settings()
    configure_logging(settings.log_level)
    options = worker_module.WorkerOptions(
        max_concurrent_activities=max_concurrent_activities,
        max_concurrent_workflow_tasks=max_concurrent_workflow_tasks,
    )
    run_async(worker_module.run_worker(settings, options))
