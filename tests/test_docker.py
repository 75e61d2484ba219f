"""The image and the compose stack, exercised the way a user runs them.

Builds the image, starts docker-compose.yml under a project of its own on a free loopback port,
trains a table through the published port, stops the container gracefully, replaces it with a
new one and finds the trained weights intact on the volume; everything is torn down afterwards
(`down -v`, the image tag removed, the build cache kept), failures included.

Needs a Docker engine and compose (docs/development.md says how to get them). Without one these
tests skip and say so loudly; under CI (CI=true) they fail instead, because there the engine must
be had (.ci/run starts one).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from service.api.settings import Settings
from tests.api.helpers import NPY, NPZ, create, load_npy, npy_bytes, npz_bytes, weights_of
from tests.conftest import ROOT, free_port
from tests.reference import ReferenceEmbedding

COMPOSE_FILE = ROOT / "docker-compose.yml"
SERVICE = "embedding-service"
IMAGE_USER = "10001"  # the Dockerfile's ARG UID
BUILD_SECONDS = 900  # the first build installs the dependencies with pip
# Where the image's defaults differ from the service's (the Dockerfile's ENV).
IMAGE_DEFAULTS = {"EMBED_DATA_DIR": "/data", "EMBED_SNAPSHOT_INTERVAL_SECONDS": "60"}


def compose_command() -> list[str] | None:
    """`docker compose` (v2) where the plugin is there, else docker-compose (1.29)."""
    if shutil.which("docker") and subprocess.run(
        ["docker", "compose", "version"], capture_output=True
    ).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


def missing_engine() -> str | None:
    """Why no container can be run here, or None when an engine and compose answer."""
    if shutil.which("docker") is None:
        return "no `docker` command"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True)
    if info.returncode != 0:
        return f"`docker info` failed: {info.stderr.strip()[-300:]}"
    if compose_command() is None:
        return "neither `docker compose` nor `docker-compose` is installed"
    return None


class ComposeStack:
    """docker-compose.yml under a project name of its own, its image under a tag of its own."""

    def __init__(self) -> None:
        suffix = uuid.uuid4().hex[:10]
        self.project = f"embedtest{suffix}"
        self.image = f"embedding-service:test-{suffix}"
        self.trainer_image = f"embedding-service-trainer:test-{suffix}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.compose = compose_command() or ["docker-compose"]
        # The test's own settings only: an EMBED_TOKEN in the caller's shell must not leak in.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("EMBED_", "COMPOSE_"))}
        self.env |= {
            "EMBED_IMAGE": self.image,
            "EMBED_TRAINER_IMAGE": self.trainer_image,
            "EMBED_HOST_ADDRESS": "127.0.0.1",
            "EMBED_HOST_PORT": str(self.port),
            # No periodic snapshots: what comes back after the restart is the shutdown snapshot.
            "EMBED_SNAPSHOT_INTERVAL_SECONDS": "0",
        }

    def run(self, *args: str, timeout: float = 180) -> str:
        """One compose command; its output, or an error carrying that output."""
        command = [*self.compose, "-f", str(COMPOSE_FILE), "-p", self.project,
                   "--profile", "trainer", *args]
        done = subprocess.run(
            command, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} exited with {done.returncode}:\n"
                f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
        return done.stdout

    def container(self) -> str:
        return self.run("ps", "-q", SERVICE).strip()

    def up(self) -> None:
        """The service alone (the trainer, under its profile, starts only when run)."""
        self.run("up", "-d", SERVICE)

    def inspect(self, template: str) -> str:
        return docker("inspect", "-f", template, self.container())

    def exec(self, *command: str) -> str:
        return docker("exec", self.container(), *command)

    def logs(self) -> str:
        try:
            return self.run("logs", "--no-color", "--tail", "60", SERVICE)
        except RuntimeError as error:
            return str(error)

    def wait_healthy(self, timeout: float = 120) -> None:
        """Until Docker's own healthcheck (the image's urllib probe) reports healthy."""
        deadline = time.monotonic() + timeout
        status = "unknown"
        while time.monotonic() < deadline:
            status = self.inspect("{{.State.Status}} {{.State.Health.Status}}")
            if status == "running healthy":
                return
            time.sleep(0.5)
        raise AssertionError(f"container not healthy after {timeout} s ({status}):\n{self.logs()}")

    def tear_down(self) -> None:
        try:
            self.run("down", "--volumes", "--remove-orphans", "--timeout", "60", timeout=300)
        finally:
            # The tag only: its layers stay as the build cache of the next run.
            subprocess.run(["docker", "rmi", "--no-prune", self.image, self.trainer_image],
                           capture_output=True)


def docker(*args: str) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} exited with {done.returncode}: {done.stderr}")
    return done.stdout.strip()


def say_loudly(config: pytest.Config, line: str) -> None:
    """A line on the terminal now, past pytest's output capture."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.ensure_newline()
        reporter.write_line(line, yellow=True, bold=True)


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest) -> ComposeStack:
    """The stack built, up and healthy; torn down after the module's last test, or on failure."""
    reason = missing_engine()
    if reason is not None:
        message = (
            f"DOCKER TESTS NOT RUN: {reason}. Install a Docker engine and compose and start "
            "it (Debian: `apt-get install docker.io docker-compose`, then `systemctl start "
            "docker` or `dockerd &`; elsewhere Docker Engine or Docker Desktop), as a user "
            "who may run `docker`; docs/development.md lists what each test needs."
        )
        say_loudly(request.config, f"WARNING: {message}")
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    compose_stack = ComposeStack()
    request.addfinalizer(compose_stack.tear_down)  # before anything can fail
    compose_stack.run("build", timeout=BUILD_SECONDS)
    compose_stack.up()
    compose_stack.wait_healthy()
    return compose_stack


