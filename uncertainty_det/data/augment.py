"""Box-aware image augmentation in TensorFlow (graph-compatible, applied per image inside ``Dataset.map``).

Conventions used by every function here:

* ``image``: ``[H, W, C]`` float32. The colour ops expect raw RGB values in ``[0, 255]``; the geometric
  ops work on any values and fill uncovered pixels with 0 (the pipeline feeds them normalised images,
  so padding is the mean colour; :func:`apply_strong_op` takes an explicit RGB ``fill``).
* ``boxes``: ``[N, 4]`` float32 ``[ymin, xmin, ymax, xmax]`` in pixels of the *current* image, in
  continuous coordinates: pixel ``(row i, col j)`` covers ``[i, i+1) x [j, j+1)``, so an object filling
  rows ``y0..y1-1`` has ``ymin = y0, ymax = y1``.
* ``classes`` ``[N]`` int32 and ``weights`` ``[N]`` float32 travel with the boxes; ops that drop boxes drop
  the matching classes and weights.
* ``seed``: a stateless seed, shape ``[2]`` int32/int64 (e.g. ``(cfg.seed, element_index)``); the same seed
  gives the same augmentation. Sub-seeds are derived with ``stateless_fold_in``.

Geometric transforms are forward affine matrices ``A`` (3x3, acting on ``(x, y, 1)`` in continuous pixel
coordinates, input -> output). Boxes are mapped by transforming their 4 corners with ``A`` and taking
the enclosing box, clipped to the output image. A box is dropped when less than ``MIN_VISIBLE`` (25 %)
of its transformed area stays inside the image or when its clipped height or width is below
``MIN_SIZE`` (2 px). Images are resampled bilinearly with the cheapest exact method (CPU cost per
256x256 image, one core): rotate/shear with ``ImageProjectiveTransformV3`` (~2.5 ms), exact
axis-aligned scaling with ``ScaleAndTranslate`` (~1 ms; evaluation letterbox, zoom), training scale
jitter with an integer-size ``tf.image.resize`` + slicing (~0.3 ms), translations as whole-pixel
shifts (~0.4 ms). Per-channel arithmetic uses :func:`channel_affine` (broadcasting a length-3 vector
over the last axis is several times slower in TF).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import tensorflow as tf

MIN_VISIBLE = 0.25  # keep a box only if >= this fraction of its (transformed) area is inside the image
MIN_SIZE = 2.0  # ... and its clipped height and width are >= this many pixels

# Strength of each strong op at magnitude 1.0 (RandAugment-style: the op uses magnitude x this value,
# with a random sign for signed ops).
MAX_ENHANCE = 0.9  # brightness/contrast/saturation/sharpness factor 1 +- 0.9
MAX_HUE = 0.3  # hue shift, fraction of the hue circle
MAX_POSTERIZE_BITS = 4  # bits removed
MAX_TRANSLATE = 0.3  # fraction of the image size
MAX_SHEAR = 0.3  # shear coefficient
MAX_ROTATE_DEG = 30.0
MAX_ZOOM = 0.5  # zoom factor (1 + 0.5)^(+-1)
MAX_CUTOUT = 0.3  # side of the cutout square, fraction of min(H, W)


# ---------------------------------------------------------------------------------------- seeds and random
def as_seed(seed) -> tf.Tensor:
    """Any ``[2]`` int seed (tuple, list, tensor) -> int64 tensor ``[2]``."""
    return tf.cast(tf.reshape(tf.convert_to_tensor(seed), [2]), tf.int64)


def sub_seed(seed, k: int) -> tf.Tensor:
    """A derived stateless seed ``[2]`` (int64) for sub-operation ``k``."""
    return tf.random.experimental.stateless_fold_in(as_seed(seed), k)


def _uniform(seed, minval: float = 0.0, maxval: float = 1.0) -> tf.Tensor:
    """Scalar float32 uniform in ``[minval, maxval)``."""
    return tf.random.stateless_uniform([], as_seed(seed), minval=minval, maxval=maxval, dtype=tf.float32)


def _random_sign(seed) -> tf.Tensor:
    """Scalar float32 +1 or -1 with equal probability."""
    return tf.where(_uniform(seed) < 0.5, -1.0, 1.0)


# ---------------------------------------------------------------------------------------- affine helpers
def affine_matrix(a, b, c, d, e, f) -> tf.Tensor:
    """``[3,3]`` float32 forward matrix ``x' = a x + b y + c``, ``y' = d x + e y + f``."""
    vals = [tf.cast(v, tf.float32) for v in (a, b, c, d, e, f)]
    return tf.reshape(tf.stack(vals + [tf.constant(0.0), tf.constant(0.0), tf.constant(1.0)]), [3, 3])


def _about_point(linear: tf.Tensor, cx, cy) -> tf.Tensor:
    """Forward ``[3,3]`` matrix applying the linear ``[3,3]`` map about the point ``(cx, cy)`` (pixels)."""
    to_origin = affine_matrix(1.0, 0.0, -cx, 0.0, 1.0, -cy)
    back = affine_matrix(1.0, 0.0, cx, 0.0, 1.0, cy)
    return back @ linear @ to_origin


def _image_hw(image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """``(H, W)`` of ``[H,W,C]`` as float32 scalars."""
    shape = tf.shape(image)
    return tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)


def warp_affine(
    image: tf.Tensor, matrix: tf.Tensor, out_size, fill_mode: str = "CONSTANT", fill_value: float = 0.0
) -> tf.Tensor:
    """Resample ``image`` ``[H,W,C]`` under the forward map ``matrix`` into ``[out_h, out_w, C]`` (bilinear).

    ``matrix`` maps continuous input pixel coordinates ``(x, y)`` to output ones. Pixel centres sit at
    ``index + 0.5``, so an integer translation moves pixels exactly. ``fill_mode``: ``CONSTANT`` fills
    with ``fill_value`` outside the input, ``NEAREST`` repeats the edge.
    """
    inv = tf.linalg.inv(tf.cast(matrix, tf.float32))
    # TF samples output index p at input index T p; index = continuous - 0.5.
    to_cont = affine_matrix(1.0, 0.0, 0.5, 0.0, 1.0, 0.5)
    to_index = affine_matrix(1.0, 0.0, -0.5, 0.0, 1.0, -0.5)
    t = to_index @ inv @ to_cont
    transforms = tf.reshape(t / t[2, 2], [9])[:8][tf.newaxis]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[tf.newaxis],
        transforms=transforms,
        output_shape=tf.cast(tf.reshape(tf.convert_to_tensor(out_size), [2]), tf.int32),
        fill_value=tf.constant(fill_value, tf.float32),
        interpolation="BILINEAR",
        fill_mode=fill_mode,
    )
    return out[0]


def scale_translate(image: tf.Tensor, scale_yx, translate_yx, out_size, antialias: bool = False) -> tf.Tensor:
    """Axis-aligned resampling ``out = in * scale + translate`` (per axis, continuous px) into ``out_size``.

    ``image`` ``[H,W,C]`` -> ``[out_h,out_w,C]``; bilinear like ``tf.image.resize`` (antialiased
    when shrinking if ``antialias``); pixels outside the scaled input are 0 and image edges are not
    blurred into them. Exact for any real scale (unlike an integer-size resize), ~2.5x faster than
    :func:`warp_affine`, ~5x slower than ``tf.image.resize``.
    """
    out = tf.raw_ops.ScaleAndTranslate(
        images=image[tf.newaxis],
        size=tf.cast(tf.reshape(tf.convert_to_tensor(out_size), [2]), tf.int32),
        scale=tf.cast(tf.reshape(scale_yx, [2]), tf.float32),
        translation=tf.cast(tf.reshape(translate_yx, [2]), tf.float32),
        kernel_type="triangle",
        antialias=antialias,
    )
    return out[0]


def shift_image(image: tf.Tensor, dy, dx) -> tf.Tensor:
    """Translate ``image`` ``[H,W,C]`` by whole pixels: ``out[y, x] = image[y - dy, x - dx]``, 0 where uncovered."""
    shape = tf.shape(image)
    dy = tf.clip_by_value(tf.cast(dy, tf.int32), -shape[0], shape[0])
    dx = tf.clip_by_value(tf.cast(dx, tf.int32), -shape[1], shape[1])
    start_y, start_x = tf.maximum(-dy, 0), tf.maximum(-dx, 0)  # = padding added at the bottom / right
    padded = tf.pad(image, [[tf.maximum(dy, 0), start_y], [tf.maximum(dx, 0), start_x], [0, 0]])
    return padded[start_y:start_y + shape[0], start_x:start_x + shape[1]]


def channel_affine(image: tf.Tensor, scale, offset) -> tf.Tensor:
    """Per-channel ``image * scale + offset`` for ``image`` ``[H,W,C]`` and ``scale``/``offset`` ``[C]``.

    Computed on an ``[H, W*C]`` view with the vectors tiled along the row, which TF runs several
    times faster than broadcasting a length-C vector over the last axis.
    """
    shape = tf.shape(image)
    reps = shape[1:2]
    scale = tf.tile(tf.cast(tf.reshape(scale, [-1]), image.dtype), reps)
    offset = tf.tile(tf.cast(tf.reshape(offset, [-1]), image.dtype), reps)
    return tf.reshape(tf.reshape(image, [shape[0], -1]) * scale + offset, shape)


def transform_boxes(boxes: tf.Tensor, matrix: tf.Tensor) -> tf.Tensor:
    """Map boxes ``[N,4]`` (yxyx px) by the forward ``[3,3]`` matrix; the enclosing box of the 4 corners."""
    boxes = tf.cast(tf.reshape(boxes, [-1, 4]), tf.float32)
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=1)
    xs = tf.stack([xmin, xmax, xmin, xmax], axis=1)  # [N,4] corners
    ys = tf.stack([ymin, ymin, ymax, ymax], axis=1)
    m = tf.cast(matrix, tf.float32)
    x2 = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
    y2 = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    return tf.stack(
        [tf.reduce_min(y2, 1), tf.reduce_min(x2, 1), tf.reduce_max(y2, 1), tf.reduce_max(x2, 1)], axis=1
    )


def clip_boxes(
    boxes: tf.Tensor, height, width, min_visible: float = MIN_VISIBLE, min_size: float = MIN_SIZE
) -> tuple[tf.Tensor, tf.Tensor]:
    """Clip boxes ``[N,4]`` (yxyx px) to ``[0,height] x [0,width]``.

    Returns ``(clipped [N,4], keep [N] bool)``: ``keep`` is False where less than ``min_visible`` of
    the box area remains or the clipped height/width is below ``min_size`` pixels.
    """
    boxes = tf.cast(tf.reshape(boxes, [-1, 4]), tf.float32)
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    lo = tf.zeros([4], tf.float32)
    hi = tf.stack([h, w, h, w])
    clipped = tf.minimum(tf.maximum(boxes, lo), hi)
    area0 = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    ch = clipped[:, 2] - clipped[:, 0]
    cw = clipped[:, 3] - clipped[:, 1]
    keep = (ch * cw >= min_visible * area0) & (ch >= min_size) & (cw >= min_size)
    return clipped, keep


def filter_boxes(keep: tf.Tensor, *tensors: tf.Tensor) -> tuple[tf.Tensor, ...]:
    """Drop the rows where ``keep`` ``[N]`` is False from every ``[N, ...]`` tensor."""
    return tuple(tf.boolean_mask(t, keep) for t in tensors)


RESAMPLING_METHODS = ("shift", "scale_translate", "warp")


def resample(image: tf.Tensor, matrix: tf.Tensor, method: str) -> tf.Tensor:
    """Resample ``image`` ``[H,W,C]`` under the forward ``matrix`` (same size, 0 fill).

    ``method``: ``warp`` (any affine), ``scale_translate`` (the matrix only scales and translates;
    faster) or ``shift`` (whole-pixel translation only; fastest).
    """
    shape = tf.shape(image)
    m = tf.cast(matrix, tf.float32)
    if method == "shift":
        return shift_image(image, tf.round(m[1, 2]), tf.round(m[0, 2]))
    if method == "scale_translate":
        return scale_translate(image, tf.stack([m[1, 1], m[0, 0]]), tf.stack([m[1, 2], m[0, 2]]), shape[:2])
    if method == "warp":
        return warp_affine(image, m, shape[:2])
    raise ValueError(f"unknown resampling method {method!r}; use one of {RESAMPLING_METHODS}")


def affine_transform(
    image: tf.Tensor, boxes: tf.Tensor, matrix: tf.Tensor, method="warp"
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Apply the forward ``matrix`` to ``image`` ``[H,W,C]`` (same output size, 0 fill) and ``boxes`` ``[N,4]``.

    ``method``: a name of :data:`RESAMPLING_METHODS` (see :func:`resample`) or a scalar int tensor
    indexing it (chosen in the graph).
    Returns ``(image [H,W,C], clipped boxes [N,4], keep [N] bool)``; boxes are not removed here.
    """
    if isinstance(method, str):
        out = resample(image, matrix, method)
    else:
        out = tf.switch_case(method, [lambda m=m: resample(image, matrix, m) for m in RESAMPLING_METHODS])
    shape = tf.shape(image)
    new_boxes, keep = clip_boxes(transform_boxes(boxes, matrix), shape[0], shape[1])
    return out, new_boxes, keep


