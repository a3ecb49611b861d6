"""Built-in log tools: list, tail and search log files inside the allowed roots (read-only).

Every path goes through :func:`chorus.tools.confinement.allowed_path` (``CHORUS_TOOL_ROOTS``
and ``<data dir>/logs``). Files are opened without following a final symbolic link and must be
regular files (a FIFO or device is refused, it could block or never end); compressed rotated
logs (``.gz``, ``.xz``...) are refused rather than returned as bytes. Text is decoded as UTF-8,
undecodable bytes replaced. Blocking file I/O runs in a thread (``asyncio.to_thread``).

(The module is ``log_files``, not ``logs``: ``chorus/observability/logs.py`` has that name.)
"""

from __future__ import annotations

import asyncio
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, BinaryIO

from pydantic import Field

from chorus.config.settings import get_settings
from chorus.tools.confinement import allowed_path, human_bytes, tool_roots
from chorus.tools.registry import ToolError, tool

MAX_LIST_ENTRIES = 200
"""Files :func:`list_logs` returns at most (the newest first)."""
MAX_LIST_DEPTH = 3
"""Directory levels below the listed directory that :func:`list_logs` descends."""
MAX_SCANNED_ENTRIES = 20_000
"""Directory entries :func:`list_logs` looks at before it stops (huge trees)."""
TAIL_BLOCK_BYTES = 64 * 1024
MAX_TAIL_BYTES = 4 * 1024 * 1024
"""Bytes :func:`read_log_tail` reads back from the end at most (very long lines)."""
MAX_LINE_CHARS = 2000
"""Characters of each line :func:`read_log_tail` returns (longer lines are cut, ``…``)."""
MATCH_LINE_CHARS = 500
"""Characters of each matching line :func:`search_log` returns."""
MAX_SEARCH_BYTES = 50 * 1024 * 1024
"""Bytes :func:`search_log` reads at most from the start of a file, then stops and says so."""
MAX_PATTERN_CHARS = 200
READ_LINE_BYTES = 1024 * 1024
"""A line longer than this is searched in pieces of this size."""
REGEX_LINE_CHARS = 8192
"""Characters of each line a regular expression is matched against (bounds backtracking)."""
COMPRESSED_SUFFIXES = (".gz", ".xz", ".bz2", ".zst", ".lz4", ".zip", ".z")
_ATOM = r"(?:\\.|\[(?:\\.|[^\]\\])*\]|[^()\\\[])"  # an escape, a [class] or a plain char
_NESTED_QUANTIFIER = re.compile(rf"\({_ATOM}*[*+]{_ATOM}*\)(?:[*+]|\{{\d*,\d*\}})")
"""A group holding an unbounded quantifier that is itself repeated (``(a+)+``, ``(\\w+\\s?)*``,
``(x+){1,9}``): the classic catastrophic-backtracking shape, refused. A heuristic: it does
not see every slow pattern (nested groups), so each line is also cut for regex matching."""


