"""Fit every calibration method on matched pairs, report before/after metrics, save and load calibrators.

The library side of ``udet-calibrate`` (DESIGN §8, reference §3): matched pairs come from a Matches table
(``kind == "matched"`` rows with IoU above ``min_iou``; the reference keeps IoU > 0 of its GT-centric
assignment). A seeded part of the pairs is held out: every method is fitted on the rest and scored on it
(before = uncalibrated, after = calibrated). The saved calibrators are then refitted on all pairs.

On disk (``<workspace>/calibration/``)::

    calibration.json            selected methods, options, pair counts, the metrics of every method
    metrics.csv                 the same metrics as a table (target, method, metric, before, after)
    class_<method>.json/.npz    one fitted class calibrator per method (MC-aware when the model has MC)
    al_<method>.json/.npz       aleatoric box σ calibrators (loss attenuation)
    ep_<method>.json/.npz       epistemic box σ calibrators (MC dropout)
"""
from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..io_utils import atomic_write_json
from ..tables import CORNERS, list_column, softmax
from ._common import CalibrationError
from .apply import split_fit_eval
from .box import BoxCalibrator
from .classification import ClassCalibrator, MCClassCalibrator
from .metrics import classification_report, regression_report
from .registry import BOX_CALIBRATORS, CLASS_CALIBRATORS, load_calibrator, make_box_calibrator, \
    make_class_calibrator, save_calibrator

log = logging.getLogger(__name__)

SUMMARY_FILE = "calibration.json"
BOX_KINDS = ("al", "ep")
KIND_NAMES = {"class": "classification", "al": "aleatoric box σ", "ep": "epistemic box σ"}


@dataclass
class CalibrationPairs:
    """Matched (detection, GT) pairs for fitting, arrays aligned on the first axis (N pairs).

    Attributes:
      logits: ``[N, C]`` (MC mean) logits of the detection; labels: ``[N]`` 0-based GT class.
      logit_std: ``[N, C]`` MC logit std or ``None``.
      pred_boxes, gt_boxes: ``[N, 4]`` ``[ymin, xmin, ymax, xmax]`` original pixels.
      pred_classes, gt_classes: ``[N]`` 1-based ids.
      sigma: ``{"al": [N, 4], "ep": [N, 4]}`` pixel σ of the uncertainties the table has.
    """

    logits: np.ndarray
    labels: np.ndarray
    logit_std: np.ndarray | None
    pred_boxes: np.ndarray
    gt_boxes: np.ndarray
    pred_classes: np.ndarray
    gt_classes: np.ndarray
    sigma: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, idx: np.ndarray) -> "CalibrationPairs":
        """The pairs at ``idx`` (int index array)."""
        return CalibrationPairs(
            self.logits[idx], self.labels[idx], None if self.logit_std is None else self.logit_std[idx],
            self.pred_boxes[idx], self.gt_boxes[idx], self.pred_classes[idx], self.gt_classes[idx],
            {k: v[idx] for k, v in self.sigma.items()})


def pairs_from_matches(matches: pd.DataFrame, min_iou: float = 0.0) -> CalibrationPairs:
    """Calibration pairs from a Matches table: ``kind == "matched"`` rows with ``iou > min_iou``.

    Raises :class:`CalibrationError` when no pair is left (names the likely cause).
    """
    for column in ("kind", "iou", "logits", "class_id", "gt_class_id"):
        if column not in matches.columns:
            raise CalibrationError(f"matches table has no column {column!r}; build it with "
                                   f"uncertainty_det.evaluation.matching.match")
    rows = matches[(matches["kind"] == "matched") & (matches["iou"].to_numpy(dtype=float) > float(min_iou))]
    if len(rows) == 0:
        raise CalibrationError(
            f"no matched detection with IoU > {min_iou} on the calibration split: the model detects nothing "
            f"there (train it longer) or calibration.min_iou is too high")
    logits = list_column(rows, "logits")
    gt_classes = rows["gt_class_id"].to_numpy(dtype=np.int64)
    num_classes = logits.shape[1]
    if gt_classes.min() < 1 or gt_classes.max() > num_classes:
        raise CalibrationError(f"GT class ids must lie in 1..{num_classes} (the model's classes), got "
                               f"{gt_classes.min()}..{gt_classes.max()}: the dataset does not match the model")
    sigma = {}
    for kind in BOX_KINDS:
        cols = [f"{kind}_{c}" for c in CORNERS]
        if all(c in rows.columns for c in cols):
            sigma[kind] = np.nan_to_num(rows[cols].to_numpy(dtype=np.float64), nan=0.0)
    return CalibrationPairs(
        logits=logits,
        labels=gt_classes - 1,
        logit_std=list_column(rows, "ep_logit_std") if "ep_logit_std" in rows.columns else None,
        pred_boxes=rows[list(CORNERS)].to_numpy(dtype=np.float64),
        gt_boxes=rows[[f"gt_{c}" for c in CORNERS]].to_numpy(dtype=np.float64),
        pred_classes=rows["class_id"].to_numpy(dtype=np.int64),
        gt_classes=gt_classes,
        sigma=sigma,
    )


