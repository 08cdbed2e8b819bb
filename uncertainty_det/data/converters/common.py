"""Shared pieces of the converters: the report, class mapping, image lookup and the manifest assembler.

Every reader collects its images through :class:`ManifestAssembler`, which validates file names,
clips out-of-image boxes and drops degenerate ones (counting both), and builds the
:class:`~uncertainty_det.data.manifest.Manifest`. Writers of folder formats build their output in
:func:`output_dir` (a temporary folder renamed into place), so a failed conversion leaves nothing
half-written.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
from PIL import UnidentifiedImageError

from ...io_utils import atomic_dir, safe_relative_path
from ..boxes import sanitize_boxes
from ..errors import DatasetError
from ..images import IMAGE_SUFFIXES, read_image_size
from ..manifest import Manifest, ManifestBuilder, categories_from_names
from .classes import name_key

log = logging.getLogger("uncertainty_det.data.converters")


# ---------------------------------------------------------------------------------------- report
@dataclass
class ConversionReport:
    """What a reader or writer produced and what it lost.

    Attributes:
      images, objects: images and objects in the result.
      skipped_images: images left out (missing/unreadable file, no size, or no kept object where the
        format or option says so).
      dropped_objects: objects left out (unknown class such as KITTI DontCare/Misc, degenerate box).
      clipped_objects: objects whose box was clipped to the image (or re-ordered when inverted).
      reasons: counts per reason, e.g. ``{"dropped object: class 'dontcare'": 3}``.
    """

    images: int = 0
    objects: int = 0
    skipped_images: int = 0
    dropped_objects: int = 0
    clipped_objects: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def _note(self, kind: str, reason: str, count: int) -> None:
        if count:
            key = f"{kind}: {reason}"
            self.reasons[key] = self.reasons.get(key, 0) + int(count)

    def skip(self, reason: str, count: int = 1) -> None:
        """Count ``count`` skipped images for ``reason``."""
        self.skipped_images += int(count)
        self._note("skipped image", reason, count)

    def drop(self, reason: str, count: int = 1) -> None:
        """Count ``count`` dropped objects for ``reason``."""
        self.dropped_objects += int(count)
        self._note("dropped object", reason, count)

    def clip(self, reason: str, count: int = 1) -> None:
        """Count ``count`` clipped objects for ``reason``."""
        self.clipped_objects += int(count)
        self._note("clipped object", reason, count)

    def merge(self, other: "ConversionReport") -> "ConversionReport":
        """A new report with every count (and reason) of ``self`` and ``other`` added."""
        reasons = dict(self.reasons)
        for key, value in other.reasons.items():
            reasons[key] = reasons.get(key, 0) + value
        return ConversionReport(
            images=self.images + other.images,
            objects=self.objects + other.objects,
            skipped_images=self.skipped_images + other.skipped_images,
            dropped_objects=self.dropped_objects + other.dropped_objects,
            clipped_objects=self.clipped_objects + other.clipped_objects,
            reasons=reasons,
        )

    @property
    def lossless(self) -> bool:
        """True when nothing was skipped, dropped or clipped."""
        return not (self.skipped_images or self.dropped_objects or self.clipped_objects)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for JSON or MLflow)."""
        return {
            "images": self.images,
            "objects": self.objects,
            "skipped_images": self.skipped_images,
            "dropped_objects": self.dropped_objects,
            "clipped_objects": self.clipped_objects,
            "reasons": dict(sorted(self.reasons.items())),
        }

    def summary(self) -> str:
        """One line: counts, then the reasons."""
        text = (
            f"{self.images} images, {self.objects} objects; skipped {self.skipped_images} images, "
            f"dropped {self.dropped_objects} objects, clipped {self.clipped_objects} objects"
        )
        if self.reasons:
            text += " (" + "; ".join(f"{k}: {v}" for k, v in sorted(self.reasons.items())) + ")"
        return text

    def log(self, action: str) -> None:
        """Log the summary once: INFO when lossless, WARNING otherwise."""
        level = logging.INFO if self.lossless else logging.WARNING
        log.log(level, "%s: %s", action, self.summary())


