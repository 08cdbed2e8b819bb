"""Box σ calibrators on synthetic Gaussian residuals with a known true σ."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.isotonic import IsotonicRegression

from uncertainty_det.calibration import metrics as M
from uncertainty_det.calibration._common import CalibrationError, CalibrationWarning
from uncertainty_det.calibration.box import (
    BoxIsoAll,
    BoxIsoPerClsCoo,
    BoxIsoPerCoo,
    BoxRelIsoPerClsCoo,
    BoxTSAll,
    BoxTSPerCoo,
    gaussian_scale,
)
from uncertainty_det.calibration.registry import BOX_CALIBRATORS

from .synthetic import gaussian_boxes

FIT = gaussian_boxes(20000, seed=10)
EVAL = gaussian_boxes(10000, seed=11)


def _eval_cal(cal):
    pred, gt, sigma, sigma_true, classes = EVAL
    return gt - pred, cal.transform(pred, sigma, classes), sigma_true


@pytest.mark.parametrize("cls", [BoxTSAll, BoxIsoAll, BoxIsoPerCoo])
def test_target_sigma_recovers_the_true_sigma(cls):
    pred, gt, sigma, _, classes = FIT
    cal = cls(target="sigma").fit(pred, gt, sigma, classes)
    residual, sigma_cal, sigma_true = _eval_cal(cal)
    assert M.coverage_ece(residual, EVAL[2]) > 0.2                     # 3x too wide before
    assert M.coverage_ece(residual, sigma_cal) < 0.02
    assert sigma_cal.mean() == pytest.approx(sigma_true.mean(), rel=0.03)


def test_target_abs_residual_estimates_mean_absolute_error():
    pred, gt, sigma, _, classes = FIT
    for cls in (BoxTSAll, BoxIsoPerCoo):
        cal = cls(target="abs_residual").fit(pred, gt, sigma, classes)
        _, sigma_cal, sigma_true = _eval_cal(cal)
        assert sigma_cal.mean() == pytest.approx(np.sqrt(2 / np.pi) * sigma_true.mean(), rel=0.03)


def test_ts_scale_is_the_closed_form_nll_optimum():
    pred, gt, sigma, _, _ = FIT
    r = gt - pred
    cal = BoxTSAll().fit(pred, gt, sigma)
    s = cal.scale_[0]
    assert s == pytest.approx(np.sqrt(np.mean(r ** 2 / sigma ** 2)))
    assert s == pytest.approx(1 / 3, rel=0.03)
    for f in (0.99, 1.01):
        assert M.gaussian_nll(r, s * sigma) < M.gaussian_nll(r, f * s * sigma)
    per = BoxTSPerCoo().fit(pred, gt, sigma)
    np.testing.assert_allclose(per.scale_, np.sqrt(np.mean(r ** 2 / sigma ** 2, axis=0)))
    np.testing.assert_allclose(per.transform(pred, sigma), sigma * per.scale_)
    # entries with σ = 0 are left out; a group without any σ > 0 keeps scale 1
    np.testing.assert_allclose(gaussian_scale(np.array([[2.0, 1.0], [9.0, 1.0]]), np.array([[1.0, 0.0], [0.0, 0.0]]),
                                              axis=0), [2.0, 1.0])


@pytest.mark.parametrize("name", sorted(BOX_CALIBRATORS))
@pytest.mark.parametrize("target", ["sigma", "abs_residual"])
def test_every_box_calibrator_reduces_held_out_coverage_ece(name, target):
    pred, gt, sigma, _, classes = FIT
    cal = BOX_CALIBRATORS[name](target=target).fit(pred, gt, sigma, classes)
    residual, sigma_cal, _ = _eval_cal(cal)
    assert sigma_cal.shape == (10000, 4)
    assert np.all(np.isfinite(sigma_cal)) and np.all(sigma_cal >= 0)
    before = M.coverage_ece(residual, EVAL[2])
    after = M.coverage_ece(residual, sigma_cal)
    assert after < 0.5 * before
    if target == "sigma":
        assert after < 0.02


def test_isotonic_breakpoints_reproduce_sklearn_predict():
    pred, gt, sigma, _, _ = FIT
    absr = np.abs(gt - pred)
    cal = BoxIsoPerCoo(target="abs_residual").fit(pred, gt, sigma)
    new = np.concatenate([EVAL[2][:, 1], [0.0, 1e-3, 1e3]])
    ref = IsotonicRegression(y_min=0.0, increasing=True, out_of_bounds="clip").fit(sigma[:, 1], absr[:, 1])
    np.testing.assert_allclose(cal.curve(new, coord=1), ref.predict(new), rtol=0, atol=1e-12)
    scaled = BoxIsoAll(target="sigma").fit(pred, gt, sigma)
    ref_all = IsotonicRegression(y_min=0.0, out_of_bounds="clip").fit(sigma.ravel(), absr.ravel() * np.sqrt(np.pi / 2))
    np.testing.assert_allclose(scaled.curve(new), ref_all.predict(new), rtol=0, atol=1e-9)


def test_per_class_groups_fall_back_to_per_coordinate_with_a_warning():
    pred, gt, sigma, _, classes = (a[:3000] for a in FIT)
    classes = classes.copy()
    classes[classes == 3] = 1
    classes[:3] = 3                      # class 3: 3 pairs < min_samples=5; class 4 (num_classes=4): none
    with pytest.warns(CalibrationWarning) as record:
        cal = BoxIsoPerClsCoo(min_samples=5, num_classes=4).fit(pred, gt, sigma, classes)
    messages = [str(w.message) for w in record]
    assert any("class 3 has 3 fitting pair" in m for m in messages)
    assert any("class 4 has 0 fitting pair" in m for m in messages)
    assert all(w.filename == __file__ for w in record)      # attributed to the caller, not the library
    assert cal.fallback_ == list(range(8, 16))
    per_coo = BoxIsoPerCoo().fit(pred, gt, sigma)
    test_cls = np.array([3, 4, 3, 1])
    out = cal.transform(pred[:4], sigma[:4], test_cls)
    np.testing.assert_allclose(out[:3], per_coo.transform(pred[:3], sigma[:3]))
    assert not np.allclose(out[3], per_coo.transform(pred[3:4], sigma[3:4])[0])
    with pytest.warns(CalibrationWarning, match="outside 1..4"):
        unknown = cal.transform(pred[:2], sigma[:2], np.array([7, 0]))
    np.testing.assert_allclose(unknown, per_coo.transform(pred[:2], sigma[:2]))


def test_relative_calibrator_scales_with_box_size_and_guards_zero_size():
    pred, gt, sigma, _, classes = FIT
    cal = BoxRelIsoPerClsCoo().fit(pred, gt, sigma, classes)
    boxes = np.array([[10.0, 10.0, 10.0, 10.0], [0.0, 0.0, 50.0, 80.0]])
    out = cal.transform(boxes, np.array([[1.0, 1.0, 1.0, 1.0], [5.0, 5.0, 5.0, 5.0]]), np.array([1, 2]))
    assert np.all(np.isfinite(out)) and np.all(out >= 0)
    # doubling the box and σ doubles the calibrated σ (relative model)
    big = cal.transform(2 * boxes[1:], np.full((1, 4), 10.0), np.array([2]))
    np.testing.assert_allclose(big, 2 * out[1:])
    with pytest.raises(CalibrationError, match="pred_boxes"):
        cal.transform(None, sigma[:2], classes[:2])


def test_input_checks():
    pred, gt, sigma, _, classes = (a[:50] for a in FIT)
    with pytest.raises(NotFittedError):
        BoxTSAll().transform(pred, sigma)
    with pytest.raises(CalibrationError, match="target"):
        BoxIsoAll(target="variance")
    with pytest.raises(CalibrationError, match="per class"):
        BoxIsoPerClsCoo().fit(pred, gt, sigma)
    with pytest.raises(CalibrationError, match="NaN"):
        BoxTSAll().fit(pred, gt, np.where(sigma > 5, np.nan, sigma))
    with pytest.raises(CalibrationError, match="0 matched"):
        BoxIsoAll().fit(np.zeros((0, 4)), np.zeros((0, 4)), np.zeros((0, 4)))
    with pytest.raises(CalibrationError, match="rows"):
        BoxTSAll().fit(pred, gt[:10], sigma)


def test_sigma_exactly_half_the_truth_gives_scale_two_and_calibrated_coverage():
    rng = np.random.default_rng(5)
    sigma_true = rng.uniform(1.0, 8.0, (50_000, 4))
    pred = np.tile([10.0, 10.0, 60.0, 60.0], (50_000, 1))
    gt = pred + rng.normal(size=sigma_true.shape) * sigma_true
    cal = BoxTSAll().fit(pred, gt, sigma_true / 2)
    assert cal.scale_[0] == pytest.approx(2.0, rel=0.01)
    assert M.coverage_ece(gt - pred, sigma_true / 2) > 0.2
    assert M.coverage_ece(gt - pred, cal.transform(pred, sigma_true / 2)) < 0.01
