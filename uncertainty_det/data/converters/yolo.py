"""YOLO txt labels (Darknet / Ultralytics style).

Layout on disk (what the writer produces; the reader also accepts ``src`` = the labels folder)::

    dataset/classes.txt          one class name per line; line k is class index k (0-based)
    dataset/data.yaml            optional: path, train/val image folders, nc, names
    dataset/labels/<stem>.txt    one object per line: ``cls cx cy w h [score]``
    dataset/images/<stem>.png    the images (image sizes are read from their headers)

``cx cy w h`` are the box centre and size normalised by the image width/height; ``cls`` is the 0-based
index into ``classes.txt``; an optional 6th column is a confidence score (pseudo-labels).

Reader: ``src`` is the dataset folder (with ``labels/``) or the labels folder itself. The class names
come from ``classes.txt`` (in the labels folder or its parent), else from ``names`` in ``data.yaml``;
``classes`` then selects/renumbers them by name (others dropped and counted). Without either file,
``classes`` names the indices.
Images default to ``<root>/images``, else ``src``; labels without a readable image are skipped and
counted unless ``require_images=False`` and ``image_size`` is given.
Writer: ``labels/<stem>.txt`` with ``%.8f`` (exact to 1e-4 px up to 10^4 px images), ``classes.txt``
in category order (YOLO index = position, so category ids are renumbered 1..K on reading back),
``data.yaml`` (``data_yaml=True``) and the score column when any annotation has one.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ...io_utils import atomic_write_text
from ..errors import DatasetError, LabelFormatError
from ..manifest import Manifest
from .common import (
    ClassMapper,
    ConversionReport,
    ImageIndex,
    ManifestAssembler,
    copy_images as copy_manifest_images,
    has_scores,
    image_problem,
    label_files,
    label_path,
    objects_of,
    output_dir,
    parse_image_size,
    read_sizes,
    writer_report,
)
from .classes import name_key

CLASSES_FILE = "classes.txt"


def parse_file(path: Path, num_classes: int) -> np.ndarray:
    """``[N,6]`` rows ``cls cx cy w h score`` of one label file (score NaN when absent)."""
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) not in (5, 6):
                problem = f"expected 5 or 6 fields (cls cx cy w h [score]), got {len(parts)}"
                raise LabelFormatError(path, line_no, problem)
            try:
                values = [float(v) for v in parts]
            except ValueError:
                raise LabelFormatError(path, line_no, f"fields must be numbers, got {line.strip()!r}") from None
            cls = values[0]
            if cls != int(cls) or not 0 <= cls < num_classes:
                raise LabelFormatError(
                    path, line_no, f"class index {parts[0]!r} is not an integer in [0, {num_classes - 1}]",
                    "fix the line or the class list (classes.txt / classes=)",
                )
            rows.append(values + [np.nan] * (6 - len(values)))
    return np.array(rows, dtype=np.float64).reshape(-1, 6)


def read_class_file(path: Path) -> list[str]:
    """Class names of a ``classes.txt`` (blank lines ignored)."""
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise DatasetError(f"{path} lists no class; write one class name per line")
    return names


def locate(src: Path) -> tuple[Path, Path]:
    """``(labels folder, dataset root)`` for ``src`` (dataset folder or labels folder)."""
    if (src / "labels").is_dir():
        return src / "labels", src
    return src, src.parent


def read_yaml_names(path: Path) -> list[str]:
    """Class names of an Ultralytics ``data.yaml`` (``names`` as a list or an ``{index: name}`` map)."""
    import yaml  # PyYAML comes with omegaconf; imported lazily as only this fallback needs it

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise LabelFormatError(path, None, f"not valid YAML ({exc})") from None
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, dict):
        try:
            names = [names[i] for i in range(len(names))]
        except KeyError:
            raise LabelFormatError(path, None, "'names' keys must be the indices 0..K-1") from None
    if not isinstance(names, list) or not names:
        raise LabelFormatError(path, None, "'names' must be a non-empty list of class names")
    return [str(n) for n in names]


def source_classes(
    labels_dir: Path, root: Path, classes: Sequence[str] | None, aliases: Mapping[str, str] | None
) -> tuple[list[str], ClassMapper]:
    """``(source class names by index, mapper from a source name to a target id)``.

    Source names come from ``classes.txt`` (labels folder, then root), else ``root/data.yaml``.
    """
    files = [p for p in (labels_dir / CLASSES_FILE, root / CLASSES_FILE) if p.is_file()]
    if files or (root / "data.yaml").is_file():
        names = read_class_file(files[0]) if files else read_yaml_names(root / "data.yaml")
        return names, ClassMapper(classes if classes is not None else names, aliases)
    if classes is not None:
        names = [str(c) for c in classes]
        return names, ClassMapper(names, aliases)
    raise DatasetError(
        f"yolo: no {CLASSES_FILE} in {labels_dir} or {root}; add one (one name per line) or pass classes=[...]"
    )


def read_yolo(
    src: Path,
    *,
    classes: Sequence[str] | None = None,
    image_dir: Path | None = None,
    require_images: bool = True,
    image_size: Sequence[int] | None = None,
    image_suffix: str = ".png",
    skip_empty: bool = False,
    aliases: Mapping[str, str] | None = None,
) -> tuple[Manifest, ConversionReport]:
    """Read YOLO txt labels.

    Args:
      src: dataset folder containing ``labels/``, or the labels folder.
      classes: target class names (see the module docstring).
      image_dir: image folder (default ``<root>/images`` when it exists, else ``src``); a label
        ``<rel>/<stem>.txt`` takes the image ``<rel>/<stem>.*``, else the only image named ``<stem>.*``.
      require_images: skip (and count) labels without a readable image; when False, ``image_size``
        ``(height, width)`` is used for them and the file name is ``<stem><image_suffix>``.
      skip_empty: skip (and count) images without any kept object.
      aliases: source-name -> class-name map applied before matching ``classes``.
    """
    labels_dir, root = locate(Path(src))
    if image_dir is None:
        image_dir = root / "images" if (root / "images").is_dir() else Path(src)
    image_dir = Path(image_dir)
    fallback = parse_image_size(image_size)
    names, mapper = source_classes(labels_dir, root, classes, aliases)
    to_target = np.array([mapper(n) or 0 for n in names], dtype=np.int64)
    assembler = ManifestAssembler(mapper.categories, labels_dir, "yolo", skip_empty=skip_empty)
    labels = label_files(labels_dir, ".txt", exclude=(CLASSES_FILE,))
    images = ImageIndex(image_dir)
    paths = [images.find(rel) for _, rel in labels]
    for (path, rel), img_path, size in zip(labels, paths, read_sizes(paths)):
        rows = parse_file(path, len(names))
        if size is None:
            if require_images:
                assembler.report.skip(image_problem(img_path))
                assembler.report.drop("object of a skipped image", len(rows))
                continue
            if fallback is None:
                raise DatasetError(f"yolo: {image_problem(img_path)} for {path}; pass image_size=(height, width)")
            size = fallback
        file_name = (
            images.file_name(img_path) if img_path is not None else rel.as_posix() + image_suffix
        )
        _add_rows(assembler, rows, to_target, names, size, file_name, str(path))
    return assembler.build(image_root=image_dir)


def _add_rows(assembler, rows, to_target, names, size, file_name, where) -> None:
    """Denormalise one file's rows, drop (and count) classes not kept, add the image."""
    src_idx = rows[:, 0].astype(np.int64)
    ids = to_target[src_idx]
    unknown = Counter(name_key(names[i]) for i in src_idx[ids == 0].tolist())
    for key, count in sorted(unknown.items()):
        assembler.report.drop(f"class {key!r}", count)
    kept = rows[ids > 0]
    height, width = size
    cx, cy, w, h = kept[:, 1] * width, kept[:, 2] * height, kept[:, 3] * width, kept[:, 4] * height
    boxes = np.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], axis=1)
    scores = [None if np.isnan(s) else float(s) for s in kept[:, 5]]
    assembler.add_image(file_name, height, width, boxes, ids[ids > 0], scores=scores, where=where)


