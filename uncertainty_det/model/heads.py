"""Class and box heads, shared across pyramid levels, with MC channel dropout.

Per level, ``repeats`` times: separable 3x3 conv (weights shared by all levels) -> BN (one per level and
repeat) -> swish -> :class:`~uncertainty_det.model.mc.MCSpatialDropout2D` (one per level and repeat, so each
level draws its own masks; active when the rate > 0 and (training or ``mc``)); then a separable 3x3 predict
conv (shared, with bias):

* class head: ``A * C`` channels, bias ``-log((1 - 0.01) / 0.01)`` (prior probability 0.01);
* box head: ``A * 4`` channels ``[ty, tx, th, tw]``, or ``A * 8`` with loss attenuation: channels
  ``[0, 4A)`` are the codes (channel ``4a + k``), ``[4A, 8A)`` the raw σ with the same anchor-major layout
  (channel ``4A + 4a + k``). Zero bias for the codes. The σ channels start near σ = 1 (code units): their
  bias is ``sigma_bias_init`` (the raw value that maps to σ = 1) and their predict-kernel columns are scaled
  by ``SIGMA_KERNEL_SCALE``. With the codes' initialisation some anchors would start at σ near the floor,
  where the attenuated loss ``r² / 2σ²`` is ~1e4 and the first epoch goes into undoing that.

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

__all__ = ["BoxHead", "ClassHead", "DetectionHead", "flatten_levels", "sigma_bias_for_unit_sigma",
           "split_box_outputs"]

PRIOR_PROBABILITY = 0.01
SIGMA_KERNEL_SCALE = 0.1


@keras.saving.register_keras_serializable(package="uncertainty_det")
class SplitConstant(keras.initializers.Initializer):
    """Bias initialiser: ``head_value`` for the first ``split`` entries of the last axis, ``tail_value`` after."""

    def __init__(self, split: int, head_value: float = 0.0, tail_value: float = 0.0):
        self.split = int(split)
        self.head_value = float(head_value)
        self.tail_value = float(tail_value)

    def __call__(self, shape, dtype=None):
        positions = tf.range(shape[-1])
        values = tf.where(positions < self.split, self.head_value, self.tail_value)
        return tf.cast(tf.broadcast_to(values, shape), dtype or "float32")

    def get_config(self) -> dict:
        return {"split": self.split, "head_value": self.head_value, "tail_value": self.tail_value}


@keras.saving.register_keras_serializable(package="uncertainty_det")
class SplitScaledVarianceScaling(keras.initializers.Initializer):
    """``VarianceScaling(1, fan_in, untruncated_normal)`` with the last-axis entries from ``split`` on scaled by
    ``tail_scale`` (the σ columns of the box predict kernel)."""

    def __init__(self, split: int, tail_scale: float = 1.0, seed=None):
        self.split = int(split)
        self.tail_scale = float(tail_scale)
        self.seed = seed
        self._base = keras.initializers.VarianceScaling(1.0, "fan_in", "untruncated_normal", seed=seed)

    def __call__(self, shape, dtype=None):
        w = tf.convert_to_tensor(self._base(shape, dtype=dtype))
        scale = tf.where(tf.range(shape[-1]) < self.split, 1.0, self.tail_scale)
        return w * tf.cast(scale, w.dtype)

    def get_config(self) -> dict:
        return {"split": self.split, "tail_scale": self.tail_scale, "seed": self.seed}


def sigma_bias_for_unit_sigma(sigma_param: str, sigma_min: float) -> float:
    """Raw σ output that maps to σ = 1 (code units): ``softplus⁻¹(1 - sigma_min)`` for ``softplus``, 1 for
    ``raw_clip``."""
    if sigma_param == "softplus":
        target = 1.0 - float(sigma_min)
        if target <= 0:
            return 0.0
        return float(target + math.log(-math.expm1(-target)))  # softplus⁻¹(y) = log(eˣ - 1) = y + log(1 - e⁻ʸ)
    return 1.0


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


def _pointwise_weights(conv: keras.layers.SeparableConv2D, bn: keras.layers.BatchNormalization | None, dtype):
    """Pointwise kernel ``[1, 1, C, F]`` and bias ``[F]`` of ``conv``, with an inference-mode ``bn`` after it
    folded in: ``bn(z) = z * a + b`` with ``a = γ / sqrt(var + ε)``, ``b = β - mean * a``."""
    kernel = tf.cast(conv.pointwise_kernel, tf.float32)
    bias = tf.cast(conv.bias, tf.float32) if conv.use_bias else tf.zeros([kernel.shape[-1]], tf.float32)
    if bn is not None:
        if not bn.built:
            bn.build((None, None, None, kernel.shape[-1]))
        a = tf.math.rsqrt(tf.cast(bn.moving_variance, tf.float32) + bn.epsilon)
        if bn.scale:
            a = a * tf.cast(bn.gamma, tf.float32)
        b = (bias - tf.cast(bn.moving_mean, tf.float32)) * a
        if bn.center:
            b = b + tf.cast(bn.beta, tf.float32)
        kernel, bias = kernel * a, b
    return tf.cast(kernel, dtype), tf.cast(bias, dtype)


def _separable_conv(conv: keras.layers.SeparableConv2D, x: tf.Tensor,
                    bn: keras.layers.BatchNormalization | None = None, keep: tf.Tensor | None = None,
                    samples: int = 1) -> tf.Tensor:
    """``bn(conv(tile(x, T) * keep))`` at inference, computed as ``pointwise'(tile(depthwise(x), T) * keep)``.

    * With ``keep`` (the masks of the dropout just before ``conv``): the depthwise 3x3 step runs on the B
      shared rows instead of T*B. Exact because it acts on each channel alone and ``keep`` is constant over
      space per (row, channel): ``depthwise(x * m) = depthwise(x) * m`` ('same' zero padding included).
    * With ``bn`` (inference mode only): the BN is folded into the pointwise kernel and bias, one full-size
      op less on the T*B rows.

    Args:
      conv: ``SeparableConv2D`` (stride 1, 'same', depth multiplier 1).
      x: ``[B, h, w, C]`` input (shared by the T samples when ``keep`` is given).
      bn: the BatchNormalization after ``conv`` to fold, or None.
      keep: ``[T*B, 1, 1, C]`` dropout multipliers (row ``t*B + b``), or None (no tiling).
      samples: T.

    Returns:
      ``[T*B, h, w, filters]`` (``[B, ...]`` without ``keep``).
    """
    if not conv.built:
        conv.build(x.shape)
    dtype = x.dtype
    y = tf.nn.depthwise_conv2d(x, tf.cast(conv.depthwise_kernel, dtype), strides=[1, 1, 1, 1], padding="SAME")
    if keep is not None:
        y = _tile_rows(y, samples) * keep
    kernel, bias = _pointwise_weights(conv, bn, dtype)
    return tf.nn.bias_add(tf.nn.conv2d(y, kernel, strides=1, padding="VALID"), bias)


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
      tail_channels, tail_bias_init, tail_kernel_scale: the last ``tail_channels`` predict channels (the σ
        channels of the box head) start with bias ``tail_bias_init`` and kernel columns scaled by
        ``tail_kernel_scale``.
      salt_base: salt of the dropout of repeat ``r`` at level ``l`` is ``salt_base + 16 * r + l``.
    """

    def __init__(self, out_channels: int, filters: int, repeats: int, num_levels: int = 5, mc_rate: float = 0.0,
                 bias_init: float = 0.0, salt_base: int = 0, tail_channels: int = 0, tail_bias_init: float = 0.0,
                 tail_kernel_scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.out_channels = int(out_channels)
        self.filters = int(filters)
        self.repeats = int(repeats)
        self.num_levels = int(num_levels)
        self.mc_rate = float(mc_rate)
        self.bias_init = float(bias_init)
        self.salt_base = int(salt_base)
        self.tail_channels = int(tail_channels)
        self.tail_bias_init = float(tail_bias_init)
        self.tail_kernel_scale = float(tail_kernel_scale)
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
        split = self.out_channels - self.tail_channels
        if self.tail_channels:
            pointwise_init = SplitScaledVarianceScaling(split, self.tail_kernel_scale)
            bias_init = SplitConstant(split, self.bias_init, self.tail_bias_init)
        else:
            pointwise_init = keras.initializers.VarianceScaling(1.0, "fan_in", "untruncated_normal")
            bias_init = keras.initializers.Constant(self.bias_init)
        self.predict = keras.layers.SeparableConv2D(
            self.out_channels, 3, padding="same", use_bias=True, depthwise_initializer=init,
            pointwise_initializer=pointwise_init, bias_initializer=bias_init, name="predict")

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
            and the depthwise step of the conv after it run once on the B rows; the masked result is tiled to
            ``T*B`` rows (row ``t*B + b``) and, at inference, later BNs are folded into their convs. The result
            equals running the head on the tiled inputs (up to float rounding), at less cost. Without active
            dropout the outputs are tiled.

        Returns:
          list of ``[T*B, h_l, w_l, out_channels]`` maps.
        """
        if len(inputs) != self.num_levels:
            raise ValueError(f"{self.name}: expected {self.num_levels} levels, got {len(inputs)}")
        samples = int(samples)
        dropout_on = self.mc_rate > 0.0 and bool(training or mc)
        shared = samples > 1 and dropout_on
        outputs = []
        for level, x in enumerate(inputs):
            pending = None  # MC masks of the first dropout, not yet applied to the (still B-row) x
            for r in range(self.repeats):
                idx = r * self.num_levels + level
                # on the T*B sample rows at inference the BN is folded into the conv (fewer full-size ops)
                fold_bn = shared and r > 0 and not training
                if pending is not None or fold_bn:
                    x = _separable_conv(self.convs[r], x, self.bns[idx] if fold_bn else None, pending, samples)
                else:
                    x = self.convs[r](x)
                if not fold_bn:
                    x = self.bns[idx](x, training=training)
                pending = None
                x = keras.activations.silu(x)
                if r == 0 and shared:
                    # The T samples share x until this dropout. Its masks are drawn for T*B rows (row t*B + b)
                    # but applied after the next conv's depthwise step, which then runs on B rows only.
                    shape = tf.shape(x)
                    pending = self.dropouts[idx].keep_mask(shape[0] * samples, shape[-1], seed, x.dtype)
                else:
                    x = self.dropouts[idx](x, training=training, mc=mc, seed=seed)
            x = self.predict(x) if pending is None else _separable_conv(self.predict, x, None, pending, samples)
            if samples > 1 and not dropout_on:
                x = _tile_rows(x, samples)
            outputs.append(x)
        return outputs

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({
            "out_channels": self.out_channels, "filters": self.filters, "repeats": self.repeats,
            "num_levels": self.num_levels, "mc_rate": self.mc_rate, "bias_init": self.bias_init,
            "salt_base": self.salt_base, "tail_channels": self.tail_channels,
            "tail_bias_init": self.tail_bias_init, "tail_kernel_scale": self.tail_kernel_scale,
        })
        return config


@keras.saving.register_keras_serializable(package="uncertainty_det")
class ClassHead(DetectionHead):
    """Class head: ``A * num_classes`` logits per location, prior-probability bias."""

    def __init__(self, num_classes: int, num_anchors: int, filters: int, repeats: int, num_levels: int = 5,
                 mc_rate: float = 0.0, salt_base: int = 2000, **kwargs):
        for key in ("out_channels", "bias_init", "tail_channels", "tail_bias_init", "tail_kernel_scale"):
            kwargs.pop(key, None)
        super().__init__(int(num_anchors) * int(num_classes), filters, repeats, num_levels, mc_rate,
                         bias_init=-math.log((1.0 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY), salt_base=salt_base,
                         **kwargs)
        self.num_classes = int(num_classes)
        self.num_anchors = int(num_anchors)

    def get_config(self) -> dict:
        config = super().get_config()
        for key in ("out_channels", "bias_init", "tail_channels", "tail_bias_init", "tail_kernel_scale"):
            config.pop(key)
        config.update({"num_classes": self.num_classes, "num_anchors": self.num_anchors})
        return config


@keras.saving.register_keras_serializable(package="uncertainty_det")
class BoxHead(DetectionHead):
    """Box head: ``A * 4`` codes per location, or ``A * 8`` (codes then raw σ) with loss attenuation.

    ``sigma_bias_init``: initial bias of the raw σ channels (the raw value of σ = 1 under the model's
    ``sigma_param``; see :func:`sigma_bias_for_unit_sigma`).
    """

    def __init__(self, num_anchors: int, filters: int, repeats: int, num_levels: int = 5, mc_rate: float = 0.0,
                 loss_attenuation: bool = False, salt_base: int = 3000, sigma_bias_init: float = 1.0, **kwargs):
        for key in ("out_channels", "bias_init", "tail_channels", "tail_bias_init", "tail_kernel_scale"):
            kwargs.pop(key, None)
        per_anchor = 8 if loss_attenuation else 4
        sigma_channels = 4 * int(num_anchors) if loss_attenuation else 0
        super().__init__(int(num_anchors) * per_anchor, filters, repeats, num_levels, mc_rate, bias_init=0.0,
                         salt_base=salt_base, tail_channels=sigma_channels, tail_bias_init=sigma_bias_init,
                         tail_kernel_scale=SIGMA_KERNEL_SCALE, **kwargs)
        self.num_anchors = int(num_anchors)
        self.loss_attenuation = bool(loss_attenuation)
        self.sigma_bias_init = float(sigma_bias_init)

    def get_config(self) -> dict:
        config = super().get_config()
        for key in ("out_channels", "bias_init"):
            config.pop(key)
        for key in ("tail_channels", "tail_bias_init", "tail_kernel_scale"):
            config.pop(key)
        config.update({"num_anchors": self.num_anchors, "loss_attenuation": self.loss_attenuation,
                       "sigma_bias_init": self.sigma_bias_init})
        return config
