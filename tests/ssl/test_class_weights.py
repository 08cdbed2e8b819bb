"""Class-distribution weights, image class scores, the rare/common split and the curriculum sampler."""
from __future__ import annotations

import math

import numpy as np
import pytest

from uncertainty_det.errors import UserError
from uncertainty_det.ssl.class_weights import (
    ClassWeightError, RareCommonSampler, image_class_scores, log_class_weights, rare_common_split,
)


# ------------------------------------------------------------------------------------------------ log weights


def test_three_classes_by_hand():
    # x_c = 1/ln(n_c) = 1/(k ln 10) with k = 2, 1, 3 -> class 2 is the rarest, class 3 the most common;
    # class 1: (1/2 - 1/3) / (1 - 1/3) = 1/4 of the way: 1 + 9/4
    w = log_class_weights({1: 100, 2: 10, 3: 1000})
    assert w == {1: 3.25, 2: 10.0, 3: 1.0}
    assert log_class_weights({1: 100, 2: 10, 3: 1000}, lowest=1, highest=30) == {1: 8.25, 2: 30.0, 3: 1.0}
    assert log_class_weights({1: 100, 2: 10, 3: 1000}, lowest=0.5, highest=0.5) == {1: 0.5, 2: 0.5, 3: 0.5}


def test_array_counts_are_one_based():
    assert log_class_weights(np.array([100, 10, 1000])) == {1: 3.25, 2: 10.0, 3: 1.0}
    assert log_class_weights([100.0, 10.0, 1000.0]) == {1: 3.25, 2: 10.0, 3: 1.0}


def test_rounding_to_five_decimals():
    w = log_class_weights({3: 50, 1: 100, 2: 10})
    x = {c: 1 / math.log(n) for c, n in {1: 100, 2: 10, 3: 50}.items()}
    expected = 1 + (x[3] - x[1]) * 9 / (x[2] - x[1])
    assert w[3] == round(expected, 5) and w[3] != expected
    assert list(w) == [1, 2, 3]                                  # class-id order


def test_small_and_equal_counts():
    # n_c <= 1 -> highest; the only class with n_c > 1 (no spread) -> lowest
    assert log_class_weights({1: 5, 2: 1, 3: 0}) == {1: 1.0, 2: 10.0, 3: 10.0}
    assert log_class_weights({1: 7, 2: 7}, lowest=2.0) == {1: 2.0, 2: 2.0}
    assert log_class_weights({1: 1, 2: 0}) == {1: 10.0, 2: 10.0}


@pytest.mark.parametrize("counts, kw, match", [
    ({}, {}, "counts is empty"),
    ({1: -1}, {}, "counts must be >= 0"),
    ({0: 5}, {}, "1-based"),
    ({1: 2.5}, {}, "integers"),
    (np.ones((2, 2)), {}, "1-D"),
    ({1: 5}, {"lowest": 5, "highest": 1}, "lowest <= highest"),
    ({1: 5}, {"lowest": -1}, "lowest <= highest"),
    ({1: 5}, {"highest": float("inf")}, "highest must be a finite number"),
])
def test_log_weights_bad_input(counts, kw, match):
    with pytest.raises(ClassWeightError, match=match):
        log_class_weights(counts, **kw)


# ------------------------------------------------------------------------------------------------ image scores


W = {1: 3.25, 2: 10.0, 3: 1.0}


def test_image_class_scores_by_hand():
    images = [10, 20, 30, 40]
    obj_img = [30, 10, 99, 20, 10, 30]          # 99 is not one of the images: ignored
    obj_cls = [2, 1, 1, 3, 2, 2]
    s = image_class_scores(images, obj_img, obj_cls, W)
    np.testing.assert_allclose(s, [(3.25 + 10) / 2, 1.0, 10.0, 1.0])   # 40 has no object: the smallest weight
    s = image_class_scores(images, obj_img, obj_cls, W, empty=0.0)
    np.testing.assert_allclose(s, [6.625, 1.0, 10.0, 0.0])
    assert image_class_scores([], [], [], W).shape == (0,)


def test_image_class_scores_bad_input():
    assert issubclass(ClassWeightError, UserError)
    with pytest.raises(ClassWeightError, match="class ids \\[4\\] have no weight"):
        image_class_scores([1], [1, 1], [1, 4], W)
    with pytest.raises(ClassWeightError, match="3 entries but object_class_ids 2"):
        image_class_scores([1], [1, 1, 1], [1, 2], W)
    with pytest.raises(ClassWeightError, match="repeated image ids"):
        image_class_scores([1, 1], [1], [1], W)
    with pytest.raises(ClassWeightError, match="non-empty mapping"):
        image_class_scores([1], [1], [1], {})


# ------------------------------------------------------------------------------------------------ rare / common


IDS = np.array([10, 20, 30, 40, 50, 60, 70, 80])
SCORES = np.array([1.0, 5.0, 3.0, 5.0, 2.0, 0.0, 5.0, 1.0])


def test_rare_common_split():
    rare, common = rare_common_split(IDS, SCORES, 4)             # k = 8 // 4 = 2; ties in input order
    assert rare.tolist() == [20, 40] and common.tolist() == [10, 30, 50, 60, 70, 80]
    rare, common = rare_common_split(IDS, SCORES, 2)             # k = 4
    assert rare.tolist() == [20, 30, 40, 70]
    rare, common = rare_common_split(IDS, SCORES, 16)            # k = max(1, 0)
    assert rare.tolist() == [20] and common.size == 7
    rare, common = rare_common_split(IDS, SCORES, 1)
    assert rare.size == 8 and common.size == 0 and common.dtype == np.int64


