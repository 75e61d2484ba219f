"""The public API: what `service` and `service.client` export, and that the client imports
nothing of the server side (FastAPI, Starlette, pydantic, uvicorn)."""

from __future__ import annotations

import subprocess
import sys

import service
import service.client
from tests.conftest import ROOT

CLIENT_API = {
    "ApplyResult",
    "AsyncEmbeddingClient",
    "EmbeddingClient",
    "EmbeddingClientError",
    "InvalidRequestError",
    "Lookup",
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
