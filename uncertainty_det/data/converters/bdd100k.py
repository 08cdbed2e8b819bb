"""BDD100K detection labels (the ``bdd100k_labels_images_<split>.json`` format).

Layout on disk::

    bdd100k/labels/bdd100k_labels_images_val.json    the label JSON (src / dst)
    bdd100k/images/100k/val/<name>                   the images (image_dir)

The JSON is a list of frames::

    [{"name": "b1c66a42-6f7d68ca.jpg",
      "attributes": {"weather": "overcast", "scene": "city street", "timeofday": "daytime"},
      "labels": [{"category": "car",
                  "attributes": {"occluded": false, "truncated": false, "trafficLightColor": "none"},
                  "box2d": {"x1": 45.2, "y1": 254.5, "x2": 357.8, "y2": 487.9}}, ...]}, ...]

Reader: default classes are :data:`~.classes.BDD100K_CLASSES`; the newer release names ``person``,
``bike`` and ``motor`` are mapped through :data:`~.classes.BDD100K_ALIASES`. Other categories and
labels without ``box2d`` (lanes, drivable areas) are dropped and counted. ``occluded``/``truncated``
are real JSON booleans (also accepted: 0/1 and the strings "true"/"false"); they become occlusion
level 0/1 and truncation 0.0/1.0. Frame attributes ``weather``/``scene``/``timeofday`` become image
attributes. Image size comes from the header when the image exists; a missing image is skipped and
counted unless ``require_images=False`` (then ``image_size``, default 720x1280, is used).
Writer: the same structure; ``occluded`` is ``level >= 1``, ``truncated`` is ``truncation > 0``
(unknown values are left out), ``score`` is written when present; ``id`` is the annotation id.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ...io_utils import atomic_write_json
from ..errors import LabelFormatError
from ..manifest import IMAGE_ATTRIBUTES, Manifest
from .classes import BDD100K_ALIASES, BDD100K_CLASSES, name_key
from .coco import load_json
from .common import (
    ClassMapper,
    ConversionReport,
    ManifestAssembler,
    check_file_name,
    copy_images_beside,
    has_scores,
    image_problem,
    objects_of,
    parse_image_size,
    read_sizes,
    resolve_classes,
    writer_report,
)

DEFAULT_IMAGE_SIZE = (720, 1280)
_BOOL_TEXT = {"true": True, "false": False}


def as_bool(value: Any, src: Path, where: str) -> bool | None:
    """A BDD attribute flag as bool (None when absent); anything not boolean-like is an error."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _BOOL_TEXT:
        return _BOOL_TEXT[value.strip().lower()]
    raise LabelFormatError(src, None, f"{where}: expected a boolean, got {value!r}")


def _box(label: dict, src: Path, where: str) -> list[float] | None:
    """``[y1, x1, y2, x2]`` of a label's ``box2d`` (None when it has none)."""
    box = label.get("box2d")
    if box is None:
        return None
    try:
        return [float(box["y1"]), float(box["x1"]), float(box["y2"]), float(box["x2"])]
    except (TypeError, KeyError, ValueError):
        raise LabelFormatError(src, None, f"{where}.box2d must have numbers x1, y1, x2, y2, got {box!r}") from None


def parse_frame(frame: Any, src: Path, index: int, mapper: ClassMapper, report: ConversionReport) -> dict:
    """One frame as ``{name, attrs, boxes, class_ids, occluded, truncated, scores}`` (kept labels only)."""
    where = f"frame {index}"
    if not isinstance(frame, dict):
        raise LabelFormatError(src, None, f"{where} must be an object with 'name' and 'labels'")
    check_file_name(frame.get("name"), f"{src} {where}")
    labels = frame.get("labels") or []
    if not isinstance(labels, list):
        raise LabelFormatError(src, None, f"{where}: 'labels' must be a list")
    attrs = frame.get("attributes") or {}
    out = {"name": frame["name"], "attrs": {k: attrs.get(k) for k in IMAGE_ATTRIBUTES if attrs.get(k) is not None},
           "boxes": [], "class_ids": [], "occluded": [], "truncated": [], "scores": []}
    unknown: Counter = Counter()
    for j, label in enumerate(labels):
        lw = f"{where} labels[{j}]"
        if not isinstance(label, dict):
            raise LabelFormatError(src, None, f"{lw} must be an object")
        box = _box(label, src, lw)
        if box is None:
            report.drop("label without box2d (lane, drivable area, ...)")
            continue
        cid = mapper(str(label.get("category")))
        if cid is None:
            unknown[name_key(str(label.get("category")))] += 1
            continue
        flags = label.get("attributes") or {}
        occ = as_bool(flags.get("occluded"), src, f"{lw}.attributes.occluded")
        trunc = as_bool(flags.get("truncated"), src, f"{lw}.attributes.truncated")
        out["boxes"].append(box)
        out["class_ids"].append(cid)
        out["occluded"].append(None if occ is None else int(occ))
        out["truncated"].append(None if trunc is None else float(trunc))
        out["scores"].append(float(label["score"]) if isinstance(label.get("score"), (int, float)) else None)
    for key, count in sorted(unknown.items()):
        report.drop(f"class {key!r}", count)
    return out


