"""Draft export: Markdown to HTML with scripts neutralised."""

from __future__ import annotations

from datetime import UTC, datetime


def test_html_export_renders_markdown_and_neutralises_scripts():
    """Issue 13: `## Introduction` was exported as `<p>## Introduction</p>`."""

    from starter.export import render

    content = (
        "## Introduction\n\nSome *emphasis* and a [site](https://example.com).\n\n"
        "- one\n- two\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```python\nprint('hi')\n```\n\n"
        "<script>alert(1)</script> [click](javascript:alert(2)) <img src=x onerror=alert(3)>\n"
    )
    draft = {"title": "Notes <v2>", "status": "drafting", "version": 3, "content": content}
    revisions = [{"created_at": datetime(2026, 11, 30, tzinfo=UTC), "author": "alice"}]
    page = render(draft, revisions, "html")
    assert page.startswith("<!DOCTYPE html>") and "<title>Notes &lt;v2&gt;</title>" in page
    assert "<h2>Introduction</h2>" in page and "<em>emphasis</em>" in page
    assert '<a href="https://example.com">site</a>' in page
    assert "<ul>\n<li>one</li>" in page and "<td>1</td>" in page
    assert '<code class="language-python">print(' in page and "<style>" in page
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'href="javascript:' not in page and "<img" not in page
