"""The documentation site (mkdocs.yml, docs/): it builds with `mkdocs build --strict` while every
network connection is refused, its pages load nothing from another host, every page is in the
navigation, every image in docs/ is shown somewhere, and every repository path that the docs and
the README name exists (a moved module makes its docs fail here, not mislead a reader)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

DOCS = ROOT / "docs"
# Run before mkdocs in the build's process: any attempt to reach the network raises. (The
# theme's fonts are off and no plugin fetches anything; this proves it on every run.)
NETWORK_REFUSED = """
import socket

def refuse(*args, **kwargs):
    raise OSError("the docs build tried to reach the network")

socket.socket.connect = socket.socket.connect_ex = refuse
socket.create_connection = socket.getaddrinfo = refuse
"""
BUILD = NETWORK_REFUSED + """
import sys
from mkdocs.__main__ import cli
cli(sys.argv[1:])
"""
# Where a built page would load something from: an element's src, a <link>'s href, a CSS url().
RESOURCE = re.compile(r"""<(?:script|img|iframe|source|audio|video|embed)\b[^>]*?"""
                      r"""\bsrc=["']([^"']+)|<link\b[^>]*?\bhref=["']([^"']+)"""
                      r"""|url\(\s*["']?([^"')]+)""")
# A path of the repository named in the docs: `service/api/main.py`, tests/..., bench/results/
REPO_PATH = re.compile(r"(?<![\w/.~-])((?:service|tests|bench|scripts|examples|docs|\.ci)/"
                       r"[\w./-]*[\w/])(?![\w{*<])")


def build_offline(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BUILD, *arguments], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, timeout=120,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site_dir = tmp_path_factory.mktemp("site")
    done = build_offline("build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
                         "--site-dir", str(site_dir))
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    return site_dir


def nav_pages() -> list[str]:
    """The Markdown files named in mkdocs.yml's nav, in order."""
    def walk(entries: list[object]) -> list[str]:
        pages: list[str] = []
        for entry in entries:
            if isinstance(entry, str):
                pages.append(entry)
            elif isinstance(entry, dict):
                for value in entry.values():
                    pages.extend(walk(value) if isinstance(value, list) else [value])
        return pages
    return walk(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])


def test_the_build_would_fail_if_it_reached_the_network() -> None:
    reach = NETWORK_REFUSED + "import urllib.request\nurllib.request.urlopen('http://127.0.0.1:9')"
    done = subprocess.run([sys.executable, "-c", reach], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0
    assert "the docs build tried to reach the network" in done.stderr


def test_every_page_is_in_the_navigation_and_built(site: Path) -> None:
    pages = nav_pages()
    assert sorted(pages) == sorted(path.name for path in DOCS.glob("*.md"))
    for page in pages:
        built = site / f"{page[:-3]}.html"
        assert built.is_file(), f"{page} was not built"
    assert (site / "bench" / "results" / "latest.png").is_file()  # the benchmark's plot


def test_no_built_page_loads_anything_from_another_host(site: Path) -> None:
    outside = {}
    for path in [*site.rglob("*.html"), *site.rglob("*.css")]:
        for match in RESOURCE.finditer(path.read_text(errors="replace")):
            target = next(group for group in match.groups() if group)
            if re.match(r"(?:[a-z]+:)?//", target, re.IGNORECASE) and not target.startswith(
                "data:"
            ):
                outside.setdefault(str(path.relative_to(site)), []).append(target)
    assert outside == {}


def test_every_image_in_the_docs_is_shown() -> None:
    pages = "\n".join(path.read_text() for path in DOCS.glob("*.md"))
    for image in DOCS.glob("*.png"):
        assert f"]({image.name})" in pages, f"docs/{image.name} is shown on no page"


def test_every_repository_path_the_docs_name_exists() -> None:
    missing = {}
    for document in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        for path in REPO_PATH.findall(document.read_text()):
            if not (ROOT / path).exists():
                missing.setdefault(document.name, []).append(path)
    assert missing == {}


def test_the_path_check_sees_a_moved_module() -> None:
    text = "served by `service/api/gone.py`, see bench/results/ and service/api/main.py."
    assert REPO_PATH.findall(text) == ["service/api/gone.py", "bench/results/",
                                       "service/api/main.py"]
