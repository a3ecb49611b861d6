"""Serving the HTTP API for a test: a real uvicorn server on a loopback port, and API keys."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI

from chorus.config.settings import Settings
from chorus.governance import api_keys
from starter.sdk import ChorusClient

SERVER_SECRET = "s" * 40
"""``CHORUS_API_KEY_SECRET`` of the tests (any 32+ characters)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 (lifespan included); yield its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(20):
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 20)


async def new_key(
    chorus: ChorusClient,
    settings: Settings,
    name: str,
    scopes: Sequence[str] = tuple(api_keys.SCOPES),
    **limits: float | int | None,
) -> str:
    """Create an API key; return the key itself."""
    _, key = await api_keys.create_key(
        await chorus.pool(),
        settings,
        name=name,
        scopes=scopes,
        author="test",
        **limits,  # type: ignore[arg-type]
    )
    return key
