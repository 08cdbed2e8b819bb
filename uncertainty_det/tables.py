"""The Detections table (DESIGN §6.3): schema, construction from model outputs, Parquet I/O.

One row per detection after NMS (consumers filter by score). Columns, in order:

=====================  =========================================================================
``image_id``           int64, the dataset's image id
``file_name``          str, the image file name relative to the image root
``det``                int64, slot of the detection in the padded model output (0-based)
``class_id``           int64, 1-based category id (argmax of the mean logits)
``score``              float64, sigmoid of the (mean) max logit, soft-NMS-decayed
``ymin xmin ymax xmax``  float64, box corners in original-image pixels
``logits``             list[float64] (C), the (MC mean) per-class logits
``probs``              list[float64] (C), ``softmax(logits)`` (post-hoc, reference §1.6)
``entropy``            float64, ``-sum p log2(max(p, 1e-7))`` in bits (max ``log2(C)``)
``al_ymin .. al_xmax``  float64, aleatoric σ per corner, original pixels (only with loss attenuation)
``al_cov``             list[float64] (16), optional 4x4 corner covariance (px², row-major)
``ep_ymin .. ep_xmax``  float64, epistemic σ per corner, original pixels (only with MC dropout)
``ep_logit_std``       list[float64] (C), MC std of each class logit (only with MC dropout)
``ep_cls``             float64, MC logit std of the predicted class (only with MC dropout)
=====================  =========================================================================

Calibrated variants carry the suffix ``_cal`` (``probs_cal``, ``entropy_cal``, ``al_ymin_cal``, ...);
they are added by the calibration code and kept by the writer/reader like any extra column.

The Parquet key-value metadata holds, under the key ``uncertainty_det``, a JSON object with
``schema_version``, ``run_name``, ``dataset``, ``decoding``, ``mc_samples`` and ``calibration``
(plus any other JSON-serialisable keys the writer was given).

List columns are Python lists of floats in the frames this module returns (both
:func:`detections_to_frame` and :func:`read_detections`); :func:`list_column` turns one into an
``[n, K]`` array.
"""
from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import UserError
from .io_utils import atomic_path

SCHEMA_VERSION = 1
METADATA_KEY = b"uncertainty_det"
METADATA_FIELDS = ("run_name", "dataset", "decoding", "mc_samples", "calibration")

CORNERS = ("ymin", "xmin", "ymax", "xmax")
BOX_COLUMNS = CORNERS
AL_COLUMNS = tuple(f"al_{c}" for c in CORNERS)
EP_COLUMNS = tuple(f"ep_{c}" for c in CORNERS)
BASE_COLUMNS = ("image_id", "file_name", "det", "class_id", "score", *BOX_COLUMNS, "logits", "probs", "entropy")
AL_GROUP = AL_COLUMNS
EP_GROUP = (*EP_COLUMNS, "ep_logit_std", "ep_cls")

ENTROPY_EPS = 1e-7

_INT_COLUMNS = {"image_id", "det", "class_id"}
_STR_COLUMNS = {"file_name"}


class DetectionsTableError(UserError, ValueError):
    """A Detections table (frame or Parquet file) does not follow the schema."""


# ---------------------------------------------------------------------------------------------
# Per-detection measures (NumPy, vectorised)


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax. ``logits [..., C]`` -> probabilities ``[..., C]`` (float64)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - np.max(z, axis=axis, keepdims=True)
    e = np.exp(z)
    return e / np.sum(e, axis=axis, keepdims=True)


def entropy_bits(probs: np.ndarray, axis: int = -1, eps: float = ENTROPY_EPS) -> np.ndarray:
    """Entropy in bits, ``-sum_c p_c log2(max(p_c, eps))`` (reference §1.6). ``[..., C]`` -> ``[...]``."""
    p = np.asarray(probs, dtype=np.float64)
    return -np.sum(p * np.log2(np.maximum(p, eps)), axis=axis)


