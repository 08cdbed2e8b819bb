"""The tf.data input pipeline: a manifest (or TFRecord shards) -> batches of padded, normalised examples.

Every batch is a dict (B = batch size, H, W = ``InputConfig.image_size``, M = ``InputConfig.max_boxes``):

==============  =========================  ===============================================================
key             dtype, shape               meaning
==============  =========================  ===============================================================
``image``       float32 ``[B,H,W,3]``      ``(rgb - mean) / std``; padding is exactly 0
``boxes``       float32 ``[B,M,4]``        ``[ymin, xmin, ymax, xmax]`` in model-input pixels; 0 padding
``classes``     int32 ``[B,M]``            1-based class ids; -1 padding
``weights``     float32 ``[B,M]``          per-box weight = annotation ``score`` (1.0 for GT; 0 on a real box:
                                           an ignore region for the target assigner); 0 padding
``num_boxes``   int32 ``[B]``              number of real boxes
``image_id``    int64 ``[B]``              manifest image id
``scale``       float32 ``[B]``            model px per original px (divide predictions by it)
``image_shape`` int32 ``[B,2]``            original ``(H, W)``
==============  =========================  ===============================================================

Evaluation (``training=False``) ignores ``augment``: the image is resized keeping its aspect ratio so
that it fits ``image_size`` (resampled at exactly ``scale`` on both axes) and padded bottom/right.
Training applies ``augment``: ``none`` (the same letterbox with the faster integer-size resize),
``standard`` (random flip + scale jitter with random crop/pad) or ``strong`` (standard + the
RandAugment-style policy of :mod:`uncertainty_det.data.augment`). Augmentation seeds derive from
``(seed, element index)``, so a seed reproduces the same batches. Resampling is bilinear.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping, Sequence

import numpy as np
import tensorflow as tf

from . import augment as aug
from .errors import DatasetError
from .images import scan_images
from .manifest import Manifest

log = logging.getLogger(__name__)

AUGMENT_MODES = ("none", "standard", "strong")


@dataclass
class InputConfig:
    """Input-pipeline settings; maps 1:1 onto the Hydra config section ``input:``.

    image_size: model input ``(H, W)`` px; max_boxes: padding length M (objects beyond it are dropped
    with a warning, the highest-``score`` ones kept); augment: ``none | standard | strong``;
    scale_jitter: range of the random scale factor relative to the letterbox scale; strong_ops /
    strong_magnitude: ops per image and their magnitude (0..1) for ``strong``; mean / std: RGB pixel
    normalisation; shuffle (training only) / shuffle_buffer: shuffles file paths, or decoded images
    when ``cache_decoded`` (which keeps every decoded image in memory); num_parallel_calls: -1 =
    ``tf.data.AUTOTUNE``.
    """

    image_size: tuple[int, int] = (256, 256)
    batch_size: int = 16
    max_boxes: int = 100
    augment: str = "none"
    hflip_prob: float = 0.5
    scale_jitter: tuple[float, float] = (0.8, 1.2)
    strong_ops: int = 2
    strong_magnitude: float = 0.5
    mean: tuple = (123.675, 116.28, 103.53)
    std: tuple = (58.395, 57.12, 57.375)
    shuffle: bool = True
    shuffle_buffer: int = 1024
    repeat: bool = False
    drop_remainder: bool = False
    cache_decoded: bool = False
    seed: int = 0
    num_parallel_calls: int = -1

    def __post_init__(self) -> None:
        self.image_size = tuple(int(v) for v in self.image_size)
        self.scale_jitter = tuple(float(v) for v in self.scale_jitter)
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)
        problems = []
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            problems.append(f"image_size must be two positive ints (H, W), got {self.image_size}")
        if self.batch_size < 1 or self.max_boxes < 1:
            problems.append(f"batch_size and max_boxes must be >= 1, got {self.batch_size}, {self.max_boxes}")
        if self.augment not in AUGMENT_MODES:
            problems.append(f"augment must be one of {AUGMENT_MODES}, got {self.augment!r}")
        if not 0.0 <= self.hflip_prob <= 1.0:
            problems.append(f"hflip_prob must be in [0, 1], got {self.hflip_prob}")
        if len(self.scale_jitter) != 2 or not 0.0 < self.scale_jitter[0] <= self.scale_jitter[1]:
            problems.append(f"scale_jitter must be (lo, hi) with 0 < lo <= hi, got {self.scale_jitter}")
        if self.strong_ops < 0 or not 0.0 <= self.strong_magnitude <= 1.0:
            problems.append(f"strong_ops must be >= 0 and strong_magnitude in [0, 1], got "
                            f"{self.strong_ops}, {self.strong_magnitude}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0.0:
            problems.append(f"mean and std must be 3 RGB values with std > 0, got {self.mean}, {self.std}")
        if self.shuffle_buffer < 1:
            problems.append(f"shuffle_buffer must be >= 1, got {self.shuffle_buffer}")
        if problems:
            raise ValueError("invalid input config: " + "; ".join(problems))

    @property
    def parallel_calls(self) -> int:
        """``num_parallel_calls`` with -1 mapped to ``tf.data.AUTOTUNE``."""
        return tf.data.AUTOTUNE if self.num_parallel_calls == -1 else int(self.num_parallel_calls)


def input_config_from_dict(d: Mapping[str, Any] | None) -> InputConfig:
    """Build an :class:`InputConfig` from a plain or OmegaConf mapping (lists become tuples).

    Raises ValueError naming any unknown key.
    """
    d = dict(d or {})
    known = {f.name for f in fields(InputConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown input config key(s) {unknown}; known keys: {sorted(known)}")
    kwargs = {}
    for key, value in d.items():
        if not isinstance(value, (str, bytes)) and hasattr(value, "__iter__") and not hasattr(value, "keys"):
            value = tuple(value)
        kwargs[key] = value
    return InputConfig(**kwargs)


@dataclass
class PipelineReport:
    """What :func:`build_manifest_dataset` read.

    num_images: images in the dataset (after skipping); missing_images / corrupt_images: skipped
    images (ids in ``missing_ids`` / ``corrupt_ids``); dropped_objects_over_cap: objects beyond
    ``max_boxes`` dropped, in ``images_over_cap`` images.
    """

    num_images: int
    missing_images: int = 0
    corrupt_images: int = 0
    dropped_objects_over_cap: int = 0
    images_over_cap: int = 0
    missing_ids: list[int] = field(default_factory=list)
    corrupt_ids: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, int]:
        """The counts (for logging as metrics)."""
        return {k: v for k, v in asdict(self).items() if not isinstance(v, list)}


# ---------------------------------------------------------------------------------------- manifest arrays
@dataclass
class _ObjectTable:
    """Objects of K images, flat and grouped by image: boxes ``[T,4]`` px, classes ``[T]``, weights ``[T]``,
    row_lengths ``[K]``."""

    boxes: np.ndarray
    classes: np.ndarray
    weights: np.ndarray
    row_lengths: np.ndarray


def _gather_objects(manifest: Manifest, ids: Sequence[int]) -> _ObjectTable:
    """Concatenate ``manifest.objects(id)`` of every id (in order)."""
    objs = [manifest.objects(i) for i in ids]
    lengths = np.array([len(o) for o in objs], dtype=np.int64)
    if not objs or lengths.sum() == 0:
        return _ObjectTable(np.zeros((0, 4), np.float32), np.zeros(0, np.int32), np.zeros(0, np.float32), lengths)
    return _ObjectTable(
        np.concatenate([o.boxes for o in objs]).astype(np.float32),
        np.concatenate([o.class_ids for o in objs]).astype(np.int32),
        np.concatenate([o.scores for o in objs]).astype(np.float32),
        lengths,
    )


def cap_objects(table: _ObjectTable, max_boxes: int) -> tuple[_ObjectTable, int, int]:
    """Keep at most ``max_boxes`` objects per image: the highest weights (ties: earlier first), in original order.

    Returns ``(capped table, dropped objects, images over the cap)``; vectorised over all objects.
    """
    lengths = table.row_lengths
    over = lengths > max_boxes
    if not np.any(over):
        return table, 0, 0
    total = int(lengths.sum())
    image_of = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    order = np.lexsort((np.arange(total), -table.weights, image_of))  # by image, then weight desc, then position
    rank = np.empty(total, np.int64)
    rank[order] = np.arange(total) - starts[image_of[order]]
    keep = rank < max_boxes
    capped = _ObjectTable(
        table.boxes[keep], table.classes[keep], table.weights[keep], np.minimum(lengths, max_boxes)
    )
    return capped, int(total - keep.sum()), int(over.sum())


def _check_ids(manifest: Manifest, image_ids: Sequence[int] | None) -> list[int]:
    """The image ids to read (all, or ``image_ids`` in their order); unknown ids raise DatasetError."""
    if image_ids is None:
        return list(manifest.image_ids)
    ids = [int(i) for i in image_ids]
    for img_id in ids:
        manifest.image(img_id)
    return ids


# ---------------------------------------------------------------------------------------- per-example ops
def _decode(image_bytes: tf.Tensor) -> tf.Tensor:
    """Encoded PNG/JPEG/GIF/BMP (grey, RGB or RGBA) -> uint8 ``[H,W,3]`` RGB."""
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    return tf.ensure_shape(image, [None, None, 3])


_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM")


def _decodable_or_warn(image_bytes: tf.Tensor, image_id: tf.Tensor) -> tf.Tensor:
    """True if ``image_bytes`` start like a PNG/JPEG/GIF/BMP file; else print a warning naming the image
    to stderr and return False (TF's own ``ignore_errors`` log is hidden at TF_CPP_MIN_LOG_LEVEL >= 2)."""
    known = tf.reduce_any(tf.stack([
        tf.equal(tf.strings.substr(image_bytes, 0, len(magic)), magic) for magic in _IMAGE_MAGIC
    ]))

    def warn():
        tf.print("WARNING: uncertainty_det input pipeline: skipping image", image_id,
                 "whose encoded bytes are not PNG/JPEG/GIF/BMP", output_stream=sys.stderr)
        return tf.constant(False)

    return tf.cond(known, lambda: tf.constant(True), warn)


def _cap_in_graph(example: dict, max_boxes: int) -> dict:
    """Keep the ``max_boxes`` highest-weight objects of one example (original order); print a warning
    to stderr naming the image when objects are dropped."""
    n = tf.shape(example["classes"])[0]
    keep = tf.sort(tf.argsort(-example["weights"], stable=True)[:max_boxes])

    def warn():
        tf.print("WARNING: uncertainty_det input pipeline: image", example["image_id"], "has", n,
                 "objects; dropping", n - max_boxes, "beyond max_boxes =", max_boxes, output_stream=sys.stderr)
        return tf.constant(0)

    flag = tf.cond(n > max_boxes, warn, lambda: tf.constant(0))
    with tf.control_dependencies([flag]):
        out = dict(example)
        for key in ("boxes", "classes", "weights"):
            out[key] = tf.gather(example[key], keep)
    return out


def _normalise(image: tf.Tensor, cfg: InputConfig) -> tf.Tensor:
    """Raw RGB ``[H,W,3]`` float32 -> ``(rgb - mean) / std``."""
    std = np.asarray(cfg.std, np.float32)
    return aug.channel_affine(image, 1.0 / std, -np.asarray(cfg.mean, np.float32) / std)


def _augment_and_resize(image, boxes, classes, weights, seed, cfg: InputConfig, training: bool):
    """Normalised image ``[h,w,3]`` + boxes ``[N,4]`` px -> ``[H,W,3]`` at model size (+ kept boxes, scale).

    Resampling commutes with the per-channel normalisation, so geometric ops run on the normalised
    image and their 0 fill is the normalised padding; the strong colour ops see raw RGB.
    """
    if not training or cfg.augment == "none":
        image, boxes, scale = aug.letterbox(image, boxes, cfg.image_size, exact=not training)
        return image, boxes, classes, weights, scale
    image, boxes = aug.random_horizontal_flip(image, boxes, cfg.hflip_prob, aug.sub_seed(seed, 1))
    image, boxes, classes, weights, scale = aug.scale_jitter_crop(
        image, boxes, classes, weights, cfg.image_size, cfg.scale_jitter, aug.sub_seed(seed, 2)
    )
    if cfg.augment == "strong" and cfg.strong_ops > 0:
        raw, boxes, classes, weights = aug.strong_augment(
            aug.channel_affine(image, cfg.std, cfg.mean), boxes, classes, weights, cfg.strong_ops,
            cfg.strong_magnitude, aug.sub_seed(seed, 3), fill=cfg.mean,
        )
        image = _normalise(raw, cfg)
    return image, boxes, classes, weights, scale


def _pad(tensor: tf.Tensor, length: int, value) -> tf.Tensor:
    """Pad (or cut) the first axis of ``tensor`` ``[N, ...]`` to ``length`` with ``value``."""
    tensor = tensor[:length]
    pads = [[0, length - tf.shape(tensor)[0]]] + [[0, 0]] * (tensor.shape.rank - 1)
    return tf.pad(tensor, pads, constant_values=value)


def prepare_example(example: dict, index: tf.Tensor, cfg: InputConfig, training: bool) -> dict:
    """One decoded example -> the model-input dict (unbatched shapes of the module table).

    ``example``: ``image`` uint8 ``[h,w,3]``, ``boxes`` float32 ``[N,4]`` px, ``classes`` int32 ``[N]``,
    ``weights`` float32 ``[N]``, ``image_id`` int64; ``index``: int64 element index (augmentation seed).
    """
    image = tf.cast(example["image"], tf.float32)
    image_shape = tf.shape(image)[:2]
    image = _normalise(image, cfg)
    seed = tf.stack([tf.constant(cfg.seed, tf.int64), tf.cast(index, tf.int64)])
    image, boxes, classes, weights, scale = _augment_and_resize(
        image, example["boxes"], example["classes"], example["weights"], seed, cfg, training
    )
    m = cfg.max_boxes
    height, width = cfg.image_size
    return {
        "image": tf.ensure_shape(image, [height, width, 3]),
        "boxes": tf.ensure_shape(_pad(tf.reshape(boxes, [-1, 4]), m, 0.0), [m, 4]),
        "classes": tf.ensure_shape(_pad(tf.cast(classes, tf.int32), m, -1), [m]),
        "weights": tf.ensure_shape(_pad(tf.cast(weights, tf.float32), m, 0.0), [m]),
        "num_boxes": tf.minimum(tf.shape(classes)[0], m),
        "image_id": tf.cast(example["image_id"], tf.int64),
        "scale": tf.cast(scale, tf.float32),
        "image_shape": tf.cast(image_shape, tf.int32),
    }


def _finish(ds: tf.data.Dataset, decode_fn, cfg: InputConfig, training: bool) -> tf.data.Dataset:
    """Source dataset -> (shuffle, repeat) -> decode + prepare -> batches; decode errors are skipped."""
    calls = cfg.parallel_calls

    def prepare(index, example):
        return prepare_example(example, index, cfg, training)

    if cfg.cache_decoded:
        ds = ds.map(decode_fn, num_parallel_calls=calls, deterministic=True).ignore_errors(log_warning=True).cache()
    if training and cfg.shuffle:
        ds = ds.shuffle(cfg.shuffle_buffer, seed=cfg.seed, reshuffle_each_iteration=True)
    if cfg.repeat:
        ds = ds.repeat()
    ds = ds.enumerate()
    if cfg.cache_decoded:
        ds = ds.map(prepare, num_parallel_calls=calls, deterministic=True)
    else:
        ds = ds.map(lambda i, e: prepare(i, decode_fn(e)), num_parallel_calls=calls, deterministic=True)
        ds = ds.ignore_errors(log_warning=True)
    ds = ds.batch(cfg.batch_size, drop_remainder=cfg.drop_remainder)
    options = tf.data.Options()
    options.deterministic = True
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


# ---------------------------------------------------------------------------------------- public builders
def build_manifest_dataset(
    manifest: Manifest,
    cfg: InputConfig,
    image_ids: Sequence[int] | None = None,
    training: bool = False,
) -> tuple[tf.data.Dataset, PipelineReport]:
    """Batches (see the module table) of a manifest's images, or of ``image_ids`` in that order.

    Missing or undecodable images are skipped with a warning and counted in the report; objects
    beyond ``cfg.max_boxes`` are dropped (highest scores kept) with one warning giving the totals.
    """
    ids = _check_ids(manifest, image_ids)
    scan = scan_images({i: manifest.image_path(i) for i in ids})
    ok = scan.ok
    table, dropped, over = cap_objects(_gather_objects(manifest, ok), cfg.max_boxes)
    if dropped:
        log.warning(
            "%d objects in %d images are beyond max_boxes=%d and were dropped (the highest-score %d per image "
            "kept); raise input.max_boxes to keep them", dropped, over, cfg.max_boxes, cfg.max_boxes,
        )
    report = PipelineReport(
        num_images=len(ok), missing_images=len(scan.missing), corrupt_images=len(scan.corrupt),
        dropped_objects_over_cap=dropped, images_over_cap=over,
        missing_ids=list(scan.missing), corrupt_ids=list(scan.corrupt),
    )
    if not ok:
        raise DatasetError(
            f"manifest {manifest.source}: none of the {len(ids)} requested images can be read "
            f"({report.missing_images} missing, {report.corrupt_images} corrupt); check dataset.root / image_root"
        )
    ragged = {
        key: tf.RaggedTensor.from_row_lengths(values, table.row_lengths)
        for key, values in (("boxes", table.boxes), ("classes", table.classes), ("weights", table.weights))
    }
    source = tf.data.Dataset.from_tensor_slices({
        "path": tf.constant([str(manifest.image_path(i)) for i in ok]),
        "image_id": tf.constant(ok, tf.int64),
        **ragged,
    })

    def decode(element):
        out = {k: element[k] for k in ("boxes", "classes", "weights", "image_id")}
        out["image"] = _decode(tf.io.read_file(element["path"]))
        return out

    return _finish(source, decode, cfg, training), report


def build_tfrecord_dataset(files: Sequence[str], cfg: InputConfig, training: bool = False) -> tf.data.Dataset:
    """Batches (see the module table) from TFRecord shards written by :mod:`uncertainty_det.data.tfrecord`.

    Shards are read in parallel, interleaved one record at a time (file order shuffled when training),
    so the round-robin shards of ``write_tfrecords`` come back in manifest order for evaluation.
    Images that are not PNG/JPEG/GIF/BMP are skipped with a warning per image on stderr (others that
    fail to decode are skipped by ``ignore_errors``, logged by TF's C++ logger); objects beyond
    ``max_boxes`` are dropped (highest scores kept) with a warning per image on stderr. No report:
    the shards are not scanned beforehand.
    """
    from .tfrecord import parse_example, tfrecord_files

    if isinstance(files, (str, bytes)) or not hasattr(files, "__iter__"):
        files = tfrecord_files(files)
    files = [str(f) for f in files]
    if not files:
        raise DatasetError("build_tfrecord_dataset got no files; pass shard paths (see tfrecord_files)")
    file_ds = tf.data.Dataset.from_tensor_slices(files)
    if training and cfg.shuffle:
        file_ds = file_ds.shuffle(len(files), seed=cfg.seed, reshuffle_each_iteration=True)
    records = file_ds.interleave(
        tf.data.TFRecordDataset, cycle_length=min(len(files), 64), block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True,
    )
    records = records.map(parse_example, num_parallel_calls=cfg.parallel_calls, deterministic=True)
    records = records.filter(lambda rec: _decodable_or_warn(rec["image_bytes"], rec["source_id"]))

    def decode(rec):
        image = _decode(rec["image_bytes"])
        hw = tf.cast(tf.shape(image)[:2], tf.float32)
        example = {
            "image": image,
            "boxes": tf.reshape(rec["boxes"], [-1, 4]) * tf.concat([hw, hw], axis=0),
            "classes": tf.cast(rec["classes"], tf.int32),
            "weights": tf.cast(rec["scores"], tf.float32),
            "image_id": tf.strings.to_number(rec["source_id"], tf.int64),
        }
        return _cap_in_graph(example, cfg.max_boxes)

    return _finish(records, decode, cfg, training)
