"""GLC: ground-truth label cleaning with a teacher's predictions (reference §5.5, with fixes).

The teacher predicts on the *labelled* images, once on the plain image and once per augmented copy
(the reference used a horizontal flip, a 9x9 Gaussian blur and additive Gaussian noise). Then:

1. :func:`consistency` scores each plain-image detection by how stably the augmented runs find it:
   ``cons_iou`` (mean best IoU across views) and ``cons_cls`` (same class in every view). The
   reference compared the classes of *same-rank* detections of the augmented runs (defect 15); here
   each view's detection is the one that best overlaps the original detection.
2. Three rules edit the GT, applied by :func:`clean_labels` in the order ``md`` -> ``mistakes`` ->
   ``noisy``:

   * ``md`` (:func:`add_missing`): a confident, consistent prediction that overlaps no GT box becomes a
     new GT box;
   * ``mistakes`` (:func:`remove_unsupported`): a GT box that no prediction overlaps at all is removed;
   * ``noisy`` (:func:`fix_noisy`): a GT box takes the box of its matched consistent prediction.

3. Synthetic stress tests corrupt clean GT on purpose (:func:`drop_boxes`, :func:`add_mistakes`,
   :func:`perturb_boxes`) and :func:`recovery` measures how much of the damage the cleaning undid.

Frames: GT as :func:`uncertainty_det.evaluation.matching.gt_frame_from_manifest` (``gt_id`` optional
except for the stress tests), predictions as pseudo-label frames (``image_id, class_id``, corners,
``score``) plus ``cons_iou`` for the rules that use it. Boxes ``[ymin, xmin, ymax, xmax]`` pixels.

Rows the tools add to a GT frame (``add_missing``, ``add_mistakes``) get new **negative** ``gt_id``s,
counting down from ``min(-1, smallest existing gt_id) - 1`` (so -2, -3, ... on a dataset frame): they
never collide with dataset annotation ids (non-negative) nor with -1, the "no GT" id of the matching
tables, and stay int64. Their ``occluded`` is -1 and ``truncated`` -1.0 (unknown), ``file_name`` comes
from the predictions or from another GT row of the same image, other extra columns are empty.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..evaluation.matching import iou as _iou
from ..tables import CORNERS
from .pseudo_gt import (
    BOX_FRAME_COLUMNS, PSEUDO_COLUMNS, PseudoLabelError, blank_rows, check_frame, greedy_one_to_one, overlap_pairs,
)

METHODS = ("md", "mistakes", "noisy")
STRESS_KINDS = ("drop", "mistakes", "noise")
_PRED_COLUMNS = (*PSEUDO_COLUMNS, "cons_iou")
# clean_labels keyword -> (method, argument of the rule function)
THRESHOLD_KEYS = {
    "md_iou_consistency": ("md", "iou_consistency"),
    "md_max_overlap": ("md", "max_overlap"),
    "md_min_score": ("md", "min_score"),
    "mistakes_min_score": ("mistakes", "min_score"),
    "noisy_iou_consistency": ("noisy", "iou_consistency"),
    "noisy_max_iou": ("noisy", "max_iou"),
    "noisy_min_score": ("noisy", "min_score"),
}


# ---------------------------------------------------------------------------------------------
# Helpers


def _best_per_a(ia: np.ndarray, ib: np.ndarray, v: np.ndarray, tiebreak: np.ndarray) -> np.ndarray:
    """Index (into the pair arrays) of the best pair of every distinct ``ia``: max IoU, then max tiebreak,
    then min ``ib``."""
    if ia.size == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((ib, -tiebreak, -v, ia))
    _, first = np.unique(ia[order], return_index=True)
    return order[first]


def _max_iou_per_row(n: int, ia: np.ndarray, v: np.ndarray) -> np.ndarray:
    out = np.zeros(n, dtype=np.float64)
    if ia.size:
        np.maximum.at(out, ia, v)
    return out


def _as_rng(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    raise PseudoLabelError(f"rng must be a numpy Generator or an int seed, got {type(rng).__name__}")


def _check_fraction(value: float, name: str) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise PseudoLabelError(f"{name} must be in [0, 1], got {value!r}")
    return value


def _new_gt_ids(gt: pd.DataFrame, n: int) -> np.ndarray:
    lowest = -1
    if "gt_id" in gt.columns and len(gt):
        lowest = min(lowest, int(gt["gt_id"].to_numpy(dtype=np.int64).min()))
    return lowest - 1 - np.arange(n, dtype=np.int64)


def _new_gt_rows(gt: pd.DataFrame, image_id: np.ndarray, class_id: np.ndarray, boxes: np.ndarray,
                 file_name: np.ndarray | None = None) -> pd.DataFrame:
    """Rows in the schema of ``gt`` for new boxes (see the module docstring for the fill values)."""
    n = int(np.asarray(image_id).size)
    rows = blank_rows(gt, n)
    if "gt_id" in gt.columns:
        rows["gt_id"] = _new_gt_ids(gt, n).astype(gt["gt_id"].dtype)
    rows["image_id"] = np.asarray(image_id, dtype=np.int64)
    rows["class_id"] = np.asarray(class_id, dtype=np.int64)
    for k, c in enumerate(CORNERS):
        rows[c] = np.asarray(boxes, dtype=np.float64).reshape(n, 4)[:, k]
    if "occluded" in gt.columns:
        rows["occluded"] = np.full(n, -1, dtype=gt["occluded"].dtype)
    if "truncated" in gt.columns:
        rows["truncated"] = np.full(n, -1.0, dtype=gt["truncated"].dtype)
    if "file_name" in gt.columns:
        if file_name is None:
            known = gt.drop_duplicates("image_id").set_index("image_id")["file_name"]
            file_name = rows["image_id"].map(known).fillna("").to_numpy(dtype=object)
        rows["file_name"] = np.asarray(file_name, dtype=object)
    return rows


def _append(gt: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    if len(rows) == 0:
        return gt.reset_index(drop=True)
    if len(gt) == 0:
        return rows.reset_index(drop=True)
    out = pd.concat([gt, rows], ignore_index=True)
    return out.astype(gt.dtypes.to_dict())


# ---------------------------------------------------------------------------------------------
# Consistency


def consistency(original: pd.DataFrame, augmented_views: Sequence[pd.DataFrame],
                iou_threshold: float = 0.5) -> pd.DataFrame:
    """Augmentation consistency of every detection on the plain images.

    original: ``N`` teacher detections on the un-augmented images (``image_id, class_id`` and corners;
    other columns are kept); augmented_views: ``V >= 1`` frames of detections on augmented copies of the
    same images, with boxes already mapped back to the original image's pixel frame (``image_id,
    class_id``, corners, ``score`` optional); iou_threshold: the IoU a view's detection needs to count as
    the same object for ``cons_cls``.

    Returns a copy of ``original`` (same index and order) with two columns:

    * ``cons_iou`` (float64 in [0, 1]): mean over the views of the detection's best IoU with the view's
      detections of the same image, class-agnostic (0 for a view with none overlapping);
    * ``cons_cls`` (bool): in every view, the detection that best overlaps it (ties: higher score, then
      earlier row) has IoU >= ``iou_threshold`` and the same class. A view where nothing overlaps it at
      that IoU makes it False (the class could not be confirmed).
    """
    check_frame(original, "original detections", BOX_FRAME_COLUMNS)
    if isinstance(augmented_views, pd.DataFrame) or not isinstance(augmented_views, Sequence) \
            or len(augmented_views) == 0:
        raise PseudoLabelError("augmented_views must be a non-empty list of detection frames (one per "
                               "augmentation, boxes mapped back to the original image)")
    thr = float(iou_threshold)
    if not 0.0 < thr <= 1.0:
        raise PseudoLabelError(f"iou_threshold must be in (0, 1], got {iou_threshold!r}")
    n = len(original)
    o_cls = original["class_id"].to_numpy(dtype=np.int64)
    total = np.zeros(n, dtype=np.float64)
    same = np.ones(n, dtype=bool)
    for k, view in enumerate(augmented_views):
        check_frame(view, f"augmented view {k}", BOX_FRAME_COLUMNS)
        ia, ib, v = overlap_pairs(original, view)
        score = view["score"].to_numpy(dtype=np.float64) if "score" in view.columns else np.zeros(len(view))
        best = _best_per_a(ia, ib, v, score[ib] if ib.size else np.zeros(0))
        best_iou = np.zeros(n, dtype=np.float64)
        best_iou[ia[best]] = v[best]
        total += best_iou
        best_cls = np.full(n, -1, dtype=np.int64)
        best_cls[ia[best]] = view["class_id"].to_numpy(dtype=np.int64)[ib[best]]
        same &= (best_iou >= thr) & (best_cls == o_cls)
    out = original.copy()
    out["cons_iou"] = total / len(augmented_views)
    out["cons_cls"] = same
    return out


# ---------------------------------------------------------------------------------------------
# Cleaning rules


def add_missing(gt: pd.DataFrame, predictions: pd.DataFrame, iou_consistency: float = 0.9,
                max_overlap: float = 0.0, min_score: float = 0.1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rule ``md``: confident, consistent predictions on unlabelled spots become GT boxes.

    gt: ``M`` GT boxes; predictions: teacher detections on the same images with ``score`` and
    ``cons_iou`` (:func:`consistency`). A prediction is added when ``score >= min_score``,
    ``cons_iou >= iou_consistency`` and its IoU with every GT box of its image is ``<= max_overlap``
    (default 0: it touches no GT box; an image without GT counts as all-zero). Added boxes keep the
    predicted class; every qualifying prediction is added, even when two of them overlap each other.

    Returns ``(new_gt, added)``: ``gt`` with the added rows appended (fresh ``RangeIndex``, see the module
    docstring for their ``gt_id`` and extra columns) and the added rows alone.
    """
    check_frame(gt, "ground truth", BOX_FRAME_COLUMNS)
    check_frame(predictions, "predictions", _PRED_COLUMNS)
    preds = predictions[predictions["score"].to_numpy(dtype=np.float64) >= float(min_score)]
    ia, _, v = overlap_pairs(preds, gt)
    max_iou = _max_iou_per_row(len(preds), ia, v)
    cons = preds["cons_iou"].to_numpy(dtype=np.float64)
    take = np.nonzero((max_iou <= float(max_overlap)) & (cons >= float(iou_consistency)))[0]
    chosen = preds.iloc[take]
    rows = _new_gt_rows(gt, chosen["image_id"].to_numpy(), chosen["class_id"].to_numpy(),
                        chosen.loc[:, list(CORNERS)].to_numpy(dtype=np.float64),
                        chosen["file_name"].to_numpy(dtype=object) if "file_name" in chosen.columns else None)
    return _append(gt, rows), rows