# ----------------------------------------------------------------------------------- class names
class ClassMapper:
    """Maps source class names onto the 1-based ids of a target class list.

    Names are compared with :func:`~.classes.name_key`; ``aliases`` (source name -> target name) are
    applied first. Unknown names map to ``None`` (the caller drops and counts them).
    """

    def __init__(self, classes: Sequence[str], aliases: Mapping[str, str] | None = None):
        if isinstance(classes, str):
            raise TypeError("classes must be a sequence of class names, not a single string")
        self.names = [str(c) for c in classes]
        if not self.names:
            raise ValueError("classes must not be empty")
        self._ids: dict[str, int] = {}
        for i, name in enumerate(self.names):
            key = name_key(name)
            if key in self._ids:
                raise ValueError(f"duplicate class name {name!r} in classes {self.names}")
            self._ids[key] = i + 1
        self._aliases = {name_key(k): name_key(v) for k, v in (aliases or {}).items()}
        self._cache: dict[str, int | None] = {}

    def __call__(self, name: str) -> int | None:
        """1-based id of ``name`` (after aliases), or None when it is not a target class."""
        if name not in self._cache:
            key = name_key(name)
            key = self._aliases.get(key, key)
            self._cache[name] = self._ids.get(key)
        return self._cache[name]

    @property
    def categories(self) -> list[dict]:
        """COCO categories of the target classes."""
        return categories_from_names(self.names)


def resolve_classes(classes: Sequence[str] | None, default: Sequence[str] | None, fmt: str) -> list[str]:
    """``classes`` if given, else ``default``; raises when neither is available."""
    if classes is not None:
        return [str(c) for c in classes]
    if default is None:
        raise DatasetError(f"{fmt}: no class list found; pass classes=[...]")
    return [str(c) for c in default]


# ---------------------------------------------------------------------------------- file names
def check_file_name(name: Any, source: str | os.PathLike, what: str = "image file name") -> Path:
    """``name`` as a safe relative path, or a :class:`DatasetError` naming ``source``."""
    if not isinstance(name, str):
        raise DatasetError(f"{source}: {what} must be a string, got {name!r}; fix the label file")
    try:
        return safe_relative_path(name, what)
    except ValueError as exc:
        raise DatasetError(f"{source}: {exc}") from None


def label_path(dst: Path, file_name: str, suffix: str, source: str = "manifest") -> Path:
    """Label file for image ``file_name`` under ``dst``: same relative path, new ``suffix``."""
    rel = check_file_name(file_name, source)
    return dst / rel.with_suffix(suffix)


def label_files(folder: Path, suffix: str, exclude: Sequence[str] = ()) -> list[tuple[Path, Path]]:
    """``(path, relative stem path)`` of every ``*suffix`` file below ``folder``, sorted.

    Files whose name is in ``exclude`` (e.g. ``classes.txt``) and hidden files are ignored.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"label folder {folder} does not exist; check the src path")
    found = []
    for path in folder.rglob(f"*{suffix}"):
        rel = path.relative_to(folder)
        if path.is_file() and path.name not in exclude and not any(p.startswith(".") for p in rel.parts):
            found.append((path, rel.with_suffix("")))
    return sorted(found, key=lambda item: item[1].as_posix())


# ---------------------------------------------------------------------------------------- images
class ImageIndex:
    """Finds the image of a label file by its relative stem below ``image_dir``.

    ``find("seq/000001")`` tries ``image_dir/seq/000001.<suffix>`` first, then any image whose file
    stem is ``000001`` when exactly one such image exists (labels in sub-folders with flat images,
    or the reverse). When one stem has several image files the suffix earliest in ``IMAGE_SUFFIXES``
    wins (png first).
    """

    def __init__(self, image_dir: Path | None):
        self.image_dir = Path(image_dir) if image_dir is not None else None
        self.by_rel: dict[str, Path] = {}
        self.by_name: dict[str, Path | None] = {}
        if self.image_dir is not None and self.image_dir.is_dir():
            self._scan()

    def _scan(self) -> None:
        rank = {s: i for i, s in enumerate(IMAGE_SUFFIXES)}
        for root, dirs, files in os.walk(self.image_dir):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in files:
                suffix = os.path.splitext(name)[1].lower()
                if suffix not in rank:
                    continue
                path = Path(root) / name
                rel = path.relative_to(self.image_dir).with_suffix("").as_posix()
                old = self.by_rel.get(rel)
                if old is None or rank[suffix] < rank[old.suffix.lower()]:
                    self.by_rel[rel] = path
        for rel, path in self.by_rel.items():
            stem = rel.rsplit("/", 1)[-1]
            self.by_name[stem] = None if stem in self.by_name else path  # None: ambiguous

    def find(self, rel_stem: Path) -> Path | None:
        """Image path for a label's relative stem, or None."""
        rel = Path(rel_stem).as_posix()
        return self.by_rel.get(rel) or self.by_name.get(rel.rsplit("/", 1)[-1])

    def file_name(self, path: Path) -> str:
        """``path`` relative to the image folder (the manifest ``file_name``)."""
        return path.relative_to(self.image_dir).as_posix()


