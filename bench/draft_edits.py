"""Draft benchmark: sustained edits/s on one draft and update latency, 1 vs 20 editors.

Starts its own file-backed Temporal dev server (``chorus dev up``'s flags) and embedded
PostgreSQL, runs the production worker, and has editors apply non-overlapping range edits to
one draft (each editor owns one line; an editor sends its next edit as soon as the previous one
returns, against the version it last saw, so most edits arrive stale and are rebased). Editors
keep their copy current from the changes each ``edit`` returns; they query only after a
refusal.

Each scenario runs on a small draft (held in workflow memory) and on a draft padded to
``--large-chars`` characters (held by reference: the text lives in PostgreSQL, rebuilt by the
save activity from the edits).

    python -m bench.draft_edits [--edits 400] [--large-chars 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import yaml

from activities import DraftActivities, RunActivities
from bench._support import CHORUS_DEV_FLAGS, embedded_postgres, temporal_dev_server
from chorus.config.settings import Settings
from chorus.contracts.drafting import EditRequest, TextEdit, apply_edit
from chorus.storage import db
from starter.sdk import ChorusClient, DraftRefusedError
from tests.conftest import FakeLLM
from worker import WorkerOptions, build_worker


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(
    chorus: ChorusClient, editors: int, edits: int, chars: int = 0
) -> dict[str, float]:
    names = [f"e{i:02d}" for i in range(editors)]
    initial = "".join(f"{n}: 0\n" for n in names)
    filler = "".join(f"filler line {i:07d} {'.' * 40}\n" for i in range(chars // 61 + 1))
    initial += filler[: max(0, chars - len(initial))]
    draft_id = await chorus.start_draft(
        "bench", "owner", content=initial, collaborators=dict.fromkeys(names, "editor")
    )
    latencies: list[float] = []
    query_ms: list[float] = []
    conflicts = 0

    async def refresh() -> tuple[int, str]:
        started = time.perf_counter()
        view = await chorus.draft(draft_id)
        query_ms.append((time.perf_counter() - started) * 1000)
        assert view.content is not None  # the bench draft stays small (held inline)
        return view.version, view.content

    per_editor = edits // editors

    async def editor(name: str) -> None:
        nonlocal conflicts
        view = await chorus.draft(draft_id)
        version, text = view.version, view.content or ""
        for n in range(1, per_editor + 1):
            line = text.index(f"{name}: ")
            end = text.index("\n", line)
            request = EditRequest(
                user=name,
                base_version=version,
                edit=TextEdit(start=line, end=end, text=f"{name}: {n}"),
            )
            start = time.perf_counter()
            try:
                result = await chorus.draft_update(draft_id, "edit", request)
            except DraftRefusedError:
                conflicts += 1
                version, text = await refresh()
                continue
            latencies.append((time.perf_counter() - start) * 1000)
            # bring my copy to the new version with the changes the update returned
            for revision in result.changes:
                text = apply_edit(text, revision.edit)
            version = result.version

    start = time.perf_counter()
    await asyncio.gather(*(editor(n) for n in names))
    elapsed = time.perf_counter() - start
    return {
        "chars": len(initial),
        "edits": len(latencies),
        "conflicts": conflicts,
        "edits_per_s": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies),
        "p95_ms": pct(latencies, 0.95),
        "queries": len(query_ms),
        "query_p50_ms": statistics.median(query_ms) if query_ms else 0.0,
        "query_p95_ms": pct(query_ms, 0.95) if query_ms else 0.0,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description="Chorus draft benchmark")
    parser.add_argument("--edits", type=int, default=400, help="edits per scenario")
    parser.add_argument("--large-chars", type=int, default=1_000_000, help="large draft size")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        async with contextlib.AsyncExitStack() as stack:
            database_url = stack.enter_context(embedded_postgres(tmp))
            client = await stack.enter_async_context(
                temporal_dev_server(tmp / "temporal.db", CHORUS_DEV_FLAGS)
            )
            catalog = tmp / "agents.yaml"
            catalog.write_text(yaml.safe_dump({"agents": [
                {"name": "writer", "instructions": "x", "providers": ["local:fake"]}
            ]}))  # fmt: skip
            settings = Settings(
                agents_file=catalog,
                database_url=database_url,
                task_queue=f"bench-{uuid.uuid4().hex[:6]}",
            )
            pool = await db.open_store(settings)
            runs = RunActivities(pool, settings)
            worker = build_worker(
                client,
                settings,
                [FakeLLM().call_llm, runs.start_run, runs.finish_run, runs.resolve_agents,
                 DraftActivities(pool).save_draft],
                WorkerOptions(max_concurrent_activities=50, max_concurrent_workflow_tasks=50),
            )  # fmt: skip
            chorus = ChorusClient(client, settings, pool)
            try:
                async with worker:
                    await measure(chorus, 1, 20)  # warm up
                    results = [
                        await measure(chorus, n, args.edits, chars)
                        for chars in (0, args.large_chars)
                        for n in (1, 20)
                    ]
            finally:
                await pool.close()
    print(f"one draft, {args.edits} non-overlapping range edits per scenario")
    print(
        f"{'chars':>9} {'editors':>8} {'edits':>6} {'conflicts':>9} {'edits/s':>8} "
        f"{'update p50':>10} {'p95 ms':>7} {'refresh queries':>15} {'query p50':>9} {'p95 ms':>7}"
    )
    for n, r in zip([1, 20, 1, 20], results, strict=True):
        print(
            f"{r['chars']:9.0f} {n:8d} {r['edits']:6.0f} {r['conflicts']:9.0f} "
            f"{r['edits_per_s']:8.1f} {r['p50_ms']:10.1f} {r['p95_ms']:7.1f} {r['queries']:15.0f} "
            f"{r['query_p50_ms']:9.1f} {r['query_p95_ms']:7.1f}"
        )


if __name__ == "__main__":
    asyncio.run(main())