@contextmanager
def _open_regular(path: Path) -> Iterator[tuple[BinaryIO, os.stat_result]]:
    """Open ``path`` for reading: no final symbolic link, regular files only."""
    if path.name.lower().endswith(COMPRESSED_SUFFIXES):
        raise ToolError(f"{path} is compressed; only plain-text log files can be read")
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise ToolError(f"cannot open {path}: {exc.strerror or exc}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise ToolError(f"{path} is {kind}; give a log file")
    with os.fdopen(fd, "rb") as file:
        yield file, info


def _modified(mtime: float) -> str:
    return datetime.fromtimestamp(mtime, UTC).isoformat(timespec="seconds")


def _list(directories: list[Path], roots: list[Path]) -> dict[str, Any]:
    files: list[dict[str, Any]] = []
    scanned = 0
    skipped = 0
    complete = True
    stack = [(d, 0) for d in reversed(directories)]
    while stack:
        directory, depth = stack.pop()
        try:
            with os.scandir(directory) as entries:
                listed = sorted(entries, key=lambda e: e.name)
        except OSError:
            skipped += 1
            continue
        for entry in listed:
            scanned += 1
            if scanned > MAX_SCANNED_ENTRIES:
                complete = False
                stack.clear()
                break
            try:
                if entry.is_dir(follow_symlinks=False):
                    if depth < MAX_LIST_DEPTH:
                        stack.append((Path(entry.path), depth + 1))
                    else:
                        complete = False
                    continue
                target = Path(entry.path)
                if entry.is_symlink():
                    target = target.resolve(strict=True)
                    if not any(target.is_relative_to(root) for root in roots):
                        skipped += 1  # a link out of the roots is not followed
                        continue
                info = target.stat()
            except (OSError, RuntimeError):
                skipped += 1
                continue
            if not stat.S_ISREG(info.st_mode):
                continue
            files.append(
                {
                    "path": entry.path,
                    "size_bytes": info.st_size,
                    "size": human_bytes(info.st_size),
                    "modified": _modified(info.st_mtime),
                    "_mtime": info.st_mtime,
                }
            )
    files.sort(key=lambda f: (-f["_mtime"], f["path"]))
    for f in files:
        del f["_mtime"]
    result: dict[str, Any] = {
        "directories": [str(d) for d in directories],
        "files": files[:MAX_LIST_ENTRIES],
        "files_found": len(files),
        "truncated": len(files) > MAX_LIST_ENTRIES or not complete,
    }
    if skipped:
        result["skipped_unreadable_or_outside"] = skipped
    return result


@tool("chorus.list_logs", timeout_s=15, idempotent=True)
async def list_logs(directory: str | None = None) -> dict[str, Any]:
    """List the log files in a directory inside the allowed roots, newest first.

    Descends 3 directory levels, returns at most 200 files: path, size (bytes and
    human-readable) and last modification time (UTC, ISO 8601); ``truncated`` says when there
    were more. Links out of the roots are skipped.

    Args:
        directory: A directory inside the allowed roots (CHORUS_TOOL_ROOTS, e.g. ``/var/log``);
            when not given, every allowed root.

    Raises:
        ToolError: The directory is outside the allowed roots, does not exist or is a file.
    """
    settings = get_settings()
    roots = tool_roots(settings)
    if directory is None:
        directories = [root for root in roots if root.is_dir()]
    else:
        resolved = allowed_path(directory, settings)
        if not resolved.is_dir():
            raise ToolError(f"{directory} is a file, not a directory (use chorus.read_log_tail)")
        directories = [resolved]
    return await asyncio.to_thread(_list, directories, roots)


def _cut(line: str, limit: int) -> str:
    return line if len(line) <= limit else line[:limit] + "…"


def _tail(path: Path, lines: int) -> str:
    with _open_regular(path) as (file, info):
        size = info.st_size
        position = size
        chunks: list[bytes] = []
        newlines = 0
        trailing: bool | None = None
        while position > 0 and size - position < MAX_TAIL_BYTES:
            step = min(TAIL_BLOCK_BYTES, position, MAX_TAIL_BYTES - (size - position))
            position -= step
            file.seek(position)
            chunk = file.read(step)
            if trailing is None:
                trailing = chunk.endswith(b"\n")
            chunks.append(chunk)
            newlines += chunk.count(b"\n")
            if newlines - int(bool(trailing)) >= lines:  # a newline before the lines wanted
                break
    data = b"".join(reversed(chunks))
    if data.endswith(b"\n"):
        data = data[:-1]
    parts = data.split(b"\n") if data else []
    partial_first = position > 0  # parts[0] may start mid-line
    cut_short = False
    if partial_first and parts:
        if len(parts) > lines:
            partial_first = False  # dropped below with the older lines
        elif len(parts) > 1:
            parts = parts[1:]
            partial_first = False
            cut_short = True
        else:
            cut_short = True
    parts = parts[-lines:]
    text = [_cut(p.decode("utf-8", errors="replace").rstrip("\r"), MAX_LINE_CHARS) for p in parts]
    if partial_first and text:
        text[0] = "…" + text[0]
    header = f"==> {path} ({human_bytes(size)}, last {len(text)} line(s)"
    if cut_short:
        header += f"; stopped reading {human_bytes(MAX_TAIL_BYTES)} back from the end"
    header += ") <=="
    return "\n".join([header, *text])


@tool("chorus.read_log_tail", timeout_s=15, idempotent=True)
async def read_log_tail(
    path: str,
    lines: Annotated[int, Field(ge=1, le=2000)] = 100,
) -> str:
    """The last lines of a log file inside the allowed roots (like ``tail -n``).

    Reads backwards from the end, never the whole file (at most 4 MiB). The answer starts with
    a ``==> path (size, last N line(s)) <==`` header; lines longer than 2000 characters are cut
    (``…``).

    Args:
        path: A log file inside the allowed roots (CHORUS_TOOL_ROOTS, e.g.
            ``/var/log/syslog``), absolute or relative to a root.
        lines: How many lines from the end, 1-2000.

    Raises:
        ToolError: The path is outside the allowed roots, does not exist, is not a regular
            file, is compressed, or cannot be read.
    """
    resolved = allowed_path(path, get_settings())
    try:
        return await asyncio.to_thread(_tail, resolved, lines)
    except OSError as exc:
        raise ToolError(f"cannot read {path}: {exc.strerror or exc}") from None


def _matcher(pattern: str, regex: bool, ignore_case: bool) -> re.Pattern[str]:
    if not regex:
        return re.compile(re.escape(pattern), re.IGNORECASE if ignore_case else 0)
    if _NESTED_QUANTIFIER.search(pattern):
        raise ToolError(
            "regular expression refused: a repeated group that itself repeats (such as "
            "(a+)+) can take exponential time; simplify it"
        )
    try:
        return re.compile(pattern, re.IGNORECASE if ignore_case else 0)
    except re.error as exc:
        raise ToolError(f"invalid regular expression: {exc}") from None


def _search(path: Path, matcher: re.Pattern[str], regex: bool, limit: int) -> dict[str, Any]:
    matches: list[dict[str, Any]] = []
    total = 0
    line_number = 0
    read = 0
    at_line_start = True
    with _open_regular(path) as (file, info):
        while read < MAX_SEARCH_BYTES:
            raw = file.readline(min(READ_LINE_BYTES, MAX_SEARCH_BYTES - read))
            if not raw:
                break
            read += len(raw)
            if at_line_start:
                line_number += 1
            at_line_start = raw.endswith(b"\n")
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if matcher.search(line[:REGEX_LINE_CHARS] if regex else line):
                total += 1
                if len(matches) < limit:
                    matches.append({"line": line_number, "text": _cut(line, MATCH_LINE_CHARS)})
        size = info.st_size
    result: dict[str, Any] = {
        "path": str(path),
        "size_bytes": size,
        "matches": matches,
        "match_count": total,
        "lines_searched": line_number,
    }
    if total > len(matches):
        result["note"] = f"{total} lines matched; the first {len(matches)} are shown"
    if read >= MAX_SEARCH_BYTES and read < size:
        result["stopped"] = (
            f"stopped after reading {human_bytes(read)} of {human_bytes(size)}; "
            "the rest of the file was not searched"
        )
    return result


@tool("chorus.search_log", timeout_s=30, idempotent=True)
async def search_log(
    path: str,
    pattern: Annotated[str, Field(min_length=1, max_length=MAX_PATTERN_CHARS)],
    max_matches: Annotated[int, Field(ge=1, le=500)] = 50,
    regex: bool = False,
    ignore_case: bool = True,
) -> dict[str, Any]:
    """Search a log file inside the allowed roots for lines containing a text or a regex.

    Returns the matching lines with their line numbers (1-based; each line cut to 500
    characters), how many lines matched in all, and ``stopped`` when the file is larger than
    50 MiB (only its first 50 MiB are searched).

    Args:
        path: A log file inside the allowed roots (CHORUS_TOOL_ROOTS, e.g.
            ``/var/log/auth.log``), absolute or relative to a root.
        pattern: Text to find (1-200 characters), or a Python regular expression when
            ``regex`` is true (matched against each line's first 8192 characters).
        max_matches: How many matching lines to return, 1-500 (all are counted).
        regex: Treat ``pattern`` as a regular expression instead of plain text.
        ignore_case: Ignore upper/lower case.

    Raises:
        ToolError: The path is outside the allowed roots, does not exist, is not a regular
            file or is compressed; the regular expression is invalid or can backtrack
            exponentially (a repeated group that itself repeats, such as ``(a+)+``).
    """
    matcher = _matcher(pattern, regex, ignore_case)
    resolved = allowed_path(path, get_settings())
    try:
        return await asyncio.to_thread(_search, resolved, matcher, regex, max_matches)
    except OSError as exc:
        raise ToolError(f"cannot read {path}: {exc.strerror or exc}") from None
