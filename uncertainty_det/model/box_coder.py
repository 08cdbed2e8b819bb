"""Faster R-CNN box coder without scale factors (TensorFlow, float32).

Boxes are ``[ymin, xmin, ymax, xmax]`` and anchors likewise, both in model-input pixels. Codes are
``[ty, tx, th, tw]`` (dimensionless)::

    ty = (yc - yc_a) / h_a        tx = (xc - xc_a) / w_a
    th = log(h / h_a)             tw = log(w / w_a)

Heights and widths are floored at :data:`EPS` pixels before division and ``log`` so degenerate (zero-size)
boxes give large-negative but finite codes.
"""
from __future__ import annotations

import tensorflow as tf

__all__ = ["EPS", "encode", "decode"]

EPS = 1e-8
"""Floor (pixels) for box and anchor heights/widths in :func:`encode`."""


def _f32(x) -> tf.Tensor:
    return tf.cast(tf.convert_to_tensor(x), tf.float32)


def _centre_size(boxes: tf.Tensor):
    ymin, xmin, ymax, xmax = tf.unstack(boxes, 4, axis=-1)
    h = ymax - ymin
    w = xmax - xmin
    return ymin + 0.5 * h, xmin + 0.5 * w, h, w


def encode(boxes, anchors) -> tf.Tensor:
    """Encode boxes relative to anchors.

    Args:
      boxes: ``[..., 4]`` ``[ymin, xmin, ymax, xmax]`` pixels.
      anchors: ``[..., 4]`` same layout, broadcastable against ``boxes`` (e.g. ``[N,4]`` vs ``[B,N,4]``).

    Returns:
      ``[..., 4]`` float32 codes ``[ty, tx, th, tw]``.
    """
    boxes, anchors = _f32(boxes), _f32(anchors)
    yc, xc, h, w = _centre_size(boxes)
    yca, xca, ha, wa = _centre_size(anchors)
    h, w = tf.maximum(h, EPS), tf.maximum(w, EPS)
    ha, wa = tf.maximum(ha, EPS), tf.maximum(wa, EPS)
    ty = (yc - yca) / ha
    tx = (xc - xca) / wa
    th = tf.math.log(h / ha)
    tw = tf.math.log(w / wa)
    return tf.stack([ty, tx, th, tw], axis=-1)


def decode(codes, anchors) -> tf.Tensor:
    """Inverse of :func:`encode` (plain decoding: ``h = h_a * exp(th)``, no uncertainty correction).

    Args:
      codes: ``[..., 4]`` ``[ty, tx, th, tw]``.
      anchors: ``[..., 4]`` ``[ymin, xmin, ymax, xmax]`` pixels, broadcastable against ``codes``.

    Returns:
      ``[..., 4]`` float32 boxes ``[ymin, xmin, ymax, xmax]`` in pixels. ``th``/``tw`` are not clipped, so
      very large codes overflow to ``inf`` sizes.
    """
    codes, anchors = _f32(codes), _f32(anchors)
    ty, tx, th, tw = tf.unstack(codes, 4, axis=-1)
    yca, xca, ha, wa = _centre_size(anchors)
    yc = ty * ha + yca
    xc = tx * wa + xca
    h = tf.exp(th) * ha
    w = tf.exp(tw) * wa
    return tf.stack([yc - 0.5 * h, xc - 0.5 * w, yc + 0.5 * h, xc + 0.5 * w], axis=-1)
