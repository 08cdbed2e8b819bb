"""Fitting every method from a Matches table, the before/after report, and the saved calibration folder."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.calibration.synthetic import gaussian_boxes, sample_labels
from uncertainty_det.calibration import BOX_CALIBRATORS, CLASS_CALIBRATORS, CalibrationError
from uncertainty_det.calibration.fitting import (
    fit_calibration,
    load_calibration,
    pairs_from_matches,
    save_calibration,
)
from uncertainty_det.tables import CORNERS, softmax


def _matches(n: int = 3000, seed: int = 0, mc: bool = True) -> pd.DataFrame:
    """A Matches table of an over-confident classifier (logits x3) and σ 3x too large, plus missed rows."""
    rng = np.random.default_rng(seed)
    pred, gt, sigma, _, classes = gaussian_boxes(n, seed, over=3.0, n_classes=3)
    true_logits = rng.normal(0.0, 1.5, size=(n, 3))
    labels = sample_labels(softmax(true_logits), rng)
    logits = 3.0 * true_logits
    frame = pd.DataFrame({
        "image_id": np.arange(n) // 5, "file_name": "x.png", "det": np.arange(n) % 5,
        "class_id": logits.argmax(1) + 1, "score": 0.5,
        **{c: pred[:, k] for k, c in enumerate(CORNERS)},
        "logits": list(logits), "probs": list(softmax(logits)), "entropy": 1.0,
        **{f"al_{c}": sigma[:, k] for k, c in enumerate(CORNERS)},
        **{f"ep_{c}": 0.5 * sigma[:, k] for k, c in enumerate(CORNERS)},
        "gt_id": np.arange(n), "gt_class_id": labels + 1,
        **{f"gt_{c}": gt[:, k] for k, c in enumerate(CORNERS)},
        "iou": rng.uniform(0.3, 1.0, n), "kind": "matched",
    })
    if mc:
        frame["ep_logit_std"] = list(np.full((n, 3), 0.2))
        frame["ep_cls"] = 0.2
    missed = frame.iloc[:7].copy()
    missed["kind"] = "missed"
    missed["iou"] = 0.0
    return pd.concat([frame, missed], ignore_index=True), classes


def test_pairs_from_matches_keeps_matched_rows_above_min_iou():
    matches, _ = _matches(200)
    pairs = pairs_from_matches(matches)
    assert len(pairs) == 200 and set(pairs.sigma) == {"al", "ep"} and pairs.logit_std.shape == (200, 3)
    assert len(pairs_from_matches(matches, min_iou=0.65)) == int((matches.iloc[:200]["iou"] > 0.65).sum())
    np.testing.assert_array_equal(pairs.labels, matches["gt_class_id"].to_numpy()[:200] - 1)
    with pytest.raises(CalibrationError, match="no matched detection"):
        pairs_from_matches(matches, min_iou=1.0)


def test_every_method_fitted_and_improves_held_out_calibration(tmp_path):
    matches, _ = _matches()
    pairs = pairs_from_matches(matches)
    result = fit_calibration(pairs, seed=1, mc_samples=5)
    assert set(result.calibrators) == ({("class", m) for m in CLASS_CALIBRATORS}
                                       | {(k, m) for k in ("al", "ep") for m in BOX_CALIBRATORS})
    assert len(result.eval_pairs) == 600 and len(result.fit_pairs) == 2400
    for method in CLASS_CALIBRATORS:   # logits 3x too confident: every method lowers ECE and NLL on held-out pairs
        assert result.metric("class", method, "ece") < 0.5 * result.metric("class", method, "ece", "before")
        assert result.metric("class", method, "nll") < result.metric("class", method, "nll", "before")
    for kind in ("al", "ep"):          # σ 3x (al) / 1.5x (ep) too large: coverage ECE drops to a few %
        for method in BOX_CALIBRATORS:
            assert result.metric(kind, method, "coverage_ece", "before") > 0.1
            assert result.metric(kind, method, "coverage_ece") < 0.05, (kind, method)

    save_calibration(result, tmp_path, {"class": "ts_all", "box": "iso_percoo"}, extra={"run_name": "r"})
    summary = json.loads((tmp_path / "calibration.json").read_text())
    assert summary["selected"] == {"class": "ts_all", "box": "iso_percoo"} and summary["run_name"] == "r"
    assert summary["num_pairs"] == 3000 and len(summary["metrics"]) == len(result.metrics)
    assert pd.read_csv(tmp_path / "metrics.csv").shape == result.metrics.shape

    loaded = load_calibration(tmp_path)
    assert (loaded.class_method, loaded.box_method) == ("ts_all", "iso_percoo")
    # the loaded calibrators are the ones refitted on all pairs
    np.testing.assert_allclose(
        loaded.al_calibrator.transform(pairs.pred_boxes, pairs.sigma["al"]),
        result.calibrators[("al", "iso_percoo")].transform(pairs.pred_boxes, pairs.sigma["al"]))
    other = load_calibration(tmp_path, class_method="iso_percls", box_method="rel_iso_perclscoo")
    assert other.ep_calibrator.name == "rel_iso_perclscoo" and other.class_calibrator.name == "mc"
    with pytest.raises(CalibrationError, match="available: iso_all"):
        load_calibration(tmp_path, box_method="platt")
    with pytest.raises(CalibrationError, match="run udet-calibrate"):
        load_calibration(tmp_path / "missing")


def test_without_mc_or_sigma_only_what_the_table_has():
    matches, _ = _matches(400, mc=False)
    matches = matches.drop(columns=[f"ep_{c}" for c in CORNERS])
    result = fit_calibration(pairs_from_matches(matches), class_methods=["ts_all"], box_methods=["ts_all"])
    assert set(result.calibrators) == {("class", "ts_all"), ("al", "ts_all")}
    assert result.calibrators[("class", "ts_all")].name == "ts_all"       # no MC wrapper without MC std
    with pytest.raises(CalibrationError, match="at least 10"):
        fit_calibration(pairs_from_matches(matches.iloc[:5]))