def relative_sigma(boxes: np.ndarray, sigma: np.ndarray, min_size: float = 1e-6) -> np.ndarray:
    """Relative (dimensionless) σ: ``σ / [h, w, h, w]`` of each detection's own box (reference §2.3).

    boxes: ``[..., 4]`` ``[ymin, xmin, ymax, xmax]`` pixels; sigma: ``[..., 4]`` σ per corner in the same
    pixels. Returns ``[..., 4]`` float64. Every detection is divided by its own height/width (the
    reference used the first detection's box for all, defect D4); heights/widths below ``min_size``
    are floored to ``min_size`` so degenerate boxes give large, finite values.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    if boxes.shape[-1] != 4 or sigma.shape[-1] != 4:
        raise ValueError(f"relative_sigma: boxes and sigma need a last axis of 4, got {boxes.shape} and {sigma.shape}")
    h = np.maximum(boxes[..., 2] - boxes[..., 0], min_size)
    w = np.maximum(boxes[..., 3] - boxes[..., 1], min_size)
    return sigma / np.stack([h, w, h, w], axis=-1)


def mean_relative_sigma(boxes: np.ndarray, sigma: np.ndarray, min_size: float = 1e-6) -> np.ndarray:
    """Mean of the 4 relative σ of each detection (reference "mean relative uncertainty"). -> ``[...]``."""
    return relative_sigma(boxes, sigma, min_size).mean(axis=-1)


# ---------------------------------------------------------------------------------------------
# Frame access helpers


def list_column(df: pd.DataFrame, name: str) -> np.ndarray:
    """A list column (``logits``, ``probs``, ``ep_logit_std``, ``al_cov``, ...) as a float64 ``[n, K]`` array."""
    if name not in df.columns:
        raise DetectionsTableError(f"detections table has no column {name!r}")
    if len(df) == 0:
        return np.zeros((0, 0), dtype=np.float64)
    values = df[name].tolist()
    if isinstance(values[0], list):
        # Python lists (what read_detections gives): one flat pass is ~2x faster than np.asarray
        k = len(values[0])
        if not np.all(np.fromiter(map(len, values), dtype=np.int64, count=len(values)) == k):
            raise DetectionsTableError(f"list column {name!r} has rows of different lengths")
        return np.fromiter(itertools.chain.from_iterable(values), dtype=np.float64,
                           count=k * len(values)).reshape(len(values), k)
    try:
        return np.asarray(values, dtype=np.float64).reshape(len(df), -1)
    except ValueError as exc:
        raise DetectionsTableError(f"list column {name!r} has rows of different lengths") from exc


def box_array(df: pd.DataFrame) -> np.ndarray:
    """The boxes of a detections frame as ``[n, 4]`` float64 ``[ymin, xmin, ymax, xmax]`` (pixels)."""
    return df.loc[:, list(BOX_COLUMNS)].to_numpy(dtype=np.float64)


def sigma_array(df: pd.DataFrame, kind: str = "al", suffix: str = "") -> np.ndarray:
    """σ columns ``<kind>_<corner><suffix>`` as ``[n, 4]`` float64; kind ``al`` or ``ep``, suffix e.g. ``_cal``."""
    cols = [f"{kind}_{c}{suffix}" for c in CORNERS]
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DetectionsTableError(f"detections table has no column {missing[0]!r}")
    return df.loc[:, cols].to_numpy(dtype=np.float64)


def has_aleatoric(df: pd.DataFrame) -> bool:
    """Whether the table carries aleatoric σ columns."""
    return all(c in df.columns for c in AL_COLUMNS)


def has_epistemic(df: pd.DataFrame) -> bool:
    """Whether the table carries MC (epistemic) columns."""
    return all(c in df.columns for c in EP_COLUMNS)


# ---------------------------------------------------------------------------------------------
# Construction from the post-processing outputs


def _output(outputs: Mapping[str, Any], key: str, why: str) -> np.ndarray:
    if key not in outputs or outputs[key] is None:
        raise DetectionsTableError(f"post-processing outputs have no {key!r} ({why})")
    return np.asarray(outputs[key])


def empty_frame(has_aleatoric: bool = False, has_epistemic: bool = False, with_cov: bool = False) -> pd.DataFrame:
    """A detections frame with no rows and the schema's columns and dtypes."""
    cols = list(BASE_COLUMNS)
    if has_aleatoric:
        cols += list(AL_COLUMNS) + (["al_cov"] if with_cov else [])
    if has_epistemic:
        cols += list(EP_GROUP)
    data = {}
    for c in cols:
        if c in _INT_COLUMNS:
            data[c] = pd.Series([], dtype=np.int64)
        elif c in _STR_COLUMNS:
            data[c] = pd.Series([], dtype=object)
        elif c in ("logits", "probs", "ep_logit_std", "al_cov"):
            data[c] = pd.Series([], dtype=object)
        else:
            data[c] = pd.Series([], dtype=np.float64)
    return pd.DataFrame(data, columns=cols)


