"""/openapi.json is a valid OpenAPI 3.1 document, and a maintained generator makes a working
client from it (issue 19, part 3).

Strict tools (code generators, gateways, contract-test runners) refuse an invalid document.
openapi-spec-validator checks it against the OpenAPI 3.1 schema, with and without a token
(the token adds the bearer scheme and a 401 reply to every protected operation). Then
openapi-python-client generates a client package from the live service's document into a
temporary directory, and that package calls /healthz and a JSON lookup on the live service.
"""

from __future__ import annotations

import importlib
import io
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from openapi_spec_validator import validate

from tests.conftest import LiveServer

# Our binary media types are bytes to the generator (it knows application/octet-stream); its
# post-generation hooks (ruff) are skipped: the code is imported, not committed.
GENERATOR_CONFIG = """\
content_type_overrides:
  application/x-npy: application/octet-stream
  application/x-npz: application/octet-stream
post_hooks: []
"""


@pytest.mark.parametrize("token", [None, "a-token"])
def test_the_document_is_valid_openapi_3_1(
    make_app: Callable[..., FastAPI], token: str | None
) -> None:
    document = make_app(token=token).openapi()
    assert document["openapi"].startswith("3.1")
    validate(document)  # raises OpenAPIValidationError naming the offending path


def test_binary_bodies_are_described_where_the_spec_allows(
    make_app: Callable[..., FastAPI]
) -> None:
    """A Media Type Object has no `description`; the words go on the schema or the body."""
    document = make_app().openapi()
    lookup = document["paths"]["/v1/tables/{name}/lookup"]["post"]
    body = lookup["requestBody"]
    assert "application/x-npy" in body["description"]
    assert body["content"]["application/x-npy"] == {"schema": {
        "type": "string", "format": "binary", "description": "an integer array of ids (.npy)"}}
    for path in document["paths"].values():
        for operation in path.values():
            contents = [operation.get("requestBody", {}).get("content", {}),
                        *(reply.get("content", {}) for reply in operation["responses"].values())]
            for content in contents:
                assert all("description" not in media for media in content.values())


def test_operation_ids_are_the_function_names(make_app: Callable[..., FastAPI]) -> None:
    """What a generated client names its functions (lookup, not lookup_v1_tables__name_...)."""
    document = make_app().openapi()
    ids = sorted(op["operationId"] for path in document["paths"].values() for op in path.values())
    assert ids == sorted(["healthz", "metrics", "create_table", "list_tables", "get_table",
                          "delete_table", "lookup", "push_gradients", "apply", "snapshot",
                          "export_weights", "import_weights", "set_labels", "get_labels",
                          "neighbors", "projection", "table_shards"])


@pytest.fixture
def generated_client(
    live_server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ModuleType]:
    """The package openapi-python-client generates from the live service's /openapi.json."""
    document = tmp_path / "openapi.json"
    document.write_bytes(httpx.get(f"{live_server.url}/openapi.json", timeout=10).content)
    config = tmp_path / "generator.yaml"
    config.write_text(GENERATOR_CONFIG)
    package = f"generated_embedding_client_{uuid.uuid4().hex[:8]}"
    generate = subprocess.run(
        [sys.executable, "-m", "openapi_python_client", "generate", "--path", str(document),
         "--output-path", str(tmp_path / package), "--meta", "none", "--config", str(config)],
        capture_output=True, text=True, timeout=120,
    )
    assert generate.returncode == 0, generate.stdout + generate.stderr
    assert "Warning" not in generate.stdout + generate.stderr, generate.stdout + generate.stderr
    monkeypatch.syspath_prepend(str(tmp_path))
    yield importlib.import_module(package)
    for name in [name for name in sys.modules if name.startswith(package)]:
        del sys.modules[name]


@pytest.mark.e2e
def test_a_generated_client_calls_healthz_and_a_json_lookup(
    generated_client: ModuleType, live_server: LiveServer, table_name: str
) -> None:
    package = generated_client.__name__
    models = importlib.import_module(f"{package}.models")
    healthz = importlib.import_module(f"{package}.api.health.healthz")
    create_table = importlib.import_module(f"{package}.api.tables.create_table")
    lookup = importlib.import_module(f"{package}.api.operations.lookup")
    ids = [[4, 0], [0, 2]]
    with generated_client.Client(base_url=live_server.url) as client:
        health = healthz.sync(client=client)
        created = create_table.sync(client=client, body=models.CreateTable.from_dict(
            {"name": table_name, "num_embeddings": 5, "embedding_dim": 2, "dtype": "float64",
             "seed": 3}))
        reply = lookup.sync(name=table_name, client=client,
                            body=models.LookupJsonLookupRequest.from_dict({"ids": ids}))
        missing = lookup.sync(name=f"{table_name}-missing", client=client,
                              body=models.LookupJsonLookupRequest.from_dict({"ids": [0]}))

    assert health.to_dict() == {"status": "ok"}
    assert created.name == table_name and created.step == 0
    exported = httpx.get(f"{live_server.url}/v1/tables/{table_name}/weights", timeout=10)
    weights = np.load(io.BytesIO(exported.content))  # (5, 2) float64: the oracle
    assert reply.shape == [2, 2, 2] and reply.step == 0
    np.testing.assert_array_equal(np.array(reply.vectors, dtype=np.float64), weights[ids])
    assert isinstance(missing, models.ErrorReply)  # the 404, typed by the generated client
    assert f"{table_name}-missing" in missing.detail
