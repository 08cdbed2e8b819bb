"""GLC around the rules of :mod:`uncertainty_det.ssl.glc`: the augmented views, their consistency, cleaning with
a change log, synthetic corruption and the cleaned labels as a manifest (reference §5.5; used by ``udet-glc``).

Views. The teacher predicts each labelled image as it is and three augmented copies (:data:`VIEWS`):

* ``flip``: mirrored left-right; its boxes are mapped back to the original frame with ``x' = W - x``
  (:func:`flip_boxes_back`; the x corners swap, and so do their σ columns);
* ``blur``: Gaussian blur of standard deviation ``blur_sigma`` pixels per channel (mirrored borders);
* ``noise``: additive N(0, ``noise_std``²) grey levels per pixel and channel, clipped to [0, 255]; the noise of
  an image is seeded by ``(seed, image_id)``, so a view does not depend on the image order.

:func:`write_views` writes the copies as PNG files, one folder per view with a ``manifest.json`` (same image ids
and sizes as the source manifest, the file name's suffix made ``.png``), and :func:`read_views` finds them
again. :func:`view_consistency` maps the view predictions back and calls
:func:`~uncertainty_det.ssl.glc.consistency`.

Cleaning. :func:`clean_with_changes` runs :func:`~uncertainty_det.ssl.glc.clean_labels` one rule at a time
(``md`` -> ``mistakes`` -> ``noisy``, the order ``clean_labels`` uses, so the result is the same as one call
with all methods) and records every change as a row (``added`` / ``removed`` / ``corrected``).
:func:`corrupt_labels` applies one synthetic corruption; :func:`labels_manifest` turns a GT frame into a COCO
manifest (new boxes, which carry negative ``gt_id``\\ s, get fresh positive annotation ids).

NumPy / pandas / SciPy / Pillow only (no TensorFlow).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage

from ..tables import CORNERS
from .glc import (
    METHODS, STRESS_KINDS, THRESHOLD_KEYS, add_mistakes, clean_labels, consistency, drop_boxes, perturb_boxes,
)
from .pseudo_gt import BOX_FRAME_COLUMNS, PseudoLabelError, check_frame

log = logging.getLogger(__name__)

VIEWS = ("flip", "blur", "noise")
CHANGE_KINDS = ("added", "removed", "corrected")
_RULE_CHANGE = {"md": "added", "mistakes": "removed", "noisy": "corrected"}
VIEW_MANIFEST = "manifest.json"
CHANGE_COLUMNS = ("change", "image_id", "file_name", "gt_id", "ann_id", "class_id", *CORNERS,
                  *(f"prev_{c}" for c in CORNERS), "iou", "score", "cons_iou")


# ---------------------------------------------------------------------------------------------
# Views


@dataclass(frozen=True)
class ViewSettings:
    """How the augmented copies are made.

    blur_sigma: Gaussian blur σ in pixels (> 0; 1.7 is OpenCV's σ for the reference's 9x9 kernel);
    noise_std: additive noise σ in grey levels (>= 0); seed: base seed of the noise.
    """

    blur_sigma: float = 1.7
    noise_std: float = 8.0
    seed: int = 0

    def __post_init__(self):
        if not (np.isfinite(self.blur_sigma) and float(self.blur_sigma) > 0):
            raise PseudoLabelError(f"blur_sigma must be a positive number of pixels, got {self.blur_sigma!r}")
        if not (np.isfinite(self.noise_std) and float(self.noise_std) >= 0):
            raise PseudoLabelError(f"noise_std must be >= 0 grey levels, got {self.noise_std!r}")

    def as_dict(self) -> dict:
        return {k: (int(v) if k == "seed" else float(v)) for k, v in asdict(self).items()}


def augment_image(image: np.ndarray, view: str, settings: ViewSettings = ViewSettings(),
                  image_id: int = 0) -> np.ndarray:
    """One augmented copy of an ``[H, W, 3]`` uint8 image (``view`` in :data:`VIEWS`); uint8, same shape."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise PseudoLabelError(f"augment_image needs an [H, W, 3] image, got shape {image.shape}")
    if view == "flip":
        return np.ascontiguousarray(image[:, ::-1])
    if view == "blur":
        s = float(settings.blur_sigma)
        out = ndimage.gaussian_filter(image.astype(np.float32), sigma=(s, s, 0.0), mode="mirror")
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    if view == "noise":
        rng = np.random.default_rng([int(settings.seed), int(image_id)])
        noise = rng.standard_normal(image.shape, dtype=np.float32) * np.float32(settings.noise_std)
        return np.clip(np.rint(image.astype(np.float32) + noise), 0, 255).astype(np.uint8)
    raise PseudoLabelError(f"unknown view {view!r}; choose from {list(VIEWS)}")


