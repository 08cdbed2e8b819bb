"""Per-object image features of the set-similarity analysis (reference §4.2).

Every ground-truth crop gives three scalars (columns of the ``[M, 3]`` feature matrix):

0. ``aspect_ratio`` = ``w / h`` of the integer crop;
1. ``dct_mean``: mean of the 2-D type-II orthonormal DCT of the crop (all coefficients and channels);
2. ``size`` = ``h * w / 512``. The reference computed ``mean(cv2.calcHist(crop, [0,1,2], None, [8,8,8],
   [0,256]*3))``; a 512-bin histogram of the crop's ``h * w`` pixels sums to ``h * w``, so its mean is
   exactly ``h * w / 512`` (defect 16: the "colour histogram" feature is a crop-size feature). It is
   defined here as that size directly.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from scipy.fft import dctn

from ..data.images import UNREADABLE_IMAGE_ERRORS, load_rgb
from ._common import AlEvalError

log = logging.getLogger(__name__)

FEATURE_NAMES = ("aspect_ratio", "dct_mean", "size")
#: Bins of the reference's 8x8x8 colour histogram; the size feature is ``h * w / HIST_BINS``.
HIST_BINS = 512
#: Crops are kept only if ``min(h, w) > MIN_SIDE`` pixels.
MIN_SIDE = 2


def crop_windows(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Integer crop windows of boxes.

    Args:
      boxes: ``[N, 4]`` ``[ymin, xmin, ymax, xmax]`` pixels (float).
      height, width: image size in pixels.
    Returns:
      ``[N, 4]`` int64 ``[y0, x0, y1, x1]``: ``floor`` of the minima and ``ceil`` of the maxima, clipped
      to the image, so that ``image[y0:y1, x0:x1]`` covers the box.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    lo = np.floor(boxes[:, :2])
    hi = np.ceil(boxes[:, 2:])
    limit = np.array([height, width], dtype=np.float64)
    lo = np.clip(lo, 0, limit)
    hi = np.clip(hi, 0, limit)
    return np.concatenate([lo, hi], axis=1).astype(np.int64)


def dct_mean(crop: np.ndarray) -> float:
    """Mean coefficient of the type-II orthonormal DCT over axis 0 and 1 of a ``[h, w(, c)]`` crop.

    The mean runs over all ``h * w * c`` coefficients; pixel values are used as float64 (0-255 scale).
    """
    return float(dctn(np.asarray(crop, dtype=np.float64), type=2, axes=(0, 1), norm="ortho").mean())


def crop_features(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Features of the ground-truth crops of one image.

    Args:
      image: ``[H, W, 3]`` uint8 RGB.
      boxes: ``[N, 4]`` ``[ymin, xmin, ymax, xmax]`` pixels.
    Returns:
      ``(features, kept)``: ``features`` ``[M, 3]`` float64 with columns :data:`FEATURE_NAMES`
      (``w / h`` unitless, DCT mean in 0-255 pixel units, ``h * w / 512`` in pixels / 512) for the
      ``M`` kept crops in box order; ``kept`` ``[N]`` bool, True where the integer crop (see
      :func:`crop_windows`) has ``min(h, w) > 2``.
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise AlEvalError(f"image must be [H, W, 3], got shape {image.shape}")
    windows = crop_windows(boxes, image.shape[0], image.shape[1])
    h = windows[:, 2] - windows[:, 0]
    w = windows[:, 3] - windows[:, 1]
    kept = np.minimum(h, w) > MIN_SIDE
    features = np.empty((int(kept.sum()), 3), dtype=np.float64)
    for row, (y0, x0, y1, x1) in enumerate(windows[kept]):
        features[row, 1] = dct_mean(image[y0:y1, x0:x1])
    features[:, 0] = w[kept] / h[kept]
    features[:, 2] = (h[kept] * w[kept]) / HIST_BINS
    return features, kept


class ClassFeatures(dict):
    """``{class_id: [N_c, 3] features}`` plus the ids of the images that could not be read (``skipped``)."""

    def __init__(self, *args, skipped: Sequence[int] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.skipped = list(skipped)


def image_features(manifest, class_ids: Sequence[int], image_ids: Iterable[int], desc: str = "crop features",
                   skipped: list[int] | None = None) -> dict[int, dict[int, np.ndarray]]:
    """``{image_id: {class_id: [n, 3]}}``: the crop features of each image (each image read once, only images
    with objects of ``class_ids``; unreadable images are logged, left out and appended to ``skipped``).
    Sets of images that overlap (AL rounds, eval subsets) are :func:`gather` ed from it without re-reading."""
    from tqdm.auto import tqdm

    wanted = np.asarray(list(class_ids), dtype=np.int64)
    out: dict[int, dict[int, np.ndarray]] = {}
    bad = 0
    for image_id in tqdm(list(dict.fromkeys(int(i) for i in image_ids)), desc=desc, unit="img", disable=None):
        objects = manifest.objects(image_id)
        select = np.isin(objects.class_ids, wanted)
        if not select.any():
            continue
        try:
            image = load_rgb(manifest.image_path(image_id))
        except UNREADABLE_IMAGE_ERRORS as exc:
            log.warning("skipping unreadable image %s (id %s): %s", manifest.image_path(image_id), image_id, exc)
            bad += 1
            if skipped is not None:
                skipped.append(image_id)
            continue
        feats, kept = crop_features(image, objects.boxes[select])
        ids = objects.class_ids[select][kept]
        out[image_id] = {int(c): feats[ids == c] for c in np.unique(ids).tolist()}
    if bad:
        log.warning("%d images could not be read and were skipped", bad)
    return out


def gather(per_image: Mapping[int, Mapping[int, np.ndarray]], image_ids: Iterable[int],
           class_ids: Sequence[int]) -> dict[int, np.ndarray]:
    """``{class_id: [N_c, 3]}`` of a set of images: the per-image features concatenated in ``image_ids`` order
    (``[0, 3]`` for a class without crops)."""
    ids = [int(j) for j in image_ids]
    out = {}
    for c in class_ids:
        parts = [per_image[i][c] for i in ids if c in per_image.get(i, {})]
        out[int(c)] = np.concatenate(parts) if parts else np.zeros((0, 3))
    return out


def manifest_features(manifest, classes: Sequence[int] | None = None,
                      image_ids: Iterable[int] | None = None) -> ClassFeatures:
    """Crop features of the ground-truth objects of a manifest, per class.

    Args:
      manifest: a :class:`~uncertainty_det.data.manifest.Manifest`.
      classes: 1-based category ids to collect (default: all categories of the manifest).
      image_ids: the images to read (default: all, in manifest order).
    Returns:
      :class:`ClassFeatures` ``{class_id: [N_c, 3]}`` with every requested class present (``[0, 3]``
      if it has no kept crop). Images without objects of ``classes`` are not read; images that cannot be
      read are skipped, logged and listed in ``.skipped``.
    """
    known = set(manifest.category_ids)
    classes = list(manifest.category_ids if classes is None else classes)
    unknown = [c for c in classes if c not in known]
    if unknown:
        raise AlEvalError(f"classes {unknown} are not category ids of manifest {manifest.source} "
                          f"(ids {sorted(known)}: {manifest.class_names})")
    ids = list(manifest.image_ids if image_ids is None else image_ids)
    skipped: list[int] = []
    per_image = image_features(manifest, [int(c) for c in classes], ids, skipped=skipped)
    result = gather(per_image, ids, [int(c) for c in classes])
    return ClassFeatures(result, skipped=skipped)
