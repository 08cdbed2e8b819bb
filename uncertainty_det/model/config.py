"""Detector configuration: one flat dataclass for the network and its uncertainty switches.

``DetectorConfig`` holds the keys of a ``conf/model/*.yaml`` file, the keys of a ``conf/uncertainty/*.yaml``
file and ``num_classes``. It is what :class:`uncertainty_det.model.efficientdet.EfficientDet` is built from,
and ``to_dict()`` / ``DetectorConfig.from_dict()`` round-trip it through JSON (the file saved next to the
checkpoints).

The two YAML files both have a ``name`` key: the model's is ``name``, the uncertainty's is
``uncertainty_name``.

YAML 1.1 reads ``mc: off`` as the boolean ``False``; it is accepted and normalised to ``"off"``.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ..containers import to_plain

__all__ = [
    "BACKBONES",
    "MC_MODES",
    "DetectorConfig",
    "detector_config_from_dicts",
    "normalize_mc_mode",
]

#: EfficientNet variants whose block table the backbone builds (all share the B0 table; the compound
#: scaling is given by ``width_coefficient`` / ``depth_coefficient`` of the config).
BACKBONES = tuple(f"efficientnet-b{i}" for i in range(8))
MC_MODES = ("off", "head", "full")
FPN_WEIGHT_METHODS = ("fastattn", "sum")
SIGMA_PARAMS = ("softplus", "raw_clip")
BOX_LOSSES = ("huber", "mse")

# Keys of conf/model/*.yaml and of conf/uncertainty/*.yaml (config-file key -> dataclass field).
_MODEL_KEYS = {
    "name": "name",
    "backbone": "backbone",
    "width_coefficient": "width_coefficient",
    "depth_coefficient": "depth_coefficient",
    "backbone_dropout": "backbone_dropout",
    "backbone_weights": "backbone_weights",
    "image_size": "image_size",
    "fpn_num_filters": "fpn_num_filters",
    "fpn_cell_repeats": "fpn_cell_repeats",
    "fpn_weight_method": "fpn_weight_method",
    "box_class_repeats": "box_class_repeats",
    "min_level": "min_level",
    "max_level": "max_level",
    "num_scales": "num_scales",
    "aspect_ratios": "aspect_ratios",
    "anchor_scale": "anchor_scale",
    "focal_alpha": "focal_alpha",
    "focal_gamma": "focal_gamma",
}
_UNCERTAINTY_KEYS = {
    "name": "uncertainty_name",
    "loss_attenuation": "loss_attenuation",
    "sigma_param": "sigma_param",
    "sigma_min": "sigma_min",
    "sigma_max": "sigma_max",
    "box_loss": "box_loss",
    "huber_delta": "huber_delta",
    "box_loss_weight": "box_loss_weight",
    "mc": "mc",
    "mc_backbone_rate": "mc_backbone_rate",
    "mc_class_head_rate": "mc_class_head_rate",
    "mc_box_head_rate": "mc_box_head_rate",
    "mc_samples": "mc_samples",
    "mc_seed": "mc_seed",
}


def normalize_mc_mode(mode: Any) -> str:
    """``"off" | "head" | "full"`` from a config value (``False``/``None`` -> ``"off"``, YAML's reading of ``off``).

    Raises:
      ValueError: for any other value.
    """
    if mode is None or mode is False:
        return "off"
    if isinstance(mode, str) and mode.strip().lower() in MC_MODES:
        return mode.strip().lower()
    raise ValueError(f"mc must be one of {', '.join(MC_MODES)}, got {mode!r}")


@dataclass
class DetectorConfig:
    """Everything needed to build the detector network. Defaults: the ``tiny`` model, ``baseline`` uncertainty.

    Model (``conf/model``):
      name: model size name (``tiny``, ``small``, ``efficientdet_d0`` ...).
      backbone: ``efficientnet-b0`` .. ``efficientnet-b7`` (block table; scaling from the coefficients below).
      width_coefficient, depth_coefficient: EfficientNet compound scaling of channels / block repeats.
      backbone_dropout: stochastic-depth (drop-connect) rate of the last MBConv block, linearly increasing
        from 0 over the blocks; training only (there is no classification top, so no top dropout). Not MC.
      backbone_weights: path to a local Keras ``.weights.h5`` of this backbone, or ``None`` (random init).
      image_size: model input ``(H, W)`` pixels; both divisible by ``2**max_level``.
      fpn_num_filters, fpn_cell_repeats, fpn_weight_method: BiFPN width, number of cells, ``fastattn``/``sum``.
      box_class_repeats: conv blocks in each head before the predict conv.
      min_level, max_level: pyramid levels (``min_level`` must be 3; the backbone gives C3..C5, higher
        levels are max-pooled).
      num_scales, aspect_ratios, anchor_scale: anchors (``A = num_scales * len(aspect_ratios)``).
      focal_alpha, focal_gamma: focal-loss parameters (used by the losses, kept here for one config).

    Uncertainty (``conf/uncertainty``):
      uncertainty_name: the uncertainty file's ``name``.
      loss_attenuation: box head predicts 4 codes + 4 raw σ per anchor (8A channels).
      sigma_param, sigma_min, sigma_max: σ parametrisation (applied by ``losses.sigma_from_raw``).
      box_loss, huber_delta, box_loss_weight: box regression loss.
      mc: ``off | head | full`` MC-dropout sampling at inference.
      mc_backbone_rate, mc_class_head_rate, mc_box_head_rate: SpatialDropout2D rates (0 = layer is a no-op).
      mc_samples: T, the number of MC samples.
      mc_seed: seed of the MC masks (``None`` = unseeded).

    num_classes: number of foreground classes C (one sigmoid logit each).
    """

    num_classes: int
    # model
    name: str = "tiny"
    backbone: str = "efficientnet-b0"
    width_coefficient: float = 0.25
    depth_coefficient: float = 0.5
    backbone_dropout: float = 0.2
    backbone_weights: str | None = None
    image_size: tuple[int, int] = (128, 128)
    fpn_num_filters: int = 32
    fpn_cell_repeats: int = 2
    fpn_weight_method: str = "fastattn"
    box_class_repeats: int = 2
    min_level: int = 3
    max_level: int = 7
    num_scales: int = 3
    aspect_ratios: tuple[float, ...] = (1.0, 2.0, 0.5)
    anchor_scale: float = 4.0
    focal_alpha: float = 0.25
    focal_gamma: float = 1.5
    # uncertainty
    uncertainty_name: str = "baseline"
    loss_attenuation: bool = False
    sigma_param: str = "softplus"
    sigma_min: float = 0.01
    sigma_max: float = 1024.0
    box_loss: str = "huber"
    huber_delta: float = 0.1
    box_loss_weight: float = 50.0
    mc: str = "off"
    mc_backbone_rate: float = 0.0
    mc_class_head_rate: float = 0.0
    mc_box_head_rate: float = 0.0
    mc_samples: int = 10
    mc_seed: int | None = field(default=0)

    def __post_init__(self) -> None:
        self._coerce()
        self.validate()

    # ------------------------------------------------------------------ derived values
    @property
    def num_anchors(self) -> int:
        """A, anchors per location (``num_scales * len(aspect_ratios)``)."""
        return self.num_scales * len(self.aspect_ratios)

    @property
    def num_levels(self) -> int:
        """Number of pyramid levels (5 for levels 3..7)."""
        return self.max_level - self.min_level + 1

    @property
    def box_dim(self) -> int:
        """Box-head values per anchor: 4 codes, 8 with loss attenuation (codes then raw σ)."""
        return 8 if self.loss_attenuation else 4

    @property
    def mc_enabled(self) -> bool:
        """True when MC sampling is on (``mc != "off"``) and T > 1."""
        return self.mc != "off" and self.mc_samples > 1

    # ------------------------------------------------------------------ checks
    def _coerce(self) -> None:
        self.mc = normalize_mc_mode(self.mc)
        size = self.image_size
        if isinstance(size, (int, float)) and not isinstance(size, bool):
            size = (size, size)
        try:
            h, w = (int(v) for v in size)
        except (TypeError, ValueError):
            raise ValueError(f"image_size must be [height, width] integers, got {self.image_size!r}") from None
        self.image_size = (h, w)
        try:
            self.aspect_ratios = tuple(float(r) for r in self.aspect_ratios)
        except (TypeError, ValueError):
            raise ValueError(f"aspect_ratios must be a list of numbers, got {self.aspect_ratios!r}") from None
        for name in ("num_classes", "fpn_num_filters", "fpn_cell_repeats", "box_class_repeats", "min_level",
                     "max_level", "num_scales", "mc_samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
                raise ValueError(f"{name} must be an integer, got {value!r}")
            setattr(self, name, int(value))
        for name in ("width_coefficient", "depth_coefficient", "backbone_dropout", "anchor_scale", "focal_alpha",
                     "focal_gamma", "sigma_min", "sigma_max", "huber_delta", "box_loss_weight",
                     "mc_backbone_rate", "mc_class_head_rate", "mc_box_head_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a number, got {value!r}")
            setattr(self, name, float(value))
        self.loss_attenuation = bool(self.loss_attenuation)
        if self.backbone_weights is not None:
            self.backbone_weights = str(self.backbone_weights)
        if self.mc_seed is not None:
            self.mc_seed = int(self.mc_seed)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field and the allowed values."""
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}, got {self.backbone!r}")
        if self.fpn_weight_method not in FPN_WEIGHT_METHODS:
            raise ValueError(f"fpn_weight_method must be one of {FPN_WEIGHT_METHODS}, got {self.fpn_weight_method!r}")
        if self.sigma_param not in SIGMA_PARAMS:
            raise ValueError(f"sigma_param must be one of {SIGMA_PARAMS}, got {self.sigma_param!r}")
        if str(self.box_loss).lower() not in BOX_LOSSES:
            raise ValueError(f"box_loss must be one of {BOX_LOSSES}, got {self.box_loss!r}")
        self.box_loss = str(self.box_loss).lower()
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if self.width_coefficient <= 0 or self.depth_coefficient <= 0:
            raise ValueError("width_coefficient and depth_coefficient must be > 0, got "
                             f"{self.width_coefficient}, {self.depth_coefficient}")
        for name in ("fpn_num_filters", "fpn_cell_repeats", "box_class_repeats", "num_scales", "mc_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.aspect_ratios or any(r <= 0 for r in self.aspect_ratios):
            raise ValueError(f"aspect_ratios must be a non-empty list of positive numbers, got {self.aspect_ratios}")
        if self.min_level != 3:
            raise ValueError(f"min_level must be 3 (the backbone gives C3, C4, C5), got {self.min_level}")
        if self.max_level < 5:
            raise ValueError(f"max_level must be >= 5, got {self.max_level}")
        stride = 2 ** self.max_level
        h, w = self.image_size
        if h <= 0 or w <= 0 or h % stride or w % stride:
            def up(v: int) -> int:
                return max(stride, math.ceil(v / stride) * stride)

            raise ValueError(
                f"image_size {list(self.image_size)} must be divisible by 2**max_level = {stride}; "
                f"use e.g. [{up(h)}, {up(w)}]")
        for name in ("backbone_dropout", "mc_backbone_rate", "mc_class_head_rate", "mc_box_head_rate"):
            rate = getattr(self, name)
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {rate}")
        if self.mc == "head" and self.mc_class_head_rate == 0 and self.mc_box_head_rate == 0:
            raise ValueError("mc=head needs mc_class_head_rate or mc_box_head_rate > 0 (all samples would be equal)")
        if self.mc == "full" and max(self.mc_backbone_rate, self.mc_class_head_rate, self.mc_box_head_rate) == 0:
            raise ValueError("mc=full needs at least one of mc_backbone_rate, mc_class_head_rate, "
                             "mc_box_head_rate > 0 (all samples would be equal)")
        if self.sigma_min <= 0 or self.sigma_max <= self.sigma_min:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")

    # ------------------------------------------------------------------ I/O
    def to_dict(self) -> dict[str, Any]:
        """Flat JSON-able dict of all fields (tuples as lists); inverse of :meth:`from_dict`."""
        out = dataclasses.asdict(self)
        out["image_size"] = list(self.image_size)
        out["aspect_ratios"] = list(self.aspect_ratios)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DetectorConfig":
        """Config from a flat dict as written by :meth:`to_dict` (unknown keys -> ``ValueError``)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown DetectorConfig keys: {', '.join(unknown)}")
        if "num_classes" not in data:
            raise ValueError("DetectorConfig needs num_classes")
        return cls(**dict(data))

    def replace(self, **changes: Any) -> "DetectorConfig":
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)




def detector_config_from_dicts(model: Mapping[str, Any], uncertainty: Mapping[str, Any],
                               num_classes: int) -> DetectorConfig:
    """Build a :class:`DetectorConfig` from the ``model`` and ``uncertainty`` config groups.

    Args:
      model: the keys of a ``conf/model/*.yaml`` (resolved; e.g. ``OmegaConf.to_container(cfg.model, resolve=True)``).
      uncertainty: the keys of a ``conf/uncertainty/*.yaml``.
      num_classes: number of foreground classes of the dataset.

    Missing keys take the dataclass defaults.

    Raises:
      ValueError: unknown keys (all named, per group), or an invalid value (e.g. an image size not divisible by
        ``2**max_level``, ``mc`` not in ``off|head|full``).
    """
    kwargs: dict[str, Any] = {"num_classes": num_classes}
    for group, mapping, keys in (("model", model, _MODEL_KEYS), ("uncertainty", uncertainty, _UNCERTAINTY_KEYS)):
        mapping = to_plain(mapping or {})
        unknown = sorted(set(mapping) - set(keys))
        if unknown:
            raise ValueError(f"unknown {group} config keys: {', '.join(unknown)} "
                             f"(known: {', '.join(sorted(keys))})")
        for key, value in mapping.items():
            kwargs[keys[key]] = value
    return DetectorConfig(**kwargs)
