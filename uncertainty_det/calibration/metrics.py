"""Calibration metrics for class probabilities and box σ (reference §3.2/§3.3, DESIGN §8).

Classification inputs: ``probs [N, C]`` (rows sum to 1) and ``labels [N]`` (0-based class index, or
one-hot ``[N, C]``). Regression inputs: ``residual = gt - pred`` and ``sigma`` (the predicted Gaussian
standard deviation), both ``[N]`` or ``[N, K]`` in the same unit (pixels for boxes). Everything is
vectorised NumPy; NaN/inf inputs raise :class:`CalibrationError`.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.special import ndtr, ndtri

from ..tables import CORNERS
from ._common import CalibrationError, as_float_array, as_labels

DEFAULT_LEVELS = np.linspace(0.0, 1.0, 100)
NLL_EPS = 1e-12
MIN_SIGMA = 1e-6


# ---------------------------------------------------------------------------------------------
# Classification


class ReliabilityBins(NamedTuple):
    """Per-bin mean confidence, accuracy (NaN for empty bins) and count, ``[n_bins]`` each."""

    conf: np.ndarray
    acc: np.ndarray
    count: np.ndarray


def _probs_labels(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    p = as_float_array(probs, "probs", ndim=2)
    return p, as_labels(labels, p.shape[0], p.shape[1])


def top_label(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top-label confidence ``max_c p`` and correctness ``argmax p == label``, ``[N]`` each."""
    p, y = _probs_labels(probs, labels)
    return p.max(axis=1), (p.argmax(axis=1) == y).astype(np.float64)


def one_vs_rest(probs: np.ndarray, labels: np.ndarray, cls: int) -> tuple[np.ndarray, np.ndarray]:
    """Confidence ``p[:, cls]`` and indicator ``label == cls`` (0-based ``cls``), ``[N]`` each."""
    p, y = _probs_labels(probs, labels)
    return p[:, cls], (y == cls).astype(np.float64)


