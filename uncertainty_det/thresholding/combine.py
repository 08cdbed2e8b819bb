"""Optimal combination of several uncertainties and the persisted threshold model (DESIGN §9, reference §1.4).

The combined uncertainty of a detection is ``u* = sum_k w_k · n_k(u_k)`` where ``n_k`` is a min-max
normalisation fitted on the fitting set (stored; on new data values are clipped to [0, 1]) and ``w``
lies on the simplex (``w_k >= 0``, ``sum w = 1``; parametrised as ``w = z / sum z`` with ``z in [0, 1]^K``).
The reference used an unnormalised weighted sum with one redundant degree of freedom (D1).

Objective (reference §1.4): maximise the mean over IoU thresholds of the mode's metric, FD@CD(b) in
mode ``cd`` or CD@FD(b) in mode ``fd`` (= minimise the reference's cost ``r``; a NaN metric counts as 0),
or the mean AUROC with ``objective="auroc"``. It is maximised with
``scipy.optimize.differential_evolution`` seeded by ``seed`` (the reference's Optuna/HEBO runs were
unseeded, D3); the uniform and one-hot weights are evaluated too and the best candidate is kept, so the
combination is never worse than the best single uncertainty on the fitting set.

Per-class weights (optional): one weight vector per *predicted* class (the reference used the GT class
during optimisation, which is unknown at auto-labeling time). Classes with fewer than
``min_class_samples`` CDs or FDs at some IoU threshold use the global weights. The per-class vectors are
optimised jointly on the global objective, seeded with the global weights. Then the reference's check
(``_clsoptfix``) runs: a class whose metric on its own detections is *strictly* worse than with the
global weights falls back to them (the reference also replaced classes scoring exactly 100, D2); if the
overall objective then drops below the global one, per-class weights are dropped altogether.

The operating threshold is the mean over IoU thresholds of the per-IoU budget thresholds of ``u*``
(reference §2.1), or the budget threshold at one chosen IoU (``operating_iou``; the reference's comment
meant IoU 0.5, D5c); :meth:`ThresholdModel.accept` keeps detections with ``u* <`` it.
"""
from __future__ import annotations

import inspect
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.optimize import differential_evolution

from ..io_utils import atomic_write_json
from ._common import ThresholdingError, check_budget, check_iou_thresholds, check_mode
from .labels import cd_labels
from .measures import measure_matrix
from .metrics import (
    DEFAULT_JSD_METHOD, ThresholdMetrics, _nanmean, budget_metric, operating_rates, roc_table, threshold_metrics,
)

OBJECTIVES = ("metric", "auroc")
FORMAT = "uncertainty_det.threshold_model"
FORMAT_VERSION = 1
COMBINATION = "combination"


# ---------------------------------------------------------------------------------------------
# Normalisation


