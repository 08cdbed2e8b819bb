"""Calibrator registries, construction by name and pickle-free persistence (DESIGN §3, §6.5).

A saved calibrator is ``<name>.json`` (format, version, kind, method, options, scalar parameters) plus,
when it has array parameters, an ``<name>.npz`` sibling (``np.load(allow_pickle=False)``) whose SHA-256
is recorded in the JSON. Arrays appear in the JSON as ``{"__array__": "<key in the npz>"}``.
"""
from __future__ import annotations

import hashlib
import inspect
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any, Union

import numpy as np

from .. import __version__
from ..io_utils import atomic_write_bytes, atomic_write_json
from ._common import CalibrationError
from .box import (
    BoxCalibrator,
    BoxIsoAll,
    BoxIsoPerClsCoo,
    BoxIsoPerCoo,
    BoxRelIsoPerClsCoo,
    BoxTSAll,
    BoxTSPerCoo,
)
from .classification import ClassCalibrator, IsoAll, IsoPerClass, MCClassCalibrator, TSAll, TSPerClass

CLASS_CALIBRATORS: dict[str, type[ClassCalibrator]] = {
    "ts_all": TSAll,
    "ts_percls": TSPerClass,
    "iso_all": IsoAll,
    "iso_percls": IsoPerClass,
}
BOX_CALIBRATORS: dict[str, type[BoxCalibrator]] = {
    "ts_all": BoxTSAll,
    "ts_percoo": BoxTSPerCoo,
    "iso_all": BoxIsoAll,
    "iso_percoo": BoxIsoPerCoo,
    "iso_perclscoo": BoxIsoPerClsCoo,
    "rel_iso_perclscoo": BoxRelIsoPerClsCoo,
}

FILE_FORMAT = "uncertainty_det.calibrator"
FILE_VERSION = 1
_REFIT = "re-run the calibrate stage (udet-calibrate) to rewrite it"

Calibrator = Union[ClassCalibrator, BoxCalibrator]


class CalibratorFileError(CalibrationError):
    """A saved calibrator is missing, corrupt, of an unknown method or of a newer format."""


