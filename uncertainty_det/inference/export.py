"""Export of a trained detector as a self-contained TensorFlow SavedModel, and loading it back.

The exported graph does everything between raw pixels and detections (DESIGN §7):

1. **Letterbox pre-processing**: uint8 ``[B,H,W,3]`` images (any ``H, W``; one size per batch) are
   normalised ``(rgb - mean) / std`` and resized keeping their aspect ratio so they fit the model input
   ``(H_m, W_m)``, padded bottom/right with 0 (the normalised mean colour) - the same arithmetic as the
   evaluation path of :mod:`uncertainty_det.data.pipeline`. ``scale = min(H_m / H, W_m / W)`` is model
   pixels per original pixel.
2. **MC sampling** with :func:`uncertainty_det.model.mc.mc_forward` (mode ``off | head | full``, ``T``
   samples). With an integer ``mc_seed`` the dropout masks are stateless functions of the seed, so
   repeated calls on the same images give identical outputs; ``mc_seed=None`` draws fresh masks per call.
3. **σ** from the raw box-head σ outputs with ``losses.sigma_from_raw(..., training=False)``.
4. **Decoding + NMS + rescaling** with :func:`uncertainty_det.inference.postprocess.postprocess`.

Serving signature ``serving_default``: input ``images`` uint8 ``[B,H,W,3]``; outputs (``D`` =
``max_detections``, ``C`` = classes, all boxes and σ in original-image pixels)::

    boxes          float32 [B,D,4]  [ymin, xmin, ymax, xmax]
    scores         float32 [B,D]    soft-NMS-decayed sigmoid scores (0 in padding)
    classes        int32   [B,D]    1-based class ids (0 in padding)
    logits         float32 [B,D,C]  MC-mean class logits
    al_std         float32 [B,D,4]  aleatoric σ per corner, px (zeros without loss attenuation)
    ep_std         float32 [B,D,4]  epistemic σ per corner, px (zeros without MC)
    ep_logit_std   float32 [B,D,C]  MC std of every logit (zeros without MC)
    num_detections int32   [B]

plus ``total_std [B,D,4]`` when ``postprocess.total_sigma`` and ``al_cov [B,D,4,4]`` (px²) with
``lognormal_full`` decoding. Calibration is applied outside the graph, so one export serves every
calibration.

Layout of the export folder (replaced atomically as a whole)::

    <out_dir>/saved_model/        the SavedModel
    <out_dir>/export_config.json  class names, input size/normalisation, post-processing (decoding, NMS),
                                  MC settings, run name, which uncertainties the outputs carry

Security: a SavedModel is a TensorFlow graph; loading one runs no Python code, but its graph may contain
arbitrary TF ops (file reads/writes). :func:`load_export` is meant for exports written by
:func:`export_model` in the user's own run workspace (``outputs/runs/<run_name>/export``); never point it
at a SavedModel obtained from an untrusted source.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import UserError
from ..io_utils import atomic_dir, atomic_write_json

log = logging.getLogger(__name__)

__all__ = [
    "EXPORT_CONFIG",
    "EXPORT_FORMAT_VERSION",
    "OUTPUT_KEYS",
    "SAVED_MODEL_DIR",
    "ExportError",
    "ExportedDetector",
    "as_rgb_uint8",
    "export_model",
    "letterbox_batch",
    "load_export",
    "read_export_config",
]

EXPORT_CONFIG = "export_config.json"
SAVED_MODEL_DIR = "saved_model"
EXPORT_FORMAT_VERSION = 1
#: The output fields of the serving signature that every export has (DESIGN §7).
OUTPUT_KEYS = ("boxes", "scores", "classes", "logits", "al_std", "ep_std", "ep_logit_std", "num_detections")


class ExportError(UserError, ValueError):
    """An export folder is missing, incomplete or was not written by :func:`export_model`."""


# --------------------------------------------------------------------------------------------------
# pre-processing (graph)
# --------------------------------------------------------------------------------------------------
def letterbox_batch(images, image_size: Sequence[int], mean: Sequence[float], std: Sequence[float]):
    """Normalise and letterbox a batch of equally sized images (TF ops, graph-compatible).

    Args:
        images: ``[B,H,W,3]`` uint8 (or float) RGB, one size per batch.
        image_size: model input ``(H_m, W_m)`` pixels.
        mean, std: per-channel RGB normalisation (pixel units).

    Returns:
        ``(images [B,H_m,W_m,3] float32 normalised, scale [B] float32 model px per original px,
        image_shape [B,2] int32 original (H, W))``. The resized image sits at the top-left; the
        bottom/right padding is exactly 0. Same arithmetic as the pipeline's evaluation letterbox.
    """
    import tensorflow as tf

    out_h, out_w = int(image_size[0]), int(image_size[1])
    std32 = np.asarray(std, np.float32).reshape(3)
    mul = (1.0 / std32).astype(np.float32)
    add = (-np.asarray(mean, np.float32).reshape(3) / std32).astype(np.float32)
    x = tf.cast(images, tf.float32) * mul + add                                 # [B,H,W,3]
    shape = tf.shape(x)
    b = shape[0]
    height = tf.cast(shape[1], tf.float32)
    width = tf.cast(shape[2], tf.float32)
    scale = tf.minimum(float(out_h) / height, float(out_w) / width)
    resized = tf.raw_ops.ScaleAndTranslate(
        images=x, size=tf.constant([out_h, out_w], tf.int32), scale=tf.stack([scale, scale]),
        translation=tf.zeros([2], tf.float32), kernel_type="triangle", antialias=False)
    resized = tf.ensure_shape(resized, [None, out_h, out_w, 3])
    image_shape = tf.tile(tf.reshape(shape[1:3], [1, 2]), tf.stack([b, 1]))
    return resized, tf.fill([b], scale), tf.cast(image_shape, tf.int32)


# --------------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------------
def _uncertainty_flags(detector_cfg, mc_samples: int, mc_mode: str) -> dict[str, bool]:
    """Which uncertainty outputs carry information for this model + MC setting."""
    from ..model.config import normalize_mc_mode

    mode = normalize_mc_mode(mc_mode)
    mc_on = mode != "off" and int(mc_samples) > 1
    backbone = mode == "full" and detector_cfg.mc_backbone_rate > 0
    ep_box = mc_on and (backbone or detector_cfg.mc_box_head_rate > 0)
    ep_cls = mc_on and (backbone or detector_cfg.mc_class_head_rate > 0)
    return {
        "has_aleatoric": bool(detector_cfg.loss_attenuation),
        "has_epistemic": bool(mc_on),
        "has_epistemic_box": bool(ep_box),
        "has_epistemic_class": bool(ep_cls),
    }


def _build_module(model, detector_cfg, input_cfg, postprocess_cfg, mc_samples: int, mc_mode: str,
                  mc_seed: int | None):
    """A ``tf.Module`` holding the model with a ``serve(images)`` tf.function (the serving signature)."""
    import tensorflow as tf

    from ..model.anchors import generate_anchors
    from ..model.losses import sigma_from_raw
    from ..model.mc import mc_forward
    from .postprocess import postprocess

    image_size = tuple(int(v) for v in detector_cfg.image_size)
    anchors_np = np.array(generate_anchors(
        image_size, detector_cfg.min_level, detector_cfg.max_level, detector_cfg.num_scales,
        detector_cfg.aspect_ratios, detector_cfg.anchor_scale), dtype=np.float32)
    mean = tuple(float(v) for v in input_cfg.mean)
    std = tuple(float(v) for v in input_cfg.std)
    samples = int(mc_samples)
    seed = None if mc_seed is None else int(mc_seed)
    sigma_kwargs = {"param": detector_cfg.sigma_param, "sigma_min": detector_cfg.sigma_min,
                    "sigma_max": detector_cfg.sigma_max}

    class _DetectorModule(tf.Module):
        def __init__(self):
            super().__init__(name="uncertainty_det_export")
            # Track the variables only: the Keras model itself is reached through the closure, so the
            # SavedModel does not try to trace Keras' own default signature of the model.
            self.model_variables = list(model.variables)
            self.anchors = tf.constant(anchors_np)

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
        def serve(self, images):
            x, scale, image_shape = letterbox_batch(images, image_size, mean, std)
            raw = mc_forward(model, x, samples, mc_mode, seed=seed)
            heads = {"cls": raw["cls"], "box": raw["box"]}
            if "sigma_raw" in raw:
                heads["sigma"] = sigma_from_raw(raw["sigma_raw"], training=False, **sigma_kwargs)
            return dict(postprocess(heads, self.anchors, scale, image_shape, postprocess_cfg))

    return _DetectorModule()


def export_model(
    model,
    detector_cfg,
    class_names: Sequence[str],
    input_cfg,
    postprocess_cfg,
    mc_samples: int,
    mc_mode: str,
    mc_seed: int | None,
    out_dir: str | os.PathLike,
    run_name: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` as a SavedModel with pre-processing, MC sampling, decoding and NMS inside.

    Args:
        model: a built :class:`~uncertainty_det.model.efficientdet.EfficientDet` with its weights.
        detector_cfg: its :class:`~uncertainty_det.model.config.DetectorConfig` (model input size,
            anchors, σ parametrisation, MC dropout rates).
        class_names: the ``C`` class names (class id = position + 1).
        input_cfg: :class:`~uncertainty_det.data.pipeline.InputConfig` (only ``mean``/``std`` are used;
            the model input size is ``detector_cfg.image_size``).
        postprocess_cfg: :class:`~uncertainty_det.inference.postprocess.PostprocessConfig` (decoding
            method, NMS, ``max_detections``).
        mc_samples: T, MC samples per image (1 = deterministic).
        mc_mode: ``off | head | full``.
        mc_seed: integer seed of the dropout masks (repeatable outputs) or ``None`` (fresh masks per call).
        out_dir: the export folder; written to a temp folder and renamed over ``out_dir`` (replaced).
        run_name: stored in the config (the workspace the export belongs to).
        extra: more JSON-serialisable keys for ``export_config.json``.

    Returns:
        ``out_dir`` as a Path. See the module docstring for the signature and the folder layout.
    """
    import tensorflow as tf

    from ..model.config import normalize_mc_mode

    mode = normalize_mc_mode(mc_mode)
    samples = int(mc_samples)
    if samples < 1:
        raise ExportError(f"mc_samples must be >= 1, got {mc_samples}")
    if len(class_names) != detector_cfg.num_classes:
        raise ExportError(f"{len(class_names)} class names {list(class_names)} for a model with "
                          f"{detector_cfg.num_classes} classes")
    if tuple(input_cfg.image_size) != tuple(detector_cfg.image_size):
        log.warning("input.image_size %s differs from the model's %s; the export uses the model's",
                    list(input_cfg.image_size), list(detector_cfg.image_size))
    if mode == "off" or samples == 1:
        mode, samples = "off", 1
    module = _build_module(model, detector_cfg, input_cfg, postprocess_cfg, samples, mode, mc_seed)
    flags = _uncertainty_flags(detector_cfg, samples, mode)
    config = {
        "format_version": EXPORT_FORMAT_VERSION,
        "run_name": run_name,
        "class_names": [str(c) for c in class_names],
        "num_classes": int(detector_cfg.num_classes),
        "input": {"image_size": [int(v) for v in detector_cfg.image_size],
                  "mean": [float(v) for v in input_cfg.mean], "std": [float(v) for v in input_cfg.std]},
        "postprocess": _postprocess_dict(postprocess_cfg),
        "decoding": postprocess_cfg.decoding,
        "mc": {"mode": mode, "samples": samples, "seed": None if mc_seed is None else int(mc_seed)},
        "detector_config": detector_cfg.to_dict(),
        "outputs": list(OUTPUT_KEYS) + _extra_outputs(postprocess_cfg, flags["has_aleatoric"]),
        **flags,
    }
    config.update(dict(extra or {}))
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        tf.saved_model.save(module, str(tmp / SAVED_MODEL_DIR),
                            signatures={"serving_default": module.serve.get_concrete_function()},
                            options=tf.saved_model.SaveOptions(experimental_custom_gradients=False))
        atomic_write_json(tmp / EXPORT_CONFIG, config)
    log.info("exported %s (mc %s, T=%d, seed %s, decoding %s) to %s", detector_cfg.name, mode, samples,
             mc_seed, postprocess_cfg.decoding, out_dir)
    return out_dir


