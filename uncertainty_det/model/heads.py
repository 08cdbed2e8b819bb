"""Class and box heads, shared across pyramid levels, with MC channel dropout.

Per level, ``repeats`` times: separable 3x3 conv (weights shared by all levels) -> BN (one per level and
repeat) -> swish -> :class:`~uncertainty_det.model.mc.MCSpatialDropout2D` (one per level and repeat, so each
level draws its own masks; active when the rate > 0 and (training or ``mc``)); then a separable 3x3 predict
conv (shared, with bias):

* class head: ``A * C`` channels, bias ``-log((1 - 0.01) / 0.01)`` (prior probability 0.01);
* box head: ``A * 4`` channels ``[ty, tx, th, tw]``, or ``A * 8`` with loss attenuation: channels
  ``[0, 4A)`` are the codes (channel ``4a + k``), ``[4A, 8A)`` the raw σ with the same anchor-major layout
  (channel ``4A + 4a + k``). Zero bias.

:func:`flatten_levels` turns the per-level maps ``[B, h_l, w_l, A*k]`` into ``[B, N, k]`` with
``N = Σ_l h_l w_l A`` in the anchor order of :mod:`uncertainty_det.model.anchors` (levels, then row-major
locations, then anchors).
"""
from __future__ import annotations

import math
from typing import Sequence

import keras
import tensorflow as tf

from .efficientnet import BN_EPSILON, BN_MOMENTUM, conv_initializer
from .mc import MCSpatialDropout2D

__all__ = ["BoxHead", "ClassHead", "DetectionHead", "flatten_levels", "split_box_outputs"]

PRIOR_PROBABILITY = 0.01


def flatten_levels(maps: Sequence[tf.Tensor], k: int) -> tf.Tensor:
    """Per-level ``[B, h_l, w_l, A*k]`` (channel ``k*a + j``) -> ``[B, Σ h_l w_l A, k]``."""
    flat = [tf.reshape(m, tf.stack([tf.shape(m)[0], -1, k])) for m in maps]
    out = tf.concat(flat, axis=1)
    static_n = 0
    for m in maps:
        h, w, c = m.shape[1:]
        if h is None or w is None or c is None:
            static_n = None
            break
        static_n += h * w * c // k
    out.set_shape([maps[0].shape[0], static_n, k])
    return out


def _tile_rows(x: tf.Tensor, samples: int) -> tf.Tensor:
    """``[B, h, w, C] -> [T*B, h, w, C]`` with row ``t*B + b`` = ``x[b]``."""
    return tf.tile(x, [samples, 1, 1, 1])


def split_box_outputs(maps: Sequence[tf.Tensor], num_anchors: int) -> tuple[list[tf.Tensor], list[tf.Tensor]]:
    """Split 8A-channel box maps into (codes ``[..., :4A]``, raw σ ``[..., 4A:]``) per level."""
    cut = 4 * num_anchors
    return [m[..., :cut] for m in maps], [m[..., cut:] for m in maps]