def _swap(out: pd.DataFrame, a: str, b: str) -> None:
    if a in out.columns and b in out.columns:
        out[a], out[b] = out[b].to_numpy().copy(), out[a].to_numpy().copy()


# Flipping x maps the corners (ymin, xmin, ymax, xmax) to (ymin, W - xmax, ymax, W - xmin): its linear part.
_FLIP_MAP = np.array([[1, 0, 0, 0], [0, 0, 0, -1], [0, 0, 1, 0], [0, -1, 0, 0]], dtype=np.float64)


def flip_boxes_back(frame: pd.DataFrame, widths: Mapping[int, float] | pd.Series) -> pd.DataFrame:
    """Boxes predicted on left-right mirrored images, in the original image's frame.

    frame: detections (``image_id`` and the corners; other columns are kept); widths: image width in pixels per
    ``image_id``. ``xmin' = W - xmax`` and ``xmax' = W - xmin``; the per-corner σ columns of the x corners
    (``al_``/``ep_`` and their ``_cal`` variants) swap with them, and a ``al_cov`` 4x4 covariance is
    transformed as ``A C Aᵀ``. Returns a copy (same index and order).
    """
    check_frame(frame, "flipped-view detections", BOX_FRAME_COLUMNS)
    lookup = widths if isinstance(widths, pd.Series) else pd.Series(
        {int(k): float(v) for k, v in dict(widths).items()}, dtype=np.float64)
    w = frame["image_id"].map(lookup).to_numpy(dtype=np.float64)
    if np.isnan(w).any():
        first = frame["image_id"].to_numpy()[np.argmax(np.isnan(w))]
        raise PseudoLabelError(f"flip_boxes_back: no image width for image {first}; give the width of every image")
    out = frame.copy()
    xmin = frame["xmin"].to_numpy(dtype=np.float64)
    xmax = frame["xmax"].to_numpy(dtype=np.float64)
    out["xmin"] = (w - xmax).astype(frame["xmin"].dtype)
    out["xmax"] = (w - xmin).astype(frame["xmax"].dtype)
    for col in frame.columns:
        for prefix in ("al_", "ep_"):
            if col.startswith(f"{prefix}xmin"):
                _swap(out, col, f"{prefix}xmax{col[len(prefix) + 4:]}")
    if "al_cov" in frame.columns:
        out["al_cov"] = [None if c is None else (_FLIP_MAP @ np.asarray(c, np.float64).reshape(4, 4)
                                                 @ _FLIP_MAP.T).reshape(-1).tolist() for c in frame["al_cov"]]
    return out


def map_back(view: str, frame: pd.DataFrame, widths: Mapping[int, float] | pd.Series) -> pd.DataFrame:
    """A view's detections in the original image's frame (only ``flip`` moves boxes)."""
    if view not in VIEWS:
        raise PseudoLabelError(f"unknown view {view!r}; choose from {list(VIEWS)}")
    return flip_boxes_back(frame, widths) if view == "flip" else frame.copy()


def view_consistency(original: pd.DataFrame, view_frames: Mapping[str, pd.DataFrame],
                     widths: Mapping[int, float] | pd.Series,
                     iou_threshold: float = 0.5) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """``cons_iou`` / ``cons_cls`` of the plain-image detections from the raw view predictions.

    view_frames: ``{view: detections on that augmented copy}`` as predicted (flipped boxes still mirrored).
    Returns ``(original with cons_iou and cons_cls, {view: the detections mapped back})``.
    """
    if not view_frames:
        raise PseudoLabelError("view_consistency needs at least one view")
    mapped = {view: map_back(view, frame, widths) for view, frame in view_frames.items()}
    return consistency(original, list(mapped.values()), iou_threshold=iou_threshold), mapped


