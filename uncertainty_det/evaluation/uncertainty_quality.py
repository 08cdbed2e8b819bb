"""Uncertainty quality: does an uncertainty rank errors and separate correct from false detections?

Generic array functions (any per-detection uncertainty ``u [N]``: relative box σ, entropy, MC class
std, ...) and an error ``e [N]``:

* :func:`spearman` — rank correlation of ``u`` and ``e``;
* :func:`auroc_tp_fp` — AUROC of ``u`` separating false from true positives;
* :func:`sparsification_curve` / :func:`oracle_curve` / :func:`random_curve` and :func:`ause`;
* :func:`pit_values` / :func:`pit_curve` — PIT / coverage curve of Gaussian σ;
* :func:`summarise_uncertainty` — all of them as a dict of floats with stable keys.

Helpers that read Matches tables (DESIGN §6.4): per-coordinate pixel σ and residuals
(:func:`sigma_residual_px`), relative ones (:func:`relative_sigma_residual`), the per-detection pairs
(:func:`box_uncertainty_error`), TP flags (:func:`is_true_positive`) and a table over several
uncertainties (:func:`uncertainty_quality_table`). The residual is ``gt - prediction`` everywhere.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import UserError
from ..tables import BOX_COLUMNS, box_array, mean_relative_sigma, relative_sigma, sigma_array
from .matching import GT_BOX_COLUMNS

#: Keys of :func:`summarise_uncertainty`, in order.
SUMMARY_KEYS = ("n", "n_tp", "n_fp", "mean_uncertainty", "mean_error", "spearman", "auroc_tp_fp", "ause",
                "ause_random", "ause_rel")
#: Box uncertainties (mean relative σ); anything else is read as a table column.
BOX_KINDS = ("al", "ep")
DEFAULT_FRACTIONS = np.round(np.arange(0.0, 1.0, 0.01), 10)


class UncertaintyQualityError(UserError, ValueError):
    """Inputs of an uncertainty-quality analysis that do not fit (shapes, missing columns)."""


def _flat(x: np.ndarray | Sequence[float]) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape(-1)


def _same_length(*arrays: np.ndarray) -> None:
    sizes = {a.size for a in arrays}
    if len(sizes) > 1:
        raise UncertaintyQualityError(f"arrays of different lengths: {[a.size for a in arrays]}")


def check_fractions(fractions: Sequence[float] | np.ndarray | None) -> np.ndarray:
    """Removal fractions as ``[F]`` float64 (default :data:`DEFAULT_FRACTIONS`); increasing, in ``[0, 1)``."""
    f = DEFAULT_FRACTIONS if fractions is None else np.asarray(fractions, dtype=np.float64).reshape(-1)
    if f.size == 0 or np.any(f < 0) or np.any(f >= 1) or np.any(np.diff(f) <= 0):
        raise UncertaintyQualityError("fractions must be increasing values in [0, 1)")
    return f


# ---------------------------------------------------------------------------------------------
# Ranking and separation


def spearman(u: np.ndarray, e: np.ndarray) -> float:
    """Spearman rank correlation of uncertainty ``u [N]`` and error ``e [N]`` (scipy; ties averaged).

    NaN when fewer than 2 pairs or either array is constant. Pairs with a non-finite value are dropped.
    """
    u, e = _flat(u), _flat(e)
    _same_length(u, e)
    ok = np.isfinite(u) & np.isfinite(e)
    u, e = u[ok], e[ok]
    if u.size < 2 or np.ptp(u) == 0 or np.ptp(e) == 0:
        return float("nan")
    return float(stats.spearmanr(u, e).statistic)


def auroc_tp_fp(u: np.ndarray, is_tp: np.ndarray) -> float:
    """AUROC of uncertainty ``u [N]`` for telling false positives (positive class) from true positives.

    Computed as ``roc_auc_score(~is_tp, u)``: TP is the *negative* class, so 1.0 means every FP is more
    uncertain than every TP, 0.5 chance, < 0.5 inverted. Ties count half. NaN when only one class is
    present; rows with non-finite ``u`` are dropped.
    """
    from sklearn.metrics import roc_auc_score

    u = _flat(u)
    tp = np.asarray(is_tp, dtype=bool).reshape(-1)
    _same_length(u, tp)
    ok = np.isfinite(u)
    u, tp = u[ok], tp[ok]
    if tp.all() or not tp.any():
        return float("nan")
    return float(roc_auc_score(~tp, u))


# ---------------------------------------------------------------------------------------------
# Sparsification


def sparsification_curve(u: np.ndarray, e: np.ndarray, fractions: Sequence[float] | None = None) -> np.ndarray:
    """Mean error of the detections left after removing the most uncertain fraction.

    u, e: ``[N]`` uncertainty and error (pairs with a non-finite value are dropped); fractions: ``[F]``
    increasing in ``[0, 1)`` (default ``0, 0.01, ..., 0.99``). For fraction ``f`` the ``floor(f N)`` most
    uncertain are removed and the mean error of the rest is returned, ``[F]``. Tied uncertainties are
    split by expectation (the removed part of a tie group contributes its group mean), so a constant
    ``u`` gives the flat random curve. NaN when no pair is left.
    """
    u, e = _flat(u), _flat(e)
    _same_length(u, e)
    f = check_fractions(fractions)
    ok = np.isfinite(u) & np.isfinite(e)
    u, e = u[ok], e[ok]
    n = u.size
    if n == 0:
        return np.full(f.size, np.nan)
    order = np.argsort(u, kind="stable")                     # most certain first
    us, es = u[order], e[order]
    csum = np.concatenate([[0.0], np.cumsum(es)])
    new = np.concatenate([[True], us[1:] != us[:-1]])
    group = np.cumsum(new) - 1                               # tie-group id of each sorted position
    starts = np.nonzero(new)[0]
    ends = np.append(starts[1:], n)
    gmean = (csum[ends] - csum[starts]) / (ends - starts)
    keep = n - np.floor(f * n + 1e-9).astype(np.int64)       # >= 1 because f < 1
    g = group[keep - 1]                                      # group of the last kept detection
    total = csum[starts[g]] + (keep - starts[g]) * gmean[g]
    return total / keep


def oracle_curve(e: np.ndarray, fractions: Sequence[float] | None = None) -> np.ndarray:
    """The best possible sparsification curve: remove by the error itself. ``[N]`` -> ``[F]``."""
    e = _flat(e)
    return sparsification_curve(e, e, fractions)


def random_curve(e: np.ndarray, fractions: Sequence[float] | None = None) -> np.ndarray:
    """Expected curve of a random removal order: the mean error at every fraction. ``[N]`` -> ``[F]``."""
    e = _flat(e)
    f = check_fractions(fractions)
    e = e[np.isfinite(e)]
    return np.full(f.size, e.mean() if e.size else np.nan)


def _area(y: np.ndarray, x: np.ndarray) -> float:
    if x.size < 2:
        return float("nan")
    return float(np.trapezoid(y, x))


def ause(u: np.ndarray, e: np.ndarray, fractions: Sequence[float] | None = None) -> float:
    """Area Under the Sparsification Error: ``∫ (curve - oracle) df`` over ``fractions`` (trapezoid).

    In units of ``e``; 0 when ``u`` orders the errors perfectly. Pairs with a non-finite value are dropped.
    """
    u, e = _flat(u), _flat(e)
    _same_length(u, e)
    f = check_fractions(fractions)
    ok = np.isfinite(u) & np.isfinite(e)
    return _area(sparsification_curve(u[ok], e[ok], f) - oracle_curve(e[ok], f), f)


def ause_random(e: np.ndarray, fractions: Sequence[float] | None = None) -> float:
    """AUSE of a random order (expected): ``∫ (mean(e) - oracle) df``; the baseline for :func:`ause`."""
    e = _flat(e)
    f = check_fractions(fractions)
    e = e[np.isfinite(e)]
    return _area(random_curve(e, f) - oracle_curve(e, f), f)


# ---------------------------------------------------------------------------------------------
# PIT / coverage


def pit_values(residual: np.ndarray, sigma: np.ndarray, min_sigma: float = 1e-6) -> np.ndarray:
    """Probability integral transform ``Φ(r / σ)`` of Gaussian predictions (reference §4.6).

    residual: ``[...]`` ``gt - prediction``; sigma: ``[...]`` σ in the same units (floored at
    ``min_sigma``, as the reference replaced σ = 0 by 1e-6). Returns ``[...]`` in ``[0, 1]``;
    calibrated σ gives uniform values.
    """
    r = np.asarray(residual, dtype=np.float64)
    s = np.maximum(np.asarray(sigma, dtype=np.float64), min_sigma)
    return stats.norm.cdf(r / s)


def pit_curve(pit: np.ndarray, xs: Sequence[float] | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Empirical CDF of PIT values: ``mean(pit <= x)`` for each ``x`` (reference ``cdf_allcoo``).

    pit: ``[N]`` or ``[N, K]`` (one curve per column, e.g. per coordinate); xs: ``[X]`` (default
    ``0.01 .. 1.00``). Returns ``(xs [X], curve [X] or [X, K])``; the diagonal is perfect calibration.
    Non-finite PIT values are dropped per column.
    """
    xs = np.linspace(0.01, 1.0, 100) if xs is None else np.asarray(xs, dtype=np.float64).reshape(-1)
    p = np.asarray(pit, dtype=np.float64)
    flat = p.ndim == 1
    p = p.reshape(p.shape[0], -1)
    curves = np.full((xs.size, p.shape[1]), np.nan)
    for k in range(p.shape[1]):                            # K columns (<= a handful), not detections
        col = np.sort(p[np.isfinite(p[:, k]), k])
        if col.size:
            curves[:, k] = np.searchsorted(col, xs, side="right") / col.size
    return xs, curves[:, 0] if flat else curves


