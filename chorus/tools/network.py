"""Built-in network tools: resolve a name, check a TCP port, check an HTTP endpoint (read-only).

Every host goes through :func:`chorus.tools.confinement.allowed_host`
(``CHORUS_TOOL_ALLOWED_HOSTS``): a host that is not allowed is a :class:`ToolError`. A host
that is allowed but does not answer is not an error: "down" is the answer, so the result says
``closed``, ``timeout`` or ``error`` with the reason. ``chorus.http_check`` sends one ``GET``,
follows no redirects (it reports the ``Location``), ignores proxy variables (a proxy would be
another host) and reads at most the first few KiB of the body.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from typing import Annotated, Any
from urllib.parse import urlsplit

import httpx2
from pydantic import Field

from chorus.config.settings import get_settings
from chorus.tools.confinement import allowed_host
from chorus.tools.registry import ToolError, tool

DNS_TIMEOUT_S = 5.0
BODY_CHARS = 500
"""Characters of the response body :func:`http_check` returns."""
BODY_READ_BYTES = 8192
USER_AGENT = "chorus-http-check/1"


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 1)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@tool("chorus.resolve_dns", timeout_s=10, idempotent=True)
async def resolve_dns(host: str) -> dict[str, Any]:
    """Resolve a host name to its IP addresses (the system resolver, as connections use it).

    Returns ``resolved`` (true/false), ``addresses`` (each with ``family`` IPv4 or IPv6),
    ``latency_ms`` and, when the name does not resolve, ``error``.

    Args:
        host: A host name or IP address allowed by CHORUS_TOOL_ALLOWED_HOSTS.

    Raises:
        ToolError: The host is not allowed.
    """
    name = allowed_host(host, get_settings())
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(name, None, type=socket.SOCK_STREAM), DNS_TIMEOUT_S
        )
    except TimeoutError:
        return {"host": name, "resolved": False, "error": f"no answer within {DNS_TIMEOUT_S} s"}
    except OSError as exc:  # socket.gaierror: unknown name, no resolver
        return {"host": name, "resolved": False, "error": _reason(exc), "latency_ms": _ms(started)}
    addresses: list[dict[str, str]] = []
    for family, _, _, _, sockaddr in infos:
        entry = {
            "address": str(sockaddr[0]),
            "family": "IPv6" if family == socket.AF_INET6 else "IPv4",
        }
        if entry not in addresses:
            addresses.append(entry)
    return {"host": name, "resolved": True, "addresses": addresses, "latency_ms": _ms(started)}


@tool("chorus.tcp_check", timeout_s=15, idempotent=True)
async def tcp_check(
    host: str,
    port: Annotated[int, Field(ge=1, le=65535)],
    timeout_s: Annotated[float, Field(ge=0.1, le=10)] = 3.0,
) -> dict[str, Any]:
    """Check whether a TCP port accepts connections (connects, then closes at once).

    Returns ``state``: ``open`` (with ``latency_ms``, the time to connect), ``closed``
    (refused), ``timeout`` or ``error`` (with the reason, e.g. the name does not resolve).

    Args:
        host: A host name or IP address allowed by CHORUS_TOOL_ALLOWED_HOSTS.
        port: TCP port, 1-65535.
        timeout_s: Seconds to wait for the connection, 0.1-10.

    Raises:
        ToolError: The host is not allowed.
    """
    name = allowed_host(host, get_settings())
    started = time.perf_counter()
    result: dict[str, Any] = {"host": name, "port": port}
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(name, port), timeout_s)
    except TimeoutError:
        return {**result, "state": "timeout", "error": f"no connection within {timeout_s} s"}
    except ConnectionRefusedError:
        return {**result, "state": "closed", "latency_ms": _ms(started)}
    except OSError as exc:
        return {**result, "state": "error", "error": _reason(exc)}
    latency = _ms(started)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return {**result, "state": "open", "latency_ms": latency}


@tool("chorus.http_check", timeout_s=40, idempotent=True)
async def http_check(
    url: str,
    timeout_s: Annotated[float, Field(ge=0.1, le=30)] = 5.0,
    expect_status: Annotated[int | None, Field(ge=100, le=599)] = None,
) -> dict[str, Any]:
    """Send one GET to an HTTP(S) URL and report what answers: status, latency, body start.

    Redirects are not followed (``location`` says where they point). Returns ``up`` (an HTTP
    answer came), ``status``, ``ok`` (the status is ``expect_status``, or 2xx/3xx when none is
    given), ``latency_ms`` (until the response headers), ``content_type`` and ``body_start``
    (the first 500 characters); when nothing answers, ``up`` is false and ``error`` says why.

    Args:
        url: An ``http://`` or ``https://`` URL whose host CHORUS_TOOL_ALLOWED_HOSTS allows.
        timeout_s: Seconds to wait for each of connecting and reading, 0.1-30.
        expect_status: The HTTP status that counts as ok (100-599); default any 2xx or 3xx.

    Raises:
        ToolError: The URL is not http/https, has no host, or its host is not allowed.
    """
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https"):
        raise ToolError(f"url {url}: only http:// and https:// URLs can be checked")
    try:
        host = parts.hostname
        _ = parts.port  # a bad port raises ValueError
    except ValueError as exc:
        raise ToolError(f"url {url}: {exc}") from None
    if not host:
        raise ToolError(f"url {url} has no host")
    allowed_host(host, get_settings())
    result: dict[str, Any] = {"url": url.strip()}
    started = time.perf_counter()
    try:
        async with (
            httpx2.AsyncClient(
                timeout=timeout_s,
                follow_redirects=False,
                trust_env=False,
                headers={"User-Agent": USER_AGENT},
            ) as client,
            client.stream("GET", url.strip()) as response,
        ):
            latency = _ms(started)
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) >= BODY_READ_BYTES:
                    break
    except httpx2.TimeoutException as exc:
        return {**result, "up": False, "ok": False, "error": f"timeout ({_reason(exc)})"}
    except httpx2.InvalidURL as exc:
        raise ToolError(f"url {url}: {exc}") from None
    except (httpx2.HTTPError, OSError) as exc:
        return {**result, "up": False, "ok": False, "error": _reason(exc)}
    status = response.status_code
    ok = status == expect_status if expect_status is not None else 200 <= status < 400
    result.update(
        up=True,
        status=status,
        reason=response.reason_phrase,
        ok=ok,
        latency_ms=latency,
        content_type=response.headers.get("content-type"),
    )
    if response.is_redirect or "location" in response.headers:
        result["location"] = response.headers.get("location")
    text = bytes(body).decode("utf-8", errors="replace")
    result["body_start"] = text[:BODY_CHARS] + ("…" if len(text) > BODY_CHARS else "")
    return result