def view_file_name(file_name: str) -> str:
    """The relative name of an image's PNG copy: the source's relative path with the suffix ``.png``."""
    rel = Path(file_name)
    return str(rel.with_suffix(".png")) if rel.suffix else f"{rel}.png"


def ids_digest(image_ids: Iterable[int]) -> str:
    """A short digest of an id list (order matters): tells whether a cache was made for these images."""
    text = ",".join(str(int(i)) for i in image_ids)
    return hashlib.sha1(text.encode("ascii")).hexdigest()[:16]


def _view_info(view: str, settings: ViewSettings, source_ids: Sequence[int]) -> dict:
    """What a view manifest records about how it was made (``glc_ids``: digest of the requested image ids)."""
    return {"description": f"GLC view {view}", "glc_view": view, "glc_settings": settings.as_dict(),
            "glc_ids": ids_digest(source_ids)}


def write_views(manifest, folder: str | os.PathLike, settings: ViewSettings = ViewSettings(),
                views: Sequence[str] = VIEWS) -> tuple[dict, list[int]]:
    """Write the augmented copies of every image of ``manifest`` under ``folder/<view>/`` (PNG + ``manifest.json``).

    The whole ``folder`` is replaced atomically. An image that is missing or does not decode is skipped with a
    warning (it is absent from every view manifest). Returns ``({view: Manifest}, skipped image ids)``; the
    manifests' image roots are their view folders and their annotations those of ``manifest``.
    """
    from PIL import Image

    from ..data.images import UNREADABLE_IMAGE_ERRORS, load_rgb
    from ..data.manifest import Manifest
    from ..io_utils import atomic_dir

    unknown = [v for v in views if v not in VIEWS]
    if unknown or not views:
        raise PseudoLabelError(f"unknown view(s) {unknown}; choose from {list(VIEWS)}")
    folder = Path(folder)
    names = [view_file_name(img["file_name"]) for img in manifest.images]
    if len(set(names)) != len(names):
        names = [str(Path(n).with_name(f"{Path(n).stem}-{img['id']}.png")) for n, img in zip(names, manifest.images)]
    skipped: list[int] = []
    kept: list[tuple[dict, str]] = []
    with atomic_dir(folder) as tmp:
        for img, name in zip(manifest.images, names):
            image_id = int(img["id"])
            try:
                image = load_rgb(manifest.image_path(image_id))
            except UNREADABLE_IMAGE_ERRORS as exc:
                log.warning("GLC views: skipping image %s (id %d): %s", manifest.image_path(image_id), image_id, exc)
                skipped.append(image_id)
                continue
            for view in views:
                path = tmp / view / name
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(augment_image(image, view, settings, image_id)).save(path, format="PNG")
            kept.append((img, name))
        keep = {int(img["id"]) for img, _ in kept}
        annotations = [dict(a) for a in manifest.annotations if a["image_id"] in keep]
        for view in views:
            data = {"info": _view_info(view, settings, manifest.image_ids),
                    "images": [{**img, "file_name": name} for img, name in kept],
                    "annotations": annotations, "categories": [dict(c) for c in manifest.categories]}
            (tmp / view).mkdir(parents=True, exist_ok=True)
            (tmp / view / VIEW_MANIFEST).write_text(json.dumps(data), encoding="utf-8")
    if skipped:
        log.warning("GLC views: %d of %d images skipped (missing or corrupt)", len(skipped), len(manifest.images))
    out = {view: Manifest.read(folder / view / VIEW_MANIFEST, image_root=folder / view, sanitize=False)
           for view in views}
    return out, skipped


