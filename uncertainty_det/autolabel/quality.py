"""Ground-truth quality of auto-labels: what the accepted labels get right and which errors slip through.

The above-floor detections of every processed image are matched one-to-one and class-aware to the
ground truth (:func:`~uncertainty_det.evaluation.matching.match_greedy`): a matched detection is a true
label, a detection without a GT of its class at ``iou >= iou_threshold`` (a wrong class included) a false
label, a GT without a matching detection a missed object. On accepted images the false labels and the
missed objects are the errors that reach the label set without human review.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..evaluation.matching import GT_BOX_COLUMNS, gt_frame_from_manifest, match_greedy, pairwise_iou
from ..tables import CORNERS
from .decision import AutolabelError, _check_columns

SLIPPED_COLUMNS = ("image_id", "file_name", "error", "class_id", "score", "combined", *CORNERS, "iou")


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else float("nan")


def _best_iou(rows: pd.DataFrame, boxes: np.ndarray, others: pd.DataFrame) -> np.ndarray:
    """``[len(rows)]`` best IoU of each row's ``boxes`` with the ``others`` boxes of its image (0 if none)."""
    if len(rows) == 0 or len(others) == 0:
        return np.zeros(len(rows))
    left = pd.DataFrame({"_row": np.arange(len(rows)), "image_id": rows["image_id"].to_numpy(dtype=np.int64)})
    right = pd.DataFrame({"image_id": others["image_id"].to_numpy(dtype=np.int64),
                          "_other": np.arange(len(others))})
    pairs = left.merge(right, on="image_id")
    if len(pairs) == 0:
        return np.zeros(len(rows))
    a = boxes[pairs["_row"].to_numpy()]
    b = others.loc[:, list(CORNERS)].to_numpy(dtype=np.float64)[pairs["_other"].to_numpy()]
    ious = np.nan_to_num(pairwise_iou(a[:, None, :], b[:, None, :])[:, 0, 0], nan=0.0)
    best = np.zeros(len(rows))
    np.maximum.at(best, pairs["_row"].to_numpy(), ious)
    return best


def _restrict(dets: pd.DataFrame, decisions: pd.DataFrame, gt_manifest: Any) -> tuple[np.ndarray, pd.DataFrame,
                                                                                     pd.DataFrame]:
    """``(decided image ids, their detections, their GT frame)``; decided images missing from the GT raise."""
    _check_columns(decisions, ("image_id", "file_name", "accepted"), "decisions table")
    ids = decisions["image_id"].to_numpy(dtype=np.int64)
    unknown = ids[~np.isin(ids, np.asarray(gt_manifest.image_ids, dtype=np.int64))]
    if unknown.size:
        raise AutolabelError(f"{unknown.size} decided images are not in the ground-truth manifest (first image_id "
                             f"{unknown[0]}); pass the manifest of the split that was auto-labeled")
    gt = gt_frame_from_manifest(gt_manifest)
    gt = gt.loc[gt["image_id"].isin(ids)].reset_index(drop=True)
    dets = dets.loc[dets["image_id"].isin(ids)].reset_index(drop=True)
    if "combined" not in dets.columns:
        dets = dets.assign(combined=np.nan)
    return ids, dets, gt


def label_matches(dets: pd.DataFrame, decisions: pd.DataFrame, gt_manifest: Any,
                  iou_threshold: float = 0.5) -> pd.DataFrame:
    """The Matches table of the above-floor detections of the decided images against their GT: greedy,
    one-to-one, class-aware at ``iou_threshold`` (what :func:`label_quality` scores; compute it once and
    pass it to :func:`label_quality` and :func:`~.tradeoff.per_image_counts`)."""
    _, dets, gt = _restrict(dets, decisions, gt_manifest)
    return match_greedy(dets, gt, iou_threshold=iou_threshold, min_score=None, class_aware=True)


