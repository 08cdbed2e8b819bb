"""Tests of uncertainty_det.data.corruptions: shapes, identity, monotone severity, determinism, reference values."""
from __future__ import annotations

import time

import numpy as np
import pytest

from uncertainty_det.data.corruptions import (
    CORRUPTIONS,
    DETERMINISTIC,
    MAX_SEVERITY,
    apply_corruption,
    corruption_names,
    fractal_noise,
    gaussian_blur_kernel_size,
    motion_blur_kernel_size,
)

NAMES = corruption_names()
RANDOM = [n for n in NAMES if n not in DETERMINISTIC]


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """A 72x96 textured test image: gradient, a few flat shapes and mild noise, mid-range values."""
    rng = np.random.default_rng(123)
    ys, xs = np.mgrid[0:72, 0:96].astype(np.float32)
    img = np.stack([60 + xs, 50 + ys * 1.5, 140 - xs * 0.5], axis=-1)
    img[10:30, 15:35] = [200, 40, 40]
    img[40:60, 50:80] = [30, 160, 200]
    img += rng.normal(0, 8, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def test_registry_names():
    expected = {
        "brightness", "contrast", "gaussian_blur", "gaussian_noise", "partial_noise",
        "motion_blur", "fog", "rain", "snow", "darkness",
    }
    assert set(CORRUPTIONS) == expected
    assert NAMES == sorted(expected)
    assert MAX_SEVERITY == 10


@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_and_identity(image, name):
    for severity in (1, 5, 10):
        out = apply_corruption(image, name, severity, seed=1)
        assert out.shape == image.shape and out.dtype == np.uint8
    same = apply_corruption(image, name, 0, seed=1)
    assert np.array_equal(same, image)
    assert same is not image


@pytest.mark.parametrize("name", NAMES)
def test_severity_moves_further(image, name):
    diffs = np.array([_mad(apply_corruption(image, name, s, seed=5), image) for s in range(1, MAX_SEVERITY + 1)])
    assert diffs[0] > 0, f"{name} level 1 changes nothing"
    assert np.all(np.diff(diffs) >= -1e-9), f"{name} not monotone: {np.round(diffs, 2)}"
    assert diffs[-1] > diffs[0]
    if name in RANDOM:
        # random fields are nested over levels (drawn independently of severity): strictly increasing
        assert np.all(np.diff(diffs) > 0), f"{name} not increasing: {np.round(diffs, 2)}"


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_for_a_seed(image, name):
    a = apply_corruption(image, name, 7, seed=11)
    b = apply_corruption(image, name, 7, seed=11)
    c = apply_corruption(image, name, 7, seed=12)
    assert np.array_equal(a, b)
    if name in DETERMINISTIC:
        assert np.array_equal(a, c)
    else:
        assert not np.array_equal(a, c)


@pytest.mark.parametrize("k", range(0, MAX_SEVERITY + 1))
def test_brightness_adds_reference_beta(k):
    grey = np.full((8, 8, 3), 100, dtype=np.uint8)
    beta = np.linspace(0, 100, MAX_SEVERITY + 1)[k]  # the reference range 0..100 in 10 steps
    out = apply_corruption(grey, "brightness", k)
    assert np.all(out == 100 + int(round(beta)))
    assert np.all(apply_corruption(np.full((4, 4, 3), 250, np.uint8), "brightness", 10) == 255)  # clipped


def test_contrast_reduces_spread_but_stays_an_image(image):
    stds = [apply_corruption(image, "contrast", s).astype(np.float64).std() for s in range(MAX_SEVERITY + 1)]
    assert np.all(np.diff(stds) < 0)
    assert stds[-1] > 0.05 * stds[0]  # alpha >= 0.1: not a flat grey image
    ramp = np.tile(np.arange(0, 250, 25, dtype=np.uint8)[None, :, None], (2, 1, 3))
    out = apply_corruption(ramp, "contrast", 10).astype(np.float64)
    assert np.allclose(out - out.mean(), 0.1 * (ramp - ramp.mean()), atol=0.6)


def test_motion_blur_spreads_horizontally_only():
    img = np.zeros((20, 101, 3), dtype=np.uint8)
    img[:, 50] = 255
    for severity in (1, 5, 10):
        k = motion_blur_kernel_size(severity)
        out = apply_corruption(img, "motion_blur", severity).astype(np.int64)
        assert np.all(out == out[:1]), "rows must stay identical (no vertical spread)"
        lit = np.flatnonzero(out[0, :, 0] > 0)
        assert lit.size == k and lit[0] == 50 - k // 2 and lit[-1] == 50 + k // 2
        assert np.all(np.abs(out[0, lit, 0] - 255 / k) <= 0.5 + 1e-9)
    assert [motion_blur_kernel_size(s) for s in (0, 10)] == [1, 51]
    assert all(motion_blur_kernel_size(s) % 2 == 1 for s in range(11))


def test_motion_blur_on_row_does_not_spread_vertically():
    img = np.zeros((31, 40, 3), dtype=np.uint8)
    img[15, :] = 200
    out = apply_corruption(img, "motion_blur", 10)
    assert np.all(out[np.arange(31) != 15] == 0)


def test_gaussian_blur_per_channel_and_isotropic():
    img = np.zeros((61, 61, 3), dtype=np.uint8)
    img[30, 30, 0] = 255
    out = apply_corruption(img, "gaussian_blur", 3).astype(np.int64)
    assert np.all(out[..., 1:] == 0), "channels must not mix"
    red = out[..., 0]
    assert np.array_equal(red, red.T) and np.array_equal(red, red[::-1, ::-1])
    k = gaussian_blur_kernel_size(3)
    lit = np.flatnonzero(red[30] > 0)
    assert lit.size <= k
    sizes = [gaussian_blur_kernel_size(s) for s in range(MAX_SEVERITY + 1)]
    assert sizes[0] == 1 and sizes[-1] == 49 and all(s % 2 == 1 for s in sizes)
    assert sizes == sorted(sizes)


def test_noise_variance_matches_reference():
    grey = np.full((200, 200, 3), 128, dtype=np.uint8)
    out = apply_corruption(grey, "gaussian_noise", 10, seed=0).astype(np.float64)
    assert abs(out.var() - 1000) < 60  # variance 1000 at the top level (little clipping around 128)
    assert abs(out.mean() - 128) < 1


def test_partial_noise_only_in_centre_patch():
    img = np.full((256, 300, 3), 90, dtype=np.uint8)
    out = apply_corruption(img, "partial_noise", 8, seed=3)
    changed = np.any(out != img, axis=2)
    ys, xs = np.nonzero(changed)
    assert ys.min() >= 28 and ys.max() < 228 and xs.min() >= 50 and xs.max() < 250
    small = np.full((40, 50, 3), 90, dtype=np.uint8)  # patch clipped to the image
    assert apply_corruption(small, "partial_noise", 8, seed=3).shape == small.shape


def test_darkness_darkens_and_fog_snow_brighten(image):
    assert apply_corruption(image, "darkness", 10).mean() < 0.3 * image.mean()
    assert apply_corruption(image, "fog", 10).mean() > image.mean()
    assert apply_corruption(image, "snow", 10).mean() > image.mean()
    assert apply_corruption(image, "rain", 10).mean() < image.mean() + 10


def test_fog_is_smooth_low_frequency():
    grey = np.full((128, 128, 3), 60, dtype=np.uint8)
    out = apply_corruption(grey, "fog", 8, seed=2).astype(np.float64)[..., 0]
    assert out.std() > 2  # density varies over the image
    assert np.abs(np.diff(out, axis=1)).mean() < 1.5  # ... smoothly
    field = fractal_noise(50, 70, np.random.default_rng(0))
    assert field.shape == (50, 70) and field.min() == 0 and field.max() == 1


def test_unknown_name_and_bad_severity_raise(image):
    with pytest.raises(ValueError) as err:
        apply_corruption(image, "hail", 3)
    for name in NAMES:
        assert name in str(err.value)
    for bad in (-1, MAX_SEVERITY + 1, 2.5, True, "3"):
        with pytest.raises(ValueError, match=r"0\.\.10"):
            apply_corruption(image, "fog", bad)
    with pytest.raises(ValueError, match="uint8"):
        apply_corruption(image.astype(np.float32), "fog", 3)


@pytest.mark.parametrize("name", NAMES)
def test_fast_on_256(name):
    img = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    apply_corruption(img, name, 10)
    best = min(_timed(lambda: apply_corruption(img, name, 10, seed=1)) for _ in range(3))
    assert best < 0.05, f"{name} took {best * 1000:.1f} ms on 256x256"


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0
