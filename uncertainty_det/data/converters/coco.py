"""COCO detection JSON (the canonical manifest format).

Layout on disk::

    annotations.json     {"images": [...], "annotations": [...], "categories": [...], "info": {...}}
    images/...           image files, ``file_name`` relative to the image root

Images: ``id``, ``file_name`` (relative, no ``..``), ``height``, ``width`` (read from the image header
when absent) and any extra attributes (``weather``, ``timeofday``, ``scene``, ...), kept as-is.
Annotations: ``image_id``, ``category_id``, ``bbox=[x, y, w, h]`` pixels, optional ``occluded``,
``truncated``, ``score``; other keys (``iscrowd``, ``segmentation``, ``area`` of unclipped boxes) are kept.
Annotations are grouped by ``image_id`` (their order in the file does not matter).

Reader: without ``classes`` the file's categories (and ids) are kept; with ``classes`` categories are
matched by name, renumbered 1..K in that order, and other categories dropped and counted. Image ids
are kept; annotation ids are renumbered 1..N. The image root defaults to ``info.image_root``
(relative to the JSON) or the JSON's folder.
Writer: :meth:`Manifest.write` (atomic), with ``info.image_root`` relative to ``dst``.
"""
from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..boxes import xywh_to_yxyx
from ..errors import DatasetError, LabelFormatError
from ..manifest import Manifest
from .classes import name_key
from .common import (
    ClassMapper,
    ConversionReport,
    ManifestAssembler,
    check_file_name,
    copy_images_beside,
    image_problem,
    read_sizes,
    writer_report,
)

_HANDLED = frozenset({"id", "image_id", "category_id", "bbox", "occluded", "truncated", "score"})


def load_json(src: Path) -> Any:
    """Parse a JSON label file; errors name the file."""
    src = Path(src)
    if not src.is_file():
        raise DatasetError(f"label file {src} does not exist; check the src path")
    try:
        with open(src, encoding="utf-8") as handle:
            return json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        line = getattr(exc, "lineno", None)
        raise LabelFormatError(src, line, f"not valid JSON ({exc})", "fix or re-export the file") from None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_lists(data: Any, src: Path) -> None:
    if not isinstance(data, dict):
        raise LabelFormatError(src, None, "top level must be a JSON object with images/annotations/categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise LabelFormatError(src, None, f"missing the {key!r} list")


def _category_names(data: dict, src: Path) -> dict[int, str]:
    """Source category id -> name."""
    names = {}
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int) or not isinstance(cat.get("name"), str):
            raise LabelFormatError(src, None, f"categories[{i}] needs an integer 'id' and a string 'name'")
        names[cat["id"]] = cat["name"]
    return names


def _group_annotations(data: dict, src: Path, report: ConversionReport) -> dict[Any, list[dict]]:
    """Annotations by ``image_id`` (validated); those of unknown images are dropped and counted."""
    image_ids = {img.get("id") for img in data["images"] if isinstance(img, dict)}
    groups: dict[Any, list[dict]] = defaultdict(list)
    orphans = 0
    for i, ann in enumerate(data["annotations"]):
        bbox = ann.get("bbox") if isinstance(ann, dict) else None
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
            problem = f"annotations[{i}]: 'bbox' must be 4 finite numbers [x, y, w, h], got {bbox!r}"
            raise LabelFormatError(src, None, problem)
        for opt in ("occluded", "truncated", "score"):
            if ann.get(opt) is not None and not _is_number(ann[opt]):
                raise LabelFormatError(src, None, f"annotations[{i}]: '{opt}' must be a number, got {ann[opt]!r}")
        if ann.get("image_id") not in image_ids:
            orphans += 1
            continue
        groups[ann["image_id"]].append(ann)
    report.drop("annotation of an image id not in 'images'", orphans)
    return groups


def _image_sizes(images: list[dict], image_root: Path, src: Path, require_images: bool) -> list[tuple | None]:
    """``(height, width)`` per image: from the JSON, else from the header (None when unavailable)."""
    sizes: list[tuple | None] = []
    need: dict[int, Path] = {}
    for i, img in enumerate(images):
        rel = check_file_name(img.get("file_name"), f"{src} images[{i}]")
        h, w = img.get("height"), img.get("width")
        ok = isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0
        sizes.append((h, w) if ok else None)
        if not ok or require_images:
            need[i] = image_root / rel
    header = read_sizes(list(need.values()))
    for i, size in zip(need, header):
        if size is None or sizes[i] is None:
            sizes[i] = size
    return sizes