def _postprocess_dict(cfg) -> dict:
    from dataclasses import asdict

    return json.loads(json.dumps(asdict(cfg), default=str))


def _extra_outputs(postprocess_cfg, has_aleatoric: bool) -> list[str]:
    extra = []
    if postprocess_cfg.total_sigma:
        extra.append("total_std")
    if has_aleatoric and postprocess_cfg.decoding in ("lognormal_full",):
        extra.append("al_cov")
    return extra


# --------------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------------
def read_export_config(path: str | os.PathLike) -> dict:
    """The ``export_config.json`` of an export folder (:class:`ExportError` naming the folder if absent)."""
    path = Path(path)
    cfg_path = path / EXPORT_CONFIG
    if not cfg_path.is_file():
        raise ExportError(f"{path} is not an export folder (no {EXPORT_CONFIG}); create it with udet-export")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot read {cfg_path}: {exc}; re-run udet-export") from exc
    version = config.get("format_version")
    if version != EXPORT_FORMAT_VERSION:
        raise ExportError(f"{cfg_path} has format version {version!r}, this library reads "
                          f"{EXPORT_FORMAT_VERSION}; re-run udet-export")
    return config


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """``[H,W]``, ``[H,W,1]``, ``[H,W,3]`` or ``[H,W,4]`` image -> ``[H,W,3]`` uint8 RGB.

    Gray is repeated over the 3 channels, the alpha channel of RGBA is dropped; float input is taken as
    pixel values 0..255 (clipped).
    """
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        raise ValueError(f"image must be [H,W], [H,W,1], [H,W,3] or [H,W,4], got shape {arr.shape}")
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    elif arr.shape[-1] == 4:
        arr = arr[..., :3]
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(arr.astype(np.float64)), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