def format_rows(boxes: np.ndarray, indices: np.ndarray, height: int, width: int, scores: np.ndarray | None) -> str:
    """YOLO lines (``%.8f``) for ``[N,4]`` ``[ymin, xmin, ymax, xmax]`` pixel boxes."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    cy = (boxes[:, 0] + boxes[:, 2]) / 2 / height
    cx = (boxes[:, 1] + boxes[:, 3]) / 2 / width
    h = (boxes[:, 2] - boxes[:, 0]) / height
    w = (boxes[:, 3] - boxes[:, 1]) / width
    lines = []
    for k in range(boxes.shape[0]):
        line = f"{int(indices[k])} {cx[k]:.8f} {cy[k]:.8f} {w[k]:.8f} {h[k]:.8f}"
        if scores is not None:
            line += f" {scores[k]:.6f}"
        lines.append(line + "\n")
    return "".join(lines)


def data_yaml_text(names: Sequence[str]) -> str:
    """Ultralytics ``data.yaml`` for the written folder (names as JSON strings, valid YAML)."""
    listed = "\n".join(f"  {i}: {json.dumps(n)}" for i, n in enumerate(names))
    return f"path: .\ntrain: images\nval: images\nnc: {len(names)}\nnames:\n{listed}\n"


def write_yolo(
    manifest: Manifest,
    dst: Path,
    *,
    with_score: bool | None = None,
    data_yaml: bool = True,
    copy_images: bool = False,
    overwrite: bool = False,
) -> ConversionReport:
    """Write YOLO labels into the folder ``dst`` (replaced as a whole).

    Args:
      with_score: add the 6th score column (default: when any annotation has a ``score``).
      data_yaml: also write ``dst/data.yaml``.
      copy_images: also copy the images into ``dst/images/``.
      overwrite: replace a non-empty ``dst`` (deleting its content).
    """
    dst = Path(dst)
    scored = has_scores(manifest) if with_score is None else bool(with_score)
    index_of = {c["id"]: i for i, c in enumerate(manifest.categories)}
    with output_dir(dst, overwrite, "yolo") as tmp:
        for img in manifest.images:
            objs, order = objects_of(manifest, img["id"])
            indices = np.array([index_of[int(c)] for c in objs.class_ids[order]], dtype=np.int64)
            text = format_rows(
                objs.boxes[order], indices, img["height"], img["width"], objs.scores[order] if scored else None
            )
            atomic_write_text(label_path(tmp / "labels", img["file_name"], ".txt", manifest.source), text)
        atomic_write_text(tmp / CLASSES_FILE, "".join(n + "\n" for n in manifest.class_names))
        if data_yaml:
            atomic_write_text(tmp / "data.yaml", data_yaml_text(manifest.class_names))
        if copy_images:
            copy_manifest_images(manifest, tmp / "images")
    return writer_report(manifest, "yolo", dst)