def read_coco_data(
    data: Any,
    src: Path,
    image_root: Path,
    fmt: str,
    mapper: Callable[[str], int | None] | None,
    categories: Sequence[dict] | None,
    require_images: bool,
    skip_empty: bool,
) -> tuple[Manifest, ConversionReport]:
    """Core of the COCO and CODA readers.

    ``mapper`` maps a source category name to a target id (None = drop); without a mapper the source
    categories (and ids) are kept.
    """
    _check_lists(data, src)
    cat_names = _category_names(data, src)
    if mapper is None:
        categories = [{"id": cid, "name": name} for cid, name in cat_names.items()]
        mapper_by_id = {cid: cid for cid in cat_names}
    else:
        mapper_by_id = {cid: mapper(name) for cid, name in cat_names.items()}
    assembler = ManifestAssembler(categories, src, fmt, skip_empty=skip_empty)
    report = assembler.report
    groups = _group_annotations(data, src, report)
    images = [img if isinstance(img, dict) else {} for img in data["images"]]
    for i, img in enumerate(images):
        if not isinstance(img.get("id"), int):
            raise LabelFormatError(src, None, f"images[{i}]: 'id' must be an integer")
    sizes = _image_sizes(images, image_root, src, require_images)
    for i, (img, size) in enumerate(zip(images, sizes)):
        anns = groups.get(img["id"], [])
        if size is None:
            report.skip(image_problem(image_root / img["file_name"]) + " (and no size in the JSON)")
            report.drop("object of a skipped image", len(anns))
            continue
        _add_coco_image(assembler, img, size, anns, cat_names, mapper_by_id, f"{src} images[{i}]")
    return assembler.build(image_root=image_root)


def _add_coco_image(assembler, img, size, anns, cat_names, mapper_by_id, where) -> None:
    """Map the categories of one image's annotations, count the dropped ones, add the image."""
    ids = [mapper_by_id.get(a.get("category_id")) for a in anns]
    unknown = Counter(
        name_key(cat_names[a.get("category_id")]) if a.get("category_id") in cat_names else f"id {a.get('category_id')}"
        for a, cid in zip(anns, ids) if not cid
    )
    for key, count in sorted(unknown.items()):
        assembler.report.drop(f"class {key!r}", count)
    kept = [a for a, cid in zip(anns, ids) if cid]
    boxes = xywh_to_yxyx(np.array([a["bbox"] for a in kept], dtype=np.float64).reshape(-1, 4))
    attrs = {k: v for k, v in img.items() if k not in ("id", "file_name", "height", "width")}
    assembler.add_image(
        img["file_name"], size[0], size[1], boxes, [cid for cid in ids if cid],
        occluded=[a.get("occluded") for a in kept],
        truncated=[a.get("truncated") for a in kept],
        scores=[a.get("score") for a in kept],
        extras=[{k: v for k, v in a.items() if k not in _HANDLED} for a in kept],
        attrs=attrs, image_id=img["id"], where=where,
    )


def default_image_root(src: Path, data: Any) -> Path:
    """``info.image_root`` relative to the JSON, else the JSON's folder."""
    rel = (data.get("info") or {}).get("image_root") if isinstance(data, dict) else None
    return (src.parent / rel) if isinstance(rel, str) and rel else src.parent


def read_coco(
    src: Path,
    *,
    classes: Sequence[str] | None = None,
    image_dir: Path | None = None,
    require_images: bool = False,
    skip_empty: bool = False,
    aliases: Mapping[str, str] | None = None,
) -> tuple[Manifest, ConversionReport]:
    """Read a COCO JSON file.

    Args:
      classes: keep/renumber these category names (others dropped and counted); None keeps all.
      image_dir: image root (default ``info.image_root`` or the JSON's folder).
      require_images: skip (and count) images whose file is missing or unreadable.
      skip_empty: skip (and count) images without any kept object.
      aliases: source-name -> class-name map applied before matching ``classes``.
    """
    src = Path(src)
    data = load_json(src)
    image_root = Path(image_dir) if image_dir is not None else default_image_root(src, data)
    mapper = ClassMapper(classes, aliases) if classes is not None else None
    categories = mapper.categories if mapper is not None else None
    return read_coco_data(data, src, image_root, "coco", mapper, categories, require_images, skip_empty)


def write_coco(
    manifest: Manifest, dst: Path, *, copy_images: bool = False, overwrite: bool = False
) -> ConversionReport:
    """Write ``manifest`` as COCO JSON at ``dst`` (atomically; an existing file is replaced).

    With ``copy_images`` the images are copied to ``dst.parent/images/`` (a non-empty folder there is
    replaced only with ``overwrite=True``) and that folder becomes the stored image root; otherwise
    ``info.image_root`` points at the manifest's image root.
    """
    dst = Path(dst)
    for i, img in enumerate(manifest.images):
        check_file_name(img["file_name"], f"{manifest.source} images[{i}]")
    image_root = manifest.image_root
    if copy_images:
        image_root = copy_images_beside(manifest, dst.parent / "images", overwrite, "coco")
    manifest.write(dst, image_root=image_root)
    return writer_report(manifest, "coco", dst)
