"""The one switch between compiled kernels and their numpy twins, and what each kernel is.

A `Kernel` is one hot loop of the core in two implementations that give bit-identical results:

- `loop`: plain Python over arrays (valid, if slow, Python), which numba compiles ahead of use
  for the argument types listed in `signatures`: no other types are ever compiled, so no request
  can trigger a compilation, and an unforeseen argument type is a TypeError a test catches;
- `numpy`: the same result with numpy calls, always available.

`use("numba" | "numpy")` chooses for the whole process (the service calls it once, from
create_app, with its EMBED_KERNELS setting). Choosing numba compiles every kernel there and then,
or loads it from numba's on-disk cache: compile time is paid before the service reports ready,
never by a request. A kernel defined after the choice (a module imported later) is compiled when
it is defined. Without a choice, the first call of any kernel chooses DEFAULT.

numba options, the same for every kernel: nogil (a push in the thread pool does not hold the
event loop's GIL), error_model="numpy" (x / 0.0 is inf, as in numpy, not ZeroDivisionError),
no fastmath (additions in the written order, no fused multiply-add: bit-identical to numpy),
cache=True (in __pycache__ beside this package, or NUMBA_CACHE_DIR; where neither is writable,
compiled in memory at every start).

Adding a kernel (the pattern every module of this package follows):

    def _count_loop(ids, out):                      # plain Python loops: what numba compiles
        for j in range(ids.shape[0]):
            out[ids[j]] += 1

    def _count_numpy(ids, out):                     # the same result, numpy only
        np.add.at(out, ids, 1)

    count = Kernel("count", numpy=_count_numpy, loop=_count_loop,
                   signatures=lambda t: [t.void(t.int64[::1], t.int64[::1])])
    count(ids, out)                                 # runs the selected implementation

Choosing numba also calls every compiled signature once on one-row arguments (see _warm_up): a
kernel must accept arrays of one row of zeros, indices 0 and integer scalars 1.

`around(compiled)` wraps the compiled loop when the numba side needs numpy work between loops (a
sort); with `loop` a tuple of functions and `signatures` returning a tuple of lists, each is
compiled and `around(*compiled)` combines them.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

BACKENDS = ("numba", "numpy")
DEFAULT = "numba"
JIT_OPTIONS: dict[str, Any] = {"nogil": True, "error_model": "numpy", "fastmath": False}

log = logging.getLogger("service.kernels")
_KERNELS: list[Kernel] = []
_lock = threading.RLock()
_selected: list[str] = []  # the backend in use, once chosen ([] before)


class Kernel:
    """One operation with a numba and a numpy implementation; calling it runs the selected one."""

    def __init__(
        self,
        name: str,
        *,
        numpy: Callable[..., Any],
        loop: Callable[..., Any] | tuple[Callable[..., Any], ...],
        signatures: Callable[[ModuleType], Any],
        around: Callable[..., Callable[..., Any]] | None = None,
    ) -> None:
        self.name = name
        self.numpy = numpy
        self.loop = loop  # one function, or several that `around` combines
        self.signatures = signatures  # numba.types -> a list of signatures (a tuple of lists)
        self.around = around
        self._compiled: Any = None
        self._run: Callable[..., Any] | None = None
        with _lock:
            _KERNELS.append(self)
            if _selected:
                self._bind(_selected[0])

    def __call__(self, *args: Any) -> Any:
        run = self._run
        if run is None:
            use(DEFAULT)
            run = self._run
            assert run is not None
        return run(*args)

    @property
    def compiled(self) -> Any:
        """The numba dispatcher, or a tuple of them for several loops (compiled for every
        signature, or loaded from the cache)."""
        if self._compiled is None:
            from numba import types

            wanted = self.signatures(types)
            if isinstance(self.loop, tuple):
                self._compiled = tuple(_jit(loop, signatures)
                                       for loop, signatures in zip(self.loop, wanted, strict=True))
            else:
                self._compiled = _jit(self.loop, wanted)
        return self._compiled

    def implementation(self, backend: str) -> Callable[..., Any]:
        """The callable that runs this kernel on `backend` (tests compare the two)."""
        if backend == "numpy":
            return self.numpy
        compiled = self.compiled
        if self.around is None:
            kernel: Callable[..., Any] = compiled
            return kernel
        return self.around(*compiled) if isinstance(compiled, tuple) else self.around(compiled)

    @property
    def signature_count(self) -> int:
        """Signatures compiled for the numba backend (all loops)."""
        compiled = self.compiled if isinstance(self.compiled, tuple) else (self.compiled,)
        return sum(len(dispatcher.signatures) for dispatcher in compiled)

    def _bind(self, backend: str) -> None:
        self._run = self.implementation(backend)
        if backend == "numba":
            compiled = self.compiled if isinstance(self.compiled, tuple) else (self.compiled,)
            for dispatcher in compiled:
                _warm_up(dispatcher)


@dataclass(frozen=True)
class Ready:
    """What use() did: the backend, how many kernels, the seconds it took, and how many
    signatures numba compiled (the rest it loaded from its cache; 0 for numpy)."""

    backend: str
    kernels: int
    seconds: float
    signatures: int = 0
    compiled: int = 0

    def __str__(self) -> str:
        text = f"kernels: {self.backend}, {self.kernels} kernels ready in {self.seconds:.2f} s"
        if self.backend == "numba":
            text += (f" ({self.compiled} of {self.signatures} signatures compiled, the rest "
                     "loaded from numba's cache)")
        return text


def use(backend: str) -> Ready:
    """Run every kernel on `backend` ("numba" or "numpy") from now on, in the whole process;
    with numba, compile (or load from the cache) every kernel now. Returns what it did (no
    work, 0.0 s, when that backend was already in use)."""
    if backend not in BACKENDS:
        raise ValueError(f"kernels must be one of {list(BACKENDS)}, got {backend!r}")
    with _lock:
        if _selected == [backend]:
            return Ready(backend, len(_KERNELS), 0.0)
        started = time.perf_counter()
        with _counting_compilations(backend) as compiled:
            for kernel in _KERNELS:
                kernel._bind(backend)
        _selected[:] = [backend]
        ready = Ready(backend, len(_KERNELS), time.perf_counter() - started,
                      sum(kernel.signature_count for kernel in _KERNELS) if backend == "numba"
                      else 0, len(compiled))
    log.info("%s", ready)
    return ready


@contextmanager
def _counting_compilations(backend: str) -> Iterator[list[Any]]:
    """A list that ends up holding one entry per signature numba compiled in the block."""
    if backend != "numba":
        yield []
        return
    from numba.core import event

    started: list[Any] = []
    with event.install_recorder("numba:compile") as recorder:
        yield started
    started.extend(entry for entry in recorder.buffer
                   if entry[1].status == event.EventStatus.START)


def selected() -> str | None:
    """The backend in use, or None before the first use() (or the first kernel call)."""
    return _selected[0] if _selected else None


def kernels() -> list[Kernel]:
    """Every kernel defined so far."""
    return list(_KERNELS)


def _warm_up(dispatcher: Any) -> None:
    """Call each compiled signature once, so that the first request does not pay numba's
    first-call work (matching argument types to signatures: milliseconds). The arguments are
    one-row arrays of zeros (indices 0), scalars 1 (integers), 0 (floats) or False: every kernel
    must accept them. A parameter declared readonly is called with a writable and a readonly
    array, as requests pass both (arrays parsed from a body are readonly)."""
    from numba import types

    for signature in dispatcher.signatures:
        choices: list[list[Any]] = []
        for kind in signature:
            if isinstance(kind, types.Array):
                array = np.zeros((1,) * kind.ndim, dtype=np.dtype(str(kind.dtype)))
                frozen = array.copy()
                frozen.setflags(write=False)
                choices.append([array, frozen] if not kind.mutable else [array])
            elif isinstance(kind, types.Boolean):
                choices.append([False])
            elif isinstance(kind, types.Integer):
                choices.append([1])
            else:
                choices.append([np.dtype(str(kind)).type(0)])
        for arguments in itertools.product(*choices):
            dispatcher(*(a.copy() if isinstance(a, np.ndarray) and a.flags.writeable else a
                         for a in arguments))


def _jit(loop: Callable[..., Any], wanted: list[Any]) -> Any:
    """numba.njit(wanted)(loop): compiled now, for those signatures only."""
    import numba

    try:
        return numba.njit(wanted, cache=True, **JIT_OPTIONS)(loop)
    except RuntimeError as error:  # "cannot cache function ...": no writable cache directory
        if "cannot cache" not in str(error):
            raise
        log.warning("kernels: numba cannot cache %s (%s); set NUMBA_CACHE_DIR to a writable "
                    "directory to skip compiling at every start", loop.__name__, error)
        return numba.njit(wanted, cache=False, **JIT_OPTIONS)(loop)


def c_array(values: Any, dtype: Any, *, writable: bool = False) -> np.ndarray:
    """`values` as the kernels take arrays: C-contiguous, aligned, native `dtype`, and writable
    if asked (an array the kernels update in place). No copy when it already is; a body's .npy
    with an odd header or another byte order, or a readonly array asked writable, is copied.
    A value beyond `dtype`'s range becomes inf, without numpy's warning: the caller checks."""
    if (isinstance(values, np.ndarray) and values.dtype == dtype and values.flags.c_contiguous
            and values.flags.aligned and (values.flags.writeable or not writable)):
        return values
    with np.errstate(over="ignore"):
        return np.require(values, dtype=dtype,
                          requirements=("C", "A", "W") if writable else ("C", "A"))


def array(types: ModuleType, dtype: str, ndim: int, *, readonly: bool = False) -> Any:
    """The numba type of a C-contiguous array (readonly: also accepts writable arrays)."""
    return types.Array(getattr(types, dtype), ndim, "C", readonly=readonly)
