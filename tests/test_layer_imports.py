"""The layers, read from the source: what each part of `service` may import (STYLE.md).

- service/npy.py (the .npy codec shared by server, client and snapshots): numpy and the standard
  library only, so every layer may import it.
- service/core: nothing of service.api or service.client, no web framework or HTTP client.
- service/client: nothing of service.api or service.core, nothing of the server's stack.
- service/api: nothing of service.client; service/training: only the client, never the core.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

SERVICE = ROOT / "service"


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, absolute, at any depth of the file (lazy imports too)."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def offending(files: list[Path], forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    found = {}
    for path in files:
        bad = sorted(m for m in imported_modules(path)
                     if any(m == f or m.startswith(f + ".") for f in forbidden))
        if bad:
            found[str(path.relative_to(ROOT))] = bad
    return found


def test_the_codec_needs_numpy_only() -> None:
    path = SERVICE / "npy.py"
    outside = {m.split(".")[0] for m in imported_modules(path)} - set(sys.stdlib_module_names)
    assert outside == {"numpy"}


@pytest.mark.parametrize(("layer", "forbidden"), [
    ("core", ("service.api", "service.client", "fastapi", "starlette", "httpx", "uvicorn")),
    ("client", ("service.api", "service.core", "fastapi", "starlette", "uvicorn", "pydantic")),
    ("api", ("service.client",)),  # the server never calls itself through the SDK
    ("training", ("service.core", "service.api")),  # trainers reach tables through the client
])
def test_layer_imports_nothing_it_must_not(layer: str, forbidden: tuple[str, ...]) -> None:
    files = sorted((SERVICE / layer).rglob("*.py"))
    assert files
    assert offending(files, forbidden) == {}


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    """The walk finds imports inside functions too (a lazy import is still an import)."""
    path = tmp_path / "lazy.py"
    path.write_text("def f():\n    from service.api import errors\n    import fastapi.routing\n")
    assert imported_modules(path) >= {"service.api", "service.api.errors", "fastapi.routing"}
