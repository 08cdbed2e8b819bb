"""Image file helpers: size from the header, RGB loading, and scanning for missing/corrupt files."""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


#: What reading a corrupt or unreadable image can raise (PIL: OSError incl. UnidentifiedImageError, ValueError,
#: and SyntaxError for some broken PNG chunks); loops that skip and count bad images catch exactly these.
UNREADABLE_IMAGE_ERRORS = (OSError, ValueError, SyntaxError)


def read_image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(height, width)`` of an image, read from its header only."""
    with Image.open(path) as img:
        width, height = img.size
    return int(height), int(width)


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """Load an image as ``[H,W,3]`` uint8 RGB (grayscale, palette and RGBA are converted)."""
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly in ``folder``, sorted by name."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


@dataclass
class ImageScan:
    """Result of :func:`scan_images`: ids whose files decode, and the ids that do not."""

    ok: list[int] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)
    corrupt: list[int] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        return len(self.missing) + len(self.corrupt)


def _check_one(path: Path) -> str:
    if not path.is_file():
        return "missing"
    try:
        with Image.open(path) as img:
            img.verify()
        return "ok"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return "corrupt"


def scan_images(paths_by_id: dict[int, Path] | Iterable[tuple[int, Path]], workers: int = 8) -> ImageScan:
    """Check that every image exists and decodes; warn about and count the others.

    Args:
      paths_by_id: mapping (or pairs) image id -> file path.
    Returns:
      :class:`ImageScan` with ids in input order.
    """
    items = list(paths_by_id.items() if isinstance(paths_by_id, dict) else paths_by_id)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        states = list(pool.map(lambda item: _check_one(Path(item[1])), items))
    scan = ImageScan()
    for (img_id, path), state in zip(items, states):
        getattr(scan, state).append(img_id)
        if state != "ok":
            log.warning("skipping %s image %s (id %s)", state, path, img_id)
    if scan.skipped:
        log.warning(
            "%d of %d images skipped (%d missing, %d corrupt)",
            scan.skipped, len(items), len(scan.missing), len(scan.corrupt),
        )
    return scan
