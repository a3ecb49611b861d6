"""Loading tools into :data:`chorus.tools.registry.DEFAULT_REGISTRY`: built-in and user modules.

Importing a module registers its ``@tool`` functions; Python imports a module once per
process, so calling these functions again registers nothing twice.
"""

from __future__ import annotations

import importlib

from chorus.contracts.errors import ChorusInputError

BUILTIN_MODULES: tuple[str, ...] = (
    "chorus.tools.host",
    "chorus.tools.log_files",
    "chorus.tools.network",
)
"""The modules of the built-in ``chorus.*`` tools (host, log files, network)."""


def load_builtin_tools() -> None:
    """Register the built-in ``chorus.*`` tools (import :data:`BUILTIN_MODULES`)."""
    for name in BUILTIN_MODULES:
        importlib.import_module(name)


def load_tool_modules(names: str) -> list[str]:
    """Import the modules ``CHORUS_TOOL_MODULES`` names, registering their ``@tool`` functions.

    Args:
        names: Comma-separated module names (``acme.tools,acme.more``); blanks are ignored.

    Returns:
        The module names imported, in order.

    Raises:
        ChorusInputError: A module cannot be imported, or fails while importing (the message
            names the module and ``CHORUS_TOOL_MODULES``).
    """
    loaded: list[str] = []
    for name in (n.strip() for n in names.split(",")):
        if not name:
            continue
        try:
            importlib.import_module(name)
        except Exception as exc:  # ImportError, but also the module's own errors
            raise ChorusInputError(
                f"CHORUS_TOOL_MODULES: cannot import tool module {name!r}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        loaded.append(name)
    return loaded