def read_views(folder: str | os.PathLike, image_ids: Sequence[int], settings: ViewSettings = ViewSettings(),
               views: Sequence[str] = VIEWS) -> dict | None:
    """The views :func:`write_views` wrote for these images (the readable ones among ``image_ids``) with these
    settings, or ``None`` when a view is missing or was made otherwise (then write them again)."""
    from ..data.errors import DatasetError
    from ..data.manifest import Manifest

    folder = Path(folder)
    out = {}
    wanted = [int(i) for i in image_ids]
    for view in views:
        path = folder / view / VIEW_MANIFEST
        if not path.is_file():
            return None
        try:
            m = Manifest.read(path, image_root=folder / view, sanitize=False)
        except DatasetError:
            return None
        info = m.info
        ids = [int(i) for i in m.image_ids]
        if (info.get("glc_view") != view or info.get("glc_settings") != settings.as_dict()
                or info.get("glc_ids") != ids_digest(wanted) or not set(ids) <= set(wanted)
                or any(not (folder / view / img["file_name"]).is_file() for img in m.images)):
            return None
        out[view] = m
    if len({tuple(m.image_ids) for m in out.values()}) > 1:
        return None
    return out


# ---------------------------------------------------------------------------------------------
# Cleaning with a change log


def rule_thresholds(sections: Mapping[str, Mapping[str, float] | None]) -> dict[str, float]:
    """``{"md": {"iou_consistency": 0.9, ...}, "mistakes": {...}, "noisy": {...}}`` -> the keyword arguments of
    :func:`~uncertainty_det.ssl.glc.clean_labels` (``md_iou_consistency=0.9, ...``); a section may be missing."""
    valid = {f"{m}.{a}" for m, a in THRESHOLD_KEYS.values()}
    out: dict[str, float] = {}
    for method in METHODS:
        for arg, value in dict(sections.get(method) or {}).items():
            key = f"{method}_{arg}"
            if key not in THRESHOLD_KEYS:
                raise PseudoLabelError(f"unknown GLC threshold {method}.{arg}; valid: {sorted(valid)}")
            try:
                out[key] = float(value)
            except (TypeError, ValueError):
                raise PseudoLabelError(f"GLC threshold {method}.{arg} must be a number, got {value!r}") from None
            if not np.isfinite(out[key]):
                raise PseudoLabelError(f"GLC threshold {method}.{arg} must be finite, got {value!r}")
    return out


def check_methods(methods: str | Sequence[str]) -> list[str]:
    """The GLC methods as a list in rule order; an unknown or empty list -> :class:`PseudoLabelError`."""
    if isinstance(methods, str):
        methods = [methods]
    methods = [str(m) for m in (methods or [])]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise PseudoLabelError(f"unknown GLC method(s) {unknown}; choose from {list(METHODS)}")
    if not methods:
        raise PseudoLabelError(f"no GLC method given; choose one or more of {list(METHODS)}")
    return [m for m in METHODS if m in methods]


def _rows(frame: pd.DataFrame, change: str) -> pd.DataFrame:
    out = pd.DataFrame({"change": [change] * len(frame)})
    for col in ("image_id", "file_name", "gt_id", "class_id", *CORNERS):
        out[col] = frame[col].to_numpy() if col in frame.columns else None
    for c in CORNERS:
        out[f"prev_{c}"] = np.nan
    out["iou"] = np.nan
    return out


def _attach_predictions(changes: pd.DataFrame, predictions: pd.DataFrame) -> pd.DataFrame:
    """``score`` and ``cons_iou`` of the prediction whose box an added / corrected row took (NaN otherwise)."""
    keys = ["image_id", *CORNERS]
    cols = [c for c in ("score", "cons_iou") if c in predictions.columns]
    changes = changes.copy()
    for c in ("score", "cons_iou"):
        changes[c] = np.nan
    if not cols or changes.empty:
        return changes
    preds = predictions[keys + cols].sort_values("score" if "score" in cols else keys[0], ascending=False,
                                                 kind="stable").drop_duplicates(keys)
    take = changes["change"].isin(["added", "corrected"]).to_numpy()
    joined = changes.loc[take, keys].astype({"image_id": np.int64}).merge(preds, on=keys, how="left")
    for c in cols:
        changes.loc[take, c] = joined[c].to_numpy(dtype=np.float64)
    return changes


