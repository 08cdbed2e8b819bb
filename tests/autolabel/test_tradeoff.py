"""Trade-off curve against a brute-force sweep; its operating point reproduces the decisions."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from uncertainty_det.autolabel import decide_images, per_image_counts, tradeoff_curve
from uncertainty_det.evaluation.matching import empty_gt_frame, match_greedy

from .helpers import detections, images_table, threshold_model


def _counts(u, labels, tp, gt):
    return pd.DataFrame({"image_id": np.arange(len(u)), "max_uncertainty": u, "n_labels": labels, "n_tp": tp,
                         "n_gt": gt})


def test_matches_brute_force():
    rng = np.random.default_rng(1)
    u = np.round(rng.uniform(0, 1, 25), 1)                       # ties
    u[[3, 7]] = np.nan                                             # no detection above the floor
    labels = rng.integers(1, 5, 25)
    labels[[3, 7]] = 0
    tp = np.minimum(labels, rng.integers(0, 5, 25))
    gt = tp + rng.integers(0, 3, 25)
    for empty_accepted in (False, True):
        curve = tradeoff_curve(_counts(u, labels, tp, gt), 0.45, empty_accepted)
        for _, row in curve.iterrows():
            acc = (u < row["threshold"]) | (np.isnan(u) & empty_accepted)
            assert row["accepted_images"] == acc.sum() and row["auto_share"] == pytest.approx(acc.mean())
            assert row["labels"] == labels[acc].sum()
            expected = tp[acc].sum() / labels[acc].sum() if labels[acc].sum() else np.nan
            np.testing.assert_allclose(row["precision"], expected)
            np.testing.assert_allclose(row["recall"], tp[acc].sum() / gt[acc].sum() if gt[acc].sum() else np.nan)
        assert curve["operating"].sum() == 1
        assert np.all(np.diff(curve.loc[~curve["operating"], "auto_share"]) >= 0)


def test_operating_point_reproduces_the_decisions():
    model = threshold_model(threshold=0.5)
    dets = detections([(1, 0, 1, 0.9, 0.2, 0.1), (1, 1, 2, 0.8, 1.8, 0.4), (2, 0, 1, 0.9, 0.4, 0.1),
                       (3, 0, 1, 0.95, 2.0, 0.5), (4, 0, 1, 0.9, float("nan"), 0.1)])
    images = images_table([1, 2, 3, 4, 5])
    above, decisions = decide_images(dets, images, model, 0.5, "review")
    counts = per_image_counts(match_greedy(above, empty_gt_frame(), min_score=None, class_aware=True), decisions,
                              above)
    assert counts.loc[counts["image_id"] == 4, "max_uncertainty"].item() == np.inf       # NaN: never accepted
    assert counts["n_tp"].sum() == 0 and counts["n_labels"].tolist() == [2, 1, 1, 1, 0]
    op = tradeoff_curve(counts, model.operating_threshold).query("operating")
    assert op["accepted_images"].item() == decisions["accepted"].sum() == 1
