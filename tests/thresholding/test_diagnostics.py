"""Diagnostics: grid binning by hand, URMSE units, outcome masks, image picks, figures render."""
from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest

from uncertainty_det.thresholding import ThresholdingError
from uncertainty_det.thresholding.diagnostics import (
    box_centres, grid_cells, grid_count, grid_mean, gt_count_map, heatmap_figure, heatmaps, infer_image_shape,
    outcome_masks, pick_images, spider_figure, uncertainty_map, urmse_values,
)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=30)
    return buf.getvalue()


def test_grid_binning_hand_case():
    # image 100 x 200 (H x W), grid 2 x 4: cells are 50 px tall and 50 px wide
    pts = np.array([[10, 10], [60, 190], [50, 50], [100, 200], [49.9, 49.9], [np.nan, 5], [-5, 250]])
    np.testing.assert_array_equal(grid_cells(pts, (100, 200), (2, 4)), [0, 7, 5, 7, 0, -1, 3])
    counts = grid_count(pts, (100, 200), (2, 4))
    np.testing.assert_array_equal(counts, [[2, 0, 0, 1], [0, 1, 0, 2]])
    vals = np.array([1.0, 2.0, 3.0, 4.0, 3.0, 9.0, np.nan])
    mean = grid_mean(pts, vals, (100, 200), (2, 4))
    expected = np.array([[2.0, np.nan, np.nan, np.nan], [np.nan, 3.0, np.nan, 3.0]])
    np.testing.assert_array_equal(mean, expected)                  # NaN value in cell 3 ignored
    np.testing.assert_allclose(grid_mean(pts[:1], [4.0], (100, 200), (2, 4), root=True)[0, 0], 2.0)
    with pytest.raises(ThresholdingError):
        grid_count(pts, (0, 200), (2, 4))


def test_box_centres_and_shape():
    np.testing.assert_array_equal(box_centres(np.array([[0, 0, 10, 20], [10, 10, 20, 30]])), [[5, 10], [15, 20]])
    f = pd.DataFrame({"ymax": [10.2, 3.0], "xmax": [5.0, 40.5], "gt_ymax": [50.0, np.nan], "gt_xmax": [1.0, np.nan]})
    assert infer_image_shape(f) == (50.0, 41.0)


def _matches() -> pd.DataFrame:
    return pd.DataFrame({
        "image_id": [1, 1, 2, 2], "gt_id": [10, 10, 20, -1],
        "kind": ["matched", "matched", "matched", "background"],
        "ymin": [0.0, 0.0, 50.0, 60.0], "xmin": [0.0, 0.0, 100.0, 150.0],
        "ymax": [10.0, 10.0, 70.0, 80.0], "xmax": [10.0, 10.0, 140.0, 190.0],
        "gt_ymin": [1.0, 1.0, 50.0, np.nan], "gt_xmin": [1.0, 1.0, 100.0, np.nan],
        "gt_ymax": [11.0, 11.0, 70.0, np.nan], "gt_xmax": [11.0, 11.0, 140.0, np.nan],
        "al_ymin": [0.5, 0.5, 0.0, 1.0], "al_xmin": [0.5, 0.5, 0.0, 1.0],
        "al_ymax": [0.5, 0.5, 0.0, 1.0], "al_xmax": [0.5, 0.5, 0.0, 1.0],
    })


def test_urmse_same_units():
    m = _matches()
    pts, px = urmse_values(m, relative=False)
    # row 0: |residual| = 1 px, σ = 0.5 px -> 0.25 px²; row 2: perfect box, σ 0 -> 0
    np.testing.assert_allclose(px, [0.25, 0.25, 0.0])
    _, rel = urmse_values(m, relative=True)
    np.testing.assert_allclose(rel, [0.25 / 100, 0.25 / 100, 0.0])   # both divided by the 10 px box
    np.testing.assert_array_equal(pts[0], [5, 5])
    with pytest.raises(ThresholdingError, match="al_ymin_cal"):
        urmse_values(m, calibrated=True)


def test_heatmaps_from_tables():
    m = _matches()
    dets = m.iloc[[0, 2, 3]].reset_index(drop=True)
    u = np.array([0.2, 0.4, 0.9])
    maps = heatmaps(m, dets, u, image_shape=(100, 200), grid_shape=(2, 4), cd=np.array([True, False, False]),
                    threshold=0.5)
    np.testing.assert_array_equal(maps["gt_count"], [[1, 0, 0, 0], [0, 0, 1, 0]])   # GT 10 counted once
    assert maps["mean_uncertainty"][0, 0] == pytest.approx(0.2)
    assert maps["mean_uncertainty"][1, 3] == pytest.approx(0.9)
    assert maps["urmse"][0, 0] == pytest.approx(math.sqrt(0.0025))
    assert maps["mean_uncertainty_correctly_removed"][1, 3] == pytest.approx(0.9)
    assert maps["mean_uncertainty_falsely_kept"][1, 2] == pytest.approx(0.4)
    assert np.isnan(maps["mean_uncertainty_falsely_removed"]).all()
    no_sigma = heatmaps(m.drop(columns=["al_ymin"]), dets, u, grid_shape=(2, 2))
    assert set(no_sigma) == {"gt_count", "mean_uncertainty"}
    with pytest.raises(ThresholdingError):
        uncertainty_map(dets, u[:2], (100, 200))
    with pytest.raises(ThresholdingError, match="gt_id"):
        gt_count_map(m.drop(columns=["gt_id"]), (100, 200))
    fig = heatmap_figure(maps, (100, 200))
    assert _png(fig)[:4] == b"\x89PNG"


def test_outcomes_and_image_picks():
    u = np.array([0.9, 0.8, 0.1, 0.9, 0.2, 0.95, 0.1, 0.3, np.nan])
    cd = np.array([0, 0, 1, 1, 0, 0, 1, 1, 1], dtype=bool)
    ids = np.array([1, 1, 1, 2, 2, 3, 4, 5, 6])
    masks = outcome_masks(u, cd, 0.5)
    np.testing.assert_array_equal(masks["correctly_removed"], [1, 1, 0, 0, 0, 1, 0, 0, 0])
    np.testing.assert_array_equal(masks["falsely_removed"], [0, 0, 0, 1, 0, 0, 0, 0, 1])   # NaN -> removed
    np.testing.assert_array_equal(masks["falsely_kept"], [0, 0, 0, 0, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(masks["correctly_kept"], [0, 0, 1, 0, 0, 0, 1, 1, 0])
    picks = pick_images(ids, u, cd, 0.5, k=2, seed=0)
    assert picks["correctly_removed"] == [1, 3]
    assert picks["falsely_removed"] == [2, 6]
    assert picks["falsely_kept"] == [2]
    assert set(picks["untouched"]) <= {4, 5} and len(picks["untouched"]) == 2
    assert pick_images(ids, u, cd, 0.5, k=1, seed=7) == pick_images(ids, u, cd, 0.5, k=1, seed=7)
    with pytest.raises(ThresholdingError):
        outcome_masks(u, cd[:3], 0.5)


def test_spider_figure():
    metrics = {"entropy": {"auroc": 0.8, "fd_at_cd": 0.4, "cd_at_fd": 0.3, "jsd": 0.5},
               "combination": {"auroc": 0.9, "fd_at_cd": 0.5, "cd_at_fd": np.nan, "jsd": 0.6}}
    fig = spider_figure(metrics, title="budget 0.95")
    assert fig.axes[0].name == "polar"
    assert len(fig.axes[0].lines) == 2
    assert _png(fig)[:4] == b"\x89PNG"
    with pytest.raises(ThresholdingError):
        spider_figure({})
