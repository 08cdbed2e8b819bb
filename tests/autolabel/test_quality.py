"""Auto-label quality against ground truth on a hand-counted case.

Model: entropy alone (normalised by 1), threshold 0.5, score floor 0.3. Images (GT / detections):

* 1 accepted: GT A car, B person, C car; d0 car on A (true), d1 car on B (wrong class: false label, B
  missed), d2 person overlapping B by IoU 1/7 and C by 25/475 (false label), d3 car on C under the floor
  (ignored: C missed).
* 2 review: GT D car; d0 car on D (true), d1 car IoU 0.5 with D but D already taken (false), flagged.
* 3 review (no detection): GT E person, missed.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from uncertainty_det.autolabel import SLIPPED_COLUMNS, AutolabelError, decide_images, label_quality
from uncertainty_det.data.manifest import ManifestBuilder, categories_from_names

from .helpers import detections, images_table, threshold_model

COLUMNS = ("image_id", "det", "class_id", "score", "entropy", "ymin", "xmin", "ymax", "xmax")
A, B, C, D, E = [0, 0, 10, 10], [20, 20, 40, 40], [45, 45, 55, 55], [0, 0, 10, 10], [5, 5, 15, 15]
ROWS = [
    (1, 0, 1, 0.9, 0.1, *A),
    (1, 1, 1, 0.8, 0.2, *B),
    (1, 2, 2, 0.7, 0.3, 30, 30, 50, 50),
    (1, 3, 1, 0.1, 0.1, *C),
    (2, 0, 1, 0.9, 0.1, *D),
    (2, 1, 1, 0.5, 0.9, 0, 0, 10, 20),
]


def gt_manifest(with_image_4: bool = False):
    builder = ManifestBuilder(categories=categories_from_names(["car", "person"]))
    for img, boxes, classes in ((1, [A, B, C], [1, 2, 1]), (2, [D], [1]), (3, [E], [2])):
        builder.add_image(f"{img:03d}.png", 100, 100, image_id=img)
        builder.add_objects(img, np.array(boxes, dtype=np.float64), classes)
    if with_image_4:
        builder.add_image("004.png", 100, 100, image_id=4)
    return builder.build()


def run(threshold=0.5, empty="review", rows=ROWS, ids=(1, 2, 3), manifest=None):
    model = threshold_model(names=("entropy",), lo=(0.0,), hi=(1.0,), weights=(1.0,), threshold=threshold)
    dets, decisions = decide_images(detections(rows, columns=COLUMNS), images_table(list(ids)), model, 0.3,
                                    empty=empty)
    return label_quality(dets, decisions, manifest or gt_manifest()), decisions


def test_hand_counted_metrics():
    (metrics, _), decisions = run()
    assert decisions["accepted"].tolist() == [True, False, False]
    assert metrics == pytest.approx({
        "images": 3, "accepted_images": 1, "review_images": 2, "auto_share": 1 / 3,
        "accepted_labels": 3, "accepted_precision": 1 / 3, "accepted_recall": 1 / 3,
        "all_precision": 2 / 5, "all_recall": 2 / 5, "review_precision": 1 / 2,
        "gt_objects": 5, "accepted_gt_objects": 3, "slipped_false_labels": 2, "slipped_missed_objects": 2,
    })
    assert all(isinstance(metrics[k], int) for k in ("images", "accepted_labels", "gt_objects"))


def test_slipped_errors():
    (_, slipped), _ = run()
    assert list(slipped.columns) == list(SLIPPED_COLUMNS)
    assert slipped["error"].tolist() == ["false_label", "false_label", "missed_object", "missed_object"]
    assert slipped["image_id"].tolist() == [1, 1, 1, 1] and (slipped["file_name"] == "001.png").all()
    assert slipped["class_id"].tolist() == [1, 2, 2, 1]
    assert slipped["score"].tolist()[:2] == [0.8, 0.7] and slipped["score"].iloc[2:].isna().all()
    assert slipped["combined"].tolist()[:2] == pytest.approx([0.2, 0.3]) and slipped["combined"].iloc[2:].isna().all()
    boxes = slipped.loc[:, ["ymin", "xmin", "ymax", "xmax"]].to_numpy().tolist()
    assert boxes == [B, [30, 30, 50, 50], B, C]
    # wrong-class label on B: IoU 1 with B; d2: best GT of any class is B (1/7); B: best label d1 (1);
    # C: best label d2 (25/475), the detection on C being under the floor
    assert slipped["iou"].tolist() == pytest.approx([1.0, 1 / 7, 1.0, 25 / 475])


def test_zero_denominators_are_nan():
    (metrics, slipped), _ = run(threshold=0.05)                    # everything to review
    assert metrics["accepted_images"] == 0 and metrics["auto_share"] == 0.0 and metrics["accepted_labels"] == 0
    assert np.isnan(metrics["accepted_precision"]) and np.isnan(metrics["accepted_recall"])
    assert metrics["review_precision"] == pytest.approx(2 / 5)
    assert len(slipped) == 0 and list(slipped.columns) == list(SLIPPED_COLUMNS)

    (metrics, slipped), _ = run(threshold=0.05, empty="accept")    # only image 3 (no detection) accepted
    assert metrics["accepted_images"] == 1 and np.isnan(metrics["accepted_precision"])
    assert metrics["accepted_recall"] == 0.0 and metrics["slipped_missed_objects"] == 1
    assert slipped["error"].tolist() == ["missed_object"] and slipped["iou"].tolist() == [0.0]
    assert slipped.loc[0, ["ymin", "xmin", "ymax", "xmax"]].tolist() == E

    rows = [(4, 0, 1, 0.9, 0.1, *A)]                               # accepted labels, no GT at all
    (metrics, slipped), _ = run(rows=rows, ids=(4,), manifest=gt_manifest(with_image_4=True))
    assert metrics["accepted_precision"] == 0.0 and np.isnan(metrics["accepted_recall"])
    assert np.isnan(metrics["all_recall"]) and np.isnan(metrics["review_precision"])
    assert slipped["error"].tolist() == ["false_label"] and slipped["iou"].tolist() == [0.0]


def test_images_missing_from_ground_truth_raise():
    with pytest.raises(AutolabelError, match="image_id 4"):
        run(rows=ROWS, ids=(1, 2, 3, 4))


def test_quality_uses_iou_threshold():
    model = threshold_model(names=("entropy",), lo=(0.0,), hi=(1.0,), weights=(1.0,))
    dets, decisions = decide_images(detections(ROWS, columns=COLUMNS), images_table([1, 2, 3]), model, 0.3)
    # d2 (person) overlaps GT B (person) by 1/7: a true label at an IoU threshold of 0.1
    metrics, slipped = label_quality(dets, decisions, gt_manifest(), iou_threshold=0.1)
    assert metrics["accepted_precision"] == pytest.approx(2 / 3) and metrics["slipped_false_labels"] == 1
    assert slipped["error"].tolist() == ["false_label", "missed_object"]
    assert isinstance(slipped, pd.DataFrame)


def test_matches_computed_once_give_the_same_quality_and_per_image_counts():
    from uncertainty_det.autolabel import label_matches, per_image_counts

    model = threshold_model(names=("entropy",), lo=(0.0,), hi=(1.0,), weights=(1.0,), threshold=0.5)
    dets, decisions = decide_images(detections(ROWS, columns=COLUMNS), images_table([1, 2, 3]), model, 0.3)
    matches = label_matches(dets, decisions, gt_manifest())
    direct = label_quality(dets, decisions, gt_manifest())
    reused = label_quality(dets, decisions, gt_manifest(), matches=matches)
    assert reused[0] == pytest.approx(direct[0])
    pd.testing.assert_frame_equal(reused[1], direct[1])
    counts = per_image_counts(matches, decisions, dets)
    # hand counts of test_hand_counted_metrics: image 1 has 3 labels, 1 true, 3 GT; all: 5 labels, 2 true, 5 GT
    assert counts.loc[counts["image_id"] == 1, ["n_labels", "n_tp", "n_gt"]].values.tolist() == [[3, 1, 3]]
    assert counts[["n_labels", "n_tp", "n_gt"]].sum().tolist() == [5, 2, 5]
