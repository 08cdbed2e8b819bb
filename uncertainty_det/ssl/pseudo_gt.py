"""Pseudo-labels against ground truth: one-to-one matching, quality report, per-image missed rate.

Reference §5.6 (``extract_pseudo_gt_data``), with its matching replaced. The reference took the unique
``argmax`` prediction of every GT with IoU >= 0.5 and then gave each of those predictions the first GT that
was still free, so the outcome depended on GT order. Here matching is a plain one-to-one greedy assignment
by descending IoU (see :func:`greedy_one_to_one`).

Frames (DESIGN §6.2): boxes are ``ymin, xmin, ymax, xmax`` float pixels of the original image, class ids
are 1-based.

* pseudo-labels / predictions: ``image_id`` (int64), ``class_id`` (int64), the four corners, ``score``
  (float64), optionally ``weight`` and any other columns;
* ground truth: the frame of :func:`uncertainty_det.evaluation.matching.gt_frame_from_manifest`; only
  ``image_id``, ``class_id`` and the corners are needed (``gt_id`` is carried when present).

The ground-truth frame defines which images are evaluated. Restrict it to the pseudo-labelled images
before calling (``gt[gt.image_id.isin(unlabeled_ids)]``): a GT box of an image that has no pseudo-label
counts as missed.

The helpers :func:`check_frame`, :func:`overlap_pairs` and :func:`greedy_one_to_one` are shared by the
other label-refinement modules (``pls``, ``noise_study``, ``glc``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import pandas as pd

from ..errors import UserError
from ..evaluation.matching import iou as _iou
from ..tables import CORNERS

BOX_FRAME_COLUMNS = ("image_id", "class_id", *CORNERS)
PSEUDO_COLUMNS = (*BOX_FRAME_COLUMNS, "score")

# Bound on candidate (a, b) pairs whose IoU is computed at once (float64 boxes: ~2 x 128 MB).
_PAIR_CHUNK = 4_000_000


class PseudoLabelError(UserError, ValueError):
    """Pseudo-labels, predictions or ground truth that the label-refinement tools cannot use."""


# ---------------------------------------------------------------------------------------------
# Input checks


def check_frame(df: object, what: str, required: Iterable[str] = BOX_FRAME_COLUMNS) -> pd.DataFrame:
    """Check that ``df`` is a frame with the ``required`` columns and finite box corners; return it.

    what: how the frame is named in the error message (e.g. ``"pseudo-labels"``). Raises
    :class:`PseudoLabelError` for a non-frame, a missing column, non-integer ``image_id``/``class_id``
    or a NaN/inf corner.
    """
    required = tuple(required)
    if not isinstance(df, pd.DataFrame):
        raise PseudoLabelError(f"{what} must be a pandas DataFrame with columns {list(required)}, "
                               f"got {type(df).__name__}")
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise PseudoLabelError(f"{what} has no column(s) {missing} (needs {list(required)}); "
                               f"add them or rename the existing columns")
    for col in ("image_id", "class_id"):
        if col in required and len(df) and df[col].dtype.kind not in "iu":
            raise PseudoLabelError(f"{what}: column {col!r} must hold integers, got dtype {df[col].dtype}; "
                                   f"convert it with .astype('int64')")
    corners = [c for c in CORNERS if c in required]
    if corners and len(df):
        boxes = df[corners].to_numpy(dtype=np.float64)
        bad = ~np.isfinite(boxes).all(axis=1)
        if bad.any():
            first = df["image_id"].to_numpy()[np.argmax(bad)] if "image_id" in df.columns else "?"
            raise PseudoLabelError(f"{what}: {int(bad.sum())} row(s) have NaN/inf box corners (first in image "
                                   f"{first}); drop or repair those rows first")
    if "score" in required and len(df):
        scores = df["score"].to_numpy(dtype=np.float64)
        if not np.isfinite(scores).all():
            raise PseudoLabelError(f"{what}: column 'score' has NaN/inf values; drop those rows first")
    return df


def blank_rows(template: pd.DataFrame, n: int) -> pd.DataFrame:
    """``n`` empty rows with the columns and dtypes of ``template``.

    Fill: -1 for integer columns, NaN for floats, False for bools, None for anything else (which a
    string column stores as its missing value).
    """
    cols = {}
    for name in template.columns:
        dtype = template[name].dtype
        kind = dtype.kind if isinstance(dtype, np.dtype) else "O"
        if kind in "iu":
            cols[name] = np.full(n, -1, dtype=dtype)
        elif kind == "f":
            cols[name] = np.full(n, np.nan, dtype=dtype)
        elif kind == "b":
            cols[name] = np.zeros(n, dtype=bool)
        else:
            values = np.empty(n, dtype=object)
            values[:] = None
            cols[name] = values
    return pd.DataFrame(cols, columns=list(template.columns))


def _check_iou_threshold(value: float, name: str = "iou_threshold") -> float:
    value = float(value)
    if not 0.0 < value <= 1.0:
        raise PseudoLabelError(f"{name} must be in (0, 1], got {value!r}")
    return value


# ---------------------------------------------------------------------------------------------
# Pair machinery (vectorised, no loop over images or boxes)


def overlap_pairs(a: pd.DataFrame, b: pd.DataFrame, min_iou: float = 0.0,
                  class_aware: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All box pairs of the same image that overlap.

    a: ``N`` rows, b: ``M`` rows, both with ``image_id`` and the four corners (and ``class_id`` when
    ``class_aware``). Returns ``(ia, ib, iou)``: int64 row positions into ``a`` and ``b`` and the float64
    IoU, one entry per pair of the same image with ``iou > 0`` and ``iou >= min_iou`` (and equal
    ``class_id`` when ``class_aware``), sorted by ``ia`` then ``ib``. Pairs with IoU 0 are never returned.

    The candidate pairs are enumerated image-major in chunks of at most a few million, so memory stays
    bounded whatever the number of images.
    """
    a_img = a["image_id"].to_numpy(dtype=np.int64)
    b_img = b["image_id"].to_numpy(dtype=np.int64)
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))
    if a_img.size == 0 or b_img.size == 0:
        return empty
    a_boxes = a.loc[:, list(CORNERS)].to_numpy(dtype=np.float64)
    b_boxes = b.loc[:, list(CORNERS)].to_numpy(dtype=np.float64)
    b_order = np.argsort(b_img, kind="stable")
    b_sorted = b_img[b_order]
    # for every a row: the block of b rows (in b_order) of its image
    lo = np.searchsorted(b_sorted, a_img, side="left")
    hi = np.searchsorted(b_sorted, a_img, side="right")
    count = hi - lo
    cum = np.cumsum(count)
    total = int(cum[-1])
    if total == 0:
        return empty
    if class_aware:
        a_cls = a["class_id"].to_numpy(dtype=np.int64)
        b_cls = b["class_id"].to_numpy(dtype=np.int64)
    out_a, out_b, out_iou = [], [], []
    # split the a rows into chunks of about _PAIR_CHUNK pairs
    bounds = np.searchsorted(cum, np.arange(_PAIR_CHUNK, total, _PAIR_CHUNK), side="left") + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [a_img.size]])
    for s, e in zip(starts.tolist(), ends.tolist()):
        if e <= s:
            continue
        c = count[s:e]
        n = int(c.sum())
        if n == 0:
            continue
        ia = np.repeat(np.arange(s, e, dtype=np.int64), c)
        first = np.cumsum(c) - c                                        # start of each a row's block
        offset = np.arange(n, dtype=np.int64) - np.repeat(first, c)
        ib = b_order[np.repeat(lo[s:e], c) + offset]
        v = _iou(a_boxes[ia], b_boxes[ib])
        keep = (v > 0) & (v >= min_iou)
        if class_aware:
            keep &= a_cls[ia] == b_cls[ib]
        out_a.append(ia[keep])
        out_b.append(ib[keep])
        out_iou.append(v[keep])
    ia, ib, v = np.concatenate(out_a), np.concatenate(out_b), np.concatenate(out_iou)
    order = np.lexsort((ib, ia))
    return ia[order], ib[order], v[order]


