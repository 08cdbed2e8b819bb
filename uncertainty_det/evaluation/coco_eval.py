"""COCO box mAP of detections against a COCO-format ground truth, via faster_coco_eval.

The library's boxes are ``[ymin, xmin, ymax, xmax]`` pixels (DESIGN §6.2); they are converted to COCO
``[x, y, w, h]`` here, at the COCO boundary, and nowhere else. The evaluation itself is
``faster_coco_eval.COCOeval_faster`` (the pycocotools algorithm: 10 IoU thresholds 0.50:0.95, 101
recall points, area ranges small/medium/large, max 1/10/100 detections per image).
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import UserError

#: Summary keys of :func:`coco_metrics` and the faster_coco_eval ``stats_as_dict`` keys they read.
SUMMARY_KEYS = {
    "AP": "AP_all",
    "AP50": "AP_50",
    "AP75": "AP_75",
    "APs": "AP_small",
    "APm": "AP_medium",
    "APl": "AP_large",
    "AR1": "AR_all",
    "AR10": "AR_second",
    "AR100": "AR_third",
}

_YXYX = ("ymin", "xmin", "ymax", "xmax")


class CocoEvalError(UserError, ValueError):
    """Detections or ground truth that cannot be evaluated (unknown image or class ids, bad columns)."""


def _silent(*_args, **_kwargs) -> None:
    return None


def _gt_dataset(gt: Mapping[str, Any]) -> dict:
    """A private copy of the COCO ground truth with ``area``/``iscrowd``/``id`` filled in where missing."""
    for key in ("images", "annotations", "categories"):
        if key not in gt:
            raise CocoEvalError(f"COCO ground truth has no {key!r} list; pass Manifest.to_coco() or a COCO JSON dict")
    anns = []
    for k, ann in enumerate(gt["annotations"]):
        a = dict(ann)
        x, y, w, h = (float(v) for v in a["bbox"])
        a["bbox"] = [x, y, w, h]
        a.setdefault("area", w * h)
        a.setdefault("iscrowd", 0)
        a.setdefault("id", k + 1)
        anns.append(a)
    return {
        "info": dict(gt.get("info", {}) or {}),
        "images": [dict(img) for img in gt["images"]],
        "annotations": anns,
        "categories": [dict(c) for c in gt["categories"]],
    }


def _detections_frame(detections: pd.DataFrame | Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Detections as a frame with ``image_id, class_id, score, ymin, xmin, ymax, xmax``.

    Accepts a Detections table (DESIGN §6.3), a list of its row dicts, or a list of COCO result dicts
    (``image_id, category_id, bbox=[x, y, w, h], score``).
    """
    if isinstance(detections, pd.DataFrame):
        df = detections
    else:
        records = list(detections)
        if records and "bbox" in records[0]:
            bbox = np.asarray([r["bbox"] for r in records], dtype=np.float64).reshape(-1, 4)
            df = pd.DataFrame({
                "image_id": [r["image_id"] for r in records],
                "class_id": [r.get("category_id", r.get("class_id")) for r in records],
                "score": [r["score"] for r in records],
                "ymin": bbox[:, 1], "xmin": bbox[:, 0],
                "ymax": bbox[:, 1] + bbox[:, 3], "xmax": bbox[:, 0] + bbox[:, 2],
            })
        else:
            df = pd.DataFrame.from_records(records) if records else pd.DataFrame(
                columns=["image_id", "class_id", "score", *_YXYX])
    missing = [c for c in ("image_id", "class_id", "score", *_YXYX) if c not in df.columns]
    if missing and len(df) == 0:
        return pd.DataFrame(columns=["image_id", "class_id", "score", *_YXYX])
    if missing:
        raise CocoEvalError(f"detections have no column {missing[0]!r}; pass a Detections table (DESIGN §6.3)")
    return df


def _to_coco_results(df: pd.DataFrame) -> list[dict]:
    """Detections frame -> COCO result dicts with ``bbox = [x, y, w, h]`` (pixels)."""
    boxes = df.loc[:, list(_YXYX)].to_numpy(dtype=np.float64)
    scores = df["score"].to_numpy(dtype=np.float64)
    image_ids = df["image_id"].to_numpy(dtype=np.int64)
    class_ids = df["class_id"].to_numpy(dtype=np.int64)
    xywh = np.stack([boxes[:, 1], boxes[:, 0], boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]], axis=1)
    return [
        {"image_id": int(i), "category_id": int(c), "bbox": b, "score": float(s)}
        for i, c, b, s in zip(image_ids.tolist(), class_ids.tolist(), xywh.tolist(), scores.tolist())
    ]


