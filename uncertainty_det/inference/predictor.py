"""Predictor: a trained detector + its post-processing as one graph-mode prediction function.

``Predictor.predict_batch(images, scale, image_shape)`` runs, inside one ``tf.function`` (no XLA):

1. :func:`uncertainty_det.model.mc.mc_forward` -- T MC samples (head-only MC runs backbone + BiFPN once),
   ``T = 1`` when MC is off;
2. :func:`uncertainty_det.model.losses.sigma_from_raw` (``training=False``) on the raw σ output of a
   loss-attenuation model, giving positive anchor-space σ;
3. :func:`uncertainty_det.inference.postprocess.postprocess` -- MC aggregation, decoding, NMS, rescaling to
   original-image pixels.

MC masks are reproducible: with ``mc_seed`` set, batch ``k`` of :meth:`Predictor.predict_dataset` uses the
seed ``mc_seed + k`` (the same dataset order gives the same predictions); ``mc_seed=None`` draws fresh
masks every call.

Used by the training mAP callback and by the evaluate / export / infer stages.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from ..errors import UserError
from ..model.anchors import generate_anchors
from ..model.config import DetectorConfig
from ..model.losses import sigma_from_raw
from ..model.mc import mc_forward
from .postprocess import PostprocessConfig, postprocess

log = logging.getLogger(__name__)

__all__ = ["Predictor", "load_detector", "with_trained_normalization"]

#: Keys of :meth:`Predictor.predict_dataset`'s result besides the post-processing outputs.
ID_KEYS = ("image_id",)


def load_detector(train_dir: str | os.PathLike, weights: str | os.PathLike | None = None):
    """Rebuild a trained detector from a run's ``train/`` folder.

    Args:
      train_dir: folder holding ``detector_config.json`` (and ``final.weights.h5``).
      weights: weights file (default ``<train_dir>/final.weights.h5``).

    Returns:
      ``(model, detector_config, info)``: the built :class:`~uncertainty_det.model.efficientdet.EfficientDet`
      with its weights, its :class:`DetectorConfig`, and the whole JSON (``class_names``, ``input_size`` ...).

    Raises:
      UserError: missing or unreadable files (naming the stage to run).
    """
    from ..model.efficientdet import build_efficientdet

    train_dir = Path(train_dir)
    cfg_path = train_dir / "detector_config.json"
    weights = Path(weights) if weights is not None else train_dir / "final.weights.h5"
    for path in (cfg_path, weights):
        if not path.is_file():
            raise UserError(f"{path} not found; train the model first (udet-train run_name=<run>)")
    try:
        info = json.loads(cfg_path.read_text(encoding="utf-8"))
        config = DetectorConfig.from_dict(info["detector"])
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{cfg_path} is not a valid detector config ({exc}); re-run udet-train") from exc
    model = build_efficientdet(config)
    model.load_weights(str(weights))
    return model, config, info


def _as_normalization(normalization: Mapping[str, Sequence[float]] | None) -> dict | None:
    """``{"mean": (r, g, b), "std": (r, g, b)}`` floats, or None when not recorded."""
    if not normalization:
        return None
    return {key: tuple(float(v) for v in normalization[key]) for key in ("mean", "std")}


def with_trained_normalization(input_cfg, normalization: Mapping[str, Sequence[float]] | None):
    """``input_cfg`` with the pixel ``mean``/``std`` the model was trained with (``detector_config.json``'s
    ``normalization``; runs trained before it was recorded carry none and keep ``input_cfg``'s).

    A model only sees images normalised the way it was trained, so a different ``input.mean``/``input.std`` at
    inference is replaced (with a warning) rather than silently shifting every pixel.
    """
    import dataclasses

    normalization = _as_normalization(normalization)
    if normalization is None:
        return input_cfg
    mean, std = normalization["mean"], normalization["std"]
    if (mean, std) != (tuple(input_cfg.mean), tuple(input_cfg.std)):
        log.warning("input.mean/std %s/%s differ from the training normalisation %s/%s; using the training one",
                    list(input_cfg.mean), list(input_cfg.std), list(mean), list(std))
    return dataclasses.replace(input_cfg, mean=mean, std=std)


class Predictor:
    """A detector, its anchors and post-processing, with MC settings.

    Args:
      model: an :class:`~uncertainty_det.model.efficientdet.EfficientDet` (built).
      config: its :class:`DetectorConfig`.
      postprocess_cfg: :class:`PostprocessConfig` (defaults when ``None``).
      mc_samples: T (default ``config.mc_samples``; forced to 1 when ``mc_mode`` is ``off``).
      mc_mode: ``off | head | full`` (default ``config.mc``).
      mc_seed: base seed of the MC masks (default ``config.mc_seed``; ``None`` = unseeded).
      image_size: model input ``(H, W)`` px of the batches (default ``config.image_size``).

    Attributes:
      anchors: ``[N, 4]`` float32 model-input pixels.
      has_aleatoric: the model predicts σ (loss attenuation).
      has_epistemic: MC sampling is on (T > 1).
    """

    def __init__(
        self,
        model,
        config: DetectorConfig,
        postprocess_cfg: PostprocessConfig | None = None,
        mc_samples: int | None = None,
        mc_mode: str | None = None,
        mc_seed: int | None | str = "config",
        image_size: Sequence[int] | None = None,
        normalization: Mapping[str, Sequence[float]] | None = None,
    ):
        from ..model.config import normalize_mc_mode

        self.model = model
        self.config = config
        self.postprocess_cfg = postprocess_cfg or PostprocessConfig()
        self.mc_mode = normalize_mc_mode(config.mc if mc_mode is None else mc_mode)
        samples = int(config.mc_samples if mc_samples is None else mc_samples)
        self.mc_samples = 1 if self.mc_mode == "off" else max(1, samples)
        self.mc_seed = config.mc_seed if mc_seed == "config" else (None if mc_seed is None else int(mc_seed))
        self.image_size = tuple(int(v) for v in (image_size or config.image_size))
        self.normalization = _as_normalization(normalization)
        self.anchors = np.array(generate_anchors(
            self.image_size, config.min_level, config.max_level, config.num_scales, config.aspect_ratios,
            config.anchor_scale), dtype=np.float32)
        self.has_aleatoric = bool(config.loss_attenuation)
        self.has_epistemic = self.mc_samples > 1
        h, w = self.image_size
        specs = [
            tf.TensorSpec([None, h, w, 3], tf.float32, name="images"),
            tf.TensorSpec([None], tf.float32, name="scale"),
            tf.TensorSpec([None, 2], tf.int32, name="image_shape"),
        ]
        self._fn_unseeded = tf.function(self._predict, input_signature=specs, reduce_retracing=True)
        self._fn_seeded = tf.function(
            self._predict_seeded, input_signature=[*specs, tf.TensorSpec([], tf.int64, name="seed")])

    # ------------------------------------------------------------------ graph
    def _predict(self, images, scale, image_shape, seed=None) -> dict[str, tf.Tensor]:
        raw = mc_forward(self.model, images, self.mc_samples, self.mc_mode, seed=seed)
        inputs = {"cls": raw["cls"], "box": raw["box"]}
        if "sigma_raw" in raw:
            cfg = self.config
            inputs["sigma"] = sigma_from_raw(raw["sigma_raw"], cfg.sigma_param, cfg.sigma_min, cfg.sigma_max,
                                             training=False)
        return postprocess(inputs, self.anchors, scale, image_shape, self.postprocess_cfg)

    def _predict_seeded(self, images, scale, image_shape, seed) -> dict[str, tf.Tensor]:
        return self._predict(images, scale, image_shape, seed=seed)

    def predict_batch(self, images, scale, image_shape, seed: int | None = None) -> dict[str, tf.Tensor]:
        """Detections of one batch (graph mode).

        Args:
          images: ``[B, H, W, 3]`` float32 normalised images at the model input size.
          scale: ``[B]`` model px per original px (from the input pipeline).
          image_shape: ``[B, 2]`` original ``(H, W)`` px.
          seed: MC seed of this batch (``None``: unseeded masks).

        Returns:
          the :func:`~uncertainty_det.inference.postprocess.postprocess` dict of tensors: ``boxes [B,D,4]``
          original px, ``scores [B,D]``, ``classes [B,D]`` int32 1-based, ``logits [B,D,C]``, ``al_std``
          / ``ep_std [B,D,4]`` px, ``ep_logit_std [B,D,C]``, ``num_detections [B]``.
        """
        images = tf.cast(images, tf.float32)
        scale = tf.reshape(tf.cast(scale, tf.float32), [-1])
        image_shape = tf.cast(image_shape, tf.int32)
        if seed is None or not self.has_epistemic:
            return self._fn_unseeded(images, scale, image_shape)
        return self._fn_seeded(images, scale, image_shape, tf.constant(int(seed), tf.int64))

    # ------------------------------------------------------------------ datasets
    def predict_dataset(self, dataset: Iterable[Mapping[str, Any]], progress: bool = True,
                        total: int | None = None, timings: list | None = None) -> dict[str, np.ndarray]:
        """Run :meth:`predict_batch` over a dataset of input-pipeline batches.

        Args:
          dataset: batches with ``image``, ``scale``, ``image_shape``, ``image_id`` (see
            :mod:`uncertainty_det.data.pipeline`).
          progress: show a tqdm bar on stderr.
          total: number of batches for the bar (optional).
          timings: when a list, ``(seconds, images)`` of every batch's prediction call (results fetched) is
            appended to it (runtime statistics).

        Returns:
          the post-processing outputs concatenated over batches as NumPy arrays (first axis = images, in
          dataset order) plus ``image_id [n]`` int64; empty arrays when the dataset is empty.
        """
        chunks: dict[str, list[np.ndarray]] = {}
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, desc="predict", unit="batch", file=sys.stderr, leave=False)
        try:
            for k, batch in enumerate(dataset):
                seed = None if self.mc_seed is None else self.mc_seed + k
                start = time.perf_counter()
                out = self.predict_batch(batch["image"], batch["scale"], batch["image_shape"], seed=seed)
                out = {key: np.asarray(value) for key, value in out.items()}
                if timings is not None:
                    timings.append((time.perf_counter() - start, int(np.shape(batch["image_id"])[0])))
                for key, value in out.items():
                    chunks.setdefault(key, []).append(value)
                chunks.setdefault("image_id", []).append(np.asarray(batch["image_id"], dtype=np.int64))
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        if not chunks:
            return {"image_id": np.zeros(0, np.int64)}
        return {key: np.concatenate(parts, axis=0) for key, parts in chunks.items()}

    def predict_manifest(self, manifest, input_cfg, image_ids: Sequence[int] | None = None,
                         progress: bool = False, timings: list | None = None):
        """Detections of a manifest's images as a Detections table (DESIGN §6.3).

        Args:
          manifest: :class:`~uncertainty_det.data.manifest.Manifest` (its class names check the logits width).
          input_cfg: :class:`~uncertainty_det.data.pipeline.InputConfig`; its ``image_size`` is replaced by
            the predictor's, and evaluation mode (no augmentation) is used.
          image_ids: a subset of ids (default: all, manifest order).
          progress: tqdm bar.
          timings: per-batch ``(seconds, images)`` are appended to it (see :meth:`predict_dataset`).

        Returns:
          ``pandas.DataFrame`` with one row per detection (``tables.detections_to_frame``); missing or
          corrupt images are skipped by the pipeline.
        """
        import dataclasses

        from ..data.pipeline import build_manifest_dataset
        from ..tables import detections_to_frame

        cfg = dataclasses.replace(with_trained_normalization(input_cfg, self.normalization),
                                  image_size=self.image_size, repeat=False)
        dataset, report = build_manifest_dataset(manifest, cfg, image_ids=image_ids, training=False)
        start = time.perf_counter()
        total = -(-report.num_images // cfg.batch_size)
        out = self.predict_dataset(dataset, progress=progress, total=total, timings=timings)
        log.debug("predicted %d images in %.1f s", len(out["image_id"]), time.perf_counter() - start)
        ids = out.pop("image_id")
        if ids.size == 0:
            from ..tables import empty_frame

            return empty_frame(self.has_aleatoric, self.has_epistemic)
        file_names = [manifest.image(int(i))["file_name"] for i in ids]
        return detections_to_frame(out, ids.tolist(), file_names, manifest.class_names,
                                   has_aleatoric=self.has_aleatoric, has_epistemic=self.has_epistemic)

    @classmethod
    def from_train_dir(cls, train_dir: str | os.PathLike, postprocess_cfg: PostprocessConfig | None = None,
                       **kwargs) -> "Predictor":
        """A predictor of the model saved in a run's ``train/`` folder (see :func:`load_detector`)."""
        model, config, info = load_detector(train_dir)
        kwargs.setdefault("normalization", info.get("normalization"))
        return cls(model, config, postprocess_cfg, **kwargs)
