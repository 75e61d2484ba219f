"""The series coefficients of initial_rows' portable logarithm, sine and cosine (lowest power
first), shared by its numpy and compiled versions so both evaluate the same polynomials."""

from __future__ import annotations

import math

# atanh series: ln(m) = 2s(1 + s^2/3 + s^4/5 + ...), s = (m - 1) / (m + 1), |s| <= 0.172
LOG_SERIES: tuple[float, ...] = tuple(1.0 / (2 * k + 1) for k in range(12))
# Taylor series of sin(phi) / phi and cos(phi) in phi^2, for phi in [-pi/4, pi/4]
SIN_SERIES: tuple[float, ...] = tuple((-1.0) ** k / math.factorial(2 * k + 1) for k in range(9))
COS_SERIES: tuple[float, ...] = tuple((-1.0) ** k / math.factorial(2 * k) for k in range(9))