def clean_with_changes(gt: pd.DataFrame, predictions: pd.DataFrame, methods: Sequence[str] = METHODS,
                       **thresholds: float) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    """:func:`~uncertainty_det.ssl.glc.clean_labels`, one rule at a time, with every change recorded.

    gt: a GT frame with unique ``gt_id``; predictions and thresholds: as for ``clean_labels``. Returns
    ``(cleaned_gt, counts, changes)``: the same frame and counts as ``clean_labels(gt, predictions, methods,
    **thresholds)`` and one row per change in rule order (columns :data:`CHANGE_COLUMNS` less ``ann_id``):
    ``added`` (md: the new box), ``removed`` (mistakes: the removed box), ``corrected`` (noisy: the new box,
    ``prev_*`` the old one and ``iou`` between them). ``score`` / ``cons_iou`` are those of the prediction an
    added or corrected box came from. A box added by ``md`` and removed by ``mistakes`` appears twice.
    """
    methods = check_methods(methods)
    check_frame(gt, "ground truth", ("gt_id", *BOX_FRAME_COLUMNS))
    if gt["gt_id"].duplicated().any():
        raise PseudoLabelError("ground truth: gt_id values must be unique (they identify boxes across the "
                               "cleaning steps); renumber the duplicates")
    counts = {"added": 0, "removed": 0, "corrected": 0}
    parts = []
    current = gt.reset_index(drop=True)
    for method in methods:
        after, step = clean_labels(current, predictions, [method], **thresholds)
        for key, value in step.items():
            counts[key] += int(value)
        before_ids = current["gt_id"].to_numpy(dtype=np.int64)
        after_ids = after["gt_id"].to_numpy(dtype=np.int64)
        change = _RULE_CHANGE[method]
        if change == "added":
            parts.append(_rows(after[~np.isin(after_ids, before_ids)], change))
        elif change == "removed":
            parts.append(_rows(current[~np.isin(before_ids, after_ids)], change))
        else:
            old = current.set_index("gt_id").loc[after_ids, list(CORNERS)].to_numpy(dtype=np.float64)
            new = after.loc[:, list(CORNERS)].to_numpy(dtype=np.float64)
            moved = (old != new).any(axis=1)
            rows = _rows(after[moved], change)
            from ..evaluation.matching import iou as _iou

            for k, c in enumerate(CORNERS):
                rows[f"prev_{c}"] = old[moved, k]
            rows["iou"] = _iou(old[moved], new[moved])
            parts.append(rows)
        current = after
    changes = pd.concat(parts, ignore_index=True) if parts else _rows(gt.iloc[:0], "added")
    changes = _attach_predictions(changes, predictions)
    return current.reset_index(drop=True), counts, changes


# ---------------------------------------------------------------------------------------------
# Synthetic corruption


def corrupt_labels(gt: pd.DataFrame, kind: str, image_sizes, num_classes: int, seed: int = 0,
                   drop_fraction: float = 0.2, mistakes_per_image: int = 5, noise_fraction: float = 0.2,
                   noise_deviation: float = 0.1) -> tuple[pd.DataFrame, dict]:
    """Corrupt clean GT on purpose (``kind`` in ``drop | mistakes | noise``, seeded by ``seed``).

    drop: :func:`~uncertainty_det.ssl.glc.drop_boxes` (``drop_fraction``); mistakes:
    :func:`~uncertainty_det.ssl.glc.add_mistakes` (``mistakes_per_image`` per image, classes ``1..num_classes``,
    ``image_sizes`` ``{image_id: (height, width)}``); noise: :func:`~uncertainty_det.ssl.glc.perturb_boxes`
    (``noise_fraction``, ``noise_deviation``). Returns ``(corrupted, counts)`` with ``counts`` one of
    ``{"dropped": n}``, ``{"planted": n}``, ``{"perturbed": n}``.
    """
    if kind not in STRESS_KINDS:
        raise PseudoLabelError(f"unknown synthetic corruption {kind!r}; choose one of {list(STRESS_KINDS)}")
    rng = np.random.default_rng(int(seed))
    if kind == "drop":
        corrupted, dropped = drop_boxes(gt, drop_fraction, rng=rng)
        return corrupted, {"dropped": int(len(dropped))}
    if kind == "mistakes":
        corrupted, planted = add_mistakes(gt, mistakes_per_image, image_sizes, rng=rng, num_classes=num_classes)
        return corrupted, {"planted": int(len(planted))}
    corrupted, ids = perturb_boxes(gt, noise_fraction, noise_deviation, rng=rng)
    return corrupted, {"perturbed": int(len(ids))}


