"""PLS scores, subsets and ROC: hand-computed values."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from uncertainty_det.errors import UserError
from uncertainty_det.ssl.pls import pls_roc, pls_scores, pls_subsets


def raw_frame(per_image):
    ids = [i for i, s in per_image.items() for _ in s]
    scores = [x for s in per_image.values() for x in s]
    return pd.DataFrame({"image_id": np.array(ids, dtype=np.int64), "score": np.array(scores, dtype=np.float64)})


def pseudo_frame(per_image):
    ids = [i for i, c in per_image.items() for _ in c]
    cls = [x for c in per_image.values() for x in c]
    n = len(ids)
    return pd.DataFrame({"image_id": np.array(ids, dtype=np.int64), "class_id": np.array(cls, dtype=np.int64),
                         "ymin": np.zeros(n), "xmin": np.zeros(n), "ymax": np.ones(n), "xmax": np.ones(n),
                         "score": np.full(n, 0.9)})


RAW = {1: [0.9, 0.5, 0.2, 0.1], 2: [0.8, 0.45], 3: [0.6, 0.4, 0.35], 4: [0.3]}
PSEUDO = {1: [1, 1], 2: [1, 2], 3: [3, 3]}   # image 4: no pseudo-label


def test_scores_hand_computed():
    out = pls_scores(raw_frame(RAW), pseudo_frame(PSEUDO), tau=0.4, beta=0.1)
    assert out.index.tolist() == [1, 2, 3] and out.index.name == "image_id"
    # S: 2/4, 2/2, 2/3 (0.4 itself counts)
    np.testing.assert_allclose(out["S"], [0.5, 1.0, 2 / 3])
    # 6 pseudo-labels: f1 = 3/6, f2 = 1/6, f3 = 2/6
    np.testing.assert_allclose(out["C"], [0.5, (0.5 + 5 / 6) / 2, 2 / 3])
    np.testing.assert_allclose(out["D"], 0.9 * out["S"] + 0.1 * out["C"])
    np.testing.assert_allclose(out["D"], [0.5, 0.9 + (0.5 + 5 / 6) / 20, 0.6 + 2 / 30])
    np.testing.assert_allclose(out["mean_score"], [0.425, 0.625, 1.35 / 3])
    assert out["n_raw"].tolist() == [4, 2, 3]
    # same as the reference's bin counts drate_k = #(s >= k/10) with k = 4
    for img, s in RAW.items():
        if img in out.index:
            drate = [sum(x >= k / 10 for x in s) for k in range(11)]
            assert out.loc[img, "S"] == pytest.approx(drate[4] / drate[0])
    only_c = pls_scores(raw_frame(RAW), pseudo_frame(PSEUDO), tau=0.4, beta=1.0)
    np.testing.assert_allclose(only_c["D"], only_c["C"])


def test_scores_errors():
    with pytest.raises(UserError, match="no raw detection"):
        pls_scores(raw_frame({1: [0.9]}), pseudo_frame({1: [1], 5: [2]}), tau=0.4)
    with pytest.raises(UserError, match="beta"):
        pls_scores(raw_frame(RAW), pseudo_frame(PSEUDO), tau=0.4, beta=1.5)
    with pytest.raises(UserError, match="'score'"):
        pls_scores(raw_frame(RAW).drop(columns="score"), pseudo_frame(PSEUDO), tau=0.4)
    with pytest.raises(UserError, match="empty"):
        pls_scores(raw_frame(RAW), pseudo_frame(PSEUDO).iloc[:0], tau=0.4)


def _scores(d, **cols):
    ids = np.arange(1, len(d) + 1, dtype=np.int64)
    base = {"S": d, "C": d, "D": d, "mean_score": d, "n_raw": np.ones(len(d), dtype=np.int64)}
    base.update(cols)
    return pd.DataFrame(base, index=pd.Index(ids, name="image_id"))


def test_subsets_sizes_and_seed():
    s = _scores(np.linspace(0.1, 1.0, 10))
    sub = pls_subsets(s, top_fraction=0.4, seed=0)
    # percentile 60 of 0.1..1.0 is 0.64 -> top = D in {0.7, 0.8, 0.9, 1.0}
    assert sub["top"].tolist() == [7, 8, 9, 10]
    assert sub["bottom"].tolist() == [1, 2, 3, 4, 5, 6]
    assert len(sub["random"]) == 4 and len(set(sub["random"])) == 4
    assert set(sub["random"]) <= set(range(1, 11))
    np.testing.assert_array_equal(pls_subsets(s, 0.4, seed=0)["random"], sub["random"])
    draws = {tuple(pls_subsets(s, 0.4, seed=k)["random"]) for k in range(10)}
    assert len(draws) > 1
    tied = pls_subsets(_scores(np.full(5, 0.3)), top_fraction=0.4)
    assert len(tied["top"]) == 5 and len(tied["bottom"]) == 0
    with pytest.raises(UserError, match="top_fraction"):
        pls_subsets(s, top_fraction=0.0)


def test_roc_perfect_and_reversed():
    s = _scores(np.array([0.9, 0.8, 0.3, 0.1]),
                C=np.array([0.1, 0.2, 0.8, 0.9]),               # reversed ranking
                n_raw=np.array([1, 2, 5, 9], dtype=np.int64))   # more detections on missing images
    s = pd.concat([s, _scores(np.array([0.5])).set_axis(pd.Index([99], name="image_id"))])  # not in missed_rate
    missed = pd.Series([0.0, 0.0, 0.5, 1.0], index=pd.Index([1, 2, 3, 4], name="image_id"), name="missed_rate")
    roc = pls_roc(s, missed, thresholds=(0.0, 0.75, 1.0))
    assert roc.index.tolist() == [0.0, 0.75, 1.0]
    assert roc.loc[0.0, "S"] == 1.0 and roc.loc[0.0, "D"] == 1.0 and roc.loc[0.0, "mean_score"] == 1.0
    assert roc.loc[0.0, "C"] == 0.0
    assert roc.loc[0.0, "n_raw"] == 1.0
    assert roc.loc[0.0, "n_images"] == 4 and roc.loc[0.0, "n_missing"] == 2
    assert roc.loc[0.75, "S"] == 1.0 and roc.loc[0.75, "n_missing"] == 1
    assert roc.loc[[1.0], ["S", "C", "D", "mean_score", "n_raw"]].isna().all(axis=None)


def test_roc_errors():
    s = _scores(np.array([0.9, 0.1]))
    with pytest.raises(UserError, match="share no image_id"):
        pls_roc(s, pd.Series([0.0], index=[50]))
    with pytest.raises(UserError, match="pls_scores"):
        pls_roc(s.drop(columns="n_raw"), pd.Series([0.0, 1.0], index=[1, 2]))
