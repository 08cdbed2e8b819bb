"""Training of the detector: Keras ``fit`` with a custom ``train_step``, schedule, optimizer, checkpoints.

Pieces (each usable on its own, e.g. from a notebook):

* :class:`TrainerConfig` -- the ``trainer:`` config group (``conf/trainer/*.yaml``), one field per key.
* :class:`WarmupCosineSchedule` -- linear warm-up then cosine decay (or constant), a serialisable Keras
  ``LearningRateSchedule`` of the optimizer step.
* :func:`make_optimizer` -- AdamW or SGD-momentum with decoupled weight decay (not on BN/bias), clipping
  by global norm (``clip_gradients_norm``), optional EMA of the weights (Keras ``use_ema``), wrapped in a
  ``LossScaleOptimizer`` for float16 mixed precision.
* :func:`make_strategy` -- ``default | mirrored | multi_worker`` ``tf.distribute`` strategy.
* :class:`DetectorTrainer` -- a ``keras.Model`` wrapping an :class:`~uncertainty_det.model.efficientdet.EfficientDet`
  whose ``train_step`` assigns anchor targets from the batch (in graph mode), runs the detector with
  ``training=True``, maps the raw σ with :func:`~uncertainty_det.model.losses.sigma_from_raw`, computes
  :func:`~uncertainty_det.model.losses.detection_loss` and applies the gradients; a non-finite loss (or
  gradient) zeroes that step's update, so weights never become NaN through an update. ``test_step``
  computes the same losses.
* :func:`train_detector` -- the training loop on ready tf.data datasets: checkpoints every
  ``checkpoint_every`` epochs (``tf.train.CheckpointManager``: detector, optimizer, epoch counter), resume,
  divergence stop (:class:`TrainingDivergedError`), per-epoch metrics to an injected ``log_fn``, COCO mAP
  every ``map_every`` epochs through an injected ``evaluate_fn``, final files written atomically.
* :func:`train_from_manifests` -- the same from dataset manifests (builds the input pipeline and the
  mAP evaluator with :class:`~uncertainty_det.inference.predictor.Predictor`).

Mixed precision (``trainer.mixed_precision``): ``false`` (float32), ``bfloat16`` (Keras policy
``mixed_bfloat16``: the choice on CPUs with AVX512-BF16/AMX, no loss scaling needed) or ``float16``
(``mixed_float16`` + dynamic loss scaling: the choice on GPUs). Variables and losses stay float32.

Units: boxes are model-input pixels ``[ymin, xmin, ymax, xmax]``; losses are dimensionless; the learning
rate is per optimizer step. This module never imports hydra or mlflow.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from ..errors import UserError
from ..io_utils import atomic_write_json, atomic_write_text
from .anchors import generate_anchors
from .config import DetectorConfig
from .losses import LossConfig, detection_loss, sigma_from_raw
from .target_assigner import assign_targets

log = logging.getLogger(__name__)

__all__ = [
    "CheckpointMismatchError",
    "DetectorTrainer",
    "TrainResult",
    "TrainerConfig",
    "TrainingDivergedError",
    "WarmupCosineSchedule",
    "build_detector",
    "loss_config_from_detector",
    "make_lr_schedule",
    "make_optimizer",
    "make_strategy",
    "mixed_precision_policy",
    "read_detector_config",
    "train_detector",
    "train_from_manifests",
    "trainer_config_from_dict",
    "transfer_weights",
    "write_detector_config",
    "make_checkpoint",
]

OPTIMIZERS = ("adamw", "sgd")
LR_SCHEDULES = ("cosine", "constant")
STRATEGIES = ("default", "mirrored", "multi_worker")
MIXED_PRECISION = {False: None, "false": None, "none": None, "float32": None,
                   "bfloat16": "mixed_bfloat16", "mixed_bfloat16": "mixed_bfloat16",
                   "float16": "mixed_float16", "mixed_float16": "mixed_float16"}
#: Variables whose name contains one of these get no weight decay (BN scale/offset, biases, BiFPN weights).
NO_DECAY = ("gamma", "beta", "bias", "fusion_weight")
#: Version of ``detector_config.json``.
DETECTOR_CONFIG_VERSION = 1


class TrainingDivergedError(UserError):
    """The loss became NaN/inf; the message names the epoch, step, last good checkpoint and the fix."""


class CheckpointMismatchError(UserError):
    """The checkpoint to resume from belongs to a different model configuration."""


# ============================================================================================ config
@dataclass
class TrainerConfig:
    """The ``trainer:`` config group (``conf/trainer/default.yaml``).

    Attributes:
      epochs: number of epochs (total, also when resuming).
      steps_per_epoch: optimizer steps per epoch; ``None`` = one pass over the training split.
      optimizer: ``adamw`` or ``sgd`` (momentum).
      learning_rate: peak learning rate (after warm-up).
      momentum: SGD momentum.
      weight_decay: decoupled weight decay (Keras: ``w -= lr * weight_decay * w`` per step; not on BN/bias).
      warmup_epochs: linear warm-up length in epochs (fractions allowed).
      warmup_start_ratio: learning rate at step 0 as a fraction of ``learning_rate``.
      lr_schedule: ``cosine`` (decay to ``final_lr_ratio * learning_rate`` at the last step) or ``constant``.
      final_lr_ratio: end of the cosine as a fraction of ``learning_rate``.
      clip_gradients_norm: clip gradients by global norm (0 / None = off).
      ema_decay: EMA momentum of the weights (0 = off); evaluation, final weights use the EMA values.
      mixed_precision: ``false | bfloat16 | float16`` (see the module docstring).
      strategy: ``default | mirrored | multi_worker``.
      checkpoint_every: epochs between checkpoints (the last epoch is always saved).
      keep_checkpoints: checkpoints kept on disk.
      map_every: epochs between COCO mAP evaluations on the val split (0 = only at the end).
      resume: continue from the last checkpoint of the run if there is one; ``false`` starts fresh
        (the old ``train/`` folder is removed).
      validation_loss: also compute the losses on the val split every epoch (``val_*`` metrics).
      match_threshold, unmatched_threshold: anchor IoU thresholds of the target assigner.
      verbose: Keras progress: ``auto`` (progress bar on a TTY, one line per epoch otherwise), 0, 1, 2.
      jit_compile: compile the train step with XLA (for GPUs; on 2 CPU cores the tiny model trained ~5x slower).
    """

    epochs: int = 30
    steps_per_epoch: int | None = None
    optimizer: str = "adamw"
    learning_rate: float = 1e-2
    momentum: float = 0.9
    weight_decay: float = 4e-5
    warmup_epochs: float = 1.0
    warmup_start_ratio: float = 0.1
    lr_schedule: str = "cosine"
    final_lr_ratio: float = 0.0
    clip_gradients_norm: float | None = 10.0
    ema_decay: float = 0.0
    mixed_precision: Any = False
    strategy: str = "default"
    checkpoint_every: int = 1
    keep_checkpoints: int = 3
    map_every: int = 5
    resume: bool = True
    validation_loss: bool = True
    match_threshold: float = 0.5
    unmatched_threshold: float = 0.5
    verbose: Any = "auto"
    jit_compile: bool = False

    def __post_init__(self) -> None:
        problems = []
        self.optimizer = str(self.optimizer).lower()
        self.lr_schedule = str(self.lr_schedule).lower()
        self.strategy = str(self.strategy).lower()
        mp = self.mixed_precision
        mp_key = mp if mp is False or mp is None else str(mp).lower()
        if mp_key is None:
            mp_key = False
        if mp_key not in MIXED_PRECISION:
            problems.append(f"mixed_precision must be false, bfloat16 or float16, got {mp!r}")
        else:
            self.mixed_precision = mp_key
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            problems.append(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.strategy not in STRATEGIES:
            problems.append(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if int(self.epochs) < 1:
            problems.append(f"epochs must be >= 1, got {self.epochs}")
        if self.steps_per_epoch is not None and int(self.steps_per_epoch) < 1:
            problems.append(f"steps_per_epoch must be >= 1 or null, got {self.steps_per_epoch}")
        if not float(self.learning_rate) > 0:
            problems.append(f"learning_rate must be > 0, got {self.learning_rate}")
        if float(self.weight_decay) < 0 or float(self.warmup_epochs) < 0:
            problems.append("weight_decay and warmup_epochs must be >= 0")
        if not 0.0 <= float(self.ema_decay) < 1.0:
            problems.append(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if int(self.checkpoint_every) < 1 or int(self.keep_checkpoints) < 1:
            problems.append("checkpoint_every and keep_checkpoints must be >= 1")
        if int(self.map_every) < 0:
            problems.append(f"map_every must be >= 0, got {self.map_every}")
        if not 0.0 <= float(self.warmup_start_ratio) <= 1.0 or not 0.0 <= float(self.final_lr_ratio) <= 1.0:
            problems.append("warmup_start_ratio and final_lr_ratio must be in [0, 1]")
        if self.verbose not in ("auto", 0, 1, 2):
            problems.append(f"verbose must be auto, 0, 1 or 2, got {self.verbose!r}")
        if problems:
            raise UserError("invalid trainer config: " + "; ".join(problems))
        self.epochs = int(self.epochs)
        self.steps_per_epoch = None if self.steps_per_epoch is None else int(self.steps_per_epoch)
        self.checkpoint_every = int(self.checkpoint_every)
        self.keep_checkpoints = int(self.keep_checkpoints)
        self.map_every = int(self.map_every)
        self.clip_gradients_norm = float(self.clip_gradients_norm) if self.clip_gradients_norm else None

    @property
    def policy(self) -> str | None:
        """The Keras dtype policy name (``None`` = float32)."""
        return MIXED_PRECISION[self.mixed_precision]

    def keras_verbose(self) -> int:
        """0, 1 or 2; ``auto`` is 1 on a TTY (progress bar) and 2 otherwise (one line per epoch)."""
        if self.verbose == "auto":
            return 1 if sys.stdout.isatty() else 2
        return int(self.verbose)


def trainer_config_from_dict(d: Mapping[str, Any] | None) -> TrainerConfig:
    """A :class:`TrainerConfig` from the resolved ``trainer`` config (unknown keys -> UserError naming them)."""
    d = dict(d or {})
    known = {f.name for f in fields(TrainerConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise UserError(f"unknown trainer config key(s) {unknown}; known: {sorted(known)}")
    return TrainerConfig(**d)


def loss_config_from_detector(config: DetectorConfig) -> LossConfig:
    """The :class:`LossConfig` of a detector config (focal α/γ, box loss kind, δ, weight, #levels)."""
    return LossConfig(alpha=config.focal_alpha, gamma=config.focal_gamma, box_loss=config.box_loss,
                      huber_delta=config.huber_delta, box_loss_weight=config.box_loss_weight,
                      num_levels=config.num_levels)


# ============================================================================================ schedule
@keras.saving.register_keras_serializable(package="uncertainty_det")
class WarmupCosineSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up, then cosine decay (or constant) of the learning rate per optimizer step.

    ``lr(s) = peak * (r0 + (1 - r0) * s / W)`` for ``s < W`` (``r0 = warmup_start_ratio``), then for
    ``cosine`` ``lr(s) = peak * (rf + (1 - rf) * 0.5 * (1 + cos(pi * p)))`` with
    ``p = clip((s - W) / (S - W), 0, 1)`` (``rf = final_lr_ratio``, ``S = total_steps``): ``lr(W) = peak``,
    ``lr(S) = rf * peak``; ``constant`` keeps ``peak`` after warm-up.

    Args:
      peak_lr: learning rate after warm-up.
      total_steps: S, the last optimizer step of training.
      warmup_steps: W (0 = no warm-up).
      warmup_start_ratio, final_lr_ratio: r0, rf in [0, 1].
      kind: ``cosine`` or ``constant``.
    """

    def __init__(self, peak_lr: float, total_steps: int, warmup_steps: int = 0, warmup_start_ratio: float = 0.1,
                 final_lr_ratio: float = 0.0, kind: str = "cosine"):
        if kind not in LR_SCHEDULES:
            raise ValueError(f"kind must be one of {LR_SCHEDULES}, got {kind!r}")
        self.peak_lr = float(peak_lr)
        self.total_steps = max(int(total_steps), 1)
        self.warmup_steps = max(int(warmup_steps), 0)
        self.warmup_start_ratio = float(warmup_start_ratio)
        self.final_lr_ratio = float(final_lr_ratio)
        self.kind = kind

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        peak = tf.constant(self.peak_lr, tf.float32)
        w = float(self.warmup_steps)
        if self.kind == "constant":
            after = peak
        else:
            span = max(float(self.total_steps) - w, 1.0)
            p = tf.clip_by_value((step - w) / span, 0.0, 1.0)
            rf = self.final_lr_ratio
            after = peak * (rf + (1.0 - rf) * 0.5 * (1.0 + tf.cos(math.pi * p)))
        if self.warmup_steps == 0:
            return after
        r0 = self.warmup_start_ratio
        warm = peak * (r0 + (1.0 - r0) * step / w)
        return tf.where(step < w, warm, after)

    def get_config(self) -> dict:
        return {"peak_lr": self.peak_lr, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                "warmup_start_ratio": self.warmup_start_ratio, "final_lr_ratio": self.final_lr_ratio,
                "kind": self.kind}


def make_lr_schedule(cfg: TrainerConfig, steps_per_epoch: int) -> WarmupCosineSchedule:
    """The schedule of a trainer config for ``steps_per_epoch`` optimizer steps per epoch."""
    steps_per_epoch = max(int(steps_per_epoch), 1)
    total = cfg.epochs * steps_per_epoch
    warmup = min(int(round(cfg.warmup_epochs * steps_per_epoch)), max(total - 1, 0))
    return WarmupCosineSchedule(cfg.learning_rate, total, warmup, cfg.warmup_start_ratio, cfg.final_lr_ratio,
                                cfg.lr_schedule)


# ============================================================================================ optimizer
def make_optimizer(cfg: TrainerConfig, learning_rate) -> keras.optimizers.Optimizer:
    """AdamW or SGD-momentum for a trainer config.

    Args:
      cfg: the trainer config (``optimizer``, ``momentum``, ``weight_decay``, ``clip_gradients_norm``,
        ``ema_decay``, ``mixed_precision``).
      learning_rate: a float or a ``LearningRateSchedule`` (e.g. :func:`make_lr_schedule`).

    Returns:
      the optimizer (not built); variables named like :data:`NO_DECAY` get no weight decay; a
      ``keras.optimizers.LossScaleOptimizer`` around it for ``float16`` mixed precision.
    """
    common = dict(
        learning_rate=learning_rate,
        weight_decay=float(cfg.weight_decay) if cfg.weight_decay else None,
        global_clipnorm=cfg.clip_gradients_norm,
        use_ema=cfg.ema_decay > 0,
        ema_momentum=float(cfg.ema_decay) if cfg.ema_decay > 0 else 0.99,
    )
    if cfg.optimizer == "adamw":
        common["weight_decay"] = float(cfg.weight_decay)
        opt = keras.optimizers.AdamW(**common)
    else:
        opt = keras.optimizers.SGD(momentum=float(cfg.momentum), **common)
    if cfg.weight_decay:
        opt.exclude_from_weight_decay(var_names=list(NO_DECAY))
    if cfg.policy == "mixed_float16":
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt


def _inner_optimizer(optimizer):
    return getattr(optimizer, "inner_optimizer", optimizer)


def current_lr(optimizer) -> float:
    """The learning rate the optimizer uses at its current step (float)."""
    return float(keras.ops.convert_to_numpy(_inner_optimizer(optimizer).learning_rate))


@contextlib.contextmanager
def ema_weights(optimizer) -> Iterator[None]:
    """Temporarily put the optimizer's EMA values into the model's trainable variables (no-op without EMA).

    Uses Keras 3's optimizer attributes ``_trainable_variables`` / ``_model_variables_moving_average`` (as
    ``keras.callbacks.SwapEMAWeights`` does); the training values are restored on exit.
    """
    opt = _inner_optimizer(optimizer)
    averages = getattr(opt, "_model_variables_moving_average", None) if getattr(opt, "use_ema", False) else None
    if not averages:
        yield
        return
    variables = list(opt._trainable_variables)
    saved = [np.array(keras.ops.convert_to_numpy(v)) for v in variables]
    try:
        for var, avg in zip(variables, averages):
            var.assign(keras.ops.convert_to_numpy(avg))
        yield
    finally:
        for var, value in zip(variables, saved):
            var.assign(value)


# ============================================================================================ strategy / precision
def make_strategy(name: str = "default") -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy for ``trainer.strategy``.

    ``default``: the current (default) strategy; ``mirrored``: synchronous data parallelism over all GPUs of
    the host, or over all logical CPU devices when there is no GPU (useful for tests:
    ``tf.config.set_logical_device_configuration`` splits the CPU); ``multi_worker``:
    ``MultiWorkerMirroredStrategy`` (cluster from ``TF_CONFIG``; a single worker without it).
    """
    name = str(name).lower()
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            return tf.distribute.MirroredStrategy()
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=cpus, cross_device_ops=tf.distribute.ReductionToOneDevice())
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise UserError(f"trainer.strategy must be one of {STRATEGIES}, got {name!r}")


