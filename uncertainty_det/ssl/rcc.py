"""RCC: rare-class crop collages (reference §5.4, teacher strategy ``rcc``).

Extra labeled training images are built from the labeled set: every ground-truth box of a rare ("target")
class is cut out with some context, the crops are shuffled and pasted side by side into collages the size
of a training image, with their ground-truth boxes carried along. Optional per-crop augmentation
(:func:`augment_crop`) and the reference's ``scale`` layout (:func:`scale_split`) can be applied to each
crop before it is placed.

Conventions: images are ``uint8 [H, W, 3]``; boxes ``[ymin, xmin, ymax, xmax]`` float pixels (DESIGN §6.2),
with a crop's boxes in that crop's pixel frame; class ids are the dataset's 1-based integer ids. Every
random draw comes from the ``numpy.random.Generator`` passed in (or one made from an int seed), so a seed
fixes the output. NumPy/SciPy/Pillow only.

Differences from the reference, on purpose:

* boxes are kept in a crop when they intersect it (rectangle intersection); the reference required an
  x-edge and a y-edge strictly inside the crop, which drops a box that spans the whole crop (e.g. a large
  vehicle behind a small rare object), leaving it unlabeled in the collage; the reference also kept the
  classes of boxes it then dropped as too small, misaligning classes and boxes;
* integer crop windows (the grown box is floored/ceiled outwards), so crop pixels and crop-frame boxes agree;
* a crop that does not fit the remaining collage width is cut at the collage's right edge (its boxes clipped)
  instead of squashed; the last collage is padded with grey 114 instead of stretching its last crop;
* a crop whose boxes would push a collage past ``max_boxes`` starts a new collage, so no pasted object is
  left unlabeled (the reference stopped writing labels but still pasted the crop);
* additive noise is zero-mean ``U(-a, a)`` computed in float (the reference added positive ``uint8`` noise,
  which wraps around before clipping).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from uncertainty_det.errors import UserError

__all__ = [
    "AUGMENT_OPS",
    "COLLAGE_FILL",
    "RCCInputError",
    "augment_crop",
    "boxes_in_crop",
    "context_crop_box",
    "extract_rare_crops",
    "make_collages",
    "scale_split",
]

COLLAGE_FILL = 114
"""Grey level of collage pixels no crop covers."""

AUGMENT_OPS = ("hflip", "brightness", "contrast", "blur", "noise")
"""The per-crop augmentations of :func:`augment_crop`, one drawn uniformly per call."""

SCALE_SPLIT = 0.75
"""Fraction of the width/height given to the first column/row in :func:`scale_split`."""


class RCCInputError(UserError, ValueError):
    """Bad image, box, class or parameter given to the RCC collage builder (a ``ValueError`` and a
    :class:`UserError`)."""


# ----------------------------------------------------------------------------------------------- checks


def _rng(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise RCCInputError(
        f"rng must be a numpy.random.Generator or an int seed, got {type(rng).__name__}; "
        f"pass e.g. numpy.random.default_rng(42)"
    )


def _image(image, name: str = "image") -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise RCCInputError(
            f"{name} must be a uint8 RGB array [H, W, 3], got dtype {arr.dtype} shape {arr.shape}; "
            f"convert it with numpy.asarray(PIL.Image.open(path).convert('RGB'))"
        )
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise RCCInputError(f"{name} is empty (shape {arr.shape})")
    return arr


def _boxes(boxes, name: str = "boxes") -> np.ndarray:
    try:
        arr = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError):
        raise RCCInputError(f"{name} must be a numeric [n, 4] array [ymin, xmin, ymax, xmax] in pixels") from None
    if arr.size == 0:
        return np.zeros((0, 4), np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise RCCInputError(f"{name} must be an [n, 4] array [ymin, xmin, ymax, xmax] in pixels, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise RCCInputError(f"{name} contains NaN or inf; drop or fix those boxes")
    if np.any(arr[:, 2] < arr[:, 0]) or np.any(arr[:, 3] < arr[:, 1]):
        raise RCCInputError(
            f"{name} has boxes with ymax < ymin or xmax < xmin; boxes must be [ymin, xmin, ymax, xmax] "
            f"(swap the columns if they are [xmin, ymin, xmax, ymax])"
        )
    return arr


def _classes(classes, n: int, name: str = "classes") -> np.ndarray:
    arr = np.asarray(classes)
    if arr.size == 0 and n == 0:
        return np.zeros((0,), np.int64)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise RCCInputError(f"{name} must be a 1-D array with one class id per box ({n} boxes), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.floating) or not np.all(arr == np.round(arr)):
            raise RCCInputError(f"{name} must hold integer class ids (1-based), got dtype {arr.dtype}")
    return arr.astype(np.int64)


def _min_size(min_size) -> float:
    try:
        v = float(min_size)
    except (TypeError, ValueError):
        raise RCCInputError(f"min_size must be a non-negative number of pixels, got {min_size!r}") from None
    if not v >= 0:
        raise RCCInputError(f"min_size must be a non-negative number of pixels, got {min_size!r}")
    return v


def _max_boxes(max_boxes) -> int:
    if isinstance(max_boxes, bool) or not isinstance(max_boxes, (int, np.integer)) or max_boxes < 1:
        raise RCCInputError(f"max_boxes must be a positive integer (reference 100), got {max_boxes!r}")
    return int(max_boxes)


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a uint8 ``[h, w, 3]`` image to ``[height, width, 3]`` (Pillow)."""
    if image.shape[0] == height and image.shape[1] == width:
        return image.copy()
    out = Image.fromarray(image).resize((int(width), int(height)), Image.Resampling.BILINEAR)
    return np.asarray(out, dtype=np.uint8).copy()


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------- crops


