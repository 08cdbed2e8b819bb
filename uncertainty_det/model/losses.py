"""Detection losses (TensorFlow, float32, one batch at a time).

Shapes: ``B`` images, ``N`` anchors (all levels flattened, see :mod:`uncertainty_det.model.anchors`), ``C``
foreground classes. Box codes/targets are ``[ty, tx, th, tw]`` (dimensionless anchor-space offsets), σ is a
standard deviation in the same space. Every loss is normalised by ``N+ = sum(num_positives) + 1``, the batch's
total positive-anchor count plus one.

The attenuated box loss follows the reference (model-uncertainty-calibration §1.3) except that the log-normal
mean compensation ``μ_th += σ_th²/2, μ_tw += σ_tw²/2`` is applied to th/tw of every anchor (the reference's
channel-half defect is not reproduced).
"""
from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

__all__ = [
    "LossConfig",
    "attenuated_box_loss",
    "attenuated_box_terms",
    "box_loss",
    "detection_loss",
    "elementwise_box_loss",
    "focal_loss",
    "sigma_from_raw",
]

_COMPENSATIONS = ("paper", "none")
_SIGMA_PARAMS = ("softplus", "raw_clip")


@dataclass
class LossConfig:
    """Loss hyper-parameters for :func:`detection_loss`.

    Attributes:
      alpha, gamma: focal-loss balance and focusing parameters.
      box_loss: ``"huber"`` or ``"mse"`` elementwise box loss.
      huber_delta: Huber δ (code units).
      box_loss_weight: weight of the box loss in the total.
      compensation: ``"paper"`` (log-normal mean compensation on th/tw) or ``"none"``; attenuated loss only.
      label_smoothing: focal-loss label smoothing (extra, default 0).
      num_levels: number of pyramid levels the attenuated loss is averaged over (extra, default 5).
    """

    alpha: float = 0.25
    gamma: float = 1.5
    box_loss: str = "huber"
    huber_delta: float = 0.1
    box_loss_weight: float = 50.0
    compensation: str = "paper"
    label_smoothing: float = 0.0
    num_levels: int = 5


def _f32(x) -> tf.Tensor:
    return tf.cast(tf.convert_to_tensor(x), tf.float32)


def _normaliser_from_positive(positive: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(tf.cast(positive, tf.float32)) + 1.0


def _check_kind(kind: str) -> str:
    k = str(kind).lower()
    if k not in ("huber", "mse"):
        raise ValueError(f"box loss kind must be 'huber' or 'mse', got {kind!r}")
    return k


def focal_loss(
    cls_logits,
    cls_targets,
    alpha: float = 0.25,
    gamma: float = 1.5,
    label_smoothing: float = 0.0,
    weights=None,
    anchor_weights=None,
) -> tf.Tensor:
    """Sigmoid focal loss, summed over anchors and classes and divided by ``N+``.

    Per anchor and class with one-hot label ``y`` and ``p = sigmoid(x)``::

        p_t = y p + (1-y)(1-p),   α_t = y α + (1-y)(1-α)
        loss = α_t (1 - p_t)^γ · BCE(y_s, x),  y_s = y (1 - ls) + ls / 2

    Args:
      cls_logits: ``[B, N, C]`` logits.
      cls_targets: ``[B, N]`` int: 0-based class (positive), ``-1`` background, ``-2`` ignore (zero loss).
      alpha, gamma: focal parameters.
      label_smoothing: smoothing of the BCE target (the focal factors use the hard label).
      weights: optional ``[B, N]``; multiplies the terms (all C classes) of positive anchors only.
      anchor_weights: optional ``[B, N]``; multiplies the terms of every anchor, background included (per-image
        weights of pseudo-labelled images).

    Returns:
      scalar float32 loss.
    """
    logits = _f32(cls_logits)
    targets = tf.cast(cls_targets, tf.int32)
    num_classes = tf.shape(logits)[-1]
    positive = targets >= 0
    y = tf.one_hot(tf.where(positive, targets, -1), num_classes, dtype=tf.float32)  # -1 -> all zeros
    # (1 - p_t) = sigmoid(-x) for y=1, sigmoid(x) for y=0; computed in log space for stable gradients.
    modulating = tf.exp(gamma * tf.math.log_sigmoid(logits * (1.0 - 2.0 * y)))
    alpha_t = y * alpha + (1.0 - y) * (1.0 - alpha)
    y_s = y * (1.0 - label_smoothing) + 0.5 * label_smoothing
    bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=y_s, logits=logits)
    per_anchor_w = tf.cast(targets != -2, tf.float32)
    if weights is not None:
        per_anchor_w = per_anchor_w * tf.where(positive, _f32(weights), 1.0)
    if anchor_weights is not None:
        per_anchor_w = per_anchor_w * _f32(anchor_weights)
    loss = alpha_t * modulating * bce * per_anchor_w[..., None]
    return tf.reduce_sum(loss) / _normaliser_from_positive(positive)


