"""Corrupted copies of a split (udet-validate validation.corruptions) and crop mosaics (udet-epal)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from uncertainty_det.data.corruptions import apply_corruption
from uncertainty_det.data.dataset_ops import corrupted_copy
from uncertainty_det.data.errors import DatasetError
from uncertainty_det.data.images import load_rgb
from uncertainty_det.data.manifest import ManifestBuilder, categories_from_names
from uncertainty_det.data.visualize import crop_mosaic, crop_sharpness


def _manifest(root):
    root.mkdir()
    rng = np.random.default_rng(0)
    b = ManifestBuilder(categories_from_names(["a"]))
    for image_id in (1, 2, 3):
        b.add_image(f"sub/{image_id}.png", 40, 60, image_id=image_id)
        b.add_objects(image_id, np.array([[5, 5, 30, 40]]), [1])
    (root / "sub").mkdir()
    for image_id in (1, 2):
        Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(root / "sub" / f"{image_id}.png")
    (root / "sub" / "3.png").write_bytes(b"not an image")
    return b.build(image_root=root)


def test_corrupted_copy_writes_seeded_corruptions_once(tmp_path):
    manifest = _manifest(tmp_path / "images")
    folder = tmp_path / "fog_3"
    copy, skipped = corrupted_copy(manifest, "fog", 3, folder, seed=10, progress=False)
    assert skipped == 1 and copy.image_ids == [1, 2] and copy.image_root == folder
    assert copy.num_annotations == 2                       # GT unchanged
    for image_id in (1, 2):
        expected = apply_corruption(load_rgb(manifest.image_path(image_id)), "fog", 3, seed=10 + image_id)
        np.testing.assert_array_equal(load_rgb(copy.image_path(image_id)), expected)
    stamp = (folder / "sub" / "1.png").stat().st_mtime_ns
    again, skipped_again = corrupted_copy(manifest, "fog", 3, folder, seed=10, progress=False)
    assert (folder / "sub" / "1.png").stat().st_mtime_ns == stamp and skipped_again == 1   # reused
    corrupted_copy(manifest, "fog", 5, folder, seed=10, progress=False)                    # other level: rebuilt
    assert not np.array_equal(load_rgb(folder / "sub" / "1.png"),
                              apply_corruption(load_rgb(manifest.image_path(1)), "fog", 3, seed=11))
    with pytest.raises(DatasetError, match="unknown corruption"):
        corrupted_copy(manifest, "smoke", 3, tmp_path / "x", progress=False)


def test_crop_mosaic(tmp_path):
    manifest = _manifest(tmp_path / "images")
    rows = pd.DataFrame({"image_id": [1, 2, 3, 1], "class_id": [1, 1, 1, 1], "gt_class_id": [1, 1, 1, 1],
                         "ymin": [5.0, 0, 0, np.nan], "xmin": [5.0, 0, 0, 0], "ymax": [30.0, 10, 10, 5],
                         "xmax": [40.0, 10, 10, 5], "gt_ymin": [5.0] * 4, "gt_xmin": [5.0] * 4,
                         "gt_ymax": [30.0] * 4, "gt_xmax": [40.0] * 4})
    mosaic = crop_mosaic(manifest, rows, cell=32, cols=5)
    assert mosaic.shape == (32, 64, 3)                     # 2 crops: image 3 unreadable, one NaN box
    assert crop_mosaic(manifest, rows, cell=32, gt=True).shape == (32, 96, 3)   # GT boxes of the 3 readable rows
    assert crop_mosaic(manifest, rows.iloc[2:3]) is None


def test_crop_sharpness_is_the_laplacian_variance(tmp_path):
    from scipy import ndimage

    manifest = _manifest(tmp_path / "images")
    rows = pd.DataFrame({"image_id": [1, 3, 1], "ymin": [5.0, 0, np.nan], "xmin": [5.0, 0, 0],
                         "ymax": [30.0, 10, 5], "xmax": [40.0, 10, 5]})
    got = crop_sharpness(manifest, rows)
    crop = load_rgb(manifest.image_path(1))[5:30, 5:40].astype(np.float64).mean(axis=-1)
    assert got[0] == pytest.approx(ndimage.laplace(crop).var()) and got[0] > 0
    assert np.isnan(got[1]) and np.isnan(got[2])          # unreadable image, NaN box