def detections_to_frame(
    outputs: Mapping[str, Any],
    image_ids: Sequence[int],
    file_names: Sequence[str] | None,
    class_names: Sequence[str] | None,
    has_aleatoric: bool,
    has_epistemic: bool,
) -> pd.DataFrame:
    """Turn one batch of padded post-processing outputs into detections rows.

    outputs: the dict of :func:`uncertainty_det.inference.postprocess.postprocess` as NumPy arrays (or
    anything ``np.asarray`` accepts): ``boxes [B,D,4]`` original pixels, ``scores [B,D]``,
    ``classes [B,D]`` (1-based), ``logits [B,D,C]``, ``num_detections [B]``; with ``has_aleatoric``
    also ``al_std [B,D,4]`` (px) and, when present, ``al_cov [B,D,4,4]`` (px²); with
    ``has_epistemic`` also ``ep_std [B,D,4]`` (px) and ``ep_logit_std [B,D,C]``.
    image_ids / file_names: one per batch element (``B``); class_names: the ``C`` dataset class
    names, used to check the logits width (``None`` skips the check).

    Returns a frame with one row per slot ``det < num_detections`` (image-major, slot order), columns
    as in the module docstring; ``al_*``/``ep_*`` columns only when the flags are set.
    """
    boxes = _output(outputs, "boxes", "boxes [B,D,4]").astype(np.float64)
    scores = _output(outputs, "scores", "scores [B,D]").astype(np.float64)
    classes = _output(outputs, "classes", "classes [B,D]")
    logits = _output(outputs, "logits", "logits [B,D,C]").astype(np.float64)
    num = _output(outputs, "num_detections", "num_detections [B]").astype(np.int64).reshape(-1)
    if boxes.ndim != 3 or boxes.shape[-1] != 4:
        raise DetectionsTableError(f"boxes must be [B,D,4], got {boxes.shape}")
    b, d = boxes.shape[:2]
    if scores.shape != (b, d) or classes.shape != (b, d) or logits.shape[:2] != (b, d) or logits.ndim != 3:
        raise DetectionsTableError(
            f"inconsistent output shapes: boxes {boxes.shape}, scores {scores.shape}, classes {classes.shape}, "
            f"logits {logits.shape}")
    if num.shape != (b,):
        raise DetectionsTableError(f"num_detections must be [B={b}], got {num.shape}")
    num_classes = logits.shape[-1]
    if class_names is not None and len(class_names) != num_classes:
        raise DetectionsTableError(
            f"the model outputs {num_classes} class logits but the dataset has {len(class_names)} classes "
            f"({list(class_names)}); use the dataset the model was trained on")
    image_ids = np.asarray(list(image_ids), dtype=np.int64).reshape(-1)
    if image_ids.shape != (b,):
        raise DetectionsTableError(f"need one image id per batch element ({b}), got {image_ids.shape[0]}")
    if file_names is None:
        file_names = [""] * b
    file_names = np.asarray([str(f) for f in file_names], dtype=object)
    if file_names.shape != (b,):
        raise DetectionsTableError(f"need one file name per batch element ({b}), got {file_names.shape[0]}")

    keep = np.arange(d)[None, :] < np.clip(num, 0, d)[:, None]          # [B,D]
    bi, di = np.nonzero(keep)                                            # image-major, slot order
    n = bi.shape[0]
    if n == 0:
        return empty_frame(has_aleatoric, has_epistemic,
                           with_cov=has_aleatoric and outputs.get("al_cov") is not None)

    cls = classes[bi, di].astype(np.int64)
    lg = logits[bi, di]                                                  # [n,C]
    probs = softmax(lg)
    data: dict[str, Any] = {
        "image_id": image_ids[bi],
        "file_name": file_names[bi],
        "det": di.astype(np.int64),
        "class_id": cls,
        "score": scores[bi, di],
    }
    bx = boxes[bi, di]
    for k, c in enumerate(CORNERS):
        data[c] = bx[:, k]
    data["logits"] = lg.tolist()
    data["probs"] = probs.tolist()
    data["entropy"] = entropy_bits(probs)
    if has_aleatoric:
        al = _output(outputs, "al_std", "has_aleatoric is set").astype(np.float64)[bi, di]
        for k, c in enumerate(AL_COLUMNS):
            data[c] = al[:, k]
        if outputs.get("al_cov") is not None:
            cov = np.asarray(outputs["al_cov"], dtype=np.float64)[bi, di].reshape(n, 16)
            data["al_cov"] = cov.tolist()
    if has_epistemic:
        ep = _output(outputs, "ep_std", "has_epistemic is set").astype(np.float64)[bi, di]
        for k, c in enumerate(EP_COLUMNS):
            data[c] = ep[:, k]
        ls = _output(outputs, "ep_logit_std", "has_epistemic is set").astype(np.float64)[bi, di]   # [n,C]
        data["ep_logit_std"] = ls.tolist()
        idx = np.clip(cls - 1, 0, num_classes - 1)
        data["ep_cls"] = np.take_along_axis(ls, idx[:, None], axis=1)[:, 0]
    return pd.DataFrame(data)


