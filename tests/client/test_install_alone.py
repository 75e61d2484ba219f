"""The client installed alone, as the README tells a trainer to, works against a real service.

A fresh virtual environment gets exactly the README's install command for trainers, run in a
copy of this checkout (pip builds in the source tree; the copy keeps the repository clean).
Then: none of the server's libraries is installed, and EmbeddingClient and AsyncEmbeddingClient
from that environment create, read and train a table on a real uvicorn process (started from
the test suite's own environment), the results checked exactly against numpy.

pip resolves the dependencies as configured on the machine (its index and its wheel cache: on a
machine that installed the test suite they are all cached, and the test takes seconds).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import venv
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, LiveServer

pytestmark = pytest.mark.e2e

SERVER_ONLY = ["fastapi", "starlette", "uvicorn", "pydantic", "pydantic-settings",
               "prometheus-client"]
# The trainer's line of the README's install block, e.g. "pip install .   # a trainer: ...".
TRAINER_LINE = re.compile(r"^(pip install [^#\n]+?)\s+# a trainer", re.MULTILINE)

TRAINER = """
import asyncio, json, sys
import numpy as np
import service
from service import AsyncEmbeddingClient, EmbeddingClient

url, name = sys.argv[1], sys.argv[2]
ids = np.array([[0, 3], [3, 5]])
grads = np.arange(12, dtype=np.float64).reshape(2, 2, 3) / 8
with EmbeddingClient(url) as client:
    client.create_table(name, num_embeddings=6, embedding_dim=3, dtype="float64", seed=7,
                        optimizer={"kind": "sgd", "lr": 0.5})
    before = client.export_weights(name)
    looked_up = client.lookup(name, ids)
    client.push_gradients(name, ids, grads)
    applied = client.apply(name)

async def read_after():
    async with AsyncEmbeddingClient(url) as client:
        return await client.export_weights(name)

after = asyncio.run(read_after())
print(json.dumps({"module": service.__file__, "before": before.tolist(),
                  "looked_up": looked_up.tolist(), "rows_updated": applied.rows_updated,
                  "after": after.tolist(), "loaded": sorted(sys.modules)}))
"""


def trainer_install_command() -> list[str]:
    found = TRAINER_LINE.findall((ROOT / "README.md").read_text())
    assert len(found) == 1, "the README has one install line marked '# a trainer'"
    return shlex.split(found[0])


def copy_of_the_checkout(destination: Path) -> Path:
    """What a wheel is built from: pyproject.toml, README.md and the service package."""
    destination.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, destination / name)
    shutil.copytree(ROOT / "service", destination / "service",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return destination


@pytest.mark.timeout(240)
def test_the_readme_install_gives_a_working_client_without_the_server(tmp_path: Path) -> None:
    command = trainer_install_command()
    assert command[:2] == ["pip", "install"] and "server" not in " ".join(command)
    environment = tmp_path / "venv"
    venv.create(environment, with_pip=True)
    python = environment / "bin" / "python"
    env = {key: value for key, value in os.environ.items()
           if key not in ("VIRTUAL_ENV", "PYTHONPATH")}
    subprocess.run([str(environment / "bin" / "pip"), *command[1:]],
                   cwd=copy_of_the_checkout(tmp_path / "checkout"), env=env, check=True,
                   capture_output=True, timeout=200)

    installed = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m, json; "
         "print(json.dumps(sorted(d.metadata['Name'].lower() for d in m.distributions())))"],
        cwd=tmp_path, env=env, check=True, capture_output=True, text=True).stdout
    distributions = set(json.loads(installed))
    assert "embedding-service" in distributions
    assert distributions & set(SERVER_ONLY) == set()

    server = LiveServer().start()
    try:
        run = subprocess.run([str(python), "-c", TRAINER, server.url, "alone"], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=60)
    finally:
        server.stop()
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)

    assert Path(result["module"]).is_relative_to(environment)  # not this checkout's sources
    assert not {"fastapi", "starlette", "uvicorn", "pydantic"} & set(result["loaded"])
    before = np.array(result["before"])  # (6, 3) float64
    ids = np.array([[0, 3], [3, 5]])
    grads = np.arange(12, dtype=np.float64).reshape(2, 2, 3) / 8
    np.testing.assert_array_equal(np.array(result["looked_up"]), before[ids])
    gradient = np.zeros_like(before)
    np.add.at(gradient, ids, grads)  # duplicate id 3 sums, as the reference layer's backward
    expected = before.copy()
    touched = np.unique(ids)
    expected[touched] -= 0.5 * gradient[touched]
    assert result["rows_updated"] == len(touched)
    np.testing.assert_array_equal(np.array(result["after"]), expected)
    # the wheel carries the API pages' files (the server extra's /docs needs no CDN)
    shipped = next(environment.glob("lib/python*/site-packages/service/api/docs_assets"))
    assert (shipped / "swagger-ui-bundle.js").is_file()
