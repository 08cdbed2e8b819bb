"""RCF: the rare/common curriculum as a tf.data stream of training batches (reference §5.4 RCF, §5.3).

:func:`curriculum_dataset` turns the labeled images of a manifest into an endless stream of batches in the
layout of :func:`~uncertainty_det.data.pipeline.build_manifest_dataset` in which every batch holds
``batch_size - 1`` common images, 1 rare image and ``aug_rare`` more rare images with the strong box-aware
augmentation (``[common | rare | strong rare]``, width ``batch_size + aug_rare``).

How the stream is built, and why:

* class weights :func:`~uncertainty_det.ssl.class_weights.log_class_weights` of the labeled objects, image
  scores :func:`~uncertainty_det.ssl.class_weights.image_class_scores`, rare/common sets
  :func:`~uncertainty_det.ssl.class_weights.rare_common_split` (the ``N // batch_size`` highest scores are
  rare), batches of ids from :class:`~uncertainty_det.ssl.class_weights.RareCommonSampler`: epoch ``e`` is
  ``sampler.epoch(steps, index=e)``, so the stream is a pure function of ``seed`` (every new iterator starts
  again at epoch 0);
* a Python generator yields one id row per step (``[width]`` positions into the labeled table: cheap ints);
  one ``map`` per row (parallel over rows, deterministic order) reads and decodes the row's images and runs
  :func:`~uncertainty_det.data.pipeline.prepare_example` on each (``tf.map_fn``): the first ``batch_size``
  slots with ``input_cfg`` (its training augmentation), the extra slots with ``augment="strong"``.
  The per-image objects are held as constant flat tensors with row offsets (the same table, capped at
  ``max_boxes``, that ``build_manifest_dataset`` builds), so nothing is re-implemented and only the images of
  the current batches are read. Working per row keeps the batch composition exact: an image that fails to
  decode at run time drops its whole batch (``ignore_errors``) instead of shifting every later batch.
  Unreadable images are removed before sampling (``scan_images``, like ``build_manifest_dataset``);
* the augmentation seed of a slot is ``(input_cfg.seed, step * width + slot)``: a seed reproduces every pixel.

``input_cfg.shuffle``, ``shuffle_buffer``, ``repeat``, ``batch_size``, ``drop_remainder`` and
``cache_decoded`` are not used: the sampler shuffles, the stream never ends, the width is fixed.

Image-score weighting (``image_score_weights=True``): every box's weight (its annotation ``score``, 1 for
ground truth) is multiplied by ``s_i / mean(s)``, ``s_i`` the image's score and the mean over the labeled
images, and carried in the ``weights`` field that the detection loss applies on the positive anchors of each
box. The reference's ``imscore`` instead multiplies the whole detection loss of a batch by the batch mean of
``s_i``: there a rare image raises the loss of the common images it is batched with, and the loss scale grows
with ``highest_weight``. Here each image's boxes carry their own image's weight, and dividing by the mean
keeps the weight of an average labeled image at 1, so learning rates tuned without weighting still fit (the
curriculum over-samples rare images, so the mean weight seen in training is somewhat above 1).
"""
from __future__ import annotations

import dataclasses
import logging
import numbers
from typing import Sequence

import numpy as np
import pandas as pd
import tensorflow as tf

from ..data.errors import DatasetError
from ..data.images import scan_images
from ..data.manifest import Manifest
from ..data.pipeline import InputConfig, _decode, _gather_objects, cap_objects, prepare_example
from ..errors import UserError
from .class_weights import RareCommonSampler, image_class_scores, log_class_weights, rare_common_split
from .split import as_id_array

log = logging.getLogger(__name__)

__all__ = ["CurriculumError", "curriculum_dataset"]


class CurriculumError(UserError, ValueError):
    """Bad input to :func:`curriculum_dataset`; the message names the argument and the fix."""