# ---------------------------------------------------------------------------------------------
# Labels -> manifest


def annotation_ids(gt_ids: Sequence[int] | np.ndarray, first_new_id: int) -> np.ndarray:
    """Annotation ids for a GT frame's ``gt_id``\\ s: dataset ids (>= 0) stay; the negative ids of added boxes
    become ``first_new_id, first_new_id + 1, ...`` in the order they were made (-2 first, then -3, ...)."""
    ids = np.asarray(gt_ids, dtype=np.int64)
    out = ids.copy()
    neg = np.nonzero(ids < 0)[0]
    if neg.size:
        order = neg[np.argsort(-ids[neg], kind="stable")]
        out[order] = int(first_new_id) + np.arange(order.size, dtype=np.int64)
    return out


def labels_manifest(template, gt: pd.DataFrame, first_new_id: int | None = None, info: dict | None = None):
    """A manifest of ``template``'s images (all of them, in order, same entries) with ``gt`` as annotations.

    gt: a GT frame (``gt_id``, ``image_id``, ``class_id``, corners, optional ``occluded`` / ``truncated``; -1 =
    unknown) of those images; first_new_id: first annotation id of the boxes with a negative ``gt_id`` (default:
    one above every id of ``template`` and ``gt``). Boxes outside the image are clipped and degenerate ones dropped
    (``Manifest.sanitize_report`` counts them). Returns ``(manifest, ann_ids)``, ``ann_ids`` aligned with ``gt``.
    """
    from ..data.boxes import yxyx_to_xywh
    from ..data.manifest import Manifest

    check_frame(gt, "ground truth", ("gt_id", *BOX_FRAME_COLUMNS))
    known = set(int(i) for i in template.image_ids)
    outside = sorted(set(gt["image_id"].astype(np.int64).tolist()) - known)
    if outside:
        raise PseudoLabelError(f"labels_manifest: {len(outside)} GT image(s) are not in the manifest "
                               f"(first: {outside[0]})")
    if first_new_id is None:
        existing = [int(a["id"]) for a in template.annotations] + gt["gt_id"].astype(np.int64).tolist()
        first_new_id = max([0, *existing]) + 1
    ann_ids = annotation_ids(gt["gt_id"].to_numpy(dtype=np.int64), first_new_id)
    if np.unique(ann_ids).size != ann_ids.size:
        raise PseudoLabelError("labels_manifest: annotation ids are not unique; pass a larger first_new_id")
    xywh = yxyx_to_xywh(gt.loc[:, list(CORNERS)].to_numpy(dtype=np.float64))
    occluded = gt["occluded"].to_numpy() if "occluded" in gt.columns else np.full(len(gt), -1)
    truncated = gt["truncated"].to_numpy() if "truncated" in gt.columns else np.full(len(gt), -1.0)
    annotations = []
    for k in range(len(gt)):
        ann = {"id": int(ann_ids[k]), "image_id": int(gt["image_id"].iat[k]),
               "category_id": int(gt["class_id"].iat[k]), "bbox": [float(v) for v in xywh[k]],
               "area": float(xywh[k, 2] * xywh[k, 3]), "iscrowd": 0}
        if occluded[k] is not None and not pd.isna(occluded[k]) and int(occluded[k]) >= 0:
            ann["occluded"] = int(occluded[k])
        if truncated[k] is not None and not pd.isna(truncated[k]) and float(truncated[k]) >= 0:
            ann["truncated"] = float(truncated[k])
        annotations.append(ann)
    data = {"info": dict(info or {}), "images": [dict(img) for img in template.images],
            "annotations": annotations, "categories": [dict(c) for c in template.categories]}
    return Manifest.from_coco(data, source="<glc labels>", image_root=template.image_root), ann_ids