@dataclass
class ExportedDetector:
    """A loaded export: the serving function and its ``export_config.json``.

    Attributes:
        path: the export folder.
        config: the export config (``class_names``, ``input``, ``postprocess``, ``decoding``, ``mc``,
            ``run_name``, ``has_aleatoric``, ``has_epistemic``, ...).
    """

    path: Path
    config: dict
    _fn: Any = field(repr=False)
    _module: Any = field(repr=False, default=None)

    @property
    def class_names(self) -> list[str]:
        return list(self.config["class_names"])

    @property
    def has_aleatoric(self) -> bool:
        return bool(self.config["has_aleatoric"])

    @property
    def has_epistemic(self) -> bool:
        return bool(self.config["has_epistemic"])

    @property
    def image_size(self) -> tuple[int, int]:
        """Model input ``(H, W)`` pixels."""
        h, w = self.config["input"]["image_size"]
        return int(h), int(w)

    def predict(self, images) -> dict[str, np.ndarray]:
        """Run the exported model on one batch.

        Args:
            images: ``[B,H,W,3]`` uint8 array, or one image ``[H,W]``/``[H,W,C]`` (C in 1, 3, 4), or a list
                of equally sized images (each converted with :func:`as_rgb_uint8`).

        Returns:
            dict of NumPy arrays with the signature's outputs (module docstring): ``boxes [B,D,4]``,
            ``scores [B,D]``, ``classes [B,D]`` int32, ``logits [B,D,C]``, ``al_std``, ``ep_std`` ``[B,D,4]``
            (px), ``ep_logit_std [B,D,C]``, ``num_detections [B]`` int32 (+ optional extras).
        """
        import tensorflow as tf

        batch = _as_batch(images)
        out = self._fn(images=tf.constant(batch))
        return {k: v.numpy() for k, v in out.items()}


