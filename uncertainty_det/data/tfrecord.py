"""TFRecord shards with TF Object Detection API feature keys: writing, parsing and converting back.

One ``tf.train.Example`` per image. Boxes are stored normalised to ``[0, 1]`` by the image height
and width (float32), class ids are 1-based. Feature keys::

    image/encoded            bytes   the original PNG/JPEG file bytes (not re-encoded)
    image/format             bytes   b"png" or b"jpeg"
    image/height, image/width int64  pixels
    image/filename           bytes   the manifest ``file_name`` (relative path)
    image/source_id          bytes   the manifest image id as a decimal string
    image/key/sha256         bytes   hex SHA-256 of ``image/encoded``
    image/object/bbox/{xmin,xmax,ymin,ymax}  float  normalised, one per object
    image/object/class/label int64   1-based class id
    image/object/class/text  bytes   class name
    image/object/difficult   int64   zeros
    image/object/occluded    int64   -1 = unknown
    image/object/truncated   float   -1 = unknown
    image/object/pseudo_score float  optional (pseudo-label confidence)
    image/weather, image/timeofday, image/scene  bytes  optional image attributes

Shards are named ``<split>-<i:05d>-of-<n:05d>.tfrecord``; each is written under a temporary name
and renamed only after every shard was written completely.
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import io
import logging
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import tensorflow as tf
from PIL import Image

from ..io_utils import atomic_write_bytes, safe_relative_path
from .errors import DatasetError
from .images import scan_images
from .manifest import IMAGE_ATTRIBUTES, Manifest, ManifestBuilder, ObjectArrays, categories_from_names

log = logging.getLogger(__name__)

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_SPLIT_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_BOX_KEYS = ("ymin", "xmin", "ymax", "xmax")
# Pixel boxes decoded from normalised float32 are rounded to this many decimals: float32 carries
# ~1.2e-4 px of precision at 2000 px, so finer digits are noise (and integer boxes come back exact).
_PIXEL_DECIMALS = 4


@dataclass
class TFRecordReport:
    """What :func:`write_tfrecords` wrote.

    files: shard paths in shard order; num_images / num_objects: written examples and objects;
    missing_images / corrupt_images: skipped images (corrupt includes a size that disagrees with the
    manifest); transcoded_images: non-PNG/JPEG images stored as lossless PNG.
    """

    files: list[str]
    num_images: int
    num_objects: int
    missing_images: int
    corrupt_images: int
    transcoded_images: int = 0
    images_per_shard: list[int] = field(default_factory=list)


# ---------------------------------------------------------------------------------------- features
def _bytes_feature(values: Sequence[bytes]) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _int64_feature(values: Sequence[int]) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def _float_feature(values: Sequence[float]) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))


def sniff_image_format(image_bytes: bytes) -> str | None:
    """``"png"`` or ``"jpeg"`` from the file's magic bytes, else ``None``."""
    if image_bytes.startswith(_PNG_MAGIC):
        return "png"
    if image_bytes.startswith(_JPEG_MAGIC):
        return "jpeg"
    return None


