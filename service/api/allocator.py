"""glibc malloc tuning for a server of large, short-lived buffers.

A 4096-row lookup reply is 1 MiB, a push body as large. glibc serves blocks above its mmap
threshold (128 KiB at start, raised as such blocks are freed) with fresh pages from the kernel,
and gives them back on free: while one reply is still being sent the next gets new pages, and
every one of its 256 pages faults on first touch, several times the cost of building the reply
from memory the heap kept (docs/performance.md has the figures). Fixing the mmap threshold (and
the trim threshold at twice it, glibc's own ratio) keeps such blocks in the heap.

    tune_malloc(32 * 2**20)   # once per process; a no-op where libc is not glibc
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger("service")

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3


def tune_malloc(mmap_threshold_bytes: int) -> bool:
    """Serve blocks below mmap_threshold_bytes from the heap and keep up to twice that freed
    at its top. Returns whether glibc took the setting (False: not glibc, or 0 asked)."""
    if mmap_threshold_bytes <= 0:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt: Callable[[int, int], int] = libc.mallopt  # int mallopt(int param, int value)
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    taken = mallopt(M_MMAP_THRESHOLD, mmap_threshold_bytes) == 1
    taken = mallopt(M_TRIM_THRESHOLD, 2 * mmap_threshold_bytes) == 1 and taken
    if not taken:
        log.warning("mallopt refused an mmap threshold of %d bytes", mmap_threshold_bytes)
    return taken