# ---------------------------------------------------------------------------------------- standard ops
def random_horizontal_flip(image: tf.Tensor, boxes: tf.Tensor, prob: float, seed) -> tuple[tf.Tensor, tf.Tensor]:
    """Flip ``image`` ``[H,W,C]`` and ``boxes`` ``[N,4]`` left-right with probability ``prob``.

    A flipped box is ``[ymin, W - xmax, ymax, W - xmin]``.
    """
    _, width = _image_hw(image)

    def flip():
        ymin, xmin, ymax, xmax = tf.unstack(tf.reshape(boxes, [-1, 4]), axis=1)
        return tf.reverse(image, axis=[1]), tf.stack([ymin, width - xmax, ymax, width - xmin], axis=1)

    return tf.cond(_uniform(seed) < prob, flip, lambda: (image, tf.reshape(boxes, [-1, 4])))


def resize_crop(
    image: tf.Tensor, boxes: tf.Tensor, scale, offset_yx, out_size
) -> tuple[tf.Tensor, tf.Tensor]:
    """Scale by ``scale``, then take the ``out_size`` window at ``offset_yx`` (pixels of the scaled image).

    Parts of the window outside the scaled image are 0 (pad bottom/right when the scaled image is
    smaller). Returns ``(image [out_h,out_w,C], boxes [N,4])``, boxes scaled and shifted, not clipped.
    """
    scale = tf.cast(scale, tf.float32)
    offset = tf.cast(tf.reshape(offset_yx, [2]), tf.float32)
    out = scale_translate(image, tf.stack([scale, scale]), -offset, out_size)
    shift = tf.concat([offset, offset], axis=0)
    return out, tf.reshape(boxes, [-1, 4]) * scale - shift


