"""Non-maximum suppression (hard or Gaussian soft-NMS), batched, padded, graph-compatible.

Uncertainty does not influence NMS: the caller gathers every per-box field (σ, logits, MC std) with the
returned indices (reference §2.4).

Soft-NMS is Gaussian (Bodla et al. 2017): every remaining box's score is multiplied by
``exp(-iou**2 / soft_sigma)`` by each higher-scoring selected box, and the list is re-sorted. It runs
through ``tf.image.non_max_suppression_with_scores``, whose ``soft_nms_sigma`` enters as
``exp(-0.5 * iou**2 / soft_nms_sigma)``; we therefore pass ``soft_nms_sigma = soft_sigma / 2`` (the
reference does the same: its ``sigma 0.5`` becomes TF's ``0.25``). In soft mode TF ignores
``iou_threshold`` (every overlap decays the score; boxes drop out once below ``score_threshold``).
"""
from __future__ import annotations

import tensorflow as tf

NMS_METHODS = ("soft", "hard")
_ALIASES = {"gaussian": "soft", "soft_nms": "soft", "soft-nms": "soft", "hard_nms": "hard", "greedy": "hard"}


def nms_method_name(method: str) -> str:
    """Canonical method name (``soft`` or ``hard``); ``gaussian`` is accepted for ``soft`` (reference name)."""
    key = str(method).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in NMS_METHODS:
        raise ValueError(f"unknown NMS method {method!r}; use one of {', '.join(NMS_METHODS)} (or 'gaussian' for soft)")
    return key


def offset_boxes_by_class(boxes: tf.Tensor, classes: tf.Tensor) -> tf.Tensor:
    """Shift each image's boxes by ``class * extent`` so boxes of different classes never overlap.

    boxes: ``[B,K,4]`` ``[ymin, xmin, ymax, xmax]`` pixels; classes: ``[B,K]`` integer ids. The boxes are
    first moved so that the image's minimum coordinate is 0 and then shifted along both axes by
    ``class * (max - min + 1)``; IoU within a class is unchanged (up to float32 rounding of the shifted
    coordinates), across classes it is 0. Returns ``[B,K,4]`` float32.
    """
    boxes = tf.cast(boxes, tf.float32)
    lo = tf.reduce_min(boxes, axis=[1, 2], keepdims=True)          # [B,1,1]
    hi = tf.reduce_max(boxes, axis=[1, 2], keepdims=True)
    extent = hi - lo + 1.0
    shift = tf.cast(classes, tf.float32)[..., None] * extent       # [B,K,1]
    return boxes - lo + shift


def nms(
    boxes,
    scores,
    classes,
    method: str = "soft",
    iou_threshold: float = 0.5,
    score_threshold: float = 0.001,
    soft_sigma: float = 0.5,
    class_agnostic: bool = True,
    max_detections: int = 100,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Batched NMS.

    Args:
        boxes: ``[B,K,4]`` ``[ymin, xmin, ymax, xmax]`` (pixels; any consistent unit).
        scores: ``[B,K]`` scores in [0, 1].
        classes: ``[B,K]`` int class ids (used only when ``class_agnostic`` is false).
        method: ``"soft"`` (Gaussian soft-NMS, alias ``"gaussian"``) or ``"hard"``.
        iou_threshold: hard NMS suppresses boxes with IoU above this (unused by TF's soft-NMS).
        score_threshold: boxes whose (decayed) score is below this are dropped.
        soft_sigma: σ of the Gaussian penalty ``exp(-iou**2 / soft_sigma)`` (TF gets ``soft_sigma / 2``).
        class_agnostic: one NMS over all boxes (reference default); otherwise per class, by offsetting
            the boxes per class (:func:`offset_boxes_by_class`) so classes never suppress each other.
        max_detections: ``D``, the padded output length.

    Returns:
        ``(indices [B,D] int32, scores [B,D] float32, num_detections [B] int32)``: indices into ``K`` of the
        kept boxes, sorted by (soft-NMS-decayed) score, descending; slots ``>= num_detections`` are padding
        with index 0 and score 0.
    """
    method = nms_method_name(method)
    max_detections = int(max_detections)
    if max_detections < 1:
        raise ValueError(f"max_detections must be >= 1, got {max_detections}")
    boxes = tf.cast(tf.convert_to_tensor(boxes), tf.float32)
    scores = tf.cast(tf.convert_to_tensor(scores), tf.float32)
    if not class_agnostic:
        boxes = offset_boxes_by_class(boxes, tf.convert_to_tensor(classes))
    tf_sigma = 0.5 * float(soft_sigma) if method == "soft" else 0.0

    def one_image(args):
        b, s = args
        idx, kept = tf.image.non_max_suppression_with_scores(
            b, s, max_output_size=max_detections, iou_threshold=float(iou_threshold),
            score_threshold=float(score_threshold), soft_nms_sigma=tf_sigma)
        n = tf.shape(idx)[0]
        pad = [[0, max_detections - n]]
        idx = tf.ensure_shape(tf.pad(tf.cast(idx, tf.int32), pad), [max_detections])
        kept = tf.ensure_shape(tf.pad(kept, pad), [max_detections])
        return idx, kept, n

    indices, kept_scores, num = tf.map_fn(
        one_image, (boxes, scores),
        fn_output_signature=(
            tf.TensorSpec([max_detections], tf.int32),
            tf.TensorSpec([max_detections], tf.float32),
            tf.TensorSpec([], tf.int32),
        ),
    )
    return indices, kept_scores, num
