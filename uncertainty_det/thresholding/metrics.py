"""Budget thresholds and failure-recognition metrics of one uncertainty (reference §1.3, §1.5).

Inputs everywhere: an uncertainty ``u [N]`` (higher = more likely a false detection) and CD labels
``cd [T, N]`` bool (one row per IoU threshold, see :mod:`.labels`; a ``[N]`` vector is one row).
Detections with ``u >= threshold`` are removed. All rates are fractions in [0, 1] (the reference
reports them x100).

ROC construction (reference §1.3): the FDs are the positive class, so ``fpr(θ)`` is the share of CDs
removed and ``tpr(θ)`` the share of FDs removed by ``u >= θ``. The ROC has one vertex per distinct value
of ``u`` plus the origin (nothing removed); linear interpolation between vertices is the reference's
``np.interp`` on ``sklearn.metrics.roc_curve``.

* ``mode="cd"`` (keep a share ``b`` of the CDs): FD@CD(b) = ``tpr`` interpolated at ``fpr = 1 - b``
  (the reference's ``1 - r``). The threshold is the ROC vertex that removes the most FDs while removing
  at most ``floor((1 - b) n_CD)`` CDs: the smallest value of ``u`` above the CD uncertainties that must be
  kept, i.e. just above the ``b``-quantile of ``u`` over the CDs. (The reference took the vertex
  nearest in ``tpr``, which can break the budget.)
* ``mode="fd"`` (remove a share ``b`` of the FDs): CD@FD(b) = ``1 - fpr`` interpolated at ``tpr = b``.
  The threshold is the largest one that removes at least ``ceil(b n_FD)`` FDs: the ``(1 - b)``-quantile
  of ``u`` over the FDs (the ``ceil(b n_FD)``-th largest FD uncertainty).

Both FD@CD and CD@FD are always computed; the mode picks the threshold. An IoU threshold without CDs
(or without FDs) gives NaN where the quantity is undefined; averages over IoU thresholds skip NaN.
JSD: the Jensen-Shannon *distance* (``scipy.spatial.distance.jensenshannon``, natural log: the square
root of the divergence, in ``[0, sqrt(ln 2)]``) between the ``u`` distributions of CDs and FDs;
``method="gaussian"`` reproduces the reference (a fitted normal per group evaluated on 1000 points),
``method="histogram"`` uses ``bins`` equal-width bins over ``[min u, max u]``.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ._common import ThresholdingError, check_budget, check_iou_thresholds, check_mode

JSD_METHODS = ("gaussian", "histogram")
DEFAULT_JSD_METHOD = "gaussian"
DEFAULT_HIST_BINS = 50
GAUSSIAN_GRID = 1000
SUMMARY_KEYS = ("auroc", "jsd", "fd_at_cd", "cd_at_fd", "threshold", "cd_kept", "fd_removed")
_EPS = 1e-9


def _inputs(u: np.ndarray, cd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    u = np.asarray(u, dtype=np.float64).reshape(-1)
    cd = np.asarray(cd)
    if cd.ndim == 1:
        cd = cd[None, :]
    if cd.ndim != 2 or cd.shape[1] != u.size:
        raise ThresholdingError(f"uncertainty has {u.size} values but the CD labels have shape {cd.shape}; "
                                f"expected [T, {u.size}] or [{u.size}]")
    if not np.all(np.isfinite(u)):
        raise ThresholdingError(f"uncertainty has {int((~np.isfinite(u)).sum())} NaN/inf values; drop those "
                                f"detections or fix the table")
    return u, cd.astype(bool)


def _nanmean(x: np.ndarray, axis=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=axis)


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


# ---------------------------------------------------------------------------------------------
# ROC


@dataclass(frozen=True)
class RocTable:
    """The full ROC of ``u`` for each row of ``cd`` (FD = positive), vertices sorted by threshold descending.

    levels: ``[P-1]`` distinct values of ``u`` descending; vertex ``p >= 1`` removes ``u >= levels[p-1]``,
    vertex 0 removes nothing. removed_cd / removed_fd: ``[T, P]`` counts removed at each vertex.
    n_cd / n_fd: ``[T]`` totals.
    """

    levels: np.ndarray
    removed_cd: np.ndarray
    removed_fd: np.ndarray
    n_cd: np.ndarray
    n_fd: np.ndarray

    @property
    def fpr(self) -> np.ndarray:
        """``[T, P]`` share of CDs removed (NaN rows without CDs)."""
        return _div(self.removed_cd, self.n_cd[:, None].astype(np.float64))

    @property
    def tpr(self) -> np.ndarray:
        """``[T, P]`` share of FDs removed (NaN rows without FDs)."""
        return _div(self.removed_fd, self.n_fd[:, None].astype(np.float64))

    def threshold_at(self, vertex: np.ndarray) -> np.ndarray:
        """``[T]`` threshold of vertex indices ``[T]``; vertex 0 (remove nothing) gives the float just above max u."""
        vertex = np.asarray(vertex, dtype=np.int64)
        top = np.nextafter(self.levels[0], np.inf) if self.levels.size else np.inf
        return np.where(vertex > 0, self.levels[np.maximum(vertex - 1, 0)] if self.levels.size else top, top)

    def auroc(self) -> np.ndarray:
        """``[T]`` area under the ROC (trapezoid; ties count half, as ``sklearn.metrics.roc_auc_score``)."""
        fpr, tpr = self.fpr, self.tpr
        return np.sum(np.diff(fpr, axis=1) * (tpr[:, 1:] + tpr[:, :-1]) / 2.0, axis=1)


def roc_table(u: np.ndarray, cd: np.ndarray) -> RocTable:
    """ROC of uncertainty ``u [N]`` against CD labels ``cd [T, N]`` (or ``[N]``); see :class:`RocTable`."""
    u, cd = _inputs(u, cd)
    order = np.argsort(-u, kind="stable")
    us = u[order]
    last = np.ones(us.size, dtype=bool)
    last[:-1] = us[1:] != us[:-1]
    ends = np.nonzero(last)[0]                                                   # last index of each tie group
    cum_cd = np.cumsum(cd[:, order], axis=1, dtype=np.int64)[:, ends]
    removed = (ends + 1)[None, :]
    zero = np.zeros((cd.shape[0], 1), dtype=np.int64)
    removed_cd = np.concatenate([zero, cum_cd], axis=1)
    removed_fd = np.concatenate([zero, removed - cum_cd], axis=1)
    n_cd = cd.sum(axis=1).astype(np.int64)
    return RocTable(us[ends], removed_cd, removed_fd, n_cd, u.size - n_cd)


# ---------------------------------------------------------------------------------------------
# Budget threshold


@dataclass(frozen=True)
class BudgetResult:
    """Budget threshold and rates per IoU threshold (all ``[T]``).

    threshold: remove ``u >= threshold`` (``mode`` decides how it is chosen, module docstring).
    fd_at_cd: share of FDs removed when a share ``budget`` of the CDs is kept (interpolated ROC).
    cd_at_fd: share of CDs kept when a share ``budget`` of the FDs is removed (interpolated ROC).
    cd_kept / fd_removed: the shares actually kept / removed by ``threshold`` (no interpolation).
    """

    budget: float
    mode: str
    threshold: np.ndarray
    fd_at_cd: np.ndarray
    cd_at_fd: np.ndarray
    cd_kept: np.ndarray
    fd_removed: np.ndarray
    n_cd: np.ndarray
    n_fd: np.ndarray

    @property
    def metric(self) -> np.ndarray:
        """``[T]`` the mode's metric: FD@CD(b) for ``cd``, CD@FD(b) for ``fd`` (higher is better)."""
        return self.fd_at_cd if self.mode == "cd" else self.cd_at_fd

    @property
    def cost(self) -> np.ndarray:
        """``[T]`` the reference's cost ``r = 1 - metric`` (FDs left over, or CDs removed)."""
        return 1.0 - self.metric


