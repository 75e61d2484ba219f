"""The 64-bit mixer every dynamic-table structure hashes keys with.

splitmix64's finalizer (Steele, Lea, Flood 2014; the murmur3 fmix64 shape with better
constants): a bijection of 64-bit words whose every output bit depends on every input bit.
Being a bijection, distinct keys never collide before the hash table folds them into buckets,
and `mix64(state + k * GOLDEN)` for k = 1, 2, ... is the splitmix64 stream, a counter-based
generator: the k-th number of a stream is computed without the k - 1 before it.

Two spellings with the same results: `mix64` on numpy uint64 arrays (wrapping arithmetic, no
warnings) and `mix64_scalar`, a numba kernel helper for one word.
"""

from __future__ import annotations

import numpy as np

from service.core.dynamic.backend import kernel

GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # 2^64 / golden ratio: splitmix64's increment
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)


def mix64(words: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer of each uint64 in `words` (a new array of the same shape)."""
    z = np.array(words, dtype=np.uint64, copy=True)  # (...) a copy: the input stays
    z ^= z >> _S30
    z *= _M1
    z ^= z >> _S27
    z *= _M2
    z ^= z >> _S31
    return z


@kernel
def mix64_scalar(z: np.uint64) -> np.uint64:
    """The same function of one uint64, for numba kernels."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))
