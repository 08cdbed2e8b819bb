"""Box-aware image augmentation in TensorFlow (graph-compatible, applied per image inside ``Dataset.map``).

Conventions used by every function here:

* ``image``: ``[H, W, C]`` float32. The colour ops expect raw RGB values in ``[0, 255]``; the geometric
  ops work on any values (the pipeline feeds them mean-centred images so that padding is the mean colour).
* ``boxes``: ``[N, 4]`` float32 ``[ymin, xmin, ymax, xmax]`` in pixels of the *current* image, in
  continuous coordinates: pixel ``(row i, col j)`` covers ``[i, i+1) x [j, j+1)``, so an object filling
  rows ``y0..y1-1`` has ``ymin = y0, ymax = y1``.
* ``classes`` ``[N]`` int32 and ``weights`` ``[N]`` float32 travel with the boxes; ops that drop boxes drop
  the matching classes and weights.
* ``seed``: a stateless seed, shape ``[2]`` int32/int64 (e.g. ``(cfg.seed, element_index)``); the same seed
  gives the same augmentation. Sub-seeds are derived with ``stateless_fold_in``.

Geometric transforms are forward affine matrices ``A`` (3x3, acting on ``(x, y, 1)`` in continuous pixel
coordinates, input -> output). The image is resampled with ``ImageProjectiveTransformV3`` (bilinear) using
the inverse map; boxes are mapped by transforming their 4 corners with ``A`` and taking the enclosing
box, clipped to the output image. A box is dropped when less than ``min_visible`` (25 %) of its
transformed area stays inside the image or when its clipped height or width is below ``min_size``
(2 px).
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


def affine_transform(
    image: tf.Tensor, boxes: tf.Tensor, matrix: tf.Tensor, fill_value: float = 0.0
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Apply the forward ``matrix`` to ``image`` ``[H,W,C]`` (same output size) and ``boxes`` ``[N,4]``.

    Returns ``(image [H,W,C], clipped boxes [N,4], keep [N] bool)``; boxes are not removed here.
    """
    shape = tf.shape(image)
    out = warp_affine(image, matrix, shape[:2], fill_value=fill_value)
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
    smaller). Image edges are extended inside the scaled image (like ``tf.image.resize``).
    Returns ``(image [out_h,out_w,C], boxes [N,4])``, boxes scaled and shifted but not clipped.
    """
    scale = tf.cast(scale, tf.float32)
    oy, ox = tf.unstack(tf.cast(tf.reshape(offset_yx, [2]), tf.float32))
    matrix = affine_matrix(scale, 0.0, -ox, 0.0, scale, -oy)
    out_h, out_w = int(out_size[0]), int(out_size[1])
    warped = warp_affine(image, matrix, (out_h, out_w), fill_mode="NEAREST")
    height, width = _image_hw(image)
    rows = tf.range(out_h, dtype=tf.float32) + 0.5 + oy  # pixel centres in scaled-image coordinates
    cols = tf.range(out_w, dtype=tf.float32) + 0.5 + ox
    inside = (rows < height * scale)[:, tf.newaxis, tf.newaxis] & (cols < width * scale)[tf.newaxis, :, tf.newaxis]
    warped = tf.where(inside, warped, tf.zeros_like(warped))
    return warped, transform_boxes(boxes, matrix)


def letterbox(image: tf.Tensor, boxes: tf.Tensor, out_size) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Aspect-preserving resize so ``image`` fits ``out_size`` (H, W), padded bottom/right with 0.

    Returns ``(image [out_h,out_w,C], boxes [N,4] scaled and clipped, scale)`` with ``scale`` float32
    = output px per input px.
    """
    height, width = _image_hw(image)
    scale = tf.minimum(float(out_size[0]) / height, float(out_size[1]) / width)
    out, new_boxes = resize_crop(image, boxes, scale, tf.zeros([2]), out_size)
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

    The scale is ``min(out_h / H, out_w / W) * u`` with ``u ~ U(scale_range)`` (``u = 1`` is the
    letterbox). Where the scaled image is larger than ``out_size`` the window's integer offset is
    uniform over the valid range. Boxes are scaled, shifted and clipped; boxes with < 25 % of their
    area left or < 2 px high/wide are dropped together with their ``classes``/``weights``.

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
    room = tf.maximum(tf.stack([height * scale - out_h, width * scale - out_w]), 0.0)
    frac = tf.random.stateless_uniform([2], sub_seed(seed, 1), dtype=tf.float32)
    offset = tf.floor(frac * room)
    out, new_boxes = resize_crop(image, boxes, scale, offset, out_size)
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
    """Luma ``[H,W,1]`` of an RGB image (ITU-R 601)."""
    return tf.reduce_sum(image * tf.constant([0.299, 0.587, 0.114]), axis=-1, keepdims=True)


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
    """Blend with a 3x3-smoothed copy (factor > 1 sharpens, < 1 blurs)."""
    kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    kernel = tf.tile(kernel[:, :, tf.newaxis, tf.newaxis], [1, 1, 3, 1])
    padded = tf.pad(image, [[1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")[tf.newaxis]
    smooth = tf.nn.depthwise_conv2d(padded, kernel, strides=[1, 1, 1, 1], padding="VALID")[0]
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


def autocontrast(image: tf.Tensor, magnitude, seed) -> tf.Tensor:
    """Stretch each channel's ``[min, max]`` to ``[0, 255]`` (constant channels unchanged)."""
    del magnitude, seed
    lo = tf.reduce_min(image, axis=[0, 1], keepdims=True)
    hi = tf.reduce_max(image, axis=[0, 1], keepdims=True)
    span = hi - lo
    stretched = (image - lo) * (255.0 / tf.maximum(span, 1e-3))
    return tf.clip_by_value(tf.where(span > 0.0, stretched, image), 0.0, 255.0)


def equalize(image: tf.Tensor, magnitude, seed) -> tf.Tensor:
    """Histogram-equalise each channel (256 bins, CDF mapping; constant channels unchanged)."""
    del magnitude, seed
    channels = tf.shape(image)[-1]
    values = tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.int32)  # [H,W,C]
    index = values + 256 * tf.range(channels)  # one 256-bin block per channel
    hist = tf.reshape(tf.math.bincount(tf.reshape(index, [-1]), minlength=256 * channels, maxlength=256 * channels),
                      [channels, 256])
    cdf = tf.cast(tf.cumsum(hist, axis=1), tf.float32)  # [C,256]
    total = cdf[:, -1:]
    cdf_min = tf.reduce_min(tf.where(hist > 0, cdf, total), axis=1, keepdims=True)
    denom = total - cdf_min
    lut = tf.round(tf.maximum(cdf - cdf_min, 0.0) / tf.maximum(denom, 1.0) * 255.0)
    lut = tf.where(denom > 0, lut, tf.cast(tf.range(256), tf.float32)[tf.newaxis])  # identity if constant
    return tf.gather(tf.reshape(lut, [-1]), index)


def cutout(image: tf.Tensor, magnitude, seed, fill=(128.0, 128.0, 128.0)) -> tf.Tensor:
    """Fill a random square of side ``MAX_CUTOUT * magnitude * min(H, W)`` with ``fill`` (boxes unchanged)."""
    height, width = _image_hw(image)
    half = 0.5 * MAX_CUTOUT * tf.cast(magnitude, tf.float32) * tf.minimum(height, width)
    cy = _uniform(sub_seed(seed, 0)) * height
    cx = _uniform(sub_seed(seed, 1)) * width
    rows = tf.range(height) + 0.5
    cols = tf.range(width) + 0.5
    inside = (tf.abs(rows - cy) < half)[:, tf.newaxis, tf.newaxis] & (tf.abs(cols - cx) < half)[tf.newaxis, :, tf.newaxis]
    return tf.where(inside, tf.cast(tf.reshape(fill, [1, 1, -1]), image.dtype), image)


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
GEOMETRIC_OPS: dict[str, Callable] = {
    "translate_x": translate_x_matrix,
    "translate_y": translate_y_matrix,
    "shear_x": shear_x_matrix,
    "shear_y": shear_y_matrix,
    "rotate": rotate_matrix,
    "scale": scale_matrix,
}
STRONG_OPS: tuple[str, ...] = tuple(COLOR_OPS) + tuple(GEOMETRIC_OPS) + ("cutout",)


def apply_strong_op(
    name: str, image: tf.Tensor, boxes: tf.Tensor, magnitude, seed, fill=(128.0, 128.0, 128.0)
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Apply the strong op ``name`` to a raw RGB ``image`` ``[H,W,3]`` (0..255) and ``boxes`` ``[N,4]``.

    Geometric ops fill uncovered pixels with ``fill`` (RGB). Returns ``(image, boxes, keep [N] bool)``;
    colour ops and cutout return the boxes unchanged and ``keep`` all True.
    """
    boxes = tf.cast(tf.reshape(boxes, [-1, 4]), tf.float32)
    magnitude = tf.cast(magnitude, tf.float32)
    if name in GEOMETRIC_OPS:
        fill_rgb = tf.cast(tf.reshape(fill, [1, 1, -1]), tf.float32)
        matrix = GEOMETRIC_OPS[name](image, magnitude, seed)
        out, new_boxes, keep = affine_transform(image - fill_rgb, boxes, matrix)
        return out + fill_rgb, new_boxes, keep
    all_kept = tf.ones(tf.shape(boxes)[:1], tf.bool)
    if name == "cutout":
        return cutout(image, magnitude, seed, fill), boxes, all_kept
    if name in COLOR_OPS:
        return COLOR_OPS[name](image, magnitude, seed), boxes, all_kept
    raise ValueError(f"unknown strong augmentation op {name!r}; choose one of {list(STRONG_OPS)}")


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
    ops = tuple(ops)
    boxes = tf.cast(tf.reshape(boxes, [-1, 4]), tf.float32)
    for i in range(int(num_ops)):
        op_seed = sub_seed(seed, i)
        choice = tf.random.stateless_uniform([], sub_seed(op_seed, 0), 0, len(ops), dtype=tf.int32)
        branches = [
            (lambda name=name, img=image, bxs=boxes: apply_strong_op(name, img, bxs, magnitude, sub_seed(op_seed, 1), fill))
            for name in ops
        ]
        image, new_boxes, keep = tf.switch_case(choice, branches)
        image = tf.ensure_shape(image, [None, None, 3])
        boxes, classes, weights = filter_boxes(keep, new_boxes, classes, weights)
    return image, boxes, classes, weights
