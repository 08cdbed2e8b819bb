"""Pascal VOC XML annotations.

Layout on disk::

    VOC/Annotations/<stem>.xml    one file per image (src / dst)
    VOC/Annotations/classes.txt   written by our writer: class names in id order (optional on reading)
    VOC/JPEGImages/<stem>.jpg     the images (only needed when an XML has no size)

One XML per image::

    <annotation>
      <filename>000001.jpg</filename>
      <size><width>353</width><height>500</height><depth>3</depth></size>
      <object>
        <name>dog</name><truncated>0</truncated><difficult>0</difficult><occluded>1</occluded>
        <bndbox><xmin>48.25</xmin><ymin>240.5</ymin><xmax>195.75</xmax><ymax>371.0</ymax></bndbox>
      </object>
    </annotation>

Coordinates: we read and write exact pixel coordinates (floats, ``%.4f``) with **no +1 shift**; the
official VOC files use 1-based integer pixels, so boxes read from them are offset by up to 1 px
compared with a 0-based convention (irrelevant at IoU 0.5 for all but tiny objects).

Reader: XML is parsed with ``xml.etree`` after rejecting any ``<!DOCTYPE``/``<!ENTITY`` declaration
(no DTDs, no entity expansion); malformed XML raises :class:`LabelFormatError` naming the file.
Classes: ``classes``, else the ``classes.txt`` next to the XML files, else every ``name`` found
(sorted). A missing ``<filename>`` defaults to ``<stem>.jpg``. ``truncated`` (0/1 or a fraction),
``occluded`` (int) and ``difficult`` (int, kept as an annotation field) are read when present, and
an optional ``<score>`` per object too; other tags (e.g. the auto-labels' ``<uncertainty>``) are
ignored. The image size comes from ``<size>``, else from the image header (``image_dir``); images
without either are skipped and counted.
Writer: ``truncated`` as the VOC flag ``truncation > 0`` (so fractions are not kept), ``occluded`` as
the int level, ``difficult`` from the annotation (default 0); unknown values are left out. An annotation
with an ``uncertainty`` dict (auto-labels) gets an ``<uncertainty>`` element: one child per scalar
(``<combined>0.123</combined>``, booleans as ``true``/``false``) and ``<ymin>..<xmax>`` children per σ vector.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ...io_utils import atomic_write_bytes, atomic_write_text
from ..errors import DatasetError, LabelFormatError
from ..manifest import Manifest
from .classes import name_key
from .common import (
    ClassMapper,
    ConversionReport,
    ManifestAssembler,
    check_file_name,
    copy_images as copy_manifest_images,
    has_scores,
    image_problem,
    label_files,
    label_path,
    output_dir,
    read_sizes,
    writer_report,
)

try:  # defence in depth: defusedxml also refuses DTDs and entities when it is installed
    from defusedxml.ElementTree import fromstring as _fromstring
except ImportError:  # pragma: no cover - depends on the environment
    _fromstring = ET.fromstring

CLASSES_FILE = "classes.txt"
_UNSAFE = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


def parse_xml(path: Path) -> ET.Element:
    """Root element of ``path``; DTDs/entities and malformed XML raise :class:`LabelFormatError`."""
    data = Path(path).read_bytes()
    if _UNSAFE.search(data):
        raise LabelFormatError(
            path, None, "DOCTYPE/ENTITY declarations are not allowed (possible entity-expansion attack)",
            "remove the declaration from the file",
        )
    try:
        return _fromstring(data)
    except ET.ParseError as exc:
        line = exc.position[0] if getattr(exc, "position", None) else None
        raise LabelFormatError(path, line, f"malformed XML ({exc})", "fix or re-export the file") from None


def _text(elem: ET.Element | None, tag: str) -> str | None:
    child = elem.find(tag) if elem is not None else None
    return child.text.strip() if child is not None and child.text and child.text.strip() else None


def _number(elem: ET.Element | None, tag: str, path: Path, where: str, required: bool = False) -> float | None:
    """``float`` of ``<tag>`` in ``elem`` (None when absent and not required)."""
    text = _text(elem, tag)
    if text is None:
        if required:
            raise LabelFormatError(path, None, f"{where}: missing <{tag}>")
        return None
    try:
        return float(text)
    except ValueError:
        raise LabelFormatError(path, None, f"{where}: <{tag}> is not a number: {text!r}") from None


def parse_annotation(path: Path) -> dict[str, Any]:
    """One VOC file as ``{filename, height, width, objects: [{name, box, truncated, occluded, difficult, score}]}``."""
    root = parse_xml(path)
    if root.tag != "annotation":
        raise LabelFormatError(path, None, f"root element must be <annotation>, got <{root.tag}>")
    size = root.find("size")
    height, width = _number(size, "height", path, "size"), _number(size, "width", path, "size")
    objects = []
    for k, obj in enumerate(root.findall("object")):
        where = f"object {k + 1}"
        name = _text(obj, "name")
        if name is None:
            raise LabelFormatError(path, None, f"{where}: missing <name>")
        bnd = obj.find("bndbox")
        if bnd is None:
            raise LabelFormatError(path, None, f"{where}: missing <bndbox>")
        box = [_number(bnd, t, path, f"{where} bndbox", required=True) for t in ("ymin", "xmin", "ymax", "xmax")]
        objects.append({
            "name": name, "box": box,
            "truncated": _number(obj, "truncated", path, where),
            "occluded": _number(obj, "occluded", path, where),
            "difficult": _number(obj, "difficult", path, where),
            "score": _number(obj, "score", path, where),
        })
    return {
        "filename": _text(root, "filename"),
        "height": int(height) if height and height > 0 else None,
        "width": int(width) if width and width > 0 else None,
        "objects": objects,
    }


def voc_classes(src: Path, parsed: Sequence[dict], classes: Sequence[str] | None) -> list[str]:
    """``classes``, else ``src/classes.txt``, else the sorted object names found."""
    if classes is not None:
        return [str(c) for c in classes]
    listed = src / CLASSES_FILE
    if listed.is_file():
        names = [line.strip() for line in listed.read_text(encoding="utf-8").splitlines() if line.strip()]
        if names:
            return names
    found = sorted({obj["name"] for p in parsed for obj in p["objects"]})
    if not found:
        raise DatasetError(f"voc: no object in {src} and no {CLASSES_FILE}; pass classes=[...]")
    return found


def read_voc(
    src: Path,
    *,
    classes: Sequence[str] | None = None,
    image_dir: Path | None = None,
    require_images: bool = False,
    skip_empty: bool = False,
    aliases: Mapping[str, str] | None = None,
) -> tuple[Manifest, ConversionReport]:
    """Read a folder of VOC XML files (searched recursively).

    Args:
      classes: target class names (default ``classes.txt`` or the names found); others dropped and counted.
      image_dir: image root (default ``src/../JPEGImages`` when it exists, else ``src/images``, else ``src``).
      require_images: skip (and count) images whose file is missing even when the XML has a size.
      skip_empty: skip (and count) images without any kept object.
      aliases: source-name -> class-name map applied before matching ``classes``.
    """
    src = Path(src)
    if image_dir is None:
        candidates = [src.parent / "JPEGImages", src / "images"]
        image_dir = next((c for c in candidates if c.is_dir()), src)
    image_dir = Path(image_dir)
    files = label_files(src, ".xml")
    parsed = [parse_annotation(path) for path, _ in files]
    mapper = ClassMapper(voc_classes(src, parsed, classes), aliases)
    assembler = ManifestAssembler(mapper.categories, src, "voc", skip_empty=skip_empty)
    names = [p["filename"] or rel.with_suffix(".jpg").as_posix() for p, (_, rel) in zip(parsed, files)]
    paths = [image_dir / check_file_name(n, str(f)) for n, (f, _) in zip(names, files)]
    wanted = [require_images or not _has_size(ann) for ann in parsed]
    header = read_sizes([p if w else None for p, w in zip(paths, wanted)])
    for (path, _), ann, name, img_path, want, found in zip(files, parsed, names, paths, wanted, header):
        if want and found is None:
            reason = image_problem(img_path) + ("" if _has_size(ann) else " (and no <size> in the XML)")
            assembler.report.skip(reason)
            assembler.report.drop("object of a skipped image", len(ann["objects"]))
            continue
        size = (ann["height"], ann["width"]) if _has_size(ann) else found
        _add_annotation(assembler, mapper, ann, name, size, str(path))
    return assembler.build(image_root=image_dir)


def _has_size(ann: dict) -> bool:
    return ann["height"] is not None and ann["width"] is not None


def _add_annotation(assembler, mapper, ann, file_name, size, where) -> None:
    """Map one file's object names, drop (and count) unknown ones, add the image."""
    objs = ann["objects"]
    ids = [mapper(o["name"]) for o in objs]
    unknown = Counter(name_key(o["name"]) for o, cid in zip(objs, ids) if cid is None)
    for key, count in sorted(unknown.items()):
        assembler.report.drop(f"class {key!r}", count)
    kept = [o for o, cid in zip(objs, ids) if cid is not None]
    boxes = np.array([o["box"] for o in kept], dtype=np.float64).reshape(-1, 4)
    assembler.add_image(
        file_name, size[0], size[1], boxes, [cid for cid in ids if cid is not None],
        occluded=[None if o["occluded"] is None else int(o["occluded"]) for o in kept],
        truncated=[o["truncated"] for o in kept],
        scores=[o["score"] for o in kept],
        extras=[{"difficult": int(o["difficult"])} if o["difficult"] is not None else {} for o in kept],
        where=where,
    )


