"""Built-in host tools: CPU and memory, disk usage, the busiest processes (read-only, psutil).

Values are what the kernel reports to this process: inside a container, CPU cores, load and
memory are usually the host's, not the container's limits. Processes are described by pid,
name, user, CPU and memory only, never by command line or environment (they can hold secrets).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import psutil  # type: ignore[import-untyped]
from pydantic import Field

from chorus.config.settings import get_settings
from chorus.tools.confinement import allowed_path, human_bytes, tool_roots
from chorus.tools.registry import ToolError, tool

CPU_SAMPLE_S = 0.2
"""How long CPU use is measured, seconds (system-wide and per process)."""


def _memory(total: int, available: int, used: int, percent: float) -> dict[str, Any]:
    return {
        "total_bytes": total,
        "available_bytes": available,
        "used_bytes": used,
        "used_percent": round(percent, 1),
        "total": human_bytes(total),
        "available": human_bytes(available),
        "used": human_bytes(used),
    }


@tool("chorus.cpu_memory", timeout_s=10, idempotent=True)
async def cpu_memory() -> dict[str, Any]:
    """This host's CPU use (measured over 0.2 s), load averages, core count, memory and swap.

    Returns ``cpu_percent`` (0-100, all cores together), ``load_average`` (1, 5 and 15 minutes,
    runnable processes), ``cores`` (logical and physical), ``memory`` and ``swap`` (bytes,
    human-readable sizes and percent used).
    """
    cpu = await asyncio.to_thread(psutil.cpu_percent, interval=CPU_SAMPLE_S)
    load_1, load_5, load_15 = psutil.getloadavg()
    memory = psutil.virtual_memory()
    swap = psutil.swap_memory()
    return {
        "cpu_percent": round(float(cpu), 1),
        "load_average": {
            "1m": round(float(load_1), 2),
            "5m": round(float(load_5), 2),
            "15m": round(float(load_15), 2),
        },
        "cores": {"logical": psutil.cpu_count(), "physical": psutil.cpu_count(logical=False)},
        "memory": _memory(
            int(memory.total), int(memory.available), int(memory.used), float(memory.percent)
        ),
        "swap": _memory(int(swap.total), int(swap.free), int(swap.used), float(swap.percent)),
    }


def _mount_point(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if os.path.ismount(candidate):
            return candidate
    return Path(path.anchor or "/")  # pragma: no cover - the root is always a mount point


def _disk_usage(path: Path) -> dict[str, Any]:
    usage = psutil.disk_usage(str(path))
    total, used, free = int(usage.total), int(usage.used), int(usage.free)
    return {
        "path": str(path),
        "mount_point": str(_mount_point(path)),
        "total_bytes": total,
        "used_bytes": used,
        "free_bytes": free,
        "used_percent": round(float(usage.percent), 1),
        "total": human_bytes(total),
        "used": human_bytes(used),
        "free": human_bytes(free),
    }


@tool("chorus.disk_usage", timeout_s=10, idempotent=True)
async def disk_usage(path: str | None = None) -> dict[str, Any]:
    """Usage of the file system (mount point) that holds a path: total, used and free space.

    ``used_percent`` is used / (used + free), as ``df`` reports it (space reserved for the
    super-user is not counted as free).

    Args:
        path: A file or directory inside the allowed roots (CHORUS_TOOL_ROOTS, e.g.
            ``/var/log``); the result is for the whole file system holding it. Default: the
            first allowed root.

    Raises:
        ToolError: The path is outside the allowed roots or does not exist.
    """
    settings = get_settings()
    if path is None:
        existing = [root for root in tool_roots(settings) if root.exists()]
        if not existing:
            raise ToolError(
                "none of the allowed roots exists: "
                f"{', '.join(str(r) for r in tool_roots(settings))} (CHORUS_TOOL_ROOTS)"
            )
        path = str(existing[0])
    resolved = allowed_path(path, settings)
    try:
        return await asyncio.to_thread(_disk_usage, resolved)
    except OSError as exc:
        raise ToolError(f"disk usage of {path}: {exc.strerror or exc}") from None


def _processes(limit: int, sort_by: str) -> tuple[int, list[dict[str, Any]]]:
    processes = list(psutil.process_iter(["pid", "name", "username"]))
    for process in processes:  # the first cpu_percent() starts the measurement
        try:
            process.cpu_percent(None)
        except psutil.Error:
            pass
    time.sleep(CPU_SAMPLE_S)
    rows: list[dict[str, Any]] = []
    for process in processes:
        try:
            with process.oneshot():
                cpu = float(process.cpu_percent(None))
                rss = int(process.memory_info().rss)
        except psutil.Error:  # gone, or not ours to inspect
            continue
        rows.append(
            {
                "pid": int(process.info["pid"]),
                "name": process.info.get("name") or "?",
                "user": process.info.get("username"),
                "cpu_percent": round(cpu, 1),
                "rss_mb": round(rss / 1024 / 1024, 1),
            }
        )
    key = "cpu_percent" if sort_by == "cpu" else "rss_mb"
    rows.sort(key=lambda row: (row[key], row["rss_mb"], row["cpu_percent"]), reverse=True)
    return len(rows), rows[:limit]


@tool("chorus.top_processes", timeout_s=10, idempotent=True)
async def top_processes(
    limit: Annotated[int, Field(ge=1, le=50)] = 10,
    sort_by: Literal["cpu", "memory"] = "cpu",
) -> dict[str, Any]:
    """The busiest processes on this host: pid, name, user, CPU % (over 0.2 s) and memory.

    Command lines and environments are never returned. ``cpu_percent`` is per process and can
    pass 100 on several cores; ``rss_mb`` is resident memory in MiB.

    Args:
        limit: How many processes to return, 1-50.
        sort_by: ``cpu`` (CPU use, highest first) or ``memory`` (resident memory).
    """
    count, rows = await asyncio.to_thread(_processes, limit, sort_by)
    return {"sorted_by": sort_by, "processes_seen": count, "processes": rows}
