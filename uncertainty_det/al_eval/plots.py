"""Figures of the AL-evaluation analysis (reference §4.5), built without pyplot and returned unsaved."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

from ._common import AlEvalError, as_vector, pearson


def _figure(figsize=(6.0, 5.0)):
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


def _scatter_fit(ax, x: np.ndarray, y: np.ndarray, **scatter_kw) -> tuple[float, float]:
    """Scatter ``y`` vs ``x`` with a least-squares line; returns Pearson ``(r, p)`` (NaN if undefined)."""
    ax.scatter(x, y, **scatter_kw)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() >= 2 and np.ptp(x[ok]) > 0:
        slope, intercept = np.polyfit(x[ok], y[ok], 1)
        xs = np.linspace(x[ok].min(), x[ok].max(), 50)
        ax.plot(xs, slope * xs + intercept, color="tab:red", lw=1.5)
    return pearson(x, y)


def similarity_vs_performance_figure(similarity: np.ndarray, performance: np.ndarray,
                                     labels: Sequence[str] | None = None, performance_label: str = "mAP",
                                     title: str | None = None):
    """Similarity (y) vs performance (x) of ``S`` sets, a linear fit and Pearson r/p in the title (1 axes).

    similarity, performance: ``[S]``; labels: optional ``S`` point labels (e.g. method names).
    """
    sim = as_vector(similarity, "similarity")
    perf = as_vector(performance, "performance")
    if sim.shape != perf.shape:
        raise AlEvalError(f"similarity {sim.shape} and performance {perf.shape} must have the same length")
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    r, p = _scatter_fit(ax, perf, sim)
    for i, label in enumerate(labels or []):
        ax.annotate(str(label), (perf[i], sim[i]), fontsize=8, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(performance_label)
    ax.set_ylabel("similarity")
    ax.set_title(f"{title + ': ' if title else ''}Pearson r = {r:.3f} (p = {p:.3g})")
    fig.tight_layout()
    return fig


def per_class_figure(m: np.ndarray, ap: np.ndarray, class_names: Sequence[str],
                     proportions: np.ndarray | None = None, ap_scale: float = 100.0, ncols: int = 3):
    """Per-class ``AP * ap_scale`` (y) vs ``1 / m`` (x) with a linear fit and Pearson r/p per panel.

    m: ``[C, S]``; ap: ``[S, C]`` (fractions with the default ``ap_scale``); proportions: ``[C]`` class
    proportions: panels are ordered by descending proportion and classes with proportion 0 are left out.
    Returns a Figure with one axes per drawn class.
    """
    m = np.asarray(m, dtype=np.float64)
    ap = np.asarray(ap, dtype=np.float64)
    if m.ndim != 2 or ap.shape != m.T.shape or len(class_names) != m.shape[0]:
        raise AlEvalError(f"m must be [C, S], ap [S, C] and class_names C long; got m {m.shape}, "
                          f"ap {ap.shape}, {len(class_names)} names")
    order = np.arange(m.shape[0])
    if proportions is not None:
        prop = as_vector(proportions, "proportions")
        order = np.array([c for c in np.argsort(-prop, kind="stable") if prop[c] > 0], dtype=np.int64)
    if order.size == 0:
        raise AlEvalError("no class to draw (all class proportions are 0)")
    ncols = max(1, min(ncols, order.size))
    nrows = math.ceil(order.size / ncols)
    fig = _figure((4.0 * ncols, 3.3 * nrows))
    for i, c in enumerate(order):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        with np.errstate(divide="ignore"):
            inv = 1.0 / m[c]
        r, p = _scatter_fit(ax, inv, ap[:, c] * ap_scale, s=18)
        title = f"{class_names[c]}: r = {r:.2f} (p = {p:.2g})"
        if proportions is not None:
            title = f"{class_names[c]} ({100 * prop[c]:.1f} %): r = {r:.2f} (p = {p:.2g})"
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("1 / m")
        ax.set_ylabel("AP")
    fig.tight_layout()
    return fig


def tau_similarity_figure(tau: np.ndarray, similarity: np.ndarray, val_tau: float, val_similarity: float,
                          top_s: int | None = None):
    """Kendall tau vs reference of each subset (y) against its similarity (x), with a linear fit; the
    top-s subset (default: the most similar) and the full validation set are marked (1 axes).

    tau, similarity: ``[K]``; val_tau, val_similarity: the validation set's point.
    """
    tau = as_vector(tau, "tau")
    sim = as_vector(similarity, "similarity")
    if tau.shape != sim.shape:
        raise AlEvalError(f"tau {tau.shape} and similarity {sim.shape} must have the same length")
    top = int(np.nanargmax(sim)) if top_s is None else int(top_s)
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    r, p = _scatter_fit(ax, sim, tau, s=14, color="tab:blue", alpha=0.7, label="subsets")
    ax.scatter([sim[top]], [tau[top]], marker="*", s=160, color="tab:orange", zorder=3, label="top-s")
    ax.scatter([val_similarity], [val_tau], marker="D", s=60, color="tab:green", zorder=3, label="val set")
    ax.set_xlabel("similarity to the reference")
    ax.set_ylabel("Kendall τ vs the reference ranking")
    ax.set_title(f"Pearson r = {r:.3f} (p = {p:.3g})")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


def rank_heatmap_figure(performance: np.ndarray, set_names: Sequence[str], method_names: Sequence[str],
                        annotate: bool | None = None):
    """Method ranks per evaluation set (rows: sets, columns: methods; rank 1 = best performance).

    performance: ``[n_sets, n_methods]``; NaN cells stay blank. ``annotate`` writes the ranks into the
    cells (default: when there are at most 400 cells). Returns a Figure with 2 axes (map and colour bar).
    """
    perf = np.asarray(performance, dtype=np.float64)
    if perf.ndim != 2 or perf.shape != (len(set_names), len(method_names)):
        raise AlEvalError(f"performance must be [n_sets, n_methods] = [{len(set_names)}, {len(method_names)}], "
                          f"got {perf.shape}")
    ranks = np.full(perf.shape, np.nan)
    for i, row in enumerate(perf):
        ok = np.isfinite(row)
        ranks[i, ok] = stats.rankdata(-row[ok])
    n_sets, n_methods = perf.shape
    fig = _figure((max(4.0, 0.6 * n_methods + 2), max(3.0, 0.25 * n_sets + 1.5)))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(np.ma.masked_invalid(ranks), aspect="auto", cmap="viridis_r", interpolation="nearest")
    fig.colorbar(im, ax=ax, label="rank (1 = best)")
    ax.set_xticks(np.arange(n_methods), [str(n) for n in method_names], rotation=45, ha="right")
    ax.set_yticks(np.arange(n_sets), [str(n) for n in set_names], fontsize=7 if n_sets > 30 else 9)
    if annotate if annotate is not None else ranks.size <= 400:
        for (i, j), v in np.ndenumerate(ranks):
            if np.isfinite(v):
                ax.text(j, i, f"{v:g}", ha="center", va="center", fontsize=7, color="white")
    fig.tight_layout()
    return fig
