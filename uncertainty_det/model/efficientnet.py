"""EfficientNet B0-B7 backbone returning the C3, C4, C5 feature maps (strides 8, 16, 32).

Architecture (Tan & Le, 2019): a 3x3 stride-2 stem conv, then 7 stages of MBConv blocks given by the B0 table
below, scaled by the compound coefficients:

* channels: ``round_filters(f, width)`` = ``f * width`` rounded to the nearest multiple of 8 (at least 8),
  plus 8 when rounding lost more than 10 %;
* block repeats: ``round_repeats(r, depth)`` = ``ceil(r * depth)``.

MBConv block: [1x1 expansion conv + BN + swish when ``expand_ratio != 1``] -> depthwise kxk conv (stride s)
+ BN + swish -> squeeze-excite (ratio 0.25 of the block's input channels, swish / sigmoid) -> 1x1 projection
conv + BN -> residual add (with stochastic depth in training) when stride 1 and in == out channels.

MC dropout (reference §1.5): an :class:`~uncertainty_det.model.mc.MCSpatialDropout2D` after the expansion
activation (blocks with ``expand_ratio != 1``) and after the depthwise activation, active when the backbone
rate > 0 and (training or ``mc=True``). Batch norm always uses its inference statistics unless ``training``.

Convolution kernels use ``VarianceScaling(2.0, "fan_out", normal)`` (EfficientNet's initialiser; Keras' Glorot
default makes an untrained depthwise stack collapse its activations and all MC samples look the same).

C3, C4 and C5 are the outputs of stages 3, 5 and 7 (the last block before each stride change); the
classification top (1x1 conv to 1280 channels, pooling, dense) is not built.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf

from uncertainty_det.errors import UserError

from .mc import MCSpatialDropout2D

__all__ = [
    "B0_BLOCKS",
    "BackboneWeightsError",
    "BlockSpec",
    "EfficientNetBackbone",
    "MBConvBlock",
    "StochasticDepth",
    "conv_initializer",
    "load_backbone_weights",
    "round_filters",
    "round_repeats",
]


@dataclass(frozen=True)
class BlockSpec:
    """One stage of the EfficientNet-B0 table."""

    kernel_size: int
    repeats: int
    filters_in: int
    filters_out: int
    expand_ratio: int
    stride: int


#: EfficientNet-B0 stages (kernel, repeats, in, out, expand ratio, stride); SE ratio 0.25 everywhere.
B0_BLOCKS: tuple[BlockSpec, ...] = (
    BlockSpec(3, 1, 32, 16, 1, 1),
    BlockSpec(3, 2, 16, 24, 6, 2),
    BlockSpec(5, 2, 24, 40, 6, 2),
    BlockSpec(3, 3, 40, 80, 6, 2),
    BlockSpec(5, 3, 80, 112, 6, 1),
    BlockSpec(5, 4, 112, 192, 6, 2),
    BlockSpec(3, 1, 192, 320, 6, 1),
)
STEM_FILTERS = 32
SE_RATIO = 0.25
#: stage indices (0-based) whose last block output is C3, C4, C5
ENDPOINT_STAGES = (2, 4, 6)
#: Standard compound coefficients (width, depth, resolution) of the named variants, for reference.
EFFICIENTNET_COEFFICIENTS = {
    "efficientnet-b0": (1.0, 1.0, 224),
    "efficientnet-b1": (1.0, 1.1, 240),
    "efficientnet-b2": (1.1, 1.2, 260),
    "efficientnet-b3": (1.2, 1.4, 300),
    "efficientnet-b4": (1.4, 1.8, 380),
    "efficientnet-b5": (1.6, 2.2, 456),
    "efficientnet-b6": (1.8, 2.6, 528),
    "efficientnet-b7": (2.0, 3.1, 600),
}
BN_MOMENTUM = 0.99
BN_EPSILON = 1e-3


class BackboneWeightsError(UserError, FileNotFoundError):
    """The ``backbone_weights`` file is missing or does not fit this backbone."""


def round_filters(filters: int, width_coefficient: float, divisor: int = 8) -> int:
    """Channels scaled by ``width_coefficient`` and rounded to a multiple of ``divisor`` (never down by > 10 %)."""
    scaled = filters * width_coefficient
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth_coefficient: float) -> int:
    """Block repeats scaled by ``depth_coefficient``, rounded up."""
    return int(math.ceil(depth_coefficient * repeats))


def conv_initializer() -> keras.initializers.Initializer:
    """EfficientNet's conv kernel initialiser: normal with std ``sqrt(2 / fan_out)``."""
    return keras.initializers.VarianceScaling(scale=2.0, mode="fan_out", distribution="untruncated_normal")