def _interp_segment(x, x0, x1, y0, y1):
    """Linear interpolation on segments ``[x0, x1]`` (arrays); a zero-length segment gives ``y0``."""
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(x1 > x0, (x - x0) / np.where(x1 > x0, x1 - x0, 1.0), 0.0)
    return y0 + np.clip(frac, 0.0, 1.0) * (y1 - y0)


def _fd_at_cd(roc: RocTable, b: float) -> tuple[np.ndarray, np.ndarray]:
    """``(FD@CD [T], vertex [T])``: interpolated tpr at fpr = 1-b and the budget vertex of mode ``cd``."""
    x = 1.0 - b
    allowed = np.floor(x * roc.n_cd + _EPS)                                      # CDs that may be removed
    j = np.sum(roc.removed_cd <= allowed[:, None], axis=1) - 1                  # last vertex within budget
    fpr, tpr = roc.fpr, roc.tpr
    rows = np.arange(j.size)
    last = fpr.shape[1] - 1
    jn = np.minimum(j + 1, last)
    value = np.where(j < last, _interp_segment(x, fpr[rows, j], fpr[rows, jn], tpr[rows, j], tpr[rows, jn]),
                     tpr[rows, j])
    value = np.where((roc.n_cd > 0) & (roc.n_fd > 0), value, np.nan)
    return value, j


def _cd_at_fd(roc: RocTable, b: float) -> tuple[np.ndarray, np.ndarray]:
    """``(CD@FD [T], vertex [T])``: 1 - fpr interpolated at tpr = b and the budget vertex of mode ``fd``."""
    need = np.ceil(b * roc.n_fd - _EPS)                                          # FDs that must be removed
    i = np.sum(roc.removed_fd < need[:, None], axis=1)                          # first vertex meeting it
    i = np.clip(i, 1, roc.removed_fd.shape[1] - 1)
    fpr, tpr = roc.fpr, roc.tpr
    rows = np.arange(i.size)
    r = _interp_segment(b, tpr[rows, i - 1], tpr[rows, i], fpr[rows, i - 1], fpr[rows, i])
    value = np.where((roc.n_cd > 0) & (roc.n_fd > 0), 1.0 - r, np.nan)
    return value, i


def budget_from_roc(roc: RocTable, budget: float = 0.95, mode: str = "cd") -> BudgetResult:
    """:func:`budget_threshold` on a precomputed :class:`RocTable` (saves the sort when reused)."""
    b = check_budget(budget)
    mode = check_mode(mode)
    if roc.levels.size == 0:                                                     # no detections
        nan = np.full(roc.n_cd.shape, np.nan)
        return BudgetResult(b, mode, nan, nan, nan, nan, nan, roc.n_cd, roc.n_fd)
    fd_at_cd, j = _fd_at_cd(roc, b)
    cd_at_fd, i = _cd_at_fd(roc, b)
    vertex = j if mode == "cd" else i
    threshold = roc.threshold_at(vertex)
    # mode cd needs CDs to define the quantile, mode fd needs FDs
    defined = roc.n_cd > 0 if mode == "cd" else roc.n_fd > 0
    threshold = np.where(defined, threshold, np.nan)
    rows = np.arange(vertex.size)
    cd_kept = np.where(defined, 1.0 - roc.fpr[rows, vertex], np.nan)
    fd_removed = np.where(defined, roc.tpr[rows, vertex], np.nan)
    return BudgetResult(b, mode, threshold, fd_at_cd, cd_at_fd, cd_kept, fd_removed, roc.n_cd, roc.n_fd)


