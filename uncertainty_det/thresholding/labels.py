"""Correct / false detection labels per IoU threshold from a Matches table (reference §1.2, DESIGN §6.4).

A *detection row* is a row that carries a detection:

* ``gt_centric`` tables (reference reproduction): one row per GT with the detection of highest IoU. Rows
  with ``iou > 0`` (``kind == "matched"``) are the samples; GTs without any overlap (``missed``) cannot be
  recovered by thresholding and are dropped, and background detections are not part of the analysis
  (reference §1.2, D17), unless ``include_background=True``. A detection taken by several GTs gives
  several rows, as in the reference.
* ``greedy`` tables: every ``matched`` and ``background`` row; background rows are always FDs.

At IoU threshold ``t`` a detection row is a correct detection (CD) when it is ``matched``, its predicted
class equals the GT class and ``iou >= t``; every other detection row is a false detection (FD).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ._common import ThresholdingError, check_iou_thresholds

MATCHERS = ("gt_centric", "greedy")
REQUIRED = ("kind", "iou", "class_id", "gt_class_id")


def _require(frame: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ThresholdingError(
            f"Matches table has no column {missing[0]!r} (needs {list(columns)}); build it with "
            f"uncertainty_det.evaluation.matching.match(detections, gt, ...) or run the validate stage")


def detection_mask(matches: pd.DataFrame, matcher: str = "gt_centric",
                   include_background: bool | None = None) -> np.ndarray:
    """``[len(matches)]`` bool: which rows are detection rows (module docstring).

    matcher: the matcher that built the table (``gt_centric`` or ``greedy``); include_background:
    whether ``background`` rows count (as FDs); ``None`` = ``False`` for ``gt_centric`` (reference),
    ``True`` for ``greedy``.
    """
    if matcher not in MATCHERS:
        raise ThresholdingError(f"unknown matcher {matcher!r}; choose one of {list(MATCHERS)}")
    _require(matches, ("kind", "iou"))
    if include_background is None:
        include_background = matcher == "greedy"
    kind = matches["kind"].to_numpy(dtype=object)
    mask = kind == "matched"
    if matcher == "gt_centric":
        mask &= matches["iou"].to_numpy(dtype=np.float64) > 0
    if include_background:
        mask |= kind == "background"
    return mask


def detection_frame(matches: pd.DataFrame, matcher: str = "gt_centric",
                    include_background: bool | None = None) -> pd.DataFrame:
    """The detection rows of ``matches`` (see :func:`detection_mask`), index reset to ``0..N-1``."""
    return matches.loc[detection_mask(matches, matcher, include_background)].reset_index(drop=True)


def cd_matrix(detections: pd.DataFrame, iou_thresholds: Sequence[float] | np.ndarray | None = None) -> np.ndarray:
    """CD labels ``[T, N]`` bool of detection rows (``N`` rows of :func:`detection_frame`).

    ``cd[t, i] = kind_i == "matched" and class_id_i == gt_class_id_i and iou_i >= iou_thresholds[t]``;
    ``~cd`` are the FDs. iou_thresholds: ``[T]`` in (0, 1], default 0.50, 0.55, ..., 0.75.
    """
    t = check_iou_thresholds(iou_thresholds)
    _require(detections, REQUIRED)
    kind = detections["kind"].to_numpy(dtype=object)
    if np.any(kind == "missed"):
        raise ThresholdingError("cd_matrix got 'missed' rows (GTs without a detection); pass "
                                "thresholding.labels.detection_frame(matches) instead of the whole table")
    right = (kind == "matched") & (detections["class_id"].to_numpy() == detections["gt_class_id"].to_numpy())
    iou = detections["iou"].to_numpy(dtype=np.float64)
    return right[None, :] & (iou[None, :] >= t[:, None])


def cd_labels(matches: pd.DataFrame, iou_thresholds: Sequence[float] | np.ndarray | None = None,
              matcher: str = "gt_centric", include_background: bool | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """``(detection rows [N], cd [T, N])``: :func:`detection_frame` then :func:`cd_matrix`."""
    dets = detection_frame(matches, matcher, include_background)
    return dets, cd_matrix(dets, iou_thresholds)
