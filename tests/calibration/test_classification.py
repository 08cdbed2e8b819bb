"""Class calibrators: NLL-optimal temperatures, isotonic breakpoints, fallbacks, the MC-aware wrapper."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.isotonic import IsotonicRegression

from uncertainty_det.calibration import metrics as M
from uncertainty_det.calibration._common import CalibrationError, CalibrationWarning
from uncertainty_det.calibration.classification import (
    IsoAll,
    IsoPerClass,
    MCClassCalibrator,
    TSAll,
    TSPerClass,
    fit_temperature,
    temperature_nll,
)
from uncertainty_det.tables import entropy_bits, softmax

from .synthetic import calibrated_logits

Z, Y = calibrated_logits()


@pytest.mark.parametrize("t_true", [0.5, 2.5])
def test_ts_all_recovers_known_temperature(t_true):
    cal = TSAll().fit(Z * t_true, Y)
    assert cal.temperature_.shape == (1,)
    assert cal.temperature_[0] == pytest.approx(t_true, rel=0.04)
    np.testing.assert_allclose(cal.transform(Z * t_true), softmax(Z * t_true / cal.temperature_[0]))
    assert M.ece(cal.transform(Z * t_true), Y) < M.ece(softmax(Z * t_true), Y)


def test_ts_percls_recovers_known_temperatures():
    t_true = np.array([0.7, 1.5, 2.5, 4.0])
    cal = TSPerClass().fit(Z * t_true, Y)
    np.testing.assert_allclose(cal.temperature_, t_true, rtol=0.05)
    np.testing.assert_allclose(cal.transform(Z * t_true), softmax(Z * t_true / cal.temperature_))


def test_temperature_is_the_nll_optimum():
    z, y = Z[:3000] * 1.7, Y[:3000]
    t = fit_temperature(z, y)
    _, grad = temperature_nll(np.log(t), z, y)
    assert abs(grad[0]) < 1e-6
    grid = np.linspace(np.log(t[0]) - 0.5, np.log(t[0]) + 0.5, 1001)
    values = [temperature_nll(np.array([g]), z, y)[0] for g in grid]
    assert np.exp(grid[int(np.argmin(values))]) == pytest.approx(t[0], rel=1e-3)
    assert temperature_nll(np.log(t), z, y)[0] <= min(values) + 1e-12
    # per class: zero gradient, and the analytic gradient matches finite differences
    tc = fit_temperature(z, y, per_class=True)
    assert np.max(np.abs(temperature_nll(np.log(tc), z, y)[1])) < 1e-6
    theta = np.array([0.1, -0.2, 0.3, 0.0])
    eps = 1e-6
    fd = [(temperature_nll(theta + eps * e, z, y)[0] - temperature_nll(theta - eps * e, z, y)[0]) / (2 * eps)
          for e in np.eye(4)]
    np.testing.assert_allclose(temperature_nll(theta, z, y)[1], fd, atol=1e-7)


@pytest.mark.parametrize("cls", [IsoAll, IsoPerClass])
def test_isotonic_outputs_are_probabilities_and_improve_calibration(cls):
    z = Z * 3.0                          # over-confident
    cal = cls().fit(z[:15000], Y[:15000])
    probs = cal.transform(z[15000:])
    assert probs.shape == (5000, 4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert probs.min() >= 0.0 and probs.max() <= 1.0
    assert M.ece(probs, Y[15000:]) < 0.5 * M.ece(softmax(z[15000:]), Y[15000:])


def test_isotonic_breakpoints_reproduce_sklearn_predict():
    z, y = Z[:2000] * 2.0, Y[:2000]
    p = softmax(z)
    new = np.concatenate([softmax(Z[2000:2500] * 2.0).ravel(), [-0.5, 0.0, 1.0, 1.5]])   # incl. out of range
    ref = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p.ravel(), np.eye(4)[y].ravel())
    cal = IsoAll.from_dict(IsoAll().fit(z, y).to_dict())
    np.testing.assert_allclose(cal.map_(new), ref.predict(new), rtol=0, atol=1e-12)
    ref2 = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p[:, 2], (y == 2).astype(float))
    per = IsoPerClass.from_dict(IsoPerClass().fit(z, y).to_dict())
    np.testing.assert_allclose(per.maps_[2](new), ref2.predict(new), rtol=0, atol=1e-12)


def test_iso_percls_falls_back_for_a_class_without_positives():
    z, y = Z[:3000], Y[:3000].copy()
    y[y == 2] = 0                        # class 2 never occurs
    with pytest.warns(CalibrationWarning, match="class index 2"):
        cal = IsoPerClass().fit(z, y)
    assert cal.fallback_ == [2]
    shared = IsoAll().fit(z, y)
    np.testing.assert_array_equal(cal.maps_[2].x, shared.map_.x)
    np.testing.assert_array_equal(cal.maps_[2].y, shared.map_.y)
    np.testing.assert_allclose(cal.transform(z).sum(axis=1), 1.0)


def test_input_checks():
    with pytest.raises(NotFittedError):
        TSAll().transform(Z[:3])
    cal = TSAll().fit(Z[:100], Y[:100])
    with pytest.raises(CalibrationError, match="4"):
        cal.transform(Z[:3, :3])
    with pytest.raises(CalibrationError, match="labels"):
        TSAll().fit(Z[:3], np.array([0, 1, 7]))
    with pytest.raises(CalibrationError, match="0 samples"):
        IsoAll().fit(np.zeros((0, 4)), np.zeros(0, dtype=int))


@pytest.mark.parametrize("base_cls", [TSAll, TSPerClass, IsoAll, IsoPerClass])
def test_mc_with_zero_std_equals_base(base_cls):
    z, y = Z[:2000], Y[:2000]
    base = base_cls().fit(z, y)
    mc = MCClassCalibrator(base_cls(), samples=5, seed=3).fit(z, y, np.zeros_like(z))
    out = mc.transform_mc(z[:50], np.zeros((50, 4)))
    np.testing.assert_array_equal(out.probs, base.transform(z[:50]))
    np.testing.assert_array_equal(out.probs_std, 0.0)
    np.testing.assert_allclose(out.entropy, entropy_bits(out.probs))
    np.testing.assert_array_equal(mc.transform(z[:50]), out.probs)


def test_mc_uses_each_detections_own_std_and_is_seeded():
    z, y = Z[:2000], Y[:2000]
    std = np.abs(np.random.default_rng(5).normal(0.0, 1.0, size=z.shape))
    mc = MCClassCalibrator(TSAll(), samples=10, seed=1).fit(z, y, std)
    lz, ls = z[:6].copy(), std[:6].copy()
    ls[0] = 0.0                          # the first detection is certain: its std must stay 0 (reference D5)
    ls[1] = 3.0
    out = mc.transform_mc(lz, ls)
    assert out.probs.shape == out.probs_std.shape == (6, 4) and out.entropy.shape == (6,)
    np.testing.assert_allclose(out.probs[0], mc.base.transform(lz[:1])[0])
    np.testing.assert_allclose(out.probs_std[0], 0.0, atol=1e-12)
    assert np.all(out.probs_std[1] > 0)
    np.testing.assert_allclose(out.probs.sum(axis=1), 1.0)
    np.testing.assert_allclose(out.entropy, entropy_bits(out.probs))
    again = mc.transform_mc(lz, ls)
    np.testing.assert_array_equal(again.probs, out.probs)
    assert not np.array_equal(MCClassCalibrator(mc.base, 10, seed=2).transform_mc(lz, ls).probs, out.probs)


def test_mc_fit_samples_around_the_logits():
    # the base is fitted on samples drawn with the given std, so a large std changes the fitted temperature
    z, y = Z[:2000] * 2.0, Y[:2000]
    t0 = MCClassCalibrator(TSAll()).fit(z, y, np.zeros_like(z)).base.temperature_[0]
    t1 = MCClassCalibrator(TSAll()).fit(z, y, np.full_like(z, 2.0)).base.temperature_[0]
    assert t1 != pytest.approx(t0, rel=0.01)
    with pytest.raises(CalibrationError, match="shape"):
        MCClassCalibrator(TSAll()).fit(z, y, np.zeros((3, 4)))


def test_mc_transform_in_chunks(monkeypatch):
    from uncertainty_det.calibration import classification

    z, y = Z[:500], Y[:500]
    std = np.full_like(z, 0.5)
    std[3] = 0.0
    mc = MCClassCalibrator(IsoAll(), samples=8, seed=0).fit(z, y, std)
    monkeypatch.setattr(classification, "MC_CHUNK_ELEMENTS", 100)          # 3 detections per chunk
    out = mc.transform_mc(z[:10], std[:10])
    np.testing.assert_array_equal(mc.transform_mc(z[:10], std[:10]).probs, out.probs)
    np.testing.assert_allclose(out.probs.sum(axis=1), 1.0)
    np.testing.assert_allclose(out.probs_std[3], 0.0, atol=1e-12)
    np.testing.assert_allclose(out.probs[3], mc.base.transform(z[3:4])[0])