@dataclass(frozen=True)
class MinMaxNormaliser:
    """Per-column min-max scaling fitted on a fitting set: ``clip((v - lo) / (hi - lo), 0, 1)``.

    lo, hi: ``[K]`` minimum and maximum of each column on the fitting set. A constant column
    (``hi == lo``) maps to 0.
    """

    lo: np.ndarray
    hi: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray) -> "MinMaxNormaliser":
        """Fit on ``values [N, K]`` (finite, ``N >= 1``)."""
        v = np.asarray(values, dtype=np.float64)
        if v.ndim != 2 or v.shape[0] == 0:
            raise ThresholdingError(f"normalisation needs a non-empty [N, K] array, got shape {v.shape}")
        if not np.all(np.isfinite(v)):
            raise ThresholdingError("normalisation got NaN/inf uncertainties; drop those detections first")
        return cls(v.min(axis=0), v.max(axis=0))

    def transform(self, values: np.ndarray) -> np.ndarray:
        """``values [N, K]`` -> ``[N, K]`` in [0, 1] (NaN stays NaN)."""
        v = np.asarray(values, dtype=np.float64)
        if v.ndim != 2 or v.shape[1] != self.lo.size:
            raise ThresholdingError(f"expected [N, {self.lo.size}] uncertainties, got shape {v.shape}")
        span = self.hi - self.lo
        scaled = (v - self.lo) / np.where(span > 0, span, 1.0)
        return np.where(span > 0, np.clip(scaled, 0.0, 1.0), np.where(np.isnan(v), np.nan, 0.0))

    def to_dict(self) -> dict[str, list[float]]:
        return {"lo": [float(x) for x in self.lo], "hi": [float(x) for x in self.hi]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "MinMaxNormaliser":
        return cls(np.asarray(d["lo"], dtype=np.float64), np.asarray(d["hi"], dtype=np.float64))


# ---------------------------------------------------------------------------------------------
# Weights and objective


def simplex_weights(z: np.ndarray) -> np.ndarray:
    """Map non-negative parameters ``[..., K]`` to the simplex: ``|z| / sum |z|`` (all-zero rows -> uniform)."""
    z = np.abs(np.asarray(z, dtype=np.float64))
    s = z.sum(axis=-1, keepdims=True)
    return np.where(s > 0, z / np.where(s > 0, s, 1.0), 1.0 / z.shape[-1])


def combine(normalised: np.ndarray, weights: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """Combined uncertainty ``[N]`` of normalised uncertainties ``[N, K]``.

    weights: ``[K]`` (one vector for all rows) or ``[G, K]`` with ``groups [N]`` the weight row of each
    detection (per-class weights).
    """
    u = np.asarray(normalised, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim == 1:
        return u @ w
    return np.einsum("nk,nk->n", u, w[np.asarray(groups, dtype=np.int64)])


def objective_value(u: np.ndarray, cd: np.ndarray, budget: float, mode: str, objective: str = "metric") -> float:
    """The quantity the optimiser maximises for a combined ``u [N]`` and ``cd [T, N]``.

    ``metric``: mean over IoU thresholds of FD@CD(b) (mode ``cd``) or CD@FD(b) (mode ``fd``), NaN -> 0;
    ``auroc``: mean AUROC, NaN -> 0.
    """
    if objective == "metric":
        values = budget_metric(u, cd, budget, mode)
    elif objective == "auroc":
        values = roc_table(u, cd).auroc()
    else:
        raise ThresholdingError(f"unknown objective {objective!r}; choose one of {list(OBJECTIVES)}")
    return float(np.mean(np.nan_to_num(values, nan=0.0)))


def _de_kwargs(seed: int) -> dict[str, Any]:
    # scipy >= 1.15 names the seed argument `rng`
    params = inspect.signature(differential_evolution).parameters
    return {"rng": int(seed)} if "rng" in params else {"seed": int(seed)}


@dataclass(frozen=True)
class OptimiserSettings:
    """Differential-evolution settings (see ``scipy.optimize.differential_evolution``)."""

    seed: int = 0
    maxiter: int = 100
    popsize: int = 15
    tol: float = 0.01

    def to_dict(self) -> dict[str, Any]:
        return {"seed": int(self.seed), "maxiter": int(self.maxiter), "popsize": int(self.popsize),
                "tol": float(self.tol)}


def optimise_weights(normalised: np.ndarray, cd: np.ndarray, budget: float = 0.95, mode: str = "cd",
                     objective: str = "metric", settings: OptimiserSettings = OptimiserSettings(),
                     ) -> tuple[np.ndarray, float]:
    """Global simplex weights ``[K]`` maximising :func:`objective_value`; returns ``(weights, value)``.

    normalised: ``[N, K]`` normalised uncertainties; cd: ``[T, N]``. Seeded differential evolution over
    ``z in [0, 1]^K``, then the uniform and the ``K`` one-hot weights are tried too; the first best wins.
    """
    u = np.asarray(normalised, dtype=np.float64)
    k = u.shape[1]

    def value(w: np.ndarray) -> float:
        return objective_value(u @ w, cd, budget, mode, objective)

    candidates = []
    if k > 1:
        res = differential_evolution(lambda z: -value(simplex_weights(z)), [(0.0, 1.0)] * k,
                                     maxiter=settings.maxiter, popsize=settings.popsize, tol=settings.tol,
                                     polish=False, init="latinhypercube", updating="immediate", workers=1,
                                     **_de_kwargs(settings.seed))
        candidates.append(simplex_weights(res.x))
    candidates += [np.full(k, 1.0 / k), *np.eye(k)]
    scores = [value(w) for w in candidates]
    best = int(np.argmax(scores))
    return candidates[best], float(scores[best])


def _class_objective(u_norm, cd, budget, mode, objective, table, groups) -> float:
    return objective_value(combine(u_norm, table, groups), cd, budget, mode, objective)


def optimise_class_weights(normalised: np.ndarray, cd: np.ndarray, classes: np.ndarray, global_weights: np.ndarray,
                           budget: float = 0.95, mode: str = "cd", objective: str = "metric",
                           settings: OptimiserSettings = OptimiserSettings(), min_class_samples: int = 20,
                           ) -> tuple[dict[int, np.ndarray], dict[str, Any]]:
    """Per-predicted-class weights (module docstring); returns ``(class_weights, info)``.

    classes: ``[N]`` predicted class id of each detection; global_weights: ``[K]``. ``class_weights``
    maps a class id to its ``[K]`` weights, only for classes that keep their own; ``info`` holds the
    eligible classes, the per-class metric with own and with global weights, the overall objective
    value before/after and the reason when per-class weights were dropped.
    """
    u = np.asarray(normalised, dtype=np.float64)
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    k = u.shape[1]
    ids, inv = np.unique(classes, return_inverse=True)
    n_cd = np.stack([np.bincount(inv, weights=row.astype(np.float64), minlength=ids.size) for row in cd])  # [T, C]
    n_fd = np.bincount(inv, minlength=ids.size)[None, :] - n_cd
    eligible = np.all((n_cd >= min_class_samples) & (n_fd >= min_class_samples), axis=0)
    elig_ids = ids[eligible]
    info: dict[str, Any] = {"eligible_classes": [int(c) for c in elig_ids], "min_class_samples": int(min_class_samples)}
    global_value = objective_value(u @ global_weights, cd, budget, mode, objective)
    info["global_objective"] = global_value
    if elig_ids.size == 0:
        info["dropped"] = "no class has enough CDs and FDs"
        return {}, info
    # weight-table row of each detection: 0 = global, 1 + e for the e-th eligible class
    pos = np.searchsorted(elig_ids, classes)
    own = (pos < elig_ids.size) & (elig_ids[np.minimum(pos, elig_ids.size - 1)] == classes)
    groups = np.where(own, pos + 1, 0)
    m = elig_ids.size

    def table(z: np.ndarray) -> np.ndarray:
        return np.vstack([global_weights[None, :], simplex_weights(z.reshape(m, k))])

    x0 = np.tile(global_weights, m)
    res = differential_evolution(lambda z: -_class_objective(u, cd, budget, mode, objective, table(z), groups),
                                 [(0.0, 1.0)] * (m * k), maxiter=settings.maxiter, popsize=settings.popsize,
                                 tol=settings.tol, polish=False, init="latinhypercube", updating="immediate",
                                 workers=1, x0=x0, **_de_kwargs(settings.seed))
    w = table(res.x)
    joint_value = _class_objective(u, cd, budget, mode, objective, w, groups)
    if joint_value < global_value:                       # DE keeps its best member, seeded with x0: defensive
        w, joint_value = table(x0), global_value
    info["joint_objective"] = joint_value
    # reference check (_clsoptfix), strict: fall back where the class's own metric is worse
    per_class: dict[str, dict[str, float]] = {}
    for e, c in enumerate(elig_ids):                     # classes, not detections
        rows = groups == e + 1
        own_v = objective_value(u[rows] @ w[e + 1], cd[:, rows], budget, mode, objective)
        glob_v = objective_value(u[rows] @ global_weights, cd[:, rows], budget, mode, objective)
        per_class[str(int(c))] = {"own": own_v, "global": glob_v}
        if own_v < glob_v:
            w[e + 1] = global_weights
    info["class_objective"] = per_class
    final_value = _class_objective(u, cd, budget, mode, objective, w, groups)
    info["final_objective"] = final_value
    if final_value < global_value:
        info["dropped"] = "per-class weights did worse than the global weights after the per-class check"
        return {}, info
    out = {int(c): w[e + 1].copy() for e, c in enumerate(elig_ids) if not np.array_equal(w[e + 1], global_weights)}
    return out, info


# ---------------------------------------------------------------------------------------------
# The model


def _json_float(x: float) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def _float(x: Any) -> float:
    return float("nan") if x is None else float(x)


@dataclass
class ThresholdModel:
    """A fitted combination + threshold: everything auto-labeling needs, JSON-serialisable.

    uncertainties: the ``K`` measure names (see :mod:`.measures`); normaliser: fitted min-max scaling;
    weights: ``[K]`` global simplex weights; class_weights: predicted class id -> ``[K]`` weights
    (classes not listed use ``weights``); iou_thresholds / thresholds: ``[T]`` IoU thresholds and the
    budget threshold of the combined uncertainty at each; operating_threshold: their mean; budget, mode,
    objective: the fitting problem; metrics: ``{uncertainty name or "combination": summary dict}`` on the
    fitting set (:meth:`ThresholdMetrics.summary`); info: optimiser settings, counts, per-class details.
    """

    uncertainties: list[str]
    normaliser: MinMaxNormaliser
    weights: np.ndarray
    iou_thresholds: np.ndarray
    thresholds: np.ndarray
    operating_threshold: float
    budget: float
    mode: str
    objective: str = "metric"
    class_weights: dict[int, np.ndarray] = field(default_factory=dict)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    # -- scoring

    def weight_table(self, classes: np.ndarray) -> np.ndarray:
        """``[N, K]`` weights of detections with predicted class ids ``classes [N]``."""
        classes = np.asarray(classes, dtype=np.int64).reshape(-1)
        w = np.broadcast_to(self.weights, (classes.size, self.weights.size)).copy()
        if self.class_weights:
            ids = np.asarray(sorted(self.class_weights), dtype=np.int64)
            table = np.stack([self.class_weights[int(c)] for c in ids])
            pos = np.minimum(np.searchsorted(ids, classes), ids.size - 1)
            hit = ids[pos] == classes
            w[hit] = table[pos[hit]]
        return w

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        """Combined uncertainty ``[N]`` of the rows of a Detections/Matches ``frame`` (detection rows).

        Missing measure columns raise :class:`ThresholdingError`; a NaN measure gives a NaN score.
        """
        values = measure_matrix(frame, self.uncertainties, check_finite=False)
        normalised = self.normaliser.transform(values)
        if not self.class_weights:
            return normalised @ self.weights
        if "class_id" not in frame.columns:
            raise ThresholdingError("this threshold model has per-class weights and needs the 'class_id' column")
        w = self.weight_table(frame["class_id"].to_numpy(dtype=np.int64))
        return np.einsum("nk,nk->n", normalised, w)

    def accept(self, frame: pd.DataFrame) -> np.ndarray:
        """``[N]`` bool: combined uncertainty strictly below the operating threshold (NaN -> False)."""
        with np.errstate(invalid="ignore"):
            return self.score(frame) < self.operating_threshold

    def evaluate(self, matches: pd.DataFrame, matcher: str | None = None, include_background: bool | None = None,
                 jsd_method: str = DEFAULT_JSD_METHOD) -> dict[str, ThresholdMetrics]:
        """Metrics of every single uncertainty and of the combination on a (held-out) Matches table.

        Budget thresholds are re-derived on ``matches``; ``extra`` of the combination also holds the
        shares kept/removed by the stored ``operating_threshold`` (``op_cd_kept``, ``op_fd_removed``).
        """
        matcher = matcher or self.info.get("matcher", "gt_centric")
        dets, cd = cd_labels(matches, self.iou_thresholds, matcher, include_background)
        values = measure_matrix(dets, self.uncertainties)
        out = {name: threshold_metrics(values[:, i], cd, self.budget, self.mode, self.iou_thresholds, jsd_method)
               for i, name in enumerate(self.uncertainties)}
        u = self.score(dets)
        combo = threshold_metrics(u, cd, self.budget, self.mode, self.iou_thresholds, jsd_method)
        kept, removed = operating_rates(u, cd, self.operating_threshold)
        combo.extra.update(op_cd_kept=kept, op_fd_removed=removed)
        out[COMBINATION] = combo
        return out

    # -- persistence

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only (NaN -> ``null``); :meth:`from_dict` restores an identical model."""
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "uncertainties": list(self.uncertainties),
            "normaliser": self.normaliser.to_dict(),
            "weights": [float(x) for x in self.weights],
            "class_weights": {str(int(c)): [float(x) for x in w] for c, w in sorted(self.class_weights.items())},
            "iou_thresholds": [float(x) for x in self.iou_thresholds],
            "thresholds": [_json_float(x) for x in self.thresholds],
            "operating_threshold": _json_float(self.operating_threshold),
            "budget": float(self.budget),
            "mode": self.mode,
            "objective": self.objective,
            "metrics": {name: {k: _json_float(v) for k, v in m.items()} for name, m in self.metrics.items()},
            "info": json.loads(json.dumps(self.info, default=_json_default)),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ThresholdModel":
        """Inverse of :meth:`to_dict`; a malformed dict raises :class:`ThresholdingError`."""
        if not isinstance(d, Mapping) or d.get("format") != FORMAT:
            raise ThresholdingError(f"not a threshold model (expected 'format': {FORMAT!r}); "
                                    f"re-run the threshold stage")
        if not isinstance(d.get("version"), int) or d["version"] > FORMAT_VERSION:
            raise ThresholdingError(f"threshold model version {d.get('version')!r} is newer than this library reads "
                                    f"({FORMAT_VERSION}); upgrade uncertainty_det or re-run the threshold stage")
        try:
            names = [str(n) for n in d["uncertainties"]]
            k = len(names)
            model = cls(
                uncertainties=names,
                normaliser=MinMaxNormaliser.from_dict(d["normaliser"]),
                weights=np.asarray(d["weights"], dtype=np.float64),
                iou_thresholds=np.asarray(d["iou_thresholds"], dtype=np.float64),
                thresholds=np.asarray([_float(x) for x in d["thresholds"]], dtype=np.float64),
                operating_threshold=_float(d["operating_threshold"]),
                budget=check_budget(d["budget"]),
                mode=check_mode(d["mode"]),
                objective=str(d.get("objective", "metric")),
                class_weights={int(c): np.asarray(w, dtype=np.float64) for c, w in d.get("class_weights", {}).items()},
                metrics={str(n): {str(k2): _float(v) for k2, v in m.items()} for n, m in d.get("metrics", {}).items()},
                info=dict(d.get("info", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ThresholdingError):
                raise
            raise ThresholdingError(f"malformed threshold model ({exc!r}); re-run the threshold stage") from exc
        shapes = [model.normaliser.lo.size, model.normaliser.hi.size, model.weights.size,
                  *(w.size for w in model.class_weights.values())]
        if k == 0 or any(s != k for s in shapes) or model.thresholds.size != model.iou_thresholds.size:
            raise ThresholdingError(f"malformed threshold model: {k} uncertainties but array sizes {shapes}; "
                                    f"re-run the threshold stage")
        return model


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def save_threshold_model(model: ThresholdModel, path: str | os.PathLike) -> Path:
    """Write ``model.to_dict()`` as JSON atomically; returns the path."""
    return atomic_write_json(path, model.to_dict())


def load_threshold_model(path: str | os.PathLike) -> ThresholdModel:
    """Read a model written by :func:`save_threshold_model` (plain JSON, no code execution)."""
    path = Path(path)
    if not path.is_file():
        raise ThresholdingError(f"threshold model {path} does not exist; run the threshold stage first")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ThresholdingError(f"threshold model {path} cannot be read ({exc}); re-run the threshold stage") from exc
    return ThresholdModel.from_dict(d)


# ---------------------------------------------------------------------------------------------
# Fitting


def fit_combination(values: np.ndarray, cd: np.ndarray, names: Sequence[str], budget: float = 0.95, mode: str = "cd",
                    iou_thresholds: Sequence[float] | np.ndarray | None = None, classes: np.ndarray | None = None,
                    per_class: bool = False, objective: str = "metric",
                    settings: OptimiserSettings = OptimiserSettings(), min_class_samples: int = 20,
                    jsd_method: str = DEFAULT_JSD_METHOD, operating_iou: float | None = None) -> ThresholdModel:
    """Fit normalisation, weights and thresholds on arrays; returns a :class:`ThresholdModel`.

    values: ``[N, K]`` raw uncertainties named ``names``; cd: ``[T, N]`` CD labels for ``iou_thresholds``
    (default 0.50..0.75); classes: ``[N]`` predicted class ids (needed with ``per_class``).
    operating_iou: ``None`` -> the operating threshold is the mean of the per-IoU budget thresholds (the
    reference); an IoU threshold of ``iou_thresholds`` -> that IoU's budget threshold (reference D5c).
    """
    b = check_budget(budget)
    mode = check_mode(mode)
    if objective not in OBJECTIVES:
        raise ThresholdingError(f"unknown objective {objective!r}; choose one of {list(OBJECTIVES)}")
    if per_class and classes is None:
        raise ThresholdingError("per-class weights need the predicted class ids (classes=...)")
    values = np.asarray(values, dtype=np.float64)
    cd = np.asarray(cd, dtype=bool)
    names = [str(n) for n in names]
    ious = check_iou_thresholds(iou_thresholds)
    if operating_iou is not None and not np.any(np.isclose(ious, float(operating_iou))):
        raise ThresholdingError(f"operating_iou {operating_iou} is not one of the IoU thresholds "
                                f"{[round(float(x), 4) for x in ious]}; use one of them or null (their mean)")
    if values.ndim != 2 or values.shape[1] != len(names):
        raise ThresholdingError(f"values must be [N, {len(names)}] for uncertainties {names}, got {values.shape}")
    if cd.ndim != 2 or cd.shape != (ious.size, values.shape[0]):
        raise ThresholdingError(f"CD labels must be [{ious.size}, {values.shape[0]}], got {cd.shape}")
    if values.shape[0] == 0:
        raise ThresholdingError("no detection rows to fit on; check the Matches table (and the matcher)")
    n_cd = cd.sum(axis=1)
    if not np.any((n_cd > 0) & (n_cd < cd.shape[1])):
        raise ThresholdingError(
            f"the fitting set needs both correct and false detections at some IoU threshold; it has "
            f"{int(n_cd.max())} CDs of {cd.shape[1]} detections. Use a larger or harder split")
    if classes is not None:
        classes = np.asarray(classes, dtype=np.int64).reshape(-1)
        if classes.size != values.shape[0]:
            raise ThresholdingError(f"{classes.size} class ids for {values.shape[0]} detections")
    normaliser = MinMaxNormaliser.fit(values)
    u_norm = normaliser.transform(values)
    weights, value = optimise_weights(u_norm, cd, b, mode, objective, settings)
    class_weights: dict[int, np.ndarray] = {}
    info: dict[str, Any] = {"optimiser": "differential_evolution", "settings": settings.to_dict(),
                            "objective_value": value, "n_detections": int(values.shape[0]),
                            "n_cd": [int(x) for x in n_cd], "n_fd": [int(cd.shape[1] - x) for x in n_cd],
                            "per_class": bool(per_class)}
    if per_class:
        class_weights, info["class_info"] = optimise_class_weights(
            u_norm, cd, classes, weights, b, mode, objective, settings, min_class_samples)
    model = ThresholdModel(names, normaliser, weights, ious, np.full(ious.size, np.nan), float("nan"), b, mode,
                           objective, class_weights, {}, info)
    u_combined = (np.einsum("nk,nk->n", u_norm, model.weight_table(classes)) if class_weights else u_norm @ weights)
    combo = threshold_metrics(u_combined, cd, b, mode, ious, jsd_method)
    model.thresholds = combo.budget.threshold.copy()
    if not np.any(np.isfinite(model.thresholds)):
        raise ThresholdingError("no IoU threshold gives a budget threshold (no CDs in mode 'cd' / no FDs in mode "
                                "'fd'); use a larger split or other IoU thresholds")
    if operating_iou is None:
        model.operating_threshold = float(_nanmean(model.thresholds))
    else:
        model.operating_threshold = float(model.thresholds[int(np.argmin(np.abs(ious - float(operating_iou))))])
        if not math.isfinite(model.operating_threshold):
            raise ThresholdingError(f"no budget threshold at operating_iou {operating_iou} (no CDs/FDs there); "
                                    f"use another IoU threshold or null (the mean)")
    model.info["operating_iou"] = None if operating_iou is None else float(operating_iou)
    model.metrics = {name: threshold_metrics(values[:, i], cd, b, mode, ious, jsd_method).summary()
                     for i, name in enumerate(names)}
    model.metrics[COMBINATION] = combo.summary()
    return model


def fit_threshold_model(matches: pd.DataFrame, uncertainties: Sequence[str], budget: float = 0.95, mode: str = "cd",
                        iou_thresholds: Sequence[float] | np.ndarray | None = None, matcher: str = "gt_centric",
                        include_background: bool | None = None, per_class: bool = False, objective: str = "metric",
                        settings: OptimiserSettings = OptimiserSettings(), min_class_samples: int = 20,
                        jsd_method: str = DEFAULT_JSD_METHOD, operating_iou: float | None = None) -> ThresholdModel:
    """Fit a :class:`ThresholdModel` on a Matches table (DESIGN §6.4).

    Detection rows and CD labels come from :func:`.labels.cd_labels` (``matcher`` = the matcher that
    built ``matches``), the uncertainties from :func:`.measures.measure_matrix`; see :func:`fit_combination`.
    """
    ious = check_iou_thresholds(iou_thresholds)
    dets, cd = cd_labels(matches, ious, matcher, include_background)
    values = measure_matrix(dets, uncertainties)
    classes = dets["class_id"].to_numpy(dtype=np.int64) if per_class else None
    model = fit_combination(values, cd, uncertainties, budget, mode, ious, classes, per_class, objective, settings,
                            min_class_samples, jsd_method, operating_iou)
    model.info.update(matcher=matcher, include_background=include_background)
    return model
