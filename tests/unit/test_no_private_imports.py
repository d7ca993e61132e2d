"""No project file uses a dependency's private names: they change without notice between releases.

Flags, in every Python file of the project: ``from dep import _name``, ``from dep._module
import ...``, ``import dep._module``, and ``module._name`` where ``module`` is a name bound by
importing a dependency. The project's own packages may use their own private names.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Top-level packages of the project itself.
OWN = frozenset({"services", "ingest", "bench", "tests"})
_SKIP_DIRS = frozenset({".venv", "venv", "build", "dist", "node_modules", "shared"})


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _python_files() -> list[Path]:
    return sorted(
        path
        for path in ROOT.rglob("*.py")
        if not any(part in _SKIP_DIRS or part.startswith(".") for part in path.relative_to(ROOT).parts)
    )


def private_uses(source: str) -> list[str]:
    """Each private name of a dependency that ``source`` reaches, as ``line: what``."""
    tree = ast.parse(source)
    found: list[str] = []
    imported: set[str] = set()  # names bound to a dependency's modules and objects
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] in OWN:
                    continue
                if any(_private(p) for p in parts):
                    found.append(f"{node.lineno}: import {alias.name}")
                imported.add(alias.asname or parts[0])
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            parts = node.module.split(".")
            if parts[0] in OWN:
                continue
            if any(_private(p) for p in parts):
                found.append(f"{node.lineno}: from {node.module} import ...")
            for alias in node.names:
                if _private(alias.name):
                    found.append(f"{node.lineno}: from {node.module} import {alias.name}")
                imported.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in imported
            and _private(node.attr)
        ):
            found.append(f"{node.lineno}: {node.value.id}.{node.attr}")
    return found


@pytest.mark.parametrize(
    ("source", "hits"),
    [
        ("from slowapi.extension import _rate_limit_exceeded_handler", 1),
        ("from granian._granian import RSGIHTTPProtocol", 1),
        ("import limits._storage", 1),
        ("import slowapi\nslowapi._private()", 1),
        ("from limits import storage as s\ns._thing", 1),
        ("from services.gateway.keys import _digest", 0),
        ("from purgatory import __version__", 0),
        ("import httpx\nhttpx.AsyncClient", 0),
        ("self._client = None", 0),
    ],
)
def test_the_scan_finds_what_it_should(source: str, hits: int) -> None:
    assert len(private_uses(source)) == hits


def test_no_project_file_imports_a_private_name_of_a_dependency() -> None:
    files = _python_files()
    assert any(path.name == "app.py" for path in files), "the scan found no project files"
    offences = [
        f"{path.relative_to(ROOT)}:{hit}"
        for path in files
        for hit in private_uses(path.read_text(encoding="utf-8"))
    ]
    assert offences == []