def elementwise_box_loss(box_targets, box_codes, kind: str = "huber", delta: float = 0.1) -> tf.Tensor:
    """Elementwise ``L(y, μ)`` with ``d = y - μ``: Keras Huber (``0.5 d²`` if ``|d| <= δ`` else ``δ(|d| - δ/2)``)
    or MSE ``d²`` (no ½). Same shape as the inputs, float32."""
    kind = _check_kind(kind)
    d = _f32(box_targets) - _f32(box_codes)
    if kind == "mse":
        return tf.square(d)
    ad = tf.abs(d)
    return tf.where(ad <= delta, 0.5 * tf.square(d), delta * (ad - 0.5 * delta))


def _box_mask(box_targets: tf.Tensor, positive, weights) -> tf.Tensor:
    """``[B, N, 4]`` float mask ``positive & (target != 0)`` times per-anchor weights."""
    m = tf.cast(tf.logical_and(tf.cast(positive, tf.bool)[..., None], tf.not_equal(box_targets, 0.0)), tf.float32)
    if weights is not None:
        m = m * _f32(weights)[..., None]
    return m


def box_loss(box_codes, box_targets, positive, kind: str = "huber", delta: float = 0.1, weights=None) -> tf.Tensor:
    """Plain box regression loss ``Σ m·L(y, μ) / (4 N+)``.

    Args:
      box_codes: ``[B, N, 4]`` predicted codes μ.
      box_targets: ``[B, N, 4]`` target codes y (zeros for non-positives).
      positive: ``[B, N]`` bool positive anchors (defines ``N+``).
      kind: ``"huber"`` or ``"mse"``.
      delta: Huber δ.
      weights: optional ``[B, N]`` per-anchor weights.

    Returns:
      scalar float32 loss; the mask ``m = positive & (y != 0)`` is elementwise as in the reference.
    """
    y = _f32(box_targets)
    m = _box_mask(y, positive, weights)
    loss = elementwise_box_loss(y, box_codes, kind, delta)
    return tf.reduce_sum(m * loss) / (4.0 * _normaliser_from_positive(positive))


def _compensate(mu: tf.Tensor, sigma: tf.Tensor, compensation: str) -> tf.Tensor:
    comp = str(compensation).lower()
    if comp not in _COMPENSATIONS:
        raise ValueError(f"compensation must be one of {_COMPENSATIONS}, got {compensation!r}")
    if comp == "none":
        return mu
    # Channels [ty, tx, th, tw]: add σ²/2 to th and tw of every anchor.
    channel_mask = tf.constant([0.0, 0.0, 0.5, 0.5], tf.float32)
    return mu + channel_mask * tf.square(sigma)


def attenuated_box_terms(
    box_codes, sigma, box_targets, positive, kind: str = "mse", delta: float = 0.1, compensation: str = "paper"
) -> tf.Tensor:
    """Unnormalised elementwise attenuated terms ``m·[L(y, μ̃)/σ² + log(1 + σ²)]``, ``[B, N, 4]`` float32.

    ``μ̃`` is ``box_codes`` with ``σ²/2`` added to th/tw when ``compensation == "paper"``; ``m`` is the
    elementwise mask ``positive & (y != 0)``. Used by :func:`attenuated_box_loss` and handy for inspection.
    """
    y = _f32(box_targets)
    sigma = _f32(sigma)
    mu = _compensate(_f32(box_codes), sigma, compensation)
    keep = _box_mask(y, positive, None) > 0
    # Masked elements use σ² = 1 so a tiny or zero σ there can leak neither inf/NaN values nor NaN gradients.
    var = tf.where(keep, tf.square(sigma), 1.0)
    term = elementwise_box_loss(y, mu, kind, delta) / var + tf.math.log1p(var)
    return tf.where(keep, term, tf.zeros_like(term))


def attenuated_box_loss(
    box_codes,
    sigma,
    box_targets,
    positive,
    kind: str = "mse",
    delta: float = 0.1,
    compensation: str = "paper",
    num_levels: int = 5,
    weights=None,
) -> tf.Tensor:
    """Loss-attenuated box loss (reference §1.3 with per-anchor th/tw compensation).

    ``0.25 · Σ m·[L(y, μ̃)/σ² + log(1 + σ²)] / (4 N+) / num_levels``; the division by ``num_levels`` equals the
    reference's mean over levels of per-level losses that share ``N+``.

    Args:
      box_codes: ``[B, N, 4]`` predicted means μ (codes).
      sigma: ``[B, N, 4]`` predicted standard deviations, already positive (see :func:`sigma_from_raw`).
      box_targets: ``[B, N, 4]`` target codes.
      positive: ``[B, N]`` bool.
      kind: ``"mse"`` (reference configs) or ``"huber"``.
      delta: Huber δ.
      compensation: ``"paper"`` or ``"none"``.
      num_levels: number of pyramid levels (5 for levels 3-7).
      weights: optional ``[B, N]`` per-anchor weights.

    Returns:
      scalar float32 loss.
    """
    terms = attenuated_box_terms(box_codes, sigma, box_targets, positive, kind, delta, compensation)
    if weights is not None:
        terms = terms * _f32(weights)[..., None]
    total = 0.25 * tf.reduce_sum(terms) / (4.0 * _normaliser_from_positive(positive))
    return total / float(num_levels)


