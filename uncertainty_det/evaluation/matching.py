"""Ground-truth matching: Detections table + ground truth -> Matches table (DESIGN §6.4).

The Matches table holds every column of the Detections table (DESIGN §6.3) followed by

=================  ==============================================================================
``gt_id``          int64, the GT annotation id (-1 on ``background`` rows)
``gt_class_id``    int64, 1-based GT category id (-1 on ``background`` rows)
``gt_ymin ..``     float64, GT box ``[ymin, xmin, ymax, xmax]`` pixels (NaN on ``background`` rows)
``iou``            float64, IoU of the detection and GT box of the row (0 where the row has only one)
``gt_occluded``    int64, occlusion level of the GT (-1 unknown or no GT)
``gt_truncated``   float64, truncated fraction of the GT (-1 unknown or no GT)
``kind``           str, ``matched`` (detection + GT), ``background`` (detection only), ``missed`` (GT only)
=================  ==============================================================================

On ``missed`` rows the detection columns are empty: NaN for floats, -1 for ``det``/``class_id``,
``None`` for list columns; ``image_id`` and (when known) ``file_name`` come from the GT.

Ground truth is a frame ``gt_id, image_id, class_id, ymin, xmin, ymax, xmax[, occluded, truncated,
file_name]`` (see :func:`gt_frame_from_manifest`). Two matchers, registered in :data:`MATCHERS`:

* ``gt_centric`` (reference behaviour, D17): every GT takes the detection of its image with the
  highest IoU, regardless of score and class; one detection may serve several GTs;
* ``greedy`` (COCO style): detections by descending score each take the free GT of highest IoU
  ``>= iou_threshold``; one-to-one; leftover detections are ``background``, leftover GTs ``missed``.

Both work image-chunk by image-chunk on padded ``[images, detections, gts]`` IoU arrays, so there is no
Python loop over detections (the greedy matcher loops over the detection *rank* within an image,
vectorised across images).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pandas as pd

from ..errors import UserError
from ..tables import BOX_COLUMNS, CORNERS

GT_COLUMNS = ("gt_id", "image_id", "class_id", "ymin", "xmin", "ymax", "xmax")
GT_OPTIONAL_COLUMNS = ("occluded", "truncated", "file_name")
MATCH_COLUMNS = ("gt_id", "gt_class_id", "gt_ymin", "gt_xmin", "gt_ymax", "gt_xmax", "iou", "gt_occluded",
                 "gt_truncated", "kind")
GT_BOX_COLUMNS = tuple(f"gt_{c}" for c in CORNERS)
KINDS = ("matched", "background", "missed")
DETECTION_REQUIRED = ("image_id", "det", "class_id", "score", *BOX_COLUMNS)

# Bound on padded IoU elements per chunk of images (float64: ~32 MB).
_CHUNK_ELEMENTS = 4_000_000


class MatchingError(UserError, ValueError):
    """Detections or ground truth that cannot be matched (missing columns, bad arguments)."""


# ---------------------------------------------------------------------------------------------
# IoU


def iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU of aligned boxes. ``[..., 4]`` and ``[..., 4]`` ``[ymin, xmin, ymax, xmax]`` -> ``[...]``.

    Broadcasts like NumPy. No ``+1`` pixel convention (as the reference); a zero union gives 0.
    """
    a = np.asarray(boxes_a, dtype=np.float64)
    b = np.asarray(boxes_b, dtype=np.float64)
    ih = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0.0, None)
    iw = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0.0, None)
    inter = ih * iw
    area_a = np.abs(a[..., 2] - a[..., 0]) * np.abs(a[..., 3] - a[..., 1])
    area_b = np.abs(b[..., 2] - b[..., 0]) * np.abs(b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return out


def pairwise_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU of every pair: ``[..., N, 4]`` x ``[..., M, 4]`` -> ``[..., N, M]``."""
    a = np.asarray(boxes_a, dtype=np.float64)
    b = np.asarray(boxes_b, dtype=np.float64)
    return iou(a[..., :, None, :], b[..., None, :, :])


# ---------------------------------------------------------------------------------------------
# Ground truth


def gt_frame_from_manifest(manifest: Any) -> pd.DataFrame:
    """The ground truth of a :class:`~uncertainty_det.data.manifest.Manifest` as a frame.

    Columns: ``gt_id`` (annotation id), ``image_id``, ``class_id`` (1-based), ``ymin, xmin, ymax, xmax``
    (pixels), ``occluded`` (int64, -1 unknown), ``truncated`` (float64, -1 unknown), ``file_name``.
    One row per annotation, image-major in manifest image order, annotation order within an image.
    """
    parts = []
    for image_id in manifest.image_ids:
        objs = manifest.objects(image_id)
        n = len(objs)
        if n == 0:
            continue
        boxes = np.asarray(objs.boxes, dtype=np.float64).reshape(n, 4)
        parts.append(pd.DataFrame({
            "gt_id": np.asarray(objs.ann_ids, dtype=np.int64),
            "image_id": np.full(n, int(image_id), dtype=np.int64),
            "class_id": np.asarray(objs.class_ids, dtype=np.int64),
            "ymin": boxes[:, 0], "xmin": boxes[:, 1], "ymax": boxes[:, 2], "xmax": boxes[:, 3],
            "occluded": np.asarray(objs.occluded, dtype=np.int64),
            "truncated": np.asarray(objs.truncated, dtype=np.float64),
            "file_name": [str(manifest.image(image_id)["file_name"])] * n,
        }))
    if not parts:
        return empty_gt_frame()
    return pd.concat(parts, ignore_index=True)


def empty_gt_frame() -> pd.DataFrame:
    """A ground-truth frame with no rows (the columns of :func:`gt_frame_from_manifest`)."""
    return pd.DataFrame({
        "gt_id": pd.Series([], dtype=np.int64), "image_id": pd.Series([], dtype=np.int64),
        "class_id": pd.Series([], dtype=np.int64),
        **{c: pd.Series([], dtype=np.float64) for c in CORNERS},
        "occluded": pd.Series([], dtype=np.int64), "truncated": pd.Series([], dtype=np.float64),
        "file_name": pd.Series([], dtype=object),
    })


def _check_columns(df: pd.DataFrame, required, what: str) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise MatchingError(f"{what} has no column {missing[0]!r} (needs {list(required)}); "
                            f"pass a Detections table / a frame from gt_frame_from_manifest()")


# ---------------------------------------------------------------------------------------------
# Shared machinery


class _Prepared:
    """Detections and GT sorted image-major with per-image slot positions."""

    def __init__(self, dets: pd.DataFrame, gt: pd.DataFrame):
        _check_columns(dets, DETECTION_REQUIRED, "detections table")
        _check_columns(gt, GT_COLUMNS, "ground-truth frame")
        self.dets = dets
        self.gt = gt
        det_img = dets["image_id"].to_numpy(dtype=np.int64)
        gt_img = gt["image_id"].to_numpy(dtype=np.int64)
        self.images, inv = np.unique(np.concatenate([det_img, gt_img]), return_inverse=True)
        d_img, g_img = inv[: det_img.size], inv[det_img.size:]
        # detections: image, descending score, ascending det (the reference's NMS slot order)
        score = dets["score"].to_numpy(dtype=np.float64)
        self.d_order = np.lexsort((dets["det"].to_numpy(dtype=np.int64), -score, d_img))
        self.g_order = np.lexsort((np.arange(gt_img.size), g_img))
        self.d_img = d_img[self.d_order]
        self.g_img = g_img[self.g_order]
        n_img = self.images.size
        self.d_count = np.bincount(self.d_img, minlength=n_img)
        self.g_count = np.bincount(self.g_img, minlength=n_img)
        self.d_start = np.concatenate([[0], np.cumsum(self.d_count)[:-1]]).astype(np.int64)
        self.g_start = np.concatenate([[0], np.cumsum(self.g_count)[:-1]]).astype(np.int64)
        self.d_pos = np.arange(self.d_img.size) - self.d_start[self.d_img]
        self.g_pos = np.arange(self.g_img.size) - self.g_start[self.g_img]
        self.d_boxes = dets.loc[:, list(BOX_COLUMNS)].to_numpy(dtype=np.float64)[self.d_order]
        self.g_boxes = gt.loc[:, list(CORNERS)].to_numpy(dtype=np.float64)[self.g_order]
        self.d_cls = dets["class_id"].to_numpy(dtype=np.int64)[self.d_order]
        self.g_cls = gt["class_id"].to_numpy(dtype=np.int64)[self.g_order]

    def chunks(self):
        """Yield ``(lo, hi)`` image-index ranges whose padded IoU arrays stay under the element bound."""
        n_img = self.images.size
        per_image = max(int(self.d_count.max(initial=1)), 1) * max(int(self.g_count.max(initial=1)), 1)
        step = max(_CHUNK_ELEMENTS // per_image, 1)
        for lo in range(0, n_img, step):
            yield lo, min(lo + step, n_img)

    def padded(self, lo: int, hi: int):
        """Padded arrays of images ``[lo, hi)``: det/gt boxes, classes, validity and flat indices."""
        n = hi - lo
        dmax = max(int(self.d_count[lo:hi].max(initial=0)), 1)
        gmax = max(int(self.g_count[lo:hi].max(initial=0)), 1)
        ds, de = self.d_start[lo], self.d_start[hi - 1] + self.d_count[hi - 1]
        gs, ge = self.g_start[lo], self.g_start[hi - 1] + self.g_count[hi - 1]
        d_idx = np.full((n, dmax), -1, dtype=np.int64)
        g_idx = np.full((n, gmax), -1, dtype=np.int64)
        d_idx[self.d_img[ds:de] - lo, self.d_pos[ds:de]] = np.arange(ds, de)
        g_idx[self.g_img[gs:ge] - lo, self.g_pos[gs:ge]] = np.arange(gs, ge)
        d_valid, g_valid = d_idx >= 0, g_idx >= 0
        d_boxes = self.d_boxes[np.where(d_valid, d_idx, 0)] if self.d_boxes.size else np.zeros((n, dmax, 4))
        g_boxes = self.g_boxes[np.where(g_valid, g_idx, 0)] if self.g_boxes.size else np.zeros((n, gmax, 4))
        d_cls = self.d_cls[np.where(d_valid, d_idx, 0)] if self.d_cls.size else np.zeros((n, dmax), np.int64)
        g_cls = self.g_cls[np.where(g_valid, g_idx, 0)] if self.g_cls.size else np.zeros((n, gmax), np.int64)
        ious = pairwise_iou(d_boxes, g_boxes)                                     # [n, dmax, gmax]
        ious = np.where(np.isfinite(ious), ious, 0.0)                             # a NaN box overlaps nothing
        return d_idx, g_idx, d_valid, g_valid, d_cls, g_cls, ious


def _take(df: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    """Rows of ``df`` by position, with ``-1`` giving an empty row (-1 for ints, NaN, False or None)."""
    rows = np.asarray(rows, dtype=np.int64)
    valid = rows >= 0
    safe = np.where(valid, rows, 0)
    out = {}
    for name in df.columns:
        col = df[name]
        kind = col.dtype.kind if isinstance(col.dtype, np.dtype) else "O"
        if kind in "iu":
            values = np.full(rows.size, -1, dtype=col.dtype)
        elif kind == "f":
            values = np.full(rows.size, np.nan, dtype=col.dtype)
        elif kind == "b":
            values = np.zeros(rows.size, dtype=bool)
        else:
            values = np.empty(rows.size, dtype=object)
            values[:] = None
        if valid.any():
            values[valid] = col.to_numpy()[safe[valid]]
        out[name] = values
    return pd.DataFrame(out, columns=list(df.columns))


def _assemble(prep: _Prepared, det_rows: np.ndarray, gt_rows: np.ndarray, ious: np.ndarray,
              kinds: np.ndarray) -> pd.DataFrame:
    """Build the Matches frame from sorted-order row indices (-1 = none) and per-row IoU / kind."""
    dets, gt = prep.dets, prep.gt
    det_orig = np.where(det_rows >= 0, prep.d_order[np.maximum(det_rows, 0)] if prep.d_order.size else 0, -1)
    gt_orig = np.where(gt_rows >= 0, prep.g_order[np.maximum(gt_rows, 0)] if prep.g_order.size else 0, -1)
    out = _take(dets, det_orig)
    has_gt = gt_orig >= 0
    safe = np.maximum(gt_orig, 0)

    def gt_col(name: str, dtype, fill):
        if len(gt) == 0:
            return np.full(gt_orig.size, fill, dtype=dtype)
        return np.where(has_gt, gt[name].to_numpy(dtype=dtype)[safe], fill).astype(dtype)

    # missed rows: image id (and file name) from the GT
    gt_image = gt_col("image_id", np.int64, -1)
    out["image_id"] = np.where(det_orig >= 0, out["image_id"].to_numpy(), gt_image).astype(np.int64)
    if "file_name" in out.columns:
        names = out["file_name"].to_numpy(dtype=object).copy()
        need = (det_orig < 0) & has_gt
        if need.any():
            if "file_name" in gt.columns:
                names[need] = gt["file_name"].to_numpy(dtype=object)[safe[need]]
            else:
                known = dict(zip(dets["image_id"].to_numpy(dtype=np.int64).tolist(), dets["file_name"].tolist()))
                names[need] = [known.get(int(i), "") for i in gt_image[need]]
        out["file_name"] = names
    out["gt_id"] = gt_col("gt_id", np.int64, -1)
    out["gt_class_id"] = gt_col("class_id", np.int64, -1)
    for c in CORNERS:
        out[f"gt_{c}"] = gt_col(c, np.float64, np.nan)
    out["iou"] = np.asarray(ious, dtype=np.float64)
    out["gt_occluded"] = (gt_col("occluded", np.int64, -1) if "occluded" in gt.columns
                          else np.full(len(out), -1, np.int64))
    out["gt_truncated"] = (gt_col("truncated", np.float64, -1.0) if "truncated" in gt.columns
                           else np.full(len(out), -1.0))
    out["kind"] = np.asarray(kinds, dtype=object)
    return out.reset_index(drop=True)


def _filter_score(dets: pd.DataFrame, min_score: float | None) -> pd.DataFrame:
    if min_score is None:
        return dets
    return dets.loc[dets["score"].to_numpy(dtype=np.float64) >= float(min_score)]


# ---------------------------------------------------------------------------------------------
# Matchers


def match_gt_centric(detections: pd.DataFrame, gt: pd.DataFrame, min_score: float | None = None,
                     include_background: bool = False) -> pd.DataFrame:
    """Reference matching (D17): each GT takes the detection of its image with the highest IoU.

    detections: a Detections table (``N`` rows); gt: a ground-truth frame (``M`` rows, see
    :func:`gt_frame_from_manifest`); min_score: detections below it are dropped first (default: none,
    as the reference). No class check, no uniqueness: one detection may be taken by several GTs.
    Ties in IoU go to the higher score, then the lower ``det`` slot (the reference's argmax over the
    score-sorted NMS outputs). A GT whose best IoU is 0 (or whose image has no detection) gives a
    ``missed`` row with ``iou = 0``; the reference kept slot 0's detection there, we leave it empty.

    Returns the Matches table: the ``M`` GT rows (image-major, GT order) followed, when
    ``include_background``, by one ``background`` row per detection that no GT took.
    """
    dets = _filter_score(detections, min_score)
    prep = _Prepared(dets, gt)
    n_gt = prep.g_img.size
    det_for_gt = np.full(n_gt, -1, dtype=np.int64)
    iou_for_gt = np.zeros(n_gt, dtype=np.float64)
    for lo, hi in prep.chunks():
        d_idx, g_idx, d_valid, g_valid, _, _, ious = prep.padded(lo, hi)
        ious = np.where(d_valid[:, :, None], ious, -1.0)
        best = np.argmax(ious, axis=1)                                          # [n, gmax], first on ties
        best_iou = np.take_along_axis(ious, best[:, None, :], axis=1)[:, 0, :]
        best_det = np.take_along_axis(d_idx, best, axis=1)
        take = g_valid & (best_iou > 0)
        rows = g_idx[g_valid]
        det_for_gt[rows] = np.where(take, best_det, -1)[g_valid]
        iou_for_gt[rows] = np.where(take, best_iou, 0.0)[g_valid]
    kinds = np.where(det_for_gt >= 0, "matched", "missed")
    gt_rows = np.arange(n_gt)
    if include_background:
        taken = np.zeros(prep.d_img.size, dtype=bool)
        taken[det_for_gt[det_for_gt >= 0]] = True
        bg = np.nonzero(~taken)[0]
        det_rows = np.concatenate([det_for_gt, bg])
        gt_rows = np.concatenate([gt_rows, np.full(bg.size, -1)])
        iou_for_gt = np.concatenate([iou_for_gt, np.zeros(bg.size)])
        kinds = np.concatenate([kinds, np.full(bg.size, "background")])
        image = np.concatenate([prep.g_img, prep.d_img[bg]])
        order = np.lexsort((np.arange(image.size), image))                     # GT rows, then background
        det_for_gt, gt_rows, iou_for_gt, kinds = det_rows[order], gt_rows[order], iou_for_gt[order], kinds[order]
    return _assemble(prep, det_for_gt, gt_rows, iou_for_gt, kinds)


def match_greedy(detections: pd.DataFrame, gt: pd.DataFrame, iou_threshold: float = 0.5,
                 min_score: float | None = 0.0, class_aware: bool = False) -> pd.DataFrame:
    """COCO-style one-to-one greedy matching.

    Detections with ``score >= min_score`` (``None``: all), in descending score (ties: lower ``det``
    first), each take the not-yet-taken GT of their image with the highest IoU ``>= iou_threshold``
    (ties: the earlier GT row); with ``class_aware`` only GTs of the detection's class qualify.
    Detections below ``min_score`` are not rows. Returns the Matches table, per image: the GT rows in
    GT order (``matched`` or ``missed``, ``iou = 0`` when missed), then the ``background`` rows in
    descending score (``iou = 0``).
    """
    if not 0.0 < float(iou_threshold) <= 1.0:
        raise MatchingError(f"greedy matching: iou_threshold must be in (0, 1], got {iou_threshold!r}")
    dets = _filter_score(detections, min_score)
    prep = _Prepared(dets, gt)
    n_det, n_gt = prep.d_img.size, prep.g_img.size
    gt_for_det = np.full(n_det, -1, dtype=np.int64)
    iou_for_det = np.zeros(n_det, dtype=np.float64)
    for lo, hi in prep.chunks():
        d_idx, g_idx, d_valid, g_valid, d_cls, g_cls, ious = prep.padded(lo, hi)
        ok = d_valid[:, :, None] & g_valid[:, None, :] & (ious >= iou_threshold)
        if class_aware:
            ok &= d_cls[:, :, None] == g_cls[:, None, :]
        cand_all = np.where(ok, ious, -1.0)                                     # [n, dmax, gmax]
        taken = np.zeros(g_valid.shape, dtype=bool)
        rows = np.arange(d_idx.shape[0])
        for k in range(d_idx.shape[1]):                                         # detection rank, all images at once
            cand = np.where(taken, -1.0, cand_all[:, k, :])
            best = np.argmax(cand, axis=1)
            best_iou = cand[rows, best]
            hit = best_iou >= 0
            if not hit.any():
                continue
            taken[rows[hit], best[hit]] = True
            gt_for_det[d_idx[hit, k]] = g_idx[hit, best[hit]]
            iou_for_det[d_idx[hit, k]] = best_iou[hit]
    det_for_gt = np.full(n_gt, -1, dtype=np.int64)
    iou_for_gt = np.zeros(n_gt, dtype=np.float64)
    hit = gt_for_det >= 0
    det_for_gt[gt_for_det[hit]] = np.nonzero(hit)[0]
    iou_for_gt[gt_for_det[hit]] = iou_for_det[hit]
    bg = np.nonzero(~hit)[0]
    det_rows = np.concatenate([det_for_gt, bg])
    gt_rows = np.concatenate([np.arange(n_gt), np.full(bg.size, -1)])
    ious = np.concatenate([iou_for_gt, np.zeros(bg.size)])
    kinds = np.concatenate([np.where(det_for_gt >= 0, "matched", "missed"), np.full(bg.size, "background")])
    image = np.concatenate([prep.g_img, prep.d_img[bg]])
    order = np.lexsort((np.arange(image.size), image))
    return _assemble(prep, det_rows[order], gt_rows[order], ious[order], kinds[order])


MATCHERS: dict[str, Callable[..., pd.DataFrame]] = {
    "gt_centric": match_gt_centric,
    "greedy": match_greedy,
}


def match(detections: pd.DataFrame, gt: pd.DataFrame, method: str = "gt_centric", **kwargs: Any) -> pd.DataFrame:
    """Match with the registered matcher ``method`` (``gt_centric`` or ``greedy``); kwargs go to it."""
    try:
        fn = MATCHERS[method]
    except KeyError:
        raise MatchingError(f"unknown matcher {method!r}; choose one of {sorted(MATCHERS)}") from None
    return fn(detections, gt, **kwargs)
