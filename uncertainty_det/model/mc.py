"""MC dropout: the seedable channel-dropout layer and batched MC sampling of an EfficientDet.

Seeding. Each :class:`MCSpatialDropout2D` has a fixed integer ``salt`` given by its place in the network
(block / repeat / level), so it does not depend on layer names or on how many models a process built.
Called with ``seed=s`` it draws its mask with a stateless op seeded by ``(s, salt)``: the same seed gives
the same masks in every call, every process and after a weights reload; different seeds give different
masks; different layers (and different pyramid levels) get independent masks. Called with ``seed=None`` it
uses TensorFlow's stateful RNG: fresh masks on every call. Masks are drawn per batch row, so the T tiled
copies of an image get independent masks.

Sampling modes (``mc_forward``):

* ``off`` (or T = 1): one deterministic pass, outputs with T = 1.
* ``head``: backbone + BiFPN once on ``[B, H, W, 3]``; the 5 feature maps are tiled T times along the batch
  (row ``t * B + b`` is sample t of image b) and the heads run once on the ``[T*B, ...]`` batch with MC
  dropout on; outputs reshaped to ``[T, B, ...]``. (The tiling happens inside the heads: the conv -> BN ->
  swish before their first dropout is deterministic and runs on B rows only, and so does the depthwise step
  of the next separable conv, because a per-channel mask commutes with it. The result is the same as tiling
  the features.)
* ``full``: the images are tiled T times and the whole network runs once with MC dropout on.

Everything is plain TensorFlow ops with static ``samples``/``mode``, so ``mc_forward`` can be traced inside a
``tf.function`` or a SavedModel signature (``seed`` may be a scalar integer tensor there).
"""
from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from .config import normalize_mc_mode

__all__ = ["MCSpatialDropout2D", "mc_forward", "mc_function", "seed_pair"]


def seed_pair(seed: Any, salt: int) -> tf.Tensor:
    """The shape-[2] int64 seed ``(seed, salt)`` of a stateless random op."""
    seed = tf.cast(tf.reshape(tf.convert_to_tensor(seed), []), tf.int64)
    return tf.stack([seed, tf.constant(int(salt), tf.int64)])


@keras.saving.register_keras_serializable(package="uncertainty_det")
class MCSpatialDropout2D(keras.layers.Layer):
    """Channel dropout (SpatialDropout2D) that can stay on at inference for MC sampling.

    Input/output ``[B, h, w, C]`` (any float dtype). Each (batch row, channel) is kept with probability
    ``1 - rate`` and rescaled by ``1 / (1 - rate)``, or zeroed for the whole feature map.

    Active only when ``rate > 0`` and (``training`` or ``mc``); otherwise the identity.

    Args:
      rate: drop probability p in [0, 1).
      salt: integer identifying this layer's place in the network (combined with the call's seed).
    """

    def __init__(self, rate: float = 0.0, salt: int = 0, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
        self.rate = float(rate)
        self.salt = int(salt)
        self.supports_masking = True

    def is_active(self, training: bool = False, mc: bool = False) -> bool:
        """Whether a call with these flags drops channels."""
        return self.rate > 0.0 and bool(training or mc)

    def call(self, inputs, training: bool = False, mc: bool = False, seed=None):
        """Apply the dropout.

        Args:
          inputs: ``[B, h, w, C]`` features.
          training: Python bool, training-mode call (ordinary dropout).
          mc: Python bool, MC sampling at inference.
          seed: ``None`` (stateful RNG) or an integer / scalar integer tensor (reproducible masks).

        Returns:
          ``[B, h, w, C]``, same dtype as ``inputs``.
        """
        if not self.is_active(training, mc):
            return inputs
        shape = tf.shape(inputs)
        return inputs * self.keep_mask(shape[0], shape[-1], seed, inputs.dtype)

    def keep_mask(self, rows, channels, seed=None, dtype=tf.float32) -> tf.Tensor:
        """The ``[rows, 1, 1, channels]`` multiplier (0 or ``1 / (1 - rate)``) that :meth:`call` applies to a
        ``[rows, h, w, channels]`` input with the same ``seed`` (the same draws, so the two agree exactly)."""
        mask_shape = tf.stack([rows, channels])
        if seed is None:
            u = tf.random.uniform(mask_shape, dtype=tf.float32)
        else:
            u = tf.random.stateless_uniform(mask_shape, seed=seed_pair(seed, self.salt), dtype=tf.float32)
        keep = tf.cast(u >= self.rate, tf.float32) * (1.0 / (1.0 - self.rate))
        return tf.cast(keep[:, None, None, :], dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"rate": self.rate, "salt": self.salt})
        return config


