"""bench.ab: reading bench.profile's output, the interleaving, the per-revision medians."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.ab import Measurement, order, parse, summary

ROOT = Path(__file__).resolve().parents[2]


def profile_output(chorus: float, naive: float, gap: float, worker: float) -> str:
    """The lines bench.profile prints that bench.ab reads (copied from a real run)."""
    return f"""# Profile of a 3-step sequential run (stub 0 ms, limits default)

| phase | Chorus | naive |
|---|---:|---:|
| client → started | 4.5 | 3.1 |
| **total (client)** | **{chorus}** | **{naive}** |

Chorus minus naive, summed over the phases' medians: {gap:+.1f} ms (client start + result +2.2, \
first workflow task +7.8, activities +20.7, dispatch +0.6); the totals' medians differ from \
such sums by noise.

Events per run: Chorus 26 (activity_task_completed 3, marker_recorded 2); naive 23 \
(activity_task_completed 3, workflow_task_started 4)

PostgreSQL inside activities: 17.0 ms per run (median of 20), 16 statements

## 3. CPU ms per run (psutil: this process = worker + client + stub)

| | worker process | dev server | PostgreSQL |
|---|---:|---:|---:|
| chorus | {worker} | 89.0 | 9.5 |
| naive | 80.0 | 79.0 | 0.0 |
"""


def test_parse_reads_every_column():
    m = parse("head", profile_output(151.1, 107.3, 37.8, 104.0))
    assert (m.chorus_ms, m.naive_ms, m.phase_gap_ms) == (151.1, 107.3, 37.8)
    assert m.gap_ms == pytest.approx(43.8)
    assert m.phase_groups.startswith("client start + result +2.2")
    assert (m.chorus_events, m.naive_events, m.pg_statements, m.pg_ms) == (26, 23, 16, 17.0)
    assert m.chorus_cpu == (104.0, 89.0, 9.5)
    assert m.naive_cpu == (80.0, 79.0, 0.0)
    assert m.cpu_ratio == pytest.approx((104.0 + 9.5) / 80.0)


def test_parse_names_the_missing_line():
    text = profile_output(151.1, 107.3, 37.8, 104.0).replace("Events per run", "Events:")
    with pytest.raises(ValueError, match="base: no events per run line"):
        parse("base", text)


def test_runs_alternate_so_each_revision_goes_first_as_often():
    assert order(1) == ["base", "head"]
    assert order(4) == ["base", "head", "head", "base", "base", "head", "head", "base"]


def test_summary_is_medians_per_revision_and_their_difference():
    def measured(revision: str, chorus: float, worker: float) -> Measurement:
        return parse(revision, profile_output(chorus, 100.0, chorus - 100.0, worker))

    rows = summary(
        [
            measured("base", 150.0, 120.0),
            measured("head", 140.0, 110.0),
            measured("head", 146.0, 112.0),
            measured("base", 154.0, 124.0),
        ]
    )
    assert rows[2].startswith("| base | 2 | +52.0 | +52.0 | +42.0 | +10.0 |")
    assert rows[3].startswith("| head | 2 | +43.0 | +43.0 | +31.0 | +10.0 |")
    assert rows[4].startswith("| **head − base** | | **-9.0** | **-9.0** | **-11.0** | **+0.0** |")


def test_an_unknown_revision_is_refused_before_any_run():
    done = subprocess.run(
        [sys.executable, "-m", "bench.ab", "no-such-revision-xyz", "--pairs", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "'no-such-revision-xyz' is not a git revision" in done.stderr
