"""Detection-quality metrics of Matches tables and runtime statistics, against hand-computed values."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from uncertainty_det.evaluation.detection_quality import (
    QUALITY_KEYS, RuntimeStatsError, detection_quality, quality_breakdown, quality_report, runtime_summary,
)

NAN = float("nan")


def _matches() -> pd.DataFrame:
    """Five GT rows (3 matched, 2 missed) and one background row, boxes chosen for easy residuals."""
    rows = [
        # kind, class, gt_class, score, iou, box, gt_box, occl, trunc
        ("matched", 1, 1, 0.9, 0.8, [0, 0, 10, 10], [1, 0, 10, 10], 0, 0.0),
        ("matched", 2, 1, 0.5, 0.6, [0, 0, 10, 10], [0, 0, 10, 12], 1, 0.2),
        ("matched", 2, 2, 0.4, 1.0, [5, 5, 9, 9], [5, 5, 9, 9], 0, 0.6),
        ("missed", -1, 2, NAN, 0.0, [NAN] * 4, [0, 0, 5, 5], 1, 0.1),
        ("missed", -1, 1, NAN, 0.0, [NAN] * 4, [0, 0, 5, 5], -1, -1.0),
        ("background", 1, -1, 0.7, 0.0, [20, 20, 30, 30], [NAN] * 4, -1, -1.0),
    ]
    recs = []
    for kind, cls, gcls, score, iou, b, g, occ, trc in rows:
        recs.append({"kind": kind, "class_id": cls, "gt_class_id": gcls, "score": score, "iou": iou,
                     "ymin": b[0], "xmin": b[1], "ymax": b[2], "xmax": b[3],
                     "gt_ymin": g[0], "gt_xmin": g[1], "gt_ymax": g[2], "gt_xmax": g[3],
                     "gt_occluded": occ, "gt_truncated": trc})
    return pd.DataFrame(recs)


def test_detection_quality_hand_case():
    q = detection_quality(_matches())
    assert tuple(q) == QUALITY_KEYS
    assert q["n_gt"] == 5 and q["n_matched"] == 3 and q["n_missed"] == 2 and q["n_background"] == 1
    assert q["missed_pct"] == pytest.approx(40.0)
    assert q["misclassification_rate"] == pytest.approx(1 / 3)
    assert q["miou"] == pytest.approx((0.8 + 0.6 + 1.0) / 3)
    assert q["miou_gt"] == pytest.approx((0.8 + 0.6 + 1.0) / 5)
    # residuals: one of 1 px, one of 2 px, over 12 coordinates
    assert q["rmse_px"] == pytest.approx(math.sqrt((1 + 4) / 12))
    assert q["average_score"] == pytest.approx((0.9 + 0.5 + 0.4) / 3)   # full float, not "0.6"[:3]


def test_matched_row_with_zero_iou_counts_as_missed():
    m = _matches()
    m.loc[0, "iou"] = 0.0
    assert detection_quality(m)["missed_pct"] == pytest.approx(60.0)


def test_empty_matches_give_nan_rates():
    q = detection_quality(_matches().iloc[0:0])
    assert q["n_gt"] == 0 and all(math.isnan(q[k]) for k in ("missed_pct", "miou", "rmse_px", "average_score"))


def test_breakdowns_by_occlusion_and_truncation():
    m = _matches()
    occ = quality_breakdown(m, "gt_occluded")
    assert occ["level"].tolist() == [0, 1]                         # -1 (unknown) left out
    assert occ["n_gt"].tolist() == [2, 2]
    assert occ["missed_pct"].tolist() == pytest.approx([0.0, 50.0])
    trc = quality_breakdown(m, "gt_truncated", bins=(0.0, 0.15, 0.5, 1.0))
    assert trc["level"].tolist() == ["[0, 0.15]", "(0.15, 0.5]", "(0.5, 1]"]
    assert trc["n_gt"].tolist() == [2, 1, 1]
    assert trc["missed_pct"].tolist() == pytest.approx([50.0, 0.0, 0.0])
    m2 = m.assign(gt_occluded=-1)
    assert quality_breakdown(m2, "gt_occluded") is None
    assert quality_breakdown(m.drop(columns=["gt_truncated"]), "gt_truncated") is None
    rep = quality_report(m)
    assert set(rep) == {"overall", "by_occlusion", "by_truncation"}
    assert rep["by_truncation"]["n_gt"].sum() == 4


def test_runtime_summary_drops_warmup_and_outliers():
    s = runtime_summary([2.0, 0.010, 0.011, 0.012, 0.013, 5.0], warmup=1)
    assert s["n_total"] == 6 and s["n_warmup"] == 1 and s["n_outliers"] == 1 and s["n_used"] == 4
    assert s["mean_ms"] == pytest.approx(11.5)
    assert s["std_ms"] == pytest.approx(math.sqrt(1.25))            # population std
    assert s["median_ms"] == pytest.approx(11.5)
    # the reference rule: no warm-up count, drop calls of 1 s or more
    r = runtime_summary([2.0, 0.010, 0.011, 0.012, 0.013, 5.0], warmup=0, max_seconds=1.0)
    assert r["mean_ms"] == pytest.approx(11.5) and r["n_outliers"] == 2
    # with 5 calls Q1 = 0.011 and Q3 = 0.013 whatever the largest is: the bound is 0.013 + 50 * 0.002 = 0.113
    t = [0.010, 0.011, 0.012, 0.013]
    assert runtime_summary(t + [0.112], warmup=0)["n_used"] == 5
    assert runtime_summary(t + [0.114], warmup=0)["n_used"] == 4


def test_runtime_summary_errors():
    with pytest.raises(RuntimeStatsError):
        runtime_summary([1.0], warmup=1)
    with pytest.raises(RuntimeStatsError):
        runtime_summary([0.1, float("nan")], warmup=0)
