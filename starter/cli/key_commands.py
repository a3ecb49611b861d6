"""``chorus keys``: API keys of the HTTP API (create, list, revoke, rotate).

A key is printed once, by ``create`` or ``rotate``, alone on stdout (so
``KEY=$(chorus keys create ...)`` captures just the key); the warning that it is never shown
again goes to stderr. PostgreSQL keeps only its HMAC (``chorus/governance/api_keys.py``).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table

from chorus.governance.api_keys import SCOPES, ApiKey
from starter.cli.support import JsonOpt, default_author, err, out, with_chorus
from starter.sdk import ChorusClient

keys_app = typer.Typer(
    help="API keys of the HTTP API: scoped, rate-limited, with a daily budget.",
    no_args_is_help=True,
)

AuthorOpt = Annotated[
    str | None, typer.Option(help="Recorded as who made the change (default user@host).")
]
SHOWN_ONCE = "store it now: it is shown only once and cannot be recovered (only its hash is kept)"


def _print_new_key(key: ApiKey, plaintext: str, what: str, as_json: bool) -> None:
    """Print a new key once: the key alone on stdout, what it is and the warning on stderr."""
    if as_json:
        out.print_json(
            json.dumps(
                {"key": plaintext, "api_key": key.model_dump(mode="json"), "warning": SHOWN_ONCE}
            )
        )
        return
    out.print(plaintext, markup=False, highlight=False, soft_wrap=True)
    limits = [f"scopes {', '.join(key.scopes)}"]
    if key.budget_daily_usd is not None:
        limits.append(f"daily budget ${key.budget_daily_usd:g}")
    if key.rpm is not None:
        limits.append(f"{key.rpm} requests/min")
    err.print(
        f"API key {key.name!r} {what} (id {key.id}; {'; '.join(limits)}).",
        markup=False,
        highlight=False,
    )
    err.print(f"[bold yellow]warning:[/] {SHOWN_ONCE}", highlight=False)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="Unique name, e.g. ci (recorded on runs).")],
    scopes: Annotated[str, typer.Option(help=f"Comma-separated scopes, of: {', '.join(SCOPES)}.")],
    budget_daily: Annotated[
        float | None,
        typer.Option(help="Daily budget (USD, UTC day) of the LLM calls of runs it starts."),
    ] = None,
    rpm: Annotated[int | None, typer.Option(help="Requests per minute across the fleet.")] = None,
    author: AuthorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an API key and print it (only this once)."""

    async def go(chorus: ChorusClient) -> None:
        key, plaintext = await chorus.keys.create(
            name,
            scopes.split(","),
            budget_daily_usd=budget_daily,
            rpm=rpm,
            author=author or default_author(),
        )
        _print_new_key(key, plaintext, "created", as_json)

    with_chorus(go, as_json)


def _when(value: datetime | None) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M}"


@keys_app.command("list")
def keys_list(
    include_revoked: Annotated[bool, typer.Option("--all", help="Also list revoked keys.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """List API keys (never their secrets)."""

    async def go(chorus: ChorusClient) -> None:
        keys = await chorus.keys.list(include_revoked)
        if as_json:
            out.print_json(json.dumps([k.model_dump(mode="json") for k in keys]))
            return
        table = Table(title="API keys", title_justify="left")
        for col in (
            "name", "id", "scopes", "budget/day USD", "rpm", "created", "by", "last used",
            "revoked",
        ):  # fmt: skip
            table.add_column(col, justify="right" if col in ("budget/day USD", "rpm") else "left")
        for k in keys:
            table.add_row(
                k.name,
                k.id,
                ", ".join(k.scopes),
                "-" if k.budget_daily_usd is None else f"{k.budget_daily_usd:g}",
                "-" if k.rpm is None else str(k.rpm),
                _when(k.created_at),
                k.created_by,
                _when(k.last_used_at),
                _when(k.revoked_at),
            )
        out.print(table)

    with_chorus(go, as_json)


@keys_app.command("revoke")
def keys_revoke(
    name: Annotated[str, typer.Argument(help="The key's name (or its id).")],
    author: AuthorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke an API key at once (runs it started go on)."""

    async def go(chorus: ChorusClient) -> None:
        key = await chorus.keys.revoke(name, author=author or default_author())
        if as_json:
            out.print_json(key.model_dump_json())
        else:
            out.print(f"API key {key.name!r} (id {key.id}) revoked", highlight=False)

    with_chorus(go, as_json)


@keys_app.command("rotate")
def keys_rotate(
    name: Annotated[str, typer.Argument(help="The key's name (or its id).")],
    overlap: Annotated[
        float,
        typer.Option(help="Seconds the old key keeps working (0: revoked at once; max 86400)."),
    ] = 0.0,
    author: AuthorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Replace an API key by a new one (same name, scopes and limits); print it once."""

    async def go(chorus: ChorusClient) -> None:
        key, plaintext = await chorus.keys.rotate(
            name, author=author or default_author(), overlap_s=overlap
        )
        what = f"rotated from {key.rotated_from}" + (
            f", which keeps working for {overlap:g} s" if overlap else ", which is revoked"
        )
        _print_new_key(key, plaintext, what, as_json)

    with_chorus(go, as_json)
