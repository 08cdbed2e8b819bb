"""set_similarity on hand-built counts with an injected JSD: every step checked against hand computation."""
from __future__ import annotations

import math

import numpy as np
import pytest

from uncertainty_det.al_eval import AlEvalError, class_weights, set_similarity, size_factors


def _rows(n: int, code: float) -> np.ndarray:
    """``n`` feature rows whose values carry ``code`` so the fake JSD can recognise the pair."""
    return np.full((n, 3), float(code))


class FakeJsd:
    """Returns a fixed JSD per candidate code and records the calls."""

    def __init__(self, table: dict[float, float]):
        self.table = table
        self.calls: list[tuple[float, int, float, int]] = []

    def __call__(self, cand: np.ndarray, ref: np.ndarray) -> float:
        self.calls.append((cand[0, 0], len(cand), ref[0, 0], len(ref)))
        return self.table[cand[0, 0]]


def _case_without_balance():
    # counts N[c, s]: c1 = 10, 20, 60; c2 = 5, 0, 20; c3 = 5, 20, 0 -> T = 20, 40, 80
    # codes: 10*class + candidate; JSD per (class, candidate)
    cands = [
        {1: _rows(10, 10), 2: _rows(5, 20), 3: _rows(5, 30)},
        {1: _rows(20, 11), 3: _rows(20, 31)},
        {1: _rows(60, 12), 2: _rows(20, 22), 3: _rows(0, 32)},
    ]
    ref = {1: _rows(40, -1), 2: _rows(10, -2), 3: _rows(20, -3)}
    jsd = FakeJsd({10: 0.1, 11: 0.2, 12: 0.3, 20: 0.4, 22: 0.05, 30: 0.25, 31: 0.15})
    return cands, ref, jsd


def test_every_step_without_class_balance():
    cands, ref, jsd = _case_without_balance()
    res = set_similarity(cands, ref, [1, 2, 3], jsd_fn=jsd)

    np.testing.assert_array_equal(res.counts, [[10, 20, 60], [5, 0, 20], [5, 20, 0]])
    np.testing.assert_array_equal(res.total, [20, 40, 80])
    # the JSD is called once per present pair, candidate first, reference second
    assert sorted(jsd.calls) == sorted([
        (10, 10, -1, 40), (11, 20, -1, 40), (12, 60, -1, 40), (20, 5, -2, 10), (22, 20, -2, 10),
        (30, 5, -3, 20), (31, 20, -3, 20)])
    # proportions: c1 (0.5 + 0.5 + 0.75) / 3, c2 (0.25 + 0 + 0.25) / 3, c3 (0.25 + 0.5 + 0) / 3
    np.testing.assert_allclose(res.proportions, [1.75 / 3, 0.5 / 3, 0.75 / 3])
    # 1/pi = 1.714, 6, 4: std/mean = 0.45 -> no class balance, all weights 1
    assert res.class_balance is False
    np.testing.assert_array_equal(res.weights, [1, 1, 1])
    # P25(T) = 20 + 0.5 * 20 = 30 -> beta = max(1, int(20/30, 40/30, 80/30)) = 1, 1, 2 (2.67 truncated)
    np.testing.assert_array_equal(res.size_factor, [1, 1, 2])
    nan = np.nan
    np.testing.assert_allclose(res.ratio, [[4, 2, 40 / 60], [2, nan, 0.5], [4, 1, nan]])
    np.testing.assert_allclose(res.jsd, [[0.1, 0.2, 0.3], [0.4, nan, 0.05], [0.25, 0.15, nan]])
    m = np.array([
        [0.1 + 0.25 * 4 + 0.5, 0.2 + 0.25 * 2 + 0.5, 0.3 + 0.25 * (40 / 60) * 2 + 0.5],
        [0.4 + 0.25 * 2 + 0.5, nan, 0.05 + 0.25 * 0.5 * 2 + 0.5],
        [0.25 + 0.25 * 4 + 0.5, 0.15 + 0.25 * 1 + 0.5, nan],
    ])
    np.testing.assert_allclose(res.m, m)
    np.testing.assert_allclose(res.m[:, 0], [1.6, 1.4, 1.75])
    expected = [(1 / 1.6 + 1 / 1.4 + 1 / 1.75) / 3, (1 / 1.2 + 1 / 0.9) / 3, (1 / (0.8 + 1 / 3) + 1 / 0.8) / 3]
    np.testing.assert_allclose(res.similarity, expected)
    np.testing.assert_array_equal(res.order(), [2, 1, 0])