def _class_key(cat: Mapping[str, Any], class_names: Sequence[str] | None) -> str:
    cid = int(cat["id"])
    if class_names is not None and 1 <= cid <= len(class_names):
        name = class_names[cid - 1]
    else:
        name = cat.get("name", str(cid))
    return f"AP/{name}"


def _nan_if_undefined(value: float) -> float:
    value = float(value)
    return float("nan") if value < 0 else value


def coco_metrics(
    gt_manifest_coco: Mapping[str, Any],
    detections: pd.DataFrame | Iterable[Mapping[str, Any]],
    class_names: Sequence[str] | None = None,
) -> dict[str, float]:
    """COCO box metrics of ``detections`` on the ground truth ``gt_manifest_coco``.

    Args:
        gt_manifest_coco: COCO-format dict (``images``, ``annotations`` with ``bbox=[x, y, w, h]`` pixels,
            ``categories`` with 1-based ids), e.g. ``Manifest.to_coco()``. Every image in it is evaluated,
            also those without detections (their GTs count as missed).
        detections: a Detections table (``image_id, class_id, score, ymin, xmin, ymax, xmax`` in
            original-image pixels), a list of such row dicts, or a list of COCO result dicts
            (``image_id, category_id, bbox=[x, y, w, h], score``). Rows with non-finite boxes or scores
            are dropped with a warning.
        class_names: dataset class names in category-id order (id ``k`` -> ``class_names[k-1]``) for
            the per-class keys; ``None`` uses the GT category names.

    Returns:
        ``{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "AP/<class name>"...,
        "num_images", "num_detections"}``; AP/AR in [0, 1]. With no detections every defined metric is
        0.0. A metric without any ground truth behind it (e.g. ``APl`` when no large objects exist, or
        the AP of a class without GT boxes) is NaN (COCO's -1).

    Raises:
        CocoEvalError: detections on images or with class ids that the ground truth does not have.
    """
    from faster_coco_eval import COCO, COCOeval_faster

    gt_data = _gt_dataset(gt_manifest_coco)
    df = _detections_frame(detections)
    if len(df):
        finite = np.isfinite(df.loc[:, ["score", *_YXYX]].to_numpy(dtype=np.float64)).all(axis=1)
        if not finite.all():
            warnings.warn(f"coco_metrics: dropped {int((~finite).sum())} detections with non-finite boxes or scores")
            df = df.loc[finite]
    image_ids = {int(img["id"]) for img in gt_data["images"]}
    cat_ids = {int(c["id"]) for c in gt_data["categories"]}
    if len(df):
        unknown = sorted(set(df["image_id"].astype(np.int64).tolist()) - image_ids)
        if unknown:
            raise CocoEvalError(
                f"detections on {len(unknown)} image ids that the ground truth does not have (e.g. {unknown[:5]}); "
                f"evaluate on the split the detections were made on, or filter them")
        bad = sorted(set(df["class_id"].astype(np.int64).tolist()) - cat_ids)
        if bad:
            raise CocoEvalError(
                f"detections with class ids {bad[:5]} that the ground truth categories {sorted(cat_ids)} do not have; "
                f"use the dataset the model was trained on")

    gt = COCO(gt_data, print_function=_silent)
    dt = gt.loadRes(_to_coco_results(df)) if len(df) else gt.loadRes([])
    dt.print_function = _silent
    ev = COCOeval_faster(gt, dt, iouType="bbox", print_function=_silent)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    stats = ev.stats_as_dict
    out: dict[str, float] = {key: _nan_if_undefined(stats[src]) for key, src in SUMMARY_KEYS.items()}

    precision = np.asarray(ev.eval["precision"])        # [T, R, K, A, M]
    p = ev.params
    area = list(p.areaRngLbl).index("all")
    mdet = list(p.maxDets).index(max(p.maxDets))
    cat_index = {int(c): k for k, c in enumerate(p.catIds)}
    for cat in sorted(gt_data["categories"], key=lambda c: int(c["id"])):
        k = cat_index.get(int(cat["id"]))
        values = precision[:, :, k, area, mdet] if k is not None else np.zeros(0)
        values = values[values > -1]
        out[_class_key(cat, class_names)] = float(values.mean()) if values.size else float("nan")

    if len(df) == 0:
        # No detections: every metric that has ground truth behind it is exactly 0.
        out = {k: (0.0 if not math.isnan(v) else v) for k, v in out.items()}
    out["num_images"] = float(len(image_ids))
    out["num_detections"] = float(len(df))
    return out