def _bn(name: str) -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


@keras.saving.register_keras_serializable(package="uncertainty_det")
class StochasticDepth(keras.layers.Layer):
    """Drop a residual branch per sample in training (rescaled by ``1 / (1 - rate)``); identity otherwise.

    Input/output ``[B, ...]``.
    """

    def __init__(self, rate: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.rate = float(rate)

    def call(self, inputs, training: bool = False):
        if not training or self.rate <= 0.0:
            return inputs
        keep = 1.0 - self.rate
        shape = tf.concat([tf.shape(inputs)[:1], tf.ones([tf.rank(inputs) - 1], tf.int32)], axis=0)
        mask = tf.floor(keep + tf.random.uniform(shape, dtype=tf.float32))
        return inputs * tf.cast(mask / keep, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        config = super().get_config()
        config["rate"] = self.rate
        return config


@keras.saving.register_keras_serializable(package="uncertainty_det")
class MBConvBlock(keras.layers.Layer):
    """Mobile inverted bottleneck with squeeze-excite; ``[B, h, w, filters_in] -> [B, h/s, w/s, filters_out]``.

    Args:
      filters_in, filters_out: channels in / out.
      kernel_size: depthwise kernel size (3 or 5).
      stride: depthwise stride (1 or 2).
      expand_ratio: expansion factor of the inverted bottleneck (1 = no expansion conv).
      se_ratio: squeeze-excite channels as a share of ``filters_in``.
      drop_rate: stochastic-depth rate of the residual branch (training only).
      mc_rate: MC channel-dropout rate (0 = no-op).
      salt: base salt of the block's MC dropout layers (uses ``salt`` and ``salt + 1``).
    """

    def __init__(self, filters_in: int, filters_out: int, kernel_size: int = 3, stride: int = 1,
                 expand_ratio: int = 1, se_ratio: float = SE_RATIO, drop_rate: float = 0.0,
                 mc_rate: float = 0.0, salt: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.filters_in = int(filters_in)
        self.filters_out = int(filters_out)
        self.kernel_size = int(kernel_size)
        self.stride = int(stride)
        self.expand_ratio = int(expand_ratio)
        self.se_ratio = float(se_ratio)
        self.drop_rate = float(drop_rate)
        self.mc_rate = float(mc_rate)
        self.salt = int(salt)
        expanded = self.filters_in * self.expand_ratio
        init = conv_initializer()
        if self.expand_ratio != 1:
            self.expand_conv = keras.layers.Conv2D(expanded, 1, padding="same", use_bias=False,
                                                   kernel_initializer=init, name="expand_conv")
            self.expand_bn = _bn("expand_bn")
            self.expand_dropout = MCSpatialDropout2D(self.mc_rate, salt=self.salt, name="expand_mc_dropout")
        self.depthwise_conv = keras.layers.DepthwiseConv2D(self.kernel_size, strides=self.stride, padding="same",
                                                           use_bias=False, depthwise_initializer=init,
                                                           name="depthwise_conv")
        self.depthwise_bn = _bn("depthwise_bn")
        self.depthwise_dropout = MCSpatialDropout2D(self.mc_rate, salt=self.salt + 1, name="depthwise_mc_dropout")
        se_filters = max(1, int(self.filters_in * self.se_ratio))
        self.se_reduce = keras.layers.Conv2D(se_filters, 1, padding="same", use_bias=True,
                                             kernel_initializer=init, name="se_reduce")
        self.se_expand = keras.layers.Conv2D(expanded, 1, padding="same", use_bias=True,
                                             kernel_initializer=init, name="se_expand")
        self.project_conv = keras.layers.Conv2D(self.filters_out, 1, padding="same", use_bias=False,
                                                kernel_initializer=init, name="project_conv")
        self.project_bn = _bn("project_bn")
        self.has_residual = self.stride == 1 and self.filters_in == self.filters_out
        if self.has_residual:
            self.stochastic_depth = StochasticDepth(self.drop_rate, name="stochastic_depth")

    def build(self, input_shape=None):
        # sub-layers create their weights on the first call (avoids Keras' symbolic build pass)
        self.built = True

    def call(self, inputs, training: bool = False, mc: bool = False, seed=None):
        """``inputs`` ``[B, h, w, filters_in]`` -> ``[B, ceil(h/stride), ceil(w/stride), filters_out]``."""
        x = inputs
        if self.expand_ratio != 1:
            x = self.expand_conv(x)
            x = self.expand_bn(x, training=training)
            x = keras.activations.silu(x)
            x = self.expand_dropout(x, training=training, mc=mc, seed=seed)
        x = self.depthwise_conv(x)
        x = self.depthwise_bn(x, training=training)
        x = keras.activations.silu(x)
        x = self.depthwise_dropout(x, training=training, mc=mc, seed=seed)
        s = keras.ops.mean(x, axis=(1, 2), keepdims=True)
        s = keras.activations.silu(self.se_reduce(s))
        s = keras.activations.sigmoid(self.se_expand(s))
        x = x * s
        x = self.project_conv(x)
        x = self.project_bn(x, training=training)
        if self.has_residual:
            x = self.stochastic_depth(x, training=training) + inputs
        return x

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({
            "filters_in": self.filters_in, "filters_out": self.filters_out, "kernel_size": self.kernel_size,
            "stride": self.stride, "expand_ratio": self.expand_ratio, "se_ratio": self.se_ratio,
            "drop_rate": self.drop_rate, "mc_rate": self.mc_rate, "salt": self.salt,
        })
        return config


@keras.saving.register_keras_serializable(package="uncertainty_det")
class EfficientNetBackbone(keras.Model):
    """EfficientNet feature extractor: ``[B, H, W, 3]`` -> ``[C3, C4, C5]``.

    ``C3`` is ``[B, H/8, W/8, c3]``, ``C4`` ``[B, H/16, W/16, c4]``, ``C5`` ``[B, H/32, W/32, c5]`` (sizes by
    ceil-halving); the channels are in :attr:`endpoint_channels` (40, 112, 320 for B0).

    Args:
      width_coefficient, depth_coefficient: compound scaling.
      drop_connect_rate: stochastic-depth rate of the last block (block ``i`` of ``n`` uses ``rate * i / n``).
      mc_rate: MC channel-dropout rate of every MBConv block (0 = off).
      salt_base: salt of the first MC dropout layer; block ``i`` uses ``salt_base + 2*i`` and ``+ 2*i + 1``.
    """

    def __init__(self, width_coefficient: float = 1.0, depth_coefficient: float = 1.0,
                 drop_connect_rate: float = 0.2, mc_rate: float = 0.0, salt_base: int = 1000,
                 name: str = "backbone", **kwargs):
        super().__init__(name=name, **kwargs)
        self.width_coefficient = float(width_coefficient)
        self.depth_coefficient = float(depth_coefficient)
        self.drop_connect_rate = float(drop_connect_rate)
        self.mc_rate = float(mc_rate)
        self.salt_base = int(salt_base)
        init = conv_initializer()
        self.stem_conv = keras.layers.Conv2D(round_filters(STEM_FILTERS, self.width_coefficient), 3, strides=2,
                                             padding="same", use_bias=False, kernel_initializer=init,
                                             name="stem_conv")
        self.stem_bn = _bn("stem_bn")
        specs = []
        for stage, spec in enumerate(B0_BLOCKS):
            f_in = round_filters(spec.filters_in, self.width_coefficient)
            f_out = round_filters(spec.filters_out, self.width_coefficient)
            for r in range(round_repeats(spec.repeats, self.depth_coefficient)):
                specs.append((stage, r, f_in if r == 0 else f_out, f_out, spec.kernel_size,
                              spec.stride if r == 0 else 1, spec.expand_ratio))
        total = len(specs)
        self.blocks = []
        self._endpoint_blocks = []
        for i, (stage, r, f_in, f_out, k, s, e) in enumerate(specs):
            self.blocks.append(MBConvBlock(
                f_in, f_out, kernel_size=k, stride=s, expand_ratio=e, se_ratio=SE_RATIO,
                drop_rate=self.drop_connect_rate * i / total, mc_rate=self.mc_rate,
                salt=self.salt_base + 2 * i, name=f"block{stage + 1}{chr(ord('a') + r)}"))
            last_of_stage = i + 1 == total or specs[i + 1][0] != stage
            if last_of_stage and stage in ENDPOINT_STAGES:
                self._endpoint_blocks.append(i)
        self.endpoint_channels = tuple(round_filters(B0_BLOCKS[s].filters_out, self.width_coefficient)
                                       for s in ENDPOINT_STAGES)

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def build(self, input_shape=None):
        """Create the weights by one pass on zeros of ``input_shape`` (``None`` dims -> 1 batch / 64 px)."""
        if self.built:
            return
        shape = list(input_shape) if input_shape is not None else [None, None, None, 3]
        shape = [1 if shape[0] is None else int(shape[0]),
                 64 if shape[1] is None else int(shape[1]),
                 64 if shape[2] is None else int(shape[2]), 3]
        with tf.init_scope():  # eager even when first called inside a tf.function trace
            self._forward(tf.zeros(shape, self.compute_dtype), training=False, mc=False, seed=None)
        self.built = True

    def _forward(self, images, training=False, mc=False, seed=None):
        x = self.stem_conv(images)
        x = self.stem_bn(x, training=training)
        x = keras.activations.silu(x)
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x, training=training, mc=mc, seed=seed)
            if i in self._endpoint_blocks:
                outputs.append(x)
        return outputs

    def call(self, images, training: bool = False, mc: bool = False, seed=None):
        """``images`` ``[B, H, W, 3]`` normalised -> ``[C3, C4, C5]`` (see the class docstring)."""
        return self._forward(images, training=training, mc=mc, seed=seed)

    def get_config(self) -> dict:
        return {
            "name": self.name, "width_coefficient": self.width_coefficient,
            "depth_coefficient": self.depth_coefficient, "drop_connect_rate": self.drop_connect_rate,
            "mc_rate": self.mc_rate, "salt_base": self.salt_base,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def load_backbone_weights(backbone: EfficientNetBackbone, path) -> None:
    """Load a local Keras ``.weights.h5`` file of this backbone (e.g. converted ImageNet weights). Never downloads.

    The file must have been written by ``EfficientNetBackbone.save_weights`` for the same width/depth
    coefficients. The backbone is built first if needed.

    Raises:
      BackboneWeightsError: the file is missing, not a ``.weights.h5`` file, or does not fit the backbone.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise BackboneWeightsError(
            f"backbone_weights file not found: {path}. Set model.backbone_weights to a local Keras .weights.h5 "
            "file of this EfficientNet backbone, or to null for random initialisation (weights are never "
            "downloaded).")
    if not path.name.endswith(".weights.h5"):
        raise BackboneWeightsError(
            f"backbone_weights must be a Keras '.weights.h5' file (EfficientNetBackbone.save_weights), got {path}")
    if not backbone.built:
        backbone.build((1, 64, 64, 3))
    try:
        backbone.load_weights(str(path))
    except Exception as exc:  # noqa: BLE001 - re-raised with the fix
        raise BackboneWeightsError(
            f"backbone_weights {path} does not fit this backbone (width {backbone.width_coefficient}, depth "
            f"{backbone.depth_coefficient}): {exc}") from exc