def test_every_step_with_class_balance():
    # shares 0.9, 0.09, 0.009, 0.001 in both candidates (T = 1000, 2000)
    cands = [
        {1: _rows(900, 1), 2: _rows(90, 2), 3: _rows(9, 3), 4: _rows(1, 4)},
        {1: _rows(1800, 1), 2: _rows(180, 2), 3: _rows(18, 3), 4: _rows(2, 4)},
    ]
    ref = {1: _rows(900, 0), 2: _rows(90, 0), 3: _rows(9, 0), 4: _rows(1, 0)}
    jsd = FakeJsd({1: 0.0, 2: 0.5, 3: 1.0, 4: 2.0})
    res = set_similarity(cands, ref, [1, 2, 3, 4], jsd_fn=jsd)

    np.testing.assert_allclose(res.proportions, [0.9, 0.09, 0.009, 0.001])
    # 1/pi = 1.11, 11.1, 111.1, 1000: std/mean = 1.49 -> rounds to 1.5 > 1.3 -> balance on;
    # P25(pi) = 0.001 + 0.75 * 0.008 = 0.007 -> the 0.001 class is zeroed
    assert res.class_balance is True
    w = np.array([1 / 0.9, 1 / 0.09, 1 / 0.009, 0.0])
    np.testing.assert_allclose(res.weights, w)
    # P25(T) = 1250: beta = max(1, int(0.8)), int(1.6) = 1, 1
    np.testing.assert_array_equal(res.size_factor, [1, 1])
    np.testing.assert_allclose(res.ratio, [[1, 0.5]] * 4)
    m0 = np.array([0.0, 0.5, 1.0, 2.0]) + 0.25 * 1 + 0.5
    m1 = np.array([0.0, 0.5, 1.0, 2.0]) + 0.25 * 0.5 + 0.5
    np.testing.assert_allclose(res.m, np.stack([m0, m1], axis=1))
    np.testing.assert_allclose(res.similarity, [(w / m0).sum() / w.sum(), (w / m1).sum() / w.sum()])
    assert res.similarity[0] == pytest.approx(73.86243 / 123.3333, rel=1e-5)


def test_balance_rule_rounds_to_one_decimal():
    def cv(pi):
        inv = 1 / np.asarray(pi)
        return inv.std() / inv.mean()

    # weights [1, 1, 1, x]: std/mean = sqrt(3)(x - 1)/(3 + x)
    below = [1, 1, 1, 1 / 14.3]   # 1.33 -> rounds to 1.3 -> off
    above = [1, 1, 1, 1 / 15.7]   # 1.36 -> rounds to 1.4 -> on
    assert 1.3 < cv(below) < 1.35 < cv(above) < 1.45
    w, on = class_weights(below)
    assert on is False and w.tolist() == [1, 1, 1, 1]
    w, on = class_weights(above)
    # P25 of pi = 1/15.7 + 0.75 * (1 - 1/15.7): only the rare class is below it
    assert on is True
    np.testing.assert_allclose(w, [1, 1, 1, 0])


def test_balance_zeroes_strictly_below_the_percentile():
    # 1/pi = 1000, 1, 1, 1, 1: std/mean = 1.99 -> on; P25 of pi = 1 (second smallest): only pi < 1 is zeroed
    w, on = class_weights([0.001, 1, 1, 1, 1])
    assert on is True
    np.testing.assert_allclose(w, [0, 1, 1, 1, 1])


def test_absent_class_weighs_zero():
    w, on = class_weights([0.5, 0.5, 0.0])
    assert on is False and w.tolist() == [1, 1, 0]


def test_size_factors_hand():
    # P25 of [10, 10, 10, 50] = 10 -> 1, 1, 1, 5
    np.testing.assert_array_equal(size_factors([10, 10, 10, 50]), [1, 1, 1, 5])


def test_inf_jsd_becomes_nan_and_is_skipped():
    cands, ref, _ = _case_without_balance()
    jsd = FakeJsd({10: math.inf, 11: 0.2, 12: 0.3, 20: 0.4, 22: 0.05, 30: 0.25, 31: 0.15})
    res = set_similarity(cands, ref, [1, 2, 3], jsd_fn=jsd)
    assert math.isnan(res.m[0, 0])
    assert res.similarity[0] == pytest.approx((1 / 1.4 + 1 / 1.75) / 3)


def test_empty_candidate_rejected():
    cands, ref, jsd = _case_without_balance()
    with pytest.raises(AlEvalError, match="no crops"):
        set_similarity(cands + [{}], ref, [1, 2, 3], jsd_fn=jsd)


def test_default_jsd_runs_on_real_features():
    rng = np.random.default_rng(0)
    ref = {1: np.exp(rng.normal(0, 0.3, (60, 3)))}
    near = {1: np.exp(rng.normal(0, 0.3, (60, 3)))}
    far = {1: np.exp(rng.normal(1.5, 0.3, (60, 3)))}
    res = set_similarity([near, far], ref, [1], num_samples=2000)
    assert res.jsd[0, 0] < res.jsd[0, 1]
    assert res.similarity[0] > res.similarity[1]
