"""The step table of ``chorus run`` (live) and ``chorus status`` (live or closed runs)."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Console

from chorus.contracts.models import RunProgress, StepProgress
from starter.cli.run_commands import _progress_view


def render(**kwargs: object) -> str:
    progress = RunProgress(
        pattern="sequential",
        started_at=datetime(2026, 12, 2, tzinfo=UTC),
        steps=[StepProgress(name="analyst", status="succeeded")],
        done=True,
    )
    console = Console(width=100, record=True)
    console.print(_progress_view(progress, 22.43, **kwargs))  # type: ignore[arg-type]
    return console.export_text()


def test_a_live_run_is_titled_running():
    assert "running…  22.4 s" in render()


def test_a_closed_run_says_how_it_ended():
    text = render(gates_caption=False, ended="COMPLETED")
    assert "completed after 22.4 s" in text and "running" not in text