def context_crop_box(box, image_hw: Sequence[int], grow: float) -> np.ndarray:
    """Crop window around a box with context.

    The box ``[ymin, xmin, ymax, xmax]`` (height ``h``, width ``w``) is grown by ``grow * h`` above and below
    and ``grow * w`` left and right, rounded outwards to whole pixels (floor of the start, ceil of the end)
    and clipped to the image.

    Args:
      box: ``[4]`` ``[ymin, xmin, ymax, xmax]`` pixels.
      image_hw: ``(H, W)`` image size in pixels.
      grow: context fraction ``>= 0`` (the reference draws it from ``U(0.5, 1.0)``).

    Returns:
      ``[4]`` int64 ``[y0, x0, y1, x1]`` with ``0 <= y0 <= y1 <= H`` and ``0 <= x0 <= x1 <= W``; the crop is
      ``image[y0:y1, x0:x1]``. It is empty (``y1 == y0`` or ``x1 == x0``) only when the box lies outside the
      image or has zero size on an integer coordinate.

    Raises:
      RCCInputError: malformed box, size or ``grow``.
    """
    if np.shape(box) not in ((4,), (1, 4)):
        raise RCCInputError(f"box must be one [ymin, xmin, ymax, xmax] box, got shape {np.shape(box)}")
    b = _boxes(np.reshape(box, (1, 4)), "box")
    try:
        height, width = (int(v) for v in image_hw)
    except (TypeError, ValueError):
        raise RCCInputError(f"image_hw must be an (H, W) pair of integers, got {image_hw!r}") from None
    if height < 1 or width < 1:
        raise RCCInputError(f"image_hw must be positive, got {image_hw!r}")
    try:
        grow = float(grow)
    except (TypeError, ValueError):
        raise RCCInputError(f"grow must be a non-negative number, got {grow!r}") from None
    if not (grow >= 0 and math.isfinite(grow)):
        raise RCCInputError(f"grow must be a non-negative finite number, got {grow!r}")
    ymin, xmin, ymax, xmax = b[0]
    dh, dw = grow * (ymax - ymin), grow * (xmax - xmin)
    y0 = min(max(math.floor(ymin - dh), 0), height)
    x0 = min(max(math.floor(xmin - dw), 0), width)
    y1 = max(min(math.ceil(ymax + dh), height), y0)
    x1 = max(min(math.ceil(xmax + dw), width), x0)
    return np.array([y0, x0, y1, x1], dtype=np.int64)


