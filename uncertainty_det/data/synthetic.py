"""The embedded default dataset: seeded RGB images of labelled shapes on textured backgrounds.

Scenes hold 1..N shapes of several classes (imbalanced, one rare), sized from ~8 px to half the image,
sometimes overlapping (occlusion), sometimes cut by the border (truncation), among unlabelled distractors
(clutter) and pixel noise. Options add label noise (labels only, the image shows the truth), a different
background family (``newbg``) and a corruption applied to every image (``shift``) for dataset-shift studies.

Layout written by :func:`generate_synthetic`::

    root/images/<split>/<split>_000001.png ...
    root/annotations/<split>.json      (COCO manifest, info.image_root = "../images")
    root/dataset_info.json             (config, generator version, counts; no timestamps)

Everything is a deterministic function of the config: the same config gives byte-identical files. Every
image has its own random streams derived from ``(seed, split name, image index, stream)`` with
``numpy.random.SeedSequence`` (the split name is hashed with SHA-256, not Python's ``hash``), so images do
not depend on the worker that renders them, and the streams for the backdrop, the scene, the label noise
and the shift corruption are independent: turning label noise or a shift on, or switching the background
family, leaves the scene geometry and the annotations unchanged.

Boxes are ``[ymin, xmin, ymax, xmax]`` pixels with integer edges: the extent of every pixel the object
covers inside the image, including the parts hidden by objects drawn later (the GT box is the object's box,
not its visible part) and cut at the image border. Class ids are 1-based in the order of ``classes``.
Annotations carry ``occluded`` (0: >= 90 % visible, 1: >= 50 %, 2: less; objects under ``min_visible`` are
not labelled) and ``truncated`` (fraction of the object outside the image).
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import multiprocessing
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

from ..io_utils import atomic_dir, atomic_write_json
from ..containers import to_plain
from .corruptions import MAX_SEVERITY, apply_corruption, fractal_noise, validate_corruption
from .errors import DatasetError
from .manifest import Manifest, ManifestBuilder, categories_from_names

logger = logging.getLogger(__name__)

#: Bump when the rendering changes, so :func:`ensure_synthetic` regenerates old datasets.
GENERATOR_VERSION = 1

DEFAULT_CLASSES = ("circle", "square", "triangle", "cross", "star", "ring")
DEFAULT_CLASS_WEIGHTS = (0.26, 0.22, 0.20, 0.16, 0.12, 0.04)
BACKGROUNDS = ("gradient", "newbg", "plain")
IMAGE_FORMATS = {"png": ".png", "jpg": ".jpg"}
LABEL_NOISE_KEYS = ("box_jitter", "class_flip")
STREAMS = {"scene": 0, "labels": 1, "shift": 2, "background": 3}

MIN_OBJECT_PX = 4.0  # smallest rendered object diameter (pixels)
MIN_CONTRAST = 60.0  # minimal RGB distance between an object's colour and its local background
PLACEMENT_TRIES = 30  # candidate positions tried for a non-overlapping object
PLACEMENT_RETRIES = 3  # new positions tried for an object that falls too far outside the image


# ============================================================================ config
@dataclass
class SyntheticConfig:
    """Generator settings (one-to-one with the ``generator:`` section of ``conf/dataset/synthetic.yaml``).

    Attributes:
      seed: base seed (>= 0); per-split and per-image seeds derive from it.
      image_size: ``(height, width)`` in pixels.
      num_images: images per split, e.g. ``{"train": 1500, "val": 300, "test": 300}``.
      classes: shape class names (see :data:`SHAPES`), class id = position + 1.
      class_weights: relative class frequencies (normalised); ``None`` = uniform.
      objects_per_image: ``(min, max)`` number of shapes attempted per image (inclusive).
      size_range: ``(min, max)`` object diameter as a fraction of the short image side (log-uniform).
      occlusion: probability that a new object is placed overlapping an earlier one (drawn on top of it);
        otherwise it is placed where its box overlaps no earlier object's box (or dropped if none is free).
      clutter: ``(min, max)`` number of unlabelled distractors (ellipses, bars, polylines), half of them in
        object-like contrasting colours, half camouflaged; most behind the objects, some in front.
      noise_std: standard deviation of the Gaussian pixel noise (grey levels).
      class_colour: probability that a labelled object is painted in its class's colour family (hue band of
        width 1/(2C) centred at hue (k - 1) / C for class k, saturated, still contrasting with its background)
        instead of a free contrasting colour. 0: colour says nothing about the class (shape only); between 0
        and 1 the other objects' free colours make colour an unreliable cue that shape must confirm.
      label_noise: ``{"box_jitter": f, "class_flip": p}``: box coordinates jittered by N(0, f * box side),
        classes replaced by another class with probability p. Labels only; the image shows the truth.
      background: ``"gradient"`` (smooth gradients + low-frequency texture, muted palette), ``"newbg"``
        (stripes / checkerboards / mosaics in a saturated palette) or ``"plain"`` (one flat colour).
      shift: ``{"name": <corruption>, "severity": 1..10}`` applied to every rendered image, or ``None``.
      min_visible: objects with a smaller visible fraction are not labelled (counted as hidden).
      max_truncated: objects with a larger fraction outside the image are not drawn (counted).
      image_format: ``"png"`` (lossless, default) or ``"jpg"``.
    """

    seed: int = 0
    image_size: tuple[int, int] = (256, 256)
    num_images: dict[str, int] = field(default_factory=lambda: {"train": 1500, "val": 300, "test": 300})
    classes: tuple[str, ...] = DEFAULT_CLASSES
    class_weights: tuple[float, ...] | None = DEFAULT_CLASS_WEIGHTS
    objects_per_image: tuple[int, int] = (1, 6)
    size_range: tuple[float, float] = (0.1, 0.5)
    occlusion: float = 0.2
    clutter: tuple[int, int] = (2, 8)
    noise_std: float = 5.0
    class_colour: float = 1.0
    label_noise: dict[str, float] = field(default_factory=lambda: {"box_jitter": 0.0, "class_flip": 0.0})
    background: str = "gradient"
    shift: dict[str, Any] | None = None
    min_visible: float = 0.5
    max_truncated: float = 0.6
    image_format: str = "png"

    def __post_init__(self) -> None:
        self.validate()
        self.label_noise = {k: float(self.label_noise.get(k, 0.0)) for k in LABEL_NOISE_KEYS}

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field and the fix."""

        def bad(name: str, problem: str) -> ValueError:
            return ValueError(f"synthetic generator config: {name} {problem}")

        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise bad("seed", f"must be an integer >= 0, got {self.seed!r}")
        if len(self.image_size) != 2 or min(self.image_size) < 16:
            raise bad("image_size", f"must be (height, width) with both >= 16 pixels, got {self.image_size!r}")
        if not isinstance(self.num_images, Mapping) or not self.num_images:
            raise bad("num_images", f"must map split names to image counts, got {self.num_images!r}")
        for split, count in self.num_images.items():
            if not isinstance(split, str) or not split or "/" in split or split.startswith("."):
                raise bad("num_images", f"has an invalid split name {split!r}")
            if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
                raise bad("num_images", f"[{split!r}] must be an integer >= 0, got {count!r}")
        if not self.classes or len(set(self.classes)) != len(self.classes):
            raise bad("classes", f"must be a non-empty list of distinct names, got {list(self.classes)}")
        unknown = [c for c in self.classes if c not in SHAPES]
        if unknown:
            raise bad("classes", f"has unknown shapes {unknown}; available: {', '.join(SHAPES)}")
        if self.class_weights is not None:
            w = np.asarray(self.class_weights, dtype=np.float64)
            if w.shape != (len(self.classes),) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
                raise bad(
                    "class_weights",
                    f"must be {len(self.classes)} non-negative numbers (one per class) or null, "
                    f"got {self.class_weights!r}",
                )
        lo, hi = self.objects_per_image
        if not (0 <= lo <= hi):
            raise bad("objects_per_image", f"must be (min, max) with 0 <= min <= max, got {self.objects_per_image!r}")
        lo, hi = self.size_range
        if not (0 < lo <= hi <= 1.5):
            raise bad("size_range", f"must be (min, max) fractions with 0 < min <= max <= 1.5, got {self.size_range!r}")
        if not 0 <= self.occlusion <= 1:
            raise bad("occlusion", f"must be a probability in [0, 1], got {self.occlusion!r}")
        lo, hi = self.clutter
        if not (0 <= lo <= hi):
            raise bad("clutter", f"must be (min, max) with 0 <= min <= max, got {self.clutter!r}")
        if not self.noise_std >= 0:
            raise bad("noise_std", f"must be >= 0, got {self.noise_std!r}")
        if not 0 <= self.class_colour <= 1:
            raise bad("class_colour", f"must be a probability in [0, 1], got {self.class_colour!r}")
        if not isinstance(self.label_noise, Mapping):
            raise bad("label_noise", f"must be a mapping {{box_jitter: f, class_flip: p}}, got {self.label_noise!r}")
        extra = sorted(set(self.label_noise) - set(LABEL_NOISE_KEYS))
        if extra:
            raise bad("label_noise", f"has unknown keys {extra}; allowed: {', '.join(LABEL_NOISE_KEYS)}")
        if not self.label_noise.get("box_jitter", 0.0) >= 0:
            raise bad("label_noise.box_jitter", f"must be >= 0, got {self.label_noise.get('box_jitter')!r}")
        if not 0 <= self.label_noise.get("class_flip", 0.0) <= 1:
            raise bad("label_noise.class_flip", f"must be in [0, 1], got {self.label_noise.get('class_flip')!r}")
        if self.background not in BACKGROUNDS:
            raise bad("background", f"must be one of {', '.join(BACKGROUNDS)}, got {self.background!r}")
        if self.shift is not None:
            if not isinstance(self.shift, Mapping) or set(self.shift) != {"name", "severity"}:
                raise bad("shift", f"must be null or {{name: <corruption>, severity: 1..{MAX_SEVERITY}}}, got {self.shift!r}")
            try:
                validate_corruption(self.shift["name"], self.shift["severity"])
            except ValueError as exc:
                raise bad("shift", str(exc)) from None
        if not 0 <= self.min_visible <= 1:
            raise bad("min_visible", f"must be in [0, 1], got {self.min_visible!r}")
        if not 0 <= self.max_truncated < 1:
            raise bad("max_truncated", f"must be in [0, 1), got {self.max_truncated!r}")
        if self.image_format not in IMAGE_FORMATS:
            raise bad("image_format", f"must be one of {', '.join(IMAGE_FORMATS)}, got {self.image_format!r}")

    @property
    def weights(self) -> np.ndarray:
        """``[C]`` normalised class probabilities."""
        if self.class_weights is None:
            return np.full(len(self.classes), 1.0 / len(self.classes))
        w = np.asarray(self.class_weights, dtype=np.float64)
        return w / w.sum()