def remove_unsupported(gt: pd.DataFrame, predictions: pd.DataFrame,
                       min_score: float = 0.1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rule ``mistakes``: drop GT boxes that no prediction overlaps at all.

    A GT box is removed when no prediction of its image with ``score >= min_score`` has IoU > 0 with it.
    The predictions must cover every image of ``gt``: an image without such a prediction loses all its
    GT boxes. Returns ``(new_gt, removed)``: the kept rows (input order, fresh ``RangeIndex``) and the
    removed rows (their original index).
    """
    check_frame(gt, "ground truth", BOX_FRAME_COLUMNS)
    check_frame(predictions, "predictions", PSEUDO_COLUMNS)
    preds = predictions[predictions["score"].to_numpy(dtype=np.float64) >= float(min_score)]
    ia, _, _ = overlap_pairs(gt, preds)
    supported = np.zeros(len(gt), dtype=bool)
    supported[ia] = True
    return gt.iloc[np.nonzero(supported)[0]].reset_index(drop=True), gt.iloc[np.nonzero(~supported)[0]]


def fix_noisy(gt: pd.DataFrame, predictions: pd.DataFrame, iou_consistency: float = 0.9, max_iou: float = 1.0,
              min_score: float = 0.4) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rule ``noisy``: GT boxes take the box of their matched, consistent prediction.

    GT boxes and predictions (all rows given, class-agnostic) are matched one to one in each image,
    greedily by descending IoU over the pairs with IoU > 0 (ties: higher prediction score, then earlier
    GT row, then earlier prediction row; :func:`~uncertainty_det.ssl.pseudo_gt.greedy_one_to_one`).
    A matched GT box is replaced by the prediction's box when ``cons_iou > iou_consistency`` (strict,
    as the reference), ``IoU <= max_iou`` and ``score >= min_score``. Class, id and other columns stay.

    Returns ``(new_gt, corrected)``: the GT with the new boxes (input order, fresh ``RangeIndex``) and,
    for the rows whose box actually changed, the new rows (original index) with ``prev_ymin ..
    prev_xmax`` (the old box) and ``iou`` (old vs new box).
    """
    check_frame(gt, "ground truth", BOX_FRAME_COLUMNS)
    check_frame(predictions, "predictions", _PRED_COLUMNS)
    ia, ib, v = overlap_pairs(gt, predictions)
    score = predictions["score"].to_numpy(dtype=np.float64)
    cons = predictions["cons_iou"].to_numpy(dtype=np.float64)
    keep = greedy_one_to_one(ia, ib, v, tiebreak=score[ib] if ib.size else None)
    ia, ib, v = ia[keep], ib[keep], v[keep]
    ok = (cons[ib] > float(iou_consistency)) & (v <= float(max_iou)) & (score[ib] >= float(min_score))
    ia, ib = ia[ok], ib[ok]
    old = gt.loc[:, list(CORNERS)].to_numpy(dtype=np.float64)
    new = old.copy()
    new[ia] = predictions.loc[:, list(CORNERS)].to_numpy(dtype=np.float64)[ib]
    out = gt.copy()
    for k, c in enumerate(CORNERS):
        out[c] = new[:, k].astype(gt[c].dtype)
    changed = np.nonzero((new != old).any(axis=1))[0]
    corrected = out.iloc[changed].copy()
    for k, c in enumerate(CORNERS):
        corrected[f"prev_{c}"] = old[changed, k]
    corrected["iou"] = _iou(old[changed], new[changed])
    return out.reset_index(drop=True), corrected


def clean_labels(gt: pd.DataFrame, predictions: pd.DataFrame, methods: Sequence[str] = METHODS,
                 **thresholds: float) -> tuple[pd.DataFrame, dict]:
    """Apply the requested GLC rules in the order ``md`` -> ``mistakes`` -> ``noisy``.

    methods: any subset of :data:`METHODS` (order given does not matter). thresholds: rule settings by
    prefixed name (defaults of the rule functions otherwise): ``md_iou_consistency``,
    ``md_max_overlap``, ``md_min_score`` (:func:`add_missing`), ``mistakes_min_score``
    (:func:`remove_unsupported`), ``noisy_iou_consistency``, ``noisy_max_iou``, ``noisy_min_score``
    (:func:`fix_noisy`). Each rule sees the output of the previous one.

    Returns ``(cleaned_gt, counts)`` with ``counts = {"added": int, "removed": int, "corrected": int}``.
    """
    if isinstance(methods, str):
        methods = (methods,)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise PseudoLabelError(f"unknown GLC method(s) {unknown}; choose from {list(METHODS)}")
    bad = [k for k in thresholds if k not in THRESHOLD_KEYS]
    if bad:
        raise PseudoLabelError(f"unknown GLC threshold(s) {bad}; valid names: {sorted(THRESHOLD_KEYS)}")
    kwargs: dict[str, dict] = {m: {} for m in METHODS}
    for key, value in thresholds.items():
        method, arg = THRESHOLD_KEYS[key]
        kwargs[method][arg] = value
    counts = {"added": 0, "removed": 0, "corrected": 0}
    out = gt
    if "md" in methods:
        out, added = add_missing(out, predictions, **kwargs["md"])
        counts["added"] = len(added)
    if "mistakes" in methods:
        out, removed = remove_unsupported(out, predictions, **kwargs["mistakes"])
        counts["removed"] = len(removed)
    if "noisy" in methods:
        out, corrected = fix_noisy(out, predictions, **kwargs["noisy"])
        counts["corrected"] = len(corrected)
    return out.reset_index(drop=True), counts


# ---------------------------------------------------------------------------------------------
# Synthetic stress tests


def drop_boxes(gt: pd.DataFrame, fraction: float = 0.2, rng=0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Drop ``floor(fraction * M)`` random GT boxes, never the last box of an image.

    rng: a ``numpy.random.Generator`` or an int seed. Each image keeps at least one box, so when
    ``floor(fraction * M)`` exceeds ``M - #images`` only ``M - #images`` boxes are dropped. Returns
    ``(corrupted, dropped)``: the kept rows (input order, fresh ``RangeIndex``) and the dropped rows
    (original index).
    """
    check_frame(gt, "ground truth", BOX_FRAME_COLUMNS)
    fraction = _check_fraction(fraction, "fraction")
    gen = _as_rng(rng)
    m = len(gt)
    k = int(np.floor(fraction * m))
    perm = gen.permutation(m)
    img = gt["image_id"].to_numpy(dtype=np.int64)[perm]
    order = np.lexsort((np.arange(m), img))                         # group by image, keep the random order
    s_img = img[order]
    new_group = np.concatenate([[True], s_img[1:] != s_img[:-1]]) if m else np.zeros(0, bool)
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(m), 0)) if m else np.zeros(0, np.int64)
    group_id = np.cumsum(new_group) - 1
    sizes = np.bincount(group_id) if m else np.zeros(0, np.int64)
    rank = np.arange(m) - group_start
    eligible_sorted = rank < sizes[group_id] - 1                    # the last one (in random order) stays
    eligible = np.zeros(m, dtype=bool)
    eligible[order] = eligible_sorted
    drop_rows = perm[np.nonzero(eligible)[0][:k]]
    mask = np.zeros(m, dtype=bool)
    mask[drop_rows] = True
    return gt.iloc[np.nonzero(~mask)[0]].reset_index(drop=True), gt.iloc[np.nonzero(mask)[0]]


def _sizes_lookup(image_sizes, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(image_sizes, pd.DataFrame):
        missing_cols = [c for c in ("image_id", "height", "width") if c not in image_sizes.columns]
        if missing_cols:
            raise PseudoLabelError(f"image_sizes has no column(s) {missing_cols}; pass a frame with "
                                   f"image_id, height, width or a dict image_id -> (height, width)")
        table = {int(i): (float(h), float(w)) for i, h, w in
                 zip(image_sizes["image_id"], image_sizes["height"], image_sizes["width"])}
    elif isinstance(image_sizes, Mapping):
        table = {int(i): (float(hw[0]), float(hw[1])) for i, hw in image_sizes.items()}
    else:
        raise PseudoLabelError("image_sizes must be a dict image_id -> (height, width) or a frame with "
                               "image_id, height, width")
    absent = [int(i) for i in images if int(i) not in table]
    if absent:
        raise PseudoLabelError(f"image_sizes has no entry for {len(absent)} image(s) of the GT (first: "
                               f"{absent[0]}); give the size of every GT image")
    hw = np.array([table[int(i)] for i in images], dtype=np.float64).reshape(-1, 2)
    if (hw <= 0).any() or not np.isfinite(hw).all():
        raise PseudoLabelError("image_sizes: heights and widths must be positive and finite")
    return hw[:, 0], hw[:, 1]


def add_mistakes(gt: pd.DataFrame, per_image: int, image_sizes, rng=0, size_range: tuple[float, float] = (10, 100),
                 num_classes: int | None = None, max_tries: int = 100) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Plant ``per_image`` wrong boxes in every GT image, each touching no GT box of its image.

    image_sizes: ``{image_id: (height, width)}`` or a frame ``image_id, height, width`` covering every
    image of ``gt``; size_range: ``(lo, hi)`` pixels, height and width drawn independently uniform in it
    (capped at the image size); num_classes: classes are drawn uniformly from ``1..num_classes``
    (default: the largest ``class_id`` of ``gt``); rng: Generator or int seed. A planted box lies inside
    the image and its intersection area with every GT box of the image is 0 (touching edges allowed);
    planted boxes may overlap each other. A slot that finds no free spot in ``max_tries`` draws is given
    up, so an image can get fewer boxes.

    Returns ``(corrupted, added)``: ``gt`` with the planted rows appended (fresh ``RangeIndex``; new
    negative ``gt_id``s, see the module docstring) and the planted rows alone.
    """
    check_frame(gt, "ground truth", BOX_FRAME_COLUMNS)
    per_image = int(per_image)
    if per_image < 0:
        raise PseudoLabelError(f"per_image must be >= 0, got {per_image}")
    lo, hi = (float(x) for x in size_range)
    if not 0 < lo <= hi:
        raise PseudoLabelError(f"size_range must be (lo, hi) with 0 < lo <= hi, got {size_range!r}")
    if num_classes is None:
        if len(gt) == 0:
            raise PseudoLabelError("add_mistakes: pass num_classes (the GT is empty)")
        num_classes = int(gt["class_id"].max())
    num_classes = int(num_classes)
    if num_classes < 1:
        raise PseudoLabelError(f"num_classes must be >= 1, got {num_classes}")
    gen = _as_rng(rng)
    images = np.unique(gt["image_id"].to_numpy(dtype=np.int64))
    heights, widths = _sizes_lookup(image_sizes, images)
    slot_img = np.repeat(images, per_image)
    slot_h, slot_w = np.repeat(heights, per_image), np.repeat(widths, per_image)
    n = slot_img.size
    boxes = np.full((n, 4), np.nan)
    pending = np.arange(n)
    for _ in range(int(max_tries)):
        if pending.size == 0:
            break
        p = pending.size
        h = np.minimum(gen.uniform(lo, hi, p), slot_h[pending])
        w = np.minimum(gen.uniform(lo, hi, p), slot_w[pending])
        y0 = gen.uniform(0.0, 1.0, p) * (slot_h[pending] - h)
        x0 = gen.uniform(0.0, 1.0, p) * (slot_w[pending] - w)
        cand = np.stack([y0, x0, y0 + h, x0 + w], axis=1)
        frame = pd.DataFrame({"image_id": slot_img[pending], **{c: cand[:, k] for k, c in enumerate(CORNERS)}})
        ia, _, _ = overlap_pairs(frame, gt)
        hit = np.zeros(p, dtype=bool)
        hit[ia] = True
        boxes[pending[~hit]] = cand[~hit]
        pending = pending[hit]
    placed = np.nonzero(np.isfinite(boxes[:, 0]))[0]
    classes = gen.integers(1, num_classes + 1, size=placed.size)
    rows = _new_gt_rows(gt, slot_img[placed], classes, boxes[placed])
    return _append(gt, rows), rows


def _unique_ids(df: pd.DataFrame, what: str) -> np.ndarray:
    check_frame(df, what, ("gt_id", *BOX_FRAME_COLUMNS))
    ids = df["gt_id"].to_numpy(dtype=np.int64)
    if np.unique(ids).size != ids.size:
        raise PseudoLabelError(f"{what}: gt_id values must be unique (they identify boxes across the clean, "
                               f"corrupted and cleaned frames); renumber the duplicates")
    return ids


def perturb_boxes(gt: pd.DataFrame, fraction: float = 0.2, deviation: float = 0.1,
                  rng=0) -> tuple[pd.DataFrame, np.ndarray]:
    """Jitter ``floor(fraction * M)`` random GT boxes.

    For each chosen box of height ``h`` and width ``w``: the centre moves by ``u * h`` and ``u' * w``
    with ``u, u'`` uniform in ``[-deviation/2, deviation/2]``; the height becomes ``h * (1 + v)`` and the
    width ``w * (1 + v')`` with ``v, v'`` uniform in ``[-deviation, deviation]``. Boxes are not clipped
    to the image. Needs a unique ``gt_id``; rng: Generator or int seed.

    Returns ``(corrupted, modified_ids)``: the frame (input order and columns, fresh ``RangeIndex``) and
    the ``gt_id`` of the perturbed rows (int64, ascending).
    """
    ids = _unique_ids(gt, "ground truth")
    fraction = _check_fraction(fraction, "fraction")
    deviation = float(deviation)
    if not 0.0 <= deviation < 1.0:
        raise PseudoLabelError(f"deviation must be in [0, 1), got {deviation!r}")
    gen = _as_rng(rng)
    m = len(gt)
    rows = np.sort(gen.choice(m, size=int(np.floor(fraction * m)), replace=False))
    b = gt.loc[:, list(CORNERS)].to_numpy(dtype=np.float64).copy()
    sel = b[rows]
    h, w = sel[:, 2] - sel[:, 0], sel[:, 3] - sel[:, 1]
    k = rows.size
    cy = (sel[:, 0] + sel[:, 2]) / 2 + gen.uniform(-deviation / 2, deviation / 2, k) * h
    cx = (sel[:, 1] + sel[:, 3]) / 2 + gen.uniform(-deviation / 2, deviation / 2, k) * w
    h2 = h * (1.0 + gen.uniform(-deviation, deviation, k))
    w2 = w * (1.0 + gen.uniform(-deviation, deviation, k))
    b[rows] = np.stack([cy - h2 / 2, cx - w2 / 2, cy + h2 / 2, cx + w2 / 2], axis=1)
    out = gt.copy()
    for j, c in enumerate(CORNERS):
        out[c] = b[:, j].astype(gt[c].dtype)
    return out.reset_index(drop=True), np.sort(ids[rows])


def recovery(clean_gt: pd.DataFrame, corrupted_gt: pd.DataFrame, cleaned_gt: pd.DataFrame, kind: str,
             iou_threshold: float = 0.5) -> dict:
    """How much of a synthetic corruption the cleaning undid. Rows are identified by ``gt_id`` (unique).

    kind:

    * ``"drop"`` (after :func:`drop_boxes` + ``md``): dropped = clean ids absent from the corrupted frame;
      added = cleaned ids absent from the corrupted frame. Dropped and added boxes are matched one to
      one, class-aware, at ``IoU >= iou_threshold`` (greedy by IoU). Returns ``n_dropped``, ``n_added``,
      ``n_recovered``, ``recovered_share`` (``n_recovered / n_dropped``) and ``n_spurious`` (added boxes
      matching no dropped box).
    * ``"mistakes"`` (after :func:`add_mistakes` + ``mistakes``): planted = corrupted ids absent from the
      clean frame. Returns ``n_planted``, ``n_planted_removed``, ``removed_share`` and
      ``n_true_removed`` (true boxes of the corrupted frame missing from the cleaned one).
    * ``"noise"`` (after :func:`perturb_boxes` + ``noisy``): perturbed = ids whose corrupted box differs
      from the clean one. Returns ``n_perturbed``, ``mean_iou_before`` (clean vs corrupted box),
      ``mean_iou_after`` (clean vs cleaned box; a box the cleaning removed counts as IoU 0),
      ``n_corrected`` (perturbed boxes whose box the cleaning changed) and ``n_missing``.

    Shares and means over an empty set are NaN.
    """
    if kind not in STRESS_KINDS:
        raise PseudoLabelError(f"unknown recovery kind {kind!r}; choose one of {list(STRESS_KINDS)}")
    clean_ids = _unique_ids(clean_gt, "clean GT")
    corrupt_ids = _unique_ids(corrupted_gt, "corrupted GT")
    cleaned_ids = _unique_ids(cleaned_gt, "cleaned GT")
    nan = float("nan")
    if kind == "drop":
        dropped = clean_gt.iloc[np.nonzero(~np.isin(clean_ids, corrupt_ids))[0]]
        added = cleaned_gt.iloc[np.nonzero(~np.isin(cleaned_ids, corrupt_ids))[0]]
        ia, ib, v = overlap_pairs(dropped, added, min_iou=float(iou_threshold), class_aware=True)
        n_rec = int(greedy_one_to_one(ia, ib, v).sum())
        return {"n_dropped": len(dropped), "n_added": len(added), "n_recovered": n_rec,
                "recovered_share": n_rec / len(dropped) if len(dropped) else nan,
                "n_spurious": len(added) - n_rec}
    if kind == "mistakes":
        planted = ~np.isin(corrupt_ids, clean_ids)
        gone = ~np.isin(corrupt_ids, cleaned_ids)
        n_planted = int(planted.sum())
        n_removed = int((planted & gone).sum())
        return {"n_planted": n_planted, "n_planted_removed": n_removed,
                "removed_share": n_removed / n_planted if n_planted else nan,
                "n_true_removed": int((~planted & gone).sum())}
    # noise
    cols = ["gt_id", *CORNERS]
    joined = clean_gt[cols].merge(corrupted_gt[cols], on="gt_id", suffixes=("", "_c"))
    clean_b = joined[list(CORNERS)].to_numpy(dtype=np.float64)
    corrupt_b = joined[[f"{c}_c" for c in CORNERS]].to_numpy(dtype=np.float64)
    perturbed = (clean_b != corrupt_b).any(axis=1)
    ids = joined["gt_id"].to_numpy(dtype=np.int64)[perturbed]
    clean_b, corrupt_b = clean_b[perturbed], corrupt_b[perturbed]
    lookup = pd.DataFrame(cleaned_gt.loc[:, list(CORNERS)].to_numpy(dtype=np.float64), index=cleaned_ids,
                          columns=list(CORNERS))
    present = np.isin(ids, cleaned_ids)
    after = np.zeros(ids.size, dtype=np.float64)
    changed = np.zeros(ids.size, dtype=bool)
    if present.any():
        cleaned_b = lookup.loc[ids[present]].to_numpy(dtype=np.float64)
        after[present] = _iou(clean_b[present], cleaned_b)
        changed[present] = (cleaned_b != corrupt_b[present]).any(axis=1)
    n = int(ids.size)
    return {"n_perturbed": n,
            "mean_iou_before": float(_iou(clean_b, corrupt_b).mean()) if n else nan,
            "mean_iou_after": float(after.mean()) if n else nan,
            "n_corrected": int(changed.sum()), "n_missing": int((~present).sum())}
