"""Crop features: a crafted image with constant-colour crops, the integer-crop rule and the manifest walk."""
from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from uncertainty_det.al_eval import AlEvalError, crop_features, crop_windows, dct_mean, manifest_features
from uncertainty_det.data.manifest import ManifestBuilder, categories_from_names

COLOUR = (10, 100, 200)


def _image() -> np.ndarray:
    img = np.zeros((20, 30, 3), dtype=np.uint8)
    img[2:10, 5:17] = COLOUR  # h=8, w=12
    img[15:20, 25:30] = (7, 7, 7)  # h=5, w=5 at the corner
    return img


def test_constant_crop_closed_form():
    # floor/ceil of (2.7, 5.0, 9.6, 16.2) -> rows 2..10, cols 5..17
    feats, kept = crop_features(_image(), np.array([[2.7, 5.0, 9.6, 16.2]]))
    assert kept.tolist() == [True]
    h, w = 8, 12
    # one DC coefficient v*sqrt(h*w) per channel, all others 0, mean over h*w*3 coefficients
    expected_dct = sum(COLOUR) * math.sqrt(h * w) / (3 * h * w)
    np.testing.assert_allclose(feats[0], [w / h, expected_dct, h * w / 512], rtol=1e-12)
    assert feats[0, 0] == pytest.approx(1.5)
    assert feats[0, 2] == pytest.approx(96 / 512)


def test_clipping_and_min_side_rule():
    boxes = np.array([
        [0.0, 0.0, 2.0, 10.0],     # h = 2 -> dropped
        [0.0, 1.0, 10.0, 3.0],     # w = 2 -> dropped
        [0.0, 0.5, 10.0, 2.9],     # floor 0 / ceil 3 -> w = 3 -> kept
        [15.0, 25.0, 40.0, 50.0],  # clipped to the image: rows 15..20, cols 25..30 -> 5 x 5
        [2.0, 5.0, 10.0, 17.0],
    ])
    np.testing.assert_array_equal(crop_windows(boxes, 20, 30)[3], [15, 25, 20, 30])
    feats, kept = crop_features(_image(), boxes)
    assert kept.tolist() == [False, False, True, True, True]
    assert feats.shape == (3, 3)
    np.testing.assert_allclose(feats[:, 0], [3 / 10, 1.0, 12 / 8])
    np.testing.assert_allclose(feats[:, 2], [30 / 512, 25 / 512, 96 / 512])
    assert feats[1, 1] == pytest.approx(7 * 5 / 25)  # constant 7, 5x5: 7*sqrt(25)/25
    # the first kept crop is all zeros
    assert feats[0, 1] == 0.0


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    mat = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * i + 1) * k / (2 * n))
    mat[0] /= np.sqrt(2.0)
    return mat


def test_dct_mean_matches_explicit_orthonormal_type2():
    crop = np.random.default_rng(0).integers(0, 256, size=(7, 9, 3), dtype=np.uint8)
    dh, dw = _dct_matrix(7), _dct_matrix(9)
    coeffs = np.stack([dh @ crop[..., c].astype(np.float64) @ dw.T for c in range(3)], axis=-1)
    assert dct_mean(crop) == pytest.approx(coeffs.mean(), rel=1e-12)


def test_size_feature_is_the_reference_histogram_mean():
    crop = np.random.default_rng(1).integers(0, 256, size=(11, 6, 3), dtype=np.uint8)
    image = np.zeros((20, 20, 3), dtype=np.uint8)
    image[3:14, 4:10] = crop
    hist, _ = np.histogramdd(crop.reshape(-1, 3), bins=(8, 8, 8), range=[(0, 256)] * 3)
    feats, _ = crop_features(image, np.array([[3, 4, 14, 10]]))
    assert feats[0, 2] == pytest.approx(hist.mean())


def _write(path, array):
    Image.fromarray(array).save(path)


def test_manifest_features_per_class_and_skipped(tmp_path):
    img = _image()
    _write(tmp_path / "a.png", img)
    _write(tmp_path / "b.png", img)
    b = ManifestBuilder(categories_from_names(["car", "person", "bike"]))
    ia = b.add_image("a.png", 20, 30)
    b.add_objects(ia, np.array([[2, 5, 10, 17], [15, 25, 20, 30], [0, 0, 2, 10]]), [1, 2, 1])
    ib = b.add_image("b.png", 20, 30)
    b.add_objects(ib, np.array([[2, 5, 10, 17]]), [1])
    ic = b.add_image("missing.png", 20, 30)
    b.add_objects(ic, np.array([[2, 5, 10, 17]]), [1])
    idd = b.add_image("also_missing.png", 20, 30)  # only a bike: never read for classes [1, 2]
    b.add_objects(idd, np.array([[2, 5, 10, 17]]), [3])
    manifest = b.build(image_root=tmp_path)

    feats = manifest_features(manifest, classes=[1, 2])
    assert set(feats) == {1, 2}
    assert feats[1].shape == (2, 3)  # the h=2 car is dropped
    assert feats[2].shape == (1, 3)
    np.testing.assert_allclose(feats[2][0], [1.0, 7 * 5 / 25, 25 / 512])
    assert feats.skipped == [ic]

    only_b = manifest_features(manifest, classes=[1, 2, 3], image_ids=[ib])
    assert only_b[1].shape == (1, 3) and only_b[2].shape == (0, 3) and only_b[3].shape == (0, 3)
    assert only_b.skipped == []

    with pytest.raises(AlEvalError, match="not category ids"):
        manifest_features(manifest, classes=[4])