def budget_metric(u: np.ndarray, cd: np.ndarray, budget: float = 0.95, mode: str = "cd") -> np.ndarray:
    """``[T]`` the mode's metric (FD@CD(b) or CD@FD(b)), equal to ``budget_threshold(u, cd, b, mode).metric``.

    The optimiser's hot path: no sort and no full ROC. Only the two ROC vertices around the budget are
    needed, and both are counts against one level of ``u``. Mode ``cd``: the level ``v`` is the
    ``(floor((1-b) n_CD) + 1)``-th largest CD uncertainty (``np.partition``, O(N)); the vertices are
    "remove ``u > v``" (the last within budget) and "remove ``u >= v``". Mode ``fd``: ``v`` is the
    ``ceil(b n_FD)``-th largest FD uncertainty, the same two vertices. The metric interpolates between them
    exactly as :func:`budget_from_roc` does.
    """
    b = check_budget(budget)
    mode = check_mode(mode)
    u, cd = _inputs(u, cd)
    n_cd = cd.sum(axis=1)
    n_fd = u.size - n_cd
    level = np.full(cd.shape[0], np.nan)
    for t in range(cd.shape[0]):                                                 # T IoU thresholds, not detections
        if n_cd[t] == 0 or n_fd[t] == 0:
            continue
        group = u[cd[t]] if mode == "cd" else u[~cd[t]]
        rank = int(np.floor((1.0 - b) * n_cd[t] + _EPS)) if mode == "cd" else int(np.ceil(b * n_fd[t] - _EPS)) - 1
        rank = min(max(rank, 0), group.size - 1)
        level[t] = -np.partition(-group, rank)[rank]                             # the (rank+1)-th largest
    defined = np.isfinite(level)
    lv = np.where(defined, level, 0.0)[:, None]
    above, at_or_above = u[None, :] > lv, u[None, :] >= lv
    cd_gt, cd_ge = (above & cd).sum(axis=1), (at_or_above & cd).sum(axis=1)
    fd_gt, fd_ge = above.sum(axis=1) - cd_gt, at_or_above.sum(axis=1) - cd_ge
    fpr0, fpr1 = _div(cd_gt, n_cd.astype(np.float64)), _div(cd_ge, n_cd.astype(np.float64))
    tpr0, tpr1 = _div(fd_gt, n_fd.astype(np.float64)), _div(fd_ge, n_fd.astype(np.float64))
    if mode == "cd":
        value = _interp_segment(1.0 - b, fpr0, fpr1, tpr0, tpr1)
    else:
        value = 1.0 - _interp_segment(b, tpr0, tpr1, fpr0, fpr1)
    return np.where(defined, value, np.nan)


def budget_threshold(u: np.ndarray, cd: np.ndarray, budget: float = 0.95, mode: str = "cd") -> BudgetResult:
    """Budget threshold of ``u [N]`` for CD labels ``cd [T, N]`` (or ``[N]``, then ``T = 1``).

    budget: ``b`` in (0, 1); mode: ``cd`` (keep ``b`` of the CDs) or ``fd`` (remove ``b`` of the FDs).
    Returns a :class:`BudgetResult` with ``[T]`` arrays. Thresholds are values of ``u`` (or, when nothing
    may be removed, the float just above ``max u``); NaN where undefined (no CDs in mode ``cd``, no FDs in
    mode ``fd``).
    """
    check_budget(budget)
    check_mode(mode)
    return budget_from_roc(roc_table(u, cd), budget, mode)


# ---------------------------------------------------------------------------------------------
# Separation


def auroc(u: np.ndarray, cd: np.ndarray) -> np.ndarray:
    """``[T]`` AUROC of ``u`` for FD (positive) vs CD per row of ``cd [T, N]`` (``sklearn.metrics.roc_auc_score``).

    1 = every FD is more uncertain than every CD, 0.5 = chance; ties count half. NaN for a row with only
    one class (the reference turned that into 0).
    """
    from sklearn.metrics import roc_auc_score

    u, cd = _inputs(u, cd)
    out = np.full(cd.shape[0], np.nan)
    for t in range(cd.shape[0]):                                                 # T IoU thresholds, not detections
        if cd[t].any() and not cd[t].all():
            out[t] = roc_auc_score(~cd[t], u)
    return out


