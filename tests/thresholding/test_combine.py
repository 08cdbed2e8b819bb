"""Combination optimiser and ThresholdModel: normalisation, informative weights, seeds, JSON, per-class."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from uncertainty_det.thresholding import (
    COMBINATION, MinMaxNormaliser, OptimiserSettings, ThresholdingError, ThresholdModel, fit_combination,
    fit_threshold_model, load_threshold_model, save_threshold_model, threshold_metrics,
)
from uncertainty_det.thresholding.combine import combine, objective_value, simplex_weights

IOUS = np.round(np.arange(0.5, 0.76, 0.05), 2)
FAST = OptimiserSettings(seed=3, maxiter=30, popsize=8)


def _matches(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """A gt_centric-like Matches table: entropy tracks the IoU, ``noise`` does not, al σ is weakly informative."""
    rng = np.random.default_rng(seed)
    iou = rng.uniform(0.3, 1.0, n)
    cls = rng.integers(1, 3, n)
    gt_cls = np.where(rng.uniform(size=n) < 0.9, cls, 3 - cls)
    h = rng.uniform(10, 50, n)
    al = (0.02 + 0.1 * (1 - iou) + rng.uniform(0, 0.1, n))[:, None] * h[:, None]
    return pd.DataFrame({
        "image_id": rng.integers(0, 50, n).astype(np.int64), "det": np.arange(n, dtype=np.int64),
        "class_id": cls.astype(np.int64), "score": rng.uniform(0.3, 1, n),
        "ymin": np.zeros(n), "xmin": np.zeros(n), "ymax": h, "xmax": h,
        "entropy": (1 - iou) + 0.5 * (gt_cls != cls) + rng.normal(0, 0.1, n),
        "noise": rng.normal(0, 5, n) + 3,
        "al_ymin": al[:, 0], "al_xmin": al[:, 0], "al_ymax": al[:, 0], "al_xmax": al[:, 0],
        "kind": "matched", "iou": iou, "gt_class_id": gt_cls.astype(np.int64),
    })


@pytest.fixture(scope="module")
def matches() -> pd.DataFrame:
    return _matches()


@pytest.fixture(scope="module")
def model(matches) -> ThresholdModel:
    return fit_threshold_model(matches, ["noise", "entropy"], budget=0.95, mode="cd", settings=FAST)


def test_minmax_normaliser():
    n = MinMaxNormaliser.fit(np.array([[0.0, 10.0, 5.0], [2.0, 30.0, 5.0]]))
    np.testing.assert_allclose(n.transform(np.array([[1.0, 20.0, 5.0]])), [[0.5, 0.5, 0.0]])
    np.testing.assert_allclose(n.transform(np.array([[-1.0, 40.0, 9.0]])), [[0.0, 1.0, 0.0]])   # clipped
    assert np.isnan(n.transform(np.array([[np.nan, 10.0, 5.0]]))[0, 0])
    back = MinMaxNormaliser.from_dict(json.loads(json.dumps(n.to_dict())))
    np.testing.assert_array_equal(back.lo, n.lo)
    np.testing.assert_array_equal(back.hi, n.hi)
    with pytest.raises(ThresholdingError):
        n.transform(np.zeros((1, 2)))
    with pytest.raises(ThresholdingError, match="NaN"):
        MinMaxNormaliser.fit(np.array([[np.nan]]))


def test_simplex_and_combine():
    np.testing.assert_allclose(simplex_weights([1.0, 3.0]), [0.25, 0.75])
    np.testing.assert_allclose(simplex_weights([0.0, 0.0]), [0.5, 0.5])
    u = np.array([[0.0, 1.0], [1.0, 0.0]])
    np.testing.assert_allclose(combine(u, [0.25, 0.75]), [0.75, 0.25])
    np.testing.assert_allclose(combine(u, np.array([[0.5, 0.5], [1.0, 0.0]]), np.array([0, 1])), [0.5, 1.0])


def test_informative_uncertainty_gets_the_weight(model, matches):
    w = dict(zip(model.uncertainties, model.weights))
    assert w["entropy"] > 0.5 and w["noise"] < 0.5
    assert model.weights.sum() == pytest.approx(1.0) and np.all(model.weights >= 0)
    best_single = max(model.metrics[n]["fd_at_cd"] for n in ("noise", "entropy"))
    assert model.metrics[COMBINATION]["fd_at_cd"] >= best_single
    assert model.metrics["entropy"]["auroc"] > 0.8 > 0.6 > model.metrics["noise"]["auroc"]
    # the operating threshold is the mean of the per-IoU budget thresholds of the combined uncertainty
    assert model.thresholds.shape == (6,)
    assert model.operating_threshold == pytest.approx(np.mean(model.thresholds))
    np.testing.assert_allclose(model.iou_thresholds, IOUS)


def test_thresholds_match_the_metrics(model, matches):
    u = model.score(matches)
    cd = matches["iou"].to_numpy()[None, :] >= IOUS[:, None]
    cd &= (matches["class_id"].to_numpy() == matches["gt_class_id"].to_numpy())[None, :]
    m = threshold_metrics(u, cd, 0.95, "cd", IOUS)
    np.testing.assert_array_equal(m.budget.threshold, model.thresholds)
    assert np.all(m.budget.cd_kept >= 0.95)
    acc = model.accept(matches)
    np.testing.assert_array_equal(acc, u < model.operating_threshold)


def test_same_seed_same_result(matches):
    a = fit_threshold_model(matches, ["noise", "entropy", "al_rel"], settings=FAST)
    b = fit_threshold_model(matches, ["noise", "entropy", "al_rel"], settings=FAST)
    np.testing.assert_array_equal(a.weights, b.weights)
    np.testing.assert_array_equal(a.thresholds, b.thresholds)
    assert a.to_dict() == b.to_dict()


def test_json_round_trip(model, matches, tmp_path):
    d = json.loads(json.dumps(model.to_dict()))
    back = ThresholdModel.from_dict(d)
    np.testing.assert_array_equal(back.score(matches), model.score(matches))
    np.testing.assert_array_equal(back.accept(matches), model.accept(matches))
    assert back.to_dict() == model.to_dict()
    path = save_threshold_model(model, tmp_path / "threshold" / "model.json")
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    loaded = load_threshold_model(path)
    np.testing.assert_array_equal(loaded.score(matches), model.score(matches))


def test_bad_model_files(model, tmp_path):
    with pytest.raises(ThresholdingError, match="threshold stage first"):
        load_threshold_model(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ThresholdingError, match="cannot be read"):
        load_threshold_model(tmp_path / "bad.json")
    d = model.to_dict()
    with pytest.raises(ThresholdingError, match="not a threshold model"):
        ThresholdModel.from_dict({**d, "format": "x"})
    with pytest.raises(ThresholdingError, match="newer"):
        ThresholdModel.from_dict({**d, "version": 99})
    with pytest.raises(ThresholdingError, match="malformed"):
        ThresholdModel.from_dict({**d, "weights": [1.0]})
    with pytest.raises(ThresholdingError, match="malformed"):
        ThresholdModel.from_dict({k: v for k, v in d.items() if k != "normaliser"})
    with pytest.raises(ThresholdingError, match="budget"):
        ThresholdModel.from_dict({**d, "budget": 1.0})


def test_score_on_new_data_clips_and_propagates_nan(model, matches):
    new = matches.iloc[:3].copy()
    new["entropy"] = [1e6, -1e6, np.nan]
    new["noise"] = 0.0
    u = model.score(new)
    assert 0.0 <= u[0] <= 1.0 and 0.0 <= u[1] <= 1.0 and np.isnan(u[2])
    assert not model.accept(new)[2]
    with pytest.raises(ThresholdingError, match="entropy"):
        model.score(new.drop(columns=["entropy"]))


def test_mode_fd_and_auroc_objective(matches):
    m = fit_threshold_model(matches, ["noise", "entropy"], budget=0.9, mode="fd", settings=FAST)
    u = m.score(matches)
    ev = m.evaluate(matches)
    assert set(ev) == {"noise", "entropy", COMBINATION}
    removed = ev[COMBINATION].budget.fd_removed
    assert np.all(removed >= 0.9)
    assert ev[COMBINATION].summary()["cd_at_fd"] >= ev["noise"].summary()["cd_at_fd"]
    assert "op_cd_kept" in ev[COMBINATION].extra
    assert np.isfinite(u).all()
    a = fit_threshold_model(matches, ["noise", "entropy"], objective="auroc", settings=FAST)
    assert dict(zip(a.uncertainties, a.weights))["entropy"] > 0.5


def test_objective_value_nan_counts_zero():
    u = np.array([0.1, 0.9])
    cd = np.array([[True, False], [True, True]])                   # second row has no FDs
    assert objective_value(u, cd, 0.9, "cd") == pytest.approx(0.5)


def test_per_class_weights():
    rng = np.random.default_rng(5)
    n = 400
    cls = np.where(np.arange(n) < 380, np.where(np.arange(n) % 2 == 0, 1, 2), 3)   # class 3: only 20 rows
    cd1 = rng.uniform(size=n) < 0.6
    cd = np.stack([cd1, cd1])
    noise = rng.uniform(size=(n, 2))
    good = np.where(cd1, rng.uniform(0, 0.6, n), rng.uniform(0.4, 1.0, n))
    # class 1: measure 0 is informative, class 2: measure 1
    values = np.where((cls == 1)[:, None], np.stack([good, noise[:, 1]], 1), np.stack([noise[:, 0], good], 1))
    m = fit_combination(values, cd, ["a", "b"], iou_thresholds=[0.5, 0.6], classes=cls, per_class=True,
                        settings=FAST, min_class_samples=30)
    info = m.info["class_info"]
    assert info["eligible_classes"] == [1, 2]
    assert 3 not in m.class_weights
    assert info["final_objective"] >= info["global_objective"]
    for c, w in m.class_weights.items():
        assert w.sum() == pytest.approx(1.0)
    assert m.class_weights[1][0] > 0.5 and m.class_weights[2][1] > 0.5
    assert info["final_objective"] > info["global_objective"]
    frame = pd.DataFrame({"a": values[:, 0], "b": values[:, 1], "class_id": cls})
    back = ThresholdModel.from_dict(json.loads(json.dumps(m.to_dict())))
    np.testing.assert_array_equal(back.score(frame), m.score(frame))
    # identical per-class result for the same seed
    m2 = fit_combination(values, cd, ["a", "b"], iou_thresholds=[0.5, 0.6], classes=cls, per_class=True,
                         settings=FAST, min_class_samples=30)
    assert m2.to_dict() == m.to_dict()
    with pytest.raises(ThresholdingError, match="class_id"):
        m.score(frame.drop(columns=["class_id"]))


def test_fit_errors(matches):
    with pytest.raises(ThresholdingError, match="budget"):
        fit_threshold_model(matches, ["entropy"], budget=1.0)
    with pytest.raises(ThresholdingError, match="mode"):
        fit_threshold_model(matches, ["entropy"], mode="both")
    with pytest.raises(ThresholdingError, match="ep_ymin"):
        fit_threshold_model(matches, ["entropy", "ep_rel"])
    with pytest.raises(ThresholdingError, match="both correct and false"):
        fit_threshold_model(matches.assign(iou=1.0, gt_class_id=matches["class_id"]), ["entropy"])
    with pytest.raises(ThresholdingError, match="objective"):
        fit_threshold_model(matches, ["entropy"], objective="f1")
    with pytest.raises(ThresholdingError, match="classes"):
        fit_combination(np.zeros((3, 1)), np.zeros((6, 3), bool), ["a"], per_class=True)


def test_single_uncertainty(matches):
    m = fit_threshold_model(matches, ["entropy"], settings=FAST)
    np.testing.assert_array_equal(m.weights, [1.0])
    assert m.metrics[COMBINATION]["fd_at_cd"] == pytest.approx(m.metrics["entropy"]["fd_at_cd"])


def test_operating_threshold_mean_or_one_iou(model, matches, tmp_path):
    assert model.operating_threshold == pytest.approx(float(np.nanmean(model.thresholds)))
    assert model.info["operating_iou"] is None
    at_05 = fit_threshold_model(matches, ["noise", "entropy"], budget=0.95, mode="cd", settings=FAST,
                                operating_iou=0.5)
    np.testing.assert_array_equal(at_05.thresholds, model.thresholds)      # same seed: same fit
    assert at_05.operating_threshold == model.thresholds[0]
    assert load_threshold_model(save_threshold_model(at_05, tmp_path / "op.json")).info["operating_iou"] == 0.5
    with pytest.raises(ThresholdingError, match="operating_iou 0.55 is not one of"):
        fit_threshold_model(matches, ["entropy"], iou_thresholds=[0.5, 0.6], operating_iou=0.55, settings=FAST)
