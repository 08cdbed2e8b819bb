"""Budget thresholds and metrics: hand-computed ROC cases, sklearn references, budget semantics, JSD."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon
from sklearn.metrics import roc_auc_score, roc_curve

from uncertainty_det.thresholding import ThresholdingError
from uncertainty_det.thresholding.metrics import (
    auroc, budget_threshold, jsd, metrics_table, operating_rates, roc_table, threshold_metrics,
)

# 6 CDs (u 0.1..0.5 and 0.7) and 4 FDs (0.6, 0.8, 0.9, 1.0). Sorted by u descending:
# 1.0F 0.9F 0.8F 0.7C 0.6F 0.5C 0.4C 0.3C 0.2C 0.1C
U = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
CD = np.array([1, 1, 1, 1, 1, 0, 1, 0, 0, 0], dtype=bool)


def test_roc_vertices_and_auroc_hand():
    roc = roc_table(U, CD)
    np.testing.assert_array_equal(roc.removed_cd[0], [0, 0, 0, 0, 1, 1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(roc.removed_fd[0], [0, 1, 2, 3, 3, 4, 4, 4, 4, 4, 4])
    # FD > CD pairs: 3 FDs above all 6 CDs + FD 0.6 above 5 CDs = 23 of 24
    assert roc.auroc()[0] == pytest.approx(23 / 24)
    assert auroc(U, CD)[0] == pytest.approx(23 / 24)


def test_mode_cd_hand():
    # b = 0.8: floor(0.2 * 6) = 1 CD may go -> remove u >= 0.6 (CD 0.7 and all 4 FDs)
    r = budget_threshold(U, CD, 0.8, "cd")
    assert r.threshold[0] == 0.6
    assert r.cd_kept[0] == pytest.approx(5 / 6) and r.fd_removed[0] == 1.0
    assert r.fd_at_cd[0] == pytest.approx(1.0) and r.metric[0] == r.fd_at_cd[0]
    assert r.cost[0] == pytest.approx(0.0)
    # b = 0.9: no CD may go -> remove u >= 0.8; ROC at fpr 0.1 lies on (0, 0.75)-(1/6, 0.75)
    r = budget_threshold(U, CD, 0.9, "cd")
    assert r.threshold[0] == 0.8
    assert r.cd_kept[0] == 1.0 and r.fd_removed[0] == pytest.approx(0.75)
    assert r.fd_at_cd[0] == pytest.approx(0.75)


def test_mode_fd_hand():
    # b = 0.5: ceil(0.5 * 4) = 2 FDs must go -> threshold 0.9, no CD lost
    r = budget_threshold(U, CD, 0.5, "fd")
    assert r.threshold[0] == 0.9
    assert r.cd_at_fd[0] == pytest.approx(1.0) and r.metric[0] == r.cd_at_fd[0]
    # b = 0.9: ceil(3.6) = 4 FDs -> threshold 0.6 (the CD at 0.7 goes too); tpr 0.9 on (1/6, .75)-(1/6, 1)
    r = budget_threshold(U, CD, 0.9, "fd")
    assert r.threshold[0] == 0.6
    assert r.cd_at_fd[0] == pytest.approx(5 / 6)
    assert r.fd_removed[0] == 1.0 and r.cd_kept[0] == pytest.approx(5 / 6)


def test_ties_interpolate_on_the_diagonal():
    # one CD and one FD tie at u = 1, one CD at 0: vertices (0,0), (1/2, 1), (1, 1)
    u, cd = np.array([1.0, 1.0, 0.0]), np.array([True, False, True])
    r = budget_threshold(u, cd, 0.8, "cd")
    assert r.fd_at_cd[0] == pytest.approx(0.4)                   # interp at fpr 0.2
    assert r.threshold[0] > 1.0 and r.threshold[0] == np.nextafter(1.0, 2.0)   # nothing may be removed
    assert r.cd_kept[0] == 1.0 and r.fd_removed[0] == 0.0
    r = budget_threshold(u, cd, 0.5, "fd")
    assert r.threshold[0] == 1.0
    assert r.cd_at_fd[0] == pytest.approx(0.75)                  # 1 - interp(tpr 0.5) = 1 - 0.25
    assert auroc(u, cd)[0] == pytest.approx(0.75)                # tie counts half


def test_perfect_separation():
    rng = np.random.default_rng(1)
    u = np.concatenate([rng.uniform(0, 1, 40), rng.uniform(2, 3, 10)])
    cd = np.arange(50) < 40
    m = threshold_metrics(u, np.stack([cd, cd]), 0.95, "cd", iou_thresholds=[0.5, 0.7])
    s = m.summary()
    assert s["auroc"] == 1.0 and s["fd_at_cd"] == 1.0 and s["cd_at_fd"] == 1.0
    assert s["fd_removed"] == 1.0 and s["cd_kept"] >= 0.95
    assert jsd(u, cd, "histogram")[0] == pytest.approx(math.sqrt(math.log(2)))
    assert jsd(u, cd, "gaussian")[0] > 0.8
    assert m.label == "FD@CD95"


def test_against_sklearn_roc_random():
    rng = np.random.default_rng(0)
    for _ in range(100):
        n = int(rng.integers(5, 60))
        u = np.round(rng.normal(size=n), 1)                       # many ties
        cd = rng.uniform(size=n) < 0.6
        if cd.all() or not cd.any():
            continue
        b = float(rng.choice([0.5, 0.63, 0.8, 0.9, 0.95]))
        fpr, tpr, _ = roc_curve(~cd, u)                             # the reference's construction
        r = budget_threshold(u, cd, b, "cd")
        if not np.isclose(fpr, 1 - b).any():                        # np.interp is ambiguous on vertical steps
            assert r.fd_at_cd[0] == pytest.approx(np.interp(1 - b, fpr, tpr), abs=1e-12)
        if not np.isclose(tpr, b).any():
            assert r.cd_at_fd[0] == pytest.approx(1 - np.interp(b, tpr, fpr), abs=1e-12)
        assert roc_table(u, cd).auroc()[0] == pytest.approx(roc_auc_score(~cd, u), abs=1e-12)


def test_budget_semantics_random():
    """cd: keep >= b of the CDs with the most FDs removed; fd: remove >= b of the FDs with the fewest CDs."""
    rng = np.random.default_rng(2)
    for _ in range(100):
        n = int(rng.integers(10, 80))
        u = np.round(rng.normal(size=n), 1)
        cd = rng.uniform(size=n) < 0.5
        if cd.all() or not cd.any():
            continue
        b = float(rng.uniform(0.05, 0.95))
        th = budget_threshold(u, cd, b, "cd").threshold[0]
        assert np.mean(u[cd] < th) >= b - 1e-12
        lower = u[u < th]
        if lower.size:                                             # one step further breaks the budget
            assert np.mean(u[cd] < lower.max()) < b
        th = budget_threshold(u, cd, b, "fd").threshold[0]
        assert th in u
        assert np.mean(u[~cd] >= th) >= b - 1e-12
        higher = u[u > th]
        if higher.size:
            assert np.mean(u[~cd] >= higher.min()) < b


def test_budget_is_exact_on_round_counts():
    # 10 CDs, b = 0.9 -> exactly one CD may be removed despite 1 - 0.9 != 0.1 in floating point
    u = np.arange(10.0)
    cd = np.ones(10, dtype=bool)
    assert budget_threshold(u, cd, 0.9, "cd").threshold[0] == 9.0


def test_per_iou_rows_and_missing_classes():
    cd = np.stack([CD, np.zeros_like(CD), np.ones_like(CD)])      # normal, no CDs, no FDs
    r = budget_threshold(U, cd, 0.8, "cd")
    assert r.threshold[0] == 0.6 and np.isnan(r.threshold[1]) and r.threshold[2] == 0.9
    assert np.isnan(r.fd_at_cd[1]) and np.isnan(r.fd_at_cd[2])
    r = budget_threshold(U, cd, 0.5, "fd")
    assert np.isnan(r.threshold[2]) and r.threshold[1] == 0.6      # no FDs -> undefined; no CDs: ceil(5)
    a = auroc(U, cd)
    assert a[0] == pytest.approx(23 / 24) and np.isnan(a[1]) and np.isnan(a[2])
    m = threshold_metrics(U, cd, 0.8, "cd", iou_thresholds=[0.5, 0.6, 0.7])
    assert m.summary()["auroc"] == pytest.approx(23 / 24)           # NaN rows skipped in the average


def test_jsd_hand_cases():
    # histogram, 2 bins: CD counts [2, 1], FD counts [1, 2]
    u = np.array([0.0, 0.0, 1.0, 0.0, 1.0, 1.0])
    cd = np.array([1, 1, 1, 0, 0, 0], dtype=bool)
    half = 2 / 3 * math.log(4 / 3) + 1 / 3 * math.log(2 / 3)        # KL(P || M) = KL(Q || M)
    assert jsd(u, cd, "histogram", bins=2)[0] == pytest.approx(math.sqrt(half))
    assert jsd(np.array([0.0, 1.0, 0.0, 1.0]), np.array([1, 1, 0, 0], bool), "histogram")[0] == pytest.approx(0.0)
    assert jsd(np.ones(4), np.array([1, 1, 0, 0], bool), "histogram")[0] == 0.0
    # gaussian (reference): CD N(1, 1), FD N(3, 1) on 1000 points over [-2, 6]
    u = np.array([0.0, 2.0, 2.0, 4.0])
    cd = np.array([1, 1, 0, 0], dtype=bool)
    x = np.linspace(-2, 6, 1000)
    ref = jensenshannon(stats.norm.pdf(x, 1, 1), stats.norm.pdf(x, 3, 1))
    assert jsd(u, cd, "gaussian")[0] == pytest.approx(ref, rel=1e-10)
    assert jsd(u, ~cd, "gaussian")[0] == pytest.approx(ref, rel=1e-10)
    assert jsd(np.array([0.0, 2.0, 0.0, 2.0]), cd, "gaussian")[0] == pytest.approx(0.0, abs=1e-7)
    assert np.isnan(jsd(np.array([1.0, 1.0, 0.0, 2.0]), cd, "gaussian")[0])   # σ = 0
    assert np.isnan(jsd(u, np.ones(4, bool))[0])
    with pytest.raises(ThresholdingError, match="JSD"):
        jsd(u, cd, "kde")


def test_operating_rates_and_table():
    kept, removed = operating_rates(U, CD, 0.6)
    assert kept[0] == pytest.approx(5 / 6) and removed[0] == 1.0
    kept, removed = operating_rates(np.array([np.nan, 0.1]), np.array([True, False]), 0.5)
    assert kept[0] == 0.0 and removed[0] == 0.0                      # NaN counts as removed
    ms = {"a": threshold_metrics(U, np.stack([CD, CD]), 0.8, "cd", [0.5, 0.6])}
    t = metrics_table(ms)
    assert list(t["uncertainty"]) == ["a"]
    assert t.loc[0, "auroc_0.50"] == pytest.approx(23 / 24) and t.loc[0, "threshold"] == 0.6
    assert t.loc[0, "n_cd"] == 6 and t.loc[0, "n_fd"] == 4


@pytest.mark.parametrize("b", [0, 1, 1.5, -0.1, "x", None])
def test_bad_budget(b):
    with pytest.raises(ThresholdingError, match="budget"):
        budget_threshold(U, CD, b, "cd")


def test_bad_inputs():
    with pytest.raises(ThresholdingError, match="mode"):
        budget_threshold(U, CD, 0.9, "tp")
    with pytest.raises(ThresholdingError, match="shape"):
        budget_threshold(U, CD[:5], 0.9)
    with pytest.raises(ThresholdingError, match="NaN"):
        budget_threshold(np.append(U[:-1], np.nan), CD, 0.9)
    r = budget_threshold(np.zeros(0), np.zeros((2, 0), bool), 0.9)
    assert np.isnan(r.threshold).all()


@pytest.mark.parametrize("mode", ["cd", "fd"])
@pytest.mark.parametrize("budget", [0.5, 0.9, 0.95, 0.99, 0.999])
def test_budget_metric_equals_full_roc_metric(mode, budget):
    """The optimiser's partition-based metric equals the ROC-based one, ties and tiny groups included."""
    from uncertainty_det.thresholding.metrics import budget_metric

    rng = np.random.default_rng(int(budget * 1000) + (mode == "fd"))
    for trial in range(40):
        n = int(rng.integers(1, 60))
        u = rng.integers(0, 6, n).astype(float) if trial % 2 else rng.normal(size=n)   # heavy ties / none
        cd = rng.uniform(size=(4, n)) < rng.uniform(0.05, 0.95, (4, 1))
        cd[0] = True                                                                 # a row without FDs
        expected = budget_threshold(u, cd, budget, mode).metric
        np.testing.assert_allclose(budget_metric(u, cd, budget, mode), expected, rtol=0, atol=1e-12,
                                   err_msg=f"trial {trial}: u={u.tolist()} cd={cd.astype(int).tolist()}")