def jsd(u: np.ndarray, cd: np.ndarray, method: str = DEFAULT_JSD_METHOD, bins: int = DEFAULT_HIST_BINS) -> np.ndarray:
    """``[T]`` Jensen-Shannon distance between the ``u`` distributions of CDs and FDs per row of ``cd``.

    ``scipy.spatial.distance.jensenshannon`` (natural log; the *distance* = sqrt of the divergence, as the
    reference), in ``[0, sqrt(ln 2) ≈ 0.8326]``.

    * ``gaussian`` (reference §1.5): a normal with the mean and population std of each group, both pdfs
      evaluated on 1000 equally spaced points over ``[min(μ - 3σ), max(μ + 3σ)]``. NaN when a group is
      empty or has ``σ = 0`` (the reference turned NaN into 0).
    * ``histogram``: ``bins`` equal-width bins over ``[min u, max u]`` of all detections (the last bin is
      closed), counts of each group normalised. NaN when a group is empty; 0 when ``u`` is constant.
    """
    from scipy.spatial.distance import jensenshannon

    if method not in JSD_METHODS:
        raise ThresholdingError(f"unknown JSD method {method!r}; choose one of {list(JSD_METHODS)}")
    u, cd = _inputs(u, cd)
    n_cd = cd.sum(axis=1)
    n_fd = cd.shape[1] - n_cd
    ok = (n_cd > 0) & (n_fd > 0)
    out = np.full(cd.shape[0], np.nan)
    if not ok.any():
        return out
    if method == "gaussian":
        w = cd.astype(np.float64)
        stats = []
        for weights, n in ((w, n_cd), (1.0 - w, n_fd)):
            nn = np.maximum(n, 1)
            mu = weights @ u / nn
            var = (weights * (u[None, :] - mu[:, None]) ** 2).sum(axis=1) / nn
            stats.append((mu, np.sqrt(var)))
        (mu1, s1), (mu2, s2) = stats
        ok &= (s1 > 0) & (s2 > 0)
        if not ok.any():
            return out
        lo = np.minimum(mu1 - 3 * s1, mu2 - 3 * s2)[ok]
        hi = np.maximum(mu1 + 3 * s1, mu2 + 3 * s2)[ok]
        x = lo[:, None] + (hi - lo)[:, None] * np.linspace(0.0, 1.0, GAUSSIAN_GRID)[None, :]

        def pdf(mu, s):
            return np.exp(-0.5 * ((x - mu[ok, None]) / s[ok, None]) ** 2) / (s[ok, None] * math.sqrt(2 * math.pi))

        out[ok] = jensenshannon(pdf(mu1, s1), pdf(mu2, s2), axis=1)
    else:
        bins = int(bins)
        if bins < 1:
            raise ThresholdingError(f"histogram JSD needs bins >= 1, got {bins}")
        lo, hi = float(u.min()), float(u.max())
        if hi <= lo:
            out[ok] = 0.0
            return out
        idx = np.clip(np.floor((u - lo) / (hi - lo) * bins).astype(np.int64), 0, bins - 1)
        h_cd = np.stack([np.bincount(idx, weights=row, minlength=bins) for row in cd.astype(np.float64)])
        h_all = np.bincount(idx, minlength=bins).astype(np.float64)
        h_fd = h_all[None, :] - h_cd
        out[ok] = jensenshannon(h_cd[ok], h_fd[ok], axis=1)
    return out


# ---------------------------------------------------------------------------------------------
# All metrics


@dataclass(frozen=True)
class ThresholdMetrics:
    """Every metric of one uncertainty per IoU threshold (``[T]`` arrays) and their averages."""

    iou_thresholds: np.ndarray
    budget: BudgetResult
    auroc: np.ndarray
    jsd: np.ndarray
    jsd_method: str = DEFAULT_JSD_METHOD
    extra: dict = field(default_factory=dict)

    def per_iou(self) -> dict[str, np.ndarray]:
        """``{key: [T]}`` for :data:`SUMMARY_KEYS`."""
        b = self.budget
        return {"auroc": self.auroc, "jsd": self.jsd, "fd_at_cd": b.fd_at_cd, "cd_at_fd": b.cd_at_fd,
                "threshold": b.threshold, "cd_kept": b.cd_kept, "fd_removed": b.fd_removed}

    def summary(self) -> dict[str, float]:
        """``{key: mean over IoU thresholds}`` for :data:`SUMMARY_KEYS` (NaN entries skipped; all NaN -> NaN)."""
        return {k: float(_nanmean(v)) for k, v in self.per_iou().items()}

    @property
    def label(self) -> str:
        """The reference's metric label, e.g. ``FD@CD95`` or ``CD@FD90``."""
        tag = "FD@CD" if self.budget.mode == "cd" else "CD@FD"
        return f"{tag}{int(round(self.budget.budget * 100))}"