def test_rare_common_split_bad_input():
    with pytest.raises(ClassWeightError, match="scores must be 8 numbers"):
        rare_common_split(IDS, SCORES[:3], 4)
    with pytest.raises(ClassWeightError, match="NaN"):
        rare_common_split(IDS, np.where(IDS == 10, np.nan, 1.0), 4)
    with pytest.raises(ClassWeightError, match="batch_size"):
        rare_common_split(IDS, SCORES, 0)
    with pytest.raises(ClassWeightError, match="empty"):
        rare_common_split([], [], 4)


# ------------------------------------------------------------------------------------------------ sampler

RARE = np.array([1, 2, 3])
COMMON = np.arange(100, 110)                                     # 10 common images


def test_every_batch_has_a_rare_image_and_the_layout():
    s = RareCommonSampler(RARE, COMMON, batch_size=4, seed=0)
    ids, extra = s.epoch(7)
    assert ids.shape == extra.shape == (7, 4) and ids.dtype == np.int64
    assert np.isin(ids[:, :3], COMMON).all() and np.isin(ids[:, 3], RARE).all()
    assert not extra.any()


def test_extra_rare_slots():
    s = RareCommonSampler(RARE, COMMON, batch_size=4, seed=0, extra_rare=2)
    ids, extra = s.epoch(5)
    assert s.width == 6 and ids.shape == (5, 6)
    assert np.isin(ids[:, 3:], RARE).all() and np.isin(ids[:, :3], COMMON).all()
    np.testing.assert_array_equal(extra, np.tile([False] * 4 + [True] * 2, (5, 1)))


def test_common_coverage_and_no_replacement_within_an_epoch():
    s = RareCommonSampler(RARE, COMMON, batch_size=4, seed=3)
    steps = s.steps_for_coverage()                                # max(ceil(10/3), ceil(3/1)) = 4
    assert steps == 4
    for _ in range(5):
        ids, _ = s.epoch(steps)
        drawn = ids[:, :3].reshape(-1)                            # 12 draws, in batch order
        assert sorted(drawn[:10].tolist()) == COMMON.tolist()     # first 10: a permutation (no repeats)
        assert set(ids[:, 3].tolist()) == set(RARE.tolist())      # 4 rare draws cover the 3 rare images
    # rare images cycle: 6 draws of 3 images = two shuffled rounds
    ids, _ = s.epoch(6)
    rare = ids[:, 3]
    assert sorted(rare[:3].tolist()) == [1, 2, 3] and sorted(rare[3:].tolist()) == [1, 2, 3]
    assert RareCommonSampler(RARE, COMMON, 4, extra_rare=2).steps_for_coverage() == 4


def test_determinism_per_seed_and_epoch():
    a = RareCommonSampler(RARE, COMMON, 4, seed=5)
    b = RareCommonSampler(RARE, COMMON, 4, seed=5)
    c = RareCommonSampler(RARE, COMMON, 4, seed=6)
    e0a, e1a = a.epoch(8)[0], a.epoch(8)[0]
    np.testing.assert_array_equal(e0a, b.epoch(8)[0])
    np.testing.assert_array_equal(e1a, b.epoch(8)[0])
    assert not np.array_equal(e0a, e1a)                           # epochs reshuffle
    assert not np.array_equal(e0a, c.epoch(8)[0])                 # seeds differ
    np.testing.assert_array_equal(e1a, RareCommonSampler(RARE, COMMON, 4, seed=5).epoch(8, index=1)[0])
    assert a.epochs_drawn == 2


def test_sampler_bad_input():
    with pytest.raises(ClassWeightError, match="0 rare and 10 common"):
        RareCommonSampler([], COMMON, 4)
    with pytest.raises(ClassWeightError, match="3 rare and 0 common"):
        RareCommonSampler(RARE, [], 4)
    with pytest.raises(ClassWeightError, match="\\[2\\] are both rare and common"):
        RareCommonSampler(RARE, [2, 7], 4)
    with pytest.raises(ClassWeightError, match="batch_size must be an integer >= 2"):
        RareCommonSampler(RARE, COMMON, 1)
    with pytest.raises(ClassWeightError, match="extra_rare"):
        RareCommonSampler(RARE, COMMON, 4, extra_rare=-1)
    s = RareCommonSampler(RARE, COMMON, 4)
    with pytest.raises(ClassWeightError, match="steps must be an integer >= 1"):
        s.epoch(0)
    with pytest.raises(ClassWeightError, match="epoch index"):
        s.epoch(2, index=-1)


def test_end_to_end_rcf_pipeline():
    # class counts of a labeled set -> weights -> image scores -> rare/common -> batches
    obj_img = np.array([1, 1, 2, 3, 4, 5, 6, 7, 8, 8])
    obj_cls = np.array([1, 1, 1, 1, 1, 1, 2, 1, 1, 3])
    w = log_class_weights(np.bincount(obj_cls)[1:])               # counts of classes 1, 2, 3: 8, 1, 1
    assert w == {1: 1.0, 2: 10.0, 3: 10.0}
    scores = image_class_scores(np.arange(1, 9), obj_img, obj_cls, w)
    np.testing.assert_allclose(scores, [1, 1, 1, 1, 1, 10, 1, 5.5])
    rare, common = rare_common_split(np.arange(1, 9), scores, 4)
    assert rare.tolist() == [6, 8]
    ids, _ = RareCommonSampler(rare, common, 4, seed=0).epoch(2)
    assert set(ids[:, 3].tolist()) == {6, 8}
