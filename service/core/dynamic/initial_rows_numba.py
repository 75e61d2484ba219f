"""initial_rows' arithmetic as one compiled pass per row, bit-identical to the numpy version.

The same operations in the same order (numba, like numpy, rounds every operation to float64
and contracts nothing into fused multiply-adds without fastmath), so the two backends give the
same bytes; tests/core/dynamic/test_initial_rows.py compares them. The numpy version makes
about forty passes over temporaries; this one keeps each value in registers.
"""

from __future__ import annotations

import math

import numpy as np

from service.core.dynamic import series as initial_rows_numpy_series
from service.core.dynamic.backend import kernel
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


@kernel
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


@kernel
def normal_rows(keys: np.ndarray, state: np.uint64, std: float, out: np.ndarray) -> None:
    """out[i] = std * Box-Muller normals of key i (out: (n, dim) float32 or float64)."""
    columns = out.shape[1]
    for i in range(keys.size):
        stream = mix64_scalar(np.uint64(keys[i]) ^ state)
        for pair in range((columns + 1) // 2):
            u1 = _unit(_word(stream, 2 * pair)) + _TWO_POW_MINUS_53
            u2 = _unit(_word(stream, 2 * pair + 1))
            mantissa, exponent = math.frexp(u1)
            if mantissa < _SQRT_HALF:
                mantissa = mantissa * 2.0
                exponent -= 1
            s = (mantissa - 1.0) / (mantissa + 1.0)
            logarithm = 2.0 * s * _horner(s * s, _LOG_SERIES) + exponent * _LN2
            radius = math.sqrt(-2.0 * logarithm)
            quarters = u2 * 4.0
            q = np.rint(quarters)
            phi = (quarters - q) * _HALF_PI
            phi2 = phi * phi
            sin_phi = phi * _horner(phi2, _SIN_SERIES)
            cos_phi = _horner(phi2, _COS_SERIES)
            turn = np.int64(q) % 4
            if turn == 0:
                sin_u, cos_u = sin_phi, cos_phi
            elif turn == 1:
                sin_u, cos_u = cos_phi, -sin_phi
            elif turn == 2:
                sin_u, cos_u = -sin_phi, -cos_phi
            else:
                sin_u, cos_u = -cos_phi, sin_phi
            out[i, 2 * pair] = (radius * cos_u) * std
            if 2 * pair + 1 < columns:
                out[i, 2 * pair + 1] = (radius * sin_u) * std


@kernel
def uniform_rows(keys: np.ndarray, state: np.uint64, low: float, high: float,
                 out: np.ndarray) -> None:
    """out[i, c] = low + (high - low) * u(key i, column c)."""
    width = high - low
    for i in range(keys.size):
        stream = mix64_scalar(np.uint64(keys[i]) ^ state)
        for column in range(out.shape[1]):
            out[i, column] = _unit(_word(stream, column)) * width + low