def resize_then_crop(
    image: tf.Tensor, boxes: tf.Tensor, size_hw: tf.Tensor, offset_yx: tf.Tensor, out_size
) -> tuple[tf.Tensor, tf.Tensor]:
    """Resize to the integer ``size_hw`` (bilinear), take the ``out_size`` window at the integer
    ``offset_yx`` and pad it bottom/right with 0 where the resized image is smaller.

    Fast path for training (``tf.image.resize`` + slicing); the scale per axis is ``size / input
    size``, so the boxes ``[N,4]`` are scaled per axis and stay exact. Returns ``(image [out_h,out_w,C],
    boxes [N,4])``, boxes not clipped.
    """
    size_hw = tf.cast(size_hw, tf.int32)
    offset = tf.cast(offset_yx, tf.int32)
    out_h, out_w = int(out_size[0]), int(out_size[1])
    resized = tf.image.resize(image, size_hw, method="bilinear")
    window = resized[offset[0]:offset[0] + out_h, offset[1]:offset[1] + out_w]
    win = tf.shape(window)
    window = tf.pad(window, [[0, out_h - win[0]], [0, out_w - win[1]], [0, 0]])
    scale_yx = tf.cast(size_hw, tf.float32) / tf.cast(tf.shape(image)[:2], tf.float32)
    off = tf.cast(offset, tf.float32)
    boxes = tf.reshape(boxes, [-1, 4]) * tf.concat([scale_yx, scale_yx], 0) - tf.concat([off, off], 0)
    return tf.ensure_shape(window, [out_h, out_w, image.shape[-1]]), boxes


