"""Calibrated columns of a Detections table; the seeded fit/eval split."""
from __future__ import annotations

import numpy as np
import pytest

from uncertainty_det.calibration import calibrate_detections, split_fit_eval
from uncertainty_det.calibration._common import CalibrationError
from uncertainty_det.calibration.box import BoxIsoAll, BoxTSAll
from uncertainty_det.calibration.classification import MCClassCalibrator, TSAll
from uncertainty_det.tables import (
    AL_COLUMNS,
    EP_COLUMNS,
    detections_to_frame,
    empty_frame,
    list_column,
    read_detections,
    softmax,
    write_detections,
)

LOGITS = np.array([[2.0, 0.0, -1.0], [0.0, 1.0, 3.0], [0.5, 1.5, 0.0]])
AL = np.array([[1.0, 2.0, 3.0, 4.0], [0.5, 0.5, 0.5, 0.5], [8.0, 6.0, 4.0, 2.0]])
EP = np.array([[2.0, 4.0, 6.0, 20.0], [0.0, 1.0, 1.0, 0.0], [3.0, 3.0, 3.0, 3.0]])
LOGIT_STD = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.5, 0.0, 0.2]])


def _frame():
    outputs = {
        "boxes": np.array([[[10, 20, 30, 60], [0, 0, 40, 40], [5, 5, 25, 45]]], dtype=np.float32),
        "scores": np.array([[0.9, 0.8, 0.3]], dtype=np.float32),
        "classes": np.array([[1, 3, 2]]),
        "logits": LOGITS[None],
        "num_detections": np.array([3]),
        "al_std": AL[None],
        "ep_std": EP[None],
        "ep_logit_std": LOGIT_STD[None],
    }
    return detections_to_frame(outputs, [7], ["a.png"], ["a", "b", "c"], has_aleatoric=True, has_epistemic=True)


def _ts(t: float) -> TSAll:
    return TSAll.from_dict({"options": {}, "params": {"n_classes": 3, "temperature": t}})


AL_CAL = BoxTSAll.from_dict({"options": {"target": "sigma"}, "params": {"scale": 0.5}})
EP_CAL = BoxIsoAll.from_dict({"options": {"target": "sigma"}, "params": {"maps": [{"x": [0.0, 10.0],
                                                                                     "y": [0.0, 5.0]}]}})


def test_calibrated_columns_have_the_expected_values():
    frame = _frame()
    out = calibrate_detections(frame, _ts(2.0), AL_CAL, EP_CAL)
    assert list(out.columns[: len(frame.columns)]) == list(frame.columns)
    assert list(out.columns[len(frame.columns):]) == ["probs_cal", "entropy_cal", *[c + "_cal" for c in AL_COLUMNS],
                                                      *[c + "_cal" for c in EP_COLUMNS]]
    e = np.exp([1.0, 0.0, -0.5])                                      # softmax([2, 0, -1] / 2) by hand
    np.testing.assert_allclose(out["probs_cal"][0], e / e.sum())
    np.testing.assert_allclose(list_column(out, "probs_cal"), softmax(LOGITS / 2.0))
    p = e / e.sum()
    assert out["entropy_cal"][0] == pytest.approx(-np.sum(p * np.log2(p)))
    np.testing.assert_allclose(out[[c + "_cal" for c in AL_COLUMNS]].to_numpy(), 0.5 * AL)
    # isotonic outputs are floored at min_sigma (0.5 px by default)
    assert (np.minimum(EP, 10.0) / 2 < 0.5).any()
    np.testing.assert_allclose(out[[c + "_cal" for c in EP_COLUMNS]].to_numpy(), np.maximum(np.minimum(EP, 10.0) / 2, 0.5))
    unfloored = BoxIsoAll.from_dict({"options": {"target": "sigma", "min_sigma": 0.0}, "params": EP_CAL._state()})
    out0 = calibrate_detections(frame, ep_calibrator=unfloored)
    np.testing.assert_allclose(out0[[c + "_cal" for c in EP_COLUMNS]].to_numpy(), np.minimum(EP, 10.0) / 2)
    assert "probs_std_cal" not in out and "ep_cls_cal" not in out
    assert "probs_cal" not in frame                                   # the input is not modified


def test_mc_aware_class_calibration_adds_prob_std_columns():
    out = calibrate_detections(_frame(), MCClassCalibrator(_ts(2.0), samples=50, seed=0))
    std = list_column(out, "probs_std_cal")
    assert std.shape == (3, 3)
    np.testing.assert_allclose(std[0], 0.0, atol=1e-12)               # zero logit std -> zero prob std
    np.testing.assert_allclose(out["probs_cal"][0], softmax(LOGITS[0] / 2.0))
    assert np.all(std[1] > 0)
    np.testing.assert_allclose(out["ep_cls_cal"], std[[0, 1, 2], [0, 2, 1]])   # class_id 1, 3, 2
    np.testing.assert_allclose(list_column(out, "probs_cal").sum(axis=1), 1.0)


def test_calibrated_table_survives_the_parquet_round_trip(tmp_path):
    out = calibrate_detections(_frame(), MCClassCalibrator(_ts(1.5), samples=5), AL_CAL, EP_CAL)
    back, _ = read_detections(write_detections(out, tmp_path / "det.parquet", {"calibration": ["ts_all"]}))
    assert list(back.columns) == list(out.columns)
    np.testing.assert_allclose(list_column(back, "probs_std_cal"), list_column(out, "probs_std_cal"))
    np.testing.assert_allclose(back["al_xmax_cal"], out["al_xmax_cal"])


def test_missing_columns_and_empty_frames():
    frame = _frame().drop(columns=list(AL_COLUMNS))
    with pytest.raises(CalibrationError, match="al_ymin"):
        calibrate_detections(frame, al_calibrator=AL_CAL)
    out = calibrate_detections(empty_frame(True, True), MCClassCalibrator(_ts(2.0)), AL_CAL, EP_CAL)
    assert len(out) == 0
    for col in ("probs_cal", "entropy_cal", "probs_std_cal", "ep_cls_cal", "al_ymin_cal", "ep_xmax_cal"):
        assert col in out


def test_split_fit_eval_is_seeded_disjoint_and_shuffled():
    fit, ev = split_fit_eval(100, 0.2, seed=0)
    assert len(ev) == 20 and len(fit) == 80
    assert np.array_equal(np.sort(np.concatenate([fit, ev])), np.arange(100))
    assert not np.array_equal(ev, np.arange(80, 100))                 # not the reference's split by order
    again = split_fit_eval(100, 0.2, seed=0)
    assert np.array_equal(again[1], ev) and not np.array_equal(split_fit_eval(100, 0.2, seed=1)[1], ev)
    assert [len(a) for a in split_fit_eval(3, 0.01)] == [2, 1]        # both parts non-empty
    with pytest.raises(CalibrationError):
        split_fit_eval(10, 1.5)
