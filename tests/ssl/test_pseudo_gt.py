"""Pseudo-label vs GT matching and reports: hand-built scenes, ties, empty cases, brute-force greedy."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from uncertainty_det.errors import UserError
from uncertainty_det.ssl import pseudo_gt
from uncertainty_det.ssl.pseudo_gt import (
    PseudoLabelError, greedy_one_to_one, match_pseudo_to_gt, overlap_pairs, per_image_missed_rate,
    pseudo_label_report,
)


CORNERS = ("ymin", "xmin", "ymax", "xmax")


def bx(x0, x1):
    """A box of height 10 spanning x0..x1: IoU between two of them is the 1-D interval IoU."""
    return [0.0, float(x0), 10.0, float(x1)]


def pseudo(rows, **extra):
    """rows: (image_id, class_id, box, score)."""
    df = pd.DataFrame({
        "image_id": np.array([r[0] for r in rows], dtype=np.int64),
        "class_id": np.array([r[1] for r in rows], dtype=np.int64),
        **{c: np.array([r[2][k] for r in rows], dtype=np.float64) for k, c in enumerate(CORNERS)},
        "score": np.array([r[3] for r in rows], dtype=np.float64),
    })
    for k, v in extra.items():
        df[k] = v
    return df


def gt(rows):
    """rows: (gt_id, image_id, class_id, box)."""
    return pd.DataFrame({
        "gt_id": np.array([r[0] for r in rows], dtype=np.int64),
        "image_id": np.array([r[1] for r in rows], dtype=np.int64),
        "class_id": np.array([r[2] for r in rows], dtype=np.int64),
        **{c: np.array([r[3][k] for r in rows], dtype=np.float64) for k, c in enumerate(CORNERS)},
    })


def test_greedy_is_by_iou_not_by_score():
    # p_high (score .9): IoU 7/13 with g1, 8/12 with g2; p_low (score .5): IoU 1 with g2.
    # Score-ordered greedy would give g2 to p_high and leave p_low unmatched; IoU order matches both.
    g = gt([(10, 1, 1, bx(0, 10)), (11, 1, 1, bx(5, 15))])
    p = pseudo([(1, 1, bx(3, 13), 0.9), (1, 1, bx(5, 15), 0.5)])
    res = match_pseudo_to_gt(p, g)
    assert res.pseudo["gt_row"].tolist() == [0, 1]
    assert res.pseudo["gt_id"].tolist() == [10, 11]
    np.testing.assert_allclose(res.pseudo["iou"], [7 / 13, 1.0])
    assert res.gt["pseudo_row"].tolist() == [0, 1]
    assert res.gt["found"].tolist() == [True, True]
    assert res.n_matched == 2


def test_fixes_reference_unique_argmax_rule():
    # p1 is the argmax of both g1 (0.9) and g2 (0.6); p2 overlaps g2 at 8/15. The reference's
    # "unique argmax per GT" keeps only p1 (g2 missed); greedy by IoU also pairs p2 with g2.
    g = gt([(1, 1, 1, bx(0, 10)), (2, 1, 1, bx(1, 16))])
    p = pseudo([(1, 1, bx(1, 10), 0.9), (1, 1, bx(8, 16), 0.8)])
    res = match_pseudo_to_gt(p, g)
    assert res.pseudo["gt_id"].tolist() == [1, 2]
    np.testing.assert_allclose(res.pseudo["iou"], [0.9, 8 / 15])
    assert res.gt["found"].all()


def test_iou_tie_goes_to_higher_score_then_earlier_row():
    g = gt([(1, 1, 1, bx(0, 10))])
    # both have IoU exactly 0.8 with the GT
    p = pseudo([(1, 1, bx(0, 8), 0.6), (1, 1, bx(2, 10), 0.9)])
    res = match_pseudo_to_gt(p, g)
    assert res.pseudo["matched"].tolist() == [False, True]
    assert res.gt["pseudo_row"].tolist() == [1]
    p_eq = pseudo([(1, 1, bx(0, 8), 0.7), (1, 1, bx(2, 10), 0.7)])
    assert match_pseudo_to_gt(p_eq, g).pseudo["matched"].tolist() == [True, False]


def test_threshold_class_aware_and_unmatched_fill():
    g = gt([(5, 1, 2, bx(0, 10))])
    p = pseudo([(1, 1, bx(0, 6), 0.9)])                     # IoU 0.6, wrong class
    res = match_pseudo_to_gt(p, g, iou_threshold=0.5)
    assert res.pseudo["matched"].tolist() == [True]
    assert res.pseudo["gt_class_id"].tolist() == [2]
    assert res.pseudo["class_correct"].tolist() == [False]
    assert not match_pseudo_to_gt(p, g, iou_threshold=0.61).pseudo["matched"].any()
    aware = match_pseudo_to_gt(p, g, class_aware=True)
    assert aware.class_aware
    row = aware.pseudo.iloc[0]
    assert (row["gt_row"], row["gt_id"], row["gt_class_id"], row["iou"], row["matched"]) == (-1, -1, -1, 0.0, False)
    assert aware.gt["found"].tolist() == [False]


def test_matching_is_per_image_and_keeps_input_index():
    g = gt([(1, 1, 1, bx(0, 10)), (2, 2, 1, bx(0, 10))])
    p = pseudo([(2, 1, bx(0, 10), 0.9), (3, 1, bx(0, 10), 0.9)])
    p.index = [7, 3]
    res = match_pseudo_to_gt(p, g)
    assert res.pseudo.index.tolist() == [7, 3]
    assert res.pseudo["gt_id"].tolist() == [2, -1]           # same box in image 1 is not a match
    assert res.gt["found"].tolist() == [False, True]


def test_empty_inputs():
    g = gt([(1, 1, 1, bx(0, 10)), (2, 1, 2, bx(20, 30))])
    empty_p = pseudo([(1, 1, bx(0, 1), 0.5)]).iloc[:0]
    res = match_pseudo_to_gt(empty_p, g)
    assert len(res.pseudo) == 0 and not res.gt["found"].any()
    rate = per_image_missed_rate(empty_p, g)
    assert rate.to_dict() == {1: 1.0}
    rep = pseudo_label_report(empty_p, g)
    assert rep["n_gt"] == 2 and rep["gt_missing_pct"] == 100.0 and np.isnan(rep["precision"])
    res2 = match_pseudo_to_gt(pseudo([(1, 1, bx(0, 10), 0.5)]), g.iloc[:0])
    assert res2.pseudo["matched"].tolist() == [False]
    assert per_image_missed_rate(pseudo([(1, 1, bx(0, 10), 0.5)]), g.iloc[:0]).empty


def scene():
    # image 1: GT a (cls 1), b (cls 2); pseudo p0 hits a (IoU .8, right class), p1 hits b (IoU 1, wrong
    # class), p2 hits nothing. image 2: GT c, no pseudo. image 3: pseudo p3, no GT.
    g = gt([(10, 1, 1, bx(0, 10)), (11, 1, 2, bx(20, 30)), (20, 2, 1, bx(0, 10))])
    p = pseudo([(1, 1, bx(0, 8), 0.9), (1, 1, bx(20, 30), 0.8), (1, 1, bx(50, 60), 0.7),
                (3, 2, bx(0, 10), 0.6)])
    return p, g


def test_report_hand_computed():
    p, g = scene()
    rep = pseudo_label_report(p, g)
    assert (rep["n_gt"], rep["n_pseudo"], rep["n_matched"], rep["n_extra"]) == (3, 4, 2, 2)
    assert rep["gt_found_pct"] == pytest.approx(200 / 3)
    assert rep["gt_missing_pct"] == pytest.approx(100 / 3)
    assert rep["extra_pct"] == pytest.approx(50.0)
    assert rep["class_accuracy"] == pytest.approx(0.5)
    assert rep["mean_iou"] == pytest.approx(0.9)
    assert rep["precision"] == pytest.approx(0.5)
    assert rep["recall"] == pytest.approx(2 / 3)
    assert rep["per_class"] == {
        1: {"n_gt": 2, "found": 1, "missing": 1, "mean_iou": pytest.approx(0.8), "accuracy": 1.0},
        2: {"n_gt": 1, "found": 1, "missing": 0, "mean_iou": pytest.approx(1.0), "accuracy": 0.0},
    }


def test_per_image_missed_rate():
    p, g = scene()
    rate = per_image_missed_rate(p, g)
    assert rate.name == "missed_rate" and rate.index.name == "image_id"
    assert rate.to_dict() == {1: 0.0, 2: 1.0}                    # image 3 has no GT: absent
    g2 = pd.concat([g, gt([(12, 1, 1, bx(100, 110))])], ignore_index=True)
    assert per_image_missed_rate(p, g2).loc[1] == pytest.approx(1 / 3)


def test_bad_input_raises_user_error():
    p, g = scene()
    with pytest.raises(UserError, match="'score'"):
        match_pseudo_to_gt(p.drop(columns="score"), g)
    with pytest.raises(PseudoLabelError, match="ground truth.*'xmax'"):
        match_pseudo_to_gt(p, g.drop(columns="xmax"))
    bad = p.copy()
    bad.loc[0, "ymin"] = np.nan
    with pytest.raises(PseudoLabelError, match="NaN"):
        pseudo_label_report(bad, g)
    with pytest.raises(PseudoLabelError, match="iou_threshold"):
        match_pseudo_to_gt(p, g, iou_threshold=0.0)
    with pytest.raises(PseudoLabelError, match="DataFrame"):
        match_pseudo_to_gt([1, 2], g)
    with pytest.raises(PseudoLabelError, match="integers"):
        match_pseudo_to_gt(p.astype({"class_id": float}), g)


def _random_frame(rng, n, n_img):
    y, x = rng.uniform(0, 50, n), rng.uniform(0, 50, n)
    h, w = rng.uniform(5, 30, n), rng.uniform(5, 30, n)
    return pd.DataFrame({"image_id": rng.integers(0, n_img, n).astype(np.int64),
                         "class_id": rng.integers(1, 3, n).astype(np.int64),
                         "ymin": y, "xmin": x, "ymax": y + h, "xmax": x + w,
                         "score": np.round(rng.uniform(0, 1, n), 1)})


def _brute_greedy(ia, ib, v, tb):
    keep = np.zeros(ia.size, dtype=bool)
    used_a, used_b = set(), set()
    for k in np.lexsort((ib, ia, -tb, -v)):
        if ia[k] in used_a or ib[k] in used_b:
            continue
        keep[k] = True
        used_a.add(ia[k])
        used_b.add(ib[k])
    return keep


def test_pairs_and_greedy_match_brute_force(monkeypatch):
    rng = np.random.default_rng(3)
    for _ in range(20):
        a = _random_frame(rng, int(rng.integers(0, 30)), 4)
        b = _random_frame(rng, int(rng.integers(0, 30)), 4)
        ia, ib, v = overlap_pairs(a, b, min_iou=0.1)
        expected = []
        for i in range(len(a)):
            for j in range(len(b)):
                if a.image_id[i] != b.image_id[j]:
                    continue
                bi, bj = a.iloc[i][["ymin", "xmin", "ymax", "xmax"]], b.iloc[j][["ymin", "xmin", "ymax", "xmax"]]
                ih = max(0.0, min(bi.ymax, bj.ymax) - max(bi.ymin, bj.ymin))
                iw = max(0.0, min(bi.xmax, bj.xmax) - max(bi.xmin, bj.xmin))
                inter = ih * iw
                area_i = (bi.ymax - bi.ymin) * (bi.xmax - bi.xmin)
                area_j = (bj.ymax - bj.ymin) * (bj.xmax - bj.xmin)
                u = inter / (area_i + area_j - inter)
                if u > 0 and u >= 0.1:
                    expected.append((i, j, u))
        got = np.stack([ia, ib, v], axis=1) if ia.size else np.zeros((0, 3))
        np.testing.assert_allclose(got, np.array(expected).reshape(-1, 3))
        tb = a["score"].to_numpy()[ia]
        np.testing.assert_array_equal(greedy_one_to_one(ia, ib, v, tb), _brute_greedy(ia, ib, v, tb))
        # chunked enumeration gives the same pairs
        monkeypatch.setattr(pseudo_gt, "_PAIR_CHUNK", 3)
        ia2, ib2, v2 = overlap_pairs(a, b, min_iou=0.1)
        monkeypatch.undo()
        np.testing.assert_array_equal(ia2, ia)
        np.testing.assert_array_equal(ib2, ib)
        np.testing.assert_allclose(v2, v)
