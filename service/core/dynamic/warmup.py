"""Compile (or load from numba's cache) every dynamic-table kernel, and run every dynamic-table
operation once, before any request uses one.

numba compiles a kernel at its first call with each argument type; `cache=True` stores the
machine code, so later processes only load it (a fraction of a second). Without a cache,
compiling them takes seconds: more than the service's start-up allows on top of the core's
own kernels (service.core.kernels). So the service starts this warm-up in a thread (`start()`)
and reports ready after a short wait for it (`wait(grace)`: long enough when the cache is
there); every DynamicTable waits for it when made (`ensure_ready()`, in its constructor), so a
request that creates or restores a dynamic table while the kernels are still compiling waits
for them, and none compiles anything itself. Outside the service (no `start()`), the first
DynamicTable of a process runs the warm-up in its own thread, before it is made.

When numba's cache lacks the kernels, the compiling is done by a child process
(`python -m service.core.dynamic.warmup`) writing the cache, and this process then only loads
it: numba's compiler holds the GIL for much of its work, and in this process it would slow
every request served meanwhile; a child takes the other core instead.

    warmup.start(); warmup.wait(1.0)       # what service.core.warm_up does at start
    warmup.ensure_ready()                  # what DynamicTable() does
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from service.core.dynamic.admission import AdmissionCounter
from service.core.dynamic.backend import check_backend, selected
from service.core.dynamic.eviction import EvictionTracker
from service.core.dynamic.initial_rows import initial_rows
from service.core.dynamic.keyindex import KeyIndex
from service.core.initializers import InitSpec

log = logging.getLogger("service.kernels")
TABLE = "warm-up"  # the name of the throwaway tables
_lock = threading.Lock()
_runs: dict[str, threading.Thread] = {}  # backend -> its warm-up thread
_done: dict[str, threading.Event] = {}
_inside = threading.local()  # set in a warm-up thread: its own tables do not wait for it


def readonly(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def warm_up(backend: str | None = None) -> None:
    """Run every building block's kernels once on a few keys, with each argument type."""
    backend = check_backend(backend)
    keys = np.array([3, -1, 2**62, 5], dtype=np.int64)
    for keys_in in (keys, readonly(keys.copy())):
        index = KeyIndex(backend)
        index.get_or_insert(keys_in)
        index.lookup(keys_in)
        index.delete(keys_in[:1])
    KeyIndex.from_arrays(keys[1:], backend=backend)
    index = KeyIndex.from_arrays(keys, backend=backend)
    for policy, ttl in (("lru", 1), ("lfu", None), ("lfu", 1)):
        tracker = EvictionTracker(index, policy, capacity=1, ttl_steps=ttl)  # type: ignore[arg-type]
        tracker.touch(index.lookup(keys[1:]), 1)
        tracker.remove(index.lookup(keys[1:2]))
        tracker.evict(2)
    AdmissionCounter(admit_after=2, max_candidates=2, backend=backend).record(keys)
    for kind in ("normal", "uniform"):
        for dtype in (np.float32, np.float64):
            for keys_in in (keys, readonly(keys.copy())):
                initial_rows(keys_in, 3, np.dtype(dtype), InitSpec(kind), 0, backend)


def _dispatchers() -> list[object]:
    """Every numba kernel of this package."""
    import importlib
    import pkgutil

    import service.core.dynamic as package

    found = []
    for module_info in pkgutil.iter_modules(package.__path__):
        if module_info.name in ("table_warmup", "snapshots", "table", "capture"):
            continue  # no kernels there (and importing them here would be circular)
        module = importlib.import_module(f"{package.__name__}.{module_info.name}")
        found += [value for value in vars(module).values()
                  if hasattr(value, "overloads") and hasattr(value, "py_func")]
    return found


def cached() -> bool:
    """Whether numba's cache holds compiled code of every kernel (its index files exist; the
    helpers inlined into the kernels have none of their own)."""
    try:
        return all(os.path.exists(kernel._cache._cache_file._index_path)  # type: ignore[attr-defined]
                   for kernel in _dispatchers()
                   if kernel.targetoptions.get("inline") != "always")  # type: ignore[attr-defined]
    except AttributeError:  # another numba's cache layout: as if not cached
        return False


def _compile_in_a_child(backend: str) -> None:
    """Fill numba's cache from a child process (best effort: on failure, this process
    compiles what is missing)."""
    root = str(Path(__file__).resolve().parents[3])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    try:
        subprocess.run([sys.executable, "-m", "service.core.dynamic.warmup", backend], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600,
                       check=True)
    except (OSError, subprocess.SubprocessError) as error:
        log.warning("dynamic tables: compiling in a child process failed (%s); compiling here",
                    error)


def _run(backend: str) -> None:
    _inside.active = True
    started = time.perf_counter()
    how = "loaded from numba's cache"
    try:
        if not cached():
            how = "compiled by a child process into numba's cache"
            _compile_in_a_child(backend)
        warm_up(backend)
        from service.core.dynamic.table_warmup import run_every_operation

        run_every_operation()
    except Exception:  # pragma: no cover - logged; the kernels then compile where first used
        log.exception("dynamic tables: warm-up failed")
    finally:
        _done[backend].set()
    log.info("dynamic tables: kernels ready in %.2f s (%s, %s)", time.perf_counter() - started,
             backend, how)


def start() -> threading.Event:
    """Start the warm-up for the selected backend in a thread (once per backend and process);
    the event is set when it is done."""
    backend = selected()
    with _lock:
        if backend not in _runs:
            _done[backend] = threading.Event()
            _runs[backend] = threading.Thread(target=_run, args=(backend,), daemon=True,
                                              name=f"dynamic-warm-up-{backend}")
            _runs[backend].start()
        return _done[backend]


def wait(timeout: float | None = None) -> bool:
    """Wait for the selected backend's warm-up (started if it was not); whether it is done."""
    return start().wait(timeout)


def ensure_ready() -> None:
    """Return once the dynamic-table kernels of the selected backend are compiled and warm
    (at once inside the warm-up itself)."""
    if getattr(_inside, "active", False):
        return
    wait()


if __name__ == "__main__":  # the child process of _compile_in_a_child: fills numba's cache
    warm_up(sys.argv[1] if len(sys.argv) > 1 else None)
