"""Multi-level anchor grid for EfficientDet heads.

Anchors are ``[ymin, xmin, ymax, xmax]`` float32 in model-input pixels. Order (must match the head's
``[B, h, w, A*k] -> [B, h*w*A, k]`` reshape):

1. levels ``min_level..max_level`` concatenated;
2. within a level, row-major over locations ``(y, x)``;
3. within a location, ``A = num_scales * len(aspect_ratios)`` anchors, octave-major:
   ``a = octave * len(aspect_ratios) + ratio_idx``.

At level ``l`` the stride is ``s = 2**l``, centres are at ``((i + 0.5) * s, (j + 0.5) * s)``, the base size is
``anchor_scale * s * 2**(octave / num_scales)`` and an aspect ratio ``r = w / h`` gives
``w = base * sqrt(r)``, ``h = base / sqrt(r)``.
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np

from uncertainty_det.errors import UserError

__all__ = [
    "AnchorConfigError",
    "feature_sizes",
    "generate_anchors",
    "num_anchors_per_location",
]


class AnchorConfigError(UserError, ValueError):
    """Bad image size or anchor parameters (a ``ValueError`` and a :class:`UserError`)."""


def num_anchors_per_location(num_scales: int = 3, aspect_ratios: Sequence[float] = (1.0, 2.0, 0.5)) -> int:
    """Anchors per feature-map location: ``A = num_scales * len(aspect_ratios)`` (9 by default)."""
    return int(num_scales) * len(tuple(aspect_ratios))


def _as_hw(image_size) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise AnchorConfigError(
            f"image_size must be a (height, width) pair of integers, got {image_size!r}"
        ) from None
    if h <= 0 or w <= 0:
        raise AnchorConfigError(f"image_size must be positive, got (height, width) = ({h}, {w})")
    return h, w


def feature_sizes(image_size: Sequence[int], min_level: int = 3, max_level: int = 7) -> list[tuple[int, int]]:
    """Feature-map sizes ``[(h_l, w_l)]`` for levels ``min_level..max_level``.

    ``h_l`` is obtained by ``l`` repeated ceil-halvings of the input height ``H`` (same for the width), which
    equals ``ceil(H / 2**l)`` and is what a stack of stride-2 'same' convolutions/poolings produces.

    Args:
      image_size: ``(H, W)`` model-input size in pixels.
      min_level, max_level: first and last pyramid level (inclusive).

    Returns:
      list of ``(h_l, w_l)`` int tuples, one per level.
    """
    h, w = _as_hw(image_size)
    if not 0 <= int(min_level) <= int(max_level):
        raise AnchorConfigError(f"need 0 <= min_level <= max_level, got min_level={min_level}, max_level={max_level}")
    sizes = []
    for level in range(int(max_level) + 1):
        if level >= int(min_level):
            sizes.append((h, w))
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return sizes


@functools.lru_cache(maxsize=32)
def _anchors_cached(
    image_size: tuple[int, int],
    min_level: int,
    max_level: int,
    num_scales: int,
    aspect_ratios: tuple[float, ...],
    anchor_scale: float,
) -> np.ndarray:
    per_level = []
    sizes = feature_sizes(image_size, min_level, max_level)
    octaves = np.arange(num_scales, dtype=np.float64)
    ratios = np.asarray(aspect_ratios, dtype=np.float64)
    for level, (fh, fw) in zip(range(min_level, max_level + 1), sizes):
        stride = float(2**level)
        base = anchor_scale * stride * 2.0 ** (octaves / num_scales)  # [num_scales]
        # octave-major: a = octave * R + ratio_idx
        ah = (base[:, None] / np.sqrt(ratios)[None, :]).reshape(-1)  # [A]
        aw = (base[:, None] * np.sqrt(ratios)[None, :]).reshape(-1)  # [A]
        cy = (np.arange(fh, dtype=np.float64) + 0.5) * stride  # [fh]
        cx = (np.arange(fw, dtype=np.float64) + 0.5) * stride  # [fw]
        cy = cy[:, None, None]
        cx = cx[None, :, None]
        ah = ah[None, None, :]
        aw = aw[None, None, :]
        shape = (fh, fw, ah.shape[-1])
        boxes = np.stack(
            [
                np.broadcast_to(cy - ah / 2, shape),
                np.broadcast_to(cx - aw / 2, shape),
                np.broadcast_to(cy + ah / 2, shape),
                np.broadcast_to(cx + aw / 2, shape),
            ],
            axis=-1,
        )  # [fh, fw, A, 4]
        per_level.append(boxes.reshape(-1, 4))
    out = np.concatenate(per_level, axis=0).astype(np.float32)
    out.setflags(write=False)  # shared by the cache: callers must copy before editing
    return out


def generate_anchors(
    image_size: Sequence[int],
    min_level: int = 3,
    max_level: int = 7,
    num_scales: int = 3,
    aspect_ratios: Sequence[float] = (1.0, 2.0, 0.5),
    anchor_scale: float = 4.0,
) -> np.ndarray:
    """All anchors for a model input of ``image_size``.

    Args:
      image_size: ``(H, W)`` model-input size in pixels; both must be divisible by ``2**max_level``.
      min_level, max_level: pyramid levels (inclusive), strides ``2**l``.
      num_scales: octave scales per location; octave ``o`` multiplies the base size by ``2**(o / num_scales)``.
      aspect_ratios: width/height ratios.
      anchor_scale: base anchor size in units of the stride.

    Returns:
      ``[N, 4]`` float32 ``[ymin, xmin, ymax, xmax]`` in model-input pixels,
      ``N = sum_l h_l * w_l * A``. The array is cached per argument tuple and read-only; copy it to edit.

    Raises:
      AnchorConfigError (a ValueError): bad size or parameters, e.g. a size not divisible by ``2**max_level``.
    """
    h, w = _as_hw(image_size)
    min_level, max_level, num_scales = int(min_level), int(max_level), int(num_scales)
    ratios = tuple(float(r) for r in aspect_ratios)
    if not 0 <= min_level <= max_level:
        raise AnchorConfigError(f"need 0 <= min_level <= max_level, got min_level={min_level}, max_level={max_level}")
    if num_scales < 1:
        raise AnchorConfigError(f"num_scales must be >= 1, got {num_scales}")
    if not ratios or any(not (r > 0 and math.isfinite(r)) for r in ratios):
        raise AnchorConfigError(f"aspect_ratios must be a non-empty list of positive numbers, got {aspect_ratios!r}")
    if not (float(anchor_scale) > 0 and math.isfinite(float(anchor_scale))):
        raise AnchorConfigError(f"anchor_scale must be positive, got {anchor_scale!r}")
    div = 2**max_level
    if h % div or w % div:
        fix_h, fix_w = math.ceil(h / div) * div, math.ceil(w / div) * div
        raise AnchorConfigError(
            f"image_size (height, width) = ({h}, {w}) is not divisible by 2**max_level = {div}; "
            f"use a model-input size that is a multiple of {div}, e.g. ({fix_h}, {fix_w}) "
            f"(images are resized and padded to it), or lower max_level"
        )
    return _anchors_cached((h, w), min_level, max_level, num_scales, ratios, float(anchor_scale))
