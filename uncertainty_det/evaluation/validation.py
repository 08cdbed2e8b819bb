"""Validation of a Detections table against ground truth (the library side of ``udet-validate``, reference §4).

Two matchings serve two purposes:

* the **Matches table** and the detection-quality numbers (% missed, misclassification, mIoU, RMSE, average
  score, occlusion/truncation breakdowns) use the configured matcher over all detections (``gt_centric``:
  the reference's one row per GT, no score threshold);
* the **uncertainty quality** (Spearman σ vs residual, AUROC TP vs FP, sparsification, calibration metrics)
  uses a one-to-one greedy matching of the detections at or above the score floor (by default the average
  score, as downstream stages use it): TP = matched with the right class and IoU >= ``iou_threshold``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..tables import list_column, softmax
from .coco_eval import coco_metrics
from .detection_quality import quality_report, runtime_summary
from .matching import gt_frame_from_manifest, match
from .uncertainty_quality import (
    BOX_KINDS,
    box_uncertainty_error,
    has_uncertainty,
    is_true_positive,
    sigma_residual_px,
    uncertainty_quality_table,
    uncertainty_values,
)

UNCERTAINTIES = ("al", "ep", "entropy", "ep_cls")
UNCERTAINTY_LABELS = {"al": "aleatoric box σ (mean relative)", "ep": "epistemic box σ (mean relative)",
                      "entropy": "class entropy (bits)", "ep_cls": "epistemic class std (logit)"}


@dataclass
class ValidationReport:
    """Everything :func:`validate_detections` computes.

    Attributes:
      matches: the Matches table of the configured matcher (DESIGN §6.4).
      analysis_matches: the greedy matching at the score floor used for the uncertainty quality.
      metrics: flat ``{name: float}`` for MLflow: ``coco/AP50``, ``quality/missed_pct``, ``runtime/mean_ms``,
        ``uncertainty/<u>[_cal]/<key>``, ``calibration/<target>[_cal]/<metric>``, ``score_floor``, ...
      quality: :func:`~.detection_quality.quality_report` (overall dict and breakdown frames).
      uncertainty: :func:`~.uncertainty_quality.uncertainty_quality_table` of the analysis matches.
      calibration: long table ``target, calibrated, metric, value`` (class and box σ calibration metrics).
      figures: ``{relative file name: matplotlib Figure}``.
    """

    matches: pd.DataFrame
    analysis_matches: pd.DataFrame
    metrics: dict[str, float]
    quality: dict
    uncertainty: pd.DataFrame
    calibration: pd.DataFrame
    figures: dict[str, Any] = field(default_factory=dict)


def _calibration_rows(pairs: pd.DataFrame, n_bins: int) -> list[dict]:
    """Class and box-σ calibration metrics of the matched rows (right or wrong class), long format."""
    from ..calibration.metrics import classification_report, regression_report

    rows = []
    if len(pairs) < 2:
        return rows
    labels = pairs["gt_class_id"].to_numpy(dtype=np.int64) - 1
    logits = list_column(pairs, "logits")
    variants = [(False, softmax(logits))]
    if "probs_cal" in pairs.columns:
        variants.append((True, list_column(pairs, "probs_cal")))
    for cal, probs in variants:
        for k, v in classification_report(probs, labels, n_bins=n_bins).items():
            rows.append({"target": "class", "calibrated": cal, "metric": k, "value": float(v)})
    for kind in BOX_KINDS:
        for cal in (False, True):
            if not has_uncertainty(pairs, kind, cal):
                continue
            sigma, residual = sigma_residual_px(pairs, kind, cal)
            pred = pairs[["ymin", "xmin", "ymax", "xmax"]].to_numpy(np.float64)
            for k, v in regression_report(pred, pred + residual, sigma).items():
                rows.append({"target": kind, "calibrated": cal, "metric": k, "value": float(v)})
    return rows


def _figures(analysis: pd.DataFrame, tp: np.ndarray, names: Sequence[str], fractions, title: str) -> dict:
    from ..calibration.plots import reliability_diagram
    from . import validation_plots as vp

    figures = {}
    dets = analysis.loc[analysis["kind"].to_numpy(dtype=object) != "missed"]
    matched = dets["kind"].to_numpy(dtype=object) == "matched"
    for name in names:
        for cal in (False, True):
            if not has_uncertainty(dets, name, cal):
                continue
            tag = f"{name}{'_cal' if cal else ''}"
            label = f"{UNCERTAINTY_LABELS.get(name, name)}{', calibrated' if cal else ''}"
            u = uncertainty_values(dets, name, cal)
            if name in BOX_KINDS:
                u_m, e_m = box_uncertainty_error(dets, name, cal)
                error_name = "mean |relative residual|"
                figures[f"{tag}/sigma_vs_residual.png"] = vp.sigma_residual_figure(u_m, e_m, name=label)
            else:
                u_m = u[matched]
                e_m = (dets["class_id"].to_numpy()[matched] != dets["gt_class_id"].to_numpy()[matched]).astype(float)
                error_name = "misclassification"
            figures[f"{tag}/sparsification.png"] = vp.sparsification_figure(u_m, e_m, name=label,
                                                                            error_name=error_name,
                                                                            fractions=fractions)
            figures[f"{tag}/tp_vs_fp.png"] = vp.tp_fp_histogram(u, tp, name=label)
    pairs = dets.loc[matched]
    for kind in BOX_KINDS:
        if has_uncertainty(pairs, kind) and len(pairs):
            sigma, residual = sigma_residual_px(pairs, kind)
            sigma_cal = sigma_residual_px(pairs, kind, True)[0] if has_uncertainty(pairs, kind, True) else None
            figures[f"{kind}/pit_coverage.png"] = vp.pit_coverage_figure(
                residual, sigma, sigma_cal, name=f"{title}: {UNCERTAINTY_LABELS[kind]}, matched detections")
    if len(pairs) and "logits" in pairs.columns:
        labels = pairs["gt_class_id"].to_numpy(dtype=np.int64) - 1
        probs_cal = list_column(pairs, "probs_cal") if "probs_cal" in pairs.columns else None
        figures["class/reliability.png"] = reliability_diagram(
            softmax(list_column(pairs, "logits")), labels, probs_cal, title=f"{title}: matched detections")
    return figures


def validate_detections(
    detections: pd.DataFrame,
    manifest,
    *,
    matcher: str = "gt_centric",
    iou_threshold: float = 0.5,
    score_floor: float | None = None,
    timings: Sequence[tuple[float, int]] | None = None,
    warmup: int = 1,
    fractions: Sequence[float] | None = None,
    n_bins: int = 10,
    names: Sequence[str] = UNCERTAINTIES,
    figures: bool = True,
    title: str = "",
) -> ValidationReport:
    """Match, score detection quality and every uncertainty of a Detections table.

    Args:
      detections: Detections table (DESIGN §6.3) of the manifest's images, optionally with ``*_cal`` columns.
      manifest: the split's :class:`~uncertainty_det.data.manifest.Manifest` (GT, class names).
      matcher: ``gt_centric`` | ``greedy`` for the Matches table.
      iou_threshold: IoU of a true positive (and of the greedy matchings).
      score_floor: detections below it are left out of the uncertainty analysis; ``None``: the average score
        of the Matches table (reference §4.4, kept as a float).
      timings: per prediction call ``(seconds, images)``; runtime per image = seconds / images, the first
        ``warmup`` calls dropped (graph tracing).
      fractions: sparsification fractions (default 0..0.99).
      n_bins: reliability bins.
      names: uncertainties to analyse (those missing from the table are skipped).
      figures: also draw the plots.
    """
    gt = gt_frame_from_manifest(manifest)
    matches = match(detections, gt, matcher, **({"iou_threshold": iou_threshold} if matcher == "greedy" else {}))
    quality = quality_report(matches)
    metrics: dict[str, float] = {f"quality/{k}": float(v) for k, v in quality["overall"].items()}
    coco = coco_metrics(manifest.to_coco(), detections, manifest.class_names)
    metrics.update({f"coco/{k}": float(v) for k, v in coco.items() if k.startswith(("AP", "AR"))})
    if timings:
        per_image = [s / max(int(n), 1) for s, n in timings]
        if len(per_image) > warmup:
            metrics.update({f"runtime/{k}": v for k, v in runtime_summary(per_image, warmup=warmup).items()})
    average = quality["overall"].get("average_score", float("nan"))
    floor = float(average) if score_floor is None else float(score_floor)
    if not np.isfinite(floor):
        floor = 0.0
    metrics["score_floor"] = floor
    analysis = match(detections, gt, "greedy", iou_threshold=iou_threshold, min_score=floor)
    dets = analysis.loc[analysis["kind"].to_numpy(dtype=object) != "missed"]
    tp = is_true_positive(dets, iou_threshold)
    metrics["analysis/detections"] = float(len(dets))
    metrics["analysis/true_positives"] = float(tp.sum())
    uq = uncertainty_quality_table(analysis, names=names, iou_threshold=iou_threshold, fractions=fractions)
    for _, row in uq.iterrows():
        tag = f"{row['uncertainty']}{'_cal' if row['calibrated'] else ''}"
        for key in ("spearman", "auroc_tp_fp", "ause", "ause_rel", "mean_uncertainty"):
            metrics[f"uncertainty/{tag}/{key}"] = float(row[key])
    matched = dets.loc[dets["kind"].to_numpy(dtype=object) == "matched"]
    calibration = pd.DataFrame(_calibration_rows(matched, n_bins),
                               columns=["target", "calibrated", "metric", "value"])
    for _, row in calibration.iterrows():
        metrics[f"calibration/{row['target']}{'_cal' if row['calibrated'] else ''}/{row['metric']}"] = row["value"]
    report = ValidationReport(matches, analysis, metrics, quality, uq, calibration)
    if figures:
        report.figures = _figures(analysis, tp, names, fractions, title)
    return report


def severity_figure(table: pd.DataFrame, columns: Sequence[str], title: str = ""):
    """One panel per metric column: its value against corruption severity, one line per corruption.

    table: rows ``corruption, severity`` plus the metric columns (severity 0 = the clean split).
    """
    from matplotlib.figure import Figure

    columns = [c for c in columns if c in table.columns]
    fig = Figure(figsize=(4.0 * max(len(columns), 1), 3.4))
    for k, col in enumerate(columns):
        ax = fig.add_subplot(1, len(columns), k + 1)
        for name, group in table.groupby("corruption", sort=True):
            group = group.sort_values("severity")
            ax.plot(group["severity"], group[col], marker="o", label=name)
        ax.set_xlabel("severity")
        ax.set_title(col, fontsize=9)
        if k == 0:
            ax.legend(frameon=False, fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