def _construct(registry: dict[str, type], kind: str, name: str, opts: dict[str, Any]):
    if name not in registry:
        raise CalibrationError(f"unknown {kind} calibration method {name!r}; valid: {', '.join(registry)}")
    cls = registry[name]
    valid = [p.name for p in inspect.signature(cls).parameters.values()
             if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    unknown = sorted(set(opts) - set(valid))
    if unknown:
        raise CalibrationError(f"{kind} calibrator {name!r} has no option {unknown[0]!r}; valid options: "
                               f"{', '.join(valid) or '(none)'}")
    return cls(**opts)


def make_class_calibrator(name: str, mc: bool = False, mc_samples: int = 10, mc_seed: int = 0,
                          **opts: Any) -> ClassCalibrator:
    """A new, unfitted class calibrator ``name`` (a key of :data:`CLASS_CALIBRATORS`).

    ``mc=True`` wraps it in :class:`MCClassCalibrator` (``mc_samples`` samples, seed ``mc_seed``).
    Raises :class:`CalibrationError` (a ``UserError``) for an unknown name or option.
    """
    base = _construct(CLASS_CALIBRATORS, "class", name, opts)
    return MCClassCalibrator(base, samples=mc_samples, seed=mc_seed) if mc else base


def make_box_calibrator(name: str, **opts: Any) -> BoxCalibrator:
    """A new, unfitted box calibrator ``name`` (a key of :data:`BOX_CALIBRATORS`), e.g. ``target="sigma"``."""
    return _construct(BOX_CALIBRATORS, "box", name, opts)


def calibrator_from_dict(d: dict[str, Any]) -> Calibrator:
    """Rebuild a fitted calibrator from its ``to_dict()`` form (arrays already resolved)."""
    kind, method = d.get("kind"), d.get("method")
    if kind == "class":
        cls = MCClassCalibrator if method == MCClassCalibrator.name else CLASS_CALIBRATORS.get(method)
    elif kind == "box":
        cls = BOX_CALIBRATORS.get(method)
    else:
        raise CalibrationError(f"unknown calibrator kind {kind!r}; expected 'class' or 'box'")
    if cls is None:
        valid = CLASS_CALIBRATORS if kind == "class" else BOX_CALIBRATORS
        raise CalibrationError(f"unknown {kind} calibration method {method!r}; valid: {', '.join(valid)}")
    return cls.from_dict(d)


# ---------------------------------------------------------------------------------------------
# Files


def _split_arrays(obj: Any, key: str, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(obj, np.ndarray):
        name = key or "array"
        arrays[name] = np.ascontiguousarray(obj)
        return {"__array__": name}
    if isinstance(obj, dict):
        return {str(k): _split_arrays(v, f"{key}.{k}" if key else str(k), arrays) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_split_arrays(v, f"{key}.{i}", arrays) for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _join_arrays(obj: Any, arrays: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__array__"}:
            return np.asarray(arrays[obj["__array__"]])
        return {k: _join_arrays(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join_arrays(v, arrays) for v in obj]
    return obj


def arrays_path(path: str | os.PathLike) -> Path:
    """The ``.npz`` sibling of a calibrator JSON file (``cal.json`` -> ``cal.npz``)."""
    return Path(path).with_suffix(".npz")


def save_calibrator(cal: Calibrator, path: str | os.PathLike) -> Path:
    """Write a fitted calibrator to ``path`` (JSON) and its arrays to the ``.npz`` sibling, atomically.

    Returns the JSON path. The npz is written first, so a JSON never points at a missing array file.
    """
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    body = _split_arrays(cal.to_dict(), "", arrays)
    doc = {"format": FILE_FORMAT, "version": FILE_VERSION, "library_version": __version__, **body,
           "arrays": None, "arrays_sha256": None}
    if arrays:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        data = buf.getvalue()
        npz = atomic_write_bytes(arrays_path(path), data)
        doc["arrays"] = npz.name
        doc["arrays_sha256"] = hashlib.sha256(data).hexdigest()
    return atomic_write_json(path, doc)


def load_calibrator(path: str | os.PathLike) -> Calibrator:
    """Read a calibrator written by :func:`save_calibrator` (never unpickles).

    Raises :class:`CalibratorFileError` (a ``UserError``) naming the file and the fix when it is missing,
    corrupt, of a newer format, of an unknown method, or its arrays file is missing or does not match.
    """
    path = Path(path)
    if not path.is_file():
        raise CalibratorFileError(f"calibrator file {path} does not exist; run the calibrate stage first")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CalibratorFileError(f"calibrator file {path} is not valid JSON ({exc}); {_REFIT}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FILE_FORMAT:
        raise CalibratorFileError(f"{path} is not an uncertainty_det calibrator file; {_REFIT}")
    version = doc.get("version")
    if not isinstance(version, int) or version > FILE_VERSION:
        raise CalibratorFileError(f"calibrator file {path} has format version {version!r}; this library reads up "
                                  f"to {FILE_VERSION}: upgrade uncertainty_det or {_REFIT}")
    arrays: Any = {}
    if doc.get("arrays"):
        npz = path.parent / Path(str(doc["arrays"])).name
        try:
            data = npz.read_bytes()
        except OSError as exc:
            raise CalibratorFileError(f"calibrator file {path}: its arrays file {npz} cannot be read ({exc}); "
                                      f"{_REFIT}") from exc
        if doc.get("arrays_sha256") != hashlib.sha256(data).hexdigest():
            raise CalibratorFileError(f"calibrator file {path}: its arrays file {npz} does not match (changed or "
                                      f"corrupt); {_REFIT}")
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise CalibratorFileError(f"calibrator file {path}: cannot read {npz} ({exc}); {_REFIT}") from exc
    try:
        return calibrator_from_dict(_join_arrays(doc, arrays))
    except CalibrationError as exc:
        raise CalibratorFileError(f"calibrator file {path}: {exc}; {_REFIT}") from exc
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise CalibratorFileError(f"calibrator file {path} is incomplete or corrupt ({type(exc).__name__}: "
                                  f"{exc}); {_REFIT}") from exc