def pit_calibration_error(pit: np.ndarray, xs: Sequence[float] | np.ndarray | None = None) -> float:
    """Mean absolute gap between the PIT curve and the diagonal (all columns pooled); 0 is calibrated."""
    p = np.asarray(pit, dtype=np.float64).reshape(-1)
    xs, curve = pit_curve(p, xs)
    return float(np.mean(np.abs(curve - xs)))


# ---------------------------------------------------------------------------------------------
# Summary


def summarise_uncertainty(u: np.ndarray, e: np.ndarray | None = None, is_tp: np.ndarray | None = None,
                          fractions: Sequence[float] | None = None) -> dict[str, float]:
    """All uncertainty-quality numbers of one uncertainty as a dict of floats (keys :data:`SUMMARY_KEYS`).

    u: ``[N]`` uncertainty per detection; e: ``[N]`` error (NaN where undefined, e.g. background rows)
    or ``None``; is_tp: ``[N]`` bool or ``None``. ``n`` counts the finite ``(u, e)`` pairs used by
    ``spearman`` and the sparsification numbers (``ause``, ``ause_random``, ``ause_rel = ause /
    ause_random``: 0 perfect, about 1 random); ``n_tp``/``n_fp`` and ``auroc_tp_fp`` use every row with
    a finite ``u``. Numbers that cannot be computed are NaN.
    """
    u = _flat(u)
    e = np.full(u.size, np.nan) if e is None else _flat(e)
    _same_length(u, e)
    ok = np.isfinite(u) & np.isfinite(e)
    out = dict.fromkeys(SUMMARY_KEYS, float("nan"))
    out["n"] = float(ok.sum())
    if ok.any():
        uu, ee = u[ok], e[ok]
        out["mean_uncertainty"] = float(uu.mean())
        out["mean_error"] = float(ee.mean())
        out["spearman"] = spearman(uu, ee)
        out["ause"] = ause(uu, ee, fractions)
        out["ause_random"] = ause_random(ee, fractions)
        if out["ause_random"] > 0:
            out["ause_rel"] = out["ause"] / out["ause_random"]
    if is_tp is not None:
        tp = np.asarray(is_tp, dtype=bool).reshape(-1)
        _same_length(u, tp)
        fin = np.isfinite(u)
        out["n_tp"] = float((tp & fin).sum())
        out["n_fp"] = float((~tp & fin).sum())
        out["auroc_tp_fp"] = auroc_tp_fp(u, tp)
    return out


