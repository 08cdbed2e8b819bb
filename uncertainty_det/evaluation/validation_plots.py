"""Validation figures (DESIGN §8): sparsification, σ vs residual, TP/FP histograms, PIT coverage.

Every function returns a matplotlib ``Figure`` built without pyplot (no global state, no backend
needed); the caller saves it (``fig.savefig(path)``). Inputs are plain arrays, see
:mod:`.uncertainty_quality` for how to get them from a Matches table.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..tables import CORNERS
from .uncertainty_quality import (
    auroc_tp_fp, ause, ause_random, check_fractions, oracle_curve, pit_curve, pit_values, random_curve,
    sparsification_curve, spearman,
)


def _figure(figsize=(6.0, 4.5)):
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


def sparsification_figure(u: np.ndarray, e: np.ndarray, name: str = "uncertainty", error_name: str = "error",
                          fractions: Sequence[float] | None = None):
    """Sparsification curve of ``u [N]`` against error ``e [N]`` with the oracle and random curves;
    AUSE (and the random AUSE) in the title."""
    u = np.asarray(u, dtype=np.float64).reshape(-1)
    e = np.asarray(e, dtype=np.float64).reshape(-1)
    f = check_fractions(fractions)
    ok = np.isfinite(u) & np.isfinite(e)
    u, e = u[ok], e[ok]
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(f, sparsification_curve(u, e, f), label=name, color="tab:blue")
    ax.plot(f, oracle_curve(e, f), label="oracle", color="black", linestyle="--")
    ax.plot(f, random_curve(e, f), label="random", color="gray", linestyle=":")
    ax.set_xlabel("fraction removed (most uncertain first)")
    ax.set_ylabel(f"mean {error_name} of the rest")
    ax.set_title(f"{name}: AUSE {ause(u, e, f):.4g} (random {ause_random(e, f):.4g}), n={u.size}")
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


def sigma_residual_figure(u: np.ndarray, e: np.ndarray, name: str = "mean relative σ",
                          error_name: str = "mean |relative residual|", log: bool = True, max_points: int = 20000,
                          seed: int = 0):
    """Scatter of uncertainty ``u [N]`` vs error ``e [N]`` with the Spearman correlation in the title.

    Log axes when ``log`` and all values are positive; at most ``max_points`` are drawn (seeded subsample),
    the correlation uses all finite pairs.
    """
    u = np.asarray(u, dtype=np.float64).reshape(-1)
    e = np.asarray(e, dtype=np.float64).reshape(-1)
    ok = np.isfinite(u) & np.isfinite(e)
    u, e = u[ok], e[ok]
    rho = spearman(u, e)
    idx = np.arange(u.size)
    if u.size > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(u.size, max_points, replace=False))
    fig = _figure((5.5, 5.0))
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(u[idx], e[idx], s=6, alpha=0.4, color="tab:blue")
    if u.size:
        lo, hi = min(u.min(), e.min()), max(u.max(), e.max())
        ax.plot([lo, hi], [lo, hi], color="gray", linestyle="--", linewidth=0.8)
    if log and u.size and u.min() > 0 and e.min() > 0:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel(name)
    ax.set_ylabel(error_name)
    ax.set_title(f"Spearman ρ = {rho:.3f} (n={u.size})")
    fig.tight_layout()
    return fig


def tp_fp_histogram(u: np.ndarray, is_tp: np.ndarray, name: str = "uncertainty", bins: int = 40):
    """Density histograms of ``u [N]`` for true and false positives with the AUROC (FP positive) in the title."""
    u = np.asarray(u, dtype=np.float64).reshape(-1)
    tp = np.asarray(is_tp, dtype=bool).reshape(-1)
    ok = np.isfinite(u)
    u, tp = u[ok], tp[ok]
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    edges = np.histogram_bin_edges(u, bins=bins) if u.size else bins
    for sel, label, color in ((tp, "TP", "tab:green"), (~tp, "FP", "tab:red")):
        if sel.any():
            ax.hist(u[sel], bins=edges, density=True, alpha=0.5, color=color, label=f"{label} (n={int(sel.sum())})")
    ax.set_xlabel(name)
    ax.set_ylabel("density")
    ax.set_title(f"{name}: AUROC TP vs FP = {auroc_tp_fp(u, tp):.3f}")
    if u.size:
        ax.legend(frameon=False)
    fig.tight_layout()
    return fig


def pit_coverage_figure(residual: np.ndarray, sigma: np.ndarray, sigma_cal: np.ndarray | None = None,
                        name: str = "", xs: Sequence[float] | None = None):
    """PIT / coverage curves ``mean(Φ(r/σ) <= x)`` vs ``x`` per coordinate and for all coordinates.

    residual: ``[N, 4]`` ``gt - prediction`` (px); sigma: ``[N, 4]`` uncalibrated σ (px); sigma_cal:
    ``[N, 4]`` calibrated σ or ``None``. Five panels (ymin, xmin, ymax, xmax, all) with the diagonal;
    the legend gives the mean absolute gap to the diagonal.
    """
    r = np.asarray(residual, dtype=np.float64).reshape(-1, 4)
    variants = [("uncalibrated", np.asarray(sigma, dtype=np.float64).reshape(-1, 4), "tab:red")]
    if sigma_cal is not None:
        variants.append(("calibrated", np.asarray(sigma_cal, dtype=np.float64).reshape(-1, 4), "tab:blue"))
    fig = _figure((16.0, 3.6))
    axes = [fig.add_subplot(1, 5, k + 1) for k in range(5)]
    for label, s, color in variants:
        pit = pit_values(r, s)
        grid, curves = pit_curve(pit, xs)
        _, pooled = pit_curve(pit.reshape(-1), grid)
        for k, ax in enumerate(axes):
            c = curves[:, k] if k < 4 else pooled
            gap = float(np.nanmean(np.abs(c - grid)))
            ax.plot(grid, c, color=color, label=f"{label} ({gap:.3f})")
    for k, ax in enumerate(axes):
        ax.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=0.8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(CORNERS[k] if k < 4 else "all coordinates")
        ax.set_xlabel("x")
        if k == 0:
            ax.set_ylabel("mean(Φ(r/σ) ≤ x)")
        ax.legend(frameon=False, fontsize=8, loc="upper left")
    if name:
        fig.suptitle(name)
    fig.tight_layout()
    return fig
