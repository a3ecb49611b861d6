"""Where the built-in tools may look: file roots and network hosts.

The built-in ``chorus.*`` tools run with the worker's permissions on arguments a model chose,
so each one checks its path or host here first and refuses (:class:`ToolError`, sent back to
the model) anything outside what the operator allowed.

**Paths** (``CHORUS_TOOL_ROOTS``, comma-separated directories, plus ``<data dir>/logs``,
always): :func:`allowed_path` resolves the path (``..`` removed, every symbolic link followed,
the roots resolved the same way) and accepts it only when the result lies inside a root
(component-wise: ``/var/log2`` is not inside ``/var/log``). So ``../`` traversal, absolute paths
elsewhere and links inside a root that point out of it are all refused. A relative path is
looked up under each root in turn. Whether a path outside the roots exists is never revealed:
the root check comes before the existence check. The check is made when the tool is called; a
tool then opens the resolved path without following a final symbolic link
(``O_NOFOLLOW``), so a link swapped in after the check is not followed either.

**Hosts** (``CHORUS_TOOL_ALLOWED_HOSTS``, comma-separated host names and IP addresses; ``*``
allows any): :func:`allowed_host` is a plain allow-list. A host name is accepted when it is
listed exactly (case-insensitive, a trailing dot ignored; no wildcards, a listed name does not
allow its subdomains); an IP address literal when an equal address is listed (``[::1]`` and
``0:0:0:0:0:0:0:1`` match ``::1``). Names are not resolved for the check: a listed name may
reach whatever addresses DNS gives it (the operator trusts the names they list), and an
address that a listed name resolves to is not thereby allowed as a literal.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from chorus.config.settings import Settings
from chorus.tools.registry import ToolError

ROOTS_VARIABLE = "CHORUS_TOOL_ROOTS"
HOSTS_VARIABLE = "CHORUS_TOOL_ALLOWED_HOSTS"


def tool_roots(settings: Settings) -> list[Path]:
    """The directories file tools may read, resolved, in order, without duplicates.

    Args:
        settings: ``tool_roots`` (comma-separated) and ``data_dir`` (its ``logs`` is added).

    Returns:
        ``CHORUS_TOOL_ROOTS``'s directories, then ``<data dir>/logs``; a root that does not
        exist is kept (it simply contains nothing).
    """
    configured = [Path(p.strip()) for p in settings.tool_roots.split(",") if p.strip()]
    roots: list[Path] = []
    for root in [*configured, settings.data_dir / "logs"]:
        resolved = root.absolute().resolve(strict=False)
        if resolved not in roots:
            roots.append(resolved)
    return roots


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(path.is_relative_to(root) for root in roots)


def _roots_text(roots: list[Path]) -> str:
    return f"{', '.join(str(r) for r in roots)} ({ROOTS_VARIABLE})"


def allowed_path(path: str, settings: Settings) -> Path:
    """Resolve ``path`` and check that it lies inside an allowed root.

    Args:
        path: Absolute, or relative to a root (each root is tried in order; the first where
            the path exists is used).
        settings: The roots (:func:`tool_roots`).

    Returns:
        The resolved path (absolute, no ``..``, no symbolic links); it exists.

    Raises:
        ToolError: The path is empty, resolves outside every root (the message names the
            roots and ``CHORUS_TOOL_ROOTS``), does not exist, or cannot be resolved (a
            symbolic link loop, no permission to search a directory).
    """
    roots = tool_roots(settings)
    text = path.strip()
    if not text:
        raise ToolError("path is empty")
    if "\x00" in text:
        raise ToolError("path contains a NUL character")
    given = Path(text)
    candidates = [given] if given.is_absolute() else [root / given for root in roots]
    outside = False
    for candidate in candidates:
        try:
            # Links that exist are followed even when the rest of the path does not exist, so
            # this decides the root check without telling whether an outside path exists.
            if not _inside(candidate.resolve(strict=False), roots):
                outside = True
                continue
            resolved = candidate.resolve(strict=True)
        except FileNotFoundError:
            continue
        except PermissionError:
            raise ToolError(f"path {text}: permission denied") from None
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symbolic link loop (3.11/12)
            raise ToolError(f"path {text} cannot be resolved: {exc}") from None
        if _inside(resolved, roots):
            return resolved
        outside = True  # pragma: no cover - a link changed between the two resolutions
    if outside:
        raise ToolError(f"path {text} is outside the allowed roots: {_roots_text(roots)}")
    raise ToolError(f"path {text} does not exist (allowed roots: {_roots_text(roots)})")


def _normal_host(host: str) -> str:
    text = host.strip().lower()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return text.rstrip(".") if text != "." else text


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])  # fe80::1%eth0: zone not compared
    except ValueError:
        return None


def allowed_hosts(settings: Settings) -> list[str]:
    """The allow-list of the network tools, normalised (lower case, no brackets or final dot).

    Args:
        settings: ``tool_allowed_hosts`` (comma-separated).
    """
    hosts: list[str] = []
    for entry in settings.tool_allowed_hosts.split(","):
        normal = _normal_host(entry)
        if normal and normal not in hosts:
            hosts.append(normal)
    return hosts


def allowed_host(host: str, settings: Settings) -> str:
    """Check ``host`` against ``CHORUS_TOOL_ALLOWED_HOSTS`` (exact names, IP literals, ``*``).

    Args:
        host: A host name or an IP address (an IPv6 address may be in brackets).
        settings: The allow-list (:func:`allowed_hosts`).

    Returns:
        The host as the network tools should use it (no brackets, no final dot, lower case).

    Raises:
        ToolError: The host is empty or not allowed (the message lists the allowed hosts and
            names ``CHORUS_TOOL_ALLOWED_HOSTS``).
    """
    normal = _normal_host(host)
    if not normal:
        raise ToolError("host is empty")
    listed = allowed_hosts(settings)
    if "*" in listed:
        return normal
    address = _ip(normal)
    if address is not None:
        if any(_ip(entry) == address for entry in listed):
            return normal
    elif normal in listed:
        return normal
    raise ToolError(
        f"host {host.strip()} is not in the allowed hosts: "
        f"{', '.join(listed) or 'none'} ({HOSTS_VARIABLE})"
    )


def human_bytes(count: float) -> str:
    """``count`` bytes for a person: ``512 B``, ``1.5 KiB``, ``12.3 GiB`` (powers of 1024)."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover
