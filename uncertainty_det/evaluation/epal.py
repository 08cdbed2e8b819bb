"""Epistemic vs aleatoric analysis (reference §4.7, ``uncertainty_ep_vs_al.py``).

Matched detections with ``iou > iou_thr`` are placed at ``x`` = mean relative aleatoric σ and ``y`` =
mean relative epistemic σ (or the classification entropy). Both axes are cut into ``g`` equal bins over
``[min, max + 5 % of the range]``; a point's cell is ``row * g + col`` with ``row`` the y bin and
``col`` the x bin (bin 0 = lowest values). The corner cells of interest are

* ``g**2 - g`` (top-left: low AL, high EP) -> ``lal_hep``;
* ``g - 1`` (bottom-right: high AL, low EP) -> ``hal_lep``.

``g`` starts at 2 and grows while at least one corner still holds ``min_samples`` (3) points; it then
steps back one. With a range padded by 5 % no point reaches the last bin of an axis beyond ``g = 21``,
so the search is bounded and done for all candidate ``g`` at once.

Changes from the reference: relative σ per detection (D4), calibrated σ from the ``_cal`` columns,
non-finite points dropped and counted (not ``nan_to_num``), a constant axis puts every point in bin 0
(the reference divided by a zero step), and the corner sets are ordered most extreme first (by the
min-max normalised ``x - y`` gap) instead of file order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import UserError
from ..tables import box_array, mean_relative_sigma, sigma_array

#: Largest grid considered; the search always ends earlier (see the module docstring).
MAX_GRID = 32


class EpalError(UserError, ValueError):
    """The epal analysis cannot run on this table (no aleatoric/epistemic columns, no point left)."""


@dataclass
class EpalResult:
    """Outcome of :func:`epal_analysis`.

    points: the kept Matches rows with ``epal_x``, ``epal_y`` and ``epal_cell`` added; grid_size: ``g``;
    x_edges / y_edges: ``[g + 1]`` bin edges; hal_lep / lal_hep: up to ``n`` rows of ``points`` from the
    bottom-right / top-left corner cells, most extreme first; y_name: ``ep`` or ``entropy``; calibrated;
    iou_thr; n_nonfinite: matched rows above the IoU threshold dropped for a non-finite x or y.
    """

    points: pd.DataFrame
    grid_size: int
    x_edges: np.ndarray
    y_edges: np.ndarray
    hal_lep: pd.DataFrame
    lal_hep: pd.DataFrame
    y_name: str = "ep"
    calibrated: bool = False
    iou_thr: float = 0.1
    n_nonfinite: int = 0

    @property
    def cells(self) -> np.ndarray:
        """``[N]`` cell index of each point (``row * g + col``)."""
        return self.points["epal_cell"].to_numpy(dtype=np.int64)


def _axis_bins(v: np.ndarray, grid_sizes: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """Bin index of each value for each grid size: ``[N]``, ``[G]`` -> ``([G, N], vmin, step [G])``."""
    vmin, vmax = float(np.min(v)), float(np.max(v))
    span = vmax + (vmax - vmin) * 0.05 - vmin
    step = span / grid_sizes.astype(np.float64)                               # [G]
    g = grid_sizes[:, None]
    if span <= 0:
        return np.zeros((grid_sizes.size, v.size), dtype=np.int32), vmin, step
    # floor_divide as the reference's Python ``//``; the top value lands in the last bin by the clip
    bins = np.floor_divide(v[None, :] - vmin, step[:, None]).astype(np.int32)
    return np.minimum(bins, g - 1), vmin, step


def grid_cells(x: np.ndarray, y: np.ndarray, grid_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cell of each point on a ``g x g`` grid: ``x, y [N]`` -> ``(cell [N], x_edges [g+1], y_edges [g+1])``.

    ``cell = row * g + col``, ``row`` the y bin and ``col`` the x bin over ``[min, max + 5 % range]``.
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if x.size == 0 or x.size != y.size:
        raise EpalError(f"grid_cells needs x and y of the same non-zero length, got {x.size} and {y.size}")
    g = np.array([int(grid_size)])
    cols, xmin, xstep = _axis_bins(x, g)
    rows, ymin, ystep = _axis_bins(y, g)
    cell = rows[0].astype(np.int64) * int(grid_size) + cols[0]
    edges = np.arange(int(grid_size) + 1, dtype=np.float64)
    return cell, xmin + edges * xstep[0], ymin + edges * ystep[0]


def corner_counts(x: np.ndarray, y: np.ndarray, grid_sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points in the top-left (``g² - g``) and bottom-right (``g - 1``) cells for each ``g``: ``[G]``, ``[G]``."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    gs = np.asarray(grid_sizes, dtype=np.int64).reshape(-1)
    cols = _axis_bins(x, gs)[0]                                              # [G, N]
    rows = _axis_bins(y, gs)[0]
    g = gs[:, None]
    top_left = ((rows == g - 1) & (cols == 0)).sum(axis=1)
    bottom_right = ((rows == 0) & (cols == g - 1)).sum(axis=1)
    return top_left, bottom_right


def find_grid_size(x: np.ndarray, y: np.ndarray, min_samples: int = 3, start: int = 2,
                   max_grid: int = MAX_GRID) -> int:
    """The reference's grid search: the first ``g >= start`` whose two corners both hold fewer than
    ``min_samples`` points, minus one (``start`` itself when it already fails).

    So ``g`` is the largest grid of the unbroken run from ``start`` in which a corner still holds
    ``min_samples`` points.
    """
    gs = np.arange(start, max_grid + 1)
    top_left, bottom_right = corner_counts(x, y, gs)
    fails = np.nonzero((top_left < min_samples) & (bottom_right < min_samples))[0]
    if fails.size == 0:  # cannot happen for max_grid > 21, see the module docstring
        raise EpalError(f"epal grid search did not stop below g = {max_grid}")
    first = int(gs[fails[0]])
    return max(start, first - 1)


def epal_points(matches: pd.DataFrame, iou_thr: float = 0.1, y_name: str = "ep", calibrated: bool = False,
                min_size: float = 1e-6) -> tuple[pd.DataFrame, int]:
    """The analysed points: matched rows with ``iou > iou_thr`` plus ``epal_x`` and ``epal_y``.

    ``epal_x`` = mean relative aleatoric σ, ``epal_y`` = mean relative epistemic σ (``y_name='ep'``) or
    ``entropy`` (``y_name='entropy'``); ``calibrated`` reads ``al_*_cal`` / ``ep_*_cal`` /
    ``entropy_cal``. Returns ``(rows, n_nonfinite)``: rows with a non-finite x or y are dropped and counted.
    """
    if y_name not in ("ep", "entropy"):
        raise EpalError(f"epal: y must be 'ep' or 'entropy', got {y_name!r}")
    suffix = "_cal" if calibrated else ""
    kind = matches["kind"].to_numpy(dtype=object)
    rows = matches.loc[(kind == "matched") & (matches["iou"].to_numpy(dtype=np.float64) > iou_thr)].copy()
    try:
        boxes = box_array(rows)
        x = mean_relative_sigma(boxes, sigma_array(rows, "al", suffix), min_size)
        if y_name == "ep":
            y = mean_relative_sigma(boxes, sigma_array(rows, "ep", suffix), min_size)
        else:
            if f"entropy{suffix}" not in rows.columns:
                raise EpalError(f"epal: the table has no column 'entropy{suffix}'")
            y = rows[f"entropy{suffix}"].to_numpy(dtype=np.float64)
    except UserError as exc:
        if isinstance(exc, EpalError):
            raise
        raise EpalError(f"epal needs aleatoric and epistemic uncertainty in the Matches table ({exc}); "
                        f"use a model trained with loss attenuation and MC dropout, or y='entropy'") from exc
    rows["epal_x"] = x
    rows["epal_y"] = y
    ok = np.isfinite(x) & np.isfinite(y)
    return rows.loc[ok], int((~ok).sum())


def _minmax(v: np.ndarray) -> np.ndarray:
    span = np.ptp(v) if v.size else 0.0
    return (v - v.min()) / span if span > 0 else np.zeros_like(v)


def epal_analysis(matches: pd.DataFrame, iou_thr: float = 0.1, y_name: str = "ep", calibrated: bool = False,
                  n: int = 10, min_samples: int = 3) -> EpalResult:
    """The full analysis on a Matches table: points, grid size, cells and the two corner sets.

    See the module docstring for the convention. ``n`` rows at most per corner set. Raises
    :class:`EpalError` when the table lacks the uncertainties or no point is left.
    """
    points, n_bad = epal_points(matches, iou_thr, y_name, calibrated)
    if len(points) == 0:
        raise EpalError(f"epal: no matched detection with IoU > {iou_thr} and finite uncertainties "
                        f"({n_bad} non-finite); lower iou_thr or check the validation output")
    x = points["epal_x"].to_numpy(dtype=np.float64)
    y = points["epal_y"].to_numpy(dtype=np.float64)
    g = find_grid_size(x, y, min_samples)
    cell, x_edges, y_edges = grid_cells(x, y, g)
    points = points.assign(epal_cell=cell)
    gap = _minmax(x) - _minmax(y)                                           # > 0: more AL than EP
    br = np.nonzero(cell == g - 1)[0]
    tl = np.nonzero(cell == g * g - g)[0]
    br = br[np.argsort(-gap[br], kind="stable")][:n]
    tl = tl[np.argsort(gap[tl], kind="stable")][:n]
    return EpalResult(points=points, grid_size=g, x_edges=x_edges, y_edges=y_edges,
                      hal_lep=points.iloc[br], lal_hep=points.iloc[tl], y_name=y_name,
                      calibrated=calibrated, iou_thr=iou_thr, n_nonfinite=n_bad)


def epal_figure(result: EpalResult, title: str | None = None):
    """Scatter of the points coloured by cell with the grid lines and marginal histograms.

    The ``hal_lep`` / ``lal_hep`` sets are outlined. Returns a matplotlib ``Figure`` (no pyplot state;
    the caller saves it).
    """
    from matplotlib.figure import Figure
    from matplotlib import colormaps

    g = result.grid_size
    x = result.points["epal_x"].to_numpy(dtype=np.float64)
    y = result.points["epal_y"].to_numpy(dtype=np.float64)
    fig = Figure(figsize=(7, 7))
    gs = fig.add_gridspec(2, 2, width_ratios=(4, 1), height_ratios=(1, 4), wspace=0.05, hspace=0.05)
    ax = fig.add_subplot(gs[1, 0])
    ax_top = fig.add_subplot(gs[0, 0], sharex=ax)
    ax_right = fig.add_subplot(gs[1, 1], sharey=ax)
    colors = colormaps["rainbow"](np.linspace(0, 1, g * g))
    ax.scatter(x, y, c=colors[result.cells], s=12)
    corners = ((result.hal_lep, "high AL / low EP", "black"), (result.lal_hep, "low AL / high EP", "dimgray"))
    for sel, label, edge in corners:
        if len(sel):
            ax.scatter(sel["epal_x"], sel["epal_y"], s=60, facecolors="none", edgecolors=edge, label=label)
    for k in range(1, g):
        ax.axvline(result.x_edges[k], linestyle="--", linewidth=0.5, color="gray")
        ax.axhline(result.y_edges[k], linestyle="--", linewidth=0.5, color="gray")
    ylabel = "entropy (bits)" if result.y_name == "entropy" else "mean relative epistemic σ"
    cal = " (calibrated)" if result.calibrated else ""
    ax.set_xlabel(f"mean relative aleatoric σ{cal}")
    ax.set_ylabel(ylabel + cal)
    if len(result.hal_lep) or len(result.lal_hep):
        ax.legend(loc="best", fontsize=8, frameon=False)
    bins = max(10, min(50, int(np.sqrt(x.size))))
    ax_top.hist(x, bins=bins, color="tab:blue")
    ax_right.hist(y, bins=bins, orientation="horizontal", color="tab:orange")
    ax_top.tick_params(labelbottom=False)
    ax_right.tick_params(labelleft=False)
    ax_top.set_title(title or f"AL vs {'ENT' if result.y_name == 'entropy' else 'EP'}: "
                              f"{x.size} detections, IoU > {result.iou_thr}, grid {g}x{g}")
    return fig


def _trend(ax, values: np.ndarray, color: str, label: str) -> None:
    """Values against their rank in the corner set, with a cubic least-squares trend (lower degree if few)."""
    v = np.asarray(values, dtype=np.float64)
    x = np.arange(v.size)
    ok = np.isfinite(v)
    ax.scatter(x[ok], v[ok], s=14, color=color, label=label)
    if ok.sum() >= 2:
        deg = int(min(3, ok.sum() - 1))
        grid = np.linspace(0, max(v.size - 1, 1), 50)
        ax.plot(grid, np.polyval(np.polyfit(x[ok], v[ok], deg), grid), color=color, linewidth=1)


def epal_comparison_figure(result: EpalResult, crop_quality: Mapping[str, np.ndarray] | None = None,
                           class_names: Sequence[str] | None = None, title: str | None = None):
    """The reference's comparison panel of the two corner sets (high AL / low EP vs low AL / high EP).

    3 x 3 panels, each set against its rank (most extreme first) with a cubic trend line: IoU, score,
    entropy (bits), predicted box area (px²), crop quality (``crop_quality[set name]``, e.g. the Laplacian
    variance of the crop; the reference used BRISQUE), min-max normalised AL and EP (over all points), plus
    the predicted and GT class histograms of both sets. Returns a matplotlib ``Figure``.
    """
    from matplotlib.figure import Figure

    sets = (("hal_lep", "high AL / low EP", result.hal_lep, "tab:red"),
            ("lal_hep", "low AL / high EP", result.lal_hep, "tab:blue"))
    xs, ys = result.points["epal_x"].to_numpy(np.float64), result.points["epal_y"].to_numpy(np.float64)

    def norm(v, ref):
        span = np.ptp(ref) if ref.size else 0.0
        return (np.asarray(v, np.float64) - ref.min()) / span if span > 0 else np.zeros(len(v))

    panels = [
        ("IoU with GT", lambda r, k: r["iou"].to_numpy(np.float64)),
        ("score", lambda r, k: r["score"].to_numpy(np.float64)),
        ("entropy (bits)", lambda r, k: r["entropy"].to_numpy(np.float64) if "entropy" in r else np.full(len(r), np.nan)),
        ("predicted area (px²)", lambda r, k: ((r["ymax"] - r["ymin"]) * (r["xmax"] - r["xmin"])).to_numpy(np.float64)),
        ("crop sharpness (Laplacian variance)", lambda r, k: np.asarray((crop_quality or {}).get(k, np.full(len(r), np.nan)), np.float64)),
        ("AL (min-max normalised)", lambda r, k: norm(r["epal_x"], xs)),
        (f"{'entropy' if result.y_name == 'entropy' else 'EP'} (min-max normalised)", lambda r, k: norm(r["epal_y"], ys)),
    ]
    fig = Figure(figsize=(12, 10))
    for i, (name, value) in enumerate(panels):
        ax = fig.add_subplot(3, 3, i + 1)
        for key, label, rows, color in sets:
            if len(rows):
                _trend(ax, value(rows, key), color, label)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("rank in set", fontsize=8)
        if i == 0:
            ax.legend(frameon=False, fontsize=7)
    for j, (column, what) in enumerate((("class_id", "predicted"), ("gt_class_id", "GT"))):
        ax = fig.add_subplot(3, 3, 8 + j)
        ids = np.concatenate([rows[column].to_numpy(np.int64) for _, _, rows, _ in sets if len(rows)] or [[1]])
        bins = np.arange(1, max(int(ids.max()), len(class_names or [])) + 2)
        for s, (_, label, rows, color) in enumerate(sets):
            counts = np.histogram(rows[column].to_numpy(np.int64), bins=bins)[0] if len(rows) else np.zeros(len(bins) - 1)
            ax.bar(bins[:-1] + (s - 0.5) * 0.4, counts, width=0.4, color=color, label=label)
        ax.set_xticks(bins[:-1])
        if class_names:
            ax.set_xticklabels([class_names[c - 1] if c - 1 < len(class_names) else str(c) for c in bins[:-1]],
                               rotation=30, fontsize=7)
        ax.set_title(f"{what} class", fontsize=9)
    fig.suptitle(title or f"corner sets: {len(result.hal_lep)} high AL / low EP, {len(result.lal_hep)} low AL / high EP")
    fig.tight_layout()
    return fig