def label_quality(dets: pd.DataFrame, decisions: pd.DataFrame, gt_manifest: Any,
                  iou_threshold: float = 0.5, matches: pd.DataFrame | None = None,
                  ) -> tuple[dict[str, float | int], pd.DataFrame]:
    """GT-based quality of the auto-labels; returns ``(metrics, slipped)``.

    dets / decisions: the outputs of :func:`~.decision.decide_images` (every image of ``decisions`` must be
    in ``gt_manifest``); iou_threshold: the IoU a label needs with a GT of its class to be correct;
    matches: :func:`label_matches` of the same inputs when already computed (not matched again).

    metrics: ``images``, ``accepted_images``, ``review_images``, ``auto_share`` (accepted / images),
    ``accepted_labels``, ``accepted_precision`` (true labels / labels on accepted images),
    ``accepted_recall`` (found GT / GT on accepted images), ``all_precision`` / ``all_recall`` (every
    above-floor detection on every image: no review at all), ``review_precision``, ``gt_objects``,
    ``accepted_gt_objects``, ``slipped_false_labels``, ``slipped_missed_objects``. Ratios with a zero
    denominator are NaN.

    slipped: one row per error on an accepted image (image order of ``decisions``; false labels in
    descending score, then missed objects), columns :data:`SLIPPED_COLUMNS`: ``error`` is
    ``false_label`` (box, class, score of the label; ``iou`` with its best GT of any class) or
    ``missed_object`` (box and class of the GT, NaN score/combined; ``iou`` with the best accepted label
    of any class); ``iou`` is 0 when there is nothing to overlap.
    """
    ids, dets, gt = _restrict(dets, decisions, gt_manifest)
    if matches is None:
        matches = match_greedy(dets, gt, iou_threshold=iou_threshold, min_score=None, class_aware=True)

    pos = pd.Index(ids).get_indexer(matches["image_id"].to_numpy(dtype=np.int64))
    accepted_img = decisions["accepted"].to_numpy(dtype=bool)
    on_acc = accepted_img[pos]
    kind = matches["kind"].to_numpy(dtype=object)
    tp, fp, fn = kind == "matched", kind == "background", kind == "missed"
    is_det, is_gt = tp | fp, tp | fn

    def count(mask: np.ndarray) -> int:
        return int(np.count_nonzero(mask))

    labels_acc, labels_rev = count(is_det & on_acc), count(is_det & ~on_acc)
    gt_acc = count(is_gt & on_acc)
    n_img, n_acc = len(decisions), count(accepted_img)
    metrics: dict[str, float | int] = {
        "images": n_img,
        "accepted_images": n_acc,
        "review_images": n_img - n_acc,
        "auto_share": _ratio(n_acc, n_img),
        "accepted_labels": labels_acc,
        "accepted_precision": _ratio(count(tp & on_acc), labels_acc),
        "accepted_recall": _ratio(count(tp & on_acc), gt_acc),
        "all_precision": _ratio(count(tp), count(is_det)),
        "all_recall": _ratio(count(tp), count(is_gt)),
        "review_precision": _ratio(count(tp & ~on_acc), labels_rev),
        "gt_objects": count(is_gt),
        "accepted_gt_objects": gt_acc,
        "slipped_false_labels": count(fp & on_acc),
        "slipped_missed_objects": count(fn & on_acc),
    }
    return metrics, _slipped(matches, pos, on_acc & fp, on_acc & fn, decisions, dets, gt)


def _slipped(matches: pd.DataFrame, pos: np.ndarray, false_mask: np.ndarray, missed_mask: np.ndarray,
             decisions: pd.DataFrame, dets: pd.DataFrame, gt: pd.DataFrame) -> pd.DataFrame:
    """The ``slipped`` frame of :func:`label_quality` (see there)."""
    false_rows, missed_rows = matches.loc[false_mask], matches.loc[missed_mask]
    false_boxes = false_rows.loc[:, list(CORNERS)].to_numpy(dtype=np.float64)
    missed_boxes = missed_rows.loc[:, list(GT_BOX_COLUMNS)].to_numpy(dtype=np.float64)
    # labels of accepted images = every above-floor detection of those images
    acc_ids = decisions["image_id"].to_numpy(dtype=np.int64)[decisions["accepted"].to_numpy(dtype=bool)]
    labels = dets.loc[dets["image_id"].isin(acc_ids)]
    out = pd.DataFrame({
        "image_id": np.concatenate([false_rows["image_id"].to_numpy(dtype=np.int64),
                                    missed_rows["image_id"].to_numpy(dtype=np.int64)]),
        "error": np.array(["false_label"] * len(false_rows) + ["missed_object"] * len(missed_rows), dtype=object),
        "class_id": np.concatenate([false_rows["class_id"].to_numpy(dtype=np.int64),
                                    missed_rows["gt_class_id"].to_numpy(dtype=np.int64)]),
        "score": np.concatenate([false_rows["score"].to_numpy(dtype=np.float64), np.full(len(missed_rows), np.nan)]),
        "combined": np.concatenate([false_rows["combined"].to_numpy(dtype=np.float64),
                                    np.full(len(missed_rows), np.nan)]),
    })
    boxes = np.concatenate([false_boxes, missed_boxes]).reshape(-1, 4)
    for k, c in enumerate(CORNERS):
        out[c] = boxes[:, k]
    out["iou"] = np.concatenate([_best_iou(false_rows, false_boxes, gt),
                                 _best_iou(missed_rows, missed_boxes, labels)])
    order_pos = np.concatenate([pos[false_mask], pos[missed_mask]])
    out.insert(1, "file_name", decisions["file_name"].to_numpy(dtype=object)[order_pos])
    # Matches rows come per image as GT rows then background rows in descending score; keep that order
    # within each error kind, false labels first.
    is_missed = np.concatenate([np.zeros(len(false_rows), bool), np.ones(len(missed_rows), bool)])
    order = np.lexsort((np.arange(len(out)), is_missed, order_pos))
    return out.iloc[order].reset_index(drop=True).loc[:, list(SLIPPED_COLUMNS)]