# ============================================================================================ fitting
@dataclass
class CalibrationResult:
    """What :func:`fit_calibration` returns.

    Attributes:
      calibrators: ``{(target, method): fitted calibrator}`` refitted on all pairs; target is ``class``,
        ``al`` or ``ep``.
      metrics: one row per (target, method, metric) with ``before`` and ``after`` on the held-out pairs.
      eval_outputs: ``{(target, method): calibrated held-out output}`` (probabilities ``[n, C]`` or σ
        ``[n, 4]``) for the plots; the uncalibrated inputs are ``eval_pairs``.
      eval_pairs / fit_pairs: the held-out / fitting pairs.
      num_pairs: all pairs.
    """

    calibrators: dict[tuple[str, str], Any]
    metrics: pd.DataFrame
    eval_outputs: dict[tuple[str, str], np.ndarray]
    eval_pairs: CalibrationPairs
    fit_pairs: CalibrationPairs
    num_pairs: int

    def metric(self, target: str, method: str, name: str, stage: str = "after") -> float:
        """One metric value (``stage``: ``before`` or ``after``)."""
        row = self.metrics[(self.metrics["target"] == target) & (self.metrics["method"] == method)
                           & (self.metrics["metric"] == name)]
        return float(row[stage].iloc[0]) if len(row) else float("nan")


def _class_probs(cal: ClassCalibrator, pairs: CalibrationPairs) -> np.ndarray:
    if isinstance(cal, MCClassCalibrator):
        return cal.transform(pairs.logits, pairs.logit_std)
    return cal.transform(pairs.logits)


def _fit_class(name: str, pairs: CalibrationPairs, options: Mapping[str, Any], mc_samples: int,
               seed: int) -> ClassCalibrator:
    mc = pairs.logit_std is not None and mc_samples > 1
    cal = make_class_calibrator(name, mc=mc, mc_samples=mc_samples, mc_seed=seed, **dict(options))
    if isinstance(cal, MCClassCalibrator):
        return cal.fit(pairs.logits, pairs.labels, pairs.logit_std)
    return cal.fit(pairs.logits, pairs.labels)


def _fit_box(name: str, kind: str, pairs: CalibrationPairs, options: Mapping[str, Any]) -> BoxCalibrator:
    cal = make_box_calibrator(name, **dict(options))
    return cal.fit(pairs.pred_boxes, pairs.gt_boxes, pairs.sigma[kind], pairs.gt_classes)


def _box_sigma(cal: BoxCalibrator, kind: str, pairs: CalibrationPairs) -> np.ndarray:
    # applied as at inference: with the predicted class
    return cal.transform(pairs.pred_boxes, pairs.sigma[kind], pairs.pred_classes)


def _rows(target: str, method: str, before: Mapping[str, float], after: Mapping[str, float]) -> list[dict]:
    return [{"target": target, "method": method, "metric": k, "before": float(before[k]),
             "after": float(after.get(k, np.nan))} for k in before]


def fit_calibration(
    pairs: CalibrationPairs,
    class_methods: Sequence[str] = tuple(CLASS_CALIBRATORS),
    box_methods: Sequence[str] = tuple(BOX_CALIBRATORS),
    *,
    class_options: Mapping[str, Mapping[str, Any]] | None = None,
    box_options: Mapping[str, Mapping[str, Any]] | None = None,
    eval_fraction: float = 0.2,
    mc_samples: int = 10,
    seed: int = 0,
    n_bins: int = 10,
) -> CalibrationResult:
    """Fit each method on the fitting part, score it on the held-out part, refit it on all pairs.

    Args:
      pairs: from :func:`pairs_from_matches`.
      class_methods / box_methods: names from the registries (box methods run for every σ kind the pairs
        have: ``al`` and/or ``ep``).
      class_options / box_options: per-method constructor options ``{method: {option: value}}``.
      eval_fraction: held-out share for the before/after report (seeded random split).
      mc_samples: logit samples per detection of the MC-aware class calibrators (used when the pairs carry
        MC logit std; 1 disables them).
      seed: split and MC sampling seed.
      n_bins: reliability bins of the classification metrics.

    Classification needs at least 2 classes; with fewer than 10 pairs nothing can be held out reliably and
    a :class:`CalibrationError` names the fix.
    """
    n = len(pairs)
    if n < 10:
        raise CalibrationError(f"only {n} matched pairs on the calibration split; calibration needs at least 10 "
                               f"(use a larger calib split or a better-trained model)")
    class_options = class_options or {}
    box_options = box_options or {}
    fit_idx, eval_idx = split_fit_eval(n, eval_fraction, seed)
    fit_pairs, eval_pairs = pairs.subset(fit_idx), pairs.subset(eval_idx)
    rows: list[dict] = []
    calibrators: dict[tuple[str, str], Any] = {}
    outputs: dict[tuple[str, str], np.ndarray] = {}

    num_classes = pairs.logits.shape[1]
    if num_classes >= 2 and class_methods:
        before = classification_report(softmax(eval_pairs.logits), eval_pairs.labels, n_bins=n_bins)
        for name in class_methods:
            cal = _fit_class(name, fit_pairs, class_options.get(name, {}), mc_samples, seed)
            probs = _class_probs(cal, eval_pairs)
            outputs[("class", name)] = probs
            rows += _rows("class", name, before, classification_report(probs, eval_pairs.labels, n_bins=n_bins))
            calibrators[("class", name)] = _fit_class(name, pairs, class_options.get(name, {}), mc_samples, seed)
    for kind in BOX_KINDS:
        if kind not in pairs.sigma:
            continue
        before = regression_report(eval_pairs.pred_boxes, eval_pairs.gt_boxes, eval_pairs.sigma[kind])
        for name in box_methods:
            opts = box_options.get(name, {})
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                cal = _fit_box(name, kind, fit_pairs, opts)
                sigma_cal = _box_sigma(cal, kind, eval_pairs)
                calibrators[(kind, name)] = _fit_box(name, kind, pairs, opts)
            for w in {str(w.message) for w in caught}:
                log.warning("%s %s: %s", KIND_NAMES[kind], name, w)
            outputs[(kind, name)] = sigma_cal
            rows += _rows(kind, name, before, regression_report(eval_pairs.pred_boxes, eval_pairs.gt_boxes, sigma_cal))
    metrics = pd.DataFrame(rows, columns=["target", "method", "metric", "before", "after"])
    return CalibrationResult(calibrators, metrics, outputs, eval_pairs, fit_pairs, n)