@contextlib.contextmanager
def mixed_precision_policy(policy: str | None) -> Iterator[None]:
    """Set Keras' global dtype policy (``mixed_bfloat16`` / ``mixed_float16``) for model construction,
    restoring the previous one on exit (``None``: leave it)."""
    if policy is None:
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


# ============================================================================================ the Keras model
class DetectorTrainer(keras.Model):
    """Trainable wrapper of a detector: ``fit`` / ``evaluate`` on input-pipeline batches.

    Batches are dicts (see :mod:`uncertainty_det.data.pipeline`): ``image [B,H,W,3]`` float32,
    ``boxes [B,M,4]`` model-input px, ``classes [B,M]`` int32 1-based (-1 padding), ``weights [B,M]``.

    Args:
      detector: a built :class:`~uncertainty_det.model.efficientdet.EfficientDet`.
      anchors: ``[N, 4]`` anchors of the training input size (model-input px).
      loss_config: :class:`LossConfig` (default from the detector config).
      match_threshold, unmatched_threshold: target-assigner IoU thresholds.

    Metrics (means over the epoch): ``loss``, ``cls_loss``, ``box_loss``, ``rmse`` (RMSE of the codes of
    positive anchors), ``mean_sigma`` (mean anchor-space σ of positive anchors, loss attenuation only),
    ``num_positives`` (positive anchors per image), ``grad_norm`` (global norm before clipping; not with
    float16 loss scaling), ``nonfinite_steps`` (steps skipped because the loss/gradient was not finite).
    """

    def __init__(self, detector, anchors, loss_config: LossConfig | None = None, match_threshold: float = 0.5,
                 unmatched_threshold: float = 0.5, **kwargs):
        kwargs.setdefault("name", "detector_trainer")
        super().__init__(**kwargs)
        self.detector = detector
        self.detector_config: DetectorConfig = detector.detector_config
        self.anchors = np.asarray(anchors, np.float32)
        self.loss_config = loss_config or loss_config_from_detector(self.detector_config)
        self.match_threshold = float(match_threshold)
        self.unmatched_threshold = float(unmatched_threshold)
        names = ["loss", "cls_loss", "box_loss", "rmse"]
        if self.detector_config.loss_attenuation:
            names.append("mean_sigma")
        names += ["num_positives"]
        self._loss_names = tuple(names)
        self.trackers = {n: keras.metrics.Mean(name=n) for n in names}
        self.grad_norm_tracker = keras.metrics.Mean(name="grad_norm")
        self.nonfinite_tracker = keras.metrics.Sum(name="nonfinite_steps")
        self.built = True

    @property
    def metrics(self):
        return [*self.trackers.values(), self.grad_norm_tracker, self.nonfinite_tracker]

    def call(self, images, training: bool = False):
        return self.detector(images, training=training)

    def compute_losses(self, batch: Mapping[str, tf.Tensor], training: bool) -> dict[str, tf.Tensor]:
        """Targets from the batch's GT, forward pass and the detection losses (float32 scalars).

        Returns ``loss, cls_loss, box_loss, rmse, num_positives`` (+ ``mean_sigma`` with loss attenuation).
        """
        raw = self.detector(batch["image"], training=training)
        return self.losses_from_outputs(raw, batch)

    def losses_from_outputs(self, raw: Mapping[str, tf.Tensor], batch: Mapping[str, tf.Tensor],
                            image_weights: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        """The detection losses of the detector outputs ``raw`` (``cls [B,N,C]``, ``box [B,N,4]``, optional
        ``sigma_raw``) against the GT of ``batch`` (``boxes, classes, weights``), normalised within the batch.

        image_weights: optional ``[B]``: every anchor term of image ``b`` is multiplied by it (per-image
        pseudo-label weights); the per-GT ``weights`` of the batch multiply the positive anchors as usual.
        """
        cfg = self.detector_config
        targets = assign_targets(batch["boxes"], batch["classes"], self.anchors, cfg.num_classes,
                                 self.match_threshold, self.unmatched_threshold, gt_weights=batch.get("weights"))
        if image_weights is not None:
            ones = tf.ones_like(tf.cast(targets["positive"], tf.float32))
            targets = {**targets, "anchor_weights": ones * tf.cast(image_weights, tf.float32)[:, None]}
        outputs = {"cls": raw["cls"], "box": raw["box"]}
        if "sigma_raw" in raw:
            # training=True: the raw_clip parametrisation clips in train and test steps (reference §1.3).
            outputs["sigma"] = sigma_from_raw(raw["sigma_raw"], cfg.sigma_param, cfg.sigma_min, cfg.sigma_max,
                                              training=True)
        losses = dict(detection_loss(outputs, targets, self.loss_config))
        if "rmse" not in losses:
            pos = tf.cast(targets["positive"], tf.float32)[..., None]
            count = tf.maximum(4.0 * tf.reduce_sum(pos), 1.0)
            sq = tf.square(tf.cast(outputs["box"], tf.float32) - targets["box_targets"])
            losses["rmse"] = tf.stop_gradient(tf.sqrt(tf.reduce_sum(sq * pos) / count))
        losses["num_positives"] = tf.reduce_mean(targets["num_positives"])
        return losses

    def _update(self, losses, training: bool = True) -> dict[str, tf.Tensor]:
        for name in self._loss_names:
            self.trackers[name].update_state(losses[name])
        if training:
            return {m.name: m.result() for m in self.metrics}
        return {name: self.trackers[name].result() for name in self._loss_names}

    def train_step(self, data):
        batch = data[0] if isinstance(data, tuple) else data
        variables = self.detector.trainable_variables
        with tf.GradientTape() as tape:
            losses = self.compute_losses(batch, training=True)
            loss = losses["loss"]
            # gradients are summed over replicas: scale so the update is the mean over replicas
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled = self.optimizer.scale_loss(loss / float(replicas))
        grads = tape.gradient(scaled, variables)
        grads = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g) for g, v in zip(grads, variables)]
        finite = tf.math.is_finite(loss)
        if not isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            norm = tf.linalg.global_norm(grads)
            finite = tf.logical_and(finite, tf.math.is_finite(norm))
            self.grad_norm_tracker.update_state(tf.where(tf.math.is_finite(norm), norm, 0.0))
        # A non-finite step applies a zero update (no NaN ever reaches the weights through the optimizer);
        # the divergence callback stops training after this step.
        grads = [tf.where(finite, g, tf.zeros_like(g)) for g in grads]
        self.optimizer.apply_gradients(zip(grads, variables))
        self.nonfinite_tracker.update_state(1.0 - tf.cast(finite, tf.float32))
        return self._update(losses)

    def test_step(self, data):
        batch = data[0] if isinstance(data, tuple) else data
        return self._update(self.compute_losses(batch, training=False), training=False)


