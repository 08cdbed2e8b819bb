"""Thresholding diagnostics (reference §1.6, DESIGN §9): spider plot, image-plane heatmaps, image picks.

Figures are built without pyplot (no global state, no backend needed) and returned; the caller saves
them. Heatmaps bin *box centres* on a ``grid_shape`` grid over the image plane (the reference painted
every pixel of each box): cell ``(r, c)`` holds centres with ``r = floor(yc / H * rows)`` and
``c = floor(xc / W * cols)``, clipped to the grid (centres on or beyond the far edge go to the last cell).
The URMSE map compares residual and σ in the same units (both relative to the predicted box size, or
both in pixels): the reference mixed pixel residuals with relative σ.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..tables import BOX_COLUMNS, CORNERS
from ._common import ThresholdingError

SPIDER_KEYS = ("auroc", "fd_at_cd", "cd_at_fd", "jsd")
_SPIDER_LABELS = {"auroc": "AUROC", "fd_at_cd": "FD@CD", "cd_at_fd": "CD@FD", "jsd": "JSD / √ln2"}
OUTCOMES = ("correctly_removed", "falsely_removed", "falsely_kept")
_JSD_MAX = math.sqrt(math.log(2.0))


def _figure(figsize=(6.0, 5.0)):
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


# ---------------------------------------------------------------------------------------------
# Spider plot


def spider_figure(metrics: Mapping[str, Any], keys: Sequence[str] = SPIDER_KEYS, title: str | None = None):
    """Radar plot of the averaged metrics of each uncertainty (and the combination).

    metrics: ``{name: summary dict}`` (e.g. ``ThresholdModel.metrics``) or ``{name: ThresholdMetrics}``;
    keys: the axes (default AUROC, FD@CD, CD@FD, JSD). All axes are in [0, 1]; the JSD distance is divided
    by its maximum ``sqrt(ln 2)``. NaN is drawn as 0. Returns a ``Figure``.
    """
    if not metrics:
        raise ThresholdingError("spider plot needs at least one uncertainty's metrics")
    keys = list(keys)
    angles = np.linspace(0.0, 2 * np.pi, len(keys), endpoint=False)
    fig = _figure((6.0, 6.0))
    ax = fig.add_subplot(1, 1, 1, projection="polar")
    for name, m in metrics.items():
        summary = m.summary() if hasattr(m, "summary") else m
        vals = np.array([float(summary.get(k, np.nan)) for k in keys])
        vals = np.where(np.array(keys) == "jsd", vals / _JSD_MAX, vals)
        vals = np.nan_to_num(vals, nan=0.0)
        closed = np.append(vals, vals[:1])
        ax.plot(np.append(angles, angles[:1]), closed, label=str(name), linewidth=2.0 if name == "combination" else 1.2)
        ax.fill(np.append(angles, angles[:1]), closed, alpha=0.08)
    ax.set_xticks(angles)
    ax.set_xticklabels([_SPIDER_LABELS.get(k, k) for k in keys])
    ax.set_ylim(0.0, 1.0)
    ax.legend(loc="upper right", bbox_to_anchor=(1.3, 1.1), frameon=False, fontsize="small")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Grid binning


def box_centres(boxes: np.ndarray) -> np.ndarray:
    """``[N, 4]`` boxes ``[ymin, xmin, ymax, xmax]`` -> ``[N, 2]`` centres ``(yc, xc)`` (pixels)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.stack([(b[:, 0] + b[:, 2]) / 2.0, (b[:, 1] + b[:, 3]) / 2.0], axis=1)


def _check_shapes(image_shape, grid_shape) -> tuple[float, float, int, int]:
    h, w = (float(x) for x in image_shape)
    gh, gw = (int(x) for x in grid_shape)
    if not (h > 0 and w > 0 and gh > 0 and gw > 0):
        raise ThresholdingError(f"image_shape and grid_shape must be positive (H, W) / (rows, cols), got "
                                f"{tuple(image_shape)} and {tuple(grid_shape)}")
    return h, w, gh, gw


def grid_cells(points: np.ndarray, image_shape: Sequence[float], grid_shape: Sequence[int]) -> np.ndarray:
    """Flat cell index ``[N]`` (``row * cols + col``) of points ``[N, 2]`` ``(y, x)``; -1 for non-finite points."""
    h, w, gh, gw = _check_shapes(image_shape, grid_shape)
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    ok = np.all(np.isfinite(p), axis=1)
    safe = np.where(ok[:, None], p, 0.0)
    r = np.clip(np.floor(safe[:, 0] / h * gh), 0, gh - 1).astype(np.int64)
    c = np.clip(np.floor(safe[:, 1] / w * gw), 0, gw - 1).astype(np.int64)
    return np.where(ok, r * gw + c, -1)


def grid_count(points: np.ndarray, image_shape: Sequence[float], grid_shape: Sequence[int]) -> np.ndarray:
    """``[rows, cols]`` int64: number of points ``[N, 2]`` ``(y, x)`` in each cell."""
    gh, gw = (int(x) for x in grid_shape)
    cells = grid_cells(points, image_shape, grid_shape)
    return np.bincount(cells[cells >= 0], minlength=gh * gw).reshape(gh, gw)


def grid_mean(points: np.ndarray, values: np.ndarray, image_shape: Sequence[float], grid_shape: Sequence[int],
              root: bool = False) -> np.ndarray:
    """``[rows, cols]`` mean of ``values [N]`` over the points ``[N, 2]`` in each cell (NaN where empty).

    Non-finite values are ignored. With ``root`` the square root of the mean (for RMS maps).
    """
    gh, gw = (int(x) for x in grid_shape)
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    cells = grid_cells(points, image_shape, grid_shape)
    if cells.size != v.size:
        raise ThresholdingError(f"{cells.size} points but {v.size} values")
    ok = (cells >= 0) & np.isfinite(v)
    total = np.bincount(cells[ok], weights=v[ok], minlength=gh * gw)
    count = np.bincount(cells[ok], minlength=gh * gw)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return (np.sqrt(mean) if root else mean).reshape(gh, gw)


# ---------------------------------------------------------------------------------------------
# Heatmaps from tables


def infer_image_shape(*frames: pd.DataFrame) -> tuple[float, float]:
    """``(H, W)``: the largest ``ymax``/``xmax`` (and ``gt_ymax``/``gt_xmax``) of the frames, rounded up."""
    h = w = 0.0
    for f in frames:
        for ycol, xcol in (("ymax", "xmax"), ("gt_ymax", "gt_xmax")):
            if ycol in f.columns and len(f):
                h = max(h, float(np.nanmax(np.append(f[ycol].to_numpy(dtype=np.float64), 0.0))))
                w = max(w, float(np.nanmax(np.append(f[xcol].to_numpy(dtype=np.float64), 0.0))))
    if h <= 0 or w <= 0:
        raise ThresholdingError("cannot infer the image size from the tables; pass image_shape=(H, W)")
    return float(math.ceil(h)), float(math.ceil(w))


def gt_count_map(matches: pd.DataFrame, image_shape: Sequence[float],
                 grid_shape: Sequence[int] = (16, 16)) -> np.ndarray:
    """``[rows, cols]`` number of GT box centres per cell; each GT (``image_id``, ``gt_id``) counted once."""
    gt_cols = [f"gt_{c}" for c in CORNERS]
    missing = [c for c in ("image_id", "gt_id", *gt_cols) if c not in matches.columns]
    if missing:
        raise ThresholdingError(f"Matches table has no column {missing[0]!r}; build it with "
                                f"evaluation.matching.match()")
    rows = matches.loc[matches["gt_id"].to_numpy() >= 0].drop_duplicates(["image_id", "gt_id"])
    return grid_count(box_centres(rows.loc[:, gt_cols].to_numpy(np.float64)), image_shape, grid_shape)


def uncertainty_map(detections: pd.DataFrame, u: np.ndarray, image_shape: Sequence[float],
                    grid_shape: Sequence[int] = (16, 16), mask: np.ndarray | None = None) -> np.ndarray:
    """``[rows, cols]`` mean of ``u [N]`` over the detection centres (rows of ``detections``) in each cell.

    mask: optional ``[N]`` bool selecting the detections (e.g. an outcome of :func:`outcome_masks`).
    """
    u = np.asarray(u, dtype=np.float64).reshape(-1)
    if u.size != len(detections):
        raise ThresholdingError(f"{u.size} uncertainties for {len(detections)} detection rows")
    pts = box_centres(detections.loc[:, list(BOX_COLUMNS)].to_numpy(np.float64))
    if mask is not None:
        mask = np.asarray(mask, dtype=bool).reshape(-1)
        pts, u = pts[mask], u[mask]
    return grid_mean(pts, u, image_shape, grid_shape)


