"""Shared pieces of the AL-evaluation package: the error type and array checks."""
from __future__ import annotations

import numpy as np
from scipy import stats

from ..errors import UserError


class AlEvalError(UserError, ValueError):
    """Bad input to the AL-evaluation analysis: wrong shapes, empty sets, unknown classes."""


def as_samples(x, name: str) -> np.ndarray:
    """``x`` as a float64 ``[n, d]`` array (a ``[n]`` vector becomes ``[n, 1]``), else :class:`AlEvalError`."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise AlEvalError(f"{name} must be a [n, d] sample matrix, got shape {arr.shape}")
    return arr


def as_vector(x, name: str) -> np.ndarray:
    """``x`` as a float64 ``[n]`` vector, else :class:`AlEvalError`."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise AlEvalError(f"{name} must be a 1-D vector, got shape {arr.shape}")
    return arr


def finite_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The entries of two equal-length vectors where both are finite."""
    ok = np.isfinite(a) & np.isfinite(b)
    return a[ok], b[ok]


def pearson(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Pearson ``(r, p)`` over the finite pairs; NaN when fewer than 2 pairs or one side is constant."""
    a, b = finite_pairs(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan"), float("nan")
    res = stats.pearsonr(a, b)
    return float(res.statistic), float(res.pvalue)