def _size_or_none(path: Path | None) -> tuple[int, int] | None:
    if path is None or not path.is_file():
        return None
    try:
        return read_image_size(path)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return None


def read_sizes(paths: Sequence[Path | None], workers: int = 8) -> list[tuple[int, int] | None]:
    """``(height, width)`` of each image from its header; None where missing or unreadable."""
    if len(paths) < 16:
        return [_size_or_none(p) for p in paths]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_size_or_none, paths))


def image_problem(path: Path | None) -> str:
    """Why :func:`read_sizes` returned None for ``path``."""
    return "image file missing" if path is None or not path.is_file() else "image file unreadable"


def parse_image_size(value: Any, option: str = "image_size") -> tuple[int, int] | None:
    """Validate an ``(height, width)`` option (None passes through)."""
    if value is None:
        return None
    try:
        height, width = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{option} must be (height, width), got {value!r}") from None
    if height <= 0 or width <= 0:
        raise ValueError(f"{option} must be positive, got {value!r}")
    return height, width


# -------------------------------------------------------------------------------------- assembler
def _select(values: Sequence | np.ndarray | None, idx: np.ndarray) -> list | None:
    if values is None:
        return None
    return [values[i] for i in idx.tolist()]


class ManifestAssembler:
    """Collects the images and objects of a reader into a :class:`Manifest` and a report.

    Boxes are sanitised per image with :func:`sanitize_boxes` (out-of-image boxes clipped,
    degenerate ones dropped, both counted). With ``skip_empty`` an image left without any object is
    skipped (and counted) instead of kept empty.
    """

    def __init__(
        self,
        categories: Sequence[dict],
        source: str | os.PathLike,
        fmt: str,
        skip_empty: bool = False,
        report: ConversionReport | None = None,
    ):
        self.builder = ManifestBuilder(categories=list(categories), info={"source_format": fmt})
        self.source = str(source)
        self.fmt = fmt
        self.skip_empty = bool(skip_empty)
        self.report = report if report is not None else ConversionReport()

    def add_image(
        self,
        file_name: str,
        height: int,
        width: int,
        boxes: np.ndarray,
        class_ids: Sequence[int],
        occluded: Sequence[int | None] | None = None,
        truncated: Sequence[float | None] | None = None,
        scores: Sequence[float | None] | None = None,
        extras: Sequence[dict] | None = None,
        attrs: Mapping[str, Any] | None = None,
        image_id: int | None = None,
        where: str | None = None,
    ) -> int | None:
        """Add one image and its objects (boxes ``[N,4]`` ``[ymin, xmin, ymax, xmax]`` pixels).

        ``extras`` are per-object dicts merged into the annotations (``area`` is kept only for boxes
        that were not clipped). Returns the image id, or None when the image was skipped.
        """
        rel = check_file_name(file_name, where or self.source)
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        class_ids = np.asarray(class_ids, dtype=np.int64).reshape(-1)
        clipped, keep, rep = sanitize_boxes(boxes, height, width)
        self.report.clip("box outside the image or inverted", rep.clipped)
        self.report.drop("degenerate box (under 1 px after clipping, or not finite)", rep.dropped)
        idx = np.flatnonzero(keep)
        if self.skip_empty and idx.size == 0:
            self.report.skip("no object of the kept classes")
            return None
        img_id = self.builder.add_image(rel.as_posix(), height, width, image_id=image_id, **dict(attrs or {}))
        start = len(self.builder.annotations)
        self.builder.add_objects(
            img_id, clipped, class_ids[idx], _select(occluded, idx), _select(truncated, idx), _select(scores, idx)
        )
        if extras is not None:
            changed = np.any(np.abs(clipped - boxes[idx]) > 1e-9, axis=1)
            for k, i in enumerate(idx.tolist()):
                extra = {key: val for key, val in extras[i].items() if not (key == "area" and changed[k])}
                self.builder.annotations[start + k].update(extra)
        return img_id

    def build(self, image_root: str | os.PathLike | None) -> tuple[Manifest, ConversionReport]:
        """The manifest, with the report's image/object counts filled in and logged once."""
        manifest = self.builder.build(image_root=image_root, source=self.source, sanitize=True)
        extra = manifest.sanitize_report
        self.report.clip("box outside the image (manifest check)", extra.clipped)
        self.report.drop("degenerate box (manifest check)", extra.dropped)
        self.report.images = len(manifest)
        self.report.objects = manifest.num_annotations
        self.report.log(f"read {self.fmt} {self.source}")
        return manifest, self.report