# ---------------------------------------------------------------------------------------------
# Matches-table helpers


def _suffix(calibrated: bool) -> str:
    return "_cal" if calibrated else ""


def _matched(matches: pd.DataFrame) -> pd.DataFrame:
    if "kind" not in matches.columns:
        raise UncertaintyQualityError(
            "a Matches table needs the 'kind' column; build it with evaluation.matching.match()")
    return matches.loc[matches["kind"].to_numpy(dtype=object) == "matched"]


def sigma_residual_px(matches: pd.DataFrame, kind: str = "al", calibrated: bool = False,
                      matched_only: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per-coordinate σ and residual in pixels: ``(sigma [N, 4], residual [N, 4])``.

    kind: ``al`` or ``ep``; calibrated reads the ``_cal`` columns; residual = ``gt - prediction``
    (``[ymin, xmin, ymax, xmax]``). With ``matched_only`` (default) only ``matched`` rows are used.
    """
    rows = _matched(matches) if matched_only else matches
    sigma = sigma_array(rows, kind, _suffix(calibrated))
    residual = rows.loc[:, list(GT_BOX_COLUMNS)].to_numpy(np.float64) - box_array(rows)
    return sigma, residual


def relative_sigma_residual(matches: pd.DataFrame, kind: str = "al", calibrated: bool = False,
                            matched_only: bool = True, min_size: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Dimensionless per-coordinate pairs: ``(relative σ [N, 4], relative residual [N, 4])``.

    Relative σ divides by the *predicted* box ``[h, w, h, w]`` (reference §2.3, per detection: D4 fixed);
    the relative residual ``(gt - prediction)`` divides by the *GT* box ``[h, w, h, w]`` (sizes floored
    at ``min_size`` pixels).
    """
    rows = _matched(matches) if matched_only else matches
    sigma, residual = sigma_residual_px(rows, kind, calibrated, matched_only=False)
    rel_sigma = relative_sigma(box_array(rows), sigma, min_size)
    gt = rows.loc[:, list(GT_BOX_COLUMNS)].to_numpy(np.float64)
    h = np.maximum(gt[:, 2] - gt[:, 0], min_size)
    w = np.maximum(gt[:, 3] - gt[:, 1], min_size)
    return rel_sigma, residual / np.stack([h, w, h, w], axis=-1)


def box_uncertainty_error(matches: pd.DataFrame, kind: str = "al",
                          calibrated: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per matched detection: ``(mean relative σ [N], mean |relative residual| [N])`` (see above)."""
    rel_sigma, rel_residual = relative_sigma_residual(matches, kind, calibrated)
    return rel_sigma.mean(axis=1), np.abs(rel_residual).mean(axis=1)


def uncertainty_values(frame: pd.DataFrame, name: str, calibrated: bool = False) -> np.ndarray:
    """One uncertainty per row ``[N]``: ``al``/``ep`` give the mean relative σ of the row's box;
    any other name is a column (``entropy``, ``ep_cls``, ...), with ``_cal`` appended when ``calibrated``.
    """
    if name in BOX_KINDS:
        return mean_relative_sigma(box_array(frame), sigma_array(frame, name, _suffix(calibrated)))
    col = f"{name}{_suffix(calibrated)}"
    if col not in frame.columns:
        raise UncertaintyQualityError(f"table has no column {col!r} for uncertainty {name!r}")
    return frame[col].to_numpy(dtype=np.float64)


def has_uncertainty(frame: pd.DataFrame, name: str, calibrated: bool = False) -> bool:
    """Whether :func:`uncertainty_values` can read ``name`` (calibrated or not) from ``frame``."""
    if name in BOX_KINDS:
        return all(f"{name}_{c}{_suffix(calibrated)}" in frame.columns for c in BOX_COLUMNS)
    return f"{name}{_suffix(calibrated)}" in frame.columns


def is_true_positive(matches: pd.DataFrame, iou_threshold: float = 0.5) -> np.ndarray:
    """``[N]`` bool per row: ``matched``, right class and ``iou >= iou_threshold`` (glossary "CD")."""
    kind = matches["kind"].to_numpy(dtype=object)
    return ((kind == "matched")
            & (matches["class_id"].to_numpy() == matches["gt_class_id"].to_numpy())
            & (matches["iou"].to_numpy(dtype=np.float64) >= iou_threshold))


def uncertainty_quality_table(matches: pd.DataFrame, names: Sequence[str] = ("al", "ep", "entropy", "ep_cls"),
                              calibrated: Sequence[bool] = (False, True), iou_threshold: float = 0.5,
                              fractions: Sequence[float] | None = None) -> pd.DataFrame:
    """:func:`summarise_uncertainty` for several uncertainties of a Matches table, one row each.

    Rows are the detection rows (``matched`` and ``background``). Error: for ``al``/``ep`` the mean
    |relative residual| (matched rows; NaN on background rows), for any other uncertainty the
    misclassification indicator ``class_id != gt_class_id`` (matched rows). TP: :func:`is_true_positive`.
    Uncertainties (or calibrated variants) missing from the table are skipped. Columns:
    ``uncertainty, calibrated`` then :data:`SUMMARY_KEYS`.
    """
    dets = matches.loc[matches["kind"].to_numpy(dtype=object) != "missed"]
    tp = is_true_positive(dets, iou_threshold)
    matched = dets["kind"].to_numpy(dtype=object) == "matched"
    rows = []
    for name in names:
        for cal in calibrated:
            if not has_uncertainty(dets, name, cal):
                continue
            u = uncertainty_values(dets, name, cal)
            e = np.full(len(dets), np.nan)
            if name in BOX_KINDS:
                e[matched] = box_uncertainty_error(dets, name, cal)[1]
            else:
                e[matched] = (dets["class_id"].to_numpy()[matched] != dets["gt_class_id"].to_numpy()[matched])
            rows.append({"uncertainty": name, "calibrated": bool(cal),
                         **summarise_uncertainty(u, e, tp, fractions)})
    return pd.DataFrame(rows, columns=["uncertainty", "calibrated", *SUMMARY_KEYS])
