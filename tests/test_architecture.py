"""The layout the README's "Architecture" section describes, held by tests.

- Inside ``chorus/``, a package imports only the packages above it in the README's table.
- Module file names are unique across the project (one name, one meaning).
- SQL lives in ``chorus/storage`` only; the CLI goes through the SDK.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ORDER = [
    "contracts",
    "config",
    "integrations",
    "storage",
    "governance",
    "observability",
    "streaming",
    "tools",
    "runtime",
]
"""The README's order: each package may import only those before it (and itself)."""
SOURCE_DIRS = ("chorus", "workflows", "activities", "starter")


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
            if node.module == "chorus":
                names += [f"chorus.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names]
    return names


def test_chorus_packages_depend_only_on_those_above():
    upward = []
    for path in sorted((ROOT / "chorus").rglob("*.py")):
        relative = path.relative_to(ROOT / "chorus").parts
        if len(relative) < 2 or relative[0] not in ORDER:
            continue
        rank = ORDER.index(relative[0])
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] == "chorus" and len(parts) > 1 and parts[1] in ORDER:
                if ORDER.index(parts[1]) > rank:
                    upward.append(f"{path.relative_to(ROOT)} imports {name}")
            elif parts[0] in ("activities", "starter", "worker"):
                upward.append(f"{path.relative_to(ROOT)} imports {name}")
    assert upward == []


def test_module_names_are_unique():
    names = Counter(
        path.name
        for folder in SOURCE_DIRS
        for path in (ROOT / folder).rglob("*.py")
        if path.name not in ("__init__.py", "__main__.py")
    )
    assert [name for name, count in names.items() if count > 1] == []


SQL = re.compile(
    r"\b(SELECT .* FROM|SELECT \d|SHOW \w+|INSERT INTO|UPDATE \w+ SET|DELETE FROM)\b", re.S
)


def _code_strings(path: Path) -> list[str]:
    """String literals of a module, docstrings left out."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_sql_lives_in_storage():
    outside = [
        str(path.relative_to(ROOT))
        for folder in SOURCE_DIRS
        for path in (ROOT / folder).rglob("*.py")
        if "storage" not in path.relative_to(ROOT).parts
        and any(SQL.search(text) for text in _code_strings(path))
    ]
    assert outside == []


def test_the_cli_goes_through_the_sdk():
    direct = [
        f"{path.name}: {name}"
        for path in (ROOT / "starter" / "cli").glob("*.py")
        for name in _imports(path)
        if name.startswith("chorus.storage") or name.startswith("asyncpg")
    ]
    assert direct == []
