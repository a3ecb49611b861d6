"""``chorus tools``: list the tools agents can call, and call one directly."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from chorus.config.settings import get_settings
from chorus.contracts.errors import ChorusInputError
from starter.cli.support import JsonOpt, fail, out, run_async

if TYPE_CHECKING:
    from starter.sdk.tool_catalog import ToolCatalog


def _catalog() -> ToolCatalog:
    """The tool catalog (imported here: the MCP SDK costs ~1 s, other commands skip it)."""
    from starter.sdk.tool_catalog import ToolCatalog

    return ToolCatalog(get_settings())


tools_app = typer.Typer(
    help="Tools agents call: built-in, CHORUS_TOOL_MODULES and MCP servers.",
    no_args_is_help=True,
)


@tools_app.command("list")
def tools_list(
    schemas: Annotated[bool, typer.Option("--schemas", help="Print each argument schema.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """List every tool this machine can see, with its arguments (and MCP servers' tools)."""

    async def go() -> None:
        catalog = _catalog()
        try:
            listing = await catalog.list()
        finally:
            await catalog.aclose()
        if as_json:
            out.print_json(
                json.dumps(
                    {
                        "tools": [t.model_dump(mode="json") for t in listing.tools],
                        "unreachable": listing.unreachable,
                    }
                )
            )
            return
        table = Table()
        table.add_column("tool", no_wrap=True)
        for col in ("arguments", "idempotent", "timeout s", "description"):
            table.add_column(col)
        for spec in listing.tools:
            props = spec.parameters.get("properties", {})
            required = set(spec.parameters.get("required", []))
            args = ", ".join(
                f"{name}{'' if name in required else '?'}: {_type_of(schema)}"
                for name, schema in props.items()
            )
            table.add_row(
                spec.name,
                args,
                "yes" if spec.idempotent else "no",
                f"{spec.timeout_s:g}",
                spec.description.split(". ")[0][:60],
            )
        out.print(table)
        if schemas:
            for spec in listing.tools:
                out.print(f"[bold]{spec.name}[/]")
                out.print_json(json.dumps(spec.parameters))
        for server, reason in listing.unreachable.items():
            out.print(f"[yellow]MCP server {server} unreachable:[/] {reason}", highlight=False)

    run_async(go(), as_json)


@tools_app.command("call")
def tools_call(
    name: Annotated[str, typer.Argument(help="Tool name, e.g. chorus.disk_usage.")],
    args: Annotated[str, typer.Option("--args", help="Arguments as a JSON object.")] = "{}",
    as_json: JsonOpt = False,
) -> None:
    """Call one tool directly (in this process, not through Temporal) and print its result."""
    try:
        arguments = json.loads(args)
    except ValueError as exc:
        fail(f"--args: not valid JSON ({exc})", 2, as_json)
    if not isinstance(arguments, dict):
        fail("--args: must be a JSON object", 2, as_json)

    async def go() -> Any:
        catalog = _catalog()
        try:
            return await catalog.call(name, arguments)
        finally:
            await catalog.aclose()

    try:
        result = run_async(go(), as_json)
    except ChorusInputError as exc:  # pragma: no cover - run_async maps it
        fail(str(exc), 2, as_json)
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "tool": result.name,
                    "is_error": result.is_error,
                    "output": result.output,
                    "latency_ms": result.latency_ms,
                }
            )
        )
    else:
        out.print(result.output, highlight=False, markup=False)
    if result.is_error:
        if not as_json:
            fail(f"{name} failed", 1)
        raise typer.Exit(1)


def _type_of(schema: dict[str, Any]) -> str:
    if "type" in schema:
        return str(schema["type"])
    options = schema.get("anyOf") or schema.get("oneOf") or []
    return "|".join(str(o.get("type", "?")) for o in options) or "any"
