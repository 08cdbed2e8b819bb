"""Noise-study pseudo-label variants on one crafted scene, row by row."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from uncertainty_det.errors import UserError
from uncertainty_det.ssl.noise_study import VARIANTS, pseudo_label_variant, variant_report

CORNERS = ["ymin", "xmin", "ymax", "xmax"]


def bx(x0, x1):
    return [0.0, float(x0), 10.0, float(x1)]


def make_scene():
    # image 1: GT 10 (cls 1) and 11 (cls 2); image 2: GT 20 (cls 1) found, GT 21 (cls 2) missed.
    gt = pd.DataFrame({
        "gt_id": np.array([10, 11, 20, 21], dtype=np.int64),
        "image_id": np.array([1, 1, 2, 2], dtype=np.int64),
        "class_id": np.array([1, 2, 1, 2], dtype=np.int64),
        **{c: np.array([b[k] for b in (bx(0, 10), bx(20, 30), bx(0, 10), bx(40, 50))]) for k, c in enumerate(CORNERS)},
        "file_name": ["1.png", "1.png", "2.png", "2.png"],
    })
    boxes = [bx(0, 8),      # r0 -> GT 10, IoU 0.8
             bx(20, 29.5),  # r1 -> GT 11, IoU 0.95, wrong class
             bx(50, 60),    # r2 false detection
             bx(0, 6),      # r3 -> GT 20, IoU 0.6
             bx(0, 10)]     # r4 image 3 has no GT
    pseudo = pd.DataFrame({
        "image_id": np.array([1, 1, 1, 2, 3], dtype=np.int64),
        "det": np.array([0, 1, 2, 0, 0], dtype=np.int64),
        "class_id": np.array([1, 1, 2, 1, 2], dtype=np.int64),
        "score": [0.9, 0.8, 0.7, 0.6, 0.5],
        **{c: np.array([b[k] for b in boxes]) for k, c in enumerate(CORNERS)},
        "weight": [0.5, 0.4, 0.3, 0.2, 0.1],
        "file_name": ["1.png", "1.png", "1.png", "2.png", "3.png"],
        "note": ["a", "b", "c", "d", "e"],
    }, index=[10, 11, 12, 13, 14])
    return pseudo, gt


def _check_same_schema(out, pseudo):
    assert list(out.columns) == list(pseudo.columns)
    assert out.dtypes.to_dict() == pseudo.dtypes.to_dict()
    assert isinstance(out.index, pd.RangeIndex)


@pytest.mark.parametrize("variant, rows", [
    ("nomd", [0, 1, 2, 4]),       # image 2 misses GT 21
    ("nofd", [0, 1, 3]),          # matched at IoU 0.5
    ("nomdfd", [0, 1]),
    ("highprec", [1]),            # matched at IoU >= 0.9
])
def test_filter_variants(variant, rows):
    pseudo, gt = make_scene()
    out = pseudo_label_variant(pseudo, gt, variant)
    _check_same_schema(out, pseudo)
    pd.testing.assert_frame_equal(out, pseudo.iloc[rows].reset_index(drop=True))


def test_fixmd_adds_missed_gt():
    pseudo, gt = make_scene()
    out = pseudo_label_variant(pseudo, gt, "fixmd")
    _check_same_schema(out, pseudo)
    pd.testing.assert_frame_equal(out.iloc[:5], pseudo.reset_index(drop=True))
    assert len(out) == 6
    added = out.iloc[5]
    assert (added["image_id"], added["class_id"], added["det"]) == (2, 2, -1)
    assert added[CORNERS].tolist() == bx(40, 50)
    assert (added["score"], added["weight"], added["file_name"]) == (1.0, 1.0, "2.png")
    assert pd.isna(added["note"])
    # without a weight column, none is created
    out2 = pseudo_label_variant(pseudo.drop(columns="weight"), gt, "fixmd")
    assert "weight" not in out2.columns and len(out2) == 6
    # nothing missed: unchanged
    complete = pd.concat([pseudo, pseudo.iloc[[0]].assign(image_id=2, xmin=40.0, xmax=50.0)])
    assert len(pseudo_label_variant(complete, gt, "fixmd")) == 6


def test_nonoise_takes_gt_box_and_class():
    pseudo, gt = make_scene()
    out = pseudo_label_variant(pseudo, gt, "nonoise")
    _check_same_schema(out, pseudo)
    expected = pseudo.reset_index(drop=True).copy()
    expected.loc[0, CORNERS] = bx(0, 10)           # IoU 0.8 >= 0.75: GT 10
    expected.loc[1, CORNERS] = bx(20, 30)          # IoU 0.95: GT 11, class 1 -> 2
    expected.loc[1, "class_id"] = 2
    pd.testing.assert_frame_equal(out, expected)   # r3 (IoU 0.6) unchanged, scores/weights unchanged


def test_unknown_variant_and_report():
    pseudo, gt = make_scene()
    with pytest.raises(UserError, match="nomd.*nofd.*nonoise"):
        pseudo_label_variant(pseudo, gt, "nothing")
    assert VARIANTS == ("nomd", "nofd", "nomdfd", "fixmd", "highprec", "nonoise")
    after = pseudo_label_variant(pseudo, gt, "nofd")
    rep = variant_report(pseudo, after, gt)
    assert rep["before"]["n_pseudo"] == 5 and rep["before"]["extra_pct"] == pytest.approx(40.0)
    assert rep["after"]["n_pseudo"] == 3 and rep["after"]["extra_pct"] == 0.0
    assert rep["after"]["gt_found_pct"] == rep["before"]["gt_found_pct"] == pytest.approx(75.0)
    fixed = variant_report(pseudo, pseudo_label_variant(pseudo, gt, "fixmd"), gt)
    assert fixed["after"]["gt_found_pct"] == 100.0