_TUPLE_FIELDS = {"image_size", "classes", "class_weights", "objects_per_image", "size_range", "clutter"}




def synthetic_config_from_dict(d: Mapping) -> SyntheticConfig:
    """Build a :class:`SyntheticConfig` from a plain mapping (e.g. the resolved ``generator:`` section).

    Lists become tuples; missing keys keep their defaults. Raises ValueError naming an unknown key (and
    listing the valid ones) or an invalid value.
    """
    data = to_plain(d)
    if not isinstance(data, dict):
        raise ValueError(f"synthetic generator config must be a mapping, got {type(d).__name__}")
    names = [f.name for f in dataclasses.fields(SyntheticConfig)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"unknown synthetic generator key(s) {unknown}; valid keys: {', '.join(names)}")
    kwargs = {}
    for key, value in data.items():
        if key in _TUPLE_FIELDS and value is not None:
            value = tuple(value)
        if key == "num_images":
            value = dict(value)
        kwargs[key] = value
    return SyntheticConfig(**kwargs)


def config_to_dict(cfg: SyntheticConfig) -> dict:
    """The config as JSON-ready plain data (tuples -> lists); inverse of :func:`synthetic_config_from_dict`."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


# ============================================================================ seeds and sampling
def _split_key(split: str) -> int:
    """A stable 63-bit integer for a split name (SHA-256, not Python's salted ``hash``)."""
    return int.from_bytes(hashlib.sha256(split.encode("utf-8")).digest()[:8], "little") >> 1


def image_seed(seed: int, split: str, index: int, stream: str = "scene") -> int:
    """Seed of one random stream of image ``index`` (1-based) of a split.

    Streams: ``background`` (the backdrop), ``scene`` (objects, distractors, colours, pixel noise),
    ``labels`` (label noise) and ``shift`` (the seed passed to :func:`corruptions.apply_corruption`). As the
    background has its own stream, ``background: newbg`` keeps the geometry and labels of the base scenes.
    """
    ss = np.random.SeedSequence([int(seed), _split_key(split), int(index), STREAMS[stream]])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def sample_classes(cfg: SyntheticConfig, n: int, rng: np.random.Generator) -> np.ndarray:
    """``[n]`` int64 class ids (1-based) drawn with probabilities ``cfg.weights``."""
    return rng.choice(len(cfg.classes), size=n, p=cfg.weights).astype(np.int64) + 1


def sample_sizes(cfg: SyntheticConfig, n: int, rng: np.random.Generator) -> np.ndarray:
    """``[n]`` float64 object diameters in pixels: log-uniform over ``size_range`` x short side, >= 4 px."""
    short = min(cfg.image_size)
    lo, hi = np.log(cfg.size_range[0] * short), np.log(cfg.size_range[1] * short)
    return np.maximum(np.exp(rng.uniform(lo, hi, n)), MIN_OBJECT_PX)


# ============================================================================ shapes
Polygon = np.ndarray  # [K, 2] float (y, x) offsets from the centre, pixels


def _regular(n: int, radius: float, theta: float) -> Polygon:
    """Regular ``n``-gon with circumradius ``radius`` rotated by ``theta`` (radians): ``[n, 2]`` (y, x)."""
    a = theta + 2 * np.pi * np.arange(n) / n
    return np.stack([radius * np.sin(a), radius * np.cos(a)], axis=1)


def _rotate(points: Polygon, theta: float) -> Polygon:
    """Rotate ``[K, 2]`` (y, x) offsets by ``theta`` radians."""
    c, s = np.cos(theta), np.sin(theta)
    y, x = points[:, 0], points[:, 1]
    return np.stack([x * s + y * c, x * c - y * s], axis=1)


def _circle(r: float, theta: float) -> list[tuple[Polygon, int]]:
    return [(_regular(64, r, 0.0), 255)]


def _ring(r: float, theta: float) -> list[tuple[Polygon, int]]:
    return [(_regular(64, r, 0.0), 255), (_regular(64, 0.55 * r, 0.0), 0)]


def _square(r: float, theta: float) -> list[tuple[Polygon, int]]:
    return [(_regular(4, r, theta + np.pi / 4), 255)]


def _triangle(r: float, theta: float) -> list[tuple[Polygon, int]]:
    return [(_regular(3, r, theta - np.pi / 2), 255)]


def _hexagon(r: float, theta: float) -> list[tuple[Polygon, int]]:
    return [(_regular(6, r, theta), 255)]


def _star(r: float, theta: float) -> list[tuple[Polygon, int]]:
    radii = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
    a = theta - np.pi / 2 + np.pi * np.arange(10) / 5
    return [(np.stack([radii * np.sin(a), radii * np.cos(a)], axis=1), 255)]


def _cross(r: float, theta: float) -> list[tuple[Polygon, int]]:
    a = 0.3 * r
    arm = np.sqrt(r * r - a * a)
    pts = np.array(
        [[-arm, -a], [-arm, a], [-a, a], [-a, arm], [a, arm], [a, a],
         [arm, a], [arm, -a], [a, -a], [a, -arm], [-a, -arm], [-a, -a]]
    )
    return [(_rotate(pts, theta), 255)]


def _diamond(r: float, theta: float) -> list[tuple[Polygon, int]]:
    pts = np.array([[-r, 0.0], [0.0, 0.55 * r], [r, 0.0], [0.0, -0.55 * r]])
    return [(_rotate(pts, theta), 255)]


#: Shape classes: name -> ``fn(radius px, rotation rad) -> [(polygon offsets [K,2] (y,x), fill 255|0)]``,
#: every vertex within ``radius`` of the centre (fill 0 cuts a hole).
SHAPES: dict[str, Callable[[float, float], list[tuple[Polygon, int]]]] = {
    "circle": _circle,
    "square": _square,
    "triangle": _triangle,
    "cross": _cross,
    "star": _star,
    "ring": _ring,
    "hexagon": _hexagon,
    "diamond": _diamond,
}


# ============================================================================ rasterising
@dataclass
class _Coverage:
    """An anti-aliased footprint: ``cov [h, w]`` float32 in [0, 1] whose top-left pixel is ``(y0, x0)``."""

    y0: int
    x0: int
    cov: np.ndarray

    def clip(self, height: int, width: int) -> tuple[tuple[slice, slice], np.ndarray] | None:
        """(image slices, the in-image part of ``cov``), or None when entirely outside."""
        h, w = self.cov.shape
        iy0, ix0 = max(self.y0, 0), max(self.x0, 0)
        iy1, ix1 = min(self.y0 + h, height), min(self.x0 + w, width)
        if iy1 <= iy0 or ix1 <= ix0:
            return None
        part = self.cov[iy0 - self.y0 : iy1 - self.y0, ix0 - self.x0 : ix1 - self.x0]
        return (slice(iy0, iy1), slice(ix0, ix1)), part


def _rasterise(
    polygons: Sequence[tuple[np.ndarray, int]],
    lines: Sequence[tuple[np.ndarray, float]] = (),
    supersample: int = 4,
) -> _Coverage:
    """Rasterise filled polygons and thick polylines (absolute (y, x) pixel coordinates) with anti-aliasing.

    Pixel ``(i, j)`` covers ``[i, i+1) x [j, j+1)``. Shapes are drawn with PIL on a ``supersample``-times
    finer local canvas, in order (fill 0 erases), and box-averaged back to pixels.

    Args:
      polygons: ``[(points [K,2] (y, x), fill 255 or 0)]``.
      lines: ``[(points [K,2] (y, x), width px)]`` drawn with fill 255.
      supersample: sub-pixels per pixel along each axis.
    Returns:
      :class:`_Coverage` spanning every drawn point.
    """
    pts = [p for p, _ in polygons] + [p for p, _ in lines]
    pad = max([w for _, w in lines], default=0.0) / 2 + 1.0
    allpts = np.concatenate(pts, axis=0)
    y0 = int(np.floor(allpts[:, 0].min() - pad))
    x0 = int(np.floor(allpts[:, 1].min() - pad))
    h = int(np.ceil(allpts[:, 0].max() + pad)) - y0 + 1
    w = int(np.ceil(allpts[:, 1].max() + pad)) - x0 + 1
    ss = supersample
    canvas = Image.new("L", (w * ss, h * ss), 0)
    draw = ImageDraw.Draw(canvas)

    def to_canvas(p: np.ndarray) -> list[tuple[float, float]]:
        xs = (p[:, 1] - x0) * ss - 0.5
        ys = (p[:, 0] - y0) * ss - 0.5
        return list(zip(xs.tolist(), ys.tolist()))

    for poly, fill in polygons:
        draw.polygon(to_canvas(poly), fill=int(fill))
    for line, width in lines:
        draw.line(to_canvas(line), fill=255, width=max(1, int(round(width * ss))), joint="curve")
    arr = np.asarray(canvas, dtype=np.uint16).reshape(h, ss, w, ss).sum(axis=(1, 3))
    return _Coverage(y0, x0, arr.astype(np.float32) / (255.0 * ss * ss))


def _supersample_for(diameter: float) -> int:
    """Sub-pixel factor: 4 for small shapes (where edges matter), 2 for large ones (speed)."""
    return 4 if diameter < 64 else 2


# ============================================================================ colours and backgrounds
def _hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """``[..., 3]`` HSV in [0, 1] -> ``[..., 3]`` RGB in [0, 255] (float)."""
    h, s, v = hsv[..., 0] * 6.0, hsv[..., 1], hsv[..., 2]
    i = np.floor(h).astype(np.int64) % 6
    f = h - np.floor(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    choices = np.stack(
        [np.stack(c, axis=-1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))], axis=0
    )
    rgb = np.take_along_axis(choices, i[None, ..., None].repeat(3, axis=-1), axis=0)[0]
    return rgb * 255.0


def _palette(rng: np.random.Generator, n: int, saturated: bool) -> np.ndarray:
    """``[n, 3]`` RGB colours: muted (s 0.05-0.45, v 0.25-0.85) or saturated (s 0.6-1, v 0.35-1)."""
    hue = rng.random(n)
    if saturated:
        sat, val = rng.uniform(0.6, 1.0, n), rng.uniform(0.35, 1.0, n)
    else:
        sat, val = rng.uniform(0.05, 0.45, n), rng.uniform(0.25, 0.85, n)
    return _hsv_to_rgb(np.stack([hue, sat, val], axis=1))


def _unit_coords(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``[H,1]`` and ``[1,W]`` (float32, pixels)."""
    ys = (np.arange(height, dtype=np.float32) + 0.5)[:, None]
    xs = (np.arange(width, dtype=np.float32) + 0.5)[None, :]
    return ys, xs


def background_gradient(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth two-colour linear gradient (muted palette, random direction) + low-frequency luminance texture.

    Returns ``[H,W,3]`` float32 in [0, 255].
    """
    c = _palette(rng, 2, saturated=False).astype(np.float32)
    angle = float(rng.uniform(0, 2 * np.pi))
    ys, xs = _unit_coords(height, width)
    proj = ys * np.float32(np.sin(angle)) + xs * np.float32(np.cos(angle))
    t = (proj - proj.min()) / np.float32(max(float(proj.max() - proj.min()), 1e-6))
    amp = np.float32(rng.uniform(10.0, 35.0))
    texture = amp * (fractal_noise(height, width, rng, base_cells=3, octaves=4, persistence=0.55) - np.float32(0.5))
    tint = _palette(rng, 1, saturated=False)[0].astype(np.float32) / np.float32(255.0) + np.float32(0.5)
    out = c[0] + t[..., None] * (c[1] - c[0]) + texture[..., None] * tint
    return np.clip(out, 0, 255, out=out)


def background_newbg(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A different background family: high-contrast stripes, checkerboards or mosaics in saturated colours.

    Returns ``[H,W,3]`` float32 in [0, 255].
    """
    c = _palette(rng, 3, saturated=True).astype(np.float32)
    ys, xs = _unit_coords(height, width)
    scale = min(height, width) / 256.0
    angle = rng.uniform(0, np.pi)
    u = ys * np.sin(angle) + xs * np.cos(angle)
    v = ys * np.cos(angle) - xs * np.sin(angle)
    kind = int(rng.integers(0, 3))
    period = rng.uniform(10.0, 40.0) * scale
    if kind == 0:  # stripes
        p = np.clip(0.5 + 3.0 * np.sin(2 * np.pi * u / period), 0, 1)
    elif kind == 1:  # checkerboard
        p = np.clip(0.5 + 3.0 * np.sin(2 * np.pi * u / period) * np.sin(2 * np.pi * v / period), 0, 1)
    else:  # mosaic of random cells
        cells = rng.random((int(height / period) + 2, int(width / period) + 2))
        iy = np.minimum((ys / period).astype(np.int64), cells.shape[0] - 1)
        ix = np.minimum((xs / period).astype(np.int64), cells.shape[1] - 1)
        p = (cells[iy, ix] > 0.5).astype(np.float32)
    p = np.broadcast_to(p, (height, width))[..., None]
    base = c[0] * (1 - p) + c[1] * p
    glow = fractal_noise(height, width, rng, base_cells=2, octaves=3)[..., None]
    return np.clip(base * (1 - 0.35 * glow) + c[2] * 0.35 * glow, 0, 255).astype(np.float32)


def background_plain(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """One flat muted colour: ``[H,W,3]`` float32 (for tests and debugging)."""
    c = _palette(rng, 1, saturated=False)[0].astype(np.float32)
    return np.broadcast_to(np.rint(c), (height, width, 3)).astype(np.float32)


BACKGROUND_FNS: dict[str, Callable[[int, int, np.random.Generator], np.ndarray]] = {
    "gradient": background_gradient,
    "newbg": background_newbg,
    "plain": background_plain,
}


def _pick_colour(rng: np.random.Generator, local: np.ndarray, camouflage: bool,
                 hue_band: tuple[float, float] | None = None) -> np.ndarray:
    """An RGB colour ``[3]``: far (>= MIN_CONTRAST) from ``local`` [3], or near it when ``camouflage``.

    ``hue_band`` ``(lo, hi)`` (fractions of the hue circle, may wrap past 1): draw a saturated colour with a
    hue in the band (the class colour family) instead of any RGB colour.
    """
    if camouflage:
        delta = rng.uniform(15.0, 40.0) * rng.choice([-1.0, 1.0], 3)
        return np.clip(local + delta, 0, 255)
    if hue_band is not None:
        hue = rng.uniform(hue_band[0], hue_band[1], 12) % 1.0
        cand = _hsv_to_rgb(np.stack([hue, rng.uniform(0.55, 1.0, 12), rng.uniform(0.45, 1.0, 12)], axis=1))
    else:
        cand = rng.uniform(0, 255, (12, 3))
    dist = np.linalg.norm(cand - local[None, :], axis=1)
    ok = np.flatnonzero(dist >= MIN_CONTRAST)
    return cand[ok[0]] if ok.size else cand[int(np.argmax(dist))]


# ============================================================================ scene
@dataclass
class _Layer:
    """One drawn item: a labelled object (``class_id >= 1``) or a distractor (``class_id == 0``)."""

    footprint: _Coverage
    class_id: int
    centre: tuple[float, float]
    radius: float
    camouflage: bool = False
    truncated: float = 0.0
    box: np.ndarray | None = None  # [4] yxyx clipped to the image
    visible: float = 1.0


@dataclass
class SyntheticSample:
    """One rendered image and its labels.

    image: ``[H,W,3]`` uint8 (after the shift corruption, if any); boxes ``[N,4]`` float64 yxyx pixels and
    class_ids ``[N]`` int64 (1-based) as written (label noise applied); true_boxes / true_class_ids: the same
    before label noise; occluded ``[N]`` int64 (0 fully visible, 1 partly, 2 largely occluded); truncated
    ``[N]`` float64 (fraction outside the image); hidden: drawn objects not labelled because less than
    ``min_visible`` of them is visible; dropped_truncated: objects not drawn because too far outside.
    """

    image: np.ndarray
    boxes: np.ndarray
    class_ids: np.ndarray
    true_boxes: np.ndarray
    true_class_ids: np.ndarray
    occluded: np.ndarray
    truncated: np.ndarray
    hidden: int = 0
    dropped_truncated: int = 0


def _overlaps(box: np.ndarray, boxes: np.ndarray, margin: float = 1.0) -> bool:
    """Whether ``box`` [4] yxyx intersects any of ``boxes`` [N,4] grown by ``margin`` pixels."""
    if boxes.shape[0] == 0:
        return False
    return bool(
        np.any(
            (box[0] < boxes[:, 2] + margin)
            & (box[2] + margin > boxes[:, 0])
            & (box[1] < boxes[:, 3] + margin)
            & (box[3] + margin > boxes[:, 1])
        )
    )


def _place(
    cfg: SyntheticConfig, rng: np.random.Generator, radius: float, placed: list[_Layer]
) -> tuple[float, float] | None:
    """Centre (y, x) of a new object of ``radius`` px, or None when no free spot was found.

    With probability ``cfg.occlusion`` (and an earlier object present) it overlaps a random earlier object;
    otherwise its circumscribed box must not overlap any earlier object's circumscribed box.
    """
    h, w = cfg.image_size
    if placed and rng.random() < cfg.occlusion:
        other = placed[int(rng.integers(len(placed)))]
        phi = rng.uniform(0, 2 * np.pi)
        dist = rng.uniform(0.35, 0.85) * (radius + other.radius)
        return other.centre[0] + dist * np.sin(phi), other.centre[1] + dist * np.cos(phi)
    cands = np.stack([rng.uniform(0, h, PLACEMENT_TRIES), rng.uniform(0, w, PLACEMENT_TRIES)], axis=1)
    taken = np.array(
        [[p.centre[0] - p.radius, p.centre[1] - p.radius, p.centre[0] + p.radius, p.centre[1] + p.radius] for p in placed]
    ).reshape(-1, 4)
    for cy, cx in cands:
        if not _overlaps(np.array([cy - radius, cx - radius, cy + radius, cx + radius]), taken):
            return float(cy), float(cx)
    return None


def _object_layer(
    cfg: SyntheticConfig, class_id: int, size: float, theta: float, centre: tuple[float, float]
) -> _Layer | None:
    """Rasterise one object; None when more than ``max_truncated`` of it (or all but < 2 px) is outside.

    The box spans the object's pixels inside the image whether or not later layers hide them (amodal with
    respect to occlusion, cut at the image border); ``truncated`` is the coverage fraction outside the image.
    """
    h, w = cfg.image_size
    radius = size / 2
    shape = SHAPES[cfg.classes[class_id - 1]](radius, theta)
    fp = _rasterise([(pts + np.asarray(centre)[None, :], fill) for pts, fill in shape], supersample=_supersample_for(size))
    total = float(fp.cov.sum())
    clipped = fp.clip(h, w)
    if clipped is None or total <= 0:
        return None
    (sy, sx), part = clipped
    truncated = 1.0 - float(part.sum()) / total
    rows = np.flatnonzero(part.max(axis=1) > 0)
    cols = np.flatnonzero(part.max(axis=0) > 0)
    if rows.size == 0:
        return None
    box = np.array([sy.start + rows[0], sx.start + cols[0], sy.start + rows[-1] + 1, sx.start + cols[-1] + 1], dtype=np.float64)
    if truncated > cfg.max_truncated or box[2] - box[0] < 2 or box[3] - box[1] < 2:
        return None
    return _Layer(fp, class_id, centre, radius, truncated=max(0.0, truncated), box=box)


def _object_layers(cfg: SyntheticConfig, rng: np.random.Generator) -> tuple[list[_Layer], int]:
    """Sample, place and rasterise the labelled objects (in drawing order); also count the truncation drops.

    An object placed too far outside the image is re-placed up to ``PLACEMENT_RETRIES`` times, then dropped
    and counted; one without a free non-overlapping spot is skipped.
    """
    n = int(rng.integers(cfg.objects_per_image[0], cfg.objects_per_image[1] + 1))
    class_ids = sample_classes(cfg, n, rng)
    sizes = sample_sizes(cfg, n, rng)
    thetas = rng.uniform(0, 2 * np.pi, n)
    layers: list[_Layer] = []
    dropped = 0
    for cid, size, theta in zip(class_ids.tolist(), sizes.tolist(), thetas.tolist()):
        layer = None
        for _ in range(PLACEMENT_RETRIES):
            centre = _place(cfg, rng, size / 2, layers)
            if centre is None:
                break
            layer = _object_layer(cfg, cid, size, theta, centre)
            if layer is not None:
                break
        if layer is None:
            dropped += centre is not None
            continue
        layers.append(layer)
    return layers, dropped


def _clutter_layers(cfg: SyntheticConfig, rng: np.random.Generator) -> list[_Layer]:
    """Unlabelled distractors: elongated ellipses, bars and polylines (``class_id == 0``)."""
    h, w = cfg.image_size
    short = min(h, w)
    n = int(rng.integers(cfg.clutter[0], cfg.clutter[1] + 1))
    layers = []
    for _ in range(n):
        kind = int(rng.integers(0, 3))
        size = max(MIN_OBJECT_PX, float(np.exp(rng.uniform(np.log(0.04 * short), np.log(0.45 * short)))))
        centre = np.array([rng.uniform(0, h), rng.uniform(0, w)])
        theta = rng.uniform(0, 2 * np.pi)
        r = size / 2
        if kind == 0:  # elongated ellipse
            a = np.linspace(0, 2 * np.pi, 48, endpoint=False)
            pts = np.stack([r * rng.uniform(0.2, 0.55) * np.sin(a), r * np.cos(a)], axis=1)
            fp = _rasterise([(_rotate(pts, theta) + centre, 255)], supersample=_supersample_for(size))
        elif kind == 1:  # bar
            hw = r * rng.uniform(0.12, 0.4)
            pts = np.array([[-hw, -r], [-hw, r], [hw, r], [hw, -r]])
            fp = _rasterise([(_rotate(pts, theta) + centre, 255)], supersample=_supersample_for(size))
        else:  # polyline
            k = int(rng.integers(2, 5))
            angles = theta + np.cumsum(rng.normal(0.0, 0.9, k))
            steps = rng.uniform(0.3, 0.6, k)[:, None] * size * np.stack([np.sin(angles), np.cos(angles)], axis=1)
            pts = centre + np.concatenate([np.zeros((1, 2)), np.cumsum(steps, axis=0)], axis=0)
            width = max(1.0, size * rng.uniform(0.02, 0.08))
            fp = _rasterise([], [(pts, width)], supersample=_supersample_for(size))
        layers.append(_Layer(fp, 0, (float(centre[0]), float(centre[1])), r, camouflage=bool(rng.random() < 0.5)))
    return layers


def _stack(objects: list[_Layer], clutter: list[_Layer], rng: np.random.Generator) -> list[_Layer]:
    """Drawing order (bottom to top): 70 % of distractors behind all objects, the rest between/over them."""
    order = list(objects)
    for item in clutter:
        if rng.random() < 0.7 or not order:
            order.insert(0, item)
        else:
            order.insert(int(rng.integers(1, len(order) + 1)), item)
    return order


def _class_hue_band(class_id: int, num_classes: int) -> tuple[float, float]:
    """Hue band ``(lo, hi)`` of class ``class_id`` (1-based): width ``1 / (2C)`` centred at ``(k - 1) / C``."""
    centre = (class_id - 1) / num_classes
    half = 0.25 / num_classes
    return centre - half, centre + half


def _composite(canvas: np.ndarray, layers: list[_Layer], rng: np.random.Generator, class_colour: float = 0.0,
               num_classes: int = 1) -> None:
    """Draw ``layers`` bottom to top onto ``canvas`` ``[H,W,3]`` float32 (in place).

    Each layer gets a colour chosen against the canvas under it (contrasting, or camouflaged for some
    distractors) with a soft linear shading of up to +-15 grey levels. With ``class_colour`` > 0 a labelled
    object takes its class's colour family with that probability (no extra random draws when it is 0, so
    datasets without it are unchanged).
    """
    h, w = canvas.shape[:2]
    for layer in layers:
        clipped = layer.footprint.clip(h, w)
        if clipped is None:
            continue
        sl, cov = clipped
        weight = float(cov.sum())
        if weight <= 0:
            continue
        region = canvas[sl]
        local = (region * cov[..., None]).sum(axis=(0, 1)) / weight
        band = None
        if class_colour > 0 and layer.class_id >= 1 and rng.random() < class_colour:
            band = _class_hue_band(layer.class_id, num_classes)
        colour = _pick_colour(rng, local, layer.camouflage, band).astype(np.float32)
        psi = rng.uniform(0, 2 * np.pi)
        amp = rng.uniform(0.0, 15.0)
        ys = np.arange(sl[0].start, sl[0].stop, dtype=np.float32)[:, None] + 0.5 - layer.centre[0]
        xs = np.arange(sl[1].start, sl[1].stop, dtype=np.float32)[None, :] + 0.5 - layer.centre[1]
        shade = amp * (ys * np.sin(psi) + xs * np.cos(psi)) / max(layer.radius, 1.0)
        fill = colour[None, None, :] + np.clip(shade, -amp, amp)[..., None]
        a = cov[..., None]
        canvas[sl] = region * (1.0 - a) + fill * a


def _visibility(layers: list[_Layer], height: int, width: int) -> None:
    """Set ``visible`` (fraction of each layer's in-image coverage not covered by later layers)."""
    transmit = np.ones((height, width), dtype=np.float32)
    for layer in reversed(layers):
        clipped = layer.footprint.clip(height, width)
        if clipped is None:
            layer.visible = 0.0
            continue
        sl, cov = clipped
        total = float(cov.sum())
        layer.visible = float((cov * transmit[sl]).sum()) / total if total > 0 else 0.0
        transmit[sl] *= 1.0 - cov


def occlusion_level(visible: np.ndarray) -> np.ndarray:
    """KITTI-style level from the visible fraction: 0 (>= 0.9), 1 (>= 0.5), 2 (below). ``[N] -> [N]`` int64."""
    visible = np.asarray(visible, dtype=np.float64)
    return np.where(visible >= 0.9, 0, np.where(visible >= 0.5, 1, 2)).astype(np.int64)


def _label_noise(
    cfg: SyntheticConfig, boxes: np.ndarray, class_ids: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Jitter boxes ``[N,4]`` by N(0, box_jitter * side) per coordinate and flip classes ``[N]`` with class_flip."""
    h, w = cfg.image_size
    boxes, class_ids = boxes.copy(), class_ids.copy()
    n = boxes.shape[0]
    jitter = float(cfg.label_noise.get("box_jitter", 0.0))
    if jitter > 0 and n:
        side = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]] * 2, axis=1)
        noisy = boxes + rng.normal(0.0, 1.0, (n, 4)) * jitter * side
        ymin, ymax = np.minimum(noisy[:, 0], noisy[:, 2]), np.maximum(noisy[:, 0], noisy[:, 2])
        xmin, xmax = np.minimum(noisy[:, 1], noisy[:, 3]), np.maximum(noisy[:, 1], noisy[:, 3])
        ymin, xmin = np.clip(ymin, 0, h - 1), np.clip(xmin, 0, w - 1)
        ymax, xmax = np.clip(np.maximum(ymax, ymin + 1), 0, h), np.clip(np.maximum(xmax, xmin + 1), 0, w)
        boxes = np.round(np.stack([ymin, xmin, ymax, xmax], axis=1), 2)
    flip = float(cfg.label_noise.get("class_flip", 0.0))
    if flip > 0 and n and len(cfg.classes) > 1:
        do = rng.random(n) < flip
        shift = rng.integers(1, len(cfg.classes), n)
        class_ids = np.where(do, (class_ids - 1 + shift) % len(cfg.classes) + 1, class_ids)
    return boxes, class_ids


def render_sample(cfg: SyntheticConfig, split: str, index: int) -> SyntheticSample:
    """Render image ``index`` (1-based) of ``split``: a pure function of ``(cfg, split, index)``."""
    h, w = cfg.image_size
    rng = np.random.default_rng(image_seed(cfg.seed, split, index, "scene"))
    bg_rng = np.random.default_rng(image_seed(cfg.seed, split, index, "background"))
    canvas = np.array(BACKGROUND_FNS[cfg.background](h, w, bg_rng), dtype=np.float32)
    objects, dropped = _object_layers(cfg, rng)
    layers = _stack(objects, _clutter_layers(cfg, rng), rng)
    _composite(canvas, layers, rng, cfg.class_colour, len(cfg.classes))
    _visibility(layers, h, w)
    if cfg.noise_std > 0:
        canvas += cfg.noise_std * rng.standard_normal(canvas.shape, dtype=np.float32)
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    if cfg.shift is not None:
        image = apply_corruption(
            image, cfg.shift["name"], int(cfg.shift["severity"]), seed=image_seed(cfg.seed, split, index, "shift")
        )

    kept = [o for o in objects if o.visible >= cfg.min_visible]
    boxes = np.array([o.box for o in kept], dtype=np.float64).reshape(-1, 4)
    class_ids = np.array([o.class_id for o in kept], dtype=np.int64)
    noisy_boxes, noisy_ids = _label_noise(
        cfg, boxes, class_ids, np.random.default_rng(image_seed(cfg.seed, split, index, "labels"))
    )
    return SyntheticSample(
        image=image,
        boxes=noisy_boxes,
        class_ids=noisy_ids,
        true_boxes=boxes,
        true_class_ids=class_ids,
        occluded=occlusion_level(np.array([o.visible for o in kept])),
        truncated=np.round(np.array([o.truncated for o in kept], dtype=np.float64), 4),
        hidden=len(objects) - len(kept),
        dropped_truncated=dropped,
    )


# ============================================================================ writing
def _encode(image: np.ndarray, fmt: str) -> bytes:
    """Encode ``[H,W,3]`` uint8 as PNG or JPEG bytes (deterministic: no timestamps or metadata)."""
    buf = io.BytesIO()
    if fmt == "png":
        Image.fromarray(image).save(buf, format="PNG", compress_level=6)
    else:
        Image.fromarray(image).save(buf, format="JPEG", quality=95, subsampling=0)
    return buf.getvalue()


def _file_name(split: str, index: int, fmt: str) -> str:
    """``<split>/<split>_000001.png`` (relative to the image root)."""
    return f"{split}/{split}_{index:06d}{IMAGE_FORMATS[fmt]}"


_WORKER: dict[str, Any] = {}


def _init_worker(cfg: SyntheticConfig, image_root: str) -> None:
    _WORKER["cfg"], _WORKER["root"] = cfg, image_root


def _render_and_write(task: tuple[str, int]) -> dict:
    """Worker: render one image, write its file, return its labels as plain arrays."""
    split, index = task
    cfg: SyntheticConfig = _WORKER["cfg"]
    sample = render_sample(cfg, split, index)
    name = _file_name(split, index, cfg.image_format)
    with open(os.path.join(_WORKER["root"], name), "wb") as handle:
        handle.write(_encode(sample.image, cfg.image_format))
    return {
        "file_name": name,
        "boxes": sample.boxes,
        "class_ids": sample.class_ids,
        "occluded": sample.occluded,
        "truncated": sample.truncated,
        "hidden": sample.hidden,
        "dropped_truncated": sample.dropped_truncated,
    }


def _default_workers(total: int) -> int:
    """Pool size: none for small jobs (process start-up costs more), else up to 4 and the CPU count."""
    if total < 200:
        return 1
    return max(1, min(4, os.cpu_count() or 1))


def _render_files(
    cfg: SyntheticConfig, splits: Sequence[str], image_root: Path, workers: int, progress: bool
) -> dict[str, list[dict]]:
    """Render and write every image of ``splits`` under ``image_root``; per split, results in index order.

    One pool serves all splits; ``workers <= 1`` renders in this process.
    """
    from tqdm.auto import tqdm

    tasks = [(split, i) for split in splits for i in range(1, int(cfg.num_images[split]) + 1)]
    for split in splits:
        (image_root / split).mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {split: [] for split in splits}
    bar = tqdm(total=len(tasks), desc="synthetic images", unit="img", disable=not progress, leave=False)
    try:
        if workers <= 1 or len(tasks) < 2:
            _init_worker(cfg, str(image_root))
            for task in tasks:
                results[task[0]].append(_render_and_write(task))
                bar.update()
            return results
        # spawn: safe even when the caller has imported TensorFlow (forking a threaded process is not).
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(min(workers, len(tasks)), initializer=_init_worker, initargs=(cfg, str(image_root))) as pool:
            for task, res in zip(tasks, pool.imap(_render_and_write, tasks, chunksize=8)):
                results[task[0]].append(res)
                bar.update()
        return results
    finally:
        bar.close()


def _split_manifest(cfg: SyntheticConfig, split: str, results: list[dict], image_root: Path) -> Manifest:
    """Build the validated manifest of one split from the worker results."""
    attrs = {"scene": cfg.background}
    if cfg.shift is not None and cfg.shift["name"] in ("fog", "rain", "snow"):
        attrs["weather"] = {"fog": "foggy", "rain": "rainy", "snow": "snowy"}[cfg.shift["name"]]
    if cfg.shift is not None and cfg.shift["name"] == "darkness":
        attrs["timeofday"] = "night"
    builder = ManifestBuilder(
        categories=categories_from_names(cfg.classes),
        info={"description": "uncertainty_det synthetic shapes", "split": split, "generator_version": GENERATOR_VERSION},
    )
    h, w = cfg.image_size
    for res in results:
        img_id = builder.add_image(res["file_name"], h, w, **attrs)
        builder.add_objects(img_id, res["boxes"], res["class_ids"].tolist(), res["occluded"].tolist(), res["truncated"].tolist())
    return builder.build(image_root=image_root, source=f"synthetic:{split}")


def _split_stats(cfg: SyntheticConfig, manifest: Manifest, results: list[dict]) -> dict:
    """Counts of one split for dataset_info.json."""
    occ = np.concatenate([r["occluded"] for r in results]) if results else np.zeros(0, np.int64)
    trunc = np.concatenate([r["truncated"] for r in results]) if results else np.zeros(0)
    return {
        "images": len(manifest),
        "objects": manifest.num_annotations,
        "per_class": manifest.class_counts(),
        "occluded": {str(k): int(np.sum(occ == k)) for k in range(3)},
        "truncated_objects": int(np.sum(trunc > 0)),
        "hidden_objects": int(sum(r["hidden"] for r in results)),
        "dropped_truncated": int(sum(r["dropped_truncated"] for r in results)),
        "empty_images": int(sum(len(r["class_ids"]) == 0 for r in results)),
    }


def _check_replaceable(root: Path) -> None:
    """Refuse to replace an existing non-empty folder that is not a generated synthetic dataset."""
    if not root.exists():
        return
    if not root.is_dir():
        raise DatasetError(f"synthetic dataset root {root} exists and is not a folder; choose another dataset.root")
    if any(root.iterdir()) and not (root / "dataset_info.json").is_file():
        raise DatasetError(
            f"synthetic dataset root {root} holds other files (no dataset_info.json); refusing to replace it. "
            f"Remove it or point dataset.root at another folder"
        )


def generate_synthetic(
    root: str | os.PathLike,
    cfg: SyntheticConfig,
    splits: Sequence[str] | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> dict[str, Manifest]:
    """Generate the synthetic dataset into ``root`` (replaced atomically as a whole).

    Args:
      root: dataset folder; receives ``images/<split>/``, ``annotations/<split>.json``, ``dataset_info.json``.
        It is built in a temporary sibling folder and renamed into place, so an interrupted run leaves the
        previous ``root`` (or none) intact.
      cfg: generator settings.
      splits: the splits of ``cfg.num_images`` to generate (default all); others are not written.
      progress: show a tqdm progress bar.
      workers: processes (default: 1 below 200 images, else min(4, CPUs)); output does not depend on it.

    Returns:
      split name -> :class:`Manifest` (image root ``root/images``).

    Raises:
      ValueError: a split not in ``cfg.num_images``.
      DatasetError: ``root`` exists, is not empty and is not a generated dataset (never overwritten).
    """
    root = Path(root)
    _check_replaceable(root)
    splits = list(cfg.num_images) if splits is None else list(splits)
    unknown = [s for s in splits if s not in cfg.num_images]
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; the config defines {list(cfg.num_images)}")
    total = sum(int(cfg.num_images[s]) for s in splits)
    workers = _default_workers(total) if workers is None else max(1, int(workers))
    stats = {}
    with atomic_dir(root) as tmp:
        rendered = _render_files(cfg, splits, tmp / "images", workers, progress)
        for split in splits:
            manifest = _split_manifest(cfg, split, rendered[split], tmp / "images")
            manifest.write(tmp / "annotations" / f"{split}.json", image_root=tmp / "images")
            stats[split] = _split_stats(cfg, manifest, rendered[split])
        info = {
            "generator_version": GENERATOR_VERSION,
            "config": config_to_dict(cfg),
            "classes": list(cfg.classes),
            "splits": stats,
        }
        atomic_write_json(tmp / "dataset_info.json", info)
    return {s: Manifest.read(root / "annotations" / f"{s}.json") for s in splits}


def _stale_reason(root: Path, cfg: SyntheticConfig) -> str | None:
    """Why ``root`` must be (re)generated for ``cfg``, or None when it is up to date."""
    info_path = root / "dataset_info.json"
    missing = [s for s in cfg.num_images if not (root / "annotations" / f"{s}.json").is_file()]
    if not info_path.is_file() or missing:
        return f"missing {'dataset_info.json' if not info_path.is_file() else 'annotations for ' + ', '.join(missing)}"
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "dataset_info.json is unreadable"
    if info.get("generator_version") != GENERATOR_VERSION:
        return f"generator version {info.get('generator_version')} != {GENERATOR_VERSION}"
    if info.get("config") != config_to_dict(cfg):
        stored = info.get("config") or {}
        current = config_to_dict(cfg)
        changed = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
        return f"config changed ({', '.join(changed)})"
    return None


def ensure_synthetic(
    root: str | os.PathLike,
    cfg: SyntheticConfig,
    log: logging.Logger | Callable[[str], Any] | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> dict[str, Manifest]:
    """Return the synthetic dataset's manifests, generating it first when missing or stale.

    Stale means: an annotation file or ``dataset_info.json`` is missing, or its stored config or generator
    version differs from ``cfg``; it is then regenerated as a whole (with a log line saying why).

    Args:
      root: dataset folder (see :func:`generate_synthetic`).
      cfg: generator settings.
      log: a logger (``.info`` is used) or a callable taking one message; default this module's logger.
    """
    root = Path(root)
    say = (log.info if hasattr(log, "info") else log) if log is not None else logger.info
    reason = _stale_reason(root, cfg)
    if reason is None:
        return {s: Manifest.read(root / "annotations" / f"{s}.json") for s in cfg.num_images}
    action = "regenerating" if root.exists() else "generating"
    say(f"synthetic dataset {root}: {reason}; {action} {sum(cfg.num_images.values())} images")
    return generate_synthetic(root, cfg, progress=progress, workers=workers)