@pytest.mark.docker
@pytest.mark.timeout(BUILD_SECONDS + 300)
def test_container_runs_as_an_unprivileged_user_owning_the_volume(stack: ComposeStack) -> None:
    assert stack.inspect("{{.Config.User}}") == f"{IMAGE_USER}:{IMAGE_USER}"
    assert stack.exec("id", "-u") == IMAGE_USER
    assert stack.exec("stat", "-c", "%u:%g", "/data") == f"{IMAGE_USER}:{IMAGE_USER}"
    assert stack.exec("printenv", "EMBED_DATA_DIR") == "/data"


@pytest.mark.docker
@pytest.mark.timeout(BUILD_SECONDS + 300)
def test_the_service_loads_kernels_compiled_at_build_time(stack: ComposeStack) -> None:
    """numba compiled the kernels when the image was built, into a cache the service's user
    owns: the service started without compiling any (its start-up log says so), and so does a
    new process."""
    assert stack.exec("printenv", "NUMBA_CACHE_DIR") == "/opt/numba-cache"
    assert stack.exec("stat", "-c", "%u:%g", "/opt/numba-cache") == f"{IMAGE_USER}:{IMAGE_USER}"
    logs = subprocess.run(["docker", "logs", stack.container()], capture_output=True,
                          text=True, timeout=60)
    started = logs.stdout + logs.stderr  # the service logs to stderr
    kernels = [line for line in started.splitlines() if '"kernels: numba' in line]
    assert len(kernels) == 1 and "(0 of " in kernels[0], started[-3000:]
    dynamic = [line for line in started.splitlines() if "dynamic tables: kernels ready" in line]
    assert len(dynamic) == 1 and "loaded from numba's cache" in dynamic[0], started[-3000:]
    again = stack.exec("python", "-m", "service.core.kernels")
    assert re.fullmatch(r"kernels: numba, \d+ kernels ready in [\d.]+ s \(0 of \d+ signatures "
                        r"compiled, the rest loaded from numba's cache\)", again), again


@pytest.mark.docker
@pytest.mark.timeout(BUILD_SECONDS + 300)
def test_image_sets_the_defaults_the_compose_file_repeats(stack: ComposeStack) -> None:
    image_env = json.loads(docker("image", "inspect", "-f", "{{json .Config.Env}}", stack.image))
    assert {entry for entry in image_env if entry.startswith("EMBED_")} == {
        f"{name}={value}" for name, value in IMAGE_DEFAULTS.items()
    }


@pytest.mark.docker
@pytest.mark.timeout(BUILD_SECONDS + 300)
def test_image_holds_the_installed_service_and_no_build_tools(stack: ComposeStack) -> None:
    installed = stack.exec("python", "-c", "import service; print(service.__file__)")
    assert installed == "/opt/app/service/__init__.py"
    assert stack.exec("ls", "/opt/app").split() == ["embedding_service-0.1.0.dist-info", "service"]
    venv_commands = set(stack.exec("ls", "/opt/venv/bin").split())
    assert "uvicorn" in venv_commands
    assert not venv_commands & {"pip", "pip3", "pytest"}
    assert stack.exec("sh", "-c", "ls -d /src /opt/venv/lib/python3.11/site-packages/tests "
                      "2>/dev/null; true") == ""


@pytest.mark.docker
@pytest.mark.timeout(BUILD_SECONDS + 300)
def test_image_serves_the_api_pages_from_the_package(stack: ComposeStack) -> None:
    """/docs and /redoc in the container load their files from the service itself (no CDN),
    byte for byte the pinned ones (tests/api/test_docs_assets.py checks the same in-process)."""
    manifest = json.loads((ROOT / "service/api/docs_assets/manifest.json").read_text())
    with httpx.Client(base_url=stack.url, timeout=30.0) as http:
        pages = http.get("/docs").text + http.get("/redoc").text
        assets = set(re.findall(r"/docs/assets/[\w./-]+", pages))
        assert {"/docs/assets/swagger-ui-bundle.js", "/docs/assets/redoc.standalone.js"} <= assets
        assert "://" not in pages.replace("window.location.origin", "")
        for path in assets:
            reply = http.get(path)
            assert reply.status_code == 200, path
            assert hashlib.sha256(reply.content).hexdigest() == \
                manifest["sha256"][path.removeprefix("/docs/assets/")], path