# ============================================================================================ model helpers
def build_detector(config: DetectorConfig, policy: str | None = None):
    """Build an EfficientDet (weights created; ``backbone_weights`` loaded by the builder) under ``policy``."""
    from .efficientdet import build_efficientdet

    with mixed_precision_policy(policy):
        return build_efficientdet(config)


def write_detector_config(path: str | os.PathLike, config: DetectorConfig, class_names: Sequence[str],
                          input_size: Sequence[int], **extra: Any) -> Path:
    """Write ``detector_config.json`` atomically.

    Layout: ``{"version": 1, "detector": DetectorConfig.to_dict(), "class_names": [...],
    "input_size": [H, W], ...extra}`` (``extra``: e.g. ``run_name``, ``dataset``).
    """
    data = {"version": DETECTOR_CONFIG_VERSION, "detector": config.to_dict(), "class_names": list(class_names),
            "input_size": [int(v) for v in input_size], **extra}
    return atomic_write_json(path, data)


def read_detector_config(path: str | os.PathLike) -> tuple[DetectorConfig, dict]:
    """``(DetectorConfig, whole JSON)`` from a ``detector_config.json`` (UserError when missing or invalid)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found; train the model first (udet-train run_name=<run>)")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return DetectorConfig.from_dict(info["detector"]), info
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path} is not a valid detector config ({exc}); re-run udet-train") from exc


def _variable_map(model) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for v in model.weights:
        key = v.path
        k = 1
        while key in out:  # unique keys even if two variables share a path
            key = f"{v.path}#{k}"
            k += 1
        out[key] = v
    return out


def transfer_weights(source_model, target_model) -> tuple[list[str], list[str]]:
    """Copy variables from ``source_model`` into ``target_model`` by variable path where the shapes agree.

    Returns:
      ``(loaded, skipped)`` lists of variable paths; ``skipped`` entries read ``path: [src shape] -> [dst
      shape]`` (shape differs, e.g. class heads of another class count) or ``path: missing in source``.
    """
    src = _variable_map(source_model)
    loaded, skipped = [], []
    for key, var in _variable_map(target_model).items():
        other = src.get(key)
        if other is None:
            skipped.append(f"{key}: missing in source")
            continue
        if tuple(other.shape) != tuple(var.shape):
            skipped.append(f"{key}: {list(other.shape)} -> {list(var.shape)}")
            continue
        var.assign(keras.ops.convert_to_numpy(other))
        loaded.append(key)
    return loaded, skipped


def make_checkpoint(detector, optimizer=None, epoch=None) -> tf.train.Checkpoint:
    """A ``tf.train.Checkpoint`` of every detector variable (trainable or not), the optimizer and the epoch.

    The variables are listed explicitly, keyed by their Keras path: TF's object-graph tracking does not see
    Keras 3 layers kept in Python lists (the blocks, per-level BNs), so ``Checkpoint(model=detector)`` would
    save their trainable weights only through the optimizer and silently drop their BN moving statistics.
    """
    variables = {}
    for v in detector.variables:
        key = v.path.replace("/", ".")
        if key in variables:
            raise ValueError(f"two detector variables share the path {v.path!r}; cannot checkpoint by path")
        variables[key] = v
    parts: dict[str, Any] = {"detector_variables": variables}
    if optimizer is not None:
        parts["optimizer"] = optimizer
    if epoch is not None:
        parts["epoch"] = epoch
    return tf.train.Checkpoint(**parts)


def init_from_run(target_model, train_dir: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Initialise ``target_model`` from another run's ``train/`` folder (its final weights).

    Variables whose shape differs (heads of a different class count, a 4A vs 8A box predictor) are
    skipped and named in one log line.
    """
    from .efficientdet import build_efficientdet

    train_dir = Path(train_dir)
    config, _ = read_detector_config(train_dir / "detector_config.json")
    weights = train_dir / "final.weights.h5"
    if not weights.is_file():
        raise UserError(f"{weights} not found; finish training that run first (udet-train run_name=<run>)")
    source = build_efficientdet(config.replace(backbone_weights=None))
    source.load_weights(str(weights))
    loaded, skipped = transfer_weights(source, target_model)
    if skipped:
        log.info("init_from %s: loaded %d variables; skipped %d whose shape differs: %s", train_dir, len(loaded),
                 len(skipped), "; ".join(skipped))
    else:
        log.info("init_from %s: loaded all %d variables", train_dir, len(loaded))
    return loaded, skipped


