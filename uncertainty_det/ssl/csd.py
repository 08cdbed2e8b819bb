"""CSD: consistency-based semi-supervised detection with horizontal-flip consistency (reference §5.9).

Every training image is seen twice, as is and mirrored left-right. The head outputs of the mirrored view are
mirrored back along the width axis, so that location ``(i, j)`` and anchor ``a`` of both views describe the
same image region, and the two predictions are pulled together. No labels are needed, so the loss applies to
labeled and unlabeled images alike.

Why mirroring the maps lines up the anchors: with an input width ``W`` that is a multiple of the largest
stride ``s_max = 2**max_level``, level ``l`` has ``w_l = W / s`` columns with centres ``(j + 0.5) s``, and
``W - (j + 0.5) s = (w_l - 1 - j + 0.5) s``: the mirror image of column ``j`` is column ``w_l - 1 - j``.
All anchors of a location share its centre and are symmetric about it, so anchor ``a`` maps to anchor ``a``.
Under mirroring a box's codes change as ``ty -> ty``, ``tx -> -tx``, ``th -> th``, ``tw -> tw``.

Head-map layout (see :mod:`uncertainty_det.model.heads`), per level ``[B, h, w, channels]``:

* class maps: ``A * C`` channels, anchor-major (channel ``a * C + c``), raw logits;
* box maps: ``A * 4`` channels ``[ty, tx, th, tw]`` per anchor (channel ``4a + k``), or ``A * 8`` with loss
  attenuation, where only the first ``4A`` (the codes) are used here.

All functions are plain TensorFlow ops (float32 inside), usable inside a ``tf.function`` train step.
"""
from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from uncertainty_det.errors import UserError

__all__ = [
    "CSDConfigError",
    "background_mask",
    "csd_consistency_loss",
    "csd_ramp_weight",
    "flip_maps",
]

_DIVERGENCES = ("jsd", "kl")
_SCOPES = ("image", "batch")
_CLASS_REDUCTIONS = ("anchor", "image")


class CSDConfigError(UserError, ValueError):
    """Bad CSD loss input or setting (a ``ValueError`` and a :class:`UserError`)."""


# ----------------------------------------------------------------------------------------------- checks


def _positive_int(value, name: str) -> int:
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise CSDConfigError(f"{name} must be a positive integer, got {value!r}") from None
    if out != value or out < 1:
        raise CSDConfigError(f"{name} must be a positive integer, got {value!r}")
    return out


def _as_level_list(maps, name: str) -> list:
    if isinstance(maps, (tf.Tensor, tf.Variable)) or not isinstance(maps, Sequence) or isinstance(maps, str):
        raise CSDConfigError(
            f"{name} must be a list of per-level head maps [B, h, w, channels], got {type(maps).__name__}; "
            f"pass the list the head returns (one tensor per pyramid level)"
        )
    if len(maps) == 0:
        raise CSDConfigError(f"{name} is empty; pass one head map per pyramid level")
    out = []
    for i, m in enumerate(maps):
        t = m if isinstance(m, (tf.Tensor, tf.Variable)) else tf.convert_to_tensor(m)
        if t.shape.rank is not None and t.shape.rank != 4:
            raise CSDConfigError(
                f"{name}[{i}] must be a 4-D map [B, h, w, channels], got shape {t.shape}"
            )
        out.append(t)
    return out


def check_csd_options(divergence: str = "jsd", background_threshold: float = 0.4,
                      background_scope: str = "image", class_reduction: str = "anchor") -> float:
    """Validate the CSD loss settings (one message naming the setting and its choices); returns the threshold
    as a float. Called by the loss, the trainer and ``udet-csd`` before any data is loaded."""
    if class_reduction not in _CLASS_REDUCTIONS:
        raise CSDConfigError(f"class reduction must be one of {_CLASS_REDUCTIONS} (anchor: mean over the kept "
                             f"anchors, the CSD paper's code; image: sum over them per image, the reference), "
                             f"got {class_reduction!r}")
    if divergence not in _DIVERGENCES:
        raise CSDConfigError(f"divergence must be one of {_DIVERGENCES} (jsd: symmetric, kl: the reference), "
                             f"got {divergence!r}")
    if background_scope not in _SCOPES:
        raise CSDConfigError(f"background scope must be one of {_SCOPES}, got {background_scope!r}")
    try:
        threshold = float(background_threshold)
    except (TypeError, ValueError):
        raise CSDConfigError(f"background threshold must be a number in [0, 1], got {background_threshold!r}") from None
    if not 0.0 <= threshold <= 1.0:
        raise CSDConfigError(f"background threshold must be in [0, 1] (0.4 in the reference), got {background_threshold!r}")
    return threshold