@pytest.mark.docker
@pytest.mark.timeout(BUILD_SECONDS + 600)
def test_trained_weights_survive_a_graceful_stop_and_a_new_container(stack: ComposeStack) -> None:
    with httpx.Client(base_url=stack.url, timeout=30.0) as http:
        info = create(http, "words", num_embeddings=50, embedding_dim=8, seed=3,
                      optimizer={"kind": "sgd", "lr": 0.5})
        reference = ReferenceEmbedding(weights_of(http, "words"))
        ids = np.array([[3, 3], [7, 49]])  # (batch, context); row 3 twice: its grads sum
        grads = np.random.default_rng(0).standard_normal((2, 2, 8)).astype(np.float32)
        reply = http.post("/v1/tables/words/lookup", content=npy_bytes(ids), headers=NPY)
        np.testing.assert_array_equal(load_npy(reply.content), reference.forward(ids))

        pushed = http.post("/v1/tables/words/gradients", content=npz_bytes(ids=ids, grads=grads),
                           headers=NPZ)
        assert pushed.status_code == 200, pushed.text
        assert pushed.json()["pending_rows"] == 3
        applied = http.post("/v1/tables/words/apply")
        assert applied.json() == {"step": 1, "rows_updated": 3}
        reference.backward(grads)
        reference.sgd(0.5)
        trained = weights_of(http, "words")
        np.testing.assert_array_equal(trained, reference.params[0])
        info_before = without_nbytes(http.get("/v1/tables/words").json())
        assert info_before == without_nbytes({**info, "step": 1})

    old_container = stack.container()
    stack.run("stop", timeout=120)
    # 0, not 137: SIGTERM reached uvicorn (PID 1), which shut down (and snapshotted) in time.
    assert docker("inspect", "-f", "{{.State.ExitCode}}", old_container) == "0", stack.logs()
    stack.run("rm", "--force", SERVICE)
    stack.up()
    assert stack.container() != old_container
    stack.wait_healthy()

    with httpx.Client(base_url=stack.url, timeout=30.0) as http:
        assert without_nbytes(http.get("/v1/tables/words").json()) == info_before, stack.logs()
        restored = weights_of(http, "words")
        assert restored.dtype == np.float32
        np.testing.assert_array_equal(restored, trained)


@pytest.mark.docker
@pytest.mark.timeout(BUILD_SECONDS + 600)
def test_trainer_profile_trains_word2vec_against_the_service(stack: ComposeStack) -> None:
    output = stack.run("run", "--rm", "trainer", "python", "-m", "examples.word2vec",
                       "--no-plot", "--epochs", "2", "--table-prefix", "w2v", timeout=600)
    summary = re.search(r"held-out loss (?P<before>[\d.]+) -> (?P<after>[\d.]+)", output)
    assert summary is not None, output
    assert float(summary["after"]) < float(summary["before"]), output
    with httpx.Client(base_url=stack.url, timeout=30.0) as http:
        for name in ("w2v-in", "w2v-out"):
            table = http.get(f"/v1/tables/{name}").json()
            assert table["num_embeddings"] == 200 and table["step"] > 0, table


def without_nbytes(info: dict[str, Any]) -> dict[str, Any]:
    """TableInfo less its memory use (the gradient buffer is allocated when first needed)."""
    return {key: value for key, value in info.items() if key != "nbytes"}


def compose_environment() -> dict[str, str]:
    """The service's environment block in docker-compose.yml, as written (unsubstituted)."""
    spec = yaml.safe_load(COMPOSE_FILE.read_text())
    return spec["services"][SERVICE]["environment"]


def test_compose_settings_are_settings_of_the_service() -> None:
    fields = {f"EMBED_{name.upper()}" for name in Settings.model_fields}
    names = set(compose_environment())
    assert names <= fields, f"not settings of the service: {sorted(names - fields)}"
    assert {"EMBED_TOKEN", "EMBED_MAX_BODY_BYTES"} <= names


def test_compose_defaults_are_the_images_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each `${EMBED_X:-default}` is overridable by its own name and changes nothing unset."""
    for name in list(os.environ):
        if name.startswith("EMBED_"):
            monkeypatch.delenv(name)
    for name, value in IMAGE_DEFAULTS.items():
        monkeypatch.setenv(name, value)
    image_defaults = Settings().model_dump()
    substitution: Callable[[str], re.Match[str] | None] = re.compile(
        r"\$\{(?P<name>\w+):-(?P<default>[^}]*)\}"
    ).fullmatch
    for name, value in compose_environment().items():
        match = substitution(str(value))
        assert match is not None and match["name"] == name, f"{name}: {value!r}"
        monkeypatch.setenv(name, match["default"])
    assert Settings().model_dump() == image_defaults


def test_compose_file_is_readable_by_docker_compose() -> None:
    """`config` validates the file (version, keys, substitutions) with the installed compose."""
    command = compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed to validate the "
                    "file with (docs/development.md says how to get them)")
    done = subprocess.run([*command, "-f", str(COMPOSE_FILE), "config", "--quiet"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

