"""``chorus callbacks``: signed run callbacks (Standard Webhooks)."""

from __future__ import annotations

import typer

callbacks_app = typer.Typer(help="Signed run callbacks (Standard Webhooks).", no_args_is_help=True)


@callbacks_app.command("secret")
def callbacks_secret() -> None:
    """Print a new Standard Webhooks secret (``whsec_…``) for CHORUS_CALLBACK_SECRET."""
    from chorus.integrations.webhooks import new_secret

    typer.echo(new_secret())
