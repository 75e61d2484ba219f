"""Which implementation runs the dynamic-table kernels: compiled (numba) or plain numpy.

The choice is the core's one switch, service.core.kernels.use() (the service calls it from
create_app with its EMBED_KERNELS setting); it is read when a structure is made (a KeyIndex
keeps the backend it was made with). Before any choice, the default is the core's
(kernels.DEFAULT, numba) where numba imports. `numpy` runs everywhere and gives identical
results (the tests hold both to the same oracle):

    from service.core import kernels
    kernels.use("numpy")     # every KeyIndex made after this runs numpy code (and the core's
                             # kernels too); set_backend("numpy") below says the same
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any, Literal, TypeVar, cast

from service.core.kernels import backend as kernels

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


def arithmetic_kernel(function: F) -> F:
    """A kernel of floating-point arithmetic, compiled with numpy's error model (x / 0.0 is
    inf, as in numpy, with no check that raises): without the checks' branches LLVM can
    vectorize its loops. Same results as the plain kernel wherever no error is possible."""
    if numba is None:  # pragma: no cover
        return function
    return cast(F, numba.njit(nogil=True, cache=True, error_model="numpy")(function))


def inline_arithmetic_kernel(function: F) -> F:
    """arithmetic_kernel, inlined into the kernels that call it."""
    if numba is None:  # pragma: no cover
        return function
    return cast(F, numba.njit(nogil=True, cache=True, inline="always",
                              error_model="numpy")(function))


def inline_kernel(function: F) -> F:
    """A kernel helper, inlined into the kernels that call it (numba's inline="always"):
    an ordinary call between compiled functions increments and decrements the reference
    count of every array argument, which costs more than these helpers' own work."""
    if numba is None:  # pragma: no cover
        return function
    return cast(F, numba.njit(nogil=True, cache=True, inline="always")(function))


def selected() -> Backend:
    """The backend new structures are made with: the core's choice (kernels.use)."""
    chosen = kernels.selected() or kernels.DEFAULT
    return "numba" if chosen == "numba" and NUMBA_AVAILABLE else "numpy"


def set_backend(name: str) -> None:
    """Select the backend for structures made from now on, and for the core's kernels (it is
    kernels.use); ValueError names a bad value."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    if name == "numba" and not NUMBA_AVAILABLE:
        raise ValueError("backend 'numba' was asked for, but numba is not installed")
    kernels.use(name)


def check_backend(name: str | None) -> Backend:
    """`name` validated, or the selected backend when None."""
    if name is None:
        return selected()
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    if name == "numba" and not NUMBA_AVAILABLE:
        raise ValueError("backend 'numba' was asked for, but numba is not installed")
    return name
