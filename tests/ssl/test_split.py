"""Labeled/unlabeled split: sizes, partition, seeding, the reference's prefix rule and bad input."""
from __future__ import annotations

import numpy as np
import pytest

from uncertainty_det.errors import UserError
from uncertainty_det.ssl.split import SplitError, as_id_array, num_labeled_images, split_labeled

POOL = np.arange(100, 130)[::-1] * 3          # 30 distinct ids, deliberately not sorted


@pytest.mark.parametrize("percent, n, expected", [
    (10, 30, 3), (50, 30, 15), (1, 30, 1), (99, 30, 29), (33.4, 30, 10), (29, 100, 29), (0.5, 30, 1),
    (12.5, 8, 1), (7, 1000, 70),
    (2.3, 3000, 69), (5.1, 3000, 153),          # 2.3 · 3000 / 100 = 68.99999999999999 in floats
])
def test_num_labeled_floor_and_at_least_one(percent, n, expected):
    assert num_labeled_images(n, percent) == expected


@pytest.mark.parametrize("method", ["random", "prefix"])
@pytest.mark.parametrize("percent", [1, 10, 33.4, 50, 96])
def test_sizes_disjoint_covering_and_input_order(method, percent):
    labeled, unlabeled = split_labeled(POOL, percent, seed=3, method=method)
    assert labeled.dtype == np.int64 and unlabeled.dtype == np.int64
    assert labeled.size == num_labeled_images(POOL.size, percent)
    assert labeled.size + unlabeled.size == POOL.size
    assert np.intersect1d(labeled, unlabeled).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([labeled, unlabeled])), np.sort(POOL))
    # both outputs keep the pool order
    for part in (labeled, unlabeled):
        pos = np.searchsorted(-POOL, -part)    # POOL is strictly decreasing
        assert np.all(np.diff(pos) > 0)


def test_random_is_seeded():
    a = split_labeled(POOL, 20, seed=1)
    b = split_labeled(POOL, 20, seed=1)
    c = split_labeled(POOL, 20, seed=2)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    # not the prefix
    assert not np.array_equal(a[0], POOL[:6])


def test_random_is_uniform_over_the_pool():
    hits = np.zeros(POOL.size)
    for seed in range(300):
        labeled, _ = split_labeled(POOL, 10, seed=seed)
        hits += np.isin(POOL, labeled)
    # every image is labeled in about 10 % of the splits (30 of 300)
    assert hits.min() > 10 and hits.max() < 55


def test_prefix_is_the_reference_rule():
    labeled, unlabeled = split_labeled(POOL, 10, method="prefix")
    np.testing.assert_array_equal(labeled, POOL[:3])
    np.testing.assert_array_equal(unlabeled, POOL[3:])
    # the seed plays no part
    np.testing.assert_array_equal(split_labeled(POOL, 10, seed=7, method="prefix")[0], POOL[:3])


def test_hundred_percent_labels_everything():
    labeled, unlabeled = split_labeled(POOL, 100)
    np.testing.assert_array_equal(labeled, POOL)
    assert unlabeled.size == 0 and unlabeled.dtype == np.int64
    labeled, unlabeled = split_labeled([5], 100)
    assert labeled.tolist() == [5] and unlabeled.size == 0


def test_integral_float_ids_are_accepted():
    labeled, unlabeled = split_labeled(np.array([1.0, 2.0, 3.0, 4.0]), 50, method="prefix")
    assert labeled.tolist() == [1, 2] and unlabeled.tolist() == [3, 4]


@pytest.mark.parametrize("percent", [0, -5, 100.5, 150, float("nan"), float("inf"), "10", None, True])
def test_bad_percent(percent):
    with pytest.raises(SplitError, match="percent"):
        split_labeled(POOL, percent)


def test_errors_name_the_input_and_fix():
    assert issubclass(SplitError, UserError)
    with pytest.raises(SplitError, match="empty"):
        split_labeled([], 10)
    assert split_labeled([1, 2], 99, method="prefix")[0].tolist() == [1]      # floor(1.98) = 1 leaves one
    with pytest.raises(SplitError, match="no unlabeled image.*percent=100"):
        split_labeled([1], 50)                   # at least one labeled = the whole pool
    with pytest.raises(SplitError, match="unknown split method 'sorted'"):
        split_labeled(POOL, 10, method="sorted")
    with pytest.raises(SplitError, match="repeated image ids \\[4\\]"):
        split_labeled([1, 4, 4, 5], 50)
    with pytest.raises(SplitError, match="integer image ids"):
        split_labeled([1.5, 2.0], 50)
    with pytest.raises(SplitError, match="integer image ids"):
        split_labeled(["a", "b"], 50)
    with pytest.raises(SplitError, match="1-D"):
        split_labeled([[1, 2], [3, 4]], 50)
    with pytest.raises(SplitError, match="seed"):
        split_labeled(POOL, 10, seed=-1)
    with pytest.raises(SplitError, match="seed"):
        split_labeled(POOL, 10, seed=1.5)


def test_as_id_array_allows_repeats_when_asked():
    np.testing.assert_array_equal(as_id_array([3, 3, 1], "x", unique=False), [3, 3, 1])
