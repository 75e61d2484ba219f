"""initial_rows' arithmetic compiled, bit-identical to the numpy version.

The same operations in the same order (numba, like numpy, rounds every operation to float64
and contracts nothing into fused multiply-adds without fastmath), so the two backends give the
same bytes; tests/core/dynamic/test_initial_rows.py compares them. The numpy version makes
about forty passes over temporaries. Normal rows here take five passes over all the keys' column
pairs (words, the mantissa and exponent of u1 read from its bits, the Box-Muller radius, the
sine and cosine, the output), each a loop without branches or error checks (numpy's error
model) that LLVM vectorizes: 1.4x faster than one pass doing it all per pair, where the long
Horner chains of each pair wait on one another.
"""

from __future__ import annotations

import math

import numpy as np

from service.core.dynamic import series as initial_rows_numpy_series
from service.core.dynamic.backend import arithmetic_kernel, inline_arithmetic_kernel, kernel
from service.core.dynamic.hashing import mix64_scalar

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_S11 = np.uint64(11)
_TWO_POW_MINUS_53 = 2.0**-53
_LN2 = math.log(2.0)
_HALF_PI = math.pi / 2
_SQRT_HALF = math.sqrt(0.5)
# initial_rows' series, highest power first: tuples are compile-time constants to numba, so
# the Horner loops unroll with the coefficients inline.
_LOG_SERIES = tuple(reversed(initial_rows_numpy_series.LOG_SERIES))
_SIN_SERIES = tuple(reversed(initial_rows_numpy_series.SIN_SERIES))
_COS_SERIES = tuple(reversed(initial_rows_numpy_series.COS_SERIES))


@inline_arithmetic_kernel
def _horner(x: float, coefficients: tuple[float, ...]) -> float:
    result = coefficients[0]
    for i in range(1, len(coefficients)):
        result = result * x + coefficients[i]
    return result


@kernel
def _word(stream: np.uint64, column: int) -> np.uint64:
    return mix64_scalar(stream + np.uint64(column + 1) * _GOLDEN)


@kernel
def _unit(word: np.uint64) -> float:
    return np.float64(word >> _S11) * _TWO_POW_MINUS_53


_MANTISSA = np.uint64((1 << 52) - 1)
_HALF_EXPONENT = np.uint64(1022 << 52)  # the exponent bits of [0.5, 1)
_S52 = np.uint64(52)


@arithmetic_kernel
def normal_rows(keys: np.ndarray, state: np.uint64, std: float, out: np.ndarray) -> None:
    """out[i] = std * Box-Muller normals of key i (out: (n, dim) float32 or float64)."""
    columns = out.shape[1]
    pairs = (columns + 1) // 2
    count = keys.size * pairs
    u1 = np.empty(count)  # (n * pairs,) in (0, 1]
    u2 = np.empty(count)  # in [0, 1)
    for i in range(keys.size):
        stream = mix64_scalar(np.uint64(keys[i]) ^ state)
        for pair in range(pairs):
            u1[i * pairs + pair] = _unit(_word(stream, 2 * pair)) + _TWO_POW_MINUS_53
            u2[i * pairs + pair] = _unit(_word(stream, 2 * pair + 1))
    bits = u1.view(np.uint64)  # frexp from the bits: u1 is a normal float64, > 0
    exponents = np.empty(count)
    mantissa_bits = np.empty(count, dtype=np.uint64)
    for j in range(count):
        exponents[j] = np.float64(np.int64(bits[j] >> _S52) - 1022)
        mantissa_bits[j] = (bits[j] & _MANTISSA) | _HALF_EXPONENT
    mantissas = mantissa_bits.view(np.float64)  # in [0.5, 1)
    radius = np.empty(count)
    for j in range(count):
        small = mantissas[j] < _SQRT_HALF
        mantissa = mantissas[j] * 2.0 if small else mantissas[j]
        exponent = exponents[j] - 1.0 if small else exponents[j]
        s = (mantissa - 1.0) / (mantissa + 1.0)
        logarithm = 2.0 * s * _horner(s * s, _LOG_SERIES) + exponent * _LN2
        radius[j] = math.sqrt(-2.0 * logarithm)
    sines = exponents  # reused: (n * pairs,)
    cosines = np.empty(count)
    for j in range(count):
        quarters = u2[j] * 4.0
        q = np.rint(quarters)
        phi = (quarters - q) * _HALF_PI  # in [-pi/4, pi/4]
        phi2 = phi * phi
        sin_phi = phi * _horner(phi2, _SIN_SERIES)
        cos_phi = _horner(phi2, _COS_SERIES)
        turn = np.int64(q) & 3
        sines[j] = sin_phi if turn == 0 else (
            cos_phi if turn == 1 else (-sin_phi if turn == 2 else -cos_phi))
        cosines[j] = cos_phi if turn == 0 else (
            -sin_phi if turn == 1 else (-cos_phi if turn == 2 else sin_phi))
    for i in range(keys.size):
        for pair in range(pairs):
            j = i * pairs + pair
            out[i, 2 * pair] = (radius[j] * cosines[j]) * std
            if 2 * pair + 1 < columns:
                out[i, 2 * pair + 1] = (radius[j] * sines[j]) * std


@kernel
def uniform_rows(keys: np.ndarray, state: np.uint64, low: float, high: float,
                 out: np.ndarray) -> None:
    """out[i, c] = low + (high - low) * u(key i, column c)."""
    width = high - low
    for i in range(keys.size):
        stream = mix64_scalar(np.uint64(keys[i]) ^ state)
        for column in range(out.shape[1]):
            out[i, column] = _unit(_word(stream, column)) * width + low
