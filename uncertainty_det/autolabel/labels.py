"""Accepted auto-labels as a :class:`Manifest` and their files in COCO, KITTI, YOLO and Pascal VOC.

Every annotation carries its detection ``score`` and an ``uncertainty`` dict: ``combined``, the raw value
of each measure of the threshold model (by name), and where the table has them ``al_sigma`` / ``ep_sigma``
(``[ymin, xmin, ymax, xmax]`` σ in pixels, the calibrated ``_cal`` columns preferred) with
``sigma_calibrated``. COCO JSON keeps the dict as-is, VOC writes it as an ``<uncertainty>`` element per
object; KITTI and YOLO have no place for it and carry the score column only.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..data.boxes import yxyx_to_xywh
from ..data.converters import WRITERS
from ..data.manifest import Manifest, categories_from_names
from ..tables import CORNERS, box_array
from ..thresholding.measures import measure_matrix
from .decision import AutolabelError, _check_columns, check_measures

LABEL_FORMATS = ("coco", "kitti", "yolo", "voc")
SIGMA_KINDS = ("al", "ep")


def uncertainty_names(dets: pd.DataFrame) -> list[str]:
    """The measure names of a :func:`~.decision.decide_images` ``dets`` frame (its ``u_<name>`` columns)."""
    return [c[2:] for c in dets.columns if c.startswith("u_") and f"contribution_{c[2:]}" in dets.columns]


def _json_list(values: np.ndarray) -> list:
    """Float array -> list with non-finite values as ``None`` (JSON has no NaN)."""
    values = np.asarray(values, dtype=np.float64)
    return np.where(np.isfinite(values), values, None).tolist()


def _sigma_source(dets: pd.DataFrame, kind: str) -> tuple[list[str], bool] | None:
    """σ columns of ``kind`` to write (calibrated preferred) and whether they are calibrated; None if absent."""
    for suffix, calibrated in (("_cal", True), ("", False)):
        cols = [f"{kind}_{c}{suffix}" for c in CORNERS]
        if all(c in dets.columns for c in cols):
            return cols, calibrated
    return None


def _uncertainty_columns(sub: pd.DataFrame, sigma_columns: bool) -> dict[str, list]:
    """Per-annotation values of each key of the ``uncertainty`` dict, as lists (one entry per row)."""
    names = uncertainty_names(sub)
    columns: dict[str, list] = {"combined": _json_list(sub["combined"].to_numpy(dtype=np.float64))}
    if names:
        check_measures(sub, names)
        raw = measure_matrix(sub, names, check_finite=False)                       # [N, K]
        for k, name in enumerate(names):
            columns[name] = _json_list(raw[:, k])
    if sigma_columns:
        kinds = []
        for kind in SIGMA_KINDS:
            source = _sigma_source(sub, kind)
            if source is not None:
                cols, calibrated = source
                columns[f"{kind}_sigma"] = _json_list(sub.loc[:, cols].to_numpy(dtype=np.float64))
                kinds.append(calibrated)
        if kinds:
            columns["sigma_calibrated"] = [all(kinds)] * len(sub)
    return columns


def accepted_manifest(dets: pd.DataFrame, decisions: pd.DataFrame, class_names: Sequence[str],
                      image_root: str | os.PathLike | None = None, sigma_columns: bool = True) -> Manifest:
    """The accepted images of ``decisions`` with their detections from ``dets`` as a labels manifest.

    dets / decisions: the outputs of :func:`~.decision.decide_images`; class_names: the ``C`` dataset
    classes (``class_id`` 1..C); image_root: stored in the manifest; sigma_columns: add the ``al_sigma`` /
    ``ep_sigma`` vectors (pixels; ``sigma_calibrated`` is True when every vector written comes from
    ``_cal`` columns). Images keep ``image_id, file_name, height, width``; boxes ``[ymin, xmin, ymax, xmax]``
    pixels become COCO ``[x, y, w, h]``; annotations are ordered by image (decisions order) then ``det`` and
    numbered 1..N. Built with ``Manifest.from_coco(sanitize=True)``: out-of-image boxes are clipped and
    degenerate ones dropped (counted in ``sanitize_report``).
    """
    _check_columns(decisions, ("image_id", "file_name", "height", "width", "accepted"), "decisions table")
    _check_columns(dets, ("image_id", "det", "class_id", "score", *CORNERS, "combined"), "detections frame")
    class_names = [str(c) for c in class_names]
    acc = decisions.loc[decisions["accepted"].to_numpy(dtype=bool)]
    acc_ids = acc["image_id"].to_numpy(dtype=np.int64)
    images = [{"id": i, "file_name": str(f), "height": h, "width": w}
              for i, f, h, w in zip(acc_ids.tolist(), acc["file_name"].tolist(),
                                    acc["height"].to_numpy(dtype=np.int64).tolist(),
                                    acc["width"].to_numpy(dtype=np.int64).tolist())]
    pos = pd.Index(acc_ids).get_indexer(dets["image_id"].to_numpy(dtype=np.int64))
    rows = np.flatnonzero(pos >= 0)
    rows = rows[np.lexsort((dets["det"].to_numpy(dtype=np.int64)[rows], pos[rows]))]
    sub = dets.iloc[rows].reset_index(drop=True)
    classes = sub["class_id"].to_numpy(dtype=np.int64)
    bad = (classes < 1) | (classes > len(class_names))
    if bad.any():
        raise AutolabelError(f"detections have class ids {np.unique(classes[bad]).tolist()} outside "
                             f"1..{len(class_names)} of the classes {class_names}; pass the model's dataset classes")
    xywh = yxyx_to_xywh(box_array(sub))
    unc = _uncertainty_columns(sub, sigma_columns)
    keys = list(unc)
    annotations = [
        {"id": k + 1, "image_id": img, "category_id": cls, "bbox": box, "area": box[2] * box[3], "iscrowd": 0,
         "score": score, "det": det, "uncertainty": dict(zip(keys, values))}
        for k, (img, cls, box, score, det, values) in enumerate(zip(
            sub["image_id"].to_numpy(dtype=np.int64).tolist(), classes.tolist(), xywh.tolist(),
            sub["score"].to_numpy(dtype=np.float64).tolist(), sub["det"].to_numpy(dtype=np.int64).tolist(),
            zip(*unc.values()) if keys else [()] * len(sub)))
    ]
    data = {"info": {"source_format": "autolabel"}, "images": images, "annotations": annotations,
            "categories": categories_from_names(class_names)}
    return Manifest.from_coco(data, source="autolabel", image_root=image_root, sanitize=True)


def label_paths(out_dir: str | os.PathLike, formats: Sequence[str] = LABEL_FORMATS) -> dict[str, Path]:
    """Where :func:`write_labels` puts each format: ``coco/labels.json``, ``kitti/``, ``yolo/``, ``voc/``.

    Unknown formats raise :class:`AutolabelError` listing the choices.
    """
    if isinstance(formats, str):
        formats = [formats]
    unknown = [f for f in formats if f not in LABEL_FORMATS]
    if unknown:
        raise AutolabelError(f"unknown label format(s) {unknown}; choose from {list(LABEL_FORMATS)}")
    out_dir = Path(out_dir)
    return {f: out_dir / "coco" / "labels.json" if f == "coco" else out_dir / f for f in dict.fromkeys(formats)}


def _occupied(path: Path) -> bool:
    return path.is_file() or (path.is_dir() and any(path.iterdir()))


def write_labels(manifest: Manifest, out_dir: str | os.PathLike, formats: Sequence[str] = LABEL_FORMATS,
                 overwrite: bool = False) -> dict[str, Path]:
    """Write ``manifest`` in each of ``formats`` below ``out_dir``; returns format -> path written.

    COCO: ``out_dir/coco/labels.json`` (annotations keep ``score`` and ``uncertainty``); KITTI, YOLO and
    VOC: folders ``out_dir/<format>/`` with the score column (``<score>`` and ``<uncertainty>`` in VOC).
    Existing outputs are replaced only with ``overwrite=True``; this is checked for every format before
    anything is written.
    """
    paths = label_paths(out_dir, formats)
    taken = [str(p) for p in paths.values() if _occupied(p)]
    if taken and not overwrite:
        raise AutolabelError(f"label outputs already exist: {taken}; pass overwrite=True to replace them or "
                             f"choose another output folder")
    for fmt, path in paths.items():
        options: dict[str, Any] = {} if fmt == "coco" else {"with_score": True, "overwrite": overwrite}
        WRITERS[fmt](manifest, path, **options)
    return paths