def greedy_one_to_one(ia: np.ndarray, ib: np.ndarray, iou: np.ndarray,
                      tiebreak: np.ndarray | None = None) -> np.ndarray:
    """One-to-one greedy assignment of candidate pairs by descending IoU.

    ia, ib: ``[P]`` int row ids of the two sides; iou: ``[P]`` the pair IoU; tiebreak: ``[P]`` optional
    value where a higher one wins an IoU tie (e.g. the pseudo-label score). Pairs are ranked by
    descending IoU, then descending ``tiebreak``, then ascending ``ia``, then ascending ``ib``; the
    result is what processing the pairs in that order and keeping each one whose two rows are both still
    free gives. Returns a ``[P]`` bool mask of the kept pairs.

    Implementation: repeatedly keep every pair that is the best remaining pair of both its rows (such a
    pair is exactly one the sequential greedy keeps) and drop the pairs touching a kept row; each round
    is vectorised over all pairs, and the number of rounds is bounded by the longest chain of competing
    boxes in one image.
    """
    ia = np.asarray(ia, dtype=np.int64)
    ib = np.asarray(ib, dtype=np.int64)
    iou = np.asarray(iou, dtype=np.float64)
    p = ia.size
    keep = np.zeros(p, dtype=bool)
    if p == 0:
        return keep
    tb = np.zeros(p) if tiebreak is None else np.asarray(tiebreak, dtype=np.float64)
    order = np.lexsort((ib, ia, -tb, -iou))                               # rank 0 = best
    sa, sb = ia[order], ib[order]
    _, sa = np.unique(sa, return_inverse=True)
    _, sb = np.unique(sb, return_inverse=True)
    taken_a = np.zeros(int(sa.max()) + 1, dtype=bool)
    taken_b = np.zeros(int(sb.max()) + 1, dtype=bool)
    active = np.arange(p)
    chosen = []
    while active.size:
        ra, rb = sa[active], sb[active]
        _, first_a = np.unique(ra, return_index=True)                     # best remaining pair per a row
        _, first_b = np.unique(rb, return_index=True)
        best_a = np.zeros(active.size, dtype=bool)
        best_b = np.zeros(active.size, dtype=bool)
        best_a[first_a] = True
        best_b[first_b] = True
        mutual = best_a & best_b
        picked = active[mutual]
        chosen.append(picked)
        taken_a[sa[picked]] = True
        taken_b[sb[picked]] = True
        active = active[~(taken_a[ra] | taken_b[rb])]
    keep[order[np.concatenate(chosen)]] = True
    return keep


