"""Label-format converters: every format is read into, and written from, the COCO-style Manifest.

Registries (plain dicts, format name -> function)::

    READERS["kitti"](src, *, classes=None, image_dir=None, **options) -> (Manifest, ConversionReport)
    WRITERS["kitti"](manifest, dst, **options) -> ConversionReport

Formats: ``coco``, ``kitti`` (``label_2`` txt), ``bdd100k`` (label JSON), ``coda`` (COCO JSON remapped to
the KITTI or BDD100K classes; read-only), ``yolo`` (txt + ``classes.txt``), ``voc`` (Pascal VOC XML).
Each module's docstring describes its layout on disk and its options. Everything a converter leaves
out (missing images, unknown classes, degenerate boxes) or changes (clipped boxes) is counted in the
:class:`ConversionReport` and logged once as a summary.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .bdd100k import read_bdd100k, write_bdd100k
from .classes import BDD100K_ALIASES, BDD100K_CLASSES, CODA_TO_BDD, CODA_TO_KITTI, KITTI_CLASSES
from .coco import read_coco, write_coco
from .coda import read_coda
from .common import ConversionReport, log
from .kitti import read_kitti, write_kitti
from .voc import read_voc, write_voc
from .yolo import read_yolo, write_yolo

READERS: dict[str, Callable[..., Any]] = {
    "coco": read_coco,
    "kitti": read_kitti,
    "bdd100k": read_bdd100k,
    "coda": read_coda,
    "yolo": read_yolo,
    "voc": read_voc,
}

WRITERS: dict[str, Callable[..., Any]] = {
    "coco": write_coco,
    "kitti": write_kitti,
    "bdd100k": write_bdd100k,
    "yolo": write_yolo,
    "voc": write_voc,
}

__all__ = [
    "READERS", "WRITERS", "ConversionReport", "available_formats", "convert", "get_reader", "get_writer",
    "KITTI_CLASSES", "BDD100K_CLASSES", "BDD100K_ALIASES", "CODA_TO_KITTI", "CODA_TO_BDD",
]


def available_formats(mode: str | None = None) -> list[str]:
    """Sorted format names: readable (``mode="read"``), writable (``"write"``) or either (None)."""
    if mode == "read":
        return sorted(READERS)
    if mode == "write":
        return sorted(WRITERS)
    if mode is None:
        return sorted(set(READERS) | set(WRITERS))
    raise ValueError(f"mode must be 'read', 'write' or None, got {mode!r}")


def _lookup(registry: Mapping[str, Callable], name: str, mode: str) -> Callable:
    key = str(name).strip().lower()
    if key not in registry:
        other = READERS if registry is WRITERS else WRITERS
        hint = f" ({key} can only be {'read' if mode == 'write' else 'written'})" if key in other else ""
        raise ValueError(
            f"unknown {mode} format {name!r}{hint}; available {mode} formats: {', '.join(sorted(registry))}"
        )
    return registry[key]


def get_reader(name: str) -> Callable[..., Any]:
    """The reader of format ``name``; ValueError listing the readable formats otherwise."""
    return _lookup(READERS, name, "read")


def get_writer(name: str) -> Callable[..., Any]:
    """The writer of format ``name``; ValueError listing the writable formats otherwise."""
    return _lookup(WRITERS, name, "write")


def _check_options(func: Callable, options: Mapping[str, Any], fmt: str, role: str, skip: Sequence[str]) -> None:
    """ValueError naming the accepted options when ``options`` has an unknown key."""
    params = inspect.signature(func).parameters
    accepted = [n for n, p in params.items() if p.kind == p.KEYWORD_ONLY and n not in skip]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"unknown {role} option(s) {unknown} for format {fmt!r}; accepted: {accepted}")


def convert(
    src: str | Path,
    src_format: str,
    dst: str | Path,
    dst_format: str,
    classes: Sequence[str] | None = None,
    image_dir: str | Path | None = None,
    reader_options: Mapping[str, Any] | None = None,
    writer_options: Mapping[str, Any] | None = None,
) -> ConversionReport:
    """Read ``src`` in ``src_format`` and write it to ``dst`` in ``dst_format``.

    Returns one report: images/objects as written, skipped/dropped/clipped counts of both steps.
    """
    reader, writer = get_reader(src_format), get_writer(dst_format)
    reader_options, writer_options = dict(reader_options or {}), dict(writer_options or {})
    _check_options(reader, reader_options, src_format, "reader", ("classes", "image_dir"))
    _check_options(writer, writer_options, dst_format, "writer", ())
    manifest, read_report = reader(
        Path(src), classes=classes, image_dir=Path(image_dir) if image_dir is not None else None, **reader_options
    )
    write_report = writer(manifest, Path(dst), **writer_options)
    report = read_report.merge(write_report)
    report.images, report.objects = write_report.images, write_report.objects
    log.info("convert %s %s -> %s %s: %s", src_format, src, dst_format, dst, report.summary())
    return report
