"""Shared pieces of the thresholding package: the error type, defaults and argument checks."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import UserError

#: IoU thresholds of the reference (§1.1): 0.50, 0.55, ..., 0.75.
DEFAULT_IOU_THRESHOLDS = np.round(np.arange(0.5, 0.76, 0.05), 2)
#: Budget modes: ``cd`` keeps a share ``b`` of the CDs, ``fd`` removes a share ``b`` of the FDs.
MODES = ("cd", "fd")


class ThresholdingError(UserError, ValueError):
    """Bad input to thresholding: missing columns, bad budget/mode, inconsistent shapes."""


def check_budget(budget: float) -> float:
    """``budget`` as a float in the open interval (0, 1), else :class:`ThresholdingError`."""
    try:
        b = float(budget)
    except (TypeError, ValueError):
        raise ThresholdingError(f"budget must be a number in (0, 1), got {budget!r}") from None
    if not 0.0 < b < 1.0:
        raise ThresholdingError(
            f"budget must be in (0, 1) (a share of CDs kept or FDs removed, e.g. 0.95), got {budget!r}")
    return b


def check_mode(mode: str) -> str:
    """``mode`` if it is ``cd`` or ``fd``, else :class:`ThresholdingError`."""
    if mode not in MODES:
        raise ThresholdingError(f"mode must be one of {list(MODES)} ('cd': keep b of the correct detections, "
                                f"'fd': remove b of the false detections), got {mode!r}")
    return mode


def check_iou_thresholds(iou_thresholds: Sequence[float] | np.ndarray | None) -> np.ndarray:
    """IoU thresholds as ``[T]`` float64 (default :data:`DEFAULT_IOU_THRESHOLDS`), each in (0, 1]."""
    t = DEFAULT_IOU_THRESHOLDS if iou_thresholds is None else np.asarray(iou_thresholds, dtype=np.float64).reshape(-1)
    if t.size == 0 or not np.all(np.isfinite(t)) or np.any(t <= 0) or np.any(t > 1):
        raise ThresholdingError(f"IoU thresholds must be a non-empty list of values in (0, 1], got {list(t)}")
    return t.astype(np.float64)