def _check_channels(maps: list, allowed: tuple[int, ...], name: str, what: str) -> None:
    for i, m in enumerate(maps):
        c = m.shape[-1]
        if c is not None and c not in allowed:
            raise CSDConfigError(
                f"{name}[{i}] has {c} channels, expected {' or '.join(str(a) for a in allowed)} ({what}); "
                f"check num_anchors / num_classes against the model config"
            )


def _check_same_shapes(a: list, b: list, name_a: str, name_b: str) -> None:
    if len(a) != len(b):
        raise CSDConfigError(
            f"{name_a} has {len(a)} levels but {name_b} has {len(b)}; pass the maps of the same pyramid levels"
        )
    for i, (x, y) in enumerate(zip(a, b)):
        if not x.shape[:3].is_compatible_with(y.shape[:3]):
            raise CSDConfigError(
                f"{name_a}[{i}] has shape {x.shape} but {name_b}[{i}] has {y.shape}; both views must come from "
                f"the same batch at the same input size"
            )


def _tensor_like(value) -> bool:
    """A TF tensor or variable, or a Keras variable (``optimizer.iterations``), symbolic ones included."""
    return tf.is_tensor(value) or isinstance(value, (tf.Variable, keras.Variable))


def _is_int_at_least(value, low: int) -> bool:
    if isinstance(value, bool):
        return False
    try:
        return int(value) == value and value >= low
    except (TypeError, ValueError, OverflowError):
        return False


def _f32(x) -> tf.Tensor:
    return tf.cast(x, tf.float32)


def _per_anchor(m: tf.Tensor, num_anchors: int, k: int) -> tf.Tensor:
    """``[B, h, w, A*k]`` (channel ``a*k + j``) -> ``[B, h, w, A, k]``."""
    shape = tf.shape(m)
    return tf.reshape(m, tf.stack([shape[0], shape[1], shape[2], num_anchors, k]))


# ----------------------------------------------------------------------------------------------- public API


def flip_maps(maps: Sequence[tf.Tensor]) -> list[tf.Tensor]:
    """Mirror per-level maps along the width axis.

    Args:
      maps: list of ``[B, h, w, k]`` tensors (any dtype).

    Returns:
      list of ``[B, h, w, k]`` tensors, ``out[l][:, :, j] = maps[l][:, :, w - 1 - j]``. Channels are untouched
      (in particular the ``tx`` codes keep their sign; :func:`csd_consistency_loss` handles the sign).
    """
    return [tf.reverse(m, axis=[2]) for m in _as_level_list(maps, "maps")]


