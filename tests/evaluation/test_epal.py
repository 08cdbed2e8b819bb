"""Epistemic-vs-aleatoric grid analysis: cell convention, grid search against a port of the reference loop."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from uncertainty_det.evaluation.epal import (
    EpalError, corner_counts, epal_analysis, epal_figure, epal_points, find_grid_size, grid_cells,
)


# ---------------------------------------------------------------------------------------------
# Port of the reference (uncertainty_ep_vs_al.py, per-point loops) as an independent check


def _ref_cells(g, data):
    x_min, x_max = np.min(data[:, 0]), np.max(data[:, 0])
    y_min, y_max = np.min(data[:, 1]), np.max(data[:, 1])
    x_step = (x_max + (x_max - x_min) * 0.05 - x_min) / g
    y_step = (y_max + (y_max - y_min) * 0.05 - y_min) / g
    cells = []
    for i in range(data.shape[0]):
        row = int(min((data[i, 1] - y_min) // y_step, g - 1))
        col = int(min((data[i, 0] - x_min) // x_step, g - 1))
        cells.append(row * g + col)
    return np.asarray(cells)


def _ref_grid(x, y, min_samples=3):
    data = np.stack([x, y], axis=-1)
    g = 2
    cells = _ref_cells(g, data)
    tl_empty = (cells == g * g - g).sum() < min_samples
    br_empty = (cells == g - 1).sum() < min_samples
    if not tl_empty or not br_empty:
        while not tl_empty or not br_empty:
            g += 1
            cells = _ref_cells(g, data)
            tl_empty = (cells == g * g - g).sum() < min_samples
            br_empty = (cells == g - 1).sum() < min_samples
        g -= 1
    return g, _ref_cells(g, data)


# hand case: three points near each corner of interest and one in the middle
X = np.array([0.0, 0.1, 0.05, 1.0, 0.9, 0.95, 0.5])
Y = np.array([1.0, 0.9, 0.95, 0.0, 0.1, 0.05, 0.5])


def test_cell_convention_hand_case():
    cell, xe, ye = grid_cells(X, Y, 2)
    # g = 2: top-left (low AL, high EP) = g*g - g = 2, bottom-right (high AL, low EP) = g - 1 = 1
    np.testing.assert_array_equal(cell, [2, 2, 2, 1, 1, 1, 0])
    np.testing.assert_allclose(xe, [0.0, 0.525, 1.05])
    np.testing.assert_allclose(ye, [0.0, 0.525, 1.05])
    tl, br = corner_counts(X, Y, np.arange(2, 10))
    # (0.1, 0.9) leaves the top-left cell after g = 7, (0.05, 0.95) after g = 10
    np.testing.assert_array_equal(tl, [3, 3, 3, 3, 3, 3, 2, 2])
    np.testing.assert_array_equal(br, tl)
    assert find_grid_size(X, Y) == 7 == _ref_grid(X, Y)[0]


def test_grid_search_equals_reference_on_random_data():
    rng = np.random.default_rng(0)
    for trial in range(12):
        n = int(rng.integers(5, 300))
        x = rng.lognormal(0, 1, n)
        y = rng.lognormal(0, 1, n) * (1 + 0.5 * trial % 3) - 0.5 * x * (trial % 2)
        g, ref_cells = _ref_grid(x, y)
        assert find_grid_size(x, y) == g
        np.testing.assert_array_equal(grid_cells(x, y, g)[0], ref_cells)


def test_grid_search_start_when_corners_are_empty_and_constant_axis():
    # nothing in either corner at g = 2: g stays 2 (the reference does not step back)
    x = np.array([0.0, 0.2, 0.9, 1.0])
    y = np.array([0.0, 0.1, 0.9, 1.0])
    assert find_grid_size(x, y) == 2 == _ref_grid(x, y)[0]
    # a constant axis puts every point in bin 0 (the reference divided by a zero step)
    cell, _, ye = grid_cells(np.array([0.0, 0.5, 1.0]), np.ones(3), 3)
    np.testing.assert_array_equal(cell, [0, 1, 2])
    assert find_grid_size(np.array([0.0, 0.5, 1.0]), np.ones(3)) == 2


def _matches_for(x, y, entropy=None) -> pd.DataFrame:
    """Matched rows with 10x20 boxes whose mean relative al / ep σ equal x / y."""
    n = len(x)
    df = pd.DataFrame({"image_id": np.arange(n), "det": 0, "class_id": 1, "gt_class_id": 1, "score": 0.9,
                       "ymin": 0.0, "xmin": 0.0, "ymax": 10.0, "xmax": 20.0, "iou": 0.8, "kind": "matched"})
    for c, size in (("ymin", 10.0), ("xmin", 20.0), ("ymax", 10.0), ("xmax", 20.0)):
        df[f"al_{c}"] = np.asarray(x) * size
        df[f"ep_{c}"] = np.asarray(y) * size
        df[f"al_{c}_cal"] = np.asarray(x) * size * 2
        df[f"ep_{c}_cal"] = np.asarray(y) * size * 2
    df["entropy"] = entropy if entropy is not None else np.asarray(y)
    return df


def test_epal_analysis_on_matches_table():
    m = _matches_for(X, Y)
    extra = _matches_for([5.0, 0.3], [5.0, 0.3])
    extra.loc[0, "iou"] = 0.05                                    # below iou_thr: not a point
    extra.loc[1, "al_ymin"] = np.nan                              # non-finite: dropped and counted
    missed = _matches_for([0.2], [0.2]).assign(kind="missed", iou=0.0)
    res = epal_analysis(pd.concat([m, extra, missed], ignore_index=True), n=2)
    assert len(res.points) == 7 and res.n_nonfinite == 1
    np.testing.assert_allclose(res.points["epal_x"], X)
    np.testing.assert_allclose(res.points["epal_y"], Y)
    assert res.grid_size == 7
    np.testing.assert_array_equal(res.cells, _ref_grid(X, Y)[1])
    # corner sets: most extreme first, at most n
    np.testing.assert_allclose(res.hal_lep["epal_x"], [1.0, 0.95])
    np.testing.assert_allclose(res.lal_hep["epal_y"], [1.0, 0.95])
    assert (res.hal_lep["epal_cell"] == res.grid_size - 1).all()
    assert (res.lal_hep["epal_cell"] == res.grid_size ** 2 - res.grid_size).all()
    # calibrated columns and entropy as y
    cal = epal_analysis(m, calibrated=True)
    np.testing.assert_allclose(cal.points["epal_x"], 2 * X)
    ent = epal_analysis(_matches_for(X, np.zeros(7), entropy=Y), y_name="entropy")
    np.testing.assert_allclose(ent.points["epal_y"], Y)
    assert ent.grid_size == 7


def test_epal_errors():
    m = _matches_for(X, Y)
    with pytest.raises(EpalError, match="aleatoric"):
        epal_points(m.drop(columns=["al_ymin"]))
    with pytest.raises(EpalError, match="y must be"):
        epal_points(m, y_name="mcclass")
    with pytest.raises(EpalError, match="no matched detection"):
        epal_analysis(m.assign(iou=0.05))


def test_epal_figure_renders():
    rng = np.random.default_rng(1)
    x, y = rng.lognormal(size=60), rng.lognormal(size=60)
    fig = epal_figure(epal_analysis(_matches_for(x, y)))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=40)
    assert buf.getvalue()[:4] == b"\x89PNG"


def test_comparison_panel_plots_both_sets_with_normalised_uncertainties():
    from uncertainty_det.evaluation.epal import epal_comparison_figure

    res = epal_analysis(_matches_for(X, Y), n=2)
    fig = epal_comparison_figure(res, {"hal_lep": np.array([1.0, 2.0])}, ["a", "b"])
    assert len(fig.axes) == 9
    al_panel = next(ax for ax in fig.axes if ax.get_title().startswith("AL"))
    # min-max normalised over all points: the high-AL set sits at the top of the AL range
    hal = al_panel.collections[0].get_offsets()[:, 1]
    np.testing.assert_allclose(hal, (np.array([1.0, 0.95]) - X.min()) / (X.max() - X.min()))
