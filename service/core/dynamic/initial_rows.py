"""The initial row of a key: a pure function of (table seed, init spec, key), for any key.

A dynamic table has no matrix to draw from a seeded generator in order: a key's row must be
the same whichever keys came before it, in every process, after every restart. So each row is
computed from its key alone, with a counter-based generator:

    stream   = mix64(key ^ seed_state(seed))         one 64-bit state per (seed, key)
    word[c]  = mix64(stream + (c + 1) * GOLDEN)      the splitmix64 stream: column c's bits
    uniform  = low + (high - low) * u,   u = (word >> 11) / 2^53 in [0, 1)
    normal   = std * Box-Muller(word[2i], word[2i+1]) for the column pair (2i, 2i+1)

Rows are computed in float64 and rounded once to the table's dtype, so a float32 table's rows
are its float64 twin's, rounded. The logarithm, sine and cosine of Box-Muller are written here
with + - * / sqrt and exact scaling only (a series on a reduced argument, good to a few units in
the last place of float64): those operations are correctly rounded by IEEE 754 on every CPU,
while libm's and numpy's own log/sin/cos may differ by an ulp between CPUs (SIMD variants),
which would break "the same row after a restart on another machine". Every normal value is
finite and below 8.6 standard deviations (u1 >= 2^-53). The compiled version
(initial_rows_numba, the default where numba imports) gives the same bytes in one pass.

    rows = initial_rows(np.array([42, -7]), 64, np.dtype(np.float32), InitSpec(), seed=0)
"""

from __future__ import annotations

import functools
import math

import numpy as np

from service.core.dynamic import initial_rows_numba
from service.core.dynamic.backend import check_backend
from service.core.dynamic.hashing import GOLDEN, mix64
from service.core.dynamic.keyindex import as_keys
from service.core.dynamic.series import COS_SERIES, LOG_SERIES, SIN_SERIES
from service.core.initializers import InitSpec

_S11 = np.uint64(11)
_TWO_POW_MINUS_53 = 2.0**-53
_LN2 = math.log(2.0)
_HALF_PI = math.pi / 2
_SQRT_HALF = math.sqrt(0.5)


@functools.lru_cache(maxsize=256)  # a table asks for its seed's state at every lookup
def seed_state(seed: int) -> np.uint64:
    """A 64-bit state from a seed >= 0 of any size: its 64-bit limbs, low first, folded as
    state = mix64((state ^ limb) + GOLDEN), so seeds of different lengths differ too."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    state = np.zeros(1, dtype=np.uint64)
    while True:
        state = mix64((state ^ np.uint64(seed & (2**64 - 1))) + GOLDEN)
        seed >>= 64
        if seed == 0:
            first: np.uint64 = state[0]
            return first


def column_words(keys: np.ndarray, columns: int, seed: int) -> np.ndarray:
    """(n, columns) uint64: word c of each key's stream."""
    stream = mix64(as_keys(keys).view(np.uint64) ^ seed_state(seed))  # (n,)
    counters = np.arange(1, columns + 1, dtype=np.uint64) * GOLDEN  # (columns,)
    return mix64(stream[:, None] + counters)  # (n, columns)


def unit_uniform(words: np.ndarray) -> np.ndarray:
    """Float64 in [0, 1): the top 53 bits of each word, scaled exactly."""
    return (words >> _S11).astype(np.float64) * _TWO_POW_MINUS_53


def _horner(x: np.ndarray, coefficients: tuple[float, ...]) -> np.ndarray:
    """sum(c[k] x^k) by Horner's rule from the highest power, each step rounded."""
    result = np.full_like(x, coefficients[-1])
    for c in reversed(coefficients[:-1]):
        result *= x
        result += c
    return result


def portable_log(x: np.ndarray) -> np.ndarray:
    """ln(x) for x > 0, float64, from exact scaling and + - * / only."""
    mantissa, exponent = np.frexp(x)  # x = mantissa * 2^exponent, mantissa in [0.5, 1)
    small = mantissa < _SQRT_HALF
    mantissa = np.where(small, mantissa * 2.0, mantissa)  # in [0.707, 1.414)
    exponent = exponent - small
    s = (mantissa - 1.0) / (mantissa + 1.0)
    log: np.ndarray = 2.0 * s * _horner(s * s, LOG_SERIES) + exponent * _LN2
    return log


def portable_sincos_turns(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sin(2 pi u), cos(2 pi u)) for float64 u, from + - * only: u is split exactly into a
    quarter turn q and a remainder r in [-1/2, 1/2] quarter, where the Taylor series converge."""
    quarters = u * 4.0
    q = np.rint(quarters)
    phi = (quarters - q) * _HALF_PI  # in [-pi/4, pi/4]
    phi2 = phi * phi
    sin_phi = phi * _horner(phi2, SIN_SERIES)
    cos_phi = _horner(phi2, COS_SERIES)
    q = q.astype(np.int64) % 4
    sin_u = np.choose(q, [sin_phi, cos_phi, -sin_phi, -cos_phi])
    cos_u = np.choose(q, [cos_phi, -sin_phi, -cos_phi, sin_phi])
    return sin_u, cos_u


def standard_normal(keys: np.ndarray, columns: int, seed: int) -> np.ndarray:
    """(n, columns) float64 standard normal values: Box-Muller on word pairs."""
    pairs = (columns + 1) // 2
    words = column_words(keys, 2 * pairs, seed)  # (n, 2 * pairs)
    u1 = unit_uniform(words[:, 0::2]) + _TWO_POW_MINUS_53  # (n, pairs) in (0, 1]
    u2 = unit_uniform(words[:, 1::2])  # (n, pairs) in [0, 1)
    radius = np.sqrt(-2.0 * portable_log(u1))
    sin_u, cos_u = portable_sincos_turns(u2)
    out = np.empty((keys.size, 2 * pairs), dtype=np.float64)  # (n, 2 * pairs)
    np.multiply(radius, cos_u, out=out[:, 0::2])
    np.multiply(radius, sin_u, out=out[:, 1::2])
    return out[:, :columns]


def initial_rows(
    keys: np.ndarray, embedding_dim: int, dtype: np.dtype, spec: InitSpec, seed: int,
    backend: str | None = None,
) -> np.ndarray:
    """(n, embedding_dim) the initial rows of `keys` (int64, or uint64 = same bits) in `dtype`.
    The same key gives the same row in any batch, order, process or machine, and with either
    backend (default: the selected one)."""
    keys = np.ascontiguousarray(as_keys(keys).ravel())
    if spec.kind == "zeros":
        return np.zeros((keys.size, embedding_dim), dtype=dtype)
    if check_backend(backend) == "numba":
        out = np.empty((keys.size, embedding_dim), dtype=dtype)  # (n, dim)
        if spec.kind == "normal":
            initial_rows_numba.normal_rows(keys, seed_state(seed), float(spec.std), out)
        else:
            initial_rows_numba.uniform_rows(
                keys, seed_state(seed), float(spec.low), float(spec.high), out)
        return out
    if spec.kind == "normal":
        values = standard_normal(keys, embedding_dim, seed)  # (n, dim)
        values *= spec.std
    else:
        values = unit_uniform(column_words(keys, embedding_dim, seed))  # (n, dim)
        values *= spec.high - spec.low
        values += spec.low
    return values.astype(dtype, copy=False)
