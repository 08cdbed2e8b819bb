"""EfficientDet network built from a :class:`~uncertainty_det.model.config.DetectorConfig`.

``EfficientNetBackbone`` -> ``BiFPN`` -> ``ClassHead`` / ``BoxHead``. Input: normalised float images
``[B, H, W, 3]`` (``H, W`` divisible by ``2**max_level``). Outputs are flattened over levels and anchors in
the order of :mod:`uncertainty_det.model.anchors` and cast to float32 (mixed-precision friendly):

* ``"cls"`` ``[B, N, C]`` class logits (sigmoid focal loss);
* ``"box"`` ``[B, N, 4]`` anchor codes ``[ty, tx, th, tw]``;
* ``"sigma_raw"`` ``[B, N, 4]`` raw σ outputs in anchor space (loss attenuation only; the σ parametrisation is
  applied by ``losses.sigma_from_raw``),

with ``N = Σ_l ceil(H/2**l) ceil(W/2**l) A`` over levels 3..7 and ``A = num_scales * len(aspect_ratios)``.

``mc=True`` keeps the MC dropout layers on at inference (batch norm stays in inference mode); ``seed`` makes
their masks reproducible (see :mod:`uncertainty_det.model.mc`). ``training=True`` is the train-step call:
batch norm in training mode, MC dropout (where its rate > 0) and stochastic depth act as ordinary dropout.

Save/restore with ``model.save_weights(path)`` / ``model.load_weights(path)`` (``.weights.h5``); the config
goes next to it as JSON (``config.to_dict()``). Build the model first (:func:`build_efficientdet`, or one call).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import keras
import tensorflow as tf

from .bifpn import BiFPN
from .config import DetectorConfig
from .efficientnet import BackboneWeightsError, EfficientNetBackbone, load_backbone_weights
from .heads import BoxHead, ClassHead, flatten_levels, sigma_bias_for_unit_sigma, split_box_outputs

__all__ = ["EfficientDet", "build_efficientdet", "parameter_count"]

# Salt ranges of the MC dropout layers (see mc.MCSpatialDropout2D): backbone, class head, box head.
BACKBONE_SALT = 1000
CLASS_HEAD_SALT = 100_000
BOX_HEAD_SALT = 200_000


@keras.saving.register_keras_serializable(package="uncertainty_det")
class EfficientDet(keras.Model):
    """EfficientDet with loss-attenuation box head and MC dropout (see the module docstring).

    Args:
      config: a :class:`DetectorConfig` or its ``to_dict()``.

    Attributes:
      detector_config: the config.
      backbone, fpn, class_head, box_head: the sub-networks.
    """

    def __init__(self, config: DetectorConfig | Mapping[str, Any], **kwargs):
        if isinstance(config, Mapping):
            config = DetectorConfig.from_dict(config)
        if not isinstance(config, DetectorConfig):
            raise TypeError(f"config must be a DetectorConfig or a dict, got {type(config).__name__}")
        kwargs.setdefault("name", "efficientdet")
        super().__init__(**kwargs)
        self.detector_config = config
        if config.backbone_weights is not None:
            if not Path(config.backbone_weights).expanduser().is_file():
                raise BackboneWeightsError(
                    f"backbone_weights file not found: {config.backbone_weights}. Set model.backbone_weights to a "
                    "local Keras .weights.h5 file of this EfficientNet backbone, or to null for random "
                    "initialisation (weights are never downloaded).")
        self.backbone = EfficientNetBackbone(
            width_coefficient=config.width_coefficient, depth_coefficient=config.depth_coefficient,
            drop_connect_rate=config.backbone_dropout, mc_rate=config.mc_backbone_rate, salt_base=BACKBONE_SALT,
            name="backbone")
        self.fpn = BiFPN(config.fpn_num_filters, config.fpn_cell_repeats, self.backbone.endpoint_channels,
                         method=config.fpn_weight_method, min_level=config.min_level, max_level=config.max_level,
                         name="bifpn")
        self.class_head = ClassHead(config.num_classes, config.num_anchors, config.fpn_num_filters,
                                    config.box_class_repeats, num_levels=config.num_levels,
                                    mc_rate=config.mc_class_head_rate, salt_base=CLASS_HEAD_SALT, name="class_head")
        self.box_head = BoxHead(config.num_anchors, config.fpn_num_filters, config.box_class_repeats,
                                num_levels=config.num_levels, mc_rate=config.mc_box_head_rate,
                                loss_attenuation=config.loss_attenuation, salt_base=BOX_HEAD_SALT,
                                sigma_bias_init=sigma_bias_for_unit_sigma(config.sigma_param, config.sigma_min),
                                name="box_head")

    # ------------------------------------------------------------------ building
    def build(self, input_shape=None):
        """Create all weights by one pass on zeros (``None`` sizes -> batch 1 and ``2**max_level`` px),
        then load ``backbone_weights`` if configured."""
        if self.built:
            return
        side = 2 ** self.detector_config.max_level
        shape = list(input_shape) if input_shape is not None else [None, None, None, 3]
        shape = [1 if shape[0] is None else int(shape[0]),
                 side if shape[1] is None else int(shape[1]),
                 side if shape[2] is None else int(shape[2]), 3]
        # eagerly, even when the first call happens while a tf.function is being traced: the build pass and
        # the weight loading must not become ops of that graph
        with tf.init_scope():
            images = tf.zeros(shape, self.compute_dtype)
            self.heads(self.features(images))
            if self.detector_config.backbone_weights is not None:
                load_backbone_weights(self.backbone, self.detector_config.backbone_weights)
        self.built = True

    # ------------------------------------------------------------------ forward
    def features(self, images, training: bool = False, mc: bool = False, seed=None) -> list[tf.Tensor]:
        """Backbone + BiFPN.

        Args:
          images: ``[B, H, W, 3]`` normalised float images.
          training: Python bool (batch norm in training mode, dropout on).
          mc: Python bool, MC dropout on in the backbone (where ``mc_backbone_rate > 0``).
          seed: ``None`` or an integer (scalar tensor allowed) for reproducible MC masks.

        Returns:
          5 maps ``[B, H/2**l, W/2**l, fpn_num_filters]`` for l = 3..7 (compute dtype).
        """
        c_feats = self.backbone(images, training=training, mc=mc, seed=seed)
        return self.fpn(c_feats, training=training)

    def heads(self, features: Sequence[tf.Tensor], training: bool = False, mc: bool = False,
              seed=None, samples: int = 1) -> dict[str, tf.Tensor]:
        """Class and box heads on pyramid features, flattened to anchors.

        Args:
          features: 5 maps ``[B, h_l, w_l, F]`` from :meth:`features`.
          training, mc, seed: as in :meth:`features` (``mc`` switches the head dropout on).
          samples: T. With T > 1 the heads produce T samples per image in one batched call, exactly as if
            ``features`` had been tiled T times along the batch (row ``t*B + b``), but the deterministic part
            before each head's first dropout runs once on B rows (head-only MC, see ``mc.mc_forward``).

        Returns:
          ``{"cls": [T*B, N, C], "box": [T*B, N, 4]}`` (+ ``"sigma_raw": [T*B, N, 4]`` with loss attenuation),
          float32.
        """
        cfg = self.detector_config
        features = list(features)
        cls_maps = self.class_head(features, training=training, mc=mc, seed=seed, samples=samples)
        box_maps = self.box_head(features, training=training, mc=mc, seed=seed, samples=samples)
        outputs = {"cls": tf.cast(flatten_levels(cls_maps, cfg.num_classes), tf.float32)}
        if cfg.loss_attenuation:
            codes, sigmas = split_box_outputs(box_maps, cfg.num_anchors)
            outputs["box"] = tf.cast(flatten_levels(codes, 4), tf.float32)
            outputs["sigma_raw"] = tf.cast(flatten_levels(sigmas, 4), tf.float32)
        else:
            outputs["box"] = tf.cast(flatten_levels(box_maps, 4), tf.float32)
        return outputs

    def call(self, images, training: bool = False, mc: bool = False, seed=None) -> dict[str, tf.Tensor]:
        """``heads(features(images))``: ``[B, H, W, 3]`` -> ``{"cls", "box"[, "sigma_raw"]}`` (see :meth:`heads`)."""
        return self.heads(self.features(images, training=training, mc=mc, seed=seed),
                          training=training, mc=mc, seed=seed)

    # ------------------------------------------------------------------ helpers
    def num_anchors_total(self, image_size: Sequence[int] | None = None) -> int:
        """N for an input size (default: the config's), ``Σ_l h_l w_l A`` with ceil-halving."""
        h, w = image_size or self.detector_config.image_size
        total = 0
        for level in range(self.detector_config.max_level + 1):
            if level >= self.detector_config.min_level:
                total += h * w * self.detector_config.num_anchors
            h, w = -(-h // 2), -(-w // 2)
        return total

    def get_config(self) -> dict:
        return {"name": self.name, "config": self.detector_config.to_dict()}

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)


def build_efficientdet(config: DetectorConfig | Mapping[str, Any], image_size: Sequence[int] | None = None,
                       **kwargs) -> EfficientDet:
    """Construct an :class:`EfficientDet` and create its weights (one pass on zeros).

    Args:
      config: the detector config.
      image_size: ``(H, W)`` of the build pass (default ``2**max_level`` square, the cheapest; the weights do
        not depend on the input size).
    """
    model = EfficientDet(config, **kwargs)
    side = 2 ** model.detector_config.max_level
    h, w = (side, side) if image_size is None else (int(image_size[0]), int(image_size[1]))
    # a concrete [None, H, W, 3] build shape also gives Keras' default SavedModel signature a known rank
    model.build((None, h, w, 3))
    return model


def parameter_count(model: keras.Model) -> dict[str, int]:
    """``{"total", "trainable", "non_trainable"}`` scalar counts (BN moving statistics are non-trainable)."""
    trainable = int(sum(int(tf.size(v)) for v in model.trainable_weights))
    non_trainable = int(sum(int(tf.size(v)) for v in model.non_trainable_weights))
    return {"total": trainable + non_trainable, "trainable": trainable, "non_trainable": non_trainable}