def normalise_boxes(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """``[N,4]`` ``[ymin, xmin, ymax, xmax]`` pixels -> ``[N,4]`` float32 normalised to ``[0, 1]``."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scale = np.array([height, width, height, width], dtype=np.float64)
    return (boxes / scale).astype(np.float32)


def denormalise_boxes(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """``[N,4]`` normalised ``[ymin, xmin, ymax, xmax]`` -> ``[N,4]`` float64 pixels (rounded to 1e-4 px)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scale = np.array([height, width, height, width], dtype=np.float64)
    return np.round(boxes * scale, _PIXEL_DECIMALS)


def _class_texts(class_ids: np.ndarray, class_names: Sequence[str]) -> list[bytes]:
    """Names (UTF-8) of 1-based ``class_ids`` ``[N]``; raises for ids outside ``class_names``."""
    texts = []
    for cid in np.asarray(class_ids).tolist():
        if not 1 <= cid <= len(class_names):
            raise DatasetError(
                f"class id {cid} has no name: class_names has {len(class_names)} entries (ids are 1-based); "
                f"pass the dataset's full class list"
            )
        texts.append(str(class_names[cid - 1]).encode("utf-8"))
    return texts


def encode_example(
    image_bytes: bytes,
    image: dict,
    objects: ObjectArrays,
    class_names: Sequence[str],
    image_format: str,
    write_scores: bool | None = None,
) -> tf.train.Example:
    """Build the ``tf.train.Example`` of one image.

    Args:
      image_bytes: the encoded image file as stored on disk.
      image: manifest image entry (``id``, ``file_name``, ``height``, ``width``, optional attributes).
      objects: the image's objects; boxes ``[N,4]`` ``[ymin, xmin, ymax, xmax]`` pixels.
      class_names: names indexed by ``class_id - 1``.
      image_format: ``"png"`` or ``"jpeg"``.
      write_scores: write ``image/object/pseudo_score``; ``None`` = only when a score differs from 1.
    """
    height, width = int(image["height"]), int(image["width"])
    norm = normalise_boxes(objects.boxes, height, width)
    n = len(objects)
    feats = {
        "image/encoded": _bytes_feature([image_bytes]),
        "image/format": _bytes_feature([image_format.encode("ascii")]),
        "image/height": _int64_feature([height]),
        "image/width": _int64_feature([width]),
        "image/filename": _bytes_feature([str(image["file_name"]).encode("utf-8")]),
        "image/source_id": _bytes_feature([str(int(image["id"])).encode("ascii")]),
        "image/key/sha256": _bytes_feature([hashlib.sha256(image_bytes).hexdigest().encode("ascii")]),
        "image/object/class/label": _int64_feature(objects.class_ids),
        "image/object/class/text": _bytes_feature(_class_texts(objects.class_ids, class_names)),
        "image/object/difficult": _int64_feature([0] * n),
        "image/object/occluded": _int64_feature(objects.occluded),
        "image/object/truncated": _float_feature(objects.truncated),
    }
    for col, key in enumerate(_BOX_KEYS):
        feats[f"image/object/bbox/{key}"] = _float_feature(norm[:, col])
    scores = np.asarray(objects.scores, dtype=np.float64)
    if write_scores is None:
        write_scores = bool(np.any(scores != 1.0))
    if write_scores:
        feats["image/object/pseudo_score"] = _float_feature(scores)
    for attr in IMAGE_ATTRIBUTES:
        if image.get(attr) is not None:
            feats[f"image/{attr}"] = _bytes_feature([str(image[attr]).encode("utf-8")])
    return tf.train.Example(features=tf.train.Features(feature=feats))


# ---------------------------------------------------------------------------------------- parsing
def _feature_spec() -> dict:
    """The ``tf.io.parse_single_example`` spec; object lists are VarLen so empty images parse."""
    spec = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/height": tf.io.FixedLenFeature([], tf.int64),
        "image/width": tf.io.FixedLenFeature([], tf.int64),
        "image/filename": tf.io.FixedLenFeature([], tf.string, default_value=""),
        "image/source_id": tf.io.FixedLenFeature([], tf.string, default_value=""),
        "image/object/class/label": tf.io.VarLenFeature(tf.int64),
        "image/object/class/text": tf.io.VarLenFeature(tf.string),
        "image/object/pseudo_score": tf.io.VarLenFeature(tf.float32),
        "image/object/occluded": tf.io.VarLenFeature(tf.int64),
        "image/object/truncated": tf.io.VarLenFeature(tf.float32),
    }
    for key in _BOX_KEYS:
        spec[f"image/object/bbox/{key}"] = tf.io.VarLenFeature(tf.float32)
    for attr in IMAGE_ATTRIBUTES:
        spec[f"image/{attr}"] = tf.io.FixedLenFeature([], tf.string, default_value="")
    return spec


def _dense(sparse: tf.SparseTensor) -> tf.Tensor:
    """A VarLen feature as a dense ``[N]`` tensor."""
    return sparse.values


def _optional_list(values: tf.Tensor, n: tf.Tensor, default) -> tf.Tensor:
    """``values`` ``[N]`` if present, else ``[N]`` filled with ``default``; other lengths fail."""
    size = tf.size(values, out_type=tf.int64)
    tf.debugging.assert_equal(
        tf.logical_or(tf.equal(size, 0), tf.equal(size, n)), True,
        message="optional per-object feature has a length different from the number of boxes",
    )
    return tf.cond(
        tf.equal(size, n) | tf.equal(n, 0),
        lambda: values,
        lambda: tf.fill(tf.reshape(n, [1]), tf.constant(default, dtype=values.dtype)),
    )


