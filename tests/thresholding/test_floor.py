"""F1-optimal score floor against a brute-force sweep and a hand-computed case."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from uncertainty_det.thresholding import ThresholdingError, f1_score_floor


def _table(kind, score, iou, cls, gt_cls):
    return pd.DataFrame({"kind": kind, "score": score, "iou": iou, "class_id": cls, "gt_class_id": gt_cls})


def test_hand_computed():
    # 3 GTs; detections 0.9 TP, 0.8 FP (background), 0.7 TP, 0.6 wrong class; one GT missed
    m = _table(["matched", "background", "matched", "matched", "missed"], [0.9, 0.8, 0.7, 0.6, np.nan],
               [0.8, 0.0, 0.6, 0.9, 0.0], [1, 2, 1, 2, -1], [1, -1, 1, 1, 2])
    # G = 4 GT rows (matched x3 + missed); floor 0.9: 2/(1+4)=0.4; 0.8: 2/(2+4)=0.33; 0.7: 4/(3+4)=0.571; 0.6: 4/8
    floor, info = f1_score_floor(m)
    assert floor == 0.7 and info["f1"] == pytest.approx(4 / 7)
    assert info["precision"] == pytest.approx(2 / 3) and info["recall"] == pytest.approx(2 / 4)


def test_matches_brute_force_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(30):
        n = int(rng.integers(3, 40))
        kind = rng.choice(["matched", "background", "missed"], n, p=[0.6, 0.25, 0.15])
        score = np.where(kind == "missed", np.nan, rng.integers(1, 8, n) / 8)
        iou = np.where(kind == "matched", rng.uniform(0.3, 1, n), 0.0)
        cls = rng.integers(1, 3, n)
        gt = np.where(kind == "background", -1, np.where(rng.uniform(size=n) < 0.8, cls, 3 - cls))
        m = _table(kind, score, iou, cls, gt)
        if not (kind != "missed").any() or not (kind != "background").any():
            continue
        n_gt = int((kind != "background").sum())
        tp = (kind == "matched") & (cls == gt) & (iou >= 0.5)
        best = max((2 * (tp & (score >= s)).sum() / ((score >= s).sum() + n_gt), s)
                   for s in np.unique(score[kind != "missed"]))
        floor, info = f1_score_floor(m)
        assert info["f1"] == pytest.approx(best[0])
        assert floor == max(s for s in np.unique(score[kind != "missed"])
                            if 2 * (tp & (score >= s)).sum() / ((score >= s).sum() + n_gt) == pytest.approx(best[0]))


def test_errors():
    with pytest.raises(ThresholdingError, match="no column 'gt_class_id'"):
        f1_score_floor(pd.DataFrame({"kind": [], "score": [], "iou": [], "class_id": []}))
    with pytest.raises(ThresholdingError, match="numeric score floor"):
        f1_score_floor(_table(["missed"], [np.nan], [0.0], [-1], [1]))
