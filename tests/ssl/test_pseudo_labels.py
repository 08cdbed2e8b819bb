"""Pseudo-label selection on a crafted teacher table with hand-computed answers for every strategy and use mode."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from uncertainty_det.errors import UserError
from uncertainty_det.ssl.pseudo_labels import (
    PSEUDO_COLUMNS, PseudoLabelError, PseudoLabelSelection, image_weights, normalised_certainty,
    select_ignore_regions, select_pseudo_labels, select_pseudo_labels_and_ignore_regions,
)
from uncertainty_det.thresholding import MinMaxNormaliser, ThresholdModel

CORNERS = ("ymin", "xmin", "ymax", "xmax")

# name, image, class, score, entropy, al σ (all 4 corners), ep σ, ep_logit_std, iou_pred (a [0, 1] column)
# Every box is 10 x 10 px, so the relative σ is σ / 10.
ROWS = {
    "r0": (1, 1, 0.90, 0.2, 1.0, 2.0, [0.1, 0.3], 0.3),
    "r1": (1, 2, 0.50, 0.6, 3.0, 1.0, [0.4, 0.4], 0.7),
    "r2": (1, 1, 0.35, 0.1, 1.0, 1.0, [0.1, 0.1], 0.9),      # candidate, but score <= tau
    "r3": (2, 3, 0.80, 1.0, 2.0, 5.0, [0.2, 0.2], 1.4),      # iou_pred > 1: weight clips to 1
    "r4": (2, 1, 0.05, 0.1, 0.1, 0.1, [0.0, 0.0], 0.99),     # below min_score: never a candidate
    "r5": (3, 2, 0.45, 0.4, 0.0, 0.0, [0.0, 0.0], 0.4),      # zero σ: infinite certainty
    "r6": (3, 1, 0.60, 0.3, 1.0, 2.5, [0.5, 0.1], 0.5),
}
ORDER = ["r3", "r0", "r5", "r1", "r4", "r2", "r6"]            # not grouped by image


def _dets() -> pd.DataFrame:
    rows = [ROWS[k] for k in ORDER]
    y0 = np.arange(len(rows), dtype=np.float64) * 20          # distinct boxes to identify rows
    df = pd.DataFrame({
        "image_id": [r[0] for r in rows], "class_id": [r[1] for r in rows], "score": [r[2] for r in rows],
        "ymin": y0, "xmin": y0 + 1, "ymax": y0 + 10, "xmax": y0 + 11,
        "entropy": [r[3] for r in rows],
        **{f"al_{c}": [r[4] for r in rows] for c in CORNERS},
        **{f"ep_{c}": [r[5] for r in rows] for c in CORNERS},
        "ep_logit_std": [list(r[6]) for r in rows],
        "iou_pred": [r[7] for r in rows],
        "file_name": [f"{r[0]}.png" for r in rows],
    })
    df["row"] = ORDER
    return df


def _rows(pseudo: pd.DataFrame) -> list[str]:
    """Row names of the kept boxes, identified by their ymin."""
    return [ORDER[int(y // 20)] for y in pseudo["ymin"]]


def _sel(**kw) -> PseudoLabelSelection:
    return PseudoLabelSelection(**kw)


# ------------------------------------------------------------------------------------------------ score / column


@pytest.mark.parametrize("use", ["filter", "weight", "both"])
def test_score_strategy(use):
    out = select_pseudo_labels(_dets(), _sel(strategy="score", use=use))
    assert list(out.columns) == list(PSEUDO_COLUMNS)
    assert _rows(out) == ["r0", "r1", "r3", "r6", "r5"]         # image order, then descending score
    np.testing.assert_allclose(out["value"], [0.9, 0.5, 0.8, 0.6, 0.45])
    expected_w = [1.0] * 5 if use == "filter" else [0.9, 0.5, 0.8, 0.6, 0.45]
    np.testing.assert_allclose(out["weight"], expected_w)
    assert out["image_id"].tolist() == [1, 1, 2, 3, 3]
    assert out["class_id"].tolist() == [1, 2, 3, 1, 2]
    assert out["image_id"].dtype == np.int64 and out["class_id"].dtype == np.int64
    np.testing.assert_allclose(out["ymin"], [20, 60, 0, 120, 40])           # boxes follow their rows
    np.testing.assert_allclose(out["xmax"], [31, 71, 11, 131, 51])
    assert out.index.tolist() == list(range(5))


def test_tau_and_min_score():
    out = select_pseudo_labels(_dets(), _sel(tau=0.55))
    assert _rows(out) == ["r0", "r3", "r6"]
    out = select_pseudo_labels(_dets(), _sel(tau=0.0, min_score=0.0))
    assert sorted(_rows(out)) == sorted(ORDER)                 # r4 (0.05 > 0) is in with min_score 0
    out = select_pseudo_labels(_dets(), _sel(tau=0.0, min_score=0.1))
    assert "r4" not in _rows(out) and "r2" in _rows(out)


@pytest.mark.parametrize("use, weights", [("filter", [1, 1, 1, 1]), ("weight", [0.7, 0.9, 1.0, 0.5]),
                                          ("both", [0.7, 0.9, 1.0, 0.5])])
def test_column_strategy(use, weights):
    out = select_pseudo_labels(_dets(), _sel(strategy="iou_pred", use=use))
    # value > tau on the candidates: r2 is kept although its score is 0.35, r4 is not a candidate,
    # r5 (0.4 == tau) is not kept; image 1 is ordered by score: r1 (0.5) before r2 (0.35)
    assert _rows(out) == ["r1", "r2", "r3", "r6"]
    np.testing.assert_allclose(out["value"], [0.7, 0.9, 1.4, 0.5])
    np.testing.assert_allclose(out["weight"], weights)


def test_calibrated_column_and_score():
    d = _dets()
    d["iou_pred_cal"] = 1.0 - d["iou_pred"]
    out = select_pseudo_labels(d, _sel(strategy="iou_pred", calibrated=True))
    # 1 - iou_pred: r0 0.7, r1 0.3, r2 0.1, r3 -0.4, r5 0.6, r6 0.5
    assert _rows(out) == ["r0", "r6", "r5"]
    d["score_cal"] = d["score"] * 0.5
    out = select_pseudo_labels(d, _sel(strategy="score", calibrated=True))
    assert _rows(out) == ["r0"]                                  # 0.45 and 0.40 are not > 0.4


# ------------------------------------------------------------------------------------------------ multi-component


def test_ental_by_hand():
    d = _dets()
    # mean(rel al σ, entropy): r0 0.15, r1 0.45, r3 0.6, r5 0.2, r6 0.2 -> 1/x: 20/3, 20/9, 5/3, 5, 5
    # min-max over score > tau: r0 1, r1 1/9, r3 0, r5 2/3, r6 2/3
    out = select_pseudo_labels(d, _sel(strategy="ental", use="weight"))
    assert _rows(out) == ["r0", "r1", "r3", "r6", "r5"]
    np.testing.assert_allclose(out["weight"], [1, 1 / 9, 0, 2 / 3, 2 / 3])
    np.testing.assert_allclose(out["value"], [1, 1 / 9, 0, 2 / 3, 2 / 3])

    out = select_pseudo_labels(d, _sel(strategy="ental", use="filter"))
    assert _rows(out) == ["r0", "r1", "r6", "r5"]               # c > 0 drops r3, and with it image 2
    assert 2 not in out["image_id"].tolist()
    np.testing.assert_allclose(out["weight"], 1.0)

    out = select_pseudo_labels(d, _sel(strategy="ental", use="both", certainty_min=0.5))
    assert _rows(out) == ["r0", "r6", "r5"]
    np.testing.assert_allclose(out["weight"], [1, 2 / 3, 2 / 3])


def test_ental_absolute_sigma():
    # relative=False: mean(px al σ, entropy): r0 0.6, r1 1.8, r3 1.5, r5 0.2, r6 0.65; the least certain
    # box is now r1 (1/1.8), not r3
    out = select_pseudo_labels(_dets(), _sel(strategy="ental", relative=False))
    assert _rows(out) == ["r0", "r3", "r6", "r5"]


def test_epuncert_by_hand():
    # mean(rel ep σ, mean ep_logit_std): r0 0.2, r1 0.25, r3 0.35, r5 0 (-> inf, max), r6 0.275
    # 1/x: 5, 4, 20/7, inf, 40/11 -> normalised over the finite ones: 1, 8/15, 0, 1, 4/11
    out = select_pseudo_labels(_dets(), _sel(strategy="epuncert", use="weight"))
    assert _rows(out) == ["r0", "r1", "r3", "r6", "r5"]
    np.testing.assert_allclose(out["weight"], [1, 8 / 15, 0, 4 / 11, 1], atol=1e-12)
    out = select_pseudo_labels(_dets(), _sel(strategy="epuncert"))
    assert _rows(out) == ["r0", "r1", "r6", "r5"]               # filtered (the reference never filtered epuncert)


def test_alluncert_by_hand():
    # mean(rel ep σ, rel al σ, mcclass): r0 0.5/3, r1 0.8/3, r3 0.9/3, r5 0, r6 0.65/3
    # 1/x: 6, 3.75, 10/3, inf, 60/13 -> 1, 5/32, 0, 1, 25/52
    out = select_pseudo_labels(_dets(), _sel(strategy="alluncert", use="both"))
    assert _rows(out) == ["r0", "r1", "r6", "r5"]
    np.testing.assert_allclose(out["weight"], [1, 5 / 32, 25 / 52, 1])
    out = select_pseudo_labels(_dets(), _sel(strategy="alluncert", use="both", certainty_min=0.5))
    assert _rows(out) == ["r0", "r5"]                           # r6: 25/52 < 0.5


def test_truncation_applies_to_multi_component_strategies():
    # one candidate per image (highest score): r0, r3, r6; certainty normalised over those three:
    # 6, 10/3, 60/13 -> 1, 0, 25/52
    out = select_pseudo_labels(_dets(), _sel(strategy="alluncert", use="weight", max_per_image=1))
    assert _rows(out) == ["r0", "r3", "r6"]
    np.testing.assert_allclose(out["weight"], [1, 0, 25 / 52])
    # with max_per_image=1 in image 3 the zero-σ r5 (score 0.45) is cut, so the certainty filter keeps r6
    out = select_pseudo_labels(_dets(), _sel(strategy="epuncert", use="both", max_per_image=1))
    assert _rows(out) == ["r0", "r6"]
    np.testing.assert_allclose(out["weight"], [1, 4 / 11])
    out = select_pseudo_labels(_dets(), _sel(strategy="score", max_per_image=1))
    assert _rows(out) == ["r0", "r3", "r6"]
    # truncation happens before the score rule: with 2 per image, image 1 keeps r0 and r1, not r2
    out = select_pseudo_labels(_dets(), _sel(strategy="iou_pred", max_per_image=2))
    assert _rows(out) == ["r1", "r3", "r6"]                     # r2 (3rd by score in image 1) is cut


def test_truncation_is_vectorised_and_stable_on_many_rows():
    rng = np.random.default_rng(0)
    n = 5000
    d = pd.DataFrame({"image_id": rng.integers(0, 40, n), "class_id": rng.integers(1, 4, n),
                      "score": np.round(rng.random(n), 2), **{c: rng.random(n) for c in CORNERS}})
    out = select_pseudo_labels(d, _sel(tau=0.0, min_score=0.0, max_per_image=7))
    ref = (d.assign(pos=np.arange(n)).sort_values(["image_id", "score", "pos"], ascending=[True, False, True])
           .groupby("image_id").head(7))
    ref = ref[ref["score"] > 0]
    np.testing.assert_array_equal(out["ymin"].to_numpy(), ref["ymin"].to_numpy())
    assert out.groupby("image_id").size().max() == 7


def test_nan_uncertainty_is_never_kept():
    d = _dets()
    d.loc[d["row"] == "r1", "entropy"] = np.nan
    out = select_pseudo_labels(d, _sel(strategy="ental", use="weight"))
    assert "r1" not in _rows(out)
    # the others are normalised without it: 20/3, 5/3, 5, 5 -> 1, 0, 2/3, 2/3
    np.testing.assert_allclose(out["weight"], [1, 0, 2 / 3, 2 / 3])


def test_normalised_certainty_edge_cases():
    pop = np.array([True, True, True, False])
    np.testing.assert_allclose(normalised_certainty(np.array([0.5, 0.5, 0.5, 0.1]), pop)[:3], 1.0)  # constant -> 1
    out = normalised_certainty(np.array([0.0, 0.0, 2.0, 1.0]), pop)
    np.testing.assert_allclose(out[:3], [1.0, 1.0, 1.0])          # inf counts as max; one finite value -> 1
    assert np.isnan(out[3])                                       # outside the population
    out = normalised_certainty(np.array([1.0, 0.5, np.nan, 0.25]), np.ones(4, bool))
    np.testing.assert_allclose(out, [0.0, 1 / 3, np.nan, 1.0])


# ------------------------------------------------------------------------------------------------ combo


def _model(op: float) -> ThresholdModel:
    # u* = 0.5 · entropy / 1 + 0.5 · al_rel / 0.5 (each clipped to [0, 1])
    return ThresholdModel(uncertainties=["entropy", "al_rel"],
                          normaliser=MinMaxNormaliser(np.array([0.0, 0.0]), np.array([1.0, 0.5])),
                          weights=np.array([0.5, 0.5]), iou_thresholds=np.array([0.5]), thresholds=np.array([op]),
                          operating_threshold=op, budget=0.95, mode="cd")


def test_combo_thresholds_in_the_models_units():
    # u*: r0 0.2, r1 0.6, r2 0.15 (score 0.35 <= tau), r3 0.7, r5 0.2, r6 0.25.
    # Against the operating threshold 0.22 only r0 and r5 pass; re-normalising u* over the candidates (the
    # reference) would turn r6 into 0.18 and keep it too.
    out = select_pseudo_labels(_dets(), _sel(strategy="combo"), threshold_model=_model(0.22))
    assert _rows(out) == ["r0", "r5"]
    np.testing.assert_allclose(out["value"], [0.2, 0.2])
    np.testing.assert_allclose(out["weight"], [1, 1])
    out = select_pseudo_labels(_dets(), _sel(strategy="combo", use="both"), threshold_model=_model(0.22))
    np.testing.assert_allclose(out["weight"], [0.8, 0.8])
    out = select_pseudo_labels(_dets(), _sel(strategy="combo", use="both"), threshold_model=_model(0.3))
    assert _rows(out) == ["r0", "r6", "r5"]
    np.testing.assert_allclose(out["weight"], [0.8, 0.75, 0.8])


def test_combo_weight_mode_keeps_by_score_only():
    out = select_pseudo_labels(_dets(), _sel(strategy="combo", use="weight"), threshold_model=_model(0.22))
    assert _rows(out) == ["r0", "r1", "r3", "r6", "r5"]
    np.testing.assert_allclose(out["value"], [0.2, 0.6, 0.7, 0.25, 0.2])
    np.testing.assert_allclose(out["weight"], [0.8, 0.4, 0.3, 0.75, 0.8])


# ------------------------------------------------------------------------------------------------ ignore regions


def test_ignore_regions_are_unkept_candidates_above_ignore_score():
    # score, tau 0.4: kept r0 r1 r3 r6 r5; candidates not kept: r2 (0.35); r4 (0.05) is below min_score 0.1
    none = select_ignore_regions(_dets(), _sel(strategy="score"))
    assert none.empty and list(none.columns) == list(PSEUDO_COLUMNS)
    out = select_ignore_regions(_dets(), _sel(strategy="score", ignore_score=0.1))
    assert _rows(out) == ["r2"] and out["weight"].tolist() == [0.0] and out["score"].tolist() == [0.35]
    assert select_ignore_regions(_dets(), _sel(strategy="score", ignore_score=0.36)).empty
    # below min_score a detection is no candidate, so no region either
    assert _rows(select_ignore_regions(_dets(), _sel(strategy="score", ignore_score=0.0, min_score=0.1))) == ["r2"]
    assert _rows(select_ignore_regions(_dets(), _sel(strategy="score", ignore_score=0.0, min_score=0.0))) == [
        "r2", "r4"]
    # combo at 0.22 keeps r0, r5: r1 (0.5), r3 (0.8), r6 (0.6) fail the uncertainty test, r2 the score
    sel = _sel(strategy="combo", ignore_score=0.3)
    regions = select_ignore_regions(_dets(), sel, threshold_model=_model(0.22))
    assert _rows(regions) == ["r1", "r2", "r3", "r6"]
    kept = select_pseudo_labels(_dets(), sel, threshold_model=_model(0.22))
    assert _rows(kept) == ["r0", "r5"]                    # ignore_score leaves the pseudo-labels as they were
    assert not set(_rows(kept)) & set(_rows(regions))
    both = select_pseudo_labels_and_ignore_regions(_dets(), sel, threshold_model=_model(0.22))
    pd.testing.assert_frame_equal(both[0], kept)
    pd.testing.assert_frame_equal(both[1], regions)


# ------------------------------------------------------------------------------------------------ image weights


def test_image_weights():
    out = select_pseudo_labels(_dets(), _sel(strategy="ental", use="weight"))
    s = image_weights(out)
    assert s.index.tolist() == [1, 2, 3] and s.name == "weight"
    np.testing.assert_allclose(s.to_numpy(), [(1 + 1 / 9) / 2, 0.0, 2 / 3])
    s = image_weights(select_pseudo_labels(_dets(), _sel(strategy="ental")))
    assert s.index.tolist() == [1, 3]
    np.testing.assert_allclose(s.to_numpy(), 1.0)
    assert image_weights(select_pseudo_labels(_dets(), _sel(tau=0.95))).empty


def test_empty_tables():
    d = _dets().iloc[:0]
    for strategy in ("score", "ental", "epuncert", "alluncert", "iou_pred"):
        out = select_pseudo_labels(d, _sel(strategy=strategy, use="both"))
        assert out.empty and list(out.columns) == list(PSEUDO_COLUMNS)
    out = select_pseudo_labels(d, _sel(strategy="combo"), threshold_model=_model(0.2))
    assert out.empty


# ------------------------------------------------------------------------------------------------ errors


def test_missing_model_and_columns():
    assert issubclass(PseudoLabelError, UserError)
    with pytest.raises(PseudoLabelError, match="'combo' needs the teacher's fitted threshold model"):
        select_pseudo_labels(_dets(), _sel(strategy="combo"))
    d = _dets().drop(columns=["al_ymin", "al_xmin", "al_ymax", "al_xmax"])
    with pytest.raises(PseudoLabelError, match="'ental' needs column 'al_ymin' \\(for albox\\).*loss attenuation"):
        select_pseudo_labels(d, _sel(strategy="ental"))
    with pytest.raises(PseudoLabelError, match="'epuncert' needs column 'ep_ymin_cal' \\(for mcbox\\).*calibrate"):
        select_pseudo_labels(_dets(), _sel(strategy="epuncert", calibrated=True))
    d_cal = _dets().assign(**{f"ep_{c}_cal": 1.0 for c in CORNERS})
    with pytest.raises(PseudoLabelError, match="needs column 'probs_std_cal' \\(for mcclass\\)"):
        select_pseudo_labels(d_cal, _sel(strategy="epuncert", calibrated=True))
    with pytest.raises(PseudoLabelError, match="'nope' is not one of .* nor a column"):
        select_pseudo_labels(_dets(), _sel(strategy="nope"))
    with pytest.raises(PseudoLabelError, match="not numeric"):
        select_pseudo_labels(_dets(), _sel(strategy="file_name"))
    with pytest.raises(PseudoLabelError, match="lacks columns \\['score'\\]"):
        select_pseudo_labels(_dets().drop(columns=["score"]), _sel())
    with pytest.raises(UserError, match="al_rel"):          # the model's own missing-measure error
        select_pseudo_labels(d, _sel(strategy="combo"), threshold_model=_model(0.2))
    with pytest.raises(PseudoLabelError, match="operating_threshold is nan"):
        select_pseudo_labels(_dets(), _sel(strategy="combo"), threshold_model=_model(float("nan")))
    with pytest.raises(PseudoLabelError, match="image_id"):
        image_weights(pd.DataFrame({"weight": [1.0]}))


@pytest.mark.parametrize("kw, match", [
    ({"use": "soft"}, "use='soft'"),
    ({"tau": 1.2}, "tau must be in \\[0, 1\\)"),
    ({"tau": float("nan")}, "tau must be a finite number"),
    ({"min_score": -0.1}, "min_score"),
    ({"max_per_image": 0}, "max_per_image"),
    ({"max_per_image": 2.5}, "max_per_image"),
    ({"certainty_min": 1.0}, "certainty_min"),
    ({"calibrated": "yes"}, "calibrated"),
    ({"strategy": "bad name"}, "strategy 'bad name'"),
    ({"strategy": ""}, "strategy ''"),
    ({"ignore_score": 1.5}, "ignore_score"),
    ({"ignore_score": "low"}, "ignore_score"),
])
def test_selection_validation(kw, match):
    with pytest.raises(PseudoLabelError, match=match):
        PseudoLabelSelection(**kw)


def test_selection_defaults_and_column_tau():
    s = PseudoLabelSelection()
    assert (s.strategy, s.tau, s.min_score, s.max_per_image, s.use, s.certainty_min, s.calibrated, s.relative) == (
        "score", 0.4, 0.1, 99, "filter", 0.0, False, True)
    assert PseudoLabelSelection(strategy="iou_pred", tau=1.5).tau == 1.5    # a column may use its own scale
    with pytest.raises(Exception):
        s.tau = 0.5                                                          # frozen
