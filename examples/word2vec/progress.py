"""A progress bar: tqdm when it is installed (the `examples` extra), else a plain line per bar."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Bar(Protocol):
    def update(self, n: int = 1) -> object: ...


class _PlainBar:
    def __init__(self, total: int, description: str) -> None:
        self.total, self.description, self.done = total, description, 0

    def update(self, n: int = 1) -> None:
        self.done += n

    def close(self) -> None:
        print(f"{self.description}: {self.done}/{self.total} batches", file=sys.stderr,
              flush=True)


@contextmanager
def progress_bar(total: int, description: str, enabled: bool = True) -> Iterator[Bar]:
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    if tqdm is None:
        plain = _PlainBar(total, description)
        yield plain
        if enabled:
            plain.close()
        return
    bar = tqdm(total=total, desc=description, unit="batch", disable=not enabled, leave=False)
    try:
        yield bar
    finally:
        bar.close()
