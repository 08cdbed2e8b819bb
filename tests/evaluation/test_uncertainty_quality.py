"""Uncertainty-quality metrics: closed forms and hand-computed cases, Matches-table helpers."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from uncertainty_det.evaluation.uncertainty_quality import (
    SUMMARY_KEYS, UncertaintyQualityError, auroc_tp_fp, ause, ause_random, box_uncertainty_error,
    is_true_positive, oracle_curve, pit_calibration_error, pit_curve, pit_values, random_curve,
    relative_sigma_residual, sigma_residual_px, sparsification_curve, spearman, summarise_uncertainty,
    uncertainty_quality_table, uncertainty_values,
)


def test_spearman_hand_and_degenerate():
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)    # 1 - 6*2/(4*15)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    assert math.isnan(spearman([1.0], [2.0]))
    assert spearman([1, 2, np.nan, 3], [1, 2, 0, 3]) == pytest.approx(1.0)  # non-finite pair dropped
    with pytest.raises(UncertaintyQualityError):
        spearman([1, 2], [1, 2, 3])


def test_auroc_tp_fp():
    assert auroc_tp_fp([0.1, 0.2, 0.8, 0.9], [True, True, False, False]) == pytest.approx(1.0)
    assert auroc_tp_fp([0.8, 0.9, 0.1, 0.2], [True, True, False, False]) == pytest.approx(0.0)
    assert auroc_tp_fp([1, 2, 3, 4], [True, False, True, False]) == pytest.approx(0.75)
    assert auroc_tp_fp([1, 1, 1, 1], [True, False, True, False]) == pytest.approx(0.5)  # ties count half
    assert math.isnan(auroc_tp_fp([1, 2], [True, True]))


def test_sparsification_hand_values():
    e = np.array([1.0, 2.0, 3.0, 4.0])
    f = [0.0, 0.25, 0.5, 0.75]
    np.testing.assert_allclose(sparsification_curve(e, e, f), [2.5, 2.0, 1.5, 1.0])
    np.testing.assert_allclose(sparsification_curve(-e, e, f), [2.5, 3.0, 3.5, 4.0])
    np.testing.assert_allclose(oracle_curve(e, f), [2.5, 2.0, 1.5, 1.0])
    np.testing.assert_allclose(random_curve(e, f), [2.5] * 4)
    assert ause(-e, e, [0.0, 0.5]) == pytest.approx(0.5)           # trapezoid of (0, 3.5 - 1.5) over 0.5
    assert ause_random(e, [0.0, 0.5]) == pytest.approx(0.25)


def test_sparsification_ties_are_split_by_expectation():
    # the tie group {e=0, e=3} is halved at 2/3 removed: expected mean 1.5 whatever the order
    np.testing.assert_allclose(sparsification_curve([1, 1, 2], [0, 3, 6], [0, 1 / 3, 2 / 3]), [3.0, 1.5, 1.5])
    np.testing.assert_allclose(sparsification_curve([1, 1, 2], [3, 0, 6], [0, 1 / 3, 2 / 3]), [3.0, 1.5, 1.5])
    e = np.random.default_rng(0).exponential(size=50)
    np.testing.assert_allclose(sparsification_curve(np.zeros(50), e), random_curve(e))
    assert ause(np.zeros(50), e) == pytest.approx(ause_random(e))


def test_perfect_uncertainty_has_zero_ause_and_random_does_not():
    rng = np.random.default_rng(1)
    e = rng.exponential(size=3000)
    u_perfect = np.log1p(e) * 7.0                                  # any increasing transform of the error
    np.testing.assert_allclose(sparsification_curve(u_perfect, e), oracle_curve(e))
    assert ause(u_perfect, e) == pytest.approx(0.0, abs=1e-12)
    u_random = rng.uniform(size=e.size)
    a = ause(u_random, e)
    assert a > 0.1 * ause_random(e)
    assert a / ause_random(e) == pytest.approx(1.0, abs=0.15)
    u_noisy = np.log(e) + rng.normal(0, 1, e.size)
    assert 0 < ause(u_noisy, e) < ause(u_random, e)
    with pytest.raises(UncertaintyQualityError):
        sparsification_curve(e, e, [0.0, 1.0])


def test_pit_values_and_curve():
    assert pit_values(np.array([0.0, 1.0]), np.array([1.0, 0.0]))[0] == pytest.approx(0.5)
    assert pit_values(np.array([1.0]), np.array([0.0]))[0] == pytest.approx(1.0)   # σ floored, not NaN
    xs, c = pit_curve(np.array([0.1, 0.5, 0.9]), [0.05, 0.5, 1.0])
    np.testing.assert_allclose(c, [0.0, 2 / 3, 1.0])
    _, c2 = pit_curve(np.array([[0.1, 0.9], [0.5, 0.9], [0.9, 0.9]]), [0.05, 0.5, 1.0])
    assert c2.shape == (3, 2)
    np.testing.assert_allclose(c2[:, 1], [0, 0, 1])
    rng = np.random.default_rng(2)
    sigma = rng.uniform(1, 5, size=(20000, 4))
    r = rng.normal(0, sigma)
    assert pit_calibration_error(pit_values(r, sigma)) < 0.01
    assert pit_calibration_error(pit_values(r, sigma / 2)) > 0.05  # overconfident: S-shaped curve


def test_summarise_uncertainty_keys_and_nan_rows():
    u = np.array([0.1, 0.2, 0.3, 0.9, 0.8])
    e = np.array([1.0, 2.0, 3.0, np.nan, np.nan])                  # background rows: no error
    tp = np.array([True, True, True, False, False])
    s = summarise_uncertainty(u, e, tp, fractions=[0.0, 0.5])
    assert tuple(s) == SUMMARY_KEYS and all(isinstance(v, float) for v in s.values())
    assert s["n"] == 3 and s["n_tp"] == 3 and s["n_fp"] == 2
    assert s["spearman"] == pytest.approx(1.0) and s["auroc_tp_fp"] == pytest.approx(1.0)
    assert s["ause"] == pytest.approx(0.0) and s["ause_rel"] == pytest.approx(0.0)
    assert s["mean_error"] == pytest.approx(2.0)
    s2 = summarise_uncertainty(u)
    assert s2["n"] == 0 and math.isnan(s2["spearman"]) and math.isnan(s2["auroc_tp_fp"])


# ---------------------------------------------------------------------------------------------
# Matches-table helpers


def _matches(n: int = 400, seed: int = 3) -> pd.DataFrame:
    """Synthetic matched rows whose residuals follow the aleatoric σ, plus a few background rows."""
    rng = np.random.default_rng(seed)
    gt_lo = rng.uniform(0, 100, size=(n, 2))
    size = rng.uniform(10, 60, size=(n, 2))
    gt = np.concatenate([gt_lo, gt_lo + size], axis=1)             # ymin, xmin, ymax, xmax
    al = rng.uniform(0.5, 6, size=(n, 4))
    pred = gt + rng.normal(0, al)
    df = pd.DataFrame(pred, columns=["ymin", "xmin", "ymax", "xmax"])
    df[["gt_ymin", "gt_xmin", "gt_ymax", "gt_xmax"]] = gt
    for k, c in enumerate(("ymin", "xmin", "ymax", "xmax")):
        df[f"al_{c}"] = al[:, k]
        df[f"al_{c}_cal"] = al[:, k] * 1.5
        df[f"ep_{c}"] = rng.uniform(0.01, 0.1, n) * size[:, k % 2]   # relative ep: independent noise
    df["class_id"] = rng.integers(1, 3, n)
    df["gt_class_id"] = np.where(rng.uniform(size=n) < 0.9, df["class_id"], 3 - df["class_id"])
    df["entropy"] = np.where(df["class_id"] == df["gt_class_id"], 0.2, 0.9) + rng.uniform(0, 0.05, n)
    df["score"] = rng.uniform(0.3, 1, n)
    df["iou"] = 0.9
    df["kind"] = "matched"
    bg = df.iloc[:5].copy()
    bg[["gt_ymin", "gt_xmin", "gt_ymax", "gt_xmax"]] = np.nan
    bg["gt_class_id"], bg["iou"], bg["kind"] = -1, 0.0, "background"
    miss = df.iloc[:2].copy()
    miss[["ymin", "xmin", "ymax", "xmax", "score"]] = np.nan
    miss["kind"] = "missed"
    return pd.concat([df, bg, miss], ignore_index=True)


def test_sigma_residual_helpers_hand():
    m = pd.DataFrame({"ymin": [0.0], "xmin": [0.0], "ymax": [10.0], "xmax": [20.0],
                      "gt_ymin": [1.0], "gt_xmin": [-2.0], "gt_ymax": [11.0], "gt_xmax": [18.0],
                      "al_ymin": [1.0], "al_xmin": [2.0], "al_ymax": [3.0], "al_xmax": [4.0], "kind": ["matched"]})
    s, r = sigma_residual_px(m, "al")
    np.testing.assert_allclose(s, [[1, 2, 3, 4]])
    np.testing.assert_allclose(r, [[1, -2, 1, -2]])                # gt - prediction
    rs, rr = relative_sigma_residual(m, "al")
    np.testing.assert_allclose(rs, [[0.1, 0.1, 0.3, 0.2]])         # / predicted [h, w, h, w] = [10, 20]
    np.testing.assert_allclose(rr, [[0.1, -0.1, 0.1, -0.1]])       # / GT [h, w, h, w] = [10, 20]
    u, e = box_uncertainty_error(m, "al")
    assert u[0] == pytest.approx(0.175) and e[0] == pytest.approx(0.1)
    with pytest.raises(Exception, match="al_ymin_cal"):
        sigma_residual_px(m, "al", calibrated=True)


def test_uncertainty_quality_table_on_matches():
    m = _matches()
    tp = is_true_positive(m, 0.5)
    assert tp.sum() == ((m["kind"] == "matched") & (m["class_id"] == m["gt_class_id"])).sum()
    t = uncertainty_quality_table(m)
    assert list(t.columns) == ["uncertainty", "calibrated", *SUMMARY_KEYS]
    # ep has no _cal columns, entropy_cal and ep_cls are absent: skipped
    assert [tuple(r) for r in t[["uncertainty", "calibrated"]].itertuples(index=False)] == [
        ("al", False), ("al", True), ("ep", False), ("entropy", False)]
    al = t.set_index(["uncertainty", "calibrated"]).loc[("al", False)]
    ep = t.set_index(["uncertainty", "calibrated"]).loc[("ep", False)]
    ent = t.set_index(["uncertainty", "calibrated"]).loc[("entropy", False)]
    assert al["n"] == 400 and al["n_tp"] + al["n_fp"] == 405
    assert al["spearman"] > 0.3 and abs(ep["spearman"]) < 0.25     # al drives the residuals, ep is noise
    assert al["ause_rel"] < ep["ause_rel"]
    assert ent["auroc_tp_fp"] > 0.9                                # entropy flags misclassifications
    # a global σ scale leaves every ranking metric unchanged
    alc = t.set_index(["uncertainty", "calibrated"]).loc[("al", True)]
    assert alc["spearman"] == pytest.approx(al["spearman"]) and alc["ause"] == pytest.approx(al["ause"])
    u = uncertainty_values(m, "al")
    assert u.shape == (len(m),)
    with pytest.raises(UncertaintyQualityError):
        uncertainty_values(m, "ep_cls")


def test_spearman_matches_scipy_on_random():
    rng = np.random.default_rng(4)
    u, e = rng.normal(size=200), rng.normal(size=200)
    assert spearman(u, e) == pytest.approx(stats.spearmanr(u, e).statistic)
