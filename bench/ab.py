"""Compare two revisions of Chorus with ``bench.profile``, interleaved on one machine.

    python -m bench.ab BASE [--head REV] [--pairs 2] [--runs 20] [--save DIR]
        [-- PROFILE ARGS...]

``BASE`` and ``--head`` are git revisions; without ``--head`` the working tree is the head,
uncommitted changes included. A revision other than the working tree is checked out into a
temporary ``git worktree`` (removed at the end), and ``python -m bench.profile`` runs with this
interpreter from that directory: the current directory comes first on ``sys.path``, so its
``workflows/``, ``activities/``, ``chorus/`` and ``bench/`` are the ones imported (the
installed packages are shared, so both revisions must need the same dependencies). Each
profile run starts its own stack (embedded PostgreSQL with that revision's migrations, a dev
server, the stub) and measures the naive workflow beside Chorus.

Why: on these machines two profile runs of the same code minutes apart differ by 10-30 % in
absolute speed, more than most changes are worth. So the runs alternate base, head, head,
base, base, head... (drift in time falls on both alike), and each revision is judged by its
gap over the naive workflow measured in the same run, never by its absolute milliseconds.

Prints one row per profile run (total client medians of Chorus and naive, their difference,
the per-phase gap sum with its groups, events and PostgreSQL statements per run, CPU of the
worker, dev server and PostgreSQL per run against naive's), then the median of each column
per revision and the difference head minus base, and each run's phase-sum gap by group
(client, first, middle and last workflow task, activities, dispatch). ``--save DIR`` keeps each
profile run's whole output (``01-base.txt``, ``02-head.txt``, ...).

Raises:
    SystemExit: ``BASE`` or ``--head`` is not a revision, or a profile run failed (its
        output is printed).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_NUM = r"([-+]?\d+(?:\.\d+)?)"
_TOTAL = re.compile(rf"\| \*\*total \(client\)\*\* \| \*\*{_NUM}\*\* \| \*\*{_NUM}\*\* \|")
_GAP = re.compile(rf"summed over the phases' medians: {_NUM} ms \(([^)]*)\)")
_EVENTS = re.compile(r"Events per run: Chorus (\d+) .*; naive (\d+) ")
_PG = re.compile(rf"PostgreSQL inside activities: {_NUM} ms per run .*?, (\d+) statements")
_CPU = re.compile(rf"^\| (chorus|naive) \| {_NUM} \| {_NUM} \| {_NUM} \|$", re.M)


@dataclass(frozen=True)
class Measurement:
    """What one ``bench.profile`` run says of one revision (ms per no-op 3-step run)."""

    revision: str
    chorus_ms: float
    naive_ms: float
    phase_gap_ms: float
    phase_groups: str
    chorus_events: int
    naive_events: int
    pg_ms: float
    pg_statements: int
    chorus_cpu: tuple[float, float, float]
    naive_cpu: tuple[float, float, float]

    @property
    def gap_ms(self) -> float:
        """Chorus's client-measured median minus naive's, same run."""
        return self.chorus_ms - self.naive_ms

    @property
    def cpu_ratio(self) -> float:
        """Worker + PostgreSQL CPU per Chorus run over naive's worker CPU (issue 19's goal)."""
        return (self.chorus_cpu[0] + self.chorus_cpu[2]) / self.naive_cpu[0]


def parse(revision: str, output: str) -> Measurement:
    """Read a ``bench.profile`` output.

    Raises:
        ValueError: A line this parser needs is missing (the profile's format changed, or the
            run failed before printing it).
    """

    def need(pattern: re.Pattern[str], what: str) -> re.Match[str]:
        found = pattern.search(output)
        if found is None:
            raise ValueError(f"{revision}: no {what} line in bench.profile's output")
        return found

    total = need(_TOTAL, "total (client)")
    gap = need(_GAP, "phase-sum gap")
    events = need(_EVENTS, "events per run")
    pg = need(_PG, "PostgreSQL per run")
    cpu = {m[1]: (float(m[2]), float(m[3]), float(m[4])) for m in _CPU.finditer(output)}
    if set(cpu) != {"chorus", "naive"}:
        raise ValueError(f"{revision}: no CPU rows in bench.profile's output")
    return Measurement(
        revision=revision,
        chorus_ms=float(total[1]),
        naive_ms=float(total[2]),
        phase_gap_ms=float(gap[1]),
        phase_groups=gap[2],
        chorus_events=int(events[1]),
        naive_events=int(events[2]),
        pg_ms=float(pg[1]),
        pg_statements=int(pg[2]),
        chorus_cpu=cpu["chorus"],
        naive_cpu=cpu["naive"],
    )


def order(pairs: int) -> list[str]:
    """``base head head base base head ...``: each revision as often first as second."""
    out: list[str] = []
    for i in range(pairs):
        out += ["base", "head"] if i % 2 == 0 else ["head", "base"]
    return out


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()


@contextlib.contextmanager
def checkout(revision: str | None) -> Iterator[Path]:
    """A directory holding ``revision`` (``None``: the working tree itself).

    Raises:
        SystemExit: ``revision`` is not a git revision.
    """
    if revision is None:
        yield ROOT
        return
    try:
        commit = _git("rev-parse", "--verify", f"{revision}^{{commit}}")
    except subprocess.CalledProcessError:
        raise SystemExit(f"bench.ab: {revision!r} is not a git revision") from None
    with tempfile.TemporaryDirectory(prefix="chorus-ab-") as tmp:
        tree = Path(tmp) / "tree"
        _git("worktree", "add", "--detach", "--quiet", str(tree), commit)
        try:
            yield tree
        finally:
            _git("worktree", "remove", "--force", str(tree))


def profile(tree: Path, runs: int, extra: list[str]) -> str:
    """Run ``python -m bench.profile`` from ``tree``; its output.

    Raises:
        SystemExit: The profile failed (its output is printed).
    """
    done = subprocess.run(
        [sys.executable, "-m", "bench.profile", "--runs", str(runs), *extra],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"bench.ab: bench.profile failed in {tree} (exit {done.returncode})")
    return done.stdout


def _row(m: Measurement) -> str:
    c, n = m.chorus_cpu, m.naive_cpu
    return (
        f"| {m.revision} | {m.chorus_ms:.1f} | {m.naive_ms:.1f} | {m.gap_ms:+.1f} | "
        f"{m.phase_gap_ms:+.1f} | {m.chorus_events} / {m.naive_events} | "
        f"{m.pg_statements} / {m.pg_ms:.1f} | {c[0]:.0f} / {c[1]:.0f} / {c[2]:.0f} | "
        f"{n[0]:.0f} / {n[1]:.0f} | x{m.cpu_ratio:.2f} |"
    )


def summary(measured: list[Measurement]) -> list[str]:
    """Median per revision of each column, and head minus base."""
    lines = [
        "| revision | runs | gap over naive (client) | phase-sum gap | worker CPU − naive's "
        "| server CPU − naive's | worker + PG CPU / naive worker |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    medians: dict[str, tuple[float, ...]] = {}
    for revision in ("base", "head"):
        of = [m for m in measured if m.revision == revision]
        if not of:
            continue
        medians[revision] = (
            statistics.median(m.gap_ms for m in of),
            statistics.median(m.phase_gap_ms for m in of),
            statistics.median(m.chorus_cpu[0] - m.naive_cpu[0] for m in of),
            statistics.median(m.chorus_cpu[1] - m.naive_cpu[1] for m in of),
            statistics.median(m.cpu_ratio for m in of),
        )
        g, p, w, s, r = medians[revision]
        lines.append(
            f"| {revision} | {len(of)} | {g:+.1f} | {p:+.1f} | {w:+.1f} | {s:+.1f} | x{r:.2f} |"
        )
    if len(medians) == 2:
        d = [h - b for h, b in zip(medians["head"], medians["base"], strict=True)]
        lines.append(
            f"| **head − base** | | **{d[0]:+.1f}** | **{d[1]:+.1f}** | **{d[2]:+.1f}** "
            f"| **{d[3]:+.1f}** | **{d[4]:+.2f}** |"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments, run the interleaved profiles, print the tables."""
    args = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in args:
        at = args.index("--")
        args, extra = args[:at], args[at + 1 :]
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n")[0])
    parser.add_argument("base", help="git revision to compare against (e.g. HEAD~1, a8a090a)")
    parser.add_argument("--head", help="git revision to compare (default: the working tree)")
    parser.add_argument("--pairs", type=int, default=2, help="profile runs of each revision")
    parser.add_argument("--runs", type=int, default=20, help="bench.profile --runs")
    parser.add_argument(
        "--save", type=Path, help="directory to keep each profile run's whole output in"
    )
    opts = parser.parse_args(args)
    if opts.pairs < 1 or opts.runs < 3:
        parser.error("--pairs must be >= 1 and --runs >= 3")
    head_name = opts.head or "working tree"
    print(
        f"# bench.ab: {opts.base} (base) against {head_name} (head), {opts.pairs} profile runs "
        f"of each, {opts.runs} runs of each workflow per profile run"
        + (f", bench.profile {' '.join(extra)}" if extra else "")
        + "\n"
    )
    print(
        "| revision | Chorus ms | naive ms | gap | phase-sum gap | events C / n "
        "| PG statements / ms | CPU C worker / server / PG | CPU n worker / server "
        "| worker + PG / naive worker |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    measured: list[Measurement] = []
    with checkout(opts.base) as base_tree, checkout(opts.head) as head_tree:
        trees = {"base": base_tree, "head": head_tree}
        for i, revision in enumerate(order(opts.pairs), start=1):
            out = profile(trees[revision], opts.runs, extra)
            if opts.save is not None:
                opts.save.mkdir(parents=True, exist_ok=True)
                (opts.save / f"{i:02d}-{revision}.txt").write_text(out)
            measured.append(parse(revision, out))
            print(_row(measured[-1]), flush=True)
    print("\nPhase-sum gaps by group (ms per run, Chorus minus naive):\n")
    for i, m in enumerate(measured, start=1):
        print(f"{i}. {m.revision}: {m.phase_groups}")
    print("\nMedians per revision (each profile run's Chorus minus its own naive):\n")
    print("\n".join(summary(measured)))
    print(
        "\nEvery number is Chorus's over the naive workflow measured in the same profile run; "
        "a head − base difference smaller than the spread of the rows above is noise."
    )


if __name__ == "__main__":
    main()