def _all_finite(model) -> bool:
    """True when every floating-point variable of ``model`` is finite."""
    for v in model.weights:
        value = keras.ops.convert_to_numpy(v)
        if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
            return False
    return True


# ============================================================================================ history
def _write_history(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write epoch rows as CSV atomically (columns: ``epoch`` then the sorted union of keys)."""
    keys = sorted({k for r in rows for k in r} - {"epoch"})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["epoch", *keys], extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: r.get(k, "") for k in ["epoch", *keys]})
    atomic_write_text(path, buf.getvalue())


def _read_history(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            row: dict[str, Any] = {"epoch": int(r.pop("epoch"))}
            for k, v in r.items():
                if v not in ("", None):
                    try:
                        row[k] = float(v)
                    except ValueError:
                        row[k] = v
            rows.append(row)
    return rows


# ============================================================================================ callbacks
class _Divergence(keras.callbacks.Callback):
    """Stops training at the first step whose (running mean) loss is not finite."""

    def __init__(self):
        super().__init__()
        self.epoch = 0
        self.at: tuple[int, int, float] | None = None  # (1-based epoch, 1-based step, loss)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        loss = logs.get("loss")
        bad = logs.get("nonfinite_steps")
        loss_v = float(np.asarray(loss)) if loss is not None else 0.0
        if not math.isfinite(loss_v) or (bad is not None and float(np.asarray(bad)) > 0):
            self.at = (self.epoch + 1, int(batch) + 1, loss_v)
            self.model.stop_training = True


class _EpochEnd(keras.callbacks.Callback):
    """At each epoch end: lr, mAP (when due), history, checkpoint (when due), ``log_fn``."""

    def __init__(self, owner: "_Loop"):
        super().__init__()
        self.owner = owner
        self.t0 = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.owner.epoch_end(epoch + 1, logs if logs is not None else {}, time.perf_counter() - self.t0)


# ============================================================================================ the loop
@dataclass
class TrainResult:
    """What :func:`train_detector` returns.

    Attributes:
      model: the trained detector (final weights: EMA values when EMA is on).
      history: one dict per epoch (all epochs, also those of a resumed run's earlier part).
      final_metrics: mAP metrics of the final evaluation (``map/AP``, ``map/AP50``, ...; empty without
        an evaluator).
      initial_epoch: epochs already done when this call started (from the checkpoint).
      paths: the files written (``final_weights``, ``detector_config``, ``history``, ``checkpoints``).
    """

    model: Any
    history: list[dict]
    final_metrics: dict[str, float]
    initial_epoch: int
    paths: dict[str, Path] = field(default_factory=dict)


def _prefixed(metrics: Mapping[str, Any], prefix: str = "map/") -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        try:
            out[f"{prefix}{k}"] = float(v)
        except (TypeError, ValueError):
            continue
    return out


class _Loop:
    """State shared by the callbacks of one :func:`train_detector` call."""

    def __init__(self, cfg: TrainerConfig, detector, optimizer, manager, epoch_var, history: list[dict],
                 ckpt_dir: Path, evaluate_fn, log_fn, divergence: _Divergence):
        self.cfg = cfg
        self.detector = detector
        self.optimizer = optimizer
        self.manager = manager
        self.epoch_var = epoch_var
        self.history = history
        self.ckpt_dir = ckpt_dir
        self.evaluate_fn = evaluate_fn
        self.log_fn = log_fn
        self.divergence = divergence
        self.last_map_epoch = -1
        self.last_map: dict[str, float] = {}

    def evaluate(self) -> dict[str, float]:
        if self.evaluate_fn is None:
            return {}
        with ema_weights(self.optimizer):
            return _prefixed(self.evaluate_fn(self.detector))

    def epoch_end(self, epoch: int, logs: dict, seconds: float) -> None:
        if self.divergence.at is not None:
            return  # never record, checkpoint or evaluate diverged weights
        metrics = {k: float(np.asarray(v)) for k, v in logs.items() if np.ndim(np.asarray(v)) == 0}
        metrics.pop("nonfinite_steps", None)
        metrics.pop("val_nonfinite_steps", None)
        metrics.pop("val_grad_norm", None)
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            metrics.pop("grad_norm", None)  # not measured under loss scaling
        metrics["lr"] = current_lr(self.optimizer)
        metrics["epoch_time_s"] = float(seconds)
        if self.cfg.map_every and epoch % self.cfg.map_every == 0 and epoch < self.cfg.epochs:
            t = time.perf_counter()
            self.last_map = self.evaluate()
            self.last_map_epoch = epoch
            metrics.update(self.last_map)
            if self.last_map:
                log.info("epoch %d: mAP@0.5 %.4f, mAP %.4f (%.1f s)", epoch, self.last_map.get("map/AP50", float("nan")),
                         self.last_map.get("map/AP", float("nan")), time.perf_counter() - t)
        self.history.append({"epoch": epoch, **metrics})
        if epoch % self.cfg.checkpoint_every == 0 or epoch == self.cfg.epochs:
            self.save_checkpoint(epoch)
        if self.log_fn is not None:
            self.log_fn({k: v for k, v in metrics.items() if math.isfinite(v)}, epoch)

    def save_checkpoint(self, epoch: int) -> None:
        if not _all_finite(self.detector):
            self.divergence.at = (epoch, 0, float("nan"))
            if self.divergence.model is not None:
                self.divergence.model.stop_training = True
            return
        self.epoch_var.assign(epoch)
        path = self.manager.save(checkpoint_number=epoch)
        _write_history(self.ckpt_dir / "history.csv", self.history)
        log.debug("checkpoint %s", path)


def _train_state(config: DetectorConfig, input_size: Sequence[int]) -> dict:
    return {"detector": config.to_dict(), "input_size": [int(v) for v in input_size]}


def _prepare_train_dir(train_dir: Path, resume: bool) -> None:
    """``resume=false``: remove the old ``train/`` folder (moved aside first, so the removal is atomic)."""
    if resume or not train_dir.exists():
        return
    old = train_dir.with_name(f".{train_dir.name}.old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(train_dir, old)
    shutil.rmtree(old, ignore_errors=True)


def train_detector(
    detector_config: DetectorConfig,
    trainer_cfg: TrainerConfig,
    train_dataset: tf.data.Dataset,
    train_dir: str | os.PathLike,
    *,
    num_train_batches: int | None = None,
    val_dataset: tf.data.Dataset | None = None,
    evaluate_fn: Callable[[Any], Mapping[str, float]] | None = None,
    log_fn: Callable[[dict, int], None] | None = None,
    class_names: Sequence[str] | None = None,
    input_size: Sequence[int] | None = None,
    init_from: str | os.PathLike | None = None,
    seed: int | None = 0,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    extra_config: Mapping[str, Any] | None = None,
    trainer_factory: Callable[..., "DetectorTrainer"] | None = None,
) -> TrainResult:
    """Train a detector with Keras ``fit``; checkpoints, resume, divergence stop, final files.

    Args:
      detector_config: the network + uncertainty config (``image_size`` = the batches' H, W).
      trainer_cfg: the trainer settings.
      train_dataset: batches of the input pipeline (augmented, shuffled); it is repeated, and an epoch is
        ``trainer_cfg.steps_per_epoch`` steps, or ``num_train_batches`` (one pass) when that is null.
      train_dir: the run's ``train/`` folder (``checkpoints/`` and the final files go there).
      num_train_batches: batches in one pass over ``train_dataset`` (required when ``steps_per_epoch`` is
        null).
      val_dataset: evaluation batches for the ``val_*`` losses (``trainer_cfg.validation_loss``).
      evaluate_fn: ``fn(detector) -> {"AP": ..., "AP50": ...}`` called every ``map_every`` epochs and at
        the end (EMA weights swapped in); keys are logged with the prefix ``map/``.
      log_fn: ``fn(metrics, step)`` called at every epoch end with ``step`` = the 1-based epoch and at the
        end with the final mAP (``step`` = epochs).
      class_names, input_size: written to ``detector_config.json``.
      init_from: another run's ``train/`` folder to initialise from (ignored when resuming from a checkpoint).
      seed: seeds Python, NumPy and TF (weight init, dropout); ``None`` leaves them.
      callbacks: extra Keras callbacks (run after the built-in ones).
      extra_config: extra keys for ``detector_config.json`` (e.g. ``run_name``, ``dataset``).
      trainer_factory: ``fn(detector, anchors, match_threshold=, unmatched_threshold=, total_steps=)`` ->
        a :class:`DetectorTrainer` (subclass) whose ``train_step`` understands ``train_dataset``'s elements
        (semi-supervised trainers); default :class:`DetectorTrainer`.

    Returns:
      :class:`TrainResult`.

    Raises:
      TrainingDivergedError: the loss became NaN/inf (no checkpoint of those weights is written).
      CheckpointMismatchError: ``resume`` found a checkpoint of another model configuration.
    """
    cfg = trainer_cfg
    train_dir = Path(train_dir)
    input_size = tuple(int(v) for v in (input_size or detector_config.image_size))
    _prepare_train_dir(train_dir, cfg.resume)
    ckpt_dir = train_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    state_path = ckpt_dir / "train_state.json"
    state = _train_state(detector_config, input_size)

    if cfg.steps_per_epoch is not None:
        steps_per_epoch = cfg.steps_per_epoch
    elif num_train_batches is not None:
        steps_per_epoch = int(num_train_batches)
    else:
        raise ValueError("num_train_batches is required when trainer.steps_per_epoch is null")
    # Always repeat and give Keras the step count: epochs have exactly steps_per_epoch steps and the
    # (reshuffling) iterator runs on across epochs.
    train_dataset = train_dataset.repeat()
    if seed is not None:
        keras.utils.set_random_seed(int(seed))

    strategy = make_strategy(cfg.strategy)
    with strategy.scope():
        detector = build_detector(detector_config, cfg.policy)
        anchors = generate_anchors(input_size, detector_config.min_level, detector_config.max_level,
                                   detector_config.num_scales, detector_config.aspect_ratios,
                                   detector_config.anchor_scale)
        with mixed_precision_policy(cfg.policy):
            if trainer_factory is None:
                trainer = DetectorTrainer(detector, anchors, match_threshold=cfg.match_threshold,
                                          unmatched_threshold=cfg.unmatched_threshold)
            else:
                trainer = trainer_factory(detector, anchors, match_threshold=cfg.match_threshold,
                                          unmatched_threshold=cfg.unmatched_threshold,
                                          total_steps=int(cfg.epochs) * int(steps_per_epoch))
        schedule = make_lr_schedule(cfg, steps_per_epoch)
        optimizer = make_optimizer(cfg, schedule)
        trainer.compile(optimizer=optimizer, jit_compile=bool(cfg.jit_compile))
        optimizer.build(detector.trainable_variables)
        epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        checkpoint = make_checkpoint(detector, optimizer, epoch_var)
        manager = tf.train.CheckpointManager(checkpoint, str(ckpt_dir), max_to_keep=cfg.keep_checkpoints,
                                             checkpoint_name="ckpt")
        initial_epoch = 0
        history: list[dict] = []
        if cfg.resume and manager.latest_checkpoint:
            if state_path.is_file():
                saved = json.loads(state_path.read_text(encoding="utf-8"))
                if saved != json.loads(json.dumps(state)):
                    diff = sorted(k for k in set(saved["detector"]) | set(state["detector"])
                                  if saved["detector"].get(k) != state["detector"].get(k))
                    if saved.get("input_size") != state["input_size"]:
                        diff.append("input_size")
                    raise CheckpointMismatchError(
                        f"the checkpoint in {ckpt_dir} was trained with a different model configuration "
                        f"(differs in: {', '.join(diff)}); use trainer.resume=false to start fresh, or another run_name")
            try:
                checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
            except (AssertionError, ValueError, tf.errors.OpError) as exc:
                raise CheckpointMismatchError(
                    f"cannot resume from {manager.latest_checkpoint} ({str(exc).splitlines()[0][:200]}); "
                    f"use trainer.resume=false to start fresh") from exc
            initial_epoch = int(epoch_var.numpy())
            history = [r for r in _read_history(ckpt_dir / "history.csv") if r["epoch"] <= initial_epoch]
            log.info("resuming from %s: %d of %d epochs done", manager.latest_checkpoint, initial_epoch, cfg.epochs)
            if init_from is not None:
                log.info("init_from ignored: resuming from a checkpoint of this run")
        elif init_from is not None:
            init_from_run(detector, init_from)
    atomic_write_json(state_path, state)

    divergence = _Divergence()
    loop = _Loop(cfg, detector, optimizer, manager, epoch_var, history, ckpt_dir, evaluate_fn, log_fn, divergence)
    val = val_dataset if (cfg.validation_loss and val_dataset is not None) else None
    all_callbacks = [divergence, _EpochEnd(loop), *callbacks]
    start = time.perf_counter()
    if initial_epoch < cfg.epochs:
        trainer.fit(train_dataset, epochs=cfg.epochs, initial_epoch=initial_epoch, steps_per_epoch=steps_per_epoch,
                    validation_data=val, callbacks=all_callbacks, verbose=cfg.keras_verbose(), shuffle=False)
    else:
        # nothing left to train; make the EMA values the final weights as fit would
        _inner_optimizer(optimizer).finalize_variable_values(detector.trainable_variables)
    if divergence.at is not None:
        epoch, step, loss = divergence.at
        last = manager.latest_checkpoint
        where = f"epoch {epoch}, step {step}" if step else f"epoch {epoch} (non-finite weights)"
        raise TrainingDivergedError(
            f"training diverged at {where} (loss={loss}); last good checkpoint: {last or 'none'}; lower "
            f"trainer.learning_rate (now {cfg.learning_rate:g}) or raise trainer.warmup_epochs, check the data, "
            f"then re-run (trainer.resume=true continues from that checkpoint)")
    log.info("trained %d epochs in %.1f s", cfg.epochs - initial_epoch, time.perf_counter() - start)

    # the weights are final now (EMA values when EMA is on); saved before the evaluation so that a failing
    # evaluation does not lose the training
    paths = {"checkpoints": ckpt_dir, "final_weights": train_dir / "final.weights.h5",
             "detector_config": train_dir / "detector_config.json", "history": train_dir / "history.csv"}
    tmp = train_dir / f".final.tmp-{os.getpid()}.weights.h5"
    try:
        detector.save_weights(str(tmp))
        os.replace(tmp, paths["final_weights"])
    finally:
        if tmp.exists():
            tmp.unlink()
    write_detector_config(paths["detector_config"], detector_config, class_names or [], input_size,
                          **dict(extra_config or {}))

    final_metrics: dict[str, float] = {}
    if evaluate_fn is not None:
        final_metrics = _prefixed(evaluate_fn(detector))
        log.info("final mAP@0.5 %.4f, mAP %.4f", final_metrics.get("map/AP50", float("nan")),
                 final_metrics.get("map/AP", float("nan")))
    if history:
        history[-1].update(final_metrics)
    if log_fn is not None and final_metrics:
        log_fn({k: v for k, v in final_metrics.items() if math.isfinite(v)}, cfg.epochs)
    _write_history(paths["history"], history)
    return TrainResult(detector, history, final_metrics, initial_epoch, paths)


# ============================================================================================ from manifests
def make_map_evaluator(manifest, input_cfg, detector_config: DetectorConfig, postprocess_cfg=None,
                       class_names: Sequence[str] | None = None):
    """``fn(detector) -> coco_metrics dict`` on ``manifest`` (Predictor with the config's MC settings)."""
    from ..evaluation.coco_eval import coco_metrics
    from ..inference.predictor import Predictor

    gt = manifest.to_coco()
    cache: dict[int, Predictor] = {}

    def evaluate(detector) -> dict[str, float]:
        predictor = cache.get(id(detector))
        if predictor is None:
            predictor = cache[id(detector)] = Predictor(detector, detector_config, postprocess_cfg)
        frame = predictor.predict_manifest(manifest, input_cfg)
        return coco_metrics(gt, frame, class_names or manifest.class_names)

    return evaluate


def train_from_manifests(
    detector_config: DetectorConfig,
    trainer_cfg: TrainerConfig,
    input_cfg,
    train_manifest,
    train_dir: str | os.PathLike,
    *,
    val_manifest=None,
    postprocess_cfg=None,
    train_ids: Sequence[int] | None = None,
    log_fn: Callable[[dict, int], None] | None = None,
    init_from: str | os.PathLike | None = None,
    seed: int | None = 0,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    extra_config: Mapping[str, Any] | None = None,
) -> TrainResult:
    """:func:`train_detector` on dataset manifests.

    Builds the training pipeline (augmented, shuffled) and, with ``val_manifest``, the validation pipeline and
    the COCO mAP evaluator. The input size is the model's: ``input_cfg.image_size`` is replaced by
    ``detector_config.image_size`` (logged when they differ).

    Args:
      input_cfg: :class:`~uncertainty_det.data.pipeline.InputConfig`.
      train_manifest, val_manifest: :class:`~uncertainty_det.data.manifest.Manifest` of the splits.
      postprocess_cfg: :class:`~uncertainty_det.inference.postprocess.PostprocessConfig` for the mAP.
      train_ids: train on a subset of image ids (active learning, SSL); default all.
      Others: as :func:`train_detector`.
    """
    import dataclasses

    from ..data.pipeline import build_manifest_dataset

    size = tuple(detector_config.image_size)
    if tuple(input_cfg.image_size) != size:
        log.info("input size %s -> model input size %s (model.image_size)", list(input_cfg.image_size), list(size))
    input_cfg = dataclasses.replace(input_cfg, image_size=size, repeat=False)
    train_ds, report = build_manifest_dataset(train_manifest, input_cfg, image_ids=train_ids, training=True)
    num_batches = (report.num_images // input_cfg.batch_size if input_cfg.drop_remainder
                   else -(-report.num_images // input_cfg.batch_size))
    if num_batches < 1:
        raise UserError(f"the training split has {report.num_images} images, fewer than one batch of "
                        f"{input_cfg.batch_size} with drop_remainder; lower input.batch_size")
    val_ds = None
    evaluate_fn = None
    if val_manifest is not None and len(val_manifest):
        val_ds, _ = build_manifest_dataset(val_manifest, input_cfg, training=False)
        evaluate_fn = make_map_evaluator(val_manifest, input_cfg, detector_config, postprocess_cfg,
                                         train_manifest.class_names)
    log.info("training on %d images (%d batches of %d per pass), %s", report.num_images, num_batches,
             input_cfg.batch_size, f"validating on {len(val_manifest)} images" if val_ds is not None else "no val split")
    return train_detector(
        detector_config, trainer_cfg, train_ds, train_dir, num_train_batches=num_batches, val_dataset=val_ds,
        evaluate_fn=evaluate_fn, log_fn=log_fn, class_names=train_manifest.class_names, input_size=size,
        init_from=init_from, seed=seed, callbacks=callbacks, extra_config=extra_config)