def _sub(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    child = ET.SubElement(parent, tag)
    if text is not None:
        child.text = text
    return child


def _xml_value(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (float, np.floating)):
        return repr(float(value))                       # shortest text that reads back to the same float
    return str(value)


def _uncertainty_xml(parent: ET.Element, values: Mapping[str, Any]) -> None:
    """Auto-label uncertainties: one child per scalar, ``<ymin>..<xmax>`` children for 4-vectors (σ)."""
    for key, value in values.items():
        if isinstance(value, (list, tuple, np.ndarray)) and len(value) == 4:
            vec = _sub(parent, str(key))
            for tag, v in zip(("ymin", "xmin", "ymax", "xmax"), value):
                _sub(vec, tag, "nan" if v is None else _xml_value(v))
        elif value is not None:
            _sub(parent, str(key), _xml_value(value))


def annotation_xml(img: dict, anns: Sequence[dict], names: dict[int, str], scored: bool, precision: int) -> bytes:
    """VOC XML bytes of one image and its annotation dicts."""
    root = ET.Element("annotation")
    _sub(root, "filename", img["file_name"])
    size = _sub(root, "size")
    _sub(size, "width", str(int(img["width"])))
    _sub(size, "height", str(int(img["height"])))
    _sub(size, "depth", str(int(img.get("depth", 3))))
    fmt = f"%.{precision}f"
    for ann in anns:
        x, y, w, h = (float(v) for v in ann["bbox"])
        obj = _sub(root, "object")
        _sub(obj, "name", names[ann["category_id"]])
        if ann.get("truncated") is not None and ann["truncated"] >= 0:
            _sub(obj, "truncated", str(int(ann["truncated"] > 0)))
        if ann.get("occluded") is not None and ann["occluded"] >= 0:
            _sub(obj, "occluded", str(int(ann["occluded"])))
        _sub(obj, "difficult", str(int(ann.get("difficult") or 0)))
        if scored:
            _sub(obj, "score", "%.6f" % float(ann["score"] if ann.get("score") is not None else 1.0))
        bnd = _sub(obj, "bndbox")
        for tag, value in (("xmin", x), ("ymin", y), ("xmax", x + w), ("ymax", y + h)):
            _sub(bnd, tag, fmt % value)
        if isinstance(ann.get("uncertainty"), dict):
            _uncertainty_xml(_sub(obj, "uncertainty"), ann["uncertainty"])
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def write_voc(
    manifest: Manifest,
    dst: Path,
    *,
    with_score: bool | None = None,
    precision: int = 4,
    copy_images: bool = False,
    overwrite: bool = False,
) -> ConversionReport:
    """Write one VOC ``<stem>.xml`` per image (plus ``classes.txt``) into the folder ``dst``.

    Args:
      with_score: write ``<score>`` per object (default: when any annotation has a ``score``).
      precision: decimals of the (exact, unshifted) pixel coordinates.
      copy_images: also copy the images into ``dst/images/``.
      overwrite: replace a non-empty ``dst`` (deleting its content).
    """
    dst = Path(dst)
    scored = has_scores(manifest) if with_score is None else bool(with_score)
    names = {c["id"]: c["name"] for c in manifest.categories}
    by_image: dict[int, list[dict]] = {img["id"]: [] for img in manifest.images}
    for ann in sorted(manifest.annotations, key=lambda a: a["id"]):
        by_image[ann["image_id"]].append(ann)
    with output_dir(dst, overwrite, "voc") as tmp:
        for img in manifest.images:
            xml = annotation_xml(img, by_image[img["id"]], names, scored, precision)
            atomic_write_bytes(label_path(tmp, img["file_name"], ".xml", manifest.source), xml)
        atomic_write_text(tmp / CLASSES_FILE, "".join(n + "\n" for n in manifest.class_names))
        if copy_images:
            copy_manifest_images(manifest, tmp / "images")
    return writer_report(manifest, "voc", dst)
