"""BiFPN feature network (Tan, Pang & Le, 2020): C3..C5 -> P3..P7 of ``fpn_num_filters`` channels.

* Extra levels: ``P6`` = max-pool(3x3, stride 2) of C5, after a 1x1 conv + BN when C5's channels differ from
  ``fpn_num_filters``; ``P7`` (and any level above) = max-pool of the level below.
* A BiFPN cell over levels ``l = 3..7`` (inputs ``P_l``):

  * top-down: ``T_7 = P_7``; ``T_l = node(P_l, up(T_{l+1}))`` for ``l = 6..3``; ``O_3 = T_3``;
  * bottom-up: ``O_l = node(P_l, T_l, down(O_{l-1}))`` for ``l = 4..6``; ``O_7 = node(P_7, down(O_6))``.

  ``up`` is 2x nearest-neighbour upsampling, ``down`` a 3x3 stride-2 max-pool. An input whose channels differ
  from ``fpn_num_filters`` (the backbone maps in the first cell) gets its own 1x1 conv + BN per node.
  ``node`` = fusion -> swish -> separable 3x3 conv -> BN, with fusion ``fastattn`` (fast normalised fusion,
  ``sum_i relu(w_i) x_i / (sum_i relu(w_i) + 1e-4)``, learned ``w`` initialised to 1) or ``sum``.
* ``fpn_cell_repeats`` cells; the outputs of one are the inputs of the next.

Shapes: level ``l`` is ``[B, H / 2**l, W / 2**l, F]`` (ceil-halving; exact when ``H, W`` are divisible by
``2**max_level``).
"""
from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from .efficientnet import BN_EPSILON, BN_MOMENTUM, conv_initializer

__all__ = ["BiFPN", "BiFPNCell", "FastFusion", "ResampleConv"]

FUSION_EPSILON = 1e-4


def _bn(name: str) -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def _upsample(x, target):
    """Nearest-neighbour 2x upsampling of ``x`` to the spatial size of ``target`` (``[B, h, w, C]``)."""
    size = tf.shape(target)[1:3]
    up = tf.repeat(tf.repeat(x, 2, axis=1), 2, axis=2)
    return up[:, : size[0], : size[1], :]


def _downsample(x):
    """3x3 stride-2 'same' max-pool: ``[B, h, w, C] -> [B, ceil(h/2), ceil(w/2), C]``."""
    return tf.nn.max_pool2d(x, ksize=3, strides=2, padding="SAME")


@keras.saving.register_keras_serializable(package="uncertainty_det")
class FastFusion(keras.layers.Layer):
    """Weighted fusion of same-shape maps: ``fastattn`` = ``Σ relu(w_i) x_i / (Σ relu(w_i) + 1e-4)``; ``sum`` = ``Σ x_i``.

    Input: a list of ``num_inputs`` tensors ``[B, h, w, C]``; output ``[B, h, w, C]``.
    """

    def __init__(self, num_inputs: int, method: str = "fastattn", **kwargs):
        super().__init__(**kwargs)
        if method not in ("fastattn", "sum"):
            raise ValueError(f"fusion method must be fastattn or sum, got {method!r}")
        self.num_inputs = int(num_inputs)
        self.method = method

    def build(self, input_shape=None):
        if self.method == "fastattn":
            self.fusion_weights = self.add_weight(name="weights", shape=(self.num_inputs,),
                                                  initializer="ones", trainable=True)
        self.built = True

    def call(self, inputs):
        if len(inputs) != self.num_inputs:
            raise ValueError(f"{self.name}: expected {self.num_inputs} inputs, got {len(inputs)}")
        if self.method == "sum":
            return tf.add_n(list(inputs))
        w = tf.nn.relu(tf.cast(self.fusion_weights, inputs[0].dtype))
        total = tf.reduce_sum(w) + tf.cast(FUSION_EPSILON, w.dtype)
        return tf.add_n([w[i] * x for i, x in enumerate(inputs)]) / total

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"num_inputs": self.num_inputs, "method": self.method})
        return config


