"""The base install (what a trainer gets) is exactly what the client imports.

pyproject.toml's [project].dependencies is the client's list; the server's libraries are the
`server` extra. This test reads every import statement of service/client (and of the package's
__init__, which re-exports it) and maps the third-party modules to their distributions: a module
the client starts importing (another HTTP library, say) without its distribution in the list
fails here, and so does a distribution left in the list that the client no longer imports.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

from tests.conftest import ROOT

CLIENT_SOURCES = [*sorted((ROOT / "service" / "client").rglob("*.py")),
                  ROOT / "service" / "__init__.py",
                  ROOT / "service" / "npy.py"]  # the .npy codec, which the client imports


def imported_top_level_modules(sources: list[Path]) -> set[str]:
    """The third-party top-level modules the sources import (standard library left out)."""
    modules: set[str] = set()
    for source in sources:
        tree = ast.parse(source.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules |= {alias.name.partition(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.partition(".")[0])
    return modules - set(sys.stdlib_module_names) - {"__future__", "service"}


def normalized(name: str) -> str:
    """A distribution name as PEP 503 compares them (Pydantic_Settings == pydantic-settings)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(spec: str) -> str:
    """'uvicorn[standard]>=0.30' -> 'uvicorn'."""
    return normalized(re.split(r"[\[<>=!~;\s]", spec, maxsplit=1)[0])


def project() -> dict[str, Any]:
    table: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return table


def base_dependencies() -> set[str]:
    return {requirement_name(spec) for spec in project()["dependencies"]}


def test_base_dependencies_are_what_the_client_imports() -> None:
    distributions = importlib.metadata.packages_distributions()
    needed: dict[str, set[str]] = {}
    for module in imported_top_level_modules(CLIENT_SOURCES):
        assert module in distributions, f"service/client imports {module!r}: not installed"
        needed[module] = {normalized(name) for name in distributions[module]}
    declared = base_dependencies()
    missing = {module: names for module, names in needed.items() if not names & declared}
    assert missing == {}, f"add these to [project].dependencies in pyproject.toml: {missing}"
    unused = declared - set().union(*needed.values())
    assert unused == set(), f"the client imports nothing of {unused}: move them to an extra"


def test_the_server_libraries_are_an_extra() -> None:
    optional = project()["optional-dependencies"]
    server = {requirement_name(spec) for spec in optional["server"]}
    assert {"fastapi", "uvicorn", "pydantic-settings", "prometheus-client"} <= server
    assert not server & base_dependencies()
    assert "embedding-service[server]" in optional["test"]