# ---------------------------------------------------------------------------------------------
# Matching


@dataclass(frozen=True)
class PseudoGtMatch:
    """Result of :func:`match_pseudo_to_gt`.

    pseudo: one row per pseudo-label, same index and order as the input, columns ``image_id``,
        ``gt_row`` (int64 position of the matched row in the GT frame, -1 none), ``gt_id`` (int64, -1
        none or when the GT frame has no ``gt_id``), ``gt_class_id`` (int64, -1 none), ``iou``
        (float64, 0 when unmatched), ``matched`` (bool), ``class_correct`` (bool, False when unmatched).
    gt: one row per GT box, same index and order as the input, columns ``image_id``, ``class_id``,
        ``pseudo_row`` (int64 position of the matched pseudo-label, -1 none), ``found`` (bool), ``iou``
        (float64, 0 when missed).
    iou_threshold, class_aware: the matching settings.
    """

    pseudo: pd.DataFrame
    gt: pd.DataFrame
    iou_threshold: float
    class_aware: bool

    @property
    def n_matched(self) -> int:
        """Number of matched (pseudo-label, GT) pairs."""
        return int(self.pseudo["matched"].sum())


def match_pseudo_to_gt(pseudo: pd.DataFrame, gt: pd.DataFrame, iou_threshold: float = 0.5,
                       class_aware: bool = False) -> PseudoGtMatch:
    """One-to-one matching of pseudo-labels to GT boxes, image by image, greedy by descending IoU.

    pseudo: ``N`` pseudo-labels (``image_id, class_id, ymin, xmin, ymax, xmax, score``); gt: ``M`` GT
    boxes (``image_id, class_id`` and corners, ``gt_id`` optional). A pair is a candidate when both
    are in the same image and ``IoU >= iou_threshold`` (and, with ``class_aware``, the classes agree).
    Candidates are taken in descending IoU; an IoU tie goes to the higher pseudo score, then to the
    earlier pseudo row, then to the earlier GT row; a pair is kept when neither box is taken yet.
    This replaces the reference's "unique argmax prediction per GT, then first free GT".

    Returns a :class:`PseudoGtMatch` (per-pseudo and per-GT frames aligned with the inputs).
    """
    check_frame(pseudo, "pseudo-labels", PSEUDO_COLUMNS)
    check_frame(gt, "ground truth", BOX_FRAME_COLUMNS)
    thr = _check_iou_threshold(iou_threshold)
    ia, ib, v = overlap_pairs(pseudo, gt, min_iou=thr, class_aware=class_aware)
    score = pseudo["score"].to_numpy(dtype=np.float64)
    keep = greedy_one_to_one(ia, ib, v, tiebreak=score[ia] if ia.size else None)
    ia, ib, v = ia[keep], ib[keep], v[keep]

    n, m = len(pseudo), len(gt)
    gt_row = np.full(n, -1, dtype=np.int64)
    p_iou = np.zeros(n, dtype=np.float64)
    gt_row[ia] = ib
    p_iou[ia] = v
    pseudo_row = np.full(m, -1, dtype=np.int64)
    g_iou = np.zeros(m, dtype=np.float64)
    pseudo_row[ib] = ia
    g_iou[ib] = v

    matched = gt_row >= 0
    gt_cls_all = gt["class_id"].to_numpy(dtype=np.int64)
    gt_class = np.full(n, -1, dtype=np.int64)
    gt_class[matched] = gt_cls_all[gt_row[matched]]
    gt_id = np.full(n, -1, dtype=np.int64)
    if "gt_id" in gt.columns and m:
        gt_id[matched] = gt["gt_id"].to_numpy(dtype=np.int64)[gt_row[matched]]
    p_cls = pseudo["class_id"].to_numpy(dtype=np.int64)
    per_pseudo = pd.DataFrame({
        "image_id": pseudo["image_id"].to_numpy(dtype=np.int64),
        "gt_row": gt_row, "gt_id": gt_id, "gt_class_id": gt_class, "iou": p_iou,
        "matched": matched, "class_correct": matched & (gt_class == p_cls),
    }, index=pseudo.index)
    per_gt = pd.DataFrame({
        "image_id": gt["image_id"].to_numpy(dtype=np.int64), "class_id": gt_cls_all,
        "pseudo_row": pseudo_row, "found": pseudo_row >= 0, "iou": g_iou,
    }, index=gt.index)
    return PseudoGtMatch(pseudo=per_pseudo, gt=per_gt, iou_threshold=thr, class_aware=bool(class_aware))


