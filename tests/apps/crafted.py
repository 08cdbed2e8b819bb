"""Crafted Detections/Matches tables on a generated synthetic split, for stage tests that must not depend on a
trained model: localisation noise known per detection (aleatoric σ tracks it), 10 % wrong classes with a
flat class distribution (high entropy), and background false positives."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from uncertainty_det.tables import entropy_bits, softmax


def crafted_detections(manifest, num_classes: int, seed: int = 0) -> pd.DataFrame:
    """A Detections table (with ``_cal`` copies of entropy/probs/al σ) for the images of ``manifest``."""
    from uncertainty_det.evaluation.matching import gt_frame_from_manifest

    rng = np.random.default_rng(seed)
    gt = gt_frame_from_manifest(manifest)
    n = len(gt)
    boxes = gt[["ymin", "xmin", "ymax", "xmax"]].to_numpy(np.float64)
    size = np.maximum(boxes[:, 2:] - boxes[:, :2], 2.0)
    noise = rng.uniform(0.01, 0.3, n)                                         # relative localisation noise
    boxes = boxes + rng.normal(size=(n, 4)) * noise[:, None] * np.tile(size, 2)
    wrong = rng.uniform(size=n) < 0.1
    cls = np.where(wrong, gt["class_id"].to_numpy() % num_classes + 1, gt["class_id"].to_numpy())
    n_bg = max(2, n // 4)
    bg_img = rng.choice(gt["image_id"].to_numpy(), n_bg)
    y0, x0 = rng.uniform(0, 40, (2, n_bg))
    bg_boxes = np.stack([y0, x0, y0 + rng.uniform(6, 20, n_bg), x0 + rng.uniform(6, 20, n_bg)], axis=1)
    all_boxes = np.concatenate([boxes, bg_boxes])
    all_img = np.concatenate([gt["image_id"].to_numpy(), bg_img])
    all_cls = np.concatenate([cls, rng.integers(1, num_classes + 1, n_bg)])
    m = all_boxes.shape[0]
    flat = np.concatenate([wrong, np.ones(n_bg, dtype=bool)])
    logits = rng.normal(0.0, 0.3, (m, num_classes))
    logits[np.arange(m), all_cls - 1] += np.where(flat, 0.5, 4.0)
    probs = softmax(logits)
    rel = np.concatenate([noise, rng.uniform(0.2, 0.4, n_bg)])
    al = rel[:, None] * np.tile(np.maximum(all_boxes[:, 2:] - all_boxes[:, :2], 1.0), 2) * rng.uniform(0.7, 1.3, (m, 4))
    score = np.clip(np.where(flat, 0.45, 0.85) + rng.normal(0.0, 0.1, m), 0.01, 0.99)
    files = dict(zip(gt["image_id"], gt["file_name"]))
    order = np.lexsort((-score, all_img))
    df = pd.DataFrame({
        "image_id": all_img.astype(np.int64), "file_name": [files[i] for i in all_img],
        "det": np.zeros(m, dtype=np.int64), "class_id": all_cls.astype(np.int64), "score": score,
        "ymin": all_boxes[:, 0], "xmin": all_boxes[:, 1], "ymax": all_boxes[:, 2], "xmax": all_boxes[:, 3],
        "logits": list(logits), "probs": list(probs), "entropy": entropy_bits(probs),
        **{f"al_{c}": al[:, k] for k, c in enumerate(("ymin", "xmin", "ymax", "xmax"))},
    }).iloc[order].reset_index(drop=True)
    df["det"] = df.groupby("image_id").cumcount().astype(np.int64)
    for col in ("entropy", "al_ymin", "al_xmin", "al_ymax", "al_xmax"):
        df[f"{col}_cal"] = df[col]
    df["probs_cal"] = df["probs"]
    df["logits"] = df["logits"].map(list)
    df["probs"] = df["probs"].map(list)
    df["probs_cal"] = df["probs_cal"].map(list)
    return df


def write_validation(folder, manifest, num_classes: int, matcher: str = "greedy", split: str = "val",
                     seed: int = 0) -> pd.DataFrame:
    """Write ``matches.parquet`` + ``metrics.json`` as ``udet-validate`` would into ``folder``; returns the matches."""
    from uncertainty_det.evaluation.matching import gt_frame_from_manifest, match
    from uncertainty_det.tables import write_detections

    dets = crafted_detections(manifest, num_classes, seed)
    kwargs = {"iou_threshold": 0.5} if matcher == "greedy" else {}
    matches = match(dets, gt_frame_from_manifest(manifest), matcher, **kwargs)
    folder.mkdir(parents=True, exist_ok=True)
    write_detections(matches, folder / "matches.parquet", metadata={"split": split, "matcher": matcher})
    floor = float(dets["score"].mean())
    (folder / "metrics.json").write_text(json.dumps({"split": split, "metrics": {
        "score_floor": floor, "quality/average_score": floor}}))
    return matches