def sigma_from_raw(
    raw, param: str = "softplus", sigma_min: float = 0.01, sigma_max: float = 1024.0, training=True
) -> tf.Tensor:
    """Map the raw σ head output to a positive standard deviation.

    Args:
      raw: raw head output, any shape.
      param: ``"softplus"``: ``softplus(raw) + sigma_min`` (smooth, always has a gradient; ``sigma_max`` unused);
        ``"raw_clip"`` (reference): ``clip(raw, sigma_min, sigma_max)`` when training, ``|raw|`` at inference.
      sigma_min, sigma_max: floor / ceiling (code units).
      training: Python bool (or None = False), or a boolean tensor.

    Returns:
      float32 tensor of the shape of ``raw``.
    """
    raw = _f32(raw)
    p = str(param).lower()
    if p == "softplus":
        return tf.nn.softplus(raw) + sigma_min
    if p != "raw_clip":
        raise ValueError(f"sigma param must be one of {_SIGMA_PARAMS}, got {param!r}")
    if training is None or isinstance(training, bool):
        return tf.clip_by_value(raw, sigma_min, sigma_max) if training else tf.abs(raw)
    return tf.where(tf.cast(training, tf.bool), tf.clip_by_value(raw, sigma_min, sigma_max), tf.abs(raw))


def _cfg(cfg, name: str, default):
    if cfg is None:
        return default
    if isinstance(cfg, dict):
        return cfg.get(name, default)
    return getattr(cfg, name, default)


def detection_loss(outputs: dict, targets: dict, cfg=None) -> dict[str, tf.Tensor]:
    """Total detection loss ``cls + box_loss_weight · box``.

    Args:
      outputs: ``{"cls": [B,N,C] logits, "box": [B,N,4] codes, "sigma": [B,N,4] positive σ (optional)}``.
        With ``"sigma"`` the box term is :func:`attenuated_box_loss`, otherwise :func:`box_loss`.
      targets: the dict from :func:`uncertainty_det.model.target_assigner.assign_targets`
        (``cls_targets, box_targets, positive``, optional ``weights`` (positive anchors) and ``anchor_weights``
        ``[B, N]`` (every anchor; see :func:`focal_loss`)).
      cfg: :class:`LossConfig` (or any object/dict with its fields); None = defaults.

    Returns:
      dict of float32 scalars ``loss, cls_loss, box_loss`` and, with σ, ``mean_sigma`` (mean σ over the 4
      coordinates of positive anchors) and ``rmse`` (RMSE of the predicted codes μ, uncompensated, against the
      targets over positive anchors); both are 0 when there is no positive anchor.
    """
    weights = targets.get("weights")
    anchor_weights = targets.get("anchor_weights")
    positive = tf.cast(targets["positive"], tf.bool)
    cls = focal_loss(
        outputs["cls"],
        targets["cls_targets"],
        alpha=_cfg(cfg, "alpha", 0.25),
        gamma=_cfg(cfg, "gamma", 1.5),
        label_smoothing=_cfg(cfg, "label_smoothing", 0.0),
        weights=weights,
        anchor_weights=anchor_weights,
    )
    if anchor_weights is not None:       # the box terms are on positive anchors only: fold the two together
        weights = _f32(anchor_weights) * (1.0 if weights is None else _f32(weights))
    kind = _cfg(cfg, "box_loss", "huber")
    delta = _cfg(cfg, "huber_delta", 0.1)
    sigma = outputs.get("sigma")
    if sigma is None:
        box = box_loss(outputs["box"], targets["box_targets"], positive, kind=kind, delta=delta, weights=weights)
    else:
        box = attenuated_box_loss(
            outputs["box"],
            sigma,
            targets["box_targets"],
            positive,
            kind=kind,
            delta=delta,
            compensation=_cfg(cfg, "compensation", "paper"),
            num_levels=_cfg(cfg, "num_levels", 5),
            weights=weights,
        )
    result = {"loss": cls + float(_cfg(cfg, "box_loss_weight", 50.0)) * box, "cls_loss": cls, "box_loss": box}
    if sigma is not None:
        pos = tf.cast(positive, tf.float32)[..., None]  # [B, N, 1]
        count = tf.maximum(4.0 * tf.reduce_sum(pos), 1.0)
        sq = tf.square(_f32(outputs["box"]) - _f32(targets["box_targets"]))
        result["rmse"] = tf.stop_gradient(tf.sqrt(tf.reduce_sum(tf.where(pos > 0, sq, 0.0)) / count))
        result["mean_sigma"] = tf.stop_gradient(tf.reduce_sum(tf.where(pos > 0, _f32(sigma), 0.0)) / count)
    return result
