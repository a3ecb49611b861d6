"""PII benchmark: detection quality over the labelled corpus and redaction throughput.

1. Precision, recall and F1 per kind (and overall) of ``chorus.governance.pii.find_pii`` over
   ``tests/pii_corpus.py`` (positives and near misses), with TP/FP/FN counts.
2. Throughput in MB/s (UTF-8 bytes of input per second) on a ~1 MB realistic log text built
   from the corpus (timestamped log lines, one corpus sample in every other line): one
   ``find_pii`` call and one ``Redactor.redact`` call per policy on the whole text, and
   ``scrub_for_logs`` called line by line (how a log processor uses it). Median of ``--runs``.

    python -m bench.pii [--size 1000000] [--runs 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

from chorus.governance.pii import ALL_KINDS, Redactor, find_pii, scrub_for_logs
from tests.pii_corpus import NEAR_MISSES, POSITIVES, SAMPLES, score

FILLER = [
    "GET /api/v1/runs/{id} 200 12ms",
    "worker heartbeat ok activities=3 slots=97",
    "cache miss key=catalog:agents ttl=300",
    "retrying activity chorus.call_llm attempt=2 backoff=1.5s",
    "db pool size=20 in_use=7 waiting=0",
    "workflow completed run_id={id} steps=3 tokens_in=1523 tokens_out=412",
]


def build_log(size: int, seed: int = 7) -> str:
    rng = random.Random(seed)
    lines: list[str] = []
    total = 0
    i = 0
    while total < size:
        ts = f"2024-01-15T{(i // 3600) % 24:02d}:{(i // 60) % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z"
        level = rng.choice(["INFO", "INFO", "INFO", "WARN", "ERROR", "DEBUG"])
        if i % 2:
            body = rng.choice(SAMPLES).text.replace("\n", " ")
        else:
            body = rng.choice(FILLER).format(id=f"{rng.getrandbits(64):016x}")
        line = f"{ts} {level} [svc-{i % 7}] {body}"
        lines.append(line)
        total += len(line.encode()) + 1
        i += 1
    return "\n".join(lines)


def median_seconds(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description="Chorus PII benchmark")
    parser.add_argument("--size", type=int, default=1_000_000, help="log text size in bytes")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per measurement")
    args = parser.parse_args()

    print(f"corpus: {len(POSITIVES)} positive samples, {len(NEAR_MISSES)} near misses")
    scores = score(lambda text: [(m.kind, m.value) for m in find_pii(text)])
    print(f"{'kind':<6} {'TP':>4} {'FP':>4} {'FN':>4} {'precision':>10} {'recall':>8} {'F1':>7}")
    for kind in (*ALL_KINDS, "all"):
        s = scores[kind]
        print(
            f"{kind:<6} {s.tp:>4} {s.fp:>4} {s.fn:>4} "
            f"{s.precision:>10.3f} {s.recall:>8.3f} {s.f1:>7.3f}"
        )

    text = build_log(args.size)
    lines = text.split("\n")
    mb = len(text.encode()) / 1e6
    redactor = Redactor()
    n_matches = len(find_pii(text))
    print(f"\nlog text: {mb:.2f} MB, {len(lines)} lines, {n_matches} matches")
    cases: list[tuple[str, Callable[[], object]]] = [
        ("find_pii (whole text)", lambda: find_pii(text)),
        ("redact policy=redact", lambda: redactor.redact(text, "redact")),
        ("redact policy=mask", lambda: redactor.redact(text, "mask")),
        ("redact policy=placeholder", lambda: redactor.redact(text, "placeholder")),
        ("scrub_for_logs (per line)", lambda: [scrub_for_logs(line) for line in lines]),
    ]
    print(f"{'operation':<28} {'median s':>9} {'MB/s':>7}")
    for name, fn in cases:
        fn()  # warm up
        seconds = median_seconds(fn, args.runs)
        print(f"{name:<28} {seconds:>9.3f} {mb / seconds:>7.2f}")


if __name__ == "__main__":
    main()