@keras.saving.register_keras_serializable(package="uncertainty_det")
class ResampleConv(keras.layers.Layer):
    """1x1 conv (no bias) + BN mapping ``[B, h, w, C_in]`` to ``[B, h, w, filters]``."""

    def __init__(self, filters: int, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.conv = keras.layers.Conv2D(self.filters, 1, padding="same", use_bias=False,
                                        kernel_initializer=conv_initializer(), name="conv")
        self.bn = _bn("bn")

    def build(self, input_shape=None):
        # sub-layers create their weights on the first call (avoids Keras' symbolic build pass)
        self.built = True

    def call(self, inputs, training: bool = False):
        return self.bn(self.conv(inputs), training=training)

    def get_config(self) -> dict:
        config = super().get_config()
        config["filters"] = self.filters
        return config


@keras.saving.register_keras_serializable(package="uncertainty_det")
class FusionNode(keras.layers.Layer):
    """One BiFPN node: [1x1 resample of inputs with other widths] -> fusion -> swish -> sepconv 3x3 -> BN.

    Args:
      filters: output channels F.
      input_channels: channels of each input (inputs with ``!= F`` get a :class:`ResampleConv`).
      method: ``fastattn`` or ``sum``.
    """

    def __init__(self, filters: int, input_channels: Sequence[int], method: str = "fastattn", **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.input_channels = tuple(int(c) for c in input_channels)
        self.method = method
        self.resample = [ResampleConv(self.filters, name=f"resample_{i}") if c != self.filters else None
                         for i, c in enumerate(self.input_channels)]
        self._resample_layers = [r for r in self.resample if r is not None]
        self.fusion = FastFusion(len(self.input_channels), method, name="fusion")
        init = conv_initializer()
        self.conv = keras.layers.SeparableConv2D(self.filters, 3, padding="same", use_bias=False,
                                                 depthwise_initializer=init, pointwise_initializer=init,
                                                 name="sepconv")
        self.bn = _bn("bn")

    def resample_input(self, i: int, x, training: bool = False):
        """Map input ``i`` to F channels (identity when it already has F)."""
        layer = self.resample[i]
        return x if layer is None else layer(x, training=training)

    def build(self, input_shape=None):
        # sub-layers create their weights on the first call (avoids Keras' symbolic build pass)
        self.built = True

    def call(self, inputs, training: bool = False):
        """``inputs``: list of same-size maps (already resampled spatially, channels may differ) -> ``[B, h, w, F]``."""
        xs = [self.resample_input(i, x, training) for i, x in enumerate(inputs)]
        x = self.fusion(xs)
        x = keras.activations.silu(x)
        x = self.conv(x)
        return self.bn(x, training=training)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"filters": self.filters, "input_channels": list(self.input_channels), "method": self.method})
        return config


