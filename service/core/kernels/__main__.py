"""`python -m service.core.kernels [numba|numpy]`: compile every kernel now (or load it from
numba's cache), the dynamic tables' too, run every table operation once (service.core.warm_up)
and say what was done.
The Docker image runs it at build time, so that the service finds its kernels in the cache
(NUMBA_CACHE_DIR) and compiles nothing at start."""

from __future__ import annotations

import sys

from service.core.kernels.backend import DEFAULT, use
from service.core.warm_up import warm_up

if __name__ == "__main__":
    ready = use(sys.argv[1] if len(sys.argv) > 1 else DEFAULT)
    warm_up(dynamic_wait=None)  # to the end: the dynamic tables' kernels are in the cache too
    print(ready)