def read_bdd100k(
    src: Path,
    *,
    classes: Sequence[str] | None = None,
    image_dir: Path | None = None,
    require_images: bool = True,
    image_size: Sequence[int] = DEFAULT_IMAGE_SIZE,
    skip_empty: bool = False,
    aliases: Mapping[str, str] | None = None,
) -> tuple[Manifest, ConversionReport]:
    """Read a BDD100K label JSON.

    Args:
      classes: target class names (default the 10 BDD100K classes).
      image_dir: image folder (default the JSON's folder).
      require_images: skip (and count) frames without a readable image; when False such frames get
        ``image_size`` ``(height, width)``.
      skip_empty: skip (and count) frames without any kept object (the reference TFRecords did).
      aliases: source-name -> class-name map, added to :data:`BDD100K_ALIASES`.
    """
    src = Path(src)
    frames = load_json(src)
    if not isinstance(frames, list):
        raise LabelFormatError(src, None, "top level must be a list of frames")
    image_dir = Path(image_dir) if image_dir is not None else src.parent
    fallback = parse_image_size(image_size)
    mapper = ClassMapper(resolve_classes(classes, BDD100K_CLASSES, "bdd100k"), {**BDD100K_ALIASES, **(aliases or {})})
    assembler = ManifestAssembler(mapper.categories, src, "bdd100k", skip_empty=skip_empty)
    parsed = [parse_frame(frame, src, i, mapper, assembler.report) for i, frame in enumerate(frames)]
    paths = [image_dir / p["name"] for p in parsed]
    sizes = read_sizes(paths)
    for i, (frame, path, size) in enumerate(zip(parsed, paths, sizes)):
        if size is None:
            if require_images:
                assembler.report.skip(image_problem(path))
                assembler.report.drop("object of a skipped image", len(frame["boxes"]))
                continue
            size = fallback
        assembler.add_image(
            frame["name"], size[0], size[1], np.array(frame["boxes"], dtype=np.float64).reshape(-1, 4),
            frame["class_ids"], occluded=frame["occluded"], truncated=frame["truncated"], scores=frame["scores"],
            attrs=frame["attrs"], where=f"{src} frame {i}",
        )
    return assembler.build(image_root=image_dir)


def frame_of(manifest: Manifest, img: dict, names: dict[int, str], scored: bool) -> dict:
    """The BDD100K frame dict of one manifest image."""
    objs, order = objects_of(manifest, img["id"])
    labels = []
    for k in order.tolist():
        ymin, xmin, ymax, xmax = (float(v) for v in objs.boxes[k])
        flags = {}
        if objs.occluded[k] >= 0:
            flags["occluded"] = bool(objs.occluded[k] >= 1)
        if objs.truncated[k] >= 0:
            flags["truncated"] = bool(objs.truncated[k] > 0)
        label = {
            "id": int(objs.ann_ids[k]),
            "category": names[int(objs.class_ids[k])],
            "attributes": flags,
            "box2d": {"x1": xmin, "y1": ymin, "x2": xmax, "y2": ymax},
        }
        if scored:
            label["score"] = float(objs.scores[k])
        labels.append(label)
    attrs = {k: img[k] for k in IMAGE_ATTRIBUTES if img.get(k) is not None}
    return {"name": img["file_name"], "attributes": attrs, "labels": labels}


def write_bdd100k(
    manifest: Manifest,
    dst: Path,
    *,
    with_score: bool | None = None,
    copy_images: bool = False,
    overwrite: bool = False,
) -> ConversionReport:
    """Write ``manifest`` as a BDD100K label JSON at ``dst`` (atomically).

    Args:
      with_score: write each label's ``score`` (default: when any annotation has one).
      copy_images: also copy the images to ``dst.parent/images/`` (replaced only with ``overwrite``).
    """
    dst = Path(dst)
    for i, img in enumerate(manifest.images):
        check_file_name(img["file_name"], f"{manifest.source} images[{i}]")
    scored = has_scores(manifest) if with_score is None else bool(with_score)
    names = {c["id"]: c["name"] for c in manifest.categories}
    frames = [frame_of(manifest, img, names, scored) for img in manifest.images]
    if copy_images:
        copy_images_beside(manifest, dst.parent / "images", overwrite, "bdd100k")
    atomic_write_json(dst, frames, indent=None)
    return writer_report(manifest, "bdd100k", dst)
