"""Calibration figures (matplotlib, no pyplot state): each function returns a ``Figure`` the caller saves.

Figures are built with ``matplotlib.figure.Figure`` directly, so they need no GUI backend and need no
``plt.close``; ``fig.savefig(path)`` renders them with Agg.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from ..tables import relative_sigma
from .box import BoxCalibrator
from .metrics import (
    DEFAULT_LEVELS,
    coordinate_names,
    coverage_curve,
    ece_from_bins,
    mce_from_bins,
    one_vs_rest,
    reliability_bins,
    top_label,
)

SQRT_2_OVER_PI = float(np.sqrt(2.0 / np.pi))


def _reliability_axes(ax, conf: np.ndarray, correct: np.ndarray, n_bins: int, label: str) -> None:
    bins = reliability_bins(conf, correct, n_bins)
    width = 1.0 / n_bins
    centers = (np.arange(n_bins) + 0.5) * width
    ok = bins.count > 0
    acc = np.where(ok, bins.acc, 0.0)
    mean_conf = np.where(ok, bins.conf, centers)
    ax.bar(centers, acc, width=width, color="tab:blue", edgecolor="black", linewidth=0.5, label="accuracy")
    ax.bar(centers[ok], np.abs(mean_conf - acc)[ok], bottom=np.minimum(mean_conf, acc)[ok], width=width,
           color="tab:red", alpha=0.35, edgecolor="tab:red", hatch="//", linewidth=0.5, label="gap")
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="ideal")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{label}\nECE={ece_from_bins(bins):.4f}  MCE={mce_from_bins(bins):.4f}  n={int(bins.count.sum())}",
                 fontsize=9)
    ax.legend(loc="upper left", fontsize=7)


def _panels(probs: np.ndarray, probs_cal: np.ndarray | None) -> list[tuple[str, np.ndarray]]:
    out = [("uncalibrated", np.asarray(probs, dtype=np.float64))]
    if probs_cal is not None:
        out.append(("calibrated", np.asarray(probs_cal, dtype=np.float64)))
    return out


def reliability_diagram(probs: np.ndarray, labels: np.ndarray, probs_cal: np.ndarray | None = None,
                        n_bins: int = 10, title: str = "") -> Figure:
    """Top-label reliability diagram; one panel, or before | after when ``probs_cal`` is given.

    probs, probs_cal: ``[N, C]``; labels: ``[N]`` 0-based. Bars: accuracy per confidence bin and the
    gap to the mean confidence; the titles show ECE and MCE.
    """
    panels = _panels(probs, probs_cal)
    fig = Figure(figsize=(4.2 * len(panels), 4.4))
    axes = np.atleast_1d(fig.subplots(1, len(panels), squeeze=False)[0])
    for ax, (label, p) in zip(axes, panels):
        _reliability_axes(ax, *top_label(p, labels), n_bins, label)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def per_class_reliability(probs: np.ndarray, labels: np.ndarray, probs_cal: np.ndarray | None = None,
                          class_names: Sequence[str] | None = None, n_bins: int = 10, title: str = "") -> Figure:
    """One-vs-rest reliability diagram per class: one row per class, columns before (| after)."""
    panels = _panels(probs, probs_cal)
    c = panels[0][1].shape[1]
    names = list(class_names) if class_names is not None else [f"class {k}" for k in range(c)]
    fig = Figure(figsize=(4.0 * len(panels), 3.6 * c))
    axes = fig.subplots(c, len(panels), squeeze=False)
    for k in range(c):
        for j, (label, p) in enumerate(panels):
            _reliability_axes(axes[k, j], *one_vs_rest(p, labels, k), n_bins, f"{names[k]}: {label}")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def coverage_plot(residual: np.ndarray, sigma: np.ndarray, sigma_cal: np.ndarray | None = None,
                  coord_names: Sequence[str] | None = None, levels: np.ndarray = DEFAULT_LEVELS,
                  title: str = "") -> Figure:
    """Observed vs expected coverage of central Gaussian intervals, one panel per coordinate.

    residual = gt - pred, sigma, sigma_cal: ``[N, K]`` (pixels). The legend shows the coverage ECE.
    """
    r = np.asarray(residual, dtype=np.float64).reshape(len(residual), -1)
    s = np.asarray(sigma, dtype=np.float64).reshape(r.shape)
    curves = [("uncalibrated", coverage_curve(r, s, levels).reshape(len(levels), -1))]
    if sigma_cal is not None:
        sc = np.asarray(sigma_cal, dtype=np.float64).reshape(r.shape)
        curves.append(("calibrated", coverage_curve(r, sc, levels).reshape(len(levels), -1)))
    names = list(coord_names) if coord_names is not None else list(coordinate_names(r.shape[1]))
    fig = Figure(figsize=(3.6 * r.shape[1], 3.8))
    axes = fig.subplots(1, r.shape[1], squeeze=False)[0]
    for k, ax in enumerate(axes):
        ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="ideal")
        for label, emp in curves:
            err = float(np.mean(np.abs(emp[:, k] - levels)))
            ax.plot(levels, emp[:, k], linewidth=1.5, label=f"{label} (ECE {err:.3f})")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("expected coverage")
        ax.set_ylabel("observed coverage")
        ax.set_title(names[k])
        ax.legend(loc="upper left", fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def sigma_residual_plot(sigma: np.ndarray, residual: np.ndarray, calibrator: BoxCalibrator | None = None,
                        pred_boxes: np.ndarray | None = None, class_id: int | None = None,
                        coord_names: Sequence[str] | None = None, title: str = "") -> Figure:
    """Scatter of σ vs ``|residual|`` per coordinate (log axes) with the fitted calibration curve.

    sigma, residual: ``[N, 4]`` pixels. For a relative calibrator both axes are divided by the predicted
    box size (``pred_boxes [N, 4]`` needed). ``class_id`` (1-based) picks the curve of a per-class
    calibrator (``None``: its per-coordinate fallback). The dotted line ``sqrt(2/π)·σ`` is ``E|r|`` of a
    calibrated Gaussian σ.
    """
    s = np.asarray(sigma, dtype=np.float64)
    a = np.abs(np.asarray(residual, dtype=np.float64))
    unit = "px"
    if calibrator is not None and calibrator.relative:
        if pred_boxes is None:
            raise ValueError(f"{calibrator.name} is relative: pass pred_boxes to plot it")
        size = 1.0 / relative_sigma(pred_boxes, np.ones_like(s), calibrator.min_size)     # [h, w, h, w]
        s, a, unit = s / size, a / size, "relative"
    names = list(coord_names) if coord_names is not None else list(coordinate_names(s.shape[1]))
    fig = Figure(figsize=(3.8 * s.shape[1], 3.8))
    axes = fig.subplots(1, s.shape[1], squeeze=False)[0]
    for k, ax in enumerate(axes):
        x, y = s[:, k], a[:, k]
        pos = x[x > 0]
        lo = float(pos.min()) if pos.size else 1e-3
        hi = float(x.max()) if pos.size else 1.0
        floor = float(y[y > 0].min()) if np.any(y > 0) else lo
        ax.scatter(np.maximum(x, lo), np.maximum(y, floor), s=4, alpha=0.3, color="tab:blue", label="|residual|")
        grid = np.geomspace(lo, max(hi, lo * 1.0001), 400)
        ax.plot(grid, SQRT_2_OVER_PI * grid, "k:", linewidth=1, label="E|r| if calibrated")
        if calibrator is not None:
            ax.plot(grid, np.maximum(calibrator.curve(grid, k, class_id), floor), color="tab:red", linewidth=1.5,
                    label=f"{calibrator.name} ({calibrator.target})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"predicted σ ({unit})")
        ax.set_ylabel(f"|residual| ({unit})")
        ax.set_title(names[k])
        ax.legend(loc="upper left", fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