def background_mask(
    class_logits_levels: Sequence[tf.Tensor],
    num_anchors: int,
    num_classes: int,
    threshold: float = 0.4,
    scope: str = "image",
) -> list[tf.Tensor]:
    """Background elimination: which anchors look like objects.

    Per anchor ``m = sigmoid(max_c logit_c)``. An anchor is kept when ``m > threshold * max(m)``, where the
    max runs over one pyramid level and

    * ``scope="image"`` (default): one image. Each image sets its own bar, so a single very confident image
      cannot mask out every anchor of the other images in the batch (reference defect §8.14);
    * ``scope="batch"``: the whole batch, as in the reference.

    Args:
      class_logits_levels: list of ``[B, h, w, A*C]`` raw class logits (channel ``a*C + c``).
      num_anchors: ``A``, anchors per location.
      num_classes: ``C``.
      threshold: fraction of the max confidence an anchor needs (``>= 0``; 1 or more keeps nothing).
      scope: ``"image"`` or ``"batch"``.

    Returns:
      list of ``[B, h, w, A]`` float32 masks with values 0/1 (no gradient).

    Raises:
      CSDConfigError: wrong channel count, bad ``threshold`` or ``scope``.
    """
    num_anchors = _positive_int(num_anchors, "num_anchors")
    num_classes = _positive_int(num_classes, "num_classes")
    levels = _as_level_list(class_logits_levels, "class_logits_levels")
    _check_channels(levels, (num_anchors * num_classes,), "class_logits_levels", "num_anchors * num_classes")
    try:
        threshold = float(threshold)
    except (TypeError, ValueError):
        raise CSDConfigError(f"background threshold must be a number in [0, 1], got {threshold!r}") from None
    if not threshold >= 0.0:
        raise CSDConfigError(f"background threshold must be >= 0 (0.4 in the reference), got {threshold!r}")
    if scope not in _SCOPES:
        raise CSDConfigError(f"background scope must be one of {_SCOPES}, got {scope!r}")
    axes = [1, 2, 3] if scope == "image" else [0, 1, 2, 3]
    masks = []
    for logits in levels:
        conf = tf.sigmoid(tf.reduce_max(_per_anchor(_f32(logits), num_anchors, num_classes), axis=-1))  # [B,h,w,A]
        bar = threshold * tf.reduce_max(conf, axis=axes, keepdims=True)
        masks.append(tf.stop_gradient(tf.cast(conf > bar, tf.float32)))
    return masks


