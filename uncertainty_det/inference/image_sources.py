"""Where inference images come from: a folder, a manifest split of a dataset, or a list file.

Each source yields :class:`ImageItem` triples ``(image_id, path, file_name)``:

* ``image_id``: folder source - the position of the file in the sorted folder listing (0-based, before
  ``first``/``last`` are applied, so ids are stable across ranges); split source - the manifest's image id;
  list source - the line number (1-based) in the list file.
* ``path``: the file to read.
* ``file_name``: the name the outputs are keyed by (``json/<stem>.json``, drawn images, the Detections
  table): relative to the folder / the dataset's image root / the list file's folder. It is always a
  relative path without ``..`` (:func:`uncertainty_det.io_utils.safe_relative_path`), so outputs named
  after it cannot escape their output folder; an unsafe name is an :class:`ImageSourceError`.

Missing and unreadable (corrupt) files are skipped with a warning and counted in the
:class:`ImageSelection`; :func:`iter_batches` skips (and reports) files that fail to decode later.

Folder ranges fix the reference's off-by-one: ``first`` and ``last`` are both **inclusive** indices into the
sorted listing, so ``first=0, last=None`` is every image, including the last one.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from ..data.images import UNREADABLE_IMAGE_ERRORS, list_images, load_rgb, read_image_size, scan_images
from ..errors import UserError
from ..io_utils import safe_relative_path

log = logging.getLogger(__name__)

__all__ = [
    "SOURCES",
    "ImageItem",
    "ImageSelection",
    "ImageSourceError",
    "images_from_folder",
    "images_from_list",
    "images_from_manifest",
    "iter_batches",
    "unique_stems",
]

SOURCES = ("folder", "split", "list")


class ImageSourceError(UserError, ValueError):
    """Bad image source: missing folder or list file, empty range, unsafe file name."""


@dataclass(frozen=True)
class ImageItem:
    """One input image: its id, the file to read, and the (safe, relative) name outputs are keyed by."""

    image_id: int
    path: Path
    file_name: str


@dataclass
class ImageSelection:
    """The readable images of a source, in order, and the files that were skipped.

    Attributes:
        items: readable images (headers verified).
        missing: paths (as strings) that do not exist.
        corrupt: paths that exist but do not decode as an image.
    """

    items: list[ImageItem] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        """Number of skipped files (missing + corrupt)."""
        return len(self.missing) + len(self.corrupt)

    def __len__(self) -> int:
        return len(self.items)


def _safe_name(name: str, where: str) -> str:
    try:
        return safe_relative_path(name).as_posix()
    except ValueError as exc:
        raise ImageSourceError(f"{where}: {exc}") from None


def _check(candidates: list[ImageItem], check: bool) -> ImageSelection:
    """Verify that every candidate exists and decodes; skip (warn, count) the others."""
    if not check:
        return ImageSelection(items=list(candidates))
    by_key = {k: item for k, item in enumerate(candidates)}
    scan = scan_images({k: item.path for k, item in by_key.items()})
    return ImageSelection(
        items=[by_key[k] for k in scan.ok],
        missing=[str(by_key[k].path) for k in scan.missing],
        corrupt=[str(by_key[k].path) for k in scan.corrupt],
    )


def images_from_folder(folder: str | os.PathLike, first: int = 0, last: int | None = None,
                       check: bool = True) -> ImageSelection:
    """Images directly in ``folder`` (sorted by name), the inclusive index range ``[first, last]``.

    Args:
        folder: the folder (image suffixes of :data:`uncertainty_det.data.images.IMAGE_SUFFIXES`).
        first: index of the first image (0-based, inclusive).
        last: index of the last image (inclusive); ``None`` or beyond the end = the last image.
        check: verify each file decodes (unreadable ones are skipped and counted).

    Raises:
        ImageSourceError: the folder does not exist, has no images, or the range is empty/negative.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageSourceError(f"image folder {folder} does not exist; set folder=<path to images>")
    files = list_images(folder)
    if not files:
        raise ImageSourceError(f"image folder {folder} contains no images (png, jpg, bmp, gif, tif, webp)")
    first = int(first or 0)
    n = len(files)
    stop = n - 1 if last is None else min(int(last), n - 1)
    if first < 0 or (last is not None and int(last) < 0):
        raise ImageSourceError(f"first={first} and last={last} must be >= 0 (0-based indices into the sorted folder)")
    if first > stop:
        raise ImageSourceError(
            f"no images selected: first={first}, last={last} but {folder} has {n} images (indices 0..{n - 1}, "
            "both ends inclusive)")
    candidates = [ImageItem(i, files[i], _safe_name(files[i].name, f"image folder {folder}"))
                  for i in range(first, stop + 1)]
    return _check(candidates, check)