def _int_at_least(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        raise CurriculumError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def curriculum_dataset(
    manifest: Manifest,
    labeled_ids: Sequence[int],
    input_cfg: InputConfig,
    batch_size: int,
    seed: int,
    highest_weight: float = 30.0,
    lowest_weight: float = 1.0,
    aug_rare: int = 0,
    image_score_weights: bool = False,
    steps_per_epoch: int | None = None,
) -> tuple[tf.data.Dataset, dict]:
    """An endless stream of RCF curriculum batches of the labeled images (module docstring).

    Args:
      manifest: the dataset split holding the labeled images.
      labeled_ids: the labeled image ids (distinct; each must be in ``manifest``).
      input_cfg: :class:`~uncertainty_det.data.pipeline.InputConfig` (``image_size``, ``max_boxes``,
        ``augment`` of the ``batch_size`` regular slots, normalisation, ``seed`` of the augmentation).
      batch_size: regular slots per batch, ``>= 2`` (``batch_size - 1`` common + 1 rare).
      seed: seed of the sampler (which images go where, per epoch).
      highest_weight, lowest_weight: range of the class weights (reference RCF: 30 and 1).
      aug_rare: extra rare images per batch with ``augment="strong"`` (reference ``aug``: 2).
      image_score_weights: multiply every box weight by its image's score over the mean labeled score.
      steps_per_epoch: batches per epoch (one sampler draw); ``None``: the fewest steps that show every
        common and every rare image once (``RareCommonSampler.steps_for_coverage``).

    Returns:
      ``(dataset, info)``: the dataset yields dicts with the keys and per-image shapes of
      ``build_manifest_dataset`` and batch dimension ``batch_size + aug_rare``; info holds
      ``class_weights`` ({class id: w}), ``rare_ids``, ``common_ids`` (lists), ``steps_per_epoch``, and also
      ``image_scores`` ({image id: s}), ``weight_scale`` (the mean score the weights are divided by, 1.0
      without ``image_score_weights``), ``batch_width`` and ``skipped_ids`` (unreadable images left out).

    Raises:
      CurriculumError: bad sizes; ClassWeightError: too few labeled images for rare and common sets;
      DatasetError: unknown ids or no readable image.
    """
    batch_size = _int_at_least("batch_size", batch_size, 2)
    aug_rare = _int_at_least("aug_rare", aug_rare, 0)
    seed = _int_at_least("seed", seed, 0)
    if steps_per_epoch is not None:
        steps_per_epoch = _int_at_least("steps_per_epoch", steps_per_epoch, 1)
    if not isinstance(input_cfg, InputConfig):
        raise CurriculumError(f"input_cfg must be an InputConfig, got {type(input_cfg).__name__}")
    ids = as_id_array(labeled_ids, "labeled_ids", CurriculumError).tolist()
    if not ids:
        raise CurriculumError("labeled_ids is empty; the curriculum needs the labeled images")
    for i in ids:
        manifest.image(i)
    scan = scan_images({i: manifest.image_path(i) for i in ids})
    ok = list(scan.ok)
    if not ok:
        raise DatasetError(f"manifest {manifest.source}: none of the {len(ids)} labeled images can be read; "
                           f"check dataset.root / image_root")

    # class weights, image scores and the rare / common sets of the readable labeled images (all their objects)
    objects = _gather_objects(manifest, ok)
    object_image = np.repeat(np.asarray(ok, np.int64), objects.row_lengths)
    counts = {int(c): 0 for c in manifest.category_ids}
    for c in objects.classes.tolist():
        counts[int(c)] += 1
    class_weights = log_class_weights(counts, lowest=lowest_weight, highest=highest_weight)
    scores = image_class_scores(ok, object_image, objects.classes.astype(np.int64), class_weights)
    table, dropped, _ = cap_objects(objects, input_cfg.max_boxes)
    if dropped:
        log.warning("%d objects beyond max_boxes=%d dropped (the highest-score ones kept)", dropped,
                    input_cfg.max_boxes)
    rare, common = rare_common_split(ok, scores, batch_size)
    sampler = RareCommonSampler(rare, common, batch_size, seed=seed, extra_rare=aug_rare)
    steps = steps_per_epoch or sampler.steps_for_coverage()
    width = sampler.width

    box_weights = table.weights.astype(np.float64)
    scale = 1.0
    if image_score_weights:
        scale = float(np.mean(scores))
        box_weights = box_weights * np.repeat(scores / scale, table.row_lengths)

    # constant lookup tables: row k = labeled image ok[k]
    splits = np.concatenate([[0], np.cumsum(table.row_lengths)]).astype(np.int64)
    paths_t = tf.constant([str(manifest.image_path(i)) for i in ok])
    ids_t = tf.constant(ok, tf.int64)
    splits_t = tf.constant(splits, tf.int64)
    boxes_t = tf.constant(table.boxes.reshape(-1, 4), tf.float32)
    classes_t = tf.constant(table.classes, tf.int32)
    weights_t = tf.constant(box_weights, tf.float32)
    regular_cfg = input_cfg
    strong_cfg = dataclasses.replace(input_cfg, augment="strong")
    position = pd.Index(ok)

    def rows():
        epoch = 0
        while True:
            id_table, _ = sampler.epoch(steps, index=epoch)
            yield from position.get_indexer(id_table.reshape(-1)).reshape(id_table.shape).astype(np.int64)
            epoch += 1

    height, width_px = input_cfg.image_size
    m = input_cfg.max_boxes
    spec = {
        "image": tf.TensorSpec([height, width_px, 3], tf.float32),
        "boxes": tf.TensorSpec([m, 4], tf.float32),
        "classes": tf.TensorSpec([m], tf.int32),
        "weights": tf.TensorSpec([m], tf.float32),
        "num_boxes": tf.TensorSpec([], tf.int32),
        "image_id": tf.TensorSpec([], tf.int64),
        "scale": tf.TensorSpec([], tf.float32),
        "image_shape": tf.TensorSpec([2], tf.int32),
    }

    def example(pos):
        start, end = splits_t[pos], splits_t[pos + 1]
        return {"image": _decode(tf.io.read_file(tf.gather(paths_t, pos))), "boxes": boxes_t[start:end],
                "classes": classes_t[start:end], "weights": weights_t[start:end], "image_id": tf.gather(ids_t, pos)}

    def slots(positions, indices, cfg):
        return tf.map_fn(lambda args: prepare_example(example(args[0]), args[1], cfg, True),
                         (positions, indices), fn_output_signature=spec)

    def make_batch(step, positions):
        indices = step * width + tf.range(width, dtype=tf.int64)
        batch = slots(positions[:batch_size], indices[:batch_size], regular_cfg)
        if aug_rare:
            extra = slots(positions[batch_size:], indices[batch_size:], strong_cfg)
            batch = {k: tf.concat([batch[k], extra[k]], axis=0) for k in batch}
        return {k: tf.ensure_shape(v, [width, *spec[k].shape]) for k, v in batch.items()}

    ds = tf.data.Dataset.from_generator(rows, output_signature=tf.TensorSpec([width], tf.int64))
    ds = ds.enumerate().map(make_batch, num_parallel_calls=input_cfg.parallel_calls, deterministic=True)
    ds = ds.ignore_errors(log_warning=True)
    options = tf.data.Options()
    options.deterministic = True
    ds = ds.prefetch(tf.data.AUTOTUNE).with_options(options)
    info = {
        "class_weights": class_weights,
        "rare_ids": rare.tolist(),
        "common_ids": common.tolist(),
        "steps_per_epoch": int(steps),
        "image_scores": {int(i): float(s) for i, s in zip(ok, scores)},
        "weight_scale": scale,
        "batch_width": int(width),
        "skipped_ids": [int(i) for i in scan.missing + scan.corrupt],
    }
    log.info("RCF curriculum: %d rare + %d common labeled images, batches of %d common + 1 rare + %d strong rare, "
             "%d steps per epoch", rare.size, common.size, batch_size - 1, aug_rare, steps)
    return ds, info