def reliability_bins(conf: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> ReliabilityBins:
    """Uniform-width reliability bins on [0, 1].

    conf: ``[N]`` confidences in [0, 1]; correct: ``[N]`` 0/1 outcomes. Bin ``b`` holds
    ``b/B <= conf < (b+1)/B`` (the last bin also holds ``conf == 1``). Returns per-bin mean confidence,
    accuracy (NaN where the bin is empty) and count.
    """
    conf = as_float_array(conf, "conf", ndim=1)
    correct = as_float_array(correct, "correct", ndim=1)
    if conf.shape != correct.shape:
        raise CalibrationError(f"conf {conf.shape} and correct {correct.shape} must have the same length")
    if n_bins < 1:
        raise CalibrationError(f"n_bins must be >= 1, got {n_bins}")
    idx = np.clip(np.floor(conf * n_bins).astype(np.int64), 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
        acc = np.bincount(idx, weights=correct, minlength=n_bins) / count
    return ReliabilityBins(mean_conf, acc, count.astype(np.int64))


def _gaps(bins: ReliabilityBins) -> tuple[np.ndarray, np.ndarray]:
    keep = bins.count > 0
    return np.abs(bins.acc[keep] - bins.conf[keep]), bins.count[keep]


def ece_from_bins(bins: ReliabilityBins) -> float:
    """``sum_b n_b/N |acc_b - conf_b|`` (0 for no samples)."""
    gap, n = _gaps(bins)
    return float(np.sum(gap * n) / np.sum(n)) if n.size else 0.0


def mce_from_bins(bins: ReliabilityBins) -> float:
    """``max_b |acc_b - conf_b|`` over non-empty bins (0 for no samples)."""
    gap, _ = _gaps(bins)
    return float(gap.max()) if gap.size else 0.0


def ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = 10, cls: int | None = None) -> float:
    """Expected calibration error, top-label (``cls=None``) or one-vs-rest for 0-based class ``cls``.

    probs ``[N, C]``, labels ``[N]`` 0-based. Unitless, in [0, 1].
    """
    conf, correct = top_label(probs, labels) if cls is None else one_vs_rest(probs, labels, cls)
    return ece_from_bins(reliability_bins(conf, correct, n_bins))


def mce(probs: np.ndarray, labels: np.ndarray, n_bins: int = 10, cls: int | None = None) -> float:
    """Maximum calibration error, top-label (``cls=None``) or one-vs-rest for 0-based class ``cls``."""
    conf, correct = top_label(probs, labels) if cls is None else one_vs_rest(probs, labels, cls)
    return mce_from_bins(reliability_bins(conf, correct, n_bins))


def per_class_ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """One-vs-rest ECE of every class, ``[C]``."""
    p, y = _probs_labels(probs, labels)
    return np.array([ece(p, y, n_bins, c) for c in range(p.shape[1])], dtype=np.float64)


def sce(probs: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> float:
    """Static calibration error: the mean of the per-class (one-vs-rest) ECEs."""
    return float(np.mean(per_class_ece(probs, labels, n_bins)))


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``[N]`` 0-based labels -> ``[N, C]`` float64 one-hot."""
    y = as_labels(labels, np.asarray(labels).shape[0], num_classes)
    out = np.zeros((y.shape[0], num_classes), dtype=np.float64)
    out[np.arange(y.shape[0]), y] = 1.0
    return out


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Multi-class Brier score: the mean over all ``N*C`` entries of ``(p - onehot)^2``."""
    p, y = _probs_labels(probs, labels)
    return float(np.mean((p - one_hot(y, p.shape[1])) ** 2)) if p.size else 0.0


def nll(probs: np.ndarray, labels: np.ndarray, eps: float = NLL_EPS) -> float:
    """Categorical NLL in nats from *probabilities*: ``-mean log(max(p[label], eps))`` (reference D8 fixed)."""
    p, y = _probs_labels(probs, labels)
    if not p.shape[0]:
        return 0.0
    return float(-np.mean(np.log(np.maximum(p[np.arange(p.shape[0]), y], eps))))


def classification_report(probs: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> dict[str, float]:
    """Flat metrics dict: ``ece, mce, sce, brier, nll, accuracy`` (top-label ECE/MCE, nats for NLL)."""
    p, y = _probs_labels(probs, labels)
    conf, correct = top_label(p, y)
    bins = reliability_bins(conf, correct, n_bins)
    return {
        "ece": ece_from_bins(bins),
        "mce": mce_from_bins(bins),
        "sce": sce(p, y, n_bins),
        "brier": brier(p, y),
        "nll": nll(p, y),
        "accuracy": float(correct.mean()) if correct.size else 0.0,
    }


# ---------------------------------------------------------------------------------------------
# Regression (box σ)


def _residual_sigma(residual, sigma) -> tuple[np.ndarray, np.ndarray]:
    r = as_float_array(residual, "residual")
    s = as_float_array(sigma, "sigma")
    if r.shape != s.shape or r.ndim not in (1, 2):
        raise CalibrationError(f"residual {r.shape} and sigma {s.shape} must have the same [N] or [N, K] shape")
    if np.any(s < 0):
        raise CalibrationError("sigma must be >= 0")
    return r, s


def _columns(a: np.ndarray) -> np.ndarray:
    return a[:, None] if a.ndim == 1 else a


def _normalised_abs(r: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``|r| / σ`` with ``σ = 0`` giving 0 for ``r = 0`` and +inf otherwise."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.abs(r) / s
    return np.where(s > 0, t, np.where(r == 0, 0.0, np.inf))


def coverage_curve(residual: np.ndarray, sigma: np.ndarray, levels: np.ndarray = DEFAULT_LEVELS) -> np.ndarray:
    """Empirical coverage of the central Gaussian ``p``-interval (reference §3.3).

    ``emp(p) = mean(|r| <= |σ Φ^{-1}((1-p)/2)|)`` for every level ``p`` in ``levels [P]``.
    residual, sigma: ``[N]`` or ``[N, K]`` (same unit). Returns ``[P]`` or ``[P, K]`` (per coordinate).
    """
    r, s = _residual_sigma(residual, sigma)
    levels = np.asarray(levels, dtype=np.float64).reshape(-1)
    q = np.abs(ndtri((1.0 - levels) / 2.0))                     # [P], +inf at p = 1
    t = np.sort(_columns(_normalised_abs(r, s)), axis=0)          # [N, K]
    n = t.shape[0]
    if n == 0:
        raise CalibrationError("coverage_curve needs at least one sample")
    emp = np.stack([np.searchsorted(t[:, k], q, side="right") for k in range(t.shape[1])], axis=1) / n
    return emp[:, 0] if r.ndim == 1 else emp


def coverage_ece(residual: np.ndarray, sigma: np.ndarray, levels: np.ndarray = DEFAULT_LEVELS) -> float:
    """Regression calibration error ``mean_p |emp(p) - p|`` (averaged over coordinates for ``[N, K]``)."""
    levels = np.asarray(levels, dtype=np.float64).reshape(-1)
    emp = _columns(coverage_curve(residual, sigma, levels))
    return float(np.mean(np.abs(emp - levels[:, None])))


def coverage_ece_per_coordinate(residual: np.ndarray, sigma: np.ndarray,
                                levels: np.ndarray = DEFAULT_LEVELS) -> np.ndarray:
    """``[K]`` coverage ECE of every coordinate of ``[N, K]`` inputs."""
    levels = np.asarray(levels, dtype=np.float64).reshape(-1)
    emp = _columns(coverage_curve(residual, sigma, levels))
    return np.mean(np.abs(emp - levels[:, None]), axis=0)


def miscalibration_area(residual: np.ndarray, sigma: np.ndarray, levels: np.ndarray = DEFAULT_LEVELS) -> float:
    """Area between the coverage curve and the diagonal, ``∫ |emp(p) - p| dp`` (trapezoid over ``levels``).

    Averaged over coordinates for ``[N, K]`` inputs. 0 = perfectly calibrated, at most 0.5.
    """
    levels = np.asarray(levels, dtype=np.float64).reshape(-1)
    gap = np.abs(_columns(coverage_curve(residual, sigma, levels)) - levels[:, None])
    area = np.sum(0.5 * (gap[1:] + gap[:-1]) * np.diff(levels)[:, None], axis=0)
    return float(np.mean(area))


def gaussian_nll(residual: np.ndarray, sigma: np.ndarray, min_sigma: float = MIN_SIGMA) -> float:
    """Mean Gaussian NLL in nats, ``-mean log N(r; 0, σ)`` with σ floored at ``min_sigma`` (no NaN masking)."""
    r, s = _residual_sigma(residual, sigma)
    s = np.maximum(s, min_sigma)
    return float(np.mean(0.5 * np.log(2 * np.pi) + np.log(s) + 0.5 * (r / s) ** 2))


def rmsue(residual: np.ndarray, sigma: np.ndarray) -> float:
    """Root mean squared uncertainty error ``sqrt(mean((σ - |r|)^2))`` over all entries (same unit as σ)."""
    r, s = _residual_sigma(residual, sigma)
    return float(np.sqrt(np.mean((s - np.abs(r)) ** 2)))


def sharpness(sigma: np.ndarray) -> float:
    """``sqrt(mean(σ^2))`` (same unit as σ; smaller = sharper)."""
    s = as_float_array(sigma, "sigma")
    return float(np.sqrt(np.mean(s ** 2)))


def fraction_inside(residual: np.ndarray, sigma: np.ndarray, k: float = 1.0) -> tuple[float, np.ndarray]:
    """Share of samples whose ground truth lies within ``pred ± kσ``.

    Returns ``(all coordinates inside at once, per-coordinate share [K])`` for ``[N, K]`` inputs
    (``K = 1`` for ``[N]``).
    """
    r, s = _residual_sigma(residual, sigma)
    inside = _columns(np.abs(r) <= k * s)
    return float(np.mean(np.all(inside, axis=1))), inside.mean(axis=0)


def ence(residual: np.ndarray, sigma: np.ndarray, n_bins: int = 10) -> float:
    """Expected normalised calibration error (Levi et al. 2019), averaged over coordinates.

    Per coordinate: sort by σ, cut into ``n_bins`` equal-count bins, and average
    ``|RMV_b - RMSE_b| / RMV_b`` with ``RMV_b = sqrt(mean σ^2)``, ``RMSE_b = sqrt(mean r^2)`` in bin ``b``.
    """
    r, s = _residual_sigma(residual, sigma)
    r, s = _columns(r), _columns(s)
    n = r.shape[0]
    if n == 0:
        raise CalibrationError("ence needs at least one sample")
    n_bins = int(min(max(n_bins, 1), n))
    bin_of_rank = (np.arange(n) * n_bins) // n                    # equal-count bins over the σ ranks
    out = []
    for k in range(r.shape[1]):
        order = np.argsort(s[:, k], kind="stable")
        cnt = np.bincount(bin_of_rank, minlength=n_bins)
        rmv = np.sqrt(np.bincount(bin_of_rank, weights=s[order, k] ** 2, minlength=n_bins) / cnt)
        rmse = np.sqrt(np.bincount(bin_of_rank, weights=r[order, k] ** 2, minlength=n_bins) / cnt)
        out.append(np.mean(np.abs(rmv - rmse) / np.maximum(rmv, MIN_SIGMA)))
    return float(np.mean(out))


def pit_curve(residual: np.ndarray, sigma: np.ndarray, n_points: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Probability-integral-transform CDF: ``u = Φ(r/σ)`` and ``F(x) = mean(u <= x)``.

    Returns ``(x [P] = linspace(0.01, 1, n_points), F [P] or [P, K])``; calibrated Gaussians give
    ``F(x) = x``. σ is floored at 1e-6.
    """
    r, s = _residual_sigma(residual, sigma)
    u = np.sort(_columns(ndtr(r / np.maximum(s, MIN_SIGMA))), axis=0)
    x = np.linspace(0.01, 1.0, n_points)
    f = np.stack([np.searchsorted(u[:, k], x, side="right") for k in range(u.shape[1])], axis=1) / u.shape[0]
    return x, (f[:, 0] if r.ndim == 1 else f)


def coordinate_names(k: int) -> tuple[str, ...]:
    """``ymin .. xmax`` for 4 coordinates, else ``coord0 ..``."""
    return CORNERS if k == 4 else tuple(f"coord{i}" for i in range(k))


def regression_report(pred: np.ndarray, gt: np.ndarray, sigma: np.ndarray, n_bins: int = 10,
                      levels: np.ndarray = DEFAULT_LEVELS) -> dict[str, float]:
    """Flat metrics dict of box σ quality for ``pred, gt, sigma [N, K]`` (pixels).

    Keys: ``coverage_ece, miscalibration_area, nll, rmsue, sharpness, inside_1sigma, ence, rmse, mae``
    and per coordinate ``coverage_ece/<c>``, ``inside_1sigma/<c>`` (``c`` in ``ymin .. xmax`` for 4
    coordinates).
    """
    p = as_float_array(pred, "pred")
    g = as_float_array(gt, "gt")
    if p.shape != g.shape:
        raise CalibrationError(f"pred {p.shape} and gt {g.shape} must have the same shape")
    r = g - p
    _, s = _residual_sigma(r, sigma)
    inside_all, inside_k = fraction_inside(r, s)
    out = {
        "coverage_ece": coverage_ece(r, s, levels),
        "miscalibration_area": miscalibration_area(r, s, levels),
        "nll": gaussian_nll(r, s),
        "rmsue": rmsue(r, s),
        "sharpness": sharpness(s),
        "inside_1sigma": inside_all,
        "ence": ence(r, s, n_bins),
        "rmse": float(np.sqrt(np.mean(r ** 2))),
        "mae": float(np.mean(np.abs(r))),
    }
    names = coordinate_names(_columns(r).shape[1])
    for name, value in zip(names, coverage_ece_per_coordinate(r, s, levels)):
        out[f"coverage_ece/{name}"] = float(value)
    for name, value in zip(names, inside_k):
        out[f"inside_1sigma/{name}"] = float(value)
    return out