def _parse(serialized: tf.Tensor, full: bool) -> dict[str, tf.Tensor]:
    """Parse one serialized Example; ``full`` adds image attributes and ``has_scores``."""
    parsed = tf.io.parse_single_example(serialized, _feature_spec())
    coords = [_dense(parsed[f"image/object/bbox/{key}"]) for key in _BOX_KEYS]
    classes = _dense(parsed["image/object/class/label"])
    n = tf.size(classes, out_type=tf.int64)
    for coord in coords:
        tf.debugging.assert_equal(
            tf.size(coord, out_type=tf.int64), n,
            message="image/object/bbox/* and image/object/class/label have different lengths",
        )
    scores = _dense(parsed["image/object/pseudo_score"])
    out = {
        "image_bytes": parsed["image/encoded"],
        "height": parsed["image/height"],
        "width": parsed["image/width"],
        "filename": parsed["image/filename"],
        "source_id": parsed["image/source_id"],
        "boxes": tf.reshape(tf.stack(coords, axis=1), [-1, 4]),
        "classes": classes,
        "class_text": _optional_list(_dense(parsed["image/object/class/text"]), n, ""),
        "scores": _optional_list(scores, n, 1.0),
        "occluded": _optional_list(_dense(parsed["image/object/occluded"]), n, np.int64(-1)),
        "truncated": _optional_list(_dense(parsed["image/object/truncated"]), n, -1.0),
    }
    if full:
        for attr in IMAGE_ATTRIBUTES:
            out[attr] = parsed[f"image/{attr}"]
        out["has_scores"] = tf.size(scores) > 0
    return out


