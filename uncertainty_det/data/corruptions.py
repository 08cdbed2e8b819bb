"""Image corruptions at graded severities (NumPy/SciPy only), for robustness and dataset-shift studies.

Every corruption is a function ``fn(image, severity, rng) -> image`` where ``image`` is ``[H,W,3]`` uint8
RGB, ``severity`` an integer ``1..MAX_SEVERITY`` (0 is handled by :func:`apply_corruption` as the
identity) and ``rng`` a ``numpy.random.Generator``. They are registered in :data:`CORRUPTIONS`.

Severity grid. The reference tool (``add_corruption.py``) lists 10 parameter values per corruption whose
first one is the identity (e.g. brightness beta in ``linspace(0, 100, 10)``). Here severity 0 is the
identity and levels ``1..10`` split the same parameter range into 10 equal steps, so level 10 equals the
reference's strongest level: brightness beta = ``10 * k`` (reference range 0..100), Gaussian noise variance
= ``100 * k`` (0..1000), motion-blur kernel width ``1..51`` px (odd), Gaussian-blur kernel size ``1..49``
px (odd, the reference's ``linspace(1, 50, 20)`` range), contrast ``alpha = 1 - c`` with ``c`` up to 0.9.

Deviations from the reference, on purpose: noise is clipped to [0, 255] instead of rescaling the whole image
by ``255 / max``; contrast blends toward the image's mean grey level instead of multiplying by ``alpha``
(which only darkens) and stops at ``alpha = 0.1`` so the top level is not a flat image; fog, rain and snow
are our own vectorised implementations (the reference used albumentations). Random corruptions draw their
random fields independently of the severity, so with one seed the levels are nested (level k+1 = level k
plus more of the same noise/streaks/flakes).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import ndimage

MAX_SEVERITY = 10

Corruption = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]


# ----------------------------------------------------------------------------- helpers
def _level(lo: float, hi: float, severity: int) -> float:
    """Parameter of ``severity`` on the grid ``linspace(lo, hi, MAX_SEVERITY + 1)`` (0 -> lo, 10 -> hi)."""
    return float(lo + (hi - lo) * severity / MAX_SEVERITY)


def _odd(value: float) -> int:
    """The odd integer nearest to ``value`` (ties round up), at least 1."""
    return max(1, 2 * int(np.floor((value - 1.0) / 2.0 + 0.5)) + 1)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """Round and clip a float image to ``[0, 255]`` uint8 (same shape)."""
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _cubic_taps(n_out: int, n_grid: int, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Catmull-Rom taps from a coarse grid to ``n_out`` pixel centres.

    Pixel ``i`` sits at grid coordinate ``(i + 0.5) / step + 1`` (one guard cell before the first pixel).
    Returns ``(indices [n_out, 4] int64, weights [n_out, 4] float32)``.
    """
    u = (np.arange(n_out, dtype=np.float64) + 0.5) / step + 1.0
    base = np.floor(u).astype(np.int64)
    t = u - base
    weights = np.stack(
        [
            0.5 * (-t + 2 * t**2 - t**3),
            0.5 * (2 - 5 * t**2 + 3 * t**3),
            0.5 * (t + 4 * t**2 - 3 * t**3),
            0.5 * (-(t**2) + t**3),
        ],
        axis=1,
    ).astype(np.float32)
    indices = np.clip(base[:, None] + np.arange(-1, 3)[None, :], 0, n_grid - 1)
    return indices, weights


def _cubic_upsample(grid: np.ndarray, height: int, width: int, step: float) -> np.ndarray:
    """Separable Catmull-Rom upsampling of ``grid`` ``[gh, gw]`` to ``[height, width]`` (float32).

    Gathers and weighted sums only (no BLAS), so results are bit-identical across machines.
    """
    iy, wy = _cubic_taps(height, grid.shape[0], step)
    ix, wx = _cubic_taps(width, grid.shape[1], step)
    rows = sum(wy[:, k, None] * grid[iy[:, k], :] for k in range(4))
    return sum(wx[None, :, k] * rows[:, ix[:, k]] for k in range(4))