# ---------------------------------------------------------------------------------------------
# Validation


def validate_detections(df: pd.DataFrame, source: str = "<frame>") -> None:
    """Raise :class:`DetectionsTableError` naming ``source`` and the first missing column.

    Required: every base column; the aleatoric columns all-or-none (``al_ymin .. al_xmax``); the
    epistemic group all-or-none (``ep_ymin .. ep_xmax, ep_logit_std, ep_cls``).
    """
    cols = set(df.columns)
    for c in BASE_COLUMNS:
        if c not in cols:
            raise DetectionsTableError(
                f"detections table {source}: missing column {c!r}; it is not a detections table of this "
                f"version (schema {SCHEMA_VERSION}); re-run the stage that wrote it")
    for group in (AL_GROUP, EP_GROUP):
        present = [c for c in group if c in cols]
        if present and len(present) != len(group):
            missing = next(c for c in group if c not in cols)
            raise DetectionsTableError(
                f"detections table {source}: missing column {missing!r} (it has {present[0]!r}); "
                f"re-run the stage that wrote it")


# ---------------------------------------------------------------------------------------------
# Parquet I/O


def _list_to_arrow(series: pd.Series) -> pa.Array:
    values = series.tolist()
    n = len(values)
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (ValueError, TypeError):
        arr = None
    if arr is not None and arr.ndim == 2 and arr.shape[0] == n:
        k = arr.shape[1]
        offsets = pa.array(np.arange(0, n * k + 1, k, dtype=np.int32) if n else np.zeros(1, np.int32))
        return pa.ListArray.from_arrays(offsets, pa.array(arr.reshape(-1)))
    return pa.array([None if v is None else list(np.asarray(v, dtype=np.float64)) for v in values],
                    type=pa.list_(pa.float64()))


def _is_list_column(series: pd.Series) -> bool:
    if series.dtype != object:
        return False
    for v in series:
        if v is None:
            continue
        return isinstance(v, (list, tuple, np.ndarray))
    return series.name in ("logits", "probs", "ep_logit_std", "al_cov") or str(series.name).startswith(
        ("probs_", "logits_", "ep_logit_std_"))