@keras.saving.register_keras_serializable(package="uncertainty_det")
class BiFPNCell(keras.layers.Layer):
    """One BiFPN cell over ``len(level_channels)`` levels (lowest stride first) -> same levels with F channels.

    Args:
      filters: F.
      level_channels: channels of the input map at each level.
      method: fusion method.
    """

    def __init__(self, filters: int, level_channels: Sequence[int], method: str = "fastattn", **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.level_channels = tuple(int(c) for c in level_channels)
        self.method = method
        n = len(self.level_channels)
        if n < 2:
            raise ValueError("a BiFPN cell needs at least 2 levels")
        f = self.filters
        # top-down node for level index i (0 = lowest stride) fuses P_i and up(T_{i+1}); T_{n-1} is the raw top
        # input, which still has the backbone's width when the pyramid stops at C5 (max_level 5)
        self.top_down = [FusionNode(f, (self.level_channels[i], f if i + 1 < n - 1 else self.level_channels[-1]),
                                    method, name=f"td_{i}")
                         for i in range(n - 1)]
        # bottom-up node for level index i >= 1 fuses P_i, [T_i], down(O_{i-1})
        self.bottom_up = []
        for i in range(1, n):
            chans = (self.level_channels[i], f, f) if i < n - 1 else (self.level_channels[i], f)
            self.bottom_up.append(FusionNode(f, chans, method, name=f"bu_{i}"))

    def build(self, input_shape=None):
        # sub-layers create their weights on the first call (avoids Keras' symbolic build pass)
        self.built = True

    def call(self, inputs, training: bool = False):
        """``inputs``: list of ``[B, h_l, w_l, c_l]`` -> list of ``[B, h_l, w_l, F]`` (same levels)."""
        n = len(self.level_channels)
        td = [None] * n
        td[n - 1] = inputs[n - 1]
        for i in range(n - 2, -1, -1):
            td[i] = self.top_down[i]([inputs[i], _upsample(td[i + 1], inputs[i])], training=training)
        out = [None] * n
        out[0] = td[0]
        for i in range(1, n):
            down = _downsample(out[i - 1])
            node_inputs = [inputs[i], td[i], down] if i < n - 1 else [inputs[i], down]
            out[i] = self.bottom_up[i - 1](node_inputs, training=training)
        return out

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"filters": self.filters, "level_channels": list(self.level_channels), "method": self.method})
        return config


@keras.saving.register_keras_serializable(package="uncertainty_det")
class BiFPN(keras.layers.Layer):
    """Backbone maps ``[C3, C4, C5]`` -> pyramid ``[P3, ..., P_max_level]`` of ``filters`` channels.

    Args:
      filters: F (``fpn_num_filters``).
      cell_repeats: number of BiFPN cells.
      backbone_channels: channels of C3, C4, C5.
      method: ``fastattn`` or ``sum``.
      min_level, max_level: pyramid levels (``min_level`` 3).
    """

    def __init__(self, filters: int, cell_repeats: int, backbone_channels: Sequence[int],
                 method: str = "fastattn", min_level: int = 3, max_level: int = 7, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.cell_repeats = int(cell_repeats)
        self.backbone_channels = tuple(int(c) for c in backbone_channels)
        self.method = method
        self.min_level = int(min_level)
        self.max_level = int(max_level)
        if self.min_level != 3 or len(self.backbone_channels) != 3:
            raise ValueError("BiFPN expects min_level 3 and the three backbone maps C3, C4, C5")
        num_levels = self.max_level - self.min_level + 1
        extra = num_levels - 3
        c5 = self.backbone_channels[-1]
        self.p6_resample = ResampleConv(self.filters, name="p6_resample") if extra > 0 and c5 != self.filters else None
        level_channels = list(self.backbone_channels) + [self.filters] * extra
        self.cells = []
        for r in range(self.cell_repeats):
            self.cells.append(BiFPNCell(self.filters, level_channels, method, name=f"cell_{r}"))
            level_channels = [self.filters] * num_levels

    def build(self, input_shape=None):
        # sub-layers create their weights on the first call (avoids Keras' symbolic build pass)
        self.built = True

    def call(self, inputs, training: bool = False):
        """``inputs`` ``[C3, C4, C5]`` -> list of ``max_level - 2`` maps ``[B, H/2**l, W/2**l, F]``, l = 3..max_level."""
        feats = list(inputs)
        x = feats[-1]
        for level in range(6, self.max_level + 1):
            if level == 6 and self.p6_resample is not None:
                x = self.p6_resample(x, training=training)
            x = _downsample(x)
            feats.append(x)
        for cell in self.cells:
            feats = cell(feats, training=training)
        return feats

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({
            "filters": self.filters, "cell_repeats": self.cell_repeats,
            "backbone_channels": list(self.backbone_channels), "method": self.method,
            "min_level": self.min_level, "max_level": self.max_level,
        })
        return config