@keras.saving.register_keras_serializable(package="uncertainty_det")
class DetectionHead(keras.layers.Layer):
    """Shared head over pyramid levels: ``[P_l]`` ``[B, h_l, w_l, F]`` -> ``[B, h_l, w_l, out_channels]`` per level.

    Args:
      out_channels: channels of the predict conv.
      filters: channels of the intermediate convs (``fpn_num_filters``).
      repeats: ``box_class_repeats``.
      num_levels: pyramid levels (5).
      mc_rate: MC dropout rate (0 = no-op).
      bias_init: constant initial bias of the predict conv.
      salt_base: salt of the dropout of repeat ``r`` at level ``l`` is ``salt_base + 16 * r + l``.
    """

    def __init__(self, out_channels: int, filters: int, repeats: int, num_levels: int = 5, mc_rate: float = 0.0,
                 bias_init: float = 0.0, salt_base: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.out_channels = int(out_channels)
        self.filters = int(filters)
        self.repeats = int(repeats)
        self.num_levels = int(num_levels)
        self.mc_rate = float(mc_rate)
        self.bias_init = float(bias_init)
        self.salt_base = int(salt_base)
        if self.num_levels > 16:
            raise ValueError("at most 16 levels")
        init = conv_initializer()
        self.convs = [keras.layers.SeparableConv2D(self.filters, 3, padding="same", use_bias=False,
                                                   depthwise_initializer=init, pointwise_initializer=init,
                                                   name=f"conv_{r}") for r in range(self.repeats)]
        # index r * num_levels + l
        self.bns = [keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=f"bn_{r}_l{l}")
                    for r in range(self.repeats) for l in range(self.num_levels)]
        self.dropouts = [MCSpatialDropout2D(self.mc_rate, salt=self.salt_base + 16 * r + l, name=f"mc_dropout_{r}_l{l}")
                         for r in range(self.repeats) for l in range(self.num_levels)]
        self.predict = keras.layers.SeparableConv2D(
            self.out_channels, 3, padding="same", use_bias=True, depthwise_initializer=init,
            pointwise_initializer=keras.initializers.VarianceScaling(1.0, "fan_in", "untruncated_normal"),
            bias_initializer=keras.initializers.Constant(self.bias_init), name="predict")

    def build(self, input_shape=None):
        # sub-layers create their weights on the first call (avoids Keras' symbolic build pass)
        self.built = True

    def call(self, inputs, training: bool = False, mc: bool = False, seed=None, samples: int = 1):
        """Run the head on every level.

        Args:
          inputs: list of ``num_levels`` maps ``[B, h_l, w_l, F]``.
          training, mc: Python bools (dropout on when the rate > 0 and either is set).
          seed: ``None`` or an integer for reproducible MC masks.
          samples: T >= 1. With T > 1 the inputs are shared by T samples: the part before the first dropout
            runs once on the B rows and is then tiled to ``T*B`` rows (row ``t*B + b``), so the result equals
            running the head on the tiled inputs, at less cost. Without active dropout the outputs are tiled.

        Returns:
          list of ``[T*B, h_l, w_l, out_channels]`` maps.
        """
        if len(inputs) != self.num_levels:
            raise ValueError(f"{self.name}: expected {self.num_levels} levels, got {len(inputs)}")
        samples = int(samples)
        dropout_on = self.mc_rate > 0.0 and bool(training or mc)
        outputs = []
        for level, x in enumerate(inputs):
            for r in range(self.repeats):
                idx = r * self.num_levels + level
                x = self.convs[r](x)
                x = self.bns[idx](x, training=training)
                x = keras.activations.silu(x)
                if r == 0 and samples > 1 and dropout_on:
                    x = _tile_rows(x, samples)
                x = self.dropouts[idx](x, training=training, mc=mc, seed=seed)
            x = self.predict(x)
            if samples > 1 and not dropout_on:
                x = _tile_rows(x, samples)
            outputs.append(x)
        return outputs

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({
            "out_channels": self.out_channels, "filters": self.filters, "repeats": self.repeats,
            "num_levels": self.num_levels, "mc_rate": self.mc_rate, "bias_init": self.bias_init,
            "salt_base": self.salt_base,
        })
        return config


@keras.saving.register_keras_serializable(package="uncertainty_det")
class ClassHead(DetectionHead):
    """Class head: ``A * num_classes`` logits per location, prior-probability bias."""

    def __init__(self, num_classes: int, num_anchors: int, filters: int, repeats: int, num_levels: int = 5,
                 mc_rate: float = 0.0, salt_base: int = 2000, **kwargs):
        for key in ("out_channels", "bias_init"):
            kwargs.pop(key, None)
        super().__init__(int(num_anchors) * int(num_classes), filters, repeats, num_levels, mc_rate,
                         bias_init=-math.log((1.0 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY), salt_base=salt_base,
                         **kwargs)
        self.num_classes = int(num_classes)
        self.num_anchors = int(num_anchors)

    def get_config(self) -> dict:
        config = super().get_config()
        for key in ("out_channels", "bias_init"):
            config.pop(key)
        config.update({"num_classes": self.num_classes, "num_anchors": self.num_anchors})
        return config


@keras.saving.register_keras_serializable(package="uncertainty_det")
class BoxHead(DetectionHead):
    """Box head: ``A * 4`` codes per location, or ``A * 8`` (codes then raw σ) with loss attenuation."""

    def __init__(self, num_anchors: int, filters: int, repeats: int, num_levels: int = 5, mc_rate: float = 0.0,
                 loss_attenuation: bool = False, salt_base: int = 3000, **kwargs):
        for key in ("out_channels", "bias_init"):
            kwargs.pop(key, None)
        per_anchor = 8 if loss_attenuation else 4
        super().__init__(int(num_anchors) * per_anchor, filters, repeats, num_levels, mc_rate, bias_init=0.0,
                         salt_base=salt_base, **kwargs)
        self.num_anchors = int(num_anchors)
        self.loss_attenuation = bool(loss_attenuation)

    def get_config(self) -> dict:
        config = super().get_config()
        for key in ("out_channels", "bias_init"):
            config.pop(key)
        config.update({"num_anchors": self.num_anchors, "loss_attenuation": self.loss_attenuation})
        return config