def _as_batch(images) -> np.ndarray:
    if isinstance(images, np.ndarray) and images.ndim == 4:
        if images.shape[-1] == 3 and images.dtype == np.uint8:
            return np.ascontiguousarray(images)
        return np.stack([as_rgb_uint8(im) for im in images])
    if isinstance(images, np.ndarray) and images.ndim in (2, 3):
        return as_rgb_uint8(images)[None]
    items = [as_rgb_uint8(im) for im in images]
    if not items:
        raise ValueError("predict needs at least one image")
    shapes = {im.shape for im in items}
    if len(shapes) > 1:
        raise ValueError(f"one batch must hold images of one size, got {sorted(shapes)}; batch equal sizes together")
    return np.stack(items)


def load_export(path: str | os.PathLike) -> ExportedDetector:
    """Load an export folder written by :func:`export_model`.

    Only load exports from your own run workspace (see the module docstring: a SavedModel graph can
    contain arbitrary TF ops). Raises :class:`ExportError` naming the folder when it is missing or
    incomplete.
    """
    import tensorflow as tf

    path = Path(path)
    if not path.is_dir():
        raise ExportError(f"export folder {path} does not exist; create it with udet-export")
    config = read_export_config(path)
    sm = path / SAVED_MODEL_DIR
    if not (sm / "saved_model.pb").is_file():
        raise ExportError(f"{sm} holds no SavedModel; re-run udet-export")
    module = tf.saved_model.load(str(sm))
    try:
        fn = module.signatures["serving_default"]
    except KeyError as exc:
        raise ExportError(f"{sm} has no serving_default signature; re-run udet-export") from exc
    return ExportedDetector(path=path, config=config, _fn=fn, _module=module)
