"""Tools the tool-use tests register: in-process (``REGISTRY``) and in worker processes.

A worker process imports this module through ``CHORUS_TOOL_MODULES=tests.tools.tool_fixtures``,
which registers the ``fixture.*`` tools in the default registry; ``CHORUS_TEST_TOOL_LOG`` names
the file each call of ``fixture.charge`` appends to (to count executions across processes).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, Field

from chorus.tools import DEFAULT_REGISTRY, ToolError, ToolRegistry

REGISTRY = ToolRegistry()
"""The in-process tests' tools."""

flaky_failures: dict[str, int] = {}


class Sum(BaseModel):
    total: int
    terms: list[int]


@REGISTRY.tool("acme.add")
async def add(a: int, b: int = 0) -> Sum:
    """Add two integers.

    Args:
        a: First term.
        b: Second term.
    """
    return Sum(total=a + b, terms=[a, b])


@REGISTRY.tool("acme.echo")
async def echo(text: str) -> str:
    """Return the text unchanged.

    Args:
        text: Any text.
    """
    return text


@REGISTRY.tool("acme.flaky")
async def flaky(key: str, failures: int = 1) -> str:
    """Fail ``failures`` times for ``key`` (retryable), then succeed.

    Args:
        key: Which counter.
        failures: How many attempts fail first.
    """
    done = flaky_failures.get(key, 0)
    if done < failures:
        flaky_failures[key] = done + 1
        raise ToolError(f"temporarily unavailable (failure {done + 1})", retryable=True)
    return f"ok after {done} failures"


@REGISTRY.tool("acme.broken")
async def broken() -> str:
    """Always fail (not retryable)."""
    raise ToolError("the order system refused the request")


@REGISTRY.tool("acme.customer")
async def customer(customer_id: str) -> dict[str, Any]:
    """Look up a customer (the result holds PII).

    Args:
        customer_id: The customer's id.
    """
    return {
        "id": customer_id,
        "email": "jane.doe@example.com",
        "phone": "+1 415 555 0132",
        "ssn": "123-45-6789",
    }


@REGISTRY.tool("acme.big")
async def big(chars: int = 50_000) -> str:
    """Return a long text.

    Args:
        chars: Length of the text.
    """
    return "".join(f"line {i:06d}\n" for i in range(chars // 12 + 1))[:chars]


@REGISTRY.tool("acme.approve", requires_approval=True)
async def approve(amount: float) -> str:
    """Approve a payment (needs a person's approval).

    Args:
        amount: USD.
    """
    return f"approved {amount}"


@DEFAULT_REGISTRY.tool("fixture.charge", idempotent=False, timeout_s=120)
async def charge(amount: Annotated[float, Field(gt=0)], sleep_s: float = 0.0) -> str:
    """Charge a card (not idempotent): appends one line to ``CHORUS_TEST_TOOL_LOG``, then waits.

    Args:
        amount: USD.
        sleep_s: Seconds to wait after charging.
    """
    path = Path(os.environ["CHORUS_TEST_TOOL_LOG"])

    def append() -> None:
        with path.open("a") as log:
            log.write(f"charged {amount} pid {os.getpid()}\n")

    await asyncio.to_thread(append)
    await asyncio.sleep(sleep_s)
    return f"charged {amount}"
