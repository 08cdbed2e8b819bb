"""CD/FD labels per IoU threshold for gt_centric (reference) and greedy Matches tables."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from uncertainty_det.evaluation.matching import match
from uncertainty_det.thresholding import DEFAULT_IOU_THRESHOLDS, ThresholdingError
from uncertainty_det.thresholding.labels import cd_labels, cd_matrix, detection_frame, detection_mask


def _table(rows) -> pd.DataFrame:
    """rows: (kind, iou, class_id, gt_class_id)."""
    return pd.DataFrame(rows, columns=["kind", "iou", "class_id", "gt_class_id"]).assign(
        image_id=np.arange(len(rows), dtype=np.int64))


GT_CENTRIC = _table([
    ("matched", 0.8, 1, 1),      # CD up to 0.8
    ("matched", 0.6, 1, 1),      # CD up to 0.6
    ("matched", 0.9, 2, 1),      # wrong class: FD
    ("missed", 0.0, -1, 1),      # no overlap: dropped (reference)
    ("background", 0.0, 2, -1),  # only with include_background
    ("matched", 0.75, 3, 3),     # CD at 0.75 inclusive
])


def test_default_iou_thresholds():
    np.testing.assert_allclose(DEFAULT_IOU_THRESHOLDS, [0.5, 0.55, 0.6, 0.65, 0.7, 0.75])


def test_gt_centric_reference_definition():
    dets, cd = cd_labels(GT_CENTRIC)
    assert list(dets["image_id"]) == [0, 1, 2, 5]
    assert cd.shape == (6, 4) and cd.dtype == bool
    expected = np.array([
        [1, 1, 0, 1], [1, 1, 0, 1], [1, 1, 0, 1], [1, 0, 0, 1], [1, 0, 0, 1], [1, 0, 0, 1],
    ], dtype=bool)
    np.testing.assert_array_equal(cd, expected)
    # background rows join as FDs only on request
    mask = detection_mask(GT_CENTRIC, "gt_centric", include_background=True)
    np.testing.assert_array_equal(mask, [True, True, True, False, True, True])
    dets_bg = detection_frame(GT_CENTRIC, "gt_centric", include_background=True)
    assert not cd_matrix(dets_bg)[:, 3].any()


def test_greedy_background_rows_are_fds():
    dets, cd = cd_labels(GT_CENTRIC, iou_thresholds=[0.5, 0.7], matcher="greedy")
    assert list(dets["kind"]) == ["matched", "matched", "matched", "background", "matched"]
    np.testing.assert_array_equal(cd, [[1, 1, 0, 0, 1], [1, 0, 0, 0, 1]])


def test_with_the_real_matchers():
    dets = pd.DataFrame({"image_id": [1, 1, 1], "det": [0, 1, 2], "class_id": [1, 2, 1], "score": [0.9, 0.8, 0.7],
                         "ymin": [0.0, 20.0, 50.0], "xmin": [0.0, 20.0, 50.0], "ymax": [10.0, 30.0, 60.0],
                         "xmax": [10.0, 30.0, 60.0]})
    gt = pd.DataFrame({"gt_id": [10, 11, 12], "image_id": [1, 1, 1], "class_id": [1, 1, 1],
                       "ymin": [0.0, 20.0, 100.0], "xmin": [0.0, 20.0, 100.0], "ymax": [10.0, 30.0, 110.0],
                       "xmax": [10.0, 30.0, 110.0]})
    m = match(dets, gt, "gt_centric")
    d, cd = cd_labels(m)
    assert len(d) == 2                                      # GT 12 is missed and dropped
    np.testing.assert_array_equal(cd[0], [True, False])     # det 1 has the wrong class
    m = match(dets, gt, "greedy")
    d, cd = cd_labels(m, matcher="greedy")
    assert len(d) == 3                                      # det 2 is a background FD
    np.testing.assert_array_equal(cd[0], [True, False, False])


def test_errors():
    with pytest.raises(ThresholdingError, match="match"):
        cd_labels(GT_CENTRIC.drop(columns=["kind"]))
    with pytest.raises(ThresholdingError, match="gt_class_id"):
        cd_matrix(GT_CENTRIC.drop(columns=["gt_class_id"]).iloc[:1])
    with pytest.raises(ThresholdingError, match="missed"):
        cd_matrix(GT_CENTRIC)
    with pytest.raises(ThresholdingError, match="matcher"):
        detection_mask(GT_CENTRIC, "hungarian")
    with pytest.raises(ThresholdingError, match="IoU"):
        cd_labels(GT_CENTRIC, iou_thresholds=[0.5, 1.5])