def boxes_in_crop(boxes, classes, crop, min_size: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """The boxes visible in a crop window, in the crop's pixel frame.

    A box is taken when its rectangle intersects the crop with positive area. It is clipped to the crop,
    shifted to crop coordinates and kept when the clipped height and width are both ``> min_size``. Boxes
    larger than the crop (spanning it entirely) are kept, unlike the reference's edge-inside test (module
    docstring).

    Args:
      boxes: ``[n, 4]`` ``[ymin, xmin, ymax, xmax]`` image pixels (all boxes of the image, the box the crop
        was made for included).
      classes: ``[n]`` integer class ids, aligned with ``boxes``.
      crop: ``[4]`` ``[y0, x0, y1, x1]`` crop window in image pixels (e.g. from :func:`context_crop_box`).
      min_size: minimum clipped height and width in pixels (strict, reference 2).

    Returns:
      ``(boxes [k, 4] float32 crop pixels, classes [k] int64)``, in input order.

    Raises:
      RCCInputError: malformed boxes, classes or crop.
    """
    b = _boxes(boxes)
    c = _classes(classes, b.shape[0])
    min_size = _min_size(min_size)
    win = np.asarray(crop, dtype=np.float64).reshape(-1)
    if win.shape != (4,) or not np.all(np.isfinite(win)) or win[2] < win[0] or win[3] < win[1]:
        raise RCCInputError(f"crop must be [y0, x0, y1, x1] with y0 <= y1 and x0 <= x1, got {crop!r}")
    y0, x0, y1, x1 = win
    iy0 = np.maximum(b[:, 0], y0)
    ix0 = np.maximum(b[:, 1], x0)
    iy1 = np.minimum(b[:, 2], y1)
    ix1 = np.minimum(b[:, 3], x1)
    ih, iw = iy1 - iy0, ix1 - ix0
    keep = (ih > 0) & (iw > 0) & (ih > min_size) & (iw > min_size)
    out = np.stack([iy0 - y0, ix0 - x0, iy1 - y0, ix1 - x0], axis=1)[keep]
    return out.astype(np.float32).reshape(-1, 4), c[keep]


def extract_rare_crops(
    images: Sequence[np.ndarray],
    boxes_per_image: Sequence,
    classes_per_image: Sequence,
    target_classes,
    rng,
    low: float = 0.5,
    high: float = 1.0,
    max_boxes: int = 100,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Cut a context crop around every box of a target (rare) class.

    For each image in order and each of its boxes in order whose class is in ``target_classes``: draw
    ``grow ~ U(low, high)`` from ``rng``, take :func:`context_crop_box`, and collect every box of the image
    visible in it with :func:`boxes_in_crop` (``min_size`` 2). Skipped: empty crop windows, crops with no
    visible box (the rare box itself was too small to keep, so the crop would show an unlabeled rare object),
    and crops with ``>= max_boxes`` boxes (reference). Other boxes, rare or not, are kept in every crop they
    appear in, so a rare object near another one appears in both crops.

    Args:
      images: list of uint8 ``[H_i, W_i, 3]`` images.
      boxes_per_image: list of ``[n_i, 4]`` ``[ymin, xmin, ymax, xmax]`` pixel boxes.
      classes_per_image: list of ``[n_i]`` integer class ids.
      target_classes: iterable of the rare class ids to crop around.
      rng: ``numpy.random.Generator`` or int seed.
      low, high: range of the context fraction ``grow`` (``0 <= low <= high``).
      max_boxes: crops with this many boxes or more are skipped.

    Returns:
      list of ``(crop uint8 [h, w, 3] (a copy), boxes [k, 4] float32 crop pixels, classes [k] int64)``.

    Raises:
      RCCInputError: mismatched list lengths, malformed images/boxes/classes, bad ``low``/``high``.
    """
    gen = _rng(rng)
    max_boxes = _max_boxes(max_boxes)
    if not (len(images) == len(boxes_per_image) == len(classes_per_image)):
        raise RCCInputError(
            f"images, boxes_per_image and classes_per_image must have one entry per image, got lengths "
            f"{len(images)}, {len(boxes_per_image)}, {len(classes_per_image)}"
        )
    try:
        low, high = float(low), float(high)
    except (TypeError, ValueError):
        raise RCCInputError(f"low and high must be numbers, got {low!r}, {high!r}") from None
    if not (0.0 <= low <= high and math.isfinite(high)):
        raise RCCInputError(f"need 0 <= low <= high for the context range, got low={low}, high={high}")
    try:
        targets = {int(t) for t in np.asarray(list(target_classes)).reshape(-1)}
    except (TypeError, ValueError):
        raise RCCInputError(f"target_classes must be integer class ids, got {target_classes!r}") from None
    out = []
    for i, (image, boxes, classes) in enumerate(zip(images, boxes_per_image, classes_per_image)):
        img = _image(image, f"images[{i}]")
        b = _boxes(boxes, f"boxes_per_image[{i}]")
        c = _classes(classes, b.shape[0], f"classes_per_image[{i}]")
        for j in range(b.shape[0]):
            if int(c[j]) not in targets:
                continue
            grow = gen.uniform(low, high)
            win = context_crop_box(b[j], img.shape[:2], grow)
            y0, x0, y1, x1 = (int(v) for v in win)
            if y1 <= y0 or x1 <= x0:
                continue
            kb, kc = boxes_in_crop(b, c, win)
            if kb.shape[0] == 0 or kb.shape[0] >= max_boxes:
                continue
            out.append((img[y0:y1, x0:x1].copy(), kb, kc))
    return out


# ----------------------------------------------------------------------------------------------- per-crop ops


def augment_crop(image, boxes, rng, op: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One random photometric or flip augmentation of a crop.

    ``op`` (drawn uniformly from :data:`AUGMENT_OPS` when ``None``):

    * ``"hflip"``: mirror left-right; boxes become ``[ymin, W - xmax, ymax, W - xmin]``;
    * ``"brightness"``: pixels times ``f ~ U(0.7, 1.3)``;
    * ``"contrast"``: ``mean + f (x - mean)`` with ``f ~ U(0.7, 1.3)`` and the mean over all pixels and
      channels;
    * ``"blur"``: Gaussian blur, ``sigma ~ U(1, 3)`` pixels, each channel separately;
    * ``"noise"``: additive noise ``U(-a, a)`` per pixel and channel with amplitude ``a ~ U(5, 20)``.

    Results are rounded and clipped to ``[0, 255]``. Only ``"hflip"`` changes the boxes.

    Args:
      image: uint8 ``[h, w, 3]``.
      boxes: ``[k, 4]`` ``[ymin, xmin, ymax, xmax]`` crop pixels.
      rng: ``numpy.random.Generator`` or int seed.
      op: force one op (tests, ablations), else ``None``.

    Returns:
      ``(image uint8 [h, w, 3], boxes [k, 4] float32)`` (new arrays).

    Raises:
      RCCInputError: malformed image/boxes or unknown ``op``.
    """
    gen = _rng(rng)
    img = _image(image)
    b = _boxes(boxes)
    if op is None:
        op = AUGMENT_OPS[int(gen.integers(len(AUGMENT_OPS)))]
    elif op not in AUGMENT_OPS:
        raise RCCInputError(f"op must be one of {AUGMENT_OPS} or None, got {op!r}")
    x = img.astype(np.float64)
    if op == "hflip":
        width = img.shape[1]
        out = img[:, ::-1].copy()
        b = np.stack([b[:, 0], width - b[:, 3], b[:, 2], width - b[:, 1]], axis=1) if b.size else b
        return out, b.astype(np.float32).reshape(-1, 4)
    if op == "brightness":
        x = x * gen.uniform(0.7, 1.3)
    elif op == "contrast":
        mean = x.mean()
        x = mean + gen.uniform(0.7, 1.3) * (x - mean)
    elif op == "blur":
        sigma = gen.uniform(1.0, 3.0)
        x = np.stack([gaussian_filter(x[..., ch], sigma) for ch in range(3)], axis=-1)
    else:  # noise
        amp = gen.uniform(5.0, 20.0)
        x = x + gen.uniform(-amp, amp, size=x.shape)
    return _to_uint8(x), b.astype(np.float32).reshape(-1, 4)


def scale_split(image, boxes, classes, min_size: float = 2.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reference's ``scale`` option: four rescaled copies of a crop in a 2x2 layout of the same size.

    Our reading of reference §5.4 ("4 rescaled copies at 75/25 % of width/height in a 2x2 layout"), as the
    reference code does it: the ``h x w`` canvas is cut at ``w_a = ceil(0.75 w)`` columns and
    ``h_a = ceil(0.75 h)`` rows, giving cells (top-left) ``h_a x w_a``, (top-right) ``h_a x (w - w_a)``,
    (bottom-left) ``(h - h_a) x w_a`` and (bottom-right) ``(h - h_a) x (w - w_a)``. Each cell holds the WHOLE
    crop resized to the cell (so the two off-diagonal copies are squashed about 3:1), and each copy carries
    all the crop's boxes scaled and shifted the same way. The reference sized the second column/row with
    ``ceil(0.25 w)``, one pixel too many at times (cut off when pasted); here the cells tile the canvas
    exactly. Cells of zero size (crops under 2 px) are skipped. Scaled boxes with height or width
    ``<= min_size`` are dropped (an object that small is not learnable; the reference kept them).

    Args:
      image: uint8 ``[h, w, 3]``.
      boxes: ``[k, 4]`` crop pixels.
      classes: ``[k]`` integer class ids.
      min_size: boxes need height and width ``> min_size`` pixels after scaling.

    Returns:
      ``(image uint8 [h, w, 3], boxes [m, 4] float32, classes [m] int64)``, boxes grouped by cell in the
      order top-left, top-right, bottom-left, bottom-right.

    Raises:
      RCCInputError: malformed inputs.
    """
    img = _image(image)
    b = _boxes(boxes)
    c = _classes(classes, b.shape[0])
    min_size = _min_size(min_size)
    h, w = img.shape[:2]
    ha = min(h, math.ceil(SCALE_SPLIT * h))
    wa = min(w, math.ceil(SCALE_SPLIT * w))
    canvas = np.full_like(img, COLLAGE_FILL)
    out_b, out_c = [], []
    for (oy, ch) in ((0, ha), (ha, h - ha)):
        for (ox, cw) in ((0, wa), (wa, w - wa)):
            if ch < 1 or cw < 1:
                continue
            canvas[oy:oy + ch, ox:ox + cw] = _resize(img, ch, cw)
            sy, sx = ch / h, cw / w
            nb = np.stack([b[:, 0] * sy + oy, b[:, 1] * sx + ox, b[:, 2] * sy + oy, b[:, 3] * sx + ox], axis=1)
            keep = ((nb[:, 2] - nb[:, 0]) > min_size) & ((nb[:, 3] - nb[:, 1]) > min_size)
            out_b.append(nb[keep])
            out_c.append(c[keep])
    boxes_out = np.concatenate(out_b, axis=0) if out_b else np.zeros((0, 4))
    classes_out = np.concatenate(out_c, axis=0) if out_c else np.zeros((0,), np.int64)
    return canvas, boxes_out.astype(np.float32).reshape(-1, 4), classes_out.astype(np.int64)


# ----------------------------------------------------------------------------------------------- collages


def make_collages(
    crops: Sequence[tuple],
    collage_hw: Sequence[int],
    rng,
    max_boxes: int = 100,
    *,
    augment: bool = False,
    scale: bool = False,
    min_size: float = 2.0,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Paste shuffled crops side by side into collages of a fixed size.

    The crops are shuffled with ``rng``. Each crop (optionally first passed through :func:`augment_crop`
    when ``augment``, then :func:`scale_split` when ``scale``) is resized bilinearly to the collage height
    ``H`` keeping its aspect (width ``max(1, round(w H / h))``) and placed at the current x offset, left to
    right; its boxes are scaled by the actual resize factors and shifted by the offset. When a crop is wider
    than the width left, it is cut at the collage's right edge: its boxes are clipped and dropped when the
    clipped width is ``< min_size`` pixels; the cut-off part is discarded. A collage is closed when it is
    full, or before a crop whose boxes would take it past ``max_boxes`` (that crop starts the next collage).
    Crops with more than ``max_boxes`` boxes on their own are skipped. Unused pixels on the right of the
    last collage are grey :data:`COLLAGE_FILL`.

    Args:
      crops: list of ``(image uint8 [h, w, 3], boxes [k, 4] crop pixels, classes [k])``, e.g. from
        :func:`extract_rare_crops`.
      collage_hw: ``(H, W)`` collage size in pixels (the reference uses the training-image size).
      rng: ``numpy.random.Generator`` or int seed (shuffle, then augmentation draws in placement order).
      max_boxes: most boxes in one collage (reference 100).
      augment: apply :func:`augment_crop` to each crop (reference ``manual_augmentations``).
      scale: apply :func:`scale_split` to each crop (reference ``scale``).
      min_size: width threshold (pixels) for boxes of a cut crop, and ``min_size`` of :func:`scale_split`.

    Returns:
      list of ``(image uint8 [H, W, 3], boxes [n, 4] float32 collage pixels, classes [n] int64)`` with
      ``n <= max_boxes`` and every box inside ``[0, H] x [0, W]``; empty when ``crops`` is empty.

    Raises:
      RCCInputError: malformed crops or sizes.
    """
    gen = _rng(rng)
    max_boxes = _max_boxes(max_boxes)
    min_size = _min_size(min_size)
    try:
        height, width = (int(v) for v in collage_hw)
    except (TypeError, ValueError):
        raise RCCInputError(f"collage_hw must be an (H, W) pair of integers, got {collage_hw!r}") from None
    if height < 1 or width < 1:
        raise RCCInputError(f"collage_hw must be positive, got {collage_hw!r}")
    checked = []
    for i, item in enumerate(crops):
        try:
            image, boxes, classes = item
        except (TypeError, ValueError):
            raise RCCInputError(f"crops[{i}] must be an (image, boxes, classes) triple") from None
        img = _image(image, f"crops[{i}] image")
        b = _boxes(boxes, f"crops[{i}] boxes")
        checked.append((img, b, _classes(classes, b.shape[0], f"crops[{i}] classes")))

    collages: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    canvas = None
    x_off = 0
    parts_b: list[np.ndarray] = []
    parts_c: list[np.ndarray] = []

    def close():
        nonlocal canvas, x_off, parts_b, parts_c
        if canvas is not None:
            nb = np.concatenate(parts_b, axis=0) if parts_b else np.zeros((0, 4))
            nc = np.concatenate(parts_c, axis=0) if parts_c else np.zeros((0,), np.int64)
            collages.append((canvas, nb.astype(np.float32).reshape(-1, 4), nc.astype(np.int64)))
        canvas, x_off, parts_b, parts_c = None, 0, [], []

    for idx in gen.permutation(len(checked)):
        img, b, c = checked[int(idx)]
        if augment:
            img, b = augment_crop(img, b, gen)
            b = b.astype(np.float64)
        if scale:
            img, b, c = scale_split(img, b, c, min_size=min_size)
            b = b.astype(np.float64)
        if b.shape[0] > max_boxes:
            continue
        n_now = sum(p.shape[0] for p in parts_b)
        if canvas is not None and n_now + b.shape[0] > max_boxes:
            close()
        if canvas is None:
            canvas = np.full((height, width, 3), COLLAGE_FILL, np.uint8)
        h, w = img.shape[:2]
        new_w = max(1, int(round(w * height / h)))
        resized = _resize(img, height, new_w)
        sy, sx = height / h, new_w / w
        nb = np.stack([b[:, 0] * sy, b[:, 1] * sx + x_off, b[:, 2] * sy, b[:, 3] * sx + x_off], axis=1)
        room = width - x_off
        if new_w > room:
            resized = resized[:, :room]
            nb[:, 3] = np.minimum(nb[:, 3], width)
            nb[:, 1] = np.minimum(nb[:, 1], width)
            keep = (nb[:, 3] - nb[:, 1]) >= min_size
            nb, c = nb[keep], c[keep]
        canvas[:, x_off:x_off + resized.shape[1]] = resized
        # guard float round-off at the borders
        nb[:, [0, 2]] = np.clip(nb[:, [0, 2]], 0, height)
        nb[:, [1, 3]] = np.clip(nb[:, [1, 3]], 0, width)
        parts_b.append(nb)
        parts_c.append(c)
        x_off += resized.shape[1]
        if x_off >= width:
            close()
    close()
    return collages
