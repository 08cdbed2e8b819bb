"""Detection quality of a Matches table and runtime statistics (reference §4.3-§4.5, DESIGN §8).

* :func:`detection_quality`: % missed, misclassification rate, mIoU, RMSE (px), average score;
* :func:`quality_breakdown` / :func:`quality_report`: the same per occlusion level and truncation bin;
* :func:`runtime_summary`: mean/std/median ms per call with warm-up calls and outliers removed.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import UserError
from ..tables import BOX_COLUMNS
from .matching import GT_BOX_COLUMNS

#: Keys of :func:`detection_quality`, in order.
QUALITY_KEYS = ("n_gt", "n_matched", "n_missed", "n_background", "missed_pct", "misclassification_rate",
                "miou", "miou_gt", "rmse_px", "average_score")
#: KITTI-style truncation bins (easy <= 0.15 < moderate <= 0.3 < hard <= 0.5 < rest).
TRUNCATION_BINS = (0.0, 0.15, 0.3, 0.5, 1.0)


class RuntimeStatsError(UserError, ValueError):
    """No timings left to summarise."""


def _kind(matches: pd.DataFrame) -> np.ndarray:
    if "kind" not in matches.columns:
        raise UserError("a Matches table needs the 'kind' column; build it with evaluation.matching.match()")
    return matches["kind"].to_numpy(dtype=object)


def detection_quality(matches: pd.DataFrame) -> dict[str, float]:
    """Detection-quality metrics of a Matches table (DESIGN §6.4). Returns a dict of floats:

    * ``n_gt``: GT rows (``kind`` matched or missed); ``n_matched``, ``n_missed``, ``n_background``;
    * ``missed_pct``: 100 x share of GT rows that are ``missed`` or have ``iou == 0`` (reference
      "% Missing Detections");
    * ``misclassification_rate``: share of matched rows with ``class_id != gt_class_id``;
    * ``miou``: mean IoU over matched rows; ``miou_gt``: mean IoU over all GT rows, missed ones as 0
      (the reference's mIoU);
    * ``rmse_px``: ``sqrt(mean((box - gt_box)^2))`` over the 4 corners of matched rows, pixels (the
      reference also skipped GT coordinates equal to 0, which drops boxes touching the border: not kept);
    * ``average_score``: mean score of the detections assigned to GT rows (matched rows), full float
      (the reference truncated it to 3 characters when reading it back, D15; it also averaged the score
      of the arbitrary detection it assigned to missed GTs, which has no meaning here).

    Rates over an empty set are NaN.
    """
    kind = _kind(matches)
    is_matched = kind == "matched"
    is_missed = kind == "missed"
    is_gt = is_matched | is_missed
    iou = matches["iou"].to_numpy(dtype=np.float64) if len(matches) else np.zeros(0)
    zero = is_gt & ((iou <= 0) | is_missed)
    n_gt = int(is_gt.sum())
    m = matches.loc[is_matched]
    out = {
        "n_gt": float(n_gt),
        "n_matched": float(is_matched.sum()),
        "n_missed": float(is_missed.sum()),
        "n_background": float((kind == "background").sum()),
        "missed_pct": 100.0 * float(zero.sum()) / n_gt if n_gt else float("nan"),
        "misclassification_rate": float("nan"),
        "miou": float("nan"),
        "miou_gt": float(np.where(is_missed, 0.0, iou)[is_gt].mean()) if n_gt else float("nan"),
        "rmse_px": float("nan"),
        "average_score": float("nan"),
    }
    if len(m):
        out["misclassification_rate"] = float(np.mean(m["class_id"].to_numpy(np.int64)
                                                      != m["gt_class_id"].to_numpy(np.int64)))
        out["miou"] = float(m["iou"].to_numpy(np.float64).mean())
        diff = m.loc[:, list(BOX_COLUMNS)].to_numpy(np.float64) - m.loc[:, list(GT_BOX_COLUMNS)].to_numpy(np.float64)
        out["rmse_px"] = float(np.sqrt(np.mean(diff ** 2)))
        out["average_score"] = float(m["score"].to_numpy(np.float64).mean())
    return out


def quality_breakdown(matches: pd.DataFrame, by: str, bins: Sequence[float] | None = None,
                      unknown: float = -1) -> pd.DataFrame | None:
    """:func:`detection_quality` per level of a GT attribute column (``gt_occluded``, ``gt_truncated``).

    bins: ``None`` groups by the exact value; else right-closed bin edges (lowest edge included), e.g.
    :data:`TRUNCATION_BINS`, giving levels ``"[0, 0.15]", "(0.15, 0.3]", ...`` in bin order (empty bins
    and values outside the edges left out). GT rows whose value is ``unknown`` (-1) are left out, as are background rows
    (they have no GT). Returns a frame indexed by level (``level`` column first, then
    :data:`QUALITY_KEYS`), or ``None`` when the column is missing or all values are unknown.
    """
    if by not in matches.columns:
        return None
    kind = _kind(matches)
    values = matches[by].to_numpy(dtype=np.float64)
    keep = (kind != "background") & np.isfinite(values) & (values != unknown)
    if not keep.any():
        return None
    sub = matches.loc[keep]
    if bins is None:
        levels = sub[by].to_numpy()
    else:
        edges = [float(b) for b in bins]
        labels = [f"{'[' if k == 0 else '('}{lo:g}, {hi:g}]" for k, (lo, hi) in enumerate(zip(edges[:-1], edges[1:]))]
        levels = pd.cut(sub[by].to_numpy(dtype=np.float64), bins=edges, labels=labels, include_lowest=True)
    rows = []
    for level, group in sub.groupby(pd.Series(levels, index=sub.index), sort=True, observed=True):
        rows.append({"level": level, **detection_quality(group)})
    return pd.DataFrame(rows, columns=["level", *QUALITY_KEYS])


def quality_report(matches: pd.DataFrame, truncation_bins: Sequence[float] | None = TRUNCATION_BINS) -> dict:
    """``{"overall": dict, "by_occlusion": frame | None, "by_truncation": frame | None}`` (see above)."""
    return {
        "overall": detection_quality(matches),
        "by_occlusion": quality_breakdown(matches, "gt_occluded"),
        "by_truncation": quality_breakdown(matches, "gt_truncated", bins=truncation_bins),
    }


def runtime_summary(seconds: Sequence[float] | np.ndarray, warmup: int = 1, iqr_factor: float = 50.0,
                    max_seconds: float | None = None) -> dict[str, float]:
    """Runtime statistics per call (reference §4.3), in milliseconds.

    seconds: ``[n]`` wall-clock seconds per call, in call order. Drops the first ``warmup`` calls (graph
    tracing; the reference instead dropped calls of 1 s or more, available as ``max_seconds=1.0``), then
    calls above ``Q3 + iqr_factor * IQR`` (quartiles with linear interpolation, as ``np.percentile``).

    Returns ``mean_ms``, ``std_ms`` (population std, as the reference), ``median_ms``, ``n_total``,
    ``n_warmup`` (dropped as warm-up), ``n_outliers`` (dropped by ``max_seconds`` or the IQR rule) and
    ``n_used``. Raises :class:`RuntimeStatsError` when no call is left.
    """
    t = np.asarray(seconds, dtype=np.float64).reshape(-1)
    if warmup < 0:
        raise RuntimeStatsError(f"runtime_summary: warmup must be >= 0, got {warmup}")
    n_total = t.size
    t = t[warmup:]
    n_warm = n_total - t.size
    if not np.all(np.isfinite(t)):
        raise RuntimeStatsError("runtime_summary: timings must be finite seconds")
    if max_seconds is not None:
        t = t[t < max_seconds]
    if t.size == 0:
        raise RuntimeStatsError(
            f"runtime_summary: no timed call left out of {n_total} after dropping {n_warm} warm-up call(s); "
            f"time more calls or lower warmup")
    q1, q3 = np.percentile(t, [25, 75])
    kept = t[t <= q3 + iqr_factor * (q3 - q1)]
    return {
        "mean_ms": float(kept.mean() * 1e3),
        "std_ms": float(kept.std() * 1e3),
        "median_ms": float(np.median(kept) * 1e3),
        "n_total": float(n_total),
        "n_warmup": float(n_warm),
        "n_outliers": float(n_total - n_warm - kept.size),
        "n_used": float(kept.size),
    }
