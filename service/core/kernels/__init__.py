"""The core's hot loops, compiled with numba, each with a numpy twin giving the same bits.

One module per idea, one switch (service.core.kernels.backend):

- scatter:  scatter_add (np.add.at in arrival order), first_non_finite_row
- distinct: sorted_distinct (np.unique with the inverse), search_sorted (np.searchsorted)
- steps:    the optimizer steps (sgd, momentum, adagrad, adam) on an arbitrary set of rows,
            refused whole when a new value would not be finite

    from service.core import kernels
    kernels.use("numba")          # or "numpy"; compiles (or loads from the cache) every kernel
    kernels.scatter_add(sums, slot_of_id, grads, False)
    kernels.c_array(ids, np.int64)  # an array as kernels take them (C order, aligned, native)

`use()` is the one switch of the process: the service calls it from create_app with its
EMBED_KERNELS setting (then service.core.warm_up runs every table operation once), and the
dynamic tables' kernels (service.core.dynamic.backend) follow the same choice. A new kernel is a
`Kernel` in a module of this package, imported below so that `use()` compiles and warms it
before the service reports ready (see backend.py's docstring); `python -m service.core.kernels`
compiles every kernel into numba's cache (the Docker build does). tests/core/test_kernels.py
checks that both backends give bit-identical results and that nothing compiles after use().
"""

from service.core.kernels.backend import (
    BACKENDS,
    DEFAULT,
    Kernel,
    Ready,
    c_array,
    kernels,
    selected,
    use,
)
from service.core.kernels.distinct import search_sorted, sorted_distinct
from service.core.kernels.scatter import first_non_finite_row, scatter_add
from service.core.kernels.steps import ADAGRAD, ADAM, MOMENTUM, SGD, Step

__all__ = [
    "ADAGRAD",
    "ADAM",
    "BACKENDS",
    "DEFAULT",
    "MOMENTUM",
    "SGD",
    "Kernel",
    "Ready",
    "Step",
    "c_array",
    "first_non_finite_row",
    "kernels",
    "scatter_add",
    "search_sorted",
    "selected",
    "sorted_distinct",
    "use",
]
