"""The HTTP API of ``chorus serve``: a thin, stateless layer over :mod:`starter.sdk`.

See :mod:`starter.api.app` for the endpoints, :mod:`starter.api.auth` for API keys and
scopes, :mod:`starter.api.problems` for errors, :mod:`starter.api.events` for Server-Sent
Events and :mod:`starter.api.pages` for the drafts page.
"""

from __future__ import annotations

from fastapi import FastAPI

from starter.api.app import build_app

__all__ = ["app_from_env", "build_app"]


def app_from_env() -> FastAPI:
    """Build the app from the environment's settings (uvicorn's ``--factory`` entry point)."""
    return build_app()
