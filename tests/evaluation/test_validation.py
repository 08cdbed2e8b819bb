"""validate_detections on a hand-built split: hand-checked numbers and which rows each analysis uses."""
from __future__ import annotations

import numpy as np
import pytest

from uncertainty_det.data.manifest import ManifestBuilder, categories_from_names
from uncertainty_det.evaluation.validation import severity_figure, validate_detections
from uncertainty_det.tables import detections_to_frame


def _split():
    b = ManifestBuilder(categories_from_names(["a", "b"]))
    for image_id in (1, 2):
        b.add_image(f"{image_id}.png", 100, 100, image_id=image_id)
    b.add_objects(1, np.array([[10, 10, 50, 50], [60, 60, 90, 90]]), [1, 2], occluded=[0, 2])
    b.add_objects(2, np.array([[20, 20, 70, 60]]), [2], occluded=[1])
    return b.build()


def _detections():
    # image 1: a right-class exact hit (score 0.9), a wrong-class shifted hit (0.6), a background box (0.7)
    # image 2: a right-class hit shifted by 2 px (0.8) and a low-score duplicate (0.05)
    boxes = np.array([[[10, 10, 50, 50], [62, 60, 92, 90], [0, 70, 10, 80]],
                      [[22, 20, 72, 60], [20, 20, 70, 60], [0, 0, 0, 0]]], dtype=np.float32)
    logits = np.array([[[3.0, -3.0], [1.0, 0.0], [0.0, 0.5]], [[-2.0, 2.0], [-0.1, 0.1], [0, 0]]], dtype=np.float32)
    outputs = {
        "boxes": boxes, "scores": np.array([[0.9, 0.6, 0.7], [0.8, 0.05, 0.0]], np.float32),
        "classes": logits.argmax(-1) + 1, "logits": logits, "num_detections": np.array([3, 2]),
        "al_std": np.full((2, 3, 4), 2.0, np.float32),
    }
    return detections_to_frame(outputs, [1, 2], ["1.png", "2.png"], ["a", "b"], has_aleatoric=True,
                               has_epistemic=False)


def test_hand_checked_numbers():
    report = validate_detections(_detections(), _split(), timings=[(9.0, 1), (0.2, 2), (0.3, 2), (0.5, 2)],
                                 figures=False)
    m = report.metrics
    # gt_centric: each GT takes its best-IoU detection; the second GT of image 1 takes the wrong-class box
    assert m["quality/n_gt"] == 3 and m["quality/missed_pct"] == 0.0
    assert m["quality/misclassification_rate"] == pytest.approx(1 / 3)
    # average score of the detections assigned to the GTs, full float; gt_centric ignores scores, so the GT of
    # image 2 takes the exact low-score duplicate (IoU 1) rather than the 0.8 detection: (0.9 + 0.6 + 0.05) / 3
    assert m["quality/average_score"] == pytest.approx((0.9 + 0.6 + 0.05) / 3)
    assert m["score_floor"] == pytest.approx(m["quality/average_score"])
    # analysis at that floor (0.517), greedy one-to-one: 0.9 and 0.8 are TPs, 0.6 a wrong-class match, 0.7
    # background; the 0.05 duplicate is below the floor
    assert m["analysis/detections"] == 4 and m["analysis/true_positives"] == 2
    # runtime per image: warm-up call dropped, then 0.1, 0.15, 0.25 s per image
    assert m["runtime/mean_ms"] == pytest.approx(1000 * np.mean([0.1, 0.15, 0.25]))
    assert m["runtime/median_ms"] == pytest.approx(150.0)
    # occlusion breakdown from the manifest's occluded levels
    by_occ = report.quality["by_occlusion"]
    assert sorted(by_occ["level"].tolist()) == [0, 1, 2]


def test_floor_override_and_calibration_rows_use_matched_detections():
    report = validate_detections(_detections(), _split(), score_floor=0.01, figures=True)
    # at 0.01 the duplicate joins as a background detection (its GT is taken by the 0.8 one)
    assert report.metrics["analysis/detections"] == 5 and report.metrics["analysis/true_positives"] == 2
    cal = report.calibration
    acc = cal[(cal["target"] == "class") & (cal["metric"] == "accuracy")]["value"].iloc[0]
    assert acc == pytest.approx(2 / 3)          # the wrong-class match counts: not only true positives
    assert set(cal["target"]) == {"class", "al"} and not cal["calibrated"].any()
    assert {"al/sparsification.png", "al/pit_coverage.png", "entropy/tp_vs_fp.png"} <= set(report.figures)


def test_severity_figure_draws_one_line_per_corruption():
    import pandas as pd

    table = pd.DataFrame({"corruption": ["fog", "fog", "noise", "noise"], "severity": [0, 3, 0, 3],
                          "coco/AP50": [0.5, 0.3, 0.5, 0.4]})
    fig = severity_figure(table, ["coco/AP50", "missing"])
    (ax,) = fig.axes
    assert len(ax.lines) == 2