def csd_consistency_loss(
    cls_orig: Sequence[tf.Tensor],
    box_orig: Sequence[tf.Tensor],
    cls_flip: Sequence[tf.Tensor],
    box_flip: Sequence[tf.Tensor],
    num_anchors: int,
    num_classes: int,
    divergence: str = "jsd",
    background_elimination: bool = True,
    background_threshold: float = 0.4,
    background_scope: str = "image",
    class_reduction: str = "anchor",
) -> dict[str, tf.Tensor]:
    """Flip-consistency losses between a batch and its horizontally mirrored copy.

    The ``*_flip`` maps are the raw head outputs on ``tf.image.flip_left_right(images)``; they are mirrored
    back along the width here (:func:`flip_maps`) so that anchors line up with the ``*_orig`` maps.

    Background elimination (:func:`background_mask`) is computed from the ORIGINAL view's class logits only
    and the same mask applies to both views and to both terms: the pair of predictions at one anchor is
    compared or ignored as a whole, and the anchors that count do not depend on the prediction being pulled
    towards the other one. The mask carries no gradient; gradients flow into both views.

    Class term, per anchor: ``p = softmax(orig logits)``, ``q = softmax(back-flipped flip logits)`` over the
    ``C`` classes, and

    * ``divergence="jsd"`` (default, the symmetric divergence of the original CSD method):
      ``0.5 KL(p || m) + 0.5 KL(q || m)`` with ``m = (p + q) / 2``;
    * ``divergence="kl"``: ``KL(p || q)`` (what the reference computes, reference defect §8.14).

    Natural log. Per level, with ``class_reduction``:

    * ``"anchor"`` (default): averaged over the kept anchors, as the CSD paper's code does (a level with no
      kept anchor contributes 0). The term is at most ``ln 2`` (JSD) whatever the image size or the number of
      kept anchors, so it stays on the scale of the focal loss;
    * ``"image"``: summed over the kept anchors and divided by the batch size ``B`` (the reference). The sum
      grows with the number of kept anchors (thousands per image early in training on the tiny model) and then outweighs the
      supervised focal loss, whose cheapest answer is equal logits for every class at every anchor: on the
      synthetic 10 % split it collapsed the detector (``experiments/ssl/README.md``).

    Then averaged over levels.

    Box term, on the codes ``[ty, tx, th, tw]`` of both views: squared differences
    ``(ty - ty')², (tx + tx')², (th - th')², (tw - tw')²`` (``tx`` changes sign under mirroring), each averaged
    over the KEPT anchors only (the reference averaged over all anchors, so the masked ones diluted the loss:
    reference defect §8.14; a level with no kept anchor contributes 0), the four averaged, then averaged over
    levels.

    Args:
      cls_orig, cls_flip: lists (one per level) of ``[B, h, w, A*C]`` class logits of the original and of the
        mirrored batch.
      box_orig, box_flip: lists of ``[B, h, w, 4A]`` box codes, or ``[B, h, w, 8A]`` with loss attenuation
        (the σ channels ``[4A, 8A)`` are ignored).
      num_anchors: ``A``.
      num_classes: ``C``.
      divergence: ``"jsd"`` or ``"kl"``.
      background_elimination: apply the mask; ``False`` keeps every anchor.
      background_threshold: ``threshold`` of :func:`background_mask` (reference 0.4).
      background_scope: ``"image"`` (default) or ``"batch"`` (reference), see :func:`background_mask`.
      class_reduction: ``"anchor"`` (default) or ``"image"`` (reference), see above.

    Returns:
      dict of float32 scalars: ``cls`` (class term, nats per kept anchor, or per image with ``"image"``),
      ``box`` (box term, squared code units), ``mask_fraction`` (kept anchors / all anchors over all levels, a diagnostic without gradient).

    Raises:
      CSDConfigError: mismatched level lists or shapes, wrong channel counts, unknown ``divergence``,
      ``background_scope`` or ``class_reduction``.
    """
    num_anchors = _positive_int(num_anchors, "num_anchors")
    num_classes = _positive_int(num_classes, "num_classes")
    check_csd_options(divergence, 0.0, background_scope, class_reduction)
    co = _as_level_list(cls_orig, "cls_orig")
    cf = _as_level_list(cls_flip, "cls_flip")
    bo = _as_level_list(box_orig, "box_orig")
    bf = _as_level_list(box_flip, "box_flip")
    ac = num_anchors * num_classes
    _check_channels(co, (ac,), "cls_orig", "num_anchors * num_classes")
    _check_channels(cf, (ac,), "cls_flip", "num_anchors * num_classes")
    _check_channels(bo, (4 * num_anchors, 8 * num_anchors), "box_orig", "4 * num_anchors, or 8 * with loss attenuation")
    _check_channels(bf, (4 * num_anchors, 8 * num_anchors), "box_flip", "4 * num_anchors, or 8 * with loss attenuation")
    _check_same_shapes(co, cf, "cls_orig", "cls_flip")
    _check_same_shapes(co, bo, "cls_orig", "box_orig")
    _check_same_shapes(co, bf, "cls_orig", "box_flip")

    if background_elimination:
        masks = background_mask(co, num_anchors, num_classes, background_threshold, background_scope)
    else:
        masks = [tf.ones(tf.concat([tf.shape(c)[:3], [num_anchors]], 0), tf.float32) for c in co]

    cut = 4 * num_anchors
    cf = flip_maps(cf)
    bf = flip_maps([b[..., :cut] for b in bf])
    bo = [b[..., :cut] for b in bo]
    # mirroring negates tx: compare ty - ty', tx + tx', th - th', tw - tw'
    sign = tf.constant([1.0, -1.0, 1.0, 1.0], tf.float32)

    cls_terms, box_terms, kept, total = [], [], [], []
    for lo_raw, lf_raw, b_o, b_f, mask in zip(co, cf, bo, bf, masks):
        batch = tf.cast(tf.shape(lo_raw)[0], tf.float32)
        log_p = tf.nn.log_softmax(_per_anchor(_f32(lo_raw), num_anchors, num_classes), axis=-1)
        log_q = tf.nn.log_softmax(_per_anchor(_f32(lf_raw), num_anchors, num_classes), axis=-1)
        p = tf.exp(log_p)
        if divergence == "kl":
            per_anchor = tf.reduce_sum(p * (log_p - log_q), axis=-1)
        else:
            q = tf.exp(log_q)
            log_m = tf.reduce_logsumexp(tf.stack([log_p, log_q], axis=0), axis=0) - tf.math.log(2.0)
            per_anchor = 0.5 * tf.reduce_sum(p * (log_p - log_m), axis=-1) + 0.5 * tf.reduce_sum(
                q * (log_q - log_m), axis=-1
            )
        n_kept = tf.reduce_sum(mask)
        cls_terms.append(tf.math.divide_no_nan(tf.reduce_sum(per_anchor * mask),
                                               n_kept if class_reduction == "anchor" else batch))

        t_o = _per_anchor(_f32(b_o), num_anchors, 4)
        t_f = _per_anchor(_f32(b_f), num_anchors, 4)
        sq = tf.square(t_o - sign * t_f)  # [B, h, w, A, 4]
        per_code = tf.math.divide_no_nan(tf.reduce_sum(sq * mask[..., None], axis=[0, 1, 2, 3]), n_kept)  # [4]
        box_terms.append(tf.reduce_mean(per_code))
        kept.append(n_kept)
        total.append(tf.cast(tf.size(mask), tf.float32))

    return {
        "cls": tf.reduce_mean(tf.stack(cls_terms)),
        "box": tf.reduce_mean(tf.stack(box_terms)),
        "mask_fraction": tf.stop_gradient(tf.math.divide_no_nan(tf.add_n(kept), tf.add_n(total))),
    }


