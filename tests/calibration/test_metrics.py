"""Calibration metrics against hand-computed cases and closed forms."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from uncertainty_det.calibration import metrics as M
from uncertainty_det.calibration._common import CalibrationError
from uncertainty_det.errors import UserError

# Hand example (3 classes). Top-label: conf .9 (right), .6 (wrong), .7 (right), .65 (wrong).
PROBS = np.array([[0.90, 0.05, 0.05],
                  [0.60, 0.30, 0.10],
                  [0.20, 0.70, 0.10],
                  [0.10, 0.25, 0.65]])
LABELS = np.array([0, 1, 1, 0])


def test_reliability_bins_hand_example():
    conf, correct = M.top_label(PROBS, LABELS)
    bins = M.reliability_bins(conf, correct, n_bins=10)
    assert bins.count.tolist() == [0, 0, 0, 0, 0, 0, 2, 1, 0, 1]
    np.testing.assert_allclose(bins.conf[[6, 7, 9]], [0.625, 0.7, 0.9])
    np.testing.assert_allclose(bins.acc[[6, 7, 9]], [0.0, 1.0, 1.0])
    assert np.all(np.isnan(bins.acc[bins.count == 0]))
    # conf == 1 goes to the last bin, conf == 0 to the first
    edge = M.reliability_bins(np.array([0.0, 1.0]), np.array([0.0, 1.0]), 4)
    assert edge.count.tolist() == [1, 0, 0, 1]


def test_ece_mce_brier_nll_sce_hand_example():
    # top label: bins 6 (gap .625, n 2), 7 (gap .3), 9 (gap .1)
    assert M.ece(PROBS, LABELS) == pytest.approx((2 * 0.625 + 0.3 + 0.1) / 4)
    assert M.mce(PROBS, LABELS) == pytest.approx(0.625)
    # Brier: squared errors per row .015, .86, .14, 1.295 over 12 entries
    assert M.brier(PROBS, LABELS) == pytest.approx(2.31 / 12)
    assert M.nll(PROBS, LABELS) == pytest.approx(-np.mean(np.log([0.9, 0.3, 0.7, 0.1])))
    # one-vs-rest per class: class 0 -> (.1+.6+.2+.9)/4, class 1 -> (.05+.7+.3+.25)/4, class 2 -> (.05+2*.1+.65)/4
    np.testing.assert_allclose(M.per_class_ece(PROBS, LABELS), [0.45, 0.325, 0.225])
    assert M.ece(PROBS, LABELS, cls=0) == pytest.approx(0.45)
    assert M.mce(PROBS, LABELS, cls=0) == pytest.approx(0.9)
    assert M.sce(PROBS, LABELS) == pytest.approx(1.0 / 3.0)
    # one-hot labels are accepted as well
    assert M.ece(PROBS, np.eye(3)[LABELS]) == pytest.approx(M.ece(PROBS, LABELS))


def test_nll_clips_zero_probabilities():
    assert M.nll(np.array([[1.0, 0.0]]), np.array([1])) == pytest.approx(-np.log(1e-12))


def test_classification_report_names_and_values():
    rep = M.classification_report(PROBS, LABELS)
    assert list(rep) == ["ece", "mce", "sce", "brier", "nll", "accuracy"]
    assert all(isinstance(v, float) for v in rep.values())
    assert rep["ece"] == pytest.approx(0.4125)
    assert rep["accuracy"] == pytest.approx(0.5)


def test_classification_inputs_are_checked():
    with pytest.raises(UserError, match="labels"):
        M.ece(PROBS, np.array([0, 1, 3, 0]))
    with pytest.raises(UserError, match="NaN"):
        M.brier(np.full((2, 2), np.nan), np.array([0, 1]))


def test_coverage_curve_hand_example():
    residual = np.array([0.0, 0.99, -1.01, 3.0])
    sigma = np.ones(4)
    p1 = 2 * norm.cdf(1.0) - 1            # central interval ±1σ
    emp = M.coverage_curve(residual, sigma, np.array([0.0, p1, 1.0]))
    np.testing.assert_allclose(emp, [0.25, 0.5, 1.0])
    # 2-D inputs give one curve per coordinate
    emp2 = M.coverage_curve(np.stack([residual, 2 * residual], 1), np.ones((4, 2)), np.array([p1]))
    np.testing.assert_allclose(emp2, [[0.5, 0.25]])


def test_coverage_ece_zero_when_calibrated_and_large_when_not():
    rng = np.random.default_rng(1)
    sigma = rng.uniform(0.5, 5.0, size=(40000, 2))
    residual = rng.normal(size=sigma.shape) * sigma
    assert M.coverage_ece(residual, sigma) < 0.005
    assert M.miscalibration_area(residual, sigma) < 0.005
    too_wide = M.coverage_ece(residual, 2 * sigma)
    assert too_wide > 0.15
    # the area (trapezoid) and the level mean agree for 100 uniform levels
    assert M.miscalibration_area(residual, 2 * sigma) == pytest.approx(too_wide, rel=0.05)
    np.testing.assert_allclose(M.coverage_ece_per_coordinate(residual, 2 * sigma).mean(), too_wide)


def test_gaussian_nll_matches_scipy_and_floors_sigma():
    rng = np.random.default_rng(2)
    sigma = rng.uniform(0.5, 3.0, size=(50, 4))
    residual = rng.normal(size=(50, 4))
    assert M.gaussian_nll(residual, sigma) == pytest.approx(-norm.logpdf(residual, scale=sigma).mean())
    value = M.gaussian_nll(np.array([0.0, 1.0]), np.array([0.0, 1.0]))
    assert np.isfinite(value)
    assert value == pytest.approx(np.mean([-norm.logpdf(0.0, scale=1e-6), -norm.logpdf(1.0)]))


def test_rmsue_sharpness_fraction_inside_hand_example():
    residual = np.array([[1.0, -2.0], [0.5, 0.0], [-3.0, 1.0]])
    sigma = np.array([[2.0, 1.0], [1.0, 1.0], [1.0, 2.0]])
    assert M.rmsue(residual, sigma) == pytest.approx(np.sqrt(np.mean(np.array([1, 1, .5, 1, 2, 1]) ** 2)))
    assert M.sharpness(sigma) == pytest.approx(np.sqrt(12.0 / 6.0))
    all_inside, per_coord = M.fraction_inside(residual, sigma)
    assert all_inside == pytest.approx(1 / 3)          # only row 1 has both coordinates inside
    np.testing.assert_allclose(per_coord, [2 / 3, 2 / 3])


def test_ence_hand_example_and_calibrated_data():
    # two equal-count bins: σ = 1 (RMSE 1, gap 0) and σ = 2 (RMSE 1, gap .5)
    assert M.ence(np.ones(4), np.array([1.0, 2.0, 1.0, 2.0]), n_bins=2) == pytest.approx(0.25)
    rng = np.random.default_rng(3)
    sigma = rng.uniform(0.5, 5.0, size=(20000, 4))
    residual = rng.normal(size=sigma.shape) * sigma
    assert M.ence(residual, sigma) < 0.03
    assert M.ence(residual, 2 * sigma) == pytest.approx(0.5, abs=0.03)


def test_pit_curve_is_uniform_for_calibrated_gaussians():
    rng = np.random.default_rng(4)
    sigma = rng.uniform(0.5, 5.0, size=20000)
    x, f = M.pit_curve(rng.normal(size=sigma.shape) * sigma, sigma)
    assert x[0] == pytest.approx(0.01) and x[-1] == 1.0 and f.shape == x.shape
    np.testing.assert_allclose(f, x, atol=0.015)


def test_regression_report_names():
    rng = np.random.default_rng(5)
    pred = rng.uniform(0, 100, size=(200, 4))
    sigma = rng.uniform(1, 3, size=(200, 4))
    gt = pred + rng.normal(size=(200, 4)) * sigma
    rep = M.regression_report(pred, gt, sigma)
    for key in ("coverage_ece", "miscalibration_area", "nll", "rmsue", "sharpness", "inside_1sigma", "ence",
                "rmse", "mae", "coverage_ece/ymin", "inside_1sigma/xmax"):
        assert isinstance(rep[key], float), key
    assert rep["coverage_ece"] == pytest.approx(np.mean([rep[f"coverage_ece/{c}"] for c in
                                                         ("ymin", "xmin", "ymax", "xmax")]))


def test_regression_inputs_are_checked():
    with pytest.raises(CalibrationError, match="same"):
        M.coverage_ece(np.zeros((3, 4)), np.ones((3, 2)))
    with pytest.raises(CalibrationError, match="NaN"):
        M.gaussian_nll(np.zeros(2), np.array([1.0, np.nan]))
    with pytest.raises(CalibrationError, match=">= 0"):
        M.rmsue(np.zeros(2), np.array([1.0, -1.0]))
