"""Pay the first-call costs of the core at start, not in the first requests.

The first push or apply of a process costs milliseconds more than the next ones: numba matches
argument types to compiled signatures on a kernel's first call with them, and numpy sets up
some of its functions on first use. `warm_up()` runs every operation once, on small throwaway
tables of each dtype and optimizer, with readonly inputs as a request's parsed body gives them,
on whichever kernel backend is in use. The service calls it at start (create_app), after
choosing the backend. It also starts the dynamic tables' warm-up (service.core.dynamic.warmup),
which compiles their kernels in a thread: `warm_up(dynamic_wait)` waits for it that long (None:
until it is done) and says whether it is.
"""

from __future__ import annotations

import numpy as np

from service.core import kernels
from service.core.dynamic import warmup as dynamic_warmup
from service.core.dynamic.warmup import TABLE, readonly
from service.core.initializers import InitSpec
from service.core.optimizers import OPTIMIZERS, make_optimizer
from service.core.table import DTYPES, EmbeddingTable

_warmed: set[str | None] = set()  # the kernel backends warmed up in this process


def warm_up(dynamic_wait: float | None = None) -> bool:
    """Every table operation once, for every dtype and optimizer (a few milliseconds); once a
    process for each kernel backend (the costs it pays are the process's). Then the dynamic
    tables' warm-up, waited for `dynamic_wait` seconds (None: to the end); whether it ended."""
    if kernels.selected() not in _warmed:
        _warm_fixed_tables()
    return dynamic_warmup.wait(dynamic_wait)


def _warm_fixed_tables() -> None:
    _warmed.add(kernels.selected())
    for dtype in DTYPES:
        for kind in OPTIMIZERS:
            table = EmbeddingTable(TABLE, 4, 2, make_optimizer({"kind": kind}), dtype=dtype,
                                   init=InitSpec(kind="zeros"))
            ids = readonly(np.array([0, 3, 3]))  # (3,)
            grads = readonly(np.full((3, 2), 0.5, dtype=dtype))  # (3, 2)
            table.push(ids, grads)
            table.push(ids, grads, apply=True)
            table.apply(average=True)
            table.lookup(ids)
