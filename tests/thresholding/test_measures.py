"""Uncertainty measures by name: hand values, calibrated variants, raw columns and clear errors."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from uncertainty_det.thresholding import ThresholdingError
from uncertainty_det.thresholding.measures import (
    available_measures, has_measure, measure_matrix, measure_values, parse_measure,
)


def _frame() -> pd.DataFrame:
    return pd.DataFrame({
        "image_id": np.array([1, 2], dtype=np.int64),
        "class_id": np.array([2, 1], dtype=np.int64),
        "score": [0.9, 0.25],
        "ymin": [0.0, 0.0], "xmin": [0.0, 0.0], "ymax": [10.0, 4.0], "xmax": [20.0, 4.0],
        "entropy": [0.5, 1.0], "entropy_cal": [0.4, 0.9],
        "al_ymin": [1.0, 1.0], "al_xmin": [2.0, 1.0], "al_ymax": [3.0, 1.0], "al_xmax": [4.0, 1.0],
        "al_ymin_cal": [2.0, 2.0], "al_xmin_cal": [4.0, 2.0], "al_ymax_cal": [6.0, 2.0], "al_xmax_cal": [8.0, 2.0],
        "probs_cal": [[0.2, 0.8], [0.6, 0.4]],
        "ep_cls": [0.1, 0.3],
        "foo": [7.0, 8.0],
        "name": ["a", "b"],
    })


def test_parse_measure():
    assert parse_measure("al_rel_cal") == ("al_rel", True)
    assert parse_measure("al") == ("al_rel", False)
    assert parse_measure("ep_cal") == ("ep_rel", True)
    assert parse_measure("entropy") == ("entropy", False)
    assert parse_measure("foo_cal") == ("foo_cal", False)


def test_named_measures_hand_values():
    f = _frame()
    # box 10x20, σ [1,2,3,4] -> [0.1, 0.1, 0.3, 0.2] -> 0.175; box 4x4, σ 1 -> 0.25
    np.testing.assert_allclose(measure_values(f, "al_rel"), [0.175, 0.25])
    np.testing.assert_allclose(measure_values(f, "al"), [0.175, 0.25])
    np.testing.assert_allclose(measure_values(f, "al_rel_cal"), [0.35, 0.5])
    np.testing.assert_allclose(measure_values(f, "entropy"), [0.5, 1.0])
    np.testing.assert_allclose(measure_values(f, "entropy_cal"), [0.4, 0.9])
    np.testing.assert_allclose(measure_values(f, "ep_cls"), [0.1, 0.3])
    np.testing.assert_allclose(measure_values(f, "one_minus_score"), [0.1, 0.75])
    # calibrated: 1 - probs_cal of the predicted class (class 2 -> 0.8, class 1 -> 0.6)
    np.testing.assert_allclose(measure_values(f, "one_minus_score_cal"), [0.2, 0.4])
    f2 = f.assign(score_cal=[0.5, 0.5])
    np.testing.assert_allclose(measure_values(f2, "one_minus_score_cal"), [0.5, 0.5])
    np.testing.assert_allclose(measure_values(f, "foo"), [7.0, 8.0])
    m = measure_matrix(f, ["entropy", "al_rel", "foo"])
    assert m.shape == (2, 3)
    np.testing.assert_allclose(m[:, 1], [0.175, 0.25])


def test_available_measures():
    f = _frame()
    assert available_measures(f) == ["entropy", "entropy_cal", "al_rel", "al_rel_cal", "ep_cls",
                                     "one_minus_score", "one_minus_score_cal"]
    assert has_measure(f, "foo") and not has_measure(f, "ep_rel")


@pytest.mark.parametrize("name, words", [
    ("ep_rel", ["ep_ymin", "MC dropout"]),
    ("ep_cls_cal", ["ep_cls_cal", "calibrate"]),
    ("bogus", ["bogus", "entropy"]),
    ("name", ["not numeric"]),
])
def test_missing_or_bad_columns_name_the_fix(name, words):
    f = _frame()
    with pytest.raises(ThresholdingError) as err:
        measure_values(f, name)
    for w in words:
        assert w in str(err.value)


def test_al_rel_cal_missing_says_calibrate():
    f = _frame().drop(columns=["al_xmax_cal"])
    with pytest.raises(ThresholdingError, match="calibrate"):
        measure_values(f, "al_rel_cal")
    with pytest.raises(ThresholdingError, match="probs_cal"):
        measure_values(_frame().drop(columns=["probs_cal"]), "one_minus_score_cal")


def test_non_finite_and_duplicates():
    f = _frame()
    f.loc[1, "entropy"] = np.nan
    with pytest.raises(ThresholdingError, match="image_id=2"):
        measure_values(f, "entropy")
    assert np.isnan(measure_values(f, "entropy", check_finite=False)[1])
    with pytest.raises(ThresholdingError, match="distinct"):
        measure_matrix(_frame(), ["entropy", "entropy"])
    with pytest.raises(ThresholdingError, match="at least one"):
        measure_matrix(_frame(), [])