# ---------------------------------------------------------------------------------------- writers
@contextlib.contextmanager
def output_dir(dst: str | os.PathLike, overwrite: bool, fmt: str) -> Iterator[Path]:
    """Temporary folder that replaces ``dst`` as a whole on success.

    An existing non-empty ``dst`` is only replaced with ``overwrite=True`` (it would be deleted).
    """
    dst = Path(dst)
    if dst.exists() and not dst.is_dir():
        raise DatasetError(f"{fmt} output {dst} exists and is not a folder; choose another dst")
    if dst.is_dir() and any(dst.iterdir()) and not overwrite:
        raise DatasetError(
            f"{fmt} output folder {dst} is not empty; pass overwrite=True to replace it as a whole "
            f"(its current content is deleted) or choose another dst"
        )
    with atomic_dir(dst) as tmp:
        yield tmp


def copy_images(manifest: Manifest, dst_dir: Path) -> int:
    """Copy every image of ``manifest`` to ``dst_dir/<file_name>``; returns the number copied.

    Raises :class:`DatasetError` listing the first missing images (nothing is written then, since
    writers call this inside their temporary output).
    """
    if manifest.image_root is None:
        raise DatasetError("copy_images=True needs a manifest with an image root; set image_dir when reading")
    missing = []
    for img in manifest.images:
        src = manifest.image_path(img["id"])
        if not src.is_file():
            missing.append(str(src))
            continue
        target = dst_dir / check_file_name(img["file_name"], manifest.source)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    if missing:
        raise DatasetError(
            f"copy_images: {len(missing)} image files missing (first: {missing[:3]}); fix the image root "
            f"or write without copy_images"
        )
    return len(manifest.images)


def copy_images_beside(manifest: Manifest, folder: Path, overwrite: bool, fmt: str) -> Path:
    """Copy the images into ``folder`` (for single-file formats), replacing it as a whole.

    Nothing is copied when ``folder`` already is the manifest's image root. A non-empty ``folder``
    is only replaced with ``overwrite=True``.
    """
    folder = Path(folder)
    if manifest.image_root is not None and folder.resolve() == Path(manifest.image_root).resolve():
        return folder
    with output_dir(folder, overwrite, f"{fmt} images") as tmp:
        copy_images(manifest, tmp)
    return folder


def objects_of(manifest: Manifest, image_id: int):
    """Objects of one image sorted by annotation id (stable output order)."""
    objs = manifest.objects(image_id)
    order = np.argsort(objs.ann_ids, kind="stable")
    return objs, order


def has_scores(manifest: Manifest) -> bool:
    """True when any annotation carries a ``score``."""
    return any(ann.get("score") is not None for ann in manifest.annotations)


def writer_report(manifest: Manifest, fmt: str, dst: Path) -> ConversionReport:
    """Report of a writer that wrote everything of ``manifest`` (logged once)."""
    report = ConversionReport(images=len(manifest), objects=manifest.num_annotations)
    report.log(f"wrote {fmt} {dst}")
    return report
