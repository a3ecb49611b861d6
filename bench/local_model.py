"""Local model benchmark: what turning llama.cpp's extra buffer types off costs.

Starts the embedded model server twice on loopback, interleaved round by round: once as
``chorus dev up`` does (``python -m chorus.integrations.local_model serve``: extra buffer types
off) and
once as plain ``python -m llama_cpp.server`` (llama.cpp's default: weights may be repacked),
both from the same installed build. Each round sends the same chat completion (a ~60-token
prompt, ``--tokens`` out, temperature 0) to each server. Prints per server the median latency,
the median decode speed in tokens/s, and the ratio of the medians.

    python -m bench.local_model [--rounds 7] [--tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time

import openai

from chorus.config.settings import Settings
from chorus.integrations.local_model import probe_completion, server_argv
from starter.dev import free_port

PROMPT = (
    "You are reviewing an incident report. The database failed over at 03:12 UTC, the "
    "application kept retrying with no backoff, and the queue grew to 40,000 messages. "
    "List the three most important lessons in short sentences."
)


async def _wait_ready(base_url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            await probe_completion(base_url, timeout_s=10)
            return
        except Exception as exc:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"server exited or never answered (status {proc.poll()})"
                ) from exc
            await asyncio.sleep(0.5)


async def _one(client: openai.AsyncOpenAI, tokens: int) -> tuple[float, float]:
    started = time.perf_counter()
    response = await client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=tokens,
        temperature=0,
    )
    seconds = time.perf_counter() - started
    out = response.usage.completion_tokens if response.usage else 0
    return seconds * 1000, out / seconds


async def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    servers: dict[str, tuple[subprocess.Popen[bytes], openai.AsyncOpenAI]] = {}
    try:
        for label in ("chorus (extra bufts off)", "llama.cpp default"):
            port = free_port()
            settings = Settings(local_base_url=f"http://127.0.0.1:{port}/v1")
            argv = server_argv(settings)
            if label == "llama.cpp default":
                argv = [sys.executable, "-m", "llama_cpp.server", *argv[4:]]
            proc = subprocess.Popen(  # noqa: ASYNC220 - started once, before any timing
                argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            await _wait_ready(settings.local_base_url, proc)
            client = openai.AsyncOpenAI(
                base_url=settings.local_base_url, api_key="x", max_retries=0, timeout=120
            )
            servers[label] = (proc, client)
        results: dict[str, list[tuple[float, float]]] = {label: [] for label in servers}
        for _ in range(args.rounds):
            for label, (_proc, client) in servers.items():
                results[label].append(await _one(client, args.tokens))
        print(f"{args.rounds} rounds, {args.tokens} tokens out, medians")
        medians = {}
        for label, rows in results.items():
            ms = statistics.median(r[0] for r in rows)
            tps = statistics.median(r[1] for r in rows)
            medians[label] = ms
            print(f"  {label:26s} {ms:8.0f} ms  {tps:7.1f} tokens/s")
        a, b = medians.values()
        print(f"  latency ratio (chorus / default): {a / b:.2f}")
    finally:
        for proc, client in servers.values():
            await client.close()
            proc.terminate()
            proc.wait(timeout=15)


if __name__ == "__main__":
    asyncio.run(main())