def threshold_metrics(u: np.ndarray, cd: np.ndarray, budget: float = 0.95, mode: str = "cd",
                      iou_thresholds: Sequence[float] | np.ndarray | None = None,
                      jsd_method: str = DEFAULT_JSD_METHOD, bins: int = DEFAULT_HIST_BINS) -> ThresholdMetrics:
    """Budget threshold, FD@CD(b), CD@FD(b), AUROC and JSD of ``u [N]`` for ``cd [T, N]``.

    iou_thresholds: the ``[T]`` IoU thresholds the rows of ``cd`` stand for (kept for reporting; default
    0.50..0.75 when ``T`` is 6, else ``0..T-1``).
    """
    u, cd = _inputs(u, cd)
    if iou_thresholds is None:
        ious = check_iou_thresholds(None) if cd.shape[0] == 6 else np.arange(cd.shape[0], dtype=np.float64)
    else:
        ious = check_iou_thresholds(iou_thresholds)
    if ious.size != cd.shape[0]:
        raise ThresholdingError(f"{ious.size} IoU thresholds for {cd.shape[0]} rows of CD labels")
    return ThresholdMetrics(ious, budget_threshold(u, cd, budget, mode), auroc(u, cd),
                            jsd(u, cd, jsd_method, bins), jsd_method)


def metrics_table(results: Mapping[str, ThresholdMetrics]) -> pd.DataFrame:
    """One row per uncertainty name: ``<key>_<iou>`` per IoU threshold and ``<key>`` (the average) for
    every key of :data:`SUMMARY_KEYS`, plus ``n_cd``/``n_fd`` at the first IoU threshold."""
    rows = []
    for name, m in results.items():
        row: dict[str, object] = {"uncertainty": name}
        summary = m.summary()
        for key, values in m.per_iou().items():
            for t, v in zip(m.iou_thresholds, values):
                row[f"{key}_{t:.2f}"] = float(v)
            row[key] = summary[key]
        row["n_cd"] = int(m.budget.n_cd[0])
        row["n_fd"] = int(m.budget.n_fd[0])
        rows.append(row)
    return pd.DataFrame(rows)


def operating_rates(u: np.ndarray, cd: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """``(cd_kept [T], fd_removed [T])`` of a fixed threshold (remove ``u >= threshold``) on ``u [N]``, ``cd [T, N]``.

    For a threshold fitted elsewhere (e.g. the operating threshold on a held-out split). NaN where a row
    has no CDs (first) or no FDs (second). A NaN uncertainty counts as removed (``ThresholdModel.accept``
    sends it to review).
    """
    u = np.asarray(u, dtype=np.float64).reshape(-1)
    cd = np.asarray(cd, dtype=bool)
    if cd.ndim == 1:
        cd = cd[None, :]
    if cd.shape[-1] != u.size:
        raise ThresholdingError(f"uncertainty has {u.size} values but the CD labels have shape {cd.shape}")
    with np.errstate(invalid="ignore"):
        removed = ~(u < float(threshold))
    n_cd = cd.sum(axis=1).astype(np.float64)
    n_fd = cd.shape[1] - n_cd
    kept_cd = (cd & ~removed[None, :]).sum(axis=1)
    removed_fd = (~cd & removed[None, :]).sum(axis=1)
    return _div(kept_cd.astype(np.float64), n_cd), _div(removed_fd.astype(np.float64), n_fd)
