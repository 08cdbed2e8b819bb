"""Noise / missing / false pseudo-label study (reference §5.8, the "3d" tool).

Each variant repairs one kind of pseudo-label error with the help of the ground truth, so that a student
trained on it isolates the effect of that error type. Matching is the class-agnostic one-to-one matching
of :func:`uncertainty_det.ssl.pseudo_gt.match_pseudo_to_gt`, at IoU 0.5 unless stated:

============  ======================================================================================
``nomd``      drop every image where some GT box is missed (no pseudo-label matches it)
``nofd``      keep only the matched pseudo-labels (drop the false detections)
``nomdfd``    both: matched pseudo-labels of the images without a missed GT
``fixmd``     add every missed GT box as a pseudo-label (its class, ``score`` 1.0, ``weight`` 1.0)
``highprec``  keep only the pseudo-labels matched at IoU >= 0.9
``nonoise``   pseudo-labels matched at IoU >= 0.75 take their GT box and GT class; others unchanged
============  ======================================================================================

As everywhere in :mod:`~uncertainty_det.ssl.pseudo_gt`, the GT frame defines the evaluated images:
restrict it to the pseudo-labelled images first.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..tables import CORNERS
from .pseudo_gt import (
    BOX_FRAME_COLUMNS, PSEUDO_COLUMNS, PseudoLabelError, blank_rows, check_frame, match_pseudo_to_gt,
    pseudo_label_report,
)

VARIANTS = ("nomd", "nofd", "nomdfd", "fixmd", "highprec", "nonoise")
VARIANT_IOU = {"nomd": 0.5, "nofd": 0.5, "nomdfd": 0.5, "fixmd": 0.5, "highprec": 0.9, "nonoise": 0.75}


def pseudo_label_variant(pseudo: pd.DataFrame, gt: pd.DataFrame, variant: str) -> pd.DataFrame:
    """The pseudo-labels with one error type repaired by the ground truth (see the module table).

    pseudo: ``N`` pseudo-labels (``image_id, class_id, ymin, xmin, ymax, xmax, score``, optional
    ``weight`` and any other columns); gt: the GT boxes of the pseudo-labelled images; variant: one of
    :data:`VARIANTS`.

    Returns a new frame with the columns and dtypes of ``pseudo`` and a fresh ``RangeIndex``: kept rows
    in their input order; for ``fixmd`` the added GT rows follow, in GT order, with ``score`` 1.0,
    ``weight`` 1.0 (when the column exists), ``file_name`` from the GT (when both frames have it) and
    every other extra column empty (-1 / NaN / False / missing).
    """
    if variant not in VARIANTS:
        raise PseudoLabelError(f"unknown pseudo-label variant {variant!r}; choose one of {list(VARIANTS)}")
    check_frame(pseudo, "pseudo-labels", PSEUDO_COLUMNS)
    check_frame(gt, "ground truth", BOX_FRAME_COLUMNS)
    res = match_pseudo_to_gt(pseudo, gt, iou_threshold=VARIANT_IOU[variant])
    matched = res.pseudo["matched"].to_numpy()
    p_img = pseudo["image_id"].to_numpy(dtype=np.int64)
    bad_images = np.unique(res.gt["image_id"].to_numpy()[~res.gt["found"].to_numpy()])
    clean_image = ~np.isin(p_img, bad_images)

    if variant == "nomd":
        out = pseudo.iloc[np.nonzero(clean_image)[0]]
    elif variant in ("nofd", "highprec"):
        out = pseudo.iloc[np.nonzero(matched)[0]]
    elif variant == "nomdfd":
        out = pseudo.iloc[np.nonzero(matched & clean_image)[0]]
    elif variant == "nonoise":
        out = pseudo.copy()
        rows = np.nonzero(matched)[0]
        g = res.pseudo["gt_row"].to_numpy()[rows]
        for c in CORNERS:
            values = out[c].to_numpy(dtype=np.float64).copy()
            values[rows] = gt[c].to_numpy(dtype=np.float64)[g]
            out[c] = values.astype(pseudo[c].dtype)
        cls = out["class_id"].to_numpy().copy()
        cls[rows] = gt["class_id"].to_numpy()[g]
        out["class_id"] = cls
    else:  # fixmd
        missed = np.nonzero(~res.gt["found"].to_numpy())[0]
        add = blank_rows(pseudo, missed.size)
        for c in BOX_FRAME_COLUMNS:
            add[c] = gt[c].to_numpy()[missed].astype(pseudo[c].dtype)
        add["score"] = np.ones(missed.size, dtype=pseudo["score"].dtype)
        if "weight" in pseudo.columns:
            add["weight"] = np.ones(missed.size, dtype=pseudo["weight"].dtype)
        if "file_name" in pseudo.columns and "file_name" in gt.columns:
            add["file_name"] = gt["file_name"].to_numpy(dtype=object)[missed]
        if missed.size and len(pseudo):
            out = pd.concat([pseudo, add], ignore_index=True)
        else:
            out = add if missed.size else pseudo
        out = out.astype(pseudo.dtypes.to_dict())
    return out.reset_index(drop=True)


def variant_report(before: pd.DataFrame, after: pd.DataFrame, gt: pd.DataFrame,
                   iou_threshold: float = 0.5) -> dict:
    """``{"before": report, "after": report}``: :func:`pseudo_label_report` of both pseudo-label sets."""
    return {"before": pseudo_label_report(before, gt, iou_threshold=iou_threshold),
            "after": pseudo_label_report(after, gt, iou_threshold=iou_threshold)}
