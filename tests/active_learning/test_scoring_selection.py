"""Scores, aggregation, combinations, class balance, selection and the schedule on crafted tables with
hand-computed answers."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from uncertainty_det.active_learning import (
    Strategy, StrategyError, class_balance_weights, detection_values, image_scores, round_sizes, select,
    select_nee, select_random,
)
from uncertainty_det.active_learning.scoring import PoolIndex
from uncertainty_det.thresholding import MinMaxNormaliser, ThresholdModel


def _dets():
    """Pool images 10, 20, 30, 40 (40 without detections); rows deliberately not grouped by image."""
    rows = [  # image, class, score, entropy, box (h=10, w=20), al σ (4), ep σ (4), ep_logit_std (2)
        (20, 1, 0.9, 0.2, [0, 0, 10, 20], [1, 2, 1, 2], [0.5, 0.5, 0.5, 0.5], [0.1, 0.3]),
        (10, 2, 0.8, 0.6, [0, 0, 10, 20], [2, 2, 2, 2], [1, 1, 1, 1], [0.2, 0.2]),
        (20, 2, 0.7, 1.0, [0, 0, 20, 20], [4, 4, 4, 4], [2, 2, 2, 2], [0.5, 0.1]),
        (30, 1, 0.6, 0.4, [0, 0, 10, 10], [1, 1, 1, 1], [3, 3, 3, 3], [0.4, 0.4]),
        (10, 1, 0.1, 5.0, [0, 0, 10, 20], [9, 9, 9, 9], [9, 9, 9, 9], [9.0, 9.0]),   # below the 0.5 floor
    ]
    df = pd.DataFrame({
        "image_id": [r[0] for r in rows], "class_id": [r[1] for r in rows], "score": [r[2] for r in rows],
        "entropy": [r[3] for r in rows],
        **{c: [float(r[4][k]) for r in rows] for k, c in enumerate(("ymin", "xmin", "ymax", "xmax"))},
        **{f"al_{c}": [float(r[5][k]) for r in rows] for k, c in enumerate(("ymin", "xmin", "ymax", "xmax"))},
        **{f"ep_{c}": [float(r[6][k]) for r in rows] for k, c in enumerate(("ymin", "xmin", "ymax", "xmax"))},
        "ep_logit_std": [list(map(float, r[7])) for r in rows],
    })
    df["entropy_cal"] = df["entropy"] * 2
    return df


POOL = [10, 20, 30, 40]


def test_detection_values_by_hand():
    d = _dets()
    np.testing.assert_allclose(detection_values(d, "entropy"), [0.2, 0.6, 1.0, 0.4, 5.0])
    np.testing.assert_allclose(detection_values(d, "entropy", calibrated=True), [0.4, 1.2, 2.0, 0.8, 10.0])
    np.testing.assert_allclose(detection_values(d, "mcclass"), [0.2, 0.2, 0.3, 0.4, 9.0])
    np.testing.assert_allclose(detection_values(d, "albox"), [1.5, 2.0, 4.0, 1.0, 9.0])
    # relative: σ / [h, w, h, w]; first row (1/10 + 2/20 + 1/10 + 2/20) / 4 = 0.1
    np.testing.assert_allclose(detection_values(d, "albox", relative=True), [0.1, 0.15, 0.2, 0.1, 0.675])
    np.testing.assert_allclose(detection_values(d, "ep_logit_std"), [0.2, 0.2, 0.3, 0.4, 9.0])   # list column
    with pytest.raises(StrategyError, match="no column 'al_ymin_cal'.*udet-calibrate"):
        detection_values(d, "albox", calibrated=True)
    with pytest.raises(StrategyError, match="no column 'nope'"):
        detection_values(d, "nope")


def test_aggregation_max_mean_and_empty_images():
    d = _dets()
    s = image_scores(d, POOL, Strategy(score="entropy"), score_floor=0.5)
    np.testing.assert_allclose(s, [0.6, 1.0, 0.4, -np.inf])                     # floor drops the 5.0 row
    s = image_scores(d, POOL, Strategy(score="entropy", aggregate="mean", empty="highest"), score_floor=0.5)
    np.testing.assert_allclose(s, [0.6, 0.6, 0.4, np.inf])
    idx = PoolIndex(np.array(POOL), np.array([30, 10, 30]))
    np.testing.assert_allclose(idx.aggregate(np.array([1.0, 5.0, 3.0]), "max"), [5.0, np.nan, 3.0, np.nan])
    with pytest.raises(StrategyError, match="not in the unlabeled pool"):
        image_scores(d, [10, 20], Strategy(score="entropy"), score_floor=0.5)


def test_combinations_by_hand():
    d = _dets()
    # per image (10, 20, 30), max over detections >= 0.5:
    al = np.array([(2 / 10 + 2 / 20) / 2, max((1 / 10 + 2 / 20) / 2, 4 / 20), 1 / 10])   # relative al σ
    ent = np.array([0.6, 1.0, 0.4])
    ep = np.array([(1 / 10 + 1 / 20) / 2, max((0.5 / 10 + 0.5 / 20) / 2, (2 / 20 + 2 / 20) / 2), 0.3])
    mcc = np.array([0.2, 0.3, 0.4])
    mm = lambda x: (x - x.min()) / (x.max() - x.min())  # noqa: E731
    z = lambda x: (x - x.mean()) / x.std()  # noqa: E731
    got = image_scores(d, POOL, Strategy(score="ental", relative=True), 0.5)
    np.testing.assert_allclose(got[:3], mm(al) + mm(ent))
    got = image_scores(d, POOL, Strategy(score="epuncert", relative=True), 0.5)
    np.testing.assert_allclose(got[:3], mm(ep) + mm(mcc))
    got = image_scores(d, POOL, Strategy(score="alluncert", relative=True), 0.5)
    np.testing.assert_allclose(got[:3], mm(ep) + mm(al) + mm(mcc))
    got = image_scores(d, POOL, Strategy(score="highep_lowal", relative=True), 0.5)
    np.testing.assert_allclose(got[:3], mm(ep) + mm(mcc) - mm(al))
    got = image_scores(d, POOL, Strategy(score="sota", relative=True), 0.5)
    np.testing.assert_allclose(got[:3], np.max([z(ep), z(al), z(mcc)], axis=0))
    assert got[3] == -np.inf


def test_combo_uses_the_threshold_model():
    d = _dets()
    model = ThresholdModel(["entropy", "albox"], MinMaxNormaliser(np.array([0.0, 0.0]), np.array([2.0, 4.0])),
                           np.array([0.25, 0.75]), np.array([0.5]), np.array([0.5]), 0.5, 0.95, "cd")
    # the model reads "albox" as a raw column name -> give it one
    d["albox"] = detection_values(d, "albox")
    got = image_scores(d, POOL, Strategy(score="combo"), 0.5, threshold_model=model)
    per_det = 0.25 * np.clip(d["entropy"] / 2, 0, 1) + 0.75 * np.clip(d["albox"] / 4, 0, 1)
    np.testing.assert_allclose(got[:3], [per_det[1], max(per_det[0], per_det[2]), per_det[3]])
    with pytest.raises(StrategyError, match="needs the round's fitted threshold model"):
        image_scores(d, POOL, Strategy(score="combo"), 0.5)


def test_perc_weights_indexed_by_class_id_with_missing_classes():
    # classes 1 and 4 predicted, 2 and 3 never (the reference misplaced zeros when >= 2 classes were missing)
    classes = np.array([1, 1, 1, 4])
    idx = PoolIndex(np.array([1, 2]), np.array([1, 1, 2, 2]))
    # D = 4, w_1 = 4/3, w_4 = 4/1; image 1: {1} -> 4/3; image 2: {1, 4} -> (4/3 + 4)/2
    np.testing.assert_allclose(class_balance_weights(classes, idx), [4 / 3, (4 / 3 + 4) / 2])
    d = _dets()
    plain = image_scores(d, POOL, Strategy(score="entropy"), 0.5)
    perc = image_scores(d, POOL, Strategy(score="entropy", class_balance="perc"), 0.5)
    # above the floor: classes 1 (rows 20, 30), 2 (rows 10, 20) -> w_1 = w_2 = 2
    np.testing.assert_allclose(perc[:3], 2 * plain[:3])
    assert perc[3] == -np.inf


def test_perc_on_negative_scores_keeps_the_ranking():
    d = _dets()
    sota = image_scores(d, POOL, Strategy(score="sota", relative=True), 0.5)
    perc = image_scores(d, POOL, Strategy(score="sota", relative=True, class_balance="perc"), 0.5)
    # equal class weights (2) -> the ranking of the shifted scores equals the ranking of sota
    assert np.array_equal(np.argsort(perc[:3]), np.argsort(sota[:3])) and np.all(perc[:3] >= 0)


def test_random_scores_are_seeded():
    a = image_scores(_dets(), POOL, Strategy(score="random"), rng=np.random.default_rng(3))
    b = image_scores(_dets(), POOL, Strategy(score="random"), rng=np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)


def test_selection_rules():
    scores = np.array([0.5, 0.9, 0.1, 0.9, 0.3])
    assert select(scores, 2, "topk").tolist() == [1, 3]                  # ties: stable ascending, last k
    assert select(scores, 2, "bottomk").tolist() == [2, 4]
    assert select(scores, 9, "topk").size == 5 and select(scores, 0, "topk").size == 0
    # nee on 20 images scored 0..19, k = 7: q = 1, rem = 2; bins [0-3] [4-7] [8-11] [12-15] [16-19]
    s = np.arange(20, dtype=float)[::-1].copy()                          # position p has score 19 - p
    picked = select_nee(s, 7)
    assert sorted(19 - picked) == [3, 7, 11, 15, 16, 17, 18]
    assert sorted(select_nee(np.arange(20.0), 3)) == [16, 17, 18]        # q = 0: the top bin's 3 lowest
    r = select_random(100, 10, np.random.default_rng(0))
    assert r.size == 10 and np.unique(r).size == 10 and r.tolist() == select_random(100, 10, np.random.default_rng(0)).tolist()
    with pytest.raises(StrategyError, match="select='best'"):
        select(scores, 1, "best")


def test_round_sizes():
    assert round_sizes(1000).tolist() == [50, 50, 50, 100, 200, 300, 250]
    assert round_sizes(999).tolist() == [49, 49, 49, 99, 199, 299, 255]
    assert round_sizes(100, [10, 20]).tolist() == [10, 90]                  # the last round takes the rest
    with pytest.raises(StrategyError, match="sums to 110"):
        round_sizes(100, [50, 60])
    with pytest.raises(StrategyError, match="empty round"):
        round_sizes(10, [1, 50, 49])