# ---------------------------------------------------------------------------------------------
# Reports


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else float("nan")


def pseudo_label_report(pseudo: pd.DataFrame, gt: pd.DataFrame, iou_threshold: float = 0.5) -> dict:
    """Quality of pseudo-labels against GT (class-agnostic matching of :func:`match_pseudo_to_gt`).

    pseudo: ``N`` pseudo-labels; gt: ``M`` GT boxes of the evaluated images (restrict it to the
    pseudo-labelled images). Returns a JSON-friendly dict:

    * ``n_gt``, ``n_pseudo``, ``n_matched``, ``n_extra`` (unmatched pseudo-labels): counts;
    * ``gt_found_pct`` / ``gt_missing_pct``: percent (0-100) of GT boxes matched / not matched;
    * ``extra_pct``: percent of the pseudo-labels that match no GT (possible false detections);
    * ``class_accuracy``: share (0-1) of matched pairs whose pseudo class equals the GT class;
    * ``mean_iou``: mean IoU over the matched pairs;
    * ``precision`` = ``n_matched / n_pseudo``, ``recall`` = ``n_matched / n_gt`` (0-1);
    * ``per_class``: ``{gt class_id: {"n_gt", "found", "missing", "mean_iou", "accuracy"}}`` by GT
      class (``mean_iou``/``accuracy`` over that class's matched GTs);
    * ``iou_threshold``.

    Ratios with a zero denominator are NaN.
    """
    res = match_pseudo_to_gt(pseudo, gt, iou_threshold=iou_threshold)
    pm, gm = res.pseudo, res.gt
    n_gt, n_pseudo, n_matched = len(gm), len(pm), res.n_matched
    matched = pm[pm["matched"]]
    per_class: dict[int, dict] = {}
    if n_gt:
        found = gm["found"].to_numpy()
        correct = np.zeros(n_gt, dtype=bool)
        rows = gm["pseudo_row"].to_numpy()
        correct[found] = pm["class_correct"].to_numpy()[rows[found]]
        frame = pd.DataFrame({"class_id": gm["class_id"].to_numpy(), "found": found,
                              "iou": np.where(found, gm["iou"].to_numpy(), np.nan),
                              "correct": np.where(found, correct.astype(np.float64), np.nan)})
        agg = frame.groupby("class_id", sort=True).agg(n_gt=("found", "size"), found=("found", "sum"),
                                                       mean_iou=("iou", "mean"), accuracy=("correct", "mean"))
        for cls, row in agg.iterrows():
            per_class[int(cls)] = {"n_gt": int(row["n_gt"]), "found": int(row["found"]),
                                   "missing": int(row["n_gt"] - row["found"]),
                                   "mean_iou": float(row["mean_iou"]), "accuracy": float(row["accuracy"])}
    return {
        "iou_threshold": res.iou_threshold,
        "n_gt": n_gt, "n_pseudo": n_pseudo, "n_matched": n_matched, "n_extra": n_pseudo - n_matched,
        "gt_found_pct": 100.0 * _ratio(n_matched, n_gt),
        "gt_missing_pct": 100.0 * _ratio(n_gt - n_matched, n_gt),
        "extra_pct": 100.0 * _ratio(n_pseudo - n_matched, n_pseudo),
        "class_accuracy": float(matched["class_correct"].mean()) if n_matched else float("nan"),
        "mean_iou": float(matched["iou"].mean()) if n_matched else float("nan"),
        "precision": _ratio(n_matched, n_pseudo),
        "recall": _ratio(n_matched, n_gt),
        "per_class": per_class,
    }


def per_image_missed_rate(pseudo: pd.DataFrame, gt: pd.DataFrame, iou_threshold: float = 0.5) -> pd.Series:
    """Per-image share of GT boxes that no pseudo-label matches (reference "MD rate").

    Returns a float64 Series named ``missed_rate`` indexed by ``image_id`` (ascending) over the images
    that have GT: ``(n_gt - n_matched) / n_gt`` in [0, 1]; an image with GT but no pseudo-label gives 1.0.
    Images with pseudo-labels but no GT are absent (their rate is undefined).
    """
    res = match_pseudo_to_gt(pseudo, gt, iou_threshold=iou_threshold)
    missed = (~res.gt["found"]).astype(np.float64)
    out = missed.groupby(res.gt["image_id"].to_numpy()).mean()
    out.index = out.index.astype(np.int64)
    out.index.name = "image_id"
    out.name = "missed_rate"
    return out.astype(np.float64)
