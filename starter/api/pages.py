"""The drafts page: ``GET /drafts/{id}`` in a browser, over the same ``/v1`` API.

The page (``static/draft.html``, ``draft.js``, ``draft.css``, no inline code, CSP ``'self'``)
asks for the reader's user id and an API key (kept in the tab's ``sessionStorage``), then:

- shows the draft's text, version, status and collaborators (``GET /v1/drafts/{id}``);
- follows ``GET /v1/drafts/{id}/events`` (read with ``fetch`` so the key travels in a header,
  which ``EventSource`` cannot send): each new version replaces the text unless the reader is
  typing, in which case a notice offers to load it; the history lists who changed what;
- saves the reader's text as an edit on the version they started from (``POST
  /v1/drafts/{id}/edits``; a conflicting edit is refused and shown), and posts comments.

The HTML itself holds no data and needs no key.
"""

from __future__ import annotations

from importlib import resources
from typing import Annotated

from fastapi import FastAPI, Path
from starlette.responses import HTMLResponse, Response

STATIC_TYPES = {"draft.js": "text/javascript", "draft.css": "text/css"}


def _read(name: str) -> str:
    return resources.files("starter.api").joinpath("static", name).read_text(encoding="utf-8")


def install(app: FastAPI) -> None:
    """Add ``/drafts/{id}`` and its two static files."""

    @app.get("/drafts/{draft_id}", response_class=HTMLResponse, include_in_schema=False)
    async def draft_page(draft_id: Annotated[str, Path(max_length=200)]) -> HTMLResponse:
        return HTMLResponse(_read("draft.html"))

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        if name not in STATIC_TYPES:
            return Response(status_code=404)
        return Response(
            _read(name),
            media_type=STATIC_TYPES[name],
            headers={"Cache-Control": "no-cache"},
        )
