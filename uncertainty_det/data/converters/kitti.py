"""KITTI 2D object labels (``label_2``).

Layout on disk::

    training/label_2/000000.txt      one object per line (src of the reader, dst of the writer)
    training/image_2/000000.png      the image (image_dir; .png or .jpg)

Each line has 15 whitespace-separated fields, or 16 with a trailing detection score::

    type truncated occluded alpha x1 y1 x2 y2 h w l x y z ry [score]

``type`` is a class name (``Car``, ``Person_sitting``, ``DontCare``, ...; matched case-insensitively),
``truncated`` a float in [0, 1], ``occluded`` an int (0 visible, 1 partly, 2 largely, 3 unknown),
``x1 y1 x2 y2`` the 2D box in pixels. The 3D fields are not used by this library.

Reader: default classes are :data:`~.classes.KITTI_CLASSES`; ``DontCare``, ``Misc`` and any other
unknown type are dropped and counted. Image sizes come from the image headers; an image without a
file is skipped and counted unless ``require_images=False`` (then ``image_size`` is used).
Writer: one ``<stem>.txt`` per image (relative sub-folders kept), boxes with ``%.4f`` (exact to 1e-4 px),
3D fields set to KITTI's "unknown" values (alpha/ry -10, dimensions -1, location -1000), the score
column when any annotation has one (``with_score``). Unknown truncation/occlusion are written as -1.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ...io_utils import atomic_write_text
from ..errors import LabelFormatError
from ..manifest import Manifest
from .classes import KITTI_CLASSES, name_key
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
    resolve_classes,
    writer_report,
)

FIELDS = (
    "type", "truncated", "occluded", "alpha", "x1", "y1", "x2", "y2",
    "h", "w", "l", "x", "y", "z", "ry", "score",
)
DEFAULT_IMAGE_SIZE = (375, 1242)


def parse_line(line: str, path: Path, line_no: int) -> tuple[str, np.ndarray]:
    """``(type, 15 numbers)`` of one label line (score is NaN when absent).

    Raises :class:`LabelFormatError` naming file and 1-based line for a wrong field count or a
    field that is not a number.
    """
    parts = line.split()
    if len(parts) not in (15, 16):
        raise LabelFormatError(
            path, line_no, f"expected 15 or 16 fields (type truncated occluded alpha x1 y1 x2 y2 h w l x y z ry "
            f"[score]), got {len(parts)}",
        )
    values = np.full(15, np.nan)
    for k, text in enumerate(parts[1:]):
        try:
            values[k] = float(text)
        except ValueError:
            problem = f"field {k + 2} ({FIELDS[k + 1]}) is not a number: {text!r}"
            raise LabelFormatError(path, line_no, problem) from None
    return parts[0], values


def parse_file(path: Path) -> tuple[list[str], np.ndarray]:
    """Types and ``[N,15]`` numbers of one label file (blank lines ignored)."""
    types, rows = [], []
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            obj_type, values = parse_line(line, path, line_no)
            types.append(obj_type)
            rows.append(values)
    return types, (np.stack(rows) if rows else np.zeros((0, 15)))


def default_image_dir(src: Path) -> Path:
    """``src/../image_2`` (KITTI layout), else ``src/images`` (our writer's copy), else ``src``."""
    for candidate in (src.parent / "image_2", src / "images"):
        if candidate.is_dir():
            return candidate
    return src


def read_kitti(
    src: Path,
    *,
    classes: Sequence[str] | None = None,
    image_dir: Path | None = None,
    require_images: bool = True,
    image_size: Sequence[int] = DEFAULT_IMAGE_SIZE,
    image_suffix: str = ".png",
    skip_empty: bool = False,
    aliases: Mapping[str, str] | None = None,
) -> tuple[Manifest, ConversionReport]:
    """Read a KITTI ``label_2`` folder.

    Args:
      src: folder of ``<stem>.txt`` label files (searched recursively).
      classes: target class names (default the 7 KITTI classes); other types are dropped and counted.
      image_dir: image folder (default ``src/../image_2``, else ``src/images``, else ``src``); a label
        ``<rel>/<stem>.txt`` takes the image ``<rel>/<stem>.*``, else the only image named ``<stem>.*``.
      require_images: skip (and count) labels without a readable image; when False such images get
        ``image_size`` ``(height, width)`` and the file name ``<stem><image_suffix>``.
      skip_empty: skip (and count) images without any kept object (reference TFRecord behaviour: False).
      aliases: extra source-name -> class-name map (e.g. ``{"van": "car"}``).
    """
    src = Path(src)
    image_dir = Path(image_dir) if image_dir is not None else default_image_dir(src)
    fallback = parse_image_size(image_size)
    mapper = ClassMapper(resolve_classes(classes, KITTI_CLASSES, "kitti"), aliases)
    assembler = ManifestAssembler(mapper.categories, src, "kitti", skip_empty=skip_empty)
    labels = label_files(src, ".txt")
    images = ImageIndex(image_dir)
    paths = [images.find(rel) for _, rel in labels]
    sizes = read_sizes(paths)
    for (path, rel), img_path, size in zip(labels, paths, sizes):
        types, values = parse_file(path)
        if size is None:
            if require_images:
                assembler.report.skip(image_problem(img_path))
                assembler.report.drop("object of a skipped image", len(types))
                continue
            size = fallback
        file_name = (
            images.file_name(img_path) if img_path is not None else rel.as_posix() + image_suffix
        )
        _add_file(assembler, mapper, file_name, size, types, values, str(path))
    return assembler.build(image_root=image_dir)


def _add_file(assembler, mapper, file_name, size, types, values, where) -> None:
    """Map the types of one label file, drop unknown ones (counted) and add the image."""
    ids = np.array([mapper(t) or 0 for t in types], dtype=np.int64)
    unknown = Counter(name_key(t) for t, i in zip(types, ids.tolist()) if i == 0)
    for key, count in sorted(unknown.items()):
        assembler.report.drop(f"class {key!r}", count)
    keep = ids > 0
    kept = values[keep]
    boxes = kept[:, [4, 3, 6, 5]]  # y1 x1 y2 x2 (values[k] is field k + 2)
    truncated = [float(v) if v >= 0 else None for v in kept[:, 0]]
    occluded = [int(v) if v >= 0 else None for v in kept[:, 1]]
    scores = [None if np.isnan(v) else float(v) for v in kept[:, 14]]
    height, width = size
    assembler.add_image(
        file_name, height, width, boxes, ids[keep], occluded=occluded, truncated=truncated, scores=scores, where=where
    )


def format_line(
    name: str, box: np.ndarray, truncated: float, occluded: int, score: float | None, precision: int
) -> str:
    """One KITTI label line for a ``[ymin, xmin, ymax, xmax]`` box."""
    ymin, xmin, ymax, xmax = (float(v) for v in box)
    fmt = f"%.{precision}f"
    trunc = fmt % truncated if truncated >= 0 else "-1"
    occ = str(int(occluded)) if occluded >= 0 else "-1"
    coords = " ".join(fmt % v for v in (xmin, ymin, xmax, ymax))
    line = f"{name} {trunc} {occ} -10 {coords} -1 -1 -1 -1000 -1000 -1000 -10"
    if score is not None:
        line += f" {score:.6f}"
    return line


def kitti_type(name: str, capitalize: bool) -> str:
    """Class name as a KITTI ``type`` token (no whitespace; ``Car`` style when ``capitalize``)."""
    token = "_".join(str(name).split())
    return token[:1].upper() + token[1:] if capitalize else token


def write_kitti(
    manifest: Manifest,
    dst: Path,
    *,
    with_score: bool | None = None,
    capitalize: bool = True,
    precision: int = 4,
    copy_images: bool = False,
    overwrite: bool = False,
) -> ConversionReport:
    """Write one KITTI ``<stem>.txt`` per image into the folder ``dst`` (replaced as a whole).

    Args:
      with_score: add the 16th score column (default: when any annotation has a ``score``).
      capitalize: write ``Car``/``Person_sitting`` like KITTI (the reader ignores case either way).
      precision: decimals of box coordinates and truncation.
      copy_images: also copy the images into ``dst/images/``.
      overwrite: replace a non-empty ``dst`` (deleting its content).
    """
    dst = Path(dst)
    scored = has_scores(manifest) if with_score is None else bool(with_score)
    names = {c["id"]: kitti_type(c["name"], capitalize) for c in manifest.categories}
    with output_dir(dst, overwrite, "kitti") as tmp:
        for img in manifest.images:
            objs, order = objects_of(manifest, img["id"])
            lines = [
                format_line(
                    names[int(objs.class_ids[k])], objs.boxes[k], float(objs.truncated[k]), int(objs.occluded[k]),
                    float(objs.scores[k]) if scored else None, precision,
                )
                for k in order.tolist()
            ]
            text = "".join(line + "\n" for line in lines)
            atomic_write_text(label_path(tmp, img["file_name"], ".txt", manifest.source), text)
        if copy_images:
            copy_manifest_images(manifest, tmp / "images")
    return writer_report(manifest, "kitti", dst)
