"""COCO mAP through faster_coco_eval: perfect, hand-computed, library cross-check, empty, bad input."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from uncertainty_det.evaluation.coco_eval import CocoEvalError, coco_metrics

CLASS_NAMES = ["circle", "square"]


def _gt(boxes_by_image: dict[int, list[tuple[int, list[float]]]], size: int = 200) -> dict:
    """COCO dict; boxes given as (class_id, [ymin, xmin, ymax, xmax])."""
    images, anns = [], []
    for image_id, objs in boxes_by_image.items():
        images.append({"id": image_id, "file_name": f"{image_id}.png", "height": size, "width": size})
        for cls, (y0, x0, y1, x1) in objs:
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cls,
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
    return {"images": images, "annotations": anns,
            "categories": [{"id": i + 1, "name": n} for i, n in enumerate(CLASS_NAMES)]}


def _dets(rows) -> pd.DataFrame:
    """rows: (image_id, class_id, score, [ymin, xmin, ymax, xmax])."""
    return pd.DataFrame([{"image_id": i, "class_id": c, "score": s, "ymin": b[0], "xmin": b[1], "ymax": b[2],
                          "xmax": b[3]} for i, c, s, b in rows])


GT = _gt({
    1: [(1, [10, 10, 50, 60]), (2, [100, 100, 180, 150])],
    2: [(1, [20, 30, 60, 90])],
    3: [(2, [5, 5, 25, 25])],
})


def test_perfect_detections_give_ap_one():
    rows = [(a["image_id"], a["category_id"], 0.9,
             [a["bbox"][1], a["bbox"][0], a["bbox"][1] + a["bbox"][3], a["bbox"][0] + a["bbox"][2]])
            for a in GT["annotations"]]
    m = coco_metrics(GT, _dets(rows), CLASS_NAMES)
    for key in ("AP", "AP50", "AP75", "AR100", "AP/circle", "AP/square"):
        assert m[key] == pytest.approx(1.0), key
    # a list of row dicts works the same
    assert coco_metrics(GT, _dets(rows).to_dict("records"), CLASS_NAMES)["AP"] == pytest.approx(1.0)


def test_one_of_two_gts_detected_hand_value():
    gt = _gt({1: [(1, [10, 10, 50, 50]), (1, [100, 100, 150, 150])]})
    # TP first, then an FP: precision 1 up to recall 0.5, recall never above 0.5.
    # COCO samples 101 recall points 0, 0.01, ..., 1: 51 of them (<= 0.5) have precision 1 -> 51/101.
    m = coco_metrics(gt, _dets([(1, 1, 0.9, [10, 10, 50, 50]), (1, 1, 0.8, [0, 160, 20, 190])]), CLASS_NAMES)
    assert m["AP50"] == pytest.approx(51 / 101)
    assert m["AP"] == pytest.approx(51 / 101)
    assert m["AR100"] == pytest.approx(0.5)
    assert m["AP/circle"] == pytest.approx(51 / 101)
    assert math.isnan(m["AP/square"])                 # no GT of that class: undefined
    # FP ranked above the TP: interpolated precision 0.5 at recall <= 0.5
    m2 = coco_metrics(gt, _dets([(1, 1, 0.9, [0, 160, 20, 190]), (1, 1, 0.8, [10, 10, 50, 50])]), CLASS_NAMES)
    assert m2["AP50"] == pytest.approx(0.5 * 51 / 101)


def test_images_without_detections_count():
    # detections only on image 1: the GTs of images 2 and 3 are missed
    m = coco_metrics(GT, _dets([(1, 1, 0.9, [10, 10, 50, 60]), (1, 2, 0.8, [100, 100, 180, 150])]), CLASS_NAMES)
    assert m["AR100"] == pytest.approx(0.5)        # per class: 1 of 2 recalled
    assert m["AP50"] == pytest.approx(51 / 101)


def test_matches_faster_coco_eval_called_directly():
    from faster_coco_eval import COCO, COCOeval_faster

    rng = np.random.default_rng(0)
    rows = []
    for a in GT["annotations"]:
        x, y, w, h = a["bbox"]
        for _ in range(3):
            j = rng.normal(0, 4, size=4)
            rows.append((a["image_id"], int(rng.integers(1, 3)), float(rng.uniform(0.05, 1)),
                         [y + j[0], x + j[1], y + h + j[2], x + w + j[3]]))
    rows.append((3, 1, 0.7, [150, 150, 190, 199]))
    df = _dets(rows)
    ours = coco_metrics(GT, df, CLASS_NAMES)

    gt = COCO({k: [dict(v) for v in vals] for k, vals in GT.items()})
    res = [{"image_id": int(r.image_id), "category_id": int(r.class_id), "score": float(r.score),
            "bbox": [r.xmin, r.ymin, r.xmax - r.xmin, r.ymax - r.ymin]} for r in df.itertuples()]
    ev = COCOeval_faster(gt, gt.loadRes(res), iouType="bbox", print_function=lambda *a, **k: None)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    ref = ev.stats
    expected = {"AP": ref[0], "AP50": ref[1], "AP75": ref[2], "APs": ref[3], "APm": ref[4], "APl": ref[5],
                "AR100": ref[8]}
    assert 0 < ours["AP"] < 1
    for key, value in expected.items():
        if value < 0:
            assert math.isnan(ours[key]), key
        else:
            assert ours[key] == pytest.approx(value, abs=1e-9), key


def test_empty_detections_give_zeros():
    for empty in (_dets([]), [], pd.DataFrame(columns=["image_id", "class_id", "score", "ymin", "xmin", "ymax", "xmax"])):
        m = coco_metrics(GT, empty, CLASS_NAMES)
        for key in ("AP", "AP50", "AP75", "AR100", "AP/circle", "AP/square"):
            assert m[key] == 0.0, key
        assert m["num_detections"] == 0.0 and m["num_images"] == 3.0


def test_bad_detections_are_clear_errors():
    with pytest.raises(CocoEvalError, match="image ids that the ground truth does not have"):
        coco_metrics(GT, _dets([(99, 1, 0.9, [0, 0, 10, 10])]), CLASS_NAMES)
    with pytest.raises(CocoEvalError, match="class ids"):
        coco_metrics(GT, _dets([(1, 7, 0.9, [0, 0, 10, 10])]), CLASS_NAMES)
    with pytest.raises(CocoEvalError, match="no column 'score'"):
        coco_metrics(GT, _dets([(1, 1, 0.9, [0, 0, 10, 10])]).drop(columns=["score"]), CLASS_NAMES)