def letterbox(
    image: tf.Tensor, boxes: tf.Tensor, out_size, exact: bool = True
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Aspect-preserving resize so ``image`` fits ``out_size`` (H, W), padded bottom/right with 0.

    ``exact``: resample at exactly ``scale`` on both axes (:func:`scale_translate`; for evaluation,
    where predictions are mapped back by dividing by ``scale``). Otherwise use the ~5x faster
    integer-size resize of :func:`resize_then_crop` (each axis within 0.5 px of ``scale``; boxes use
    the exact per-axis scales).
    Returns ``(image [out_h,out_w,C], boxes [N,4] scaled and clipped, scale)`` with ``scale`` float32
    = output px per input px.
    """
    height, width = _image_hw(image)
    scale = tf.minimum(float(out_size[0]) / height, float(out_size[1]) / width)
    if exact:
        out, new_boxes = resize_crop(image, boxes, scale, tf.zeros([2]), out_size)
    else:
        size_hw = tf.minimum(tf.maximum(tf.round(tf.stack([height, width]) * scale), 1.0),
                             tf.constant([float(out_size[0]), float(out_size[1])]))
        out, new_boxes = resize_then_crop(image, boxes, size_hw, tf.zeros([2], tf.int32), out_size)
    new_boxes, _ = clip_boxes(new_boxes, out_size[0], out_size[1], min_visible=0.0, min_size=0.0)
    return out, new_boxes, scale


def scale_jitter_crop(
    image: tf.Tensor,
    boxes: tf.Tensor,
    classes: tf.Tensor,
    weights: tf.Tensor,
    out_size: Sequence[int],
    scale_range: Sequence[float],
    seed,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Random scale, then random crop (or pad bottom/right with 0) to ``out_size``; box-aware.

    The scale is ``s = min(out_h / H, out_w / W) * u`` with ``u ~ U(scale_range)`` (``u = 1`` is the
    letterbox). The image is resized to the integer size ``round(s * (H, W))`` (so each axis' exact
    scale differs from ``s`` by < 0.5 px over the image; boxes use the exact per-axis scales). Where
    the resized image is larger than ``out_size`` the window's integer offset is uniform over the
    valid range. Boxes are scaled, shifted and clipped; boxes with < 25 % of their area left or < 2 px
    high/wide are dropped together with their ``classes``/``weights``.

    Args:
      image ``[H,W,C]``; boxes ``[N,4]`` px; classes ``[N]``; weights ``[N]``; out_size ``(h, w)``;
      scale_range ``(lo, hi)``; seed ``[2]``.
    Returns:
      ``(image [h,w,C], boxes [K,4], classes [K], weights [K], scale)``; ``scale`` float32 = output
      px per input px.
    """
    height, width = _image_hw(image)
    out_h, out_w = float(out_size[0]), float(out_size[1])
    jitter = _uniform(sub_seed(seed, 0), float(scale_range[0]), float(scale_range[1]))
    scale = tf.minimum(out_h / height, out_w / width) * jitter
    size_hw = tf.maximum(tf.round(tf.stack([height, width]) * scale), 1.0)
    room = tf.maximum(size_hw - tf.constant([out_h, out_w]), 0.0)
    frac = tf.random.stateless_uniform([2], sub_seed(seed, 1), dtype=tf.float32)
    offset = tf.minimum(tf.floor(frac * (room + 1.0)), room)
    out, new_boxes = resize_then_crop(image, boxes, size_hw, offset, out_size)
    new_boxes, keep = clip_boxes(new_boxes, out_h, out_w)
    new_boxes, classes, weights = filter_boxes(keep, new_boxes, classes, weights)
    return out, new_boxes, classes, weights, scale


# ---------------------------------------------------------------------------------------- colour ops
# Each colour op: (image [H,W,3] raw 0..255, magnitude, seed) -> image [H,W,3] in 0..255.
def _blend(base: tf.Tensor, image: tf.Tensor, factor) -> tf.Tensor:
    """``base + factor * (image - base)`` clipped to ``[0, 255]`` (PIL ImageEnhance semantics)."""
    return tf.clip_by_value(base + factor * (image - base), 0.0, 255.0)


def _enhance_factor(magnitude, seed) -> tf.Tensor:
    """``1 +- MAX_ENHANCE * magnitude`` with a random sign."""
    return 1.0 + _random_sign(seed) * MAX_ENHANCE * magnitude


def _grey(image: tf.Tensor) -> tf.Tensor:
    """Luma of an RGB image ``[H,W,3]`` (ITU-R 601), repeated to ``[H,W,3]``."""
    weights = tf.tile(tf.constant([[0.299], [0.587], [0.114]]), [1, 3])  # [3,3]: every output channel = luma
    return tf.reshape(tf.reshape(image, [-1, 3]) @ weights, tf.shape(image))


def brightness(image: tf.Tensor, magnitude, seed) -> tf.Tensor:
    """Scale intensities (blend with black)."""
    return _blend(tf.zeros_like(image), image, _enhance_factor(magnitude, seed))


def contrast(image: tf.Tensor, magnitude, seed) -> tf.Tensor:
    """Blend with the image's mean grey level."""
    return _blend(tf.reduce_mean(_grey(image)), image, _enhance_factor(magnitude, seed))


def saturation(image: tf.Tensor, magnitude, seed) -> tf.Tensor:
    """Blend with the grey-scale image."""
    return _blend(_grey(image), image, _enhance_factor(magnitude, seed))


def hue(image: tf.Tensor, magnitude, seed) -> tf.Tensor:
    """Rotate the hue by ``+- MAX_HUE * magnitude`` of the colour circle."""
    delta = _random_sign(seed) * MAX_HUE * magnitude
    return tf.clip_by_value(tf.image.adjust_hue(image / 255.0, delta) * 255.0, 0.0, 255.0)


def sharpness(image: tf.Tensor, magnitude, seed) -> tf.Tensor:
    """Blend with a smoothed copy (3x3 kernel ``[[1,1,1],[1,5,1],[1,1,1]] / 13``; factor > 1 sharpens)."""
    box_mean = tf.nn.avg_pool2d(image[tf.newaxis], ksize=3, strides=1, padding="SAME")[0]  # edges: valid pixels
    smooth = (9.0 * box_mean + 4.0 * image) / 13.0
    return _blend(smooth, image, _enhance_factor(magnitude, seed))


def posterize(image: tf.Tensor, magnitude, seed) -> tf.Tensor:
    """Keep ``8 - round(4 * magnitude)`` bits per channel."""
    del seed
    step = tf.pow(2.0, tf.round(MAX_POSTERIZE_BITS * tf.cast(magnitude, tf.float32)))
    return tf.floor(tf.clip_by_value(image, 0.0, 255.0) / step) * step


def solarize(image: tf.Tensor, magnitude, seed) -> tf.Tensor:
    """Invert values above ``256 * (1 - magnitude)``."""
    del seed
    threshold = 256.0 * (1.0 - tf.cast(magnitude, tf.float32))
    return tf.where(image >= threshold, 255.0 - image, image)


def _channel_min_max(image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Per-channel min and max ``[C]`` of ``image`` ``[H,W,C]`` (reduced over rows first, which is fast)."""
    shape = tf.shape(image)
    rows = tf.reshape(image, [shape[0], -1])
    lo = tf.reduce_min(tf.reshape(tf.reduce_min(rows, axis=0), [-1, shape[2]]), axis=0)
    hi = tf.reduce_max(tf.reshape(tf.reduce_max(rows, axis=0), [-1, shape[2]]), axis=0)
    return lo, hi


def autocontrast(image: tf.Tensor, magnitude, seed) -> tf.Tensor:
    """Stretch each channel's ``[min, max]`` to ``[0, 255]`` (constant channels unchanged)."""
    del magnitude, seed
    lo, hi = _channel_min_max(image)
    span = hi - lo
    gain = tf.where(span > 0.0, 255.0 / tf.maximum(span, 1e-3), 1.0)
    offset = tf.where(span > 0.0, -lo * gain, 0.0)
    return tf.clip_by_value(channel_affine(image, gain, offset), 0.0, 255.0)


def equalize(image: tf.Tensor, magnitude, seed) -> tf.Tensor:
    """Histogram-equalise each channel (256 bins, CDF mapping; constant channels unchanged)."""
    del magnitude, seed
    shape = tf.shape(image)
    channels = shape[2]
    values = tf.cast(tf.clip_by_value(tf.round(tf.reshape(image, [shape[0], -1])), 0.0, 255.0), tf.int32)
    index = values + tf.tile(256 * tf.range(channels), shape[1:2])  # [H, W*C]: one 256-bin block per channel
    hist = tf.reshape(tf.math.bincount(tf.reshape(index, [-1]), minlength=256 * channels,
                                       maxlength=256 * channels), [channels, 256])
    cdf = tf.cast(tf.cumsum(hist, axis=1), tf.float32)  # [C,256]
    total = cdf[:, -1:]
    cdf_min = tf.reduce_min(tf.where(hist > 0, cdf, total), axis=1, keepdims=True)
    denom = total - cdf_min
    lut = tf.round(tf.maximum(cdf - cdf_min, 0.0) / tf.maximum(denom, 1.0) * 255.0)
    lut = tf.where(denom > 0, lut, tf.cast(tf.range(256), tf.float32)[tf.newaxis])  # identity if constant
    return tf.reshape(tf.gather(tf.reshape(lut, [-1]), index), shape)


def cutout(image: tf.Tensor, magnitude, seed, fill=(128.0, 128.0, 128.0)) -> tf.Tensor:
    """Fill a random square of side ``MAX_CUTOUT * magnitude * min(H, W)`` with ``fill`` (boxes unchanged).

    The square's centre is uniform over the image (the square may be cut by the border).
    """
    shape = tf.shape(image)
    height, width = _image_hw(image)
    side = tf.round(MAX_CUTOUT * tf.cast(magnitude, tf.float32) * tf.minimum(height, width))
    cy = tf.floor(_uniform(sub_seed(seed, 0)) * height)
    cx = tf.floor(_uniform(sub_seed(seed, 1)) * width)
    y0 = tf.cast(tf.clip_by_value(cy - tf.floor(side / 2), 0.0, height), tf.int32)
    x0 = tf.cast(tf.clip_by_value(cx - tf.floor(side / 2), 0.0, width), tf.int32)
    y1 = tf.cast(tf.clip_by_value(cy - tf.floor(side / 2) + side, 0.0, height), tf.int32)
    x1 = tf.cast(tf.clip_by_value(cx - tf.floor(side / 2) + side, 0.0, width), tf.int32)
    window = image[y0:y1, x0:x1]
    fill_rgb = tf.cast(tf.reshape(fill, [-1]), image.dtype)
    delta = channel_affine(window, -tf.ones_like(fill_rgb), fill_rgb)  # fill - window, [h,w,C]
    return image + tf.pad(delta, [[y0, shape[0] - y1], [x0, shape[1] - x1], [0, 0]])


# ---------------------------------------------------------------------------------------- geometric ops
# Each geometric op: (image [H,W,C], magnitude, seed) -> forward [3,3] matrix (about the image centre).
def translate_x_matrix(image: tf.Tensor, magnitude, seed) -> tf.Tensor:
    """Shift right/left by ``MAX_TRANSLATE * magnitude * W`` pixels (rounded)."""
    _, width = _image_hw(image)
    dx = tf.round(_random_sign(seed) * MAX_TRANSLATE * magnitude * width)
    return affine_matrix(1.0, 0.0, dx, 0.0, 1.0, 0.0)


def translate_y_matrix(image: tf.Tensor, magnitude, seed) -> tf.Tensor:
    """Shift down/up by ``MAX_TRANSLATE * magnitude * H`` pixels (rounded)."""
    height, _ = _image_hw(image)
    dy = tf.round(_random_sign(seed) * MAX_TRANSLATE * magnitude * height)
    return affine_matrix(1.0, 0.0, 0.0, 0.0, 1.0, dy)


def shear_x_matrix(image: tf.Tensor, magnitude, seed) -> tf.Tensor:
    """``x' = x + k (y - cy)`` with ``k = +-MAX_SHEAR * magnitude``."""
    height, width = _image_hw(image)
    k = _random_sign(seed) * MAX_SHEAR * magnitude
    return _about_point(affine_matrix(1.0, k, 0.0, 0.0, 1.0, 0.0), width / 2, height / 2)


def shear_y_matrix(image: tf.Tensor, magnitude, seed) -> tf.Tensor:
    """``y' = y + k (x - cx)`` with ``k = +-MAX_SHEAR * magnitude``."""
    height, width = _image_hw(image)
    k = _random_sign(seed) * MAX_SHEAR * magnitude
    return _about_point(affine_matrix(1.0, 0.0, 0.0, k, 1.0, 0.0), width / 2, height / 2)


def rotate_matrix(image: tf.Tensor, magnitude, seed) -> tf.Tensor:
    """Rotate by ``+-MAX_ROTATE_DEG * magnitude`` degrees about the image centre."""
    height, width = _image_hw(image)
    angle = _random_sign(seed) * (MAX_ROTATE_DEG * math.pi / 180.0) * magnitude
    c, s = tf.cos(angle), tf.sin(angle)
    return _about_point(affine_matrix(c, -s, 0.0, s, c, 0.0), width / 2, height / 2)


def scale_matrix(image: tf.Tensor, magnitude, seed) -> tf.Tensor:
    """Zoom by ``(1 + MAX_ZOOM * magnitude) ** (+-1)`` about the image centre."""
    height, width = _image_hw(image)
    zoom = tf.pow(1.0 + MAX_ZOOM * tf.cast(magnitude, tf.float32), _random_sign(seed))
    return _about_point(affine_matrix(zoom, 0.0, 0.0, 0.0, zoom, 0.0), width / 2, height / 2)


COLOR_OPS: dict[str, Callable] = {
    "brightness": brightness,
    "contrast": contrast,
    "saturation": saturation,
    "hue": hue,
    "sharpness": sharpness,
    "posterize": posterize,
    "solarize": solarize,
    "equalize": equalize,
    "autocontrast": autocontrast,
}
# Resampling method of each geometric op (see resample).
GEOMETRIC_RESAMPLING = {"translate_x": "shift", "translate_y": "shift", "scale": "scale_translate",
                        "shear_x": "warp", "shear_y": "warp", "rotate": "warp"}
GEOMETRIC_OPS: dict[str, Callable] = {
    "translate_x": translate_x_matrix,
    "translate_y": translate_y_matrix,
    "shear_x": shear_x_matrix,
    "shear_y": shear_y_matrix,
    "rotate": rotate_matrix,
    "scale": scale_matrix,
}
STRONG_OPS: tuple[str, ...] = tuple(COLOR_OPS) + tuple(GEOMETRIC_OPS) + ("cutout",)


def _check_ops(ops: Sequence[str]) -> tuple[str, ...]:
    """Validate op names; raise ValueError naming an unknown one."""
    ops = tuple(ops)
    for name in ops:
        if name not in STRONG_OPS:
            raise ValueError(f"unknown strong augmentation op {name!r}; choose one of {list(STRONG_OPS)}")
    if not ops:
        raise ValueError("strong augmentation needs at least one op")
    return ops


def _colour_op(name: str, image: tf.Tensor, magnitude, seed, fill) -> tf.Tensor:
    """One colour op or cutout on a raw RGB image ``[H,W,3]``."""
    if name == "cutout":
        return cutout(image, magnitude, seed, fill)
    return COLOR_OPS[name](image, magnitude, seed)


def _geometric(image, boxes, matrix, method, fill) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Affine-transform a raw RGB image (uncovered pixels = ``fill``) and its boxes; see affine_transform."""
    fill_rgb = tf.cast(tf.reshape(fill, [-1]), tf.float32)
    ones = tf.ones_like(fill_rgb)
    out, new_boxes, keep = affine_transform(channel_affine(image, ones, -fill_rgb), boxes, matrix, method)
    return channel_affine(out, ones, fill_rgb), new_boxes, keep


def apply_strong_op(
    name: str, image: tf.Tensor, boxes: tf.Tensor, magnitude, seed, fill=(128.0, 128.0, 128.0)
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Apply the strong op ``name`` to a raw RGB ``image`` ``[H,W,3]`` (0..255) and ``boxes`` ``[N,4]``.

    Geometric ops fill uncovered pixels with ``fill`` (RGB). Returns ``(image, boxes, keep [N] bool)``;
    colour ops and cutout return the boxes unchanged and ``keep`` all True.
    """
    _check_ops([name])
    boxes = tf.cast(tf.reshape(boxes, [-1, 4]), tf.float32)
    magnitude = tf.cast(magnitude, tf.float32)
    if name in GEOMETRIC_OPS:
        matrix = GEOMETRIC_OPS[name](image, magnitude, seed)
        return _geometric(image, boxes, matrix, GEOMETRIC_RESAMPLING[name], fill)
    return _colour_op(name, image, magnitude, seed, fill), boxes, tf.ones(tf.shape(boxes)[:1], tf.bool)


def _one_random_op(image, boxes, ops, magnitude, seed, fill):
    """Apply one op drawn uniformly from ``ops``; geometric ops share one resampling/box path.

    Returns ``(image, boxes [N,4], keep [N])``.
    """
    colour = [n for n in ops if n not in GEOMETRIC_OPS]
    geo = [n for n in ops if n in GEOMETRIC_OPS]
    choice = tf.random.stateless_uniform([], sub_seed(seed, 0), 0, len(ops), dtype=tf.int32)
    op_seed = sub_seed(seed, 1)

    def colour_branch():
        out = tf.switch_case(choice, [lambda n=n: _colour_op(n, image, magnitude, op_seed, fill) for n in colour])
        return out, boxes, tf.ones(tf.shape(boxes)[:1], tf.bool)

    def geo_branch():
        index = choice - len(colour)
        matrix = tf.switch_case(index, [lambda n=n: GEOMETRIC_OPS[n](image, magnitude, op_seed) for n in geo])
        methods = [RESAMPLING_METHODS.index(GEOMETRIC_RESAMPLING[n]) for n in geo]
        return _geometric(image, boxes, matrix, tf.gather(tf.constant(methods, tf.int32), index), fill)

    if not geo:
        return colour_branch()
    if not colour:
        return geo_branch()
    return tf.cond(choice < len(colour), colour_branch, geo_branch)


def strong_augment(
    image: tf.Tensor,
    boxes: tf.Tensor,
    classes: tf.Tensor,
    weights: tf.Tensor,
    num_ops: int,
    magnitude: float,
    seed,
    fill=(128.0, 128.0, 128.0),
    ops: Sequence[str] = STRONG_OPS,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """RandAugment-style strong augmentation (STAC): ``num_ops`` ops drawn uniformly from ``ops``.

    Each op is applied at ``magnitude`` (0..1, random sign where signed). Colour ops and cutout keep
    the boxes; geometric ops transform them and drop boxes pushed (mostly) out of the image together
    with their classes/weights.

    Args:
      image ``[H,W,3]`` raw RGB float32 0..255; boxes ``[N,4]`` px; classes ``[N]``; weights ``[N]``;
      seed ``[2]``; fill: RGB value for uncovered pixels.
    Returns:
      ``(image [H,W,3], boxes [K,4], classes [K], weights [K])``.
    """
    ops = _check_ops(ops)
    magnitude = tf.cast(magnitude, tf.float32)
    boxes = tf.cast(tf.reshape(boxes, [-1, 4]), tf.float32)
    for i in range(int(num_ops)):
        image, new_boxes, keep = _one_random_op(image, boxes, ops, magnitude, sub_seed(seed, i), fill)
        image = tf.ensure_shape(image, [None, None, 3])
        boxes, classes, weights = filter_boxes(keep, new_boxes, classes, weights)
    return image, boxes, classes, weights
