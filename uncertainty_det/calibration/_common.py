"""Shared pieces of the calibration package: errors, input checks and the pickle-free isotonic map."""
from __future__ import annotations

import os
import sys
import warnings
from typing import Any

import numpy as np
from sklearn.isotonic import IsotonicRegression

from ..errors import UserError

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


class CalibrationError(UserError, ValueError):
    """Bad calibration input (shapes, NaN/inf, too few samples) or a bad calibrator option."""


class CalibrationWarning(UserWarning):
    """A calibrator fell back to a coarser grouping (too few samples in a class / class×coordinate)."""


class PersistentCalibrator:
    """The JSON form shared by class and box calibrators: ``{"kind", "method", "options", "params"}``.

    Subclasses define ``kind``, ``name``, ``get_params()`` (constructor options), ``_check_fitted()``,
    ``_state()`` (params: JSON scalars/lists and ndarrays) and ``_set_state(params)``.
    """

    kind: str = ""
    name: str = ""

    def get_params(self) -> dict[str, Any]:
        """The constructor options (plain JSON values, one-to-one with a config file)."""
        return {}

    def _check_fitted(self) -> None:
        raise NotImplementedError

    def _state(self) -> dict[str, Any]:
        raise NotImplementedError

    def _set_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def _mark_fitted(self) -> None:
        """Called after :meth:`_set_state` by :meth:`from_dict` (for flags ``_set_state`` does not set)."""

    def to_dict(self) -> dict[str, Any]:
        """``{"kind", "method", "options", "params"}``; params hold JSON scalars/lists and ndarrays."""
        self._check_fitted()
        return {"kind": self.kind, "method": self.name, "options": self.get_params(), "params": self._state()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        """A fitted calibrator from its :meth:`to_dict` form (arrays already resolved)."""
        obj = cls(**d.get("options", {}))
        obj._set_state(d["params"])
        obj._mark_fitted()
        return obj


def warn(message: str) -> None:
    """Emit a :class:`CalibrationWarning` attributed to the first caller outside this package."""
    level, frame = 2, sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, CalibrationWarning, stacklevel=level)


def as_float_array(a: Any, name: str, ndim: int | None = None, width: int | None = None,
                   finite: bool = True) -> np.ndarray:
    """``a`` as float64; checks the number of dimensions, the last axis and (optionally) finiteness."""
    arr = np.asarray(a, dtype=np.float64)
    if ndim is not None and arr.ndim != ndim:
        raise CalibrationError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if width is not None and (arr.ndim < 1 or arr.shape[-1] != width):
        raise CalibrationError(f"{name} must have a last axis of {width}, got shape {arr.shape}")
    if finite and not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise CalibrationError(f"{name} has {bad} NaN/inf value(s); drop those detections or fix the upstream stage")
    return arr


def as_labels(labels: Any, n: int, num_classes: int, name: str = "labels", base: int = 0) -> np.ndarray:
    """Integer class labels ``[n]`` in ``[base, base + num_classes)`` (one-hot ``[n, C]`` is argmax-ed)."""
    y = np.asarray(labels)
    if y.ndim == 2:
        y = np.argmax(y, axis=1) + base
    if y.ndim != 1 or y.shape[0] != n:
        raise CalibrationError(f"{name} must be [{n}] class ids, got shape {y.shape}")
    if y.size and not np.all(np.equal(np.mod(y, 1), 0)):
        raise CalibrationError(f"{name} must be integer class ids")
    y = y.astype(np.int64)
    if y.size and (y.min() < base or y.max() >= base + num_classes):
        raise CalibrationError(
            f"{name} must lie in [{base}, {base + num_classes - 1}] ({'0' if base == 0 else '1'}-based), "
            f"got values in [{y.min()}, {y.max()}]")
    return y


class IsoMap:
    """A fitted isotonic regression stored as its breakpoints (no pickle).

    Applying it is ``np.interp(x, x_, y_)``: linear between breakpoints and clipped to the end values
    outside them, which is exactly scikit-learn's ``IsotonicRegression(out_of_bounds="clip").predict``.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x = np.asarray(x, dtype=np.float64).reshape(-1)
        self.y = np.asarray(y, dtype=np.float64).reshape(-1)
        if self.x.shape != self.y.shape or self.x.size == 0:
            raise CalibrationError(f"isotonic breakpoints must be two equal, non-empty vectors, got "
                                   f"{self.x.shape} and {self.y.shape}")
        if np.any(np.diff(self.x) < 0):
            raise CalibrationError("isotonic breakpoints must be sorted by x")

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, y_min: float | None = None,
            y_max: float | None = None) -> "IsoMap":
        """Fit an increasing ``IsotonicRegression`` of ``y`` on ``x`` (1-D, same length, at least 1 point)."""
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        if x.size == 0:
            raise CalibrationError("cannot fit an isotonic calibrator on 0 samples")
        iso = IsotonicRegression(y_min=y_min, y_max=y_max, increasing=True, out_of_bounds="clip").fit(x, y)
        return cls(iso.X_thresholds_, iso.y_thresholds_)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.interp(np.asarray(x, dtype=np.float64), self.x, self.y)

    def to_dict(self) -> dict:
        return {"x": self.x.copy(), "y": self.y.copy()}

    @classmethod
    def from_dict(cls, d: dict) -> "IsoMap":
        return cls(d["x"], d["y"])


def check_choice(value: str, choices: tuple[str, ...], what: str) -> str:
    """``value`` if it is one of ``choices``; else a :class:`CalibrationError` listing them."""
    if value not in choices:
        raise CalibrationError(f"unknown {what} {value!r}; use one of: {', '.join(choices)}")
    return value