def _tile_batch(x: tf.Tensor, samples: int) -> tf.Tensor:
    """``[B, ...] -> [T*B, ...]`` with row ``t*B + b`` = ``x[b]``."""
    multiples = tf.concat([[samples], tf.ones([tf.rank(x) - 1], tf.int32)], axis=0)
    return tf.tile(x, multiples)


def _split_samples(x: tf.Tensor, samples: int) -> tf.Tensor:
    """``[T*B, N, k] -> [T, B, N, k]`` (inverse of :func:`_tile_batch`'s row order)."""
    shape = tf.shape(x)
    out = tf.reshape(x, tf.concat([[samples, shape[0] // samples], shape[1:]], axis=0))
    static = x.shape
    if static[0] is not None:
        out.set_shape([samples, static[0] // samples, *static[1:]])
    else:
        out.set_shape([samples, None, *static[1:]])
    return out


def mc_forward(model, images, samples: int, mode: str = "head", seed: Any = None) -> dict[str, tf.Tensor]:
    """MC-dropout forward pass with a leading sample axis.

    Args:
      model: an :class:`~uncertainty_det.model.efficientdet.EfficientDet` (anything with ``features``,
        ``heads`` and ``__call__`` as it has).
      images: ``[B, H, W, 3]`` normalised float images.
      samples: T, number of MC samples (Python int).
      mode: ``"off" | "head" | "full"`` (``False`` means ``"off"``).
      seed: ``None`` for fresh random masks, or an integer (Python or scalar tensor) for reproducible masks.

    Returns:
      dict of float32 tensors with a leading T axis (T = 1 for ``off`` or ``samples == 1``):
      ``"cls"`` ``[T, B, N, C]`` logits, ``"box"`` ``[T, B, N, 4]`` anchor codes ``(ty, tx, th, tw)`` and, with
      loss attenuation, ``"sigma_raw"`` ``[T, B, N, 4]`` raw σ outputs (anchor space, before
      ``losses.sigma_from_raw``).
    """
    mode = normalize_mc_mode(mode)
    samples = int(samples)
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    images = tf.convert_to_tensor(images)
    if mode == "off" or samples == 1:
        outputs = model(images, training=False)
        return {k: v[None] for k, v in outputs.items()}
    if mode == "head":
        features = model.features(images, training=False, mc=False)
        # == heads on the T-times tiled features; the heads tile before their first dropout
        outputs = model.heads(features, training=False, mc=True, seed=seed, samples=samples)
    else:  # full
        tiled_images = _tile_batch(images, samples)
        features = model.features(tiled_images, training=False, mc=True, seed=seed)
        outputs = model.heads(features, training=False, mc=True, seed=seed)
    return {k: _split_samples(v, samples) for k, v in outputs.items()}


def mc_function(model, samples: int, mode: str = "head", seeded: bool = False):
    """A ``tf.function`` running :func:`mc_forward` (graph mode, no XLA).

    Returns:
      ``fn(images)`` when ``seeded`` is False, else ``fn(images, seed)`` with ``seed`` a scalar int64 tensor;
      both take ``[B, H, W, 3]`` float32 images of any batch size and return :func:`mc_forward`'s dict.
    """
    mode = normalize_mc_mode(mode)
    image_spec = tf.TensorSpec([None, None, None, 3], tf.float32, name="images")
    if seeded:
        @tf.function(input_signature=[image_spec, tf.TensorSpec([], tf.int64, name="seed")])
        def fn_seeded(images, seed):
            return mc_forward(model, images, samples, mode, seed=seed)

        return fn_seeded

    @tf.function(input_signature=[image_spec])
    def fn(images):
        return mc_forward(model, images, samples, mode)

    return fn
