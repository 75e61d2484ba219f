"""Which implementation runs the dynamic-table kernels: compiled (numba) or plain numpy.

One module-level choice, read when a structure is made (a KeyIndex keeps the backend it was
made with). `numba` is the default where numba imports; `numpy` runs everywhere and gives
identical results (the tests hold both to the same oracle). The setting EMBED_KERNELS of the
compiled-kernels work is meant to call `set_backend` at start-up; until then the environment
variable is read here once, so both modes can already be tried:

    from service.core.dynamic import backend
    backend.set_backend("numpy")     # every KeyIndex made after this runs numpy code
"""

from __future__ import annotations

import os
from collections.abc import Callable
from types import ModuleType
from typing import Any, Literal, TypeVar, cast

Backend = Literal["numba", "numpy"]
BACKENDS: tuple[Backend, ...] = ("numba", "numpy")

numba: ModuleType | None
try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency; this keeps the numpy mode alive
    numba = None
NUMBA_AVAILABLE = numba is not None

F = TypeVar("F", bound=Callable[..., Any])


def kernel(function: F) -> F:
    """Compile `function` with numba (nogil: other threads, e.g. the event loop, keep running;
    cache: compiled once per machine, not per process). Without numba, the plain function."""
    if numba is None:  # pragma: no cover
        return function
    return cast(F, numba.njit(nogil=True, cache=True)(function))


def inline_kernel(function: F) -> F:
    """A kernel helper, inlined into the kernels that call it (numba's inline="always"):
    an ordinary call between compiled functions increments and decrements the reference
    count of every array argument, which costs more than these helpers' own work."""
    if numba is None:  # pragma: no cover
        return function
    return cast(F, numba.njit(nogil=True, cache=True, inline="always")(function))


def _initial_backend() -> Backend:
    wanted = os.environ.get("EMBED_KERNELS", "numba")
    if wanted == "numpy" or not NUMBA_AVAILABLE:
        return "numpy"
    return "numba"


_selected: Backend = _initial_backend()


def selected() -> Backend:
    """The backend new structures are made with."""
    return _selected


def set_backend(name: str) -> None:
    """Select the backend for structures made from now on; ValueError names a bad value."""
    global _selected
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    if name == "numba" and not NUMBA_AVAILABLE:
        raise ValueError("backend 'numba' was asked for, but numba is not installed")
    _selected = name  # type: ignore[assignment]


def check_backend(name: str | None) -> Backend:
    """`name` validated, or the selected backend when None."""
    if name is None:
        return _selected
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    if name == "numba" and not NUMBA_AVAILABLE:
        raise ValueError("backend 'numba' was asked for, but numba is not installed")
    return name  # type: ignore[return-value]