def _to_arrow(df: pd.DataFrame) -> pa.Table:
    arrays, names = [], []
    for name in df.columns:
        s = df[name]
        if _is_list_column(s):
            arr = _list_to_arrow(s)
        elif name in _INT_COLUMNS:
            arr = pa.array(s.to_numpy(dtype=np.int64))
        elif name in _STR_COLUMNS:
            arr = pa.array(s.astype(str).tolist(), type=pa.string())
        elif name in BASE_COLUMNS or name.startswith(("al_", "ep_")):
            arr = pa.array(s.to_numpy(dtype=np.float64))
        else:
            arr = pa.Array.from_pandas(s)
        arrays.append(arr)
        names.append(str(name))
    return pa.Table.from_arrays(arrays, names=names)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"metadata value {obj!r} ({type(obj).__name__}) is not JSON-serialisable")


def write_detections(df: pd.DataFrame, path: str | os.PathLike, metadata: Mapping[str, Any] | None = None) -> Path:
    """Write a detections frame to Parquet atomically (temp file + rename); returns the path.

    metadata: ``run_name``, ``dataset``, ``decoding``, ``mc_samples``, ``calibration`` (missing ones
    are stored as ``None``; ``calibration`` defaults to ``[]``) and any other JSON-serialisable keys.
    ``schema_version`` is added. The frame is validated first (see :func:`validate_detections`).
    """
    path = Path(path)
    validate_detections(df, str(path))
    meta: dict[str, Any] = {k: None for k in METADATA_FIELDS}
    meta["calibration"] = []
    meta.update(dict(metadata or {}))
    meta["schema_version"] = SCHEMA_VERSION
    try:
        meta_json = json.dumps(meta, sort_keys=True, default=_json_default)
    except TypeError as exc:
        raise DetectionsTableError(f"detections table {path}: {exc}") from exc
    table = _to_arrow(df.reset_index(drop=True))
    table = table.replace_schema_metadata({METADATA_KEY: meta_json.encode("utf-8")})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def _arrow_list_to_lists(col: pa.ChunkedArray | pa.Array) -> list:
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    n = len(arr)
    if n == 0:
        return []
    if arr.null_count == 0:
        offsets = np.asarray(arr.offsets)
        widths = np.diff(offsets)
        if widths.size and np.all(widths == widths[0]):
            flat = np.asarray(arr.flatten().to_numpy(zero_copy_only=False), dtype=np.float64)
            return flat.reshape(n, int(widths[0])).tolist()
    return arr.to_pylist()


def read_detections(path: str | os.PathLike) -> tuple[pd.DataFrame, dict]:
    """Read a detections Parquet file; returns ``(frame, metadata)``.

    Raises :class:`DetectionsTableError` naming the file when it is missing, unreadable, not written
    by :func:`write_detections` (no metadata), of a newer schema version, or lacks a required column.
    List columns come back as Python lists of floats.
    """
    path = Path(path)
    if not path.is_file():
        raise DetectionsTableError(f"detections table {path} does not exist; run the stage that writes it first")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DetectionsTableError(f"detections table {path} cannot be read ({exc}); re-run the stage that wrote it") from exc
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise DetectionsTableError(
            f"detections table {path} has no {METADATA_KEY.decode()} metadata; it was not written by "
            f"uncertainty_det.tables.write_detections")
    try:
        metadata = json.loads(raw.decode("utf-8"))
    except ValueError as exc:
        raise DetectionsTableError(f"detections table {path}: corrupt metadata ({exc})") from exc
    version = metadata.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise DetectionsTableError(
            f"detections table {path} has schema version {version!r}; this library reads versions up to "
            f"{SCHEMA_VERSION}: upgrade uncertainty_det or re-run the stage that wrote it")
    list_names = [f.name for f in table.schema if pa.types.is_list(f.type) or pa.types.is_large_list(f.type)]
    plain = table.drop_columns(list_names) if list_names else table
    df = plain.replace_schema_metadata(None).to_pandas()
    for name in list_names:
        df[name] = pd.Series(_arrow_list_to_lists(table.column(name)), index=df.index, dtype=object)
    df = df[[f.name for f in table.schema]]
    validate_detections(df, str(path))
    return df, metadata