def urmse_values(matches: pd.DataFrame, kind: str = "al", calibrated: bool = False, relative: bool = True,
                 min_size: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Per matched row ``mean_4((|gt - pred| - σ)^2)``: returns ``(centres [M, 2], values [M])``.

    kind: ``al`` or ``ep`` σ columns (``_cal`` when calibrated). relative: residual and σ both divided by
    the predicted box ``[h, w, h, w]`` (dimensionless); else both in pixels (values in px²).
    """
    suffix = "_cal" if calibrated else ""
    cols = [f"{kind}_{c}{suffix}" for c in CORNERS]
    need = ["kind", *BOX_COLUMNS, *(f"gt_{c}" for c in CORNERS), *cols]
    missing = [c for c in need if c not in matches.columns]
    if missing:
        raise ThresholdingError(f"URMSE map needs column {missing[0]!r}; it needs a Matches table with "
                                f"{'calibrated ' if calibrated else ''}{kind} σ columns")
    rows = matches.loc[matches["kind"].to_numpy(dtype=object) == "matched"]
    pred = rows.loc[:, list(BOX_COLUMNS)].to_numpy(np.float64)
    gt = rows.loc[:, [f"gt_{c}" for c in CORNERS]].to_numpy(np.float64)
    sigma = rows.loc[:, cols].to_numpy(np.float64)
    err = np.abs(gt - pred) - sigma
    if relative:
        h = np.maximum(pred[:, 2] - pred[:, 0], min_size)
        w = np.maximum(pred[:, 3] - pred[:, 1], min_size)
        err = err / np.stack([h, w, h, w], axis=1)
    return box_centres(pred), np.mean(err ** 2, axis=1)


def heatmaps(matches: pd.DataFrame, detections: pd.DataFrame, u: np.ndarray, image_shape: Sequence[float] | None = None,
             grid_shape: Sequence[int] = (16, 16), cd: np.ndarray | None = None, threshold: float | None = None,
             kind: str = "al", calibrated: bool = False, relative: bool = True) -> dict[str, np.ndarray]:
    """The image-plane maps ``{name: [rows, cols]}``.

    matches: the Matches table (for GT locations and URMSE); detections: its detection rows with their
    combined uncertainty ``u [N]``. Maps: ``gt_count``; ``mean_uncertainty``; ``urmse`` (root of the cell
    mean of :func:`urmse_values`; only when the ``kind`` σ columns exist); with ``cd [N]`` (one IoU
    threshold) and ``threshold``, ``mean_uncertainty_<outcome>`` for each of :data:`OUTCOMES`.
    image_shape: ``(H, W)`` pixels (default: inferred from the boxes).
    """
    if image_shape is None:
        image_shape = infer_image_shape(matches, detections)
    maps = {"gt_count": gt_count_map(matches, image_shape, grid_shape),
            "mean_uncertainty": uncertainty_map(detections, u, image_shape, grid_shape)}
    suffix = "_cal" if calibrated else ""
    if all(f"{kind}_{c}{suffix}" in matches.columns for c in CORNERS):
        pts, vals = urmse_values(matches, kind, calibrated, relative)
        maps["urmse"] = grid_mean(pts, vals, image_shape, grid_shape, root=True)
    if cd is not None and threshold is not None:
        for name, mask in outcome_masks(u, cd, threshold).items():
            if name in OUTCOMES:
                maps[f"mean_uncertainty_{name}"] = uncertainty_map(detections, u, image_shape, grid_shape, mask)
    return maps


def heatmap_figure(maps: Mapping[str, np.ndarray], image_shape: Sequence[float] | None = None, ncols: int = 3):
    """One panel per map (``imshow`` over the image plane, colour bar each); returns a ``Figure``."""
    if not maps:
        raise ThresholdingError("no heatmaps to draw")
    n = len(maps)
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = _figure((4.5 * ncols, 3.2 * nrows))
    for i, (name, grid) in enumerate(maps.items()):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        extent = None if image_shape is None else (0, float(image_shape[1]), float(image_shape[0]), 0)
        im = ax.imshow(np.ma.masked_invalid(np.asarray(grid, dtype=np.float64)), extent=extent, aspect="auto",
                       cmap="viridis", interpolation="nearest")
        fig.colorbar(im, ax=ax)
        ax.set_title(name)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Outcomes and image picks


def outcome_masks(u: np.ndarray, cd: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
    """``[N]`` bool masks at one IoU threshold (reference §1.6): removed = ``u >= threshold`` (NaN counts as
    removed, as :meth:`ThresholdModel.accept` sends it to review).

    Keys: ``correctly_removed`` (removed FD), ``falsely_removed`` (removed CD), ``falsely_kept`` (kept FD),
    ``correctly_kept`` (kept CD).
    """
    u = np.asarray(u, dtype=np.float64).reshape(-1)
    cd = np.asarray(cd, dtype=bool).reshape(-1)
    if cd.size != u.size:
        raise ThresholdingError(f"{u.size} uncertainties but {cd.size} CD labels (pass one IoU threshold's row)")
    with np.errstate(invalid="ignore"):
        removed = ~(u < float(threshold))
    return {"correctly_removed": removed & ~cd, "falsely_removed": removed & cd,
            "falsely_kept": ~removed & ~cd, "correctly_kept": ~removed & cd}


def pick_images(image_ids: np.ndarray, u: np.ndarray, cd: np.ndarray, threshold: float, k: int = 10,
                seed: int = 0) -> dict[str, list[int]]:
    """Image ids to draw: for each of :data:`OUTCOMES` the ``k`` images with the most such detections
    (ties: smaller image id first; images with none are not listed), and ``untouched``: ``k`` random images
    (seeded) in which no detection is removed. Inputs are per detection row: ``image_ids [N]``, ``u [N]``,
    ``cd [N]`` at one IoU threshold (the reference used the largest) and that threshold.
    """
    ids = np.asarray(image_ids, dtype=np.int64).reshape(-1)
    masks = outcome_masks(u, cd, threshold)
    if ids.size != masks["correctly_kept"].size:
        raise ThresholdingError(f"{ids.size} image ids for {masks['correctly_kept'].size} detections")
    uniq, inv = np.unique(ids, return_inverse=True)
    out: dict[str, list[int]] = {}
    for name in OUTCOMES:
        counts = np.bincount(inv, weights=masks[name].astype(np.float64), minlength=uniq.size)
        order = np.lexsort((uniq, -counts))                                       # most first, then smaller id
        order = order[counts[order] > 0][:k]
        out[name] = [int(x) for x in uniq[order]]
    removed = np.bincount(inv, weights=(masks["correctly_removed"] | masks["falsely_removed"]).astype(np.float64),
                          minlength=uniq.size)
    calm = uniq[removed == 0]
    pick = np.random.default_rng(seed).choice(calm, size=min(k, calm.size), replace=False) if calm.size else calm
    out["untouched"] = sorted(int(x) for x in pick)
    return out


#: Box colours of the outcome panels (RGB): GT, then the outcome of each detection.
OUTCOME_COLOURS = {"gt": (255, 255, 255), "correctly_removed": (0, 130, 200), "falsely_removed": (245, 130, 48),
                   "falsely_kept": (230, 25, 75), "correctly_kept": (60, 180, 75)}


def outcome_panel(manifest, matches: pd.DataFrame, detections: pd.DataFrame, u: np.ndarray, cd: np.ndarray,
                  threshold: float, image_ids: Sequence[int], cols: int = 5, cell: int = 224) -> np.ndarray | None:
    """A mosaic ``[rows*cell, cols*cell, 3]`` uint8 of ``image_ids``, each drawn with its GT boxes (white) and
    its detections coloured by outcome (:data:`OUTCOME_COLOURS`) and labelled with their uncertainty.

    manifest: the split's :class:`~uncertainty_det.data.manifest.Manifest` (images); matches: its Matches
    table (GT boxes); detections / u / cd: the detection rows, their uncertainty ``[N]`` and CD labels ``[N]``
    at one IoU threshold. Unreadable images are left out; ``None`` when no image could be drawn.
    """
    from ..data.images import load_rgb
    from ..data.visualize import draw_boxes, tile_images

    masks = outcome_masks(u, cd, threshold)
    outcome = np.full(len(detections), "correctly_kept", dtype=object)
    for name in OUTCOMES:
        outcome[masks[name]] = name
    det_img = detections["image_id"].to_numpy(dtype=np.int64)
    gt_rows = matches.loc[matches["gt_id"].to_numpy() >= 0].drop_duplicates(["image_id", "gt_id"])
    gt_img = gt_rows["image_id"].to_numpy(dtype=np.int64)
    gt_boxes = gt_rows.loc[:, [f"gt_{c}" for c in CORNERS]].to_numpy(np.float64)
    det_boxes = detections.loc[:, list(BOX_COLUMNS)].to_numpy(np.float64)
    u = np.asarray(u, dtype=np.float64).reshape(-1)
    tiles = []
    for image_id in image_ids:                                                   # <= k images, not detections
        try:
            image = load_rgb(manifest.image_path(int(image_id)))
        except Exception:                                                        # noqa: BLE001 - a panel, not data
            continue
        g = gt_img == int(image_id)
        d = np.nonzero(det_img == int(image_id))[0]
        boxes = np.concatenate([gt_boxes[g], det_boxes[d]])
        colours = [OUTCOME_COLOURS["gt"]] * int(g.sum()) + [OUTCOME_COLOURS[o] for o in outcome[d]]
        labels = [""] * int(g.sum()) + [f"{x:.2f}" for x in u[d]]
        tiles.append(draw_boxes(image, boxes, np.ones(len(boxes), dtype=int), labels, width=1, colors=colours))
    if not tiles:
        return None
    return tile_images(tiles, (cell, cell), min(cols, len(tiles)))