def csd_ramp_weight(step, total_steps) -> tf.Tensor:
    """CSD consistency weight ``w(t)`` (reference §5.9): Gaussian ramp-up, plateau, Gaussian ramp-down.

    With ``T = total_steps`` and integer boundaries ``T_up = floor(32000 T / 120000)``,
    ``L_down = floor(20000 T / 120000)``, ``T_down = floor(100000 T / 120000)``::

        w(0) = 0
        w(t) = exp(-5 (1 - t / T_up)²)              for 0 < t < T_up
        w(t) = 1                                    for T_up <= t <= T_down
        w(t) = exp(-12.5 (1 - (T - t) / L_down)²)   for t > T_down

    (``T = 120000`` gives the CSD paper's 32k / 100k / 20k schedule.) Degenerate short runs: the
    denominators ``T_up`` and ``L_down`` are floored at 1 step, so every ``T >= 1`` gives finite weights;
    for ``T < 4`` there is no ramp-up (``T_up = 0``, so ``w = 1`` from ``t = 1`` until ``T_down``), and for
    ``T < 6`` the ramp-down divides by 1 step instead of 0. Steps past ``T`` keep following the ramp-down
    formula (weights below ``exp(-12.5)``).

    Args:
      step: optimizer step ``t`` (Python int or integer/float scalar tensor, e.g. ``optimizer.iterations``);
        negative tensor values count as 0.
      total_steps: ``T = steps_per_epoch * num_epochs`` (Python int or scalar tensor), ``>= 1``.

    Returns:
      float32 scalar tensor in ``[0, 1]``.

    Raises:
      CSDConfigError: a Python ``step < 0`` or ``total_steps < 1`` (tensor values are not checked).
    """
    if not _tensor_like(step) and not _is_int_at_least(step, 0):
        raise CSDConfigError(f"step must be a non-negative integer (the optimizer step), got {step!r}")
    if not _tensor_like(total_steps) and not _is_int_at_least(total_steps, 1):
        raise CSDConfigError(
            f"total_steps must be a positive integer (steps_per_epoch * num_epochs), got {total_steps!r}"
        )
    t = tf.maximum(tf.cast(tf.round(tf.cast(step, tf.float64)), tf.int64), 0)
    big_t = tf.maximum(tf.cast(tf.round(tf.cast(total_steps, tf.float64)), tf.int64), 1)
    t_up = (32000 * big_t) // 120000
    len_down = (20000 * big_t) // 120000
    t_down = (100000 * big_t) // 120000
    tf_ = tf.cast(t, tf.float64)
    up = tf.exp(-5.0 * tf.square(1.0 - tf_ / tf.cast(tf.maximum(t_up, 1), tf.float64)))
    down = tf.exp(
        -12.5 * tf.square(1.0 - tf.cast(big_t - t, tf.float64) / tf.cast(tf.maximum(len_down, 1), tf.float64))
    )
    one = tf.constant(1.0, tf.float64)
    w = tf.where(t < t_up, up, tf.where(t > t_down, down, one))
    w = tf.where(t == 0, tf.constant(0.0, tf.float64), w)
    return tf.cast(w, tf.float32)