def images_from_list(list_file: str | os.PathLike, check: bool = True) -> ImageSelection:
    """Images named in a text file, one path per line, relative to the list file's folder.

    Blank lines and lines starting with ``#`` are ignored. Paths must be relative without ``..``
    (they also name the outputs). Image ids are the 1-based line numbers.

    Raises:
        ImageSourceError: the list file is missing, names no image, or has an unsafe line (file and
        line number in the message).
    """
    list_file = Path(list_file)
    if not list_file.is_file():
        raise ImageSourceError(
            f"list file {list_file} does not exist; set list_file=<text file, one image path per line>")
    base = list_file.parent
    candidates = []
    for lineno, line in enumerate(list_file.read_text(encoding="utf-8").splitlines(), start=1):
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        rel = _safe_name(name, f"{list_file} line {lineno}")
        candidates.append(ImageItem(lineno, base / rel, rel))
    if not candidates:
        raise ImageSourceError(f"list file {list_file} names no images")
    return _check(candidates, check)


def images_from_manifest(manifest, image_ids: Sequence[int] | None = None, check: bool = True) -> ImageSelection:
    """The images of a dataset split (:class:`uncertainty_det.data.manifest.Manifest`), in manifest order.

    Args:
        manifest: the split's manifest.
        image_ids: a subset (in this order); ``None`` = all images.
        check: verify each file decodes.

    Raises:
        ImageSourceError: an unsafe ``file_name`` in the manifest, or an empty split.
    """
    ids = list(manifest.image_ids if image_ids is None else image_ids)
    if not ids:
        raise ImageSourceError(f"manifest {getattr(manifest, 'source', '?')} has no images")
    candidates = []
    for image_id in ids:
        name = _safe_name(str(manifest.image(image_id)["file_name"]),
                          f"manifest {getattr(manifest, 'source', '?')} image {image_id}")
        candidates.append(ImageItem(int(image_id), Path(manifest.image_path(image_id)), name))
    return _check(candidates, check)


def unique_stems(file_names: Sequence[str]) -> list[str]:
    """Output stems (relative POSIX paths without suffix) for file names, unique within the list.

    ``a/b.png`` -> ``a/b``; when two names share a stem (``x.png``, ``x.jpg``) the later ones get
    the suffix in their stem (``x_jpg``), then a counter if still taken. Names must be safe
    (see :func:`uncertainty_det.io_utils.safe_relative_path`).
    """
    taken: set[str] = set()
    out = []
    for name in file_names:
        rel = safe_relative_path(name)
        stem = rel.with_suffix("").as_posix()
        if stem in taken:
            stem = f"{stem}_{rel.suffix.lstrip('.')}" if rel.suffix else stem
        base, k = stem, 1
        while stem in taken:
            stem = f"{base}_{k}"
            k += 1
        taken.add(stem)
        out.append(stem)
    return out


def iter_batches(
    items: Sequence[ImageItem],
    batch_size: int,
    on_error: Callable[[ImageItem, Exception], None] | None = None,
) -> Iterator[tuple[list[ImageItem], np.ndarray]]:
    """Load images in batches of equally sized images.

    Images are grouped by ``(H, W)`` (read from the file headers) in order of first appearance, and each
    group is cut into batches of at most ``batch_size``. Grayscale, palette and RGBA files are converted
    to RGB. A file that fails to load is skipped: ``on_error(item, exc)`` is called (default: a warning).

    Yields:
        ``(items, images)`` with ``images`` uint8 ``[b,H,W,3]`` and ``len(items) == b``.
    """
    batch_size = int(batch_size)
    if batch_size < 1:
        raise ImageSourceError(f"batch_size must be >= 1, got {batch_size}")

    def fail(item: ImageItem, exc: Exception) -> None:
        if on_error is not None:
            on_error(item, exc)
        else:
            log.warning("skipping unreadable image %s: %s", item.path, exc)

    groups: dict[tuple[int, int], list[ImageItem]] = {}
    for item in items:
        try:
            size = read_image_size(item.path)
        except UNREADABLE_IMAGE_ERRORS as exc:
            fail(item, exc)
            continue
        groups.setdefault(size, []).append(item)
    for size, group in groups.items():
        for start in range(0, len(group), batch_size):
            chunk, arrays = [], []
            for item in group[start:start + batch_size]:
                try:
                    arr = load_rgb(item.path)
                except UNREADABLE_IMAGE_ERRORS as exc:
                    fail(item, exc)
                    continue
                if arr.shape[:2] != size:        # header and pixels disagree (e.g. EXIF-free odd files)
                    fail(item, ValueError(f"decoded size {arr.shape[:2]} differs from header size {size}"))
                    continue
                chunk.append(item)
                arrays.append(arr)
            if chunk:
                yield chunk, np.stack(arrays)
