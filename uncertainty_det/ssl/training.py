"""Semi-supervised train steps: STAC's mixed labeled + pseudo-labelled batches (reference §5.1) and CSD's flip
consistency (reference §5.9), as :class:`~uncertainty_det.model.training.DetectorTrainer` subclasses that
:func:`~uncertainty_det.model.training.train_detector` builds through its ``trainer_factory``.

Batches are dicts ``{"labeled": batch, "pseudo": batch}`` (STAC) or ``{"labeled": batch, "unlabeled": batch}``
(CSD), each part in the input-pipeline layout (``image [b,H,W,3]``, ``boxes [b,M,4]``, ``classes [b,M]``,
``weights [b,M]``); :func:`zip_streams` builds them from two pipelines.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import keras
import tensorflow as tf

from ..errors import UserError
from ..model.training import DetectorTrainer
from .csd import check_csd_options, csd_consistency_loss, csd_ramp_weight

__all__ = ["PSEUDO_WEIGHTINGS", "CSDTrainer", "MixedBatchTrainer", "image_mean_weights", "split_levels",
           "zip_streams"]

#: How pseudo-label weights enter the student's loss: ``off`` (every pseudo box counts fully), ``box`` (each
#: box's weight multiplies the terms of the anchors it is assigned to), ``image`` (the mean weight of an
#: image's boxes multiplies every anchor term of that image, background included: the reference's s_i).
PSEUDO_WEIGHTINGS = ("off", "box", "image")


class SSLConfigError(UserError, ValueError):
    """A semi-supervised training setting is invalid."""


def zip_streams(first: tf.data.Dataset, second: tf.data.Dataset, names=("labeled", "pseudo")) -> tf.data.Dataset:
    """Two (repeated) batch pipelines -> one of dicts ``{names[0]: batch, names[1]: batch}``, step by step."""
    return tf.data.Dataset.zip((first.repeat(), second.repeat())).map(
        lambda a, b: {names[0]: a, names[1]: b}).prefetch(tf.data.AUTOTUNE)


def image_mean_weights(batch: Mapping[str, tf.Tensor]) -> tf.Tensor:
    """``[b]`` mean per-box weight of each image over its real boxes (``classes >= 1``, weight > 0: a weight-0
    box is an ignore region, not a pseudo-label); 1 for an image without boxes."""
    weights = tf.cast(batch["weights"], tf.float32)
    valid = tf.cast((batch["classes"] > 0) & (weights > 0.0), tf.float32)
    total = tf.reduce_sum(weights * valid, axis=-1)
    count = tf.reduce_sum(valid, axis=-1)
    return tf.where(count > 0, total / tf.maximum(count, 1.0), 1.0)


def _take(raw: Mapping[str, tf.Tensor], start, stop=None) -> dict[str, tf.Tensor]:
    return {k: v[start:stop] for k, v in raw.items()}


def _check_weight(name: str, value: float) -> float:
    value = float(value)
    if not value >= 0.0:
        raise SSLConfigError(f"{name}={value!r} must be >= 0")
    return value


def consistency_levels(levels, min_level: int, max_level: int) -> tuple[int, ...]:
    """The pyramid levels CSD's consistency covers: ``levels`` checked against ``[min_level, max_level]``
    (sorted, no repeats), or every level for ``None``."""
    if levels is None:
        return tuple(range(min_level, max_level + 1))
    if isinstance(levels, (str, bytes)) or not isinstance(levels, Sequence):
        raise SSLConfigError(f"csd levels={levels!r} must be a list of pyramid levels, e.g. [3, 4], or null for all")
    out = []
    for lvl in levels:
        if isinstance(lvl, bool) or not isinstance(lvl, int) or not min_level <= lvl <= max_level:
            raise SSLConfigError(f"csd levels={list(levels)!r}: each must be a pyramid level of the model, an "
                                 f"integer in [{min_level}, {max_level}]")
        if lvl in out:
            raise SSLConfigError(f"csd levels={list(levels)!r} repeats level {lvl}")
        out.append(lvl)
    if not out:
        raise SSLConfigError("csd levels=[] covers no level; give at least one, or null for all")
    return tuple(sorted(out))


def _pick(maps: list, indices: Sequence[int]) -> list:
    return [maps[i] for i in indices]


class _SupervisedValidation(DetectorTrainer):
    """Validation batches are plain labeled batches: the supervised losses only."""

    _supervised_names: tuple[str, ...] = ()

    def _remember_supervised_names(self) -> None:
        self._supervised_names = tuple(self._loss_names)

    def test_step(self, data):
        batch = data[0] if isinstance(data, tuple) else data
        losses = DetectorTrainer.compute_losses(self, batch, training=False)
        for name in self._supervised_names:
            self.trackers[name].update_state(losses[name])
        return {name: self.trackers[name].result() for name in self._supervised_names}


class MixedBatchTrainer(_SupervisedValidation):
    """STAC student: one forward pass over ``[labeled | pseudo]`` (batch norm sees the mixed batch), the
    detection loss of each part normalised within the part, ``L = L_labeled + unsup_weight · L_pseudo``.

    Args:
      unsup_weight: λ of the pseudo-labelled term (reference ``stac_lambda`` 1.0).
      weighting: one of :data:`PSEUDO_WEIGHTINGS`. Whatever the weighting, a pseudo box of weight 0 is an
        ignore region (``selection.ignore_score``): its anchors add no loss, neither as object nor as background.
      total_steps: unused (the factory signature of ``train_detector``).

    Extra metrics: ``sup_loss``, ``pseudo_loss`` (the pseudo part before λ). ``loss``, ``cls_loss`` and
    ``box_loss`` are the weighted sums of the parts; ``rmse``, ``mean_sigma`` and ``num_positives`` are the
    labeled part's.
    """

    def __init__(self, detector, anchors, unsup_weight: float = 1.0, weighting: str = "box",
                 total_steps: int | None = None, **kwargs):
        super().__init__(detector, anchors, **kwargs)
        if weighting not in PSEUDO_WEIGHTINGS:
            raise SSLConfigError(f"pseudo-label weighting {weighting!r} is not one of {', '.join(PSEUDO_WEIGHTINGS)}")
        self.unsup_weight = _check_weight("unsup_weight", unsup_weight)
        self.weighting = weighting
        self._remember_supervised_names()
        for name in ("sup_loss", "pseudo_loss"):
            self.trackers[name] = keras.metrics.Mean(name=name)
        self._loss_names = (*self._loss_names, "sup_loss", "pseudo_loss")

    def _pseudo_batch(self, batch: Mapping[str, tf.Tensor]) -> tuple[dict, tf.Tensor | None]:
        if self.weighting == "box":
            return dict(batch), None
        image_weights = image_mean_weights(batch) if self.weighting == "image" else None
        # per-box weights off, but weight-0 boxes stay ignore regions (target_assigner)
        weights = tf.cast(batch["weights"], tf.float32)
        return {**batch, "weights": tf.where(weights > 0.0, 1.0, 0.0)}, image_weights

    def compute_losses(self, data: Mapping[str, Mapping[str, tf.Tensor]], training: bool) -> dict[str, tf.Tensor]:
        labeled, pseudo = data["labeled"], data["pseudo"]
        n = tf.shape(labeled["image"])[0]
        raw = self.detector(tf.concat([labeled["image"], pseudo["image"]], axis=0), training=training)
        sup = self.losses_from_outputs(_take(raw, 0, n), labeled)
        pseudo_batch, image_weights = self._pseudo_batch(pseudo)
        uns = self.losses_from_outputs(_take(raw, n), pseudo_batch, image_weights=image_weights)
        lam = self.unsup_weight
        out = dict(sup)
        for key in ("loss", "cls_loss", "box_loss"):
            out[key] = sup[key] + lam * uns[key]
        out["sup_loss"], out["pseudo_loss"] = sup["loss"], uns["loss"]
        return out


def split_levels(flat: tf.Tensor, level_shapes, num_anchors: int) -> list[tf.Tensor]:
    """``[B, N, k]`` anchor-flattened outputs -> per-level maps ``[B, h_l, w_l, A*k]`` (the inverse of
    :func:`uncertainty_det.model.heads.flatten_levels`; ``level_shapes``: the ``(h_l, w_l)`` in level order)."""
    k = flat.shape[-1]
    sizes = [int(h) * int(w) * int(num_anchors) for h, w in level_shapes]
    parts = tf.split(flat, sizes, axis=1)
    return [tf.reshape(p, [-1, int(h), int(w), int(num_anchors) * k]) for p, (h, w) in zip(parts, level_shapes)]


class CSDTrainer(_SupervisedValidation):
    """CSD: the supervised detection loss on the labeled part plus the flip-consistency loss on every image of
    ``[labeled | unlabeled]``, ``L = L_sup + w(t) (L_cls + L_box)`` with the ramp ``w(t)`` of
    :func:`~uncertainty_det.ssl.csd.csd_ramp_weight` over ``total_steps`` (constant 1 with ``ramp=False``).

    Args:
      total_steps: the schedule length T (epochs x steps per epoch; given by ``train_detector``).
      consistency_weight: multiplies the consistency term (after the ramp).
      divergence, background_elimination, background_threshold, background_scope, class_reduction: as
        :func:`~uncertainty_det.ssl.csd.csd_consistency_loss`.
      levels: the pyramid levels the consistency loss covers (e.g. ``(3, 4)``; default ``None``: all, as the
        reference). Coarse levels of a network with stride-2 'same' padding encode absolute position (their
        features do not mirror, ``experiments/ssl/flip_equivariance.py``), so mirror consistency there pulls
        against the architecture rather than towards a flip-invariant detector.

    Extra metrics: ``sup_loss``, ``cons_cls``, ``cons_box``, ``cons_weight`` (w(t)), ``mask_fraction``.
    """

    def __init__(self, detector, anchors, total_steps: int | None = None, consistency_weight: float = 1.0,
                 ramp: bool = True, divergence: str = "jsd", background_elimination: bool = True,
                 background_threshold: float = 0.4, background_scope: str = "image",
                 class_reduction: str = "anchor", levels: Sequence[int] | None = None, **kwargs):
        super().__init__(detector, anchors, **kwargs)
        if ramp and not total_steps:
            raise SSLConfigError("CSD's ramp needs total_steps (epochs x steps per epoch) > 0")
        self.total_steps = int(total_steps or 0)
        self.ramp = bool(ramp)
        self.consistency_weight = _check_weight("consistency_weight", consistency_weight)
        check_csd_options(divergence, background_threshold, background_scope, class_reduction)
        self.csd_options = dict(divergence=divergence, background_elimination=bool(background_elimination),
                                background_threshold=float(background_threshold), background_scope=background_scope,
                                class_reduction=class_reduction)
        cfg = self.detector_config
        h, w = cfg.image_size
        self.level_shapes = []
        for level in range(cfg.max_level + 1):          # ceil-halving, as the anchors and the network
            if level >= cfg.min_level:
                self.level_shapes.append((h, w))
            h, w = -(-h // 2), -(-w // 2)
        self.consistency_levels = consistency_levels(levels, cfg.min_level, cfg.max_level)
        self._remember_supervised_names()
        for name in ("sup_loss", "cons_cls", "cons_box", "cons_weight", "mask_fraction"):
            self.trackers[name] = keras.metrics.Mean(name=name)
        self._loss_names = (*self._loss_names, "sup_loss", "cons_cls", "cons_box", "cons_weight", "mask_fraction")

    def _maps(self, raw: Mapping[str, tf.Tensor]) -> tuple[list[tf.Tensor], list[tf.Tensor]]:
        a = self.detector_config.num_anchors
        return split_levels(raw["cls"], self.level_shapes, a), split_levels(raw["box"], self.level_shapes, a)

    def compute_losses(self, data: Mapping[str, Mapping[str, tf.Tensor]], training: bool) -> dict[str, tf.Tensor]:
        labeled, unlabeled = data["labeled"], data["unlabeled"]
        n = tf.shape(labeled["image"])[0]
        images = tf.concat([labeled["image"], unlabeled["image"]], axis=0)
        raw = self.detector(images, training=training)
        flipped = self.detector(tf.image.flip_left_right(images), training=training)
        sup = self.losses_from_outputs(_take(raw, 0, n), labeled)
        keep = [lvl - self.detector_config.min_level for lvl in self.consistency_levels]
        cls_o, box_o = (_pick(m, keep) for m in self._maps(raw))
        cls_f, box_f = (_pick(m, keep) for m in self._maps(flipped))
        cons = csd_consistency_loss(cls_o, box_o, cls_f, box_f, self.detector_config.num_anchors,
                                    self.detector_config.num_classes, **self.csd_options)
        if self.ramp:
            weight = csd_ramp_weight(self.optimizer.iterations, self.total_steps)
        else:
            weight = tf.constant(1.0, tf.float32)
        weight = tf.cast(weight, tf.float32) * self.consistency_weight
        out = dict(sup)
        out["sup_loss"] = sup["loss"]
        out["loss"] = sup["loss"] + weight * (cons["cls"] + cons["box"])
        out["cons_cls"], out["cons_box"], out["mask_fraction"] = cons["cls"], cons["box"], cons["mask_fraction"]
        out["cons_weight"] = weight
        return out