# ============================================================================================ persistence
def calibrator_path(folder: str | os.PathLike, target: str, method: str) -> Path:
    """``<folder>/<target>_<method>.json`` (target ``class``, ``al`` or ``ep``)."""
    return Path(folder) / f"{target}_{method}.json"


def save_calibration(result: CalibrationResult, folder: str | os.PathLike, selected: Mapping[str, str],
                     extra: Mapping[str, Any] | None = None) -> Path:
    """Write every calibrator, ``metrics.csv`` and ``calibration.json`` into ``folder`` (which must exist).

    ``selected``: ``{"class": method, "box": method}``, the methods applied downstream by default.
    """
    folder = Path(folder)
    for (target, method), cal in result.calibrators.items():
        save_calibrator(cal, calibrator_path(folder, target, method))
    result.metrics.to_csv(folder / "metrics.csv", index=False)
    targets = sorted({t for t, _ in result.calibrators})
    summary = {
        "selected": dict(selected),
        "targets": targets,
        "methods": {t: sorted(m for tt, m in result.calibrators if tt == t) for t in targets},
        "num_pairs": result.num_pairs,
        "num_fit_pairs": len(result.fit_pairs),
        "num_eval_pairs": len(result.eval_pairs),
        "metrics": json.loads(result.metrics.to_json(orient="records")),
        **dict(extra or {}),
    }
    return atomic_write_json(folder / SUMMARY_FILE, summary)


@dataclass
class LoadedCalibration:
    """The calibrators a downstream stage applies (``None`` where the run has none for that target)."""

    class_method: str | None
    box_method: str | None
    class_calibrator: ClassCalibrator | None
    al_calibrator: BoxCalibrator | None
    ep_calibrator: BoxCalibrator | None

    def describe(self) -> dict[str, Any]:
        """JSON-able summary for table metadata and logs."""
        return {"class_method": self.class_method if self.class_calibrator is not None else None,
                "box_method": self.box_method,
                "al": self.al_calibrator is not None, "ep": self.ep_calibrator is not None}


def load_calibration(folder: str | os.PathLike, class_method: str | None = None,
                     box_method: str | None = None) -> LoadedCalibration:
    """Load the calibrators of ``folder`` (written by :func:`save_calibration`).

    ``class_method`` / ``box_method``: override the methods selected at fitting time (``None``: the stored
    selection). An unknown or unfitted method is a :class:`CalibrationError` listing the available ones.
    """
    folder = Path(folder)
    summary_path = folder / SUMMARY_FILE
    try:
        summary = json.loads(summary_path.read_text())
    except FileNotFoundError:
        raise CalibrationError(f"no calibration in {folder} ({SUMMARY_FILE} missing): run udet-calibrate first")
    except (OSError, ValueError) as exc:
        raise CalibrationError(f"cannot read {summary_path} ({exc}); re-run udet-calibrate") from exc
    methods = summary.get("methods", {})
    class_method = class_method or summary.get("selected", {}).get("class")
    box_method = box_method or summary.get("selected", {}).get("box")

    def load(target: str, method: str | None):
        if method is None or target not in methods:
            return None
        if method not in methods[target]:
            raise CalibrationError(
                f"{KIND_NAMES[target]} calibrator {method!r} was not fitted in {folder}; available: "
                f"{', '.join(methods[target])} (re-run udet-calibrate to fit it)")
        return load_calibrator(calibrator_path(folder, target, method))

    return LoadedCalibration(class_method, box_method, load("class", class_method), load("al", box_method),
                             load("ep", box_method))