def fractal_noise(
    height: int,
    width: int,
    rng: np.random.Generator,
    base_cells: int = 3,
    octaves: int = 4,
    persistence: float = 0.5,
) -> np.ndarray:
    """Smooth low-frequency ("fractal") noise field.

    Sums ``octaves`` layers of random values on coarse grids (``base_cells * 2**o`` cells along the short
    side), each upsampled to the image with separable cubic (Catmull-Rom) interpolation and weighted by
    ``persistence**o``.

    Args:
      height, width: output size in pixels.
      rng: random generator (the field is a deterministic function of its state).
      base_cells: number of grid cells of the coarsest octave along the short image side.
      octaves: number of octaves summed.
      persistence: amplitude ratio between successive octaves.

    Returns:
      ``[height, width]`` float32 in ``[0, 1]`` (min-max normalised).
    """
    short = max(1, min(height, width))
    field = np.zeros((height, width), dtype=np.float32)
    for octave in range(octaves):
        step = short / (base_cells * 2**octave)
        gh = int(np.ceil(height / step)) + 3
        gw = int(np.ceil(width / step)) + 3
        grid = rng.random((gh, gw), dtype=np.float32)
        field += np.float32(persistence**octave) * _cubic_upsample(grid, height, width, step)
    lo, hi = float(field.min()), float(field.max())
    return (field - lo) / (hi - lo) if hi > lo else np.zeros_like(field)


def _streak_mask(
    height: int, width: int, starts: np.ndarray, length: float, slant: float, thickness: int = 1
) -> np.ndarray:
    """Rasterise straight streaks into a float mask.

    Args:
      height, width: mask size in pixels.
      starts: ``[N, 2]`` float (y, x) start points in pixels.
      length: streak length in pixels (downward).
      slant: horizontal displacement per pixel of descent (tan of the angle from vertical).
      thickness: streak width in pixels (horizontal).

    Returns:
      ``[height, width]`` float32 mask in ``{0, 1}``.
    """
    mask = np.zeros((height, width), dtype=np.float32)
    if starts.shape[0] == 0:
        return mask
    steps = np.arange(int(np.ceil(length)) + 1, dtype=np.float32)
    ys = np.rint(starts[:, :1] + steps[None, :]).astype(np.int64)
    xs = np.rint(starts[:, 1:2] + slant * steps[None, :]).astype(np.int64)
    for dx in range(thickness):
        xx = xs + dx
        ok = (ys >= 0) & (ys < height) & (xx >= 0) & (xx < width)
        mask[ys[ok], xx[ok]] = 1.0
    return mask


