"""The default memory budget follows a container's limit, cgroup v1 or v2."""

from __future__ import annotations

import io
import os

import pytest

from service.core import registry

PHYSICAL = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def fake_files(monkeypatch: pytest.MonkeyPatch, files: dict[str, str]) -> None:
    def fake_open(path: str, *args: object, **kwargs: object) -> io.StringIO:
        if path not in files:
            raise FileNotFoundError(path)
        return io.StringIO(files[path])

    monkeypatch.setattr(registry, "open", fake_open, raising=False)


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"/sys/fs/cgroup/memory.max": "536870912\n"}, 536870912),
        ({"/sys/fs/cgroup/memory.max": "max\n"}, PHYSICAL),
        ({"/sys/fs/cgroup/memory/memory.limit_in_bytes": "536870912\n"}, 536870912),
        ({"/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n"}, PHYSICAL),
        ({}, PHYSICAL),
    ],
    ids=["v2-limit", "v2-max", "v1-limit", "v1-unlimited", "no-cgroup"],
)
def test_total_memory_reads_the_container_limit(
    monkeypatch: pytest.MonkeyPatch, files: dict[str, str], expected: int
) -> None:
    fake_files(monkeypatch, files)
    assert registry.total_memory_bytes() == expected
