"""The public API: what `service` and `service.client` export, that the client imports nothing
of the server side (FastAPI, Starlette, pydantic, uvicorn), and that the numeric core loads no
client library (the package re-exports the client lazily)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import service
import service.client
from tests.conftest import ROOT

CLIENT_API = {
    "ApplyResult",
    "AsyncEmbeddingClient",
    "EmbeddingClient",
    "EmbeddingClientError",
    "InvalidRequestError",
    "KeyedWeights",
    "Lookup",
    "Neighbours",
    "PayloadTooLargeError",
    "PushResult",
    "ServerError",
    "ServerUnavailableError",
    "StaleGradientError",
    "TableExistsError",
    "TableInfo",
    "TableNotFoundError",
    "UnauthorizedError",
}


def test_client_exports() -> None:
    assert set(service.client.__all__) == CLIENT_API
    for name in CLIENT_API:
        assert getattr(service.client, name).__name__ == name


def test_package_reexports_the_client() -> None:
    assert set(service.__all__) == CLIENT_API | {"__version__"}
    assert set(service.CLIENT_NAMES) == set(service.client.__all__)  # the lazy list, kept equal
    assert set(service.__all__) <= set(dir(service))
    for name in CLIENT_API:
        assert getattr(service, name) is getattr(service.client, name)
    assert service.__version__ == "0.1.0"


def test_client_imports_nothing_of_the_server() -> None:
    code = (
        "import sys; from service import EmbeddingClient, AsyncEmbeddingClient; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'fastapi', 'starlette', 'pydantic', 'pydantic_settings', 'uvicorn'}))"
    )
    output = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout
    assert output.strip() == "[]"


def loaded_modules(statement: str) -> set[str]:
    """The modules a fresh interpreter has loaded after running `statement`."""
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    output = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout
    return set(output.split())


CLIENT_LIBRARIES = {"httpx", "httpcore", "h11", "anyio", "orjson", "service.client"}


def test_core_loads_no_client_library() -> None:
    """`import service.core` (and the bare package) must not pull in the client's HTTP stack:
    service/__init__.py re-exports the client through a module __getattr__."""
    for statement in ("import service.core", "import service"):
        assert loaded_modules(statement) & CLIENT_LIBRARIES == set(), statement


def test_lazy_reexport_imports_the_client_on_first_use() -> None:
    loaded = loaded_modules("from service import EmbeddingClient")
    assert {"httpx", "service.client"} <= loaded


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'NoSuchClient'"):
        _ = service.NoSuchClient  # type: ignore[attr-defined]
