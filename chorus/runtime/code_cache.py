"""Compile workflow modules once per worker process, not once per workflow run.

Temporal's workflow sandbox re-imports a workflow's module (and the non-passthrough modules it
imports) for every new workflow run, so module-level state cannot leak between runs. Each
re-import goes through the normal import system: where no up-to-date ``.pyc`` exists — an
editable install, ``PYTHONDONTWRITEBYTECODE=1`` (set in our Docker image and on many CI
machines), a read-only source tree — that means compiling the source again. Measured with
py-spy on no-op runs (``bench/RESULTS.md``), compiling ``workflows/_base.py`` was ~13 ms of
each run's first workflow task, most of the sandbox's cost.

:func:`install_code_cache` puts a finder in front of ``sys.meta_path`` for the given packages
whose loader compiles each source file once and hands the same code object to every later
import. Each sandboxed import still executes the module afresh in its own namespace, so
isolation between runs is unchanged; only the compile step is shared. The code a worker runs
is the code it first loaded, even if the file is edited under it — as with any imported module.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Sequence
from types import CodeType, ModuleType
from typing import ClassVar

WORKFLOW_PACKAGES = ("workflows",)
"""Packages whose modules the sandbox re-imports for each workflow run."""


class CachingSourceLoader(importlib.machinery.SourceFileLoader):
    """A ``SourceFileLoader`` that compiles each path once per process."""

    codes: ClassVar[dict[str, CodeType]] = {}
    compiled: ClassVar[int] = 0
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def get_code(self, fullname: str) -> CodeType:
        """Return the module's code object, compiling (or reading ``.pyc``) on first use only.

        Raises:
            ImportError: As ``SourceFileLoader.get_code`` (source missing or unreadable).
            SyntaxError: The source does not compile.
        """
        path = self.path
        code = self.codes.get(path)
        if code is None:
            code = super().get_code(fullname)
            if code is None:  # pragma: no cover - only for source-less loaders
                raise ImportError(f"no code for {fullname}", name=fullname)
            with self._lock:
                code = self.codes.setdefault(path, code)
                type(self).compiled += 1
        return code


class CodeCacheFinder(importlib.abc.MetaPathFinder):
    """Finds modules of ``packages`` through the other finders and swaps in the caching loader.

    Args:
        packages: Top-level package names to cover (their submodules included).
    """

    def __init__(self, packages: Sequence[str]) -> None:
        self._packages = tuple(packages)

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        """Return the spec the next finder gives, with a caching loader for source files."""
        if fullname.split(".", 1)[0] not in self._packages:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is None:
                continue
            loader = spec.loader
            if type(loader) is importlib.machinery.SourceFileLoader and spec.origin:
                spec.loader = CachingSourceLoader(fullname, spec.origin)
            return spec
        return None


def install_code_cache(packages: Sequence[str] = WORKFLOW_PACKAGES) -> None:
    """Put a :class:`CodeCacheFinder` for ``packages`` first on ``sys.meta_path`` (idempotent)."""
    if not any(isinstance(f, CodeCacheFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, CodeCacheFinder(packages))
