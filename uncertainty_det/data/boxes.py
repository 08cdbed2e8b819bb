"""Box conventions and sanitising.

Inside the library boxes are ``[ymin, xmin, ymax, xmax]`` in original-image pixels (float);
COCO ``[x, y, w, h]`` appears only at the COCO boundary.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def xywh_to_yxyx(xywh: np.ndarray) -> np.ndarray:
    """``[N,4]`` COCO ``[x, y, w, h]`` -> ``[N,4]`` ``[ymin, xmin, ymax, xmax]`` (pixels)."""
    xywh = np.asarray(xywh, dtype=np.float64).reshape(-1, 4)
    x, y, w, h = xywh.T
    return np.stack([y, x, y + h, x + w], axis=1)


def yxyx_to_xywh(yxyx: np.ndarray) -> np.ndarray:
    """``[N,4]`` ``[ymin, xmin, ymax, xmax]`` -> ``[N,4]`` COCO ``[x, y, w, h]`` (pixels)."""
    yxyx = np.asarray(yxyx, dtype=np.float64).reshape(-1, 4)
    ymin, xmin, ymax, xmax = yxyx.T
    return np.stack([xmin, ymin, xmax - xmin, ymax - ymin], axis=1)


@dataclass(frozen=True)
class SanitizeReport:
    """Counts of what :func:`sanitize_boxes` changed."""

    clipped: int = 0
    dropped: int = 0

    def __add__(self, other: "SanitizeReport") -> "SanitizeReport":
        return SanitizeReport(self.clipped + other.clipped, self.dropped + other.dropped)


def sanitize_boxes(
    boxes: np.ndarray, height: float, width: float, min_size: float = 1.0
) -> tuple[np.ndarray, np.ndarray, SanitizeReport]:
    """Clip boxes to the image and drop degenerate ones.

    Args:
      boxes: ``[N,4]`` ``[ymin, xmin, ymax, xmax]`` pixels; may be out of the image or inverted.
      height, width: image size in pixels.
      min_size: boxes whose clipped height or width is below this (pixels) are dropped.

    Returns:
      ``(clipped_boxes [K,4], keep [N] bool, report)``; non-finite boxes are dropped.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    finite = np.all(np.isfinite(boxes), axis=1)
    safe = np.where(finite[:, None], boxes, 0.0)
    ymin = np.minimum(safe[:, 0], safe[:, 2])
    ymax = np.maximum(safe[:, 0], safe[:, 2])
    xmin = np.minimum(safe[:, 1], safe[:, 3])
    xmax = np.maximum(safe[:, 1], safe[:, 3])
    ordered = np.stack([ymin, xmin, ymax, xmax], axis=1)
    clipped = np.stack(
        [np.clip(ymin, 0, height), np.clip(xmin, 0, width), np.clip(ymax, 0, height), np.clip(xmax, 0, width)],
        axis=1,
    )
    keep = finite & ((clipped[:, 2] - clipped[:, 0]) >= min_size) & ((clipped[:, 3] - clipped[:, 1]) >= min_size)
    changed = np.any(np.abs(clipped - safe) > 1e-9, axis=1) | np.any(np.abs(ordered - safe) > 1e-9, axis=1)
    report = SanitizeReport(clipped=int(np.sum(changed & keep)), dropped=int(np.sum(~keep)))
    return clipped[keep], keep, report
