"""Builders for crafted Detections tables, images tables and hand-built threshold models."""
from __future__ import annotations

import numpy as np
import pandas as pd

from uncertainty_det.thresholding.combine import MinMaxNormaliser, ThresholdModel

CLASSES = ["car", "pedestrian", "traffic light"]


def threshold_model(names=("entropy", "ep_cls"), lo=(0.0, 0.0), hi=(2.0, 0.5), weights=(0.5, 0.5),
                    threshold=0.5, class_weights=None) -> ThresholdModel:
    """A hand-built model: ``u* = sum_k w_k clip((v_k - lo_k) / (hi_k - lo_k), 0, 1)``, accept ``u* < threshold``."""
    return ThresholdModel(
        uncertainties=list(names),
        normaliser=MinMaxNormaliser(lo=np.asarray(lo, dtype=np.float64), hi=np.asarray(hi, dtype=np.float64)),
        weights=np.asarray(weights, dtype=np.float64),
        iou_thresholds=np.array([0.5]),
        thresholds=np.array([threshold]),
        operating_threshold=float(threshold),
        budget=0.95,
        mode="cd",
        class_weights={int(c): np.asarray(w, dtype=np.float64) for c, w in (class_weights or {}).items()},
    )


def detections(rows, columns=("image_id", "det", "class_id", "score", "entropy", "ep_cls"), **extra) -> pd.DataFrame:
    """A Detections-like frame from tuples (``columns``); boxes default to ``[10, 10, 30, 40]`` px."""
    df = pd.DataFrame([list(r) for r in rows], columns=list(columns))
    for c in ("image_id", "det", "class_id"):
        df[c] = df[c].astype(np.int64)
    df.insert(1, "file_name", [f"{i:03d}.png" for i in df["image_id"]])
    for c, v in zip(("ymin", "xmin", "ymax", "xmax"), (10.0, 10.0, 30.0, 40.0)):
        if c not in df.columns:
            df[c] = v
    for name, values in extra.items():
        df[name] = values
    return df


def images_table(ids, sizes=None) -> pd.DataFrame:
    """One row per image: ``image_id, file_name, height, width`` (default 100 x 200 px)."""
    sizes = sizes or [(100, 200)] * len(ids)
    return pd.DataFrame({
        "image_id": np.asarray(ids, dtype=np.int64),
        "file_name": [f"{i:03d}.png" for i in ids],
        "height": np.asarray([s[0] for s in sizes], dtype=np.int64),
        "width": np.asarray([s[1] for s in sizes], dtype=np.int64),
    })
