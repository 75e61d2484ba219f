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


@pytest.mark.parametrize("name", ["npy.py", "sharding.py"])
def test_the_shared_helpers_need_numpy_only(name: str) -> None:
    """The codec and the key hash of cluster mode: the client imports both."""
    path = SERVICE / name
    outside = {m.split(".")[0] for m in imported_modules(path)} - set(sys.stdlib_module_names)
    assert outside == {"numpy"}


def test_only_the_cluster_package_imports_ray() -> None:
    outside = [path for path in SERVICE.rglob("*.py")
               if path.relative_to(SERVICE).parts[0] != "cluster"]
    assert outside and offending(outside, ("ray",)) == {}
    assert offending(sorted((SERVICE / "cluster").rglob("*.py")), ("ray",))  # it does


def test_a_single_process_service_never_loads_ray() -> None:
    """The app of the default mode, made and serving a request, with ray installed."""
    import subprocess

    code = ("import sys; from starlette.testclient import TestClient; "
            "from service.api.main import create_app; "
            "client = TestClient(create_app()); "
            "assert client.get('/healthz').status_code == 200; "
            "assert 'ray' not in sys.modules, 'ray was imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize(("layer", "forbidden"), [
    ("core", ("service.api", "service.client", "service.cluster", "fastapi", "starlette",
              "httpx", "uvicorn", "ray")),
    ("client", ("service.api", "service.core", "service.cluster", "fastapi", "starlette",
                "uvicorn", "pydantic", "ray")),
    ("api", ("service.client", "ray")),  # the server never calls itself through the SDK
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
