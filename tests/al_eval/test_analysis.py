"""Rank agreement, per-class agreement, the random-subset boundary rule and the reliability study."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from uncertainty_det.al_eval import (
    AlEvalError, per_class_agreement, random_subsets, rank_agreement, reliability, subset_boundaries,
)


def test_rank_agreement_perfect_and_reversed():
    sim = np.array([0.1, 0.5, 0.3, 0.2])
    res = rank_agreement(sim, np.array([10.0, 50.0, 30.0, 20.0]))
    assert res["kendall_tau"] == pytest.approx(1.0)
    assert res["pearson_r"] == pytest.approx(1.0)
    assert res["n"] == 4
    rev = rank_agreement(sim, np.array([40.0, 10.0, 20.0, 30.0]))
    assert rev["kendall_tau"] == pytest.approx(-1.0)
    r, p = stats.pearsonr(sim, [40.0, 10.0, 20.0, 30.0])
    assert rev["pearson_r"] == pytest.approx(r) and rev["pearson_p"] == pytest.approx(p)


def test_rank_agreement_drops_nan_pairs():
    res = rank_agreement(np.array([0.1, np.nan, 0.3, 0.2]), np.array([1.0, 5.0, 3.0, 2.0]))
    assert res["n"] == 3 and res["kendall_tau"] == pytest.approx(1.0)
    assert math.isnan(rank_agreement(np.array([0.1, np.nan]), np.array([1.0, 2.0]))["kendall_tau"])


def test_per_class_agreement():
    m = np.array([[1.0, 2.0, 3.0, 4.0],     # least dissimilar has the best AP -> tau +1
                  [1.0, 2.0, 3.0, 4.0]])    # reversed -> tau -1
    ap = np.array([[0.4, 0.1], [0.3, 0.2], [0.2, 0.3], [0.1, 0.4]])
    table = per_class_agreement(m, ap, ["car", "person"])
    assert list(table.index) == ["car", "person", "mean"]
    assert table.loc["car", "kendall_tau"] == pytest.approx(1.0)
    assert table.loc["person", "kendall_tau"] == pytest.approx(-1.0)
    assert table.loc["mean", "kendall_tau"] == pytest.approx(0.0)
    r_car = stats.pearsonr(ap[:, 0], 1 / m[0]).statistic
    r_person = stats.pearsonr(ap[:, 1], 1 / m[1]).statistic
    assert table.loc["car", "pearson_r"] == pytest.approx(r_car)
    assert r_car > 0.9
    assert table.loc["mean", "pearson_r"] == pytest.approx((r_car + r_person) / 2)
    assert table.loc["car", "n_sets"] == 4
    with pytest.raises(AlEvalError):
        per_class_agreement(m, ap.T, ["car", "person"])


def test_boundaries_divisible():
    # L = 1000: arange(0, 1000, 100) ends at 900, 100 away -> 1000 appended: 10 chunks of 100
    np.testing.assert_array_equal(subset_boundaries(1000, 10), np.arange(0, 1001, 100))
    # L = 100: the last boundary 90 is within 10 of L and snapped -> 9 chunks, the last of 20
    np.testing.assert_array_equal(subset_boundaries(100, 10), [0, 10, 20, 30, 40, 50, 60, 70, 80, 100])


def test_boundaries_remainder_within_ten():
    # L = 1005: arange ends at 1000, 5 away -> snapped: 10 chunks, the last of 105
    b = subset_boundaries(1005, 10)
    assert b.size == 11 and b[-2] == 900 and b[-1] == 1005


def test_boundaries_remainder_beyond_ten():
    # L = 1015, 20 chunks of int(50.75) = 50: arange ends at 1000, 15 away -> 1015 appended: 21 chunks
    b = subset_boundaries(1015, 20)
    np.testing.assert_array_equal(b, np.append(np.arange(0, 1001, 50), 1015))


@pytest.mark.parametrize("n_images, split_factor, n_chunks", [(1000, 10, 10), (1005, 10, 10), (1015, 20, 21)])
def test_random_subsets_partition(n_images, split_factor, n_chunks):
    subsets = random_subsets(n_images, split_factor, seeds=range(1, 11))
    assert len(subsets) == 10 * n_chunks
    for k in range(10):
        chunks = subsets[k * n_chunks:(k + 1) * n_chunks]
        np.testing.assert_array_equal(np.sort(np.concatenate(chunks)), np.arange(n_images))
    # seed 1's permutation is the reference's np.random.seed(1); np.random.permutation(L)
    np.random.seed(1)
    perm = np.random.permutation(n_images)
    np.testing.assert_array_equal(np.concatenate(subsets[:n_chunks]), perm)
    assert not np.array_equal(subsets[0], subsets[n_chunks])


def test_random_subsets_rejects_small_sets():
    with pytest.raises(AlEvalError):
        random_subsets(5, 10)


def test_reliability_crafted():
    ref = np.array([4.0, 3.0, 2.0, 1.0])            # method 0 best
    subsets = np.array([[4.0, 3.0, 2.0, 1.0],       # tau +1
                        [1.0, 2.0, 3.0, 4.0],       # tau -1
                        [3.0, 4.0, 2.0, 1.0]])      # one swapped pair of 6: tau 4/6
    sim = np.array([0.2, 0.1, 0.9])
    val = np.array([4.0, 3.0, 1.0, 2.0])            # tau 4/6
    res = reliability(subsets, val, ref, sim, 0.5)
    np.testing.assert_allclose(res["tau"], [1.0, -1.0, 2 / 3])
    assert res["val_tau"] == pytest.approx(2 / 3)
    assert res["top_s"] == 2 and res["top_s_tau"] == pytest.approx(2 / 3)
    assert res["top_s_similarity"] == pytest.approx(0.9)
    assert res["top_s_beats_val"] is False
    assert res["best_tau_index"] == 0 and res["best_tau"] == pytest.approx(1.0)
    r, p = stats.pearsonr([1.0, -1.0, 2 / 3, 2 / 3], [0.2, 0.1, 0.9, 0.5])
    assert res["pearson_r"] == pytest.approx(r) and res["pearson_p"] == pytest.approx(p)
    np.testing.assert_array_equal(res["perf"]["top_s"], subsets[2])
    np.testing.assert_array_equal(res["perf"]["best_tau"], subsets[0])

    worse_val = reliability(subsets, ref[::-1], ref, sim, 0.5)
    assert worse_val["val_tau"] == pytest.approx(-1.0) and worse_val["top_s_beats_val"] is True
    with pytest.raises(AlEvalError):
        reliability(subsets, val, ref, sim[:2], 0.5)
