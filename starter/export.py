"""Render a stored draft (from PostgreSQL) as Markdown, HTML or JSON.

HTML renders the draft's Markdown with ``markdown-it-py`` (CommonMark plus GitHub-style tables)
with raw HTML off, so a draft containing markup shows it as text, never runs it; links whose
scheme markdown-it considers unsafe (``javascript:``, ``vbscript:``, ``file:``, ``data:`` other
than images) are not made links. Title and footer are escaped with :func:`html.escape`.
"""

from __future__ import annotations

import html
import json
from importlib import resources
from typing import Any, Literal

from markdown_it import MarkdownIt

ExportFormat = Literal["md", "html", "json"]

_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")
"""CommonMark + tables, raw HTML disabled (it is escaped into text)."""

_CSS = """
body { font: 16px/1.55 system-ui, sans-serif; max-width: 46rem; margin: 2rem auto;
       padding: 0 1rem; color: #1f2328; }
pre, code { font-family: ui-monospace, monospace; background: #f6f8fa; }
pre { padding: .8rem; overflow-x: auto; }
table { border-collapse: collapse; }
th, td { border: 1px solid #d0d7de; padding: .3rem .6rem; }
footer { margin-top: 2rem; color: #59636e; }
""".strip()


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
    body = _MARKDOWN.render(draft["content"])
    title = html.escape(draft["title"])
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{title}</title>\n<style>\n{_CSS}\n</style>\n</head>\n<body>\n<article>\n"
        f"<h1>{title}</h1>\n{body}</article>\n"
        f"<footer><small>{html.escape(footer)}</small></footer>\n</body>\n</html>\n"
    )