def _parse_full(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """:func:`parse_example` plus ``weather``/``timeofday``/``scene`` and ``has_scores`` (bool)."""
    return _parse(serialized, full=True)


def parse_example(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """Parse one serialized Example (graph-compatible; use inside ``Dataset.map``).

    Returns:
      ``image_bytes`` string scalar; ``height``, ``width`` int64 scalars; ``filename``,
      ``source_id`` string scalars; ``boxes`` float32 ``[N,4]`` normalised ``[ymin, xmin, ymax, xmax]``;
      ``classes`` int64 ``[N]`` (1-based); ``class_text`` string ``[N]`` (``""`` when absent);
      ``scores`` float32 ``[N]`` (1.0 when absent); ``occluded`` int64 ``[N]`` (-1 when absent);
      ``truncated`` float32 ``[N]`` (-1 when absent).
    """
    return _parse(serialized, full=False)


# ---------------------------------------------------------------------------------------- files
def shard_name(split: str, index: int, num_shards: int) -> str:
    """``<split>-<index:05d>-of-<num_shards:05d>.tfrecord``."""
    return f"{split}-{index:05d}-of-{num_shards:05d}.tfrecord"


def tfrecord_files(path_or_pattern: str | Path) -> list[str]:
    """Resolve a folder (every ``*.tfrecord`` inside, sorted), a glob pattern or one file to paths."""
    path = Path(path_or_pattern)
    if path.is_dir():
        files = sorted(str(p) for p in path.glob("*.tfrecord") if p.is_file())
        where = f"folder {path} has no *.tfrecord files"
    elif path.is_file():
        files = [str(path)]
        where = ""
    else:
        files = sorted(p for p in glob.glob(str(path_or_pattern)) if os.path.isfile(p))
        where = f"no file matches {str(path_or_pattern)!r}"
    if not files:
        raise DatasetError(
            f"no TFRecord files found: {where}; write them first (write_tfrecords / udet-data) "
            f"or pass a folder, a glob such as 'out/train-*.tfrecord', or one file"
        )
    return files


def read_tfrecords(
    files: Sequence[str] | str | Path,
    num_parallel_reads: int = tf.data.AUTOTUNE,
    deterministic: bool = True,
) -> tf.data.Dataset:
    """A dataset of :func:`parse_example` dicts read from ``files`` (a str/Path is resolved first)."""
    if isinstance(files, (str, Path)):
        files = tfrecord_files(files)
    files = [str(f) for f in files]
    if not files:
        raise DatasetError("read_tfrecords got an empty file list; pass at least one .tfrecord file")
    ds = tf.data.TFRecordDataset(files, num_parallel_reads=num_parallel_reads)
    ds = ds.map(parse_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    options = tf.data.Options()
    options.deterministic = deterministic
    return ds.with_options(options)


# ---------------------------------------------------------------------------------------- writing
def _dense_class_names(manifest: Manifest) -> list[str]:
    """Names indexed by ``id - 1`` (gaps in the category ids get ``class_<id>``)."""
    by_id = {c["id"]: c["name"] for c in manifest.categories}
    top = max(by_id, default=0)
    return [by_id.get(i, f"class_{i}") for i in range(1, top + 1)]


def _to_png(image_bytes: bytes) -> bytes:
    """Re-encode any PIL-readable image losslessly as PNG bytes."""
    with Image.open(io.BytesIO(image_bytes)) as img:
        img.load()
        buf = io.BytesIO()
        img.save(buf, format="PNG")
    return buf.getvalue()


def _load_image_bytes(path: Path, image: dict) -> tuple[bytes, str, bool] | str:
    """``(bytes, format, transcoded)`` of one image, or ``"missing"``/``"corrupt"``.

    A size (from the header) that differs from the manifest's ``height``/``width`` counts as corrupt,
    because the normalised boxes would then not match the decoded pixels.
    """
    try:
        data = path.read_bytes()
        fmt, transcoded = sniff_image_format(data), False
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
        if fmt is None:
            data, fmt, transcoded = _to_png(data), "png", True
    except (OSError, SyntaxError, ValueError) as exc:
        state = "missing" if isinstance(exc, FileNotFoundError) else "corrupt"
        log.warning("skipping %s image %s (id %s): %s", state, path, image["id"], exc)
        return state
    if (height, width) != (int(image["height"]), int(image["width"])):
        log.warning(
            "skipping image %s (id %s): its size %dx%d (HxW) differs from the manifest's %dx%d; "
            "re-create the manifest", path, image["id"], height, width, image["height"], image["width"],
        )
        return "corrupt"
    return data, fmt, transcoded


@contextlib.contextmanager
def _shard_writers(out_dir: Path, names: list[str]) -> Iterator[list[tf.io.TFRecordWriter]]:
    """Open one writer per shard on temporary names; rename all on success, delete all on failure."""
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    temps = [str(out_dir / f".{name}.{tag}.tmp") for name in names]  # created by the writers (umask perms)
    writers: list[tf.io.TFRecordWriter] = []
    try:
        writers = [tf.io.TFRecordWriter(tmp) for tmp in temps]
        yield writers
        for writer in writers:
            writer.close()
        for tmp, name in zip(temps, names):
            os.replace(tmp, out_dir / name)
    except BaseException:
        for writer in writers:
            with contextlib.suppress(Exception):
                writer.close()
        for tmp in temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise


def _remove_stale_shards(out_dir: Path, split: str, keep: set[str]) -> None:
    """Delete ``<split>-*-of-*.tfrecord`` shards of an earlier write with another shard count."""
    pattern = re.compile(rf"^{re.escape(split)}-\d{{5}}-of-\d{{5}}\.tfrecord$")
    for path in out_dir.iterdir():
        if pattern.match(path.name) and path.name not in keep:
            log.info("removing stale shard %s of an earlier write", path)
            path.unlink()


def _check_write_args(manifest: Manifest, split: str, num_shards: int, image_ids) -> list[int]:
    """Validate the arguments of :func:`write_tfrecords`; return the image ids to write."""
    if not _SPLIT_RE.match(split or ""):
        raise ValueError(f"split {split!r} must be a plain name of letters, digits, '_', '-' or '.'")
    if int(num_shards) < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    ids = list(manifest.image_ids if image_ids is None else (int(i) for i in image_ids))
    if len(set(ids)) != len(ids):
        raise ValueError("image_ids contains duplicates; every image must be written once")
    for img_id in ids:
        manifest.image(img_id)  # raises DatasetError naming the unknown id
    return ids


def write_tfrecords(
    manifest: Manifest,
    out_dir: Path,
    split: str,
    num_shards: int = 4,
    image_ids: Sequence[int] | None = None,
    progress: bool = True,
) -> TFRecordReport:
    """Write a manifest (or the ``image_ids`` subset, in that order) as TFRecord shards.

    Images are distributed round-robin over ``num_shards`` files
    ``out_dir/<split>-<i:05d>-of-<num_shards:05d>.tfrecord`` (all are written, possibly empty).
    Missing or undecodable images are skipped with a warning and counted. PNG/JPEG bytes are stored
    as they are on disk; other formats are stored as lossless PNG. Older shards of the same split
    with another shard count are removed after a successful write.
    """
    ids = _check_write_args(manifest, split, num_shards, image_ids)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scan = scan_images({i: manifest.image_path(i) for i in ids})
    missing, corrupt = set(scan.missing), set(scan.corrupt)
    class_names = _dense_class_names(manifest)
    with_scores = any("score" in ann for ann in manifest.annotations)
    names = [shard_name(split, i, num_shards) for i in range(num_shards)]
    counts = [0] * num_shards
    num_written = num_objects = transcoded = 0
    todo = list(scan.ok)
    if progress:
        from tqdm.auto import tqdm

        todo = tqdm(todo, desc=f"TFRecords {split}", unit="img")
    with _shard_writers(out_dir, names) as writers:
        for img_id in todo:
            image = manifest.image(img_id)
            loaded = _load_image_bytes(manifest.image_path(img_id), image)
            if isinstance(loaded, str):  # vanished or unreadable since the scan, or wrong size (warned)
                (missing if loaded == "missing" else corrupt).add(img_id)
                continue
            data, fmt, was_transcoded = loaded
            objects = manifest.objects(img_id)
            example = encode_example(data, image, objects, class_names, fmt, write_scores=with_scores)
            shard = num_written % num_shards  # round-robin over the written images
            writers[shard].write(example.SerializeToString())
            counts[shard] += 1
            num_written += 1
            num_objects += len(objects)
            transcoded += int(was_transcoded)
    _remove_stale_shards(out_dir, split, set(names))
    if transcoded:
        log.warning("%d images were neither PNG nor JPEG and were stored as lossless PNG", transcoded)
    report = TFRecordReport(
        files=[str(out_dir / name) for name in names],
        num_images=num_written,
        num_objects=num_objects,
        missing_images=len(missing),
        corrupt_images=len(corrupt),
        transcoded_images=transcoded,
        images_per_shard=counts,
    )
    log.info(
        "wrote %d images (%d objects) to %d shards in %s; skipped %d missing, %d corrupt",
        report.num_images, report.num_objects, num_shards, out_dir, report.missing_images, report.corrupt_images,
    )
    return report


# ---------------------------------------------------------------------------------------- back to a manifest
def _short_floats(values: np.ndarray) -> list[float]:
    """float32 ``[N]`` -> Python floats with the shortest decimal that round-trips (0.3, not 0.30000001)."""
    return [float(str(v)) for v in np.asarray(values, dtype=np.float32)]


def _assign_image_ids(source_ids: list[str]) -> list[int]:
    """Integer source ids when all are unique integers; else 1..N (with a warning)."""
    try:
        ids = [int(s) for s in source_ids]
        if len(set(ids)) == len(ids):
            return ids
        reason = "duplicate"
    except ValueError:
        reason = "non-integer"
    log.warning("TFRecords have %s image/source_id values; numbering images 1..%d instead", reason, len(source_ids))
    return list(range(1, len(source_ids) + 1))


def _categories(records: list[dict], class_names: Sequence[str] | None) -> list[dict]:
    """Categories from ``class_names`` or from the records' class ids and texts."""
    seen: dict[int, str] = {}
    for rec in records:
        for cid, text in zip(rec["classes"].tolist(), rec["class_text"].tolist()):
            if not seen.get(int(cid)):
                seen[int(cid)] = text.decode("utf-8")
    if class_names is not None:
        names = list(class_names)
        for cid, text in sorted(seen.items()):
            if not 1 <= cid <= len(names):
                raise DatasetError(
                    f"TFRecords contain class id {cid} but class_names has {len(names)} entries; "
                    f"pass the full class list"
                )
            if text and text != names[cid - 1]:
                log.warning("class id %d is %r in the TFRecords but %r in class_names", cid, text, names[cid - 1])
        return categories_from_names(names)
    if any(cid < 1 for cid in seen):
        raise DatasetError(f"TFRecords contain class ids {sorted(seen)}; ids must be 1-based")
    top = max(seen, default=0)
    gaps = [i for i in range(1, top + 1) if not seen.get(i)]
    if gaps:
        log.warning("no class name stored for ids %s; pass class_names to name them", gaps)
    return categories_from_names([seen.get(i) or f"class_{i}" for i in range(1, top + 1)])


def _write_record_image(rec: dict, k: int, image_out_dir: Path, seen: set[str], files) -> str:
    """Validate the file name of record ``k`` and write its stored bytes there; return the name."""
    name = rec["filename"].decode("utf-8") or f"{rec['source_id'].decode('utf-8') or k + 1}.{_ext(rec)}"
    try:
        rel = safe_relative_path(name, what="image/filename")
    except ValueError as exc:
        raise DatasetError(f"TFRecord example {k} of {list(files)[:3]}...: {exc}") from exc
    if name in seen:
        raise DatasetError(f"TFRecords hold several images named {name!r}; image/filename must be unique")
    seen.add(name)
    atomic_write_bytes(image_out_dir / rel, rec["image_bytes"])
    return name


def tfrecords_to_manifest(
    files: Sequence[str] | str | Path,
    image_out_dir: Path,
    class_names: Sequence[str] | None = None,
) -> Manifest:
    """Decode TFRecords back to a manifest, writing each stored image to ``image_out_dir/<filename>``.

    Boxes go back to ``[ymin, xmin, ymax, xmax]`` pixels (normalised x height/width, rounded to
    1e-4 px). Image ids are the ``image/source_id`` values (1..N when they are not unique integers).
    Class names come from ``class_names`` or else from ``image/object/class/text``. File names must be
    safe relative paths (DatasetError otherwise; images written before the bad record stay).
    Returns a manifest with ``image_root=image_out_dir`` (not written to disk).
    """
    if isinstance(files, (str, Path)):
        files = tfrecord_files(files)
    files = [str(f) for f in files]
    image_out_dir = Path(image_out_dir)
    image_out_dir.mkdir(parents=True, exist_ok=True)
    ds = tf.data.TFRecordDataset(files).map(_parse_full)
    records, seen = [], set()
    for k, rec in enumerate(ds.as_numpy_iterator()):
        rec["filename"] = _write_record_image(rec, k, image_out_dir, seen, files)
        del rec["image_bytes"]
        records.append(rec)
    image_ids = _assign_image_ids([rec["source_id"].decode("utf-8") for rec in records])
    builder = ManifestBuilder(categories=_categories(records, class_names))
    for rec, img_id in zip(records, image_ids):
        height, width = int(rec["height"]), int(rec["width"])
        attrs = {a: rec[a].decode("utf-8") for a in IMAGE_ATTRIBUTES if rec[a]}
        builder.add_image(rec["filename"], height, width, image_id=img_id, **attrs)
        builder.add_objects(
            img_id,
            denormalise_boxes(rec["boxes"], height, width),
            rec["classes"].tolist(),
            occluded=rec["occluded"].tolist(),
            truncated=_short_floats(rec["truncated"]),
            scores=_short_floats(rec["scores"]) if rec["has_scores"] else None,
        )
    manifest = builder.build(image_root=image_out_dir, source=f"tfrecords[{len(files)} files]")
    rep = manifest.sanitize_report
    if rep.clipped or rep.dropped:
        log.warning("TFRecord boxes: %d clipped to the image, %d dropped as degenerate", rep.clipped, rep.dropped)
    return manifest


def _ext(rec: dict) -> str:
    """File extension for a record without ``image/filename``, from its bytes."""
    return "jpg" if sniff_image_format(rec["image_bytes"]) == "jpeg" else "png"
