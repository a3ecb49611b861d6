"""Render a stored draft (from PostgreSQL) as Markdown, HTML or JSON.

HTML output escapes every piece of user text with :func:`html.escape` (quotes included), so a
draft containing markup is shown, never executed.
"""

from __future__ import annotations

import html
import json
from importlib import resources
from typing import Any, Literal

ExportFormat = Literal["md", "html", "json"]


def template_names() -> list[str]:
    """Names of the bundled draft templates (``chorus/templates/*.md``)."""
    folder = resources.files("chorus").joinpath("templates")
    return sorted(p.name.removesuffix(".md") for p in folder.iterdir() if p.name.endswith(".md"))


def load_template(name: str) -> str:
    """Text of a bundled template.

    Raises:
        ValueError: Unknown template (names the available ones).
    """
    if name not in template_names():
        raise ValueError(f"unknown template {name!r}; available: {', '.join(template_names())}")
    return resources.files("chorus").joinpath("templates", f"{name}.md").read_text("utf-8")


def render(draft: dict[str, Any], revisions: list[dict[str, Any]], fmt: ExportFormat) -> str:
    """Render a draft row and its revision rows.

    Args:
        draft: Row of ``drafts`` (title, status, version, content, collaborators, comments...).
        revisions: Rows of ``draft_revisions`` (version, author, created_at, summary...).
        fmt: ``md``, ``html`` or ``json``.
    """
    if fmt == "json":
        return json.dumps(
            {
                "draft_id": draft["draft_id"],
                "title": draft["title"],
                "status": draft["status"],
                "version": draft["version"],
                "content": draft["content"],
                "collaborators": draft["collaborators"],
                "comments": draft["comments"],
                "revisions": [
                    {k: v for k, v in r.items() if k != "content_after"} for r in revisions
                ],
            },
            indent=2,
            default=str,
            ensure_ascii=False,
        )
    footer = (
        f"version {draft['version']}, {draft['status']}, last change "
        f"{revisions[-1]['created_at']:%Y-%m-%d %H:%M UTC} by {revisions[-1]['author']}"
        if revisions
        else f"version {draft['version']}, {draft['status']}"
    )
    if fmt == "md":
        return f"# {draft['title']}\n\n{draft['content'].rstrip()}\n\n---\n_{footer}_\n"
    paragraphs = [p for p in draft["content"].split("\n\n") if p.strip()]
    body = "\n".join(
        "<p>" + "<br>\n".join(html.escape(line) for line in p.splitlines()) + "</p>"
        for p in paragraphs
    )
    title = html.escape(draft["title"])
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{title}</title>\n</head>\n<body>\n<article>\n<h1>{title}</h1>\n{body}\n"
        f"</article>\n<footer><small>{html.escape(footer)}</small></footer>\n</body>\n</html>\n"
    )