# ----------------------------------------------------------------------------- corruptions
def brightness(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Add ``beta = 10 * severity`` (0..100 grey levels) to every pixel, clipped to [0, 255].

    Reference: ``cv2.addWeighted(img, 1, 0, 0, beta)``. ``[H,W,3]`` uint8 -> ``[H,W,3]`` uint8.
    """
    beta = _level(0.0, 100.0, severity)
    return _to_uint8(image.astype(np.float32) + beta)


def contrast(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Reduce contrast: ``mean + alpha * (x - mean)`` with ``alpha = 1 - c``, ``c = 0.09 * severity``.

    ``mean`` is the image's mean grey level (scalar); level 10 keeps ``alpha = 0.1``.
    ``[H,W,3]`` uint8 -> ``[H,W,3]`` uint8.
    """
    alpha = 1.0 - _level(0.0, 0.9, severity)
    x = image.astype(np.float32)
    mean = float(x.mean())
    return _to_uint8(mean + alpha * (x - mean))


def gaussian_blur_kernel_size(severity: int) -> int:
    """Odd Gaussian-blur kernel size in pixels of a severity: 1 (level 0) .. 49 (level 10)."""
    return _odd(_level(1.0, 49.0, severity))


def gaussian_blur(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur per channel with an odd kernel size ``k`` from :func:`gaussian_blur_kernel_size`.

    ``sigma = 0.3 * ((k - 1) / 2 - 1) + 0.8`` (OpenCV's rule for a kernel size) and the kernel is
    truncated at radius ``(k - 1) / 2``; borders are mirrored. ``[H,W,3]`` uint8 -> ``[H,W,3]`` uint8.
    """
    k = gaussian_blur_kernel_size(severity)
    if k <= 1:
        return image.copy()
    sigma = 0.3 * ((k - 1) / 2.0 - 1.0) + 0.8
    radius = (k - 1) // 2
    out = ndimage.gaussian_filter(
        image.astype(np.float32), sigma=(sigma, sigma, 0.0), mode="mirror", truncate=radius / sigma
    )
    return _to_uint8(out)


def _noise_std(severity: int) -> float:
    """Gaussian-noise standard deviation in grey levels: ``sqrt(100 * severity)`` (variance 0..1000)."""
    return float(np.sqrt(_level(0.0, 1000.0, severity)))


def gaussian_noise(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Additive N(0, var) per pixel and channel, ``var = 100 * severity`` grey levels², clipped to [0, 255].

    ``[H,W,3]`` uint8 -> ``[H,W,3]`` uint8.
    """
    noise = rng.standard_normal(image.shape, dtype=np.float32)
    return _to_uint8(image.astype(np.float32) + _noise_std(severity) * noise)


PARTIAL_NOISE_PATCH = 200


def partial_noise(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """:func:`gaussian_noise` restricted to the centred 200x200 patch (clipped to the image).

    ``[H,W,3]`` uint8 -> ``[H,W,3]`` uint8.
    """
    h, w = image.shape[:2]
    ph, pw = min(PARTIAL_NOISE_PATCH, h), min(PARTIAL_NOISE_PATCH, w)
    y0, x0 = (h - ph) // 2, (w - pw) // 2
    out = image.copy()
    out[y0 : y0 + ph, x0 : x0 + pw] = gaussian_noise(image[y0 : y0 + ph, x0 : x0 + pw], severity, rng)
    return out


def motion_blur_kernel_size(severity: int) -> int:
    """Odd horizontal motion-blur kernel width in pixels: 1 (level 0) .. 51 (level 10)."""
    return _odd(_level(1.0, 51.0, severity))


def motion_blur(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Horizontal motion blur: a normalised ``1 x k`` row kernel (``k`` from :func:`motion_blur_kernel_size`).

    Rows are blurred independently (nothing spreads vertically); borders are mirrored.
    ``[H,W,3]`` uint8 -> ``[H,W,3]`` uint8.
    """
    k = motion_blur_kernel_size(severity)
    if k <= 1:
        return image.copy()
    out = ndimage.uniform_filter1d(image.astype(np.float32), size=k, axis=1, mode="mirror")
    return _to_uint8(out)


def darkness(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Night-like darkening: ``255 * scale * (x / 255) ** gamma``.

    ``gamma`` grows 1 -> 2.5 and ``scale`` falls 1 -> 0.4 over levels 0..10 (mid grey 128 -> ~18 at 10).
    Deterministic. ``[H,W,3]`` uint8 -> ``[H,W,3]`` uint8.
    """
    gamma = _level(1.0, 2.5, severity)
    scale = _level(1.0, 0.4, severity)
    x = image.astype(np.float32) / 255.0
    return _to_uint8(255.0 * scale * np.power(x, gamma))


def fog(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Fog: blend toward a grey-white veil whose density varies smoothly over the image.

    Density ``t = strength * (0.55 + 0.45 * field)`` with ``field`` a :func:`fractal_noise` map and
    ``strength = 0.085 * severity``; the veil colour is a light grey (random 205..235). The image is also
    slightly softened (sigma up to 1 px) as fog scatters light. ``[H,W,3]`` uint8 -> ``[H,W,3]`` uint8.
    """
    h, w = image.shape[:2]
    field = fractal_noise(h, w, rng, base_cells=2, octaves=4, persistence=0.55)
    veil = rng.uniform(205.0, 235.0)
    strength = _level(0.0, 0.85, severity)
    t = (strength * (0.55 + 0.45 * field))[..., None]
    x = image.astype(np.float32)
    sigma = _level(0.0, 1.0, severity)
    if sigma > 0.3:
        x = ndimage.gaussian_filter(x, sigma=(sigma, sigma, 0.0), mode="mirror", truncate=3.0)
    return _to_uint8(x * (1.0 - t) + veil * t)


def rain(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Rain: thin slanted bright streaks, a slight darkening and a slight blur.

    The number of streaks grows linearly with severity (about ``area / 250`` at level 10); streak length is
    ~7 % of the image height, slant one random angle within +-20 degrees per image. The image is darkened by
    up to 25 % and blurred by up to sigma 0.8 px. ``[H,W,3]`` uint8 -> ``[H,W,3]`` uint8.
    """
    h, w = image.shape[:2]
    max_drops = max(1, int(h * w / 250))
    length = max(3.0, 0.07 * h)
    slant = float(np.tan(np.deg2rad(rng.uniform(-20.0, 20.0))))
    starts = np.stack(
        [rng.uniform(-length, h, max_drops), rng.uniform(-abs(slant) * length, w + abs(slant) * length, max_drops)],
        axis=1,
    )
    n = int(round(max_drops * severity / MAX_SEVERITY))
    streaks = _streak_mask(h, w, starts[:n], length, slant)
    streaks = ndimage.gaussian_filter(streaks, sigma=0.5, truncate=2.0)
    streaks = np.clip(streaks * 1.6, 0.0, 1.0)[..., None]
    x = image.astype(np.float32)
    sigma = _level(0.0, 0.8, severity)
    if sigma > 0.3:
        x = ndimage.gaussian_filter(x, sigma=(sigma, sigma, 0.0), mode="mirror", truncate=3.0)
    x = x * (1.0 - _level(0.0, 0.25, severity))
    drop_colour = np.array([200.0, 205.0, 215.0], dtype=np.float32)
    alpha = 0.75 * streaks
    return _to_uint8(x * (1.0 - alpha) + drop_colour * alpha)


def snow(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Snow: soft white flakes of two sizes plus a brightening, washed-out veil.

    Flake count grows linearly with severity (about ``area / 120`` at level 10); flakes are Gaussian blobs
    (sigma ~0.6 and ~1.4 px, scaled with the image). The image is blended toward white by up to 35 %.
    ``[H,W,3]`` uint8 -> ``[H,W,3]`` uint8.
    """
    h, w = image.shape[:2]
    max_flakes = max(2, int(h * w / 120))
    ys = rng.integers(0, h, max_flakes)
    xs = rng.integers(0, w, max_flakes)
    big = rng.random(max_flakes) < 0.3
    intensity = rng.uniform(0.6, 1.0, max_flakes).astype(np.float32)
    n = int(round(max_flakes * severity / MAX_SEVERITY))
    scale = max(1.0, min(h, w) / 256.0)
    layers = []
    for is_big, sigma, gain in ((False, 0.6 * scale, 4.0), (True, 1.4 * scale, 12.0)):
        pts = np.zeros((h, w), dtype=np.float32)
        sel = big[:n] == is_big
        np.maximum.at(pts, (ys[:n][sel], xs[:n][sel]), intensity[:n][sel])
        layers.append(ndimage.gaussian_filter(pts, sigma=sigma, truncate=3.0) * gain)
    flakes = np.clip(layers[0] + layers[1], 0.0, 1.0)[..., None]
    veil = _level(0.0, 0.35, severity)
    x = image.astype(np.float32)
    x = x * (1.0 - veil) + 255.0 * veil
    return _to_uint8(x * (1.0 - flakes) + 250.0 * flakes)


#: The corruption registry: name -> ``fn(image [H,W,3] uint8, severity 1..10, rng) -> [H,W,3] uint8``.
CORRUPTIONS: dict[str, Corruption] = {
    "brightness": brightness,
    "contrast": contrast,
    "gaussian_blur": gaussian_blur,
    "gaussian_noise": gaussian_noise,
    "partial_noise": partial_noise,
    "motion_blur": motion_blur,
    "darkness": darkness,
    "fog": fog,
    "rain": rain,
    "snow": snow,
}

#: Corruptions that use no randomness (same output for every seed).
DETERMINISTIC = frozenset({"brightness", "contrast", "gaussian_blur", "motion_blur", "darkness"})


def corruption_names() -> list[str]:
    """Names of the registered corruptions, sorted."""
    return sorted(CORRUPTIONS)


def validate_corruption(name: str, severity: int) -> None:
    """Raise ValueError unless ``name`` is registered and ``severity`` is an integer in ``0..MAX_SEVERITY``."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; available: {', '.join(corruption_names())}")
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 0 <= severity <= MAX_SEVERITY:
        raise ValueError(
            f"corruption severity must be an integer in 0..{MAX_SEVERITY} (0 = unchanged), got {severity!r}"
        )


def apply_corruption(image: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """Apply corruption ``name`` at ``severity`` to an RGB image.

    Args:
      image: ``[H,W,3]`` uint8 RGB.
      name: one of :func:`corruption_names`.
      severity: integer ``0..MAX_SEVERITY``; 0 returns an unchanged copy.
      seed: seed of the random fields (noise, fog, streaks, flakes); same seed -> same output.

    Returns:
      ``[H,W,3]`` uint8.

    Raises:
      ValueError: unknown name (the message lists the available ones), bad severity, or bad image.
    """
    validate_corruption(name, severity)
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"apply_corruption expects an [H,W,3] uint8 image, got {image.dtype} {image.shape}")
    if severity == 0:
        return image.copy()
    rng = np.random.default_rng(seed)
    return CORRUPTIONS[name](image, int(severity), rng)
