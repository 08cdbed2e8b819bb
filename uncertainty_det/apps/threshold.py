"""``udet-threshold``: cost-sensitive failure recognition on a validated split (reference §1, DESIGN §9).

Compose config -> read the split's Matches table (``udet-validate``) -> drop rows below the score floor ->
CD labels per IoU threshold -> fit the seeded combination and its budget thresholds -> metrics of every
single uncertainty and of the combination -> diagnostics (spider plot, heatmaps, top-k image panels per
outcome) -> ``thresholding/<dataset>[-<split>]/`` and MLflow.
"""
from __future__ import annotations

import logging
import math

import hydra
import numpy as np
from omegaconf import DictConfig

from ..errors import UserError
from .common import CONFIG_DIR, plain_config, stage_run

log = logging.getLogger("uncertainty_det.threshold")


def _names(value) -> list[str]:
    return [value] if isinstance(value, str) else [str(v) for v in value]


def validated_floor(validation_dir) -> float | None:
    """The score floor ``udet-validate`` used for its uncertainty analysis (its average score by default)."""
    from .calibrators import validation_metric

    value = validation_metric(validation_dir, "score_floor")
    return value if value is not None else validation_metric(validation_dir, "quality/average_score")


def score_floor_of(setting, validation_dir, matches, matcher: str) -> tuple[float, str]:
    """``(floor, how)`` for ``threshold.score_floor``:

    * ``auto``: ``f1`` with greedy matching (the population auto-labeling keeps), ``0`` with ``gt_centric``
      (the reference fits on every GT-centric row);
    * ``f1``: the score maximising F1 of the detections above it (greedy Matches tables only);
    * ``average``: the average score ``udet-validate`` measured (the reference's auto-labeling floor);
    * a number in [0, 1].
    """
    from ..thresholding import f1_score_floor

    setting = "auto" if setting is None else setting
    if str(setting) == "auto":
        setting = "f1" if matcher == "greedy" else 0.0
    if str(setting) == "f1":
        if matcher != "greedy":
            raise UserError(f"threshold.score_floor=f1 needs a greedy Matches table (one-to-one, with background "
                            f"detections) but {validation_dir} was built with {matcher}; re-run udet-validate with "
                            f"validation.matcher=greedy or set threshold.score_floor=average|<number>")
        floor, info = f1_score_floor(matches)
        log.info("score floor %.4f maximises F1 (%.3f; precision %.3f, recall %.3f)", floor, info["f1"],
                 info["precision"], info["recall"])
        return floor, "f1"
    if str(setting) == "average":
        floor = validated_floor(validation_dir)
        if floor is None:
            raise UserError(f"no validated average score in {validation_dir}/metrics.json; re-run udet-validate or "
                            f"set threshold.score_floor=<number>")
        return floor, "average"
    try:
        floor = float(setting)
    except (TypeError, ValueError):
        floor = float("nan")
    if not (0.0 <= floor <= 1.0):
        raise UserError(f"threshold.score_floor must be auto, f1, average or a number in [0, 1], got {setting!r}")
    return floor, "fixed"


def above_floor(matches, floor: float):
    """Matches rows kept for thresholding: missed GTs and detections with ``score >= floor``."""
    import numpy as np

    kind = matches["kind"].to_numpy(dtype=object)
    score = matches["score"].to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore"):
        keep = (kind == "missed") | (score >= floor)
    return matches.loc[keep].reset_index(drop=True)


def fit_and_report(matches, th: dict, matcher: str):
    """Fit the :class:`ThresholdModel` and compute the metrics of every single uncertainty and the combination.

    Returns ``(model, dets, cd, results)``: the detection rows, their CD labels ``[T, N]`` and
    ``{name: ThresholdMetrics}`` (singles of ``th["compare"]`` plus ``combination``).
    """
    from ..thresholding import (
        COMBINATION, OptimiserSettings, available_measures, cd_labels, fit_combination, measure_matrix,
        measure_values, threshold_metrics,
    )

    opt = th["optimiser"]
    settings = OptimiserSettings(seed=int(opt["seed"]), maxiter=int(opt["maxiter"]), popsize=int(opt["popsize"]),
                                 tol=float(opt["tol"]))
    names = _names(th["uncertainties"])
    # the detection rows and CD labels are built once and shared by the fit and the comparison table
    dets, cd = cd_labels(matches, [float(x) for x in th["iou_thresholds"]], matcher, th["include_background"])
    classes = dets["class_id"].to_numpy(dtype=np.int64) if th["per_class"] else None
    model = fit_combination(measure_matrix(dets, names), cd, names, float(th["budget"]), str(th["mode"]),
                            [float(x) for x in th["iou_thresholds"]], classes, bool(th["per_class"]),
                            str(th["objective"]), settings, int(th["min_class_samples"]), str(th["jsd_method"]),
                            th["operating_iou"])
    model.info.update(matcher=matcher, include_background=th["include_background"])
    compare = available_measures(dets) if str(th["compare"]) == "auto" else _names(th["compare"])
    results = {}
    for name in dict.fromkeys([*names, *compare]):
        values = measure_values(dets, name, check_finite=False)
        if not np.isfinite(values).all():
            log.warning("%s has %d NaN/inf values: left out of the comparison", name, int((~np.isfinite(values)).sum()))
            continue
        results[name] = threshold_metrics(values, cd, model.budget, model.mode, model.iou_thresholds,
                                          str(th["jsd_method"]))
    results[COMBINATION] = threshold_metrics(model.score(dets), cd, model.budget, model.mode, model.iou_thresholds,
                                             str(th["jsd_method"]))
    return model, dets, cd, results


def diagnostics(model, matches, dets, cd, results: dict, manifest, cfg: dict, title: str) -> tuple[dict, dict, dict]:
    """``(figures {file name: Figure}, picks {outcome: image ids, iou, threshold}, panels {file name: uint8
    mosaic})`` at the operating threshold and one IoU threshold (``cfg["iou"]``, default the largest)."""
    from ..thresholding import diagnostics as diag

    figures: dict = {}
    figures["spider.png"] = diag.spider_figure({k: v.summary() for k, v in results.items()},
                                                title=f"{title}\n{results['combination'].label}")
    u = model.score(dets)
    ious = model.iou_thresholds
    t = int(np.argmax(ious)) if cfg["iou"] is None else int(np.argmin(np.abs(ious - float(cfg["iou"]))))
    grid = tuple(int(x) for x in cfg["grid"])
    shape = diag.infer_image_shape(matches, dets)
    calibrated = any(n.endswith("_cal") for n in model.uncertainties) and "al_ymin_cal" in dets.columns
    maps = diag.heatmaps(matches, dets, u, shape, grid, cd[t], model.operating_threshold, kind="al",
                         calibrated=calibrated)
    figures["heatmaps.png"] = diag.heatmap_figure(maps, shape)
    picks = diag.pick_images(dets["image_id"].to_numpy(), u, cd[t], model.operating_threshold,
                             int(cfg["top_k"]), seed=0)
    panels = {}
    for outcome, ids in picks.items():
        mosaic = diag.outcome_panel(manifest, matches, dets, u, cd[t], model.operating_threshold, ids)
        if mosaic is not None:
            panels[f"images_{outcome}.png"] = mosaic
    return figures, {"iou": float(ious[t]), "threshold": model.operating_threshold, **picks}, panels


def run(plain: dict, tracker) -> dict:
    """The threshold stage on a resolved config; returns the logged metrics."""
    from PIL import Image

    from ..data.catalog import dataset_spec_from_config, load_split
    from ..io_utils import atomic_dir, atomic_write_json
    from ..tables import read_detections
    from ..thresholding import COMBINATION, metrics_table, operating_rates, save_threshold_model
    from ..workspace import evaluation_name, require_upstream, run_workspace

    th = plain["threshold"]
    spec = dataset_spec_from_config(plain["dataset"])
    workspace = run_workspace(plain["paths"]["runs_dir"], plain["run_name"])
    split = str(plain["split"])
    name = evaluation_name(spec.name, split, plain["dataset"].get("eval_split", "val"))
    validation_dir = workspace.validation(name)
    matches_path = require_upstream(
        validation_dir / "matches.parquet", "validate",
        f"udet-validate run_name={workspace.run_name} dataset={spec.name} split={split}", what="Matches table")
    matches, meta = read_detections(matches_path)
    matcher = th["matcher"] or meta.get("matcher") or "gt_centric"
    if th["matcher"] and meta.get("matcher") and th["matcher"] != meta["matcher"]:
        raise UserError(f"threshold.matcher={th['matcher']} but the Matches table {matches_path} was built with "
                        f"{meta['matcher']}; re-run udet-validate split={split} validation.matcher={th['matcher']} "
                        f"or leave threshold.matcher=null")
    floor, floor_how = score_floor_of(th["score_floor"], validation_dir, matches, matcher)
    rows = above_floor(matches, floor)
    log.info("%s: %d Matches rows, %d kept at score >= %.4f (matcher %s)", matches_path, len(matches), len(rows),
             floor, matcher)
    model, dets, cd, results = fit_and_report(rows, th, matcher)
    model.info.update(run_name=workspace.run_name, dataset=spec.name, split=split, score_floor=floor,
                      score_floor_rule=floor_how, matches=str(matches_path), calibration=meta.get("calibration"))
    table = metrics_table(results)
    summary = results[COMBINATION].summary()
    title = f"{workspace.run_name} on {spec.name}/{split}, {matcher}, b={model.budget} mode={model.mode}"
    figures, picks, panels = {}, {}, {}
    if th["diagnostics"]["enabled"]:
        manifest = load_split(spec, meta.get("split") or split)
        figures, picks, panels = diagnostics(model, rows, dets, cd, results, manifest, th["diagnostics"], title)
    out_dir = workspace.thresholding(name)
    with atomic_dir(out_dir) as tmp:
        save_threshold_model(model, tmp / "threshold.json")
        table.to_csv(tmp / "metrics.csv", index=False)
        atomic_write_json(tmp / "picks.json", picks)
        for fname, fig in figures.items():
            (tmp / "plots").mkdir(exist_ok=True)
            fig.savefig(tmp / "plots" / fname, dpi=110)
        for fname, mosaic in panels.items():
            (tmp / "plots").mkdir(exist_ok=True)
            Image.fromarray(mosaic).save(tmp / "plots" / fname)
    metrics = {"score_floor": floor, "detections": int(len(dets)), "operating_threshold": model.operating_threshold,
               "n_cd": int(cd[0].sum()), "n_fd": int(cd.shape[1] - cd[0].sum())}
    metrics.update({f"combination/{k}": v for k, v in summary.items()})
    kept, removed = operating_rates(model.score(dets), cd, model.operating_threshold)
    metrics.update({"combination/op_cd_kept": float(np.nanmean(kept)), "combination/op_fd_removed":
                    float(np.nanmean(removed))})
    for n, m in results.items():
        if n != COMBINATION:
            metrics.update({f"single/{n}/{k}": v for k, v in m.summary().items()})
    metrics.update({f"weight/{n}": float(w) for n, w in zip(model.uncertainties, model.weights)})
    tracker.log_params({"threshold/matcher_used": matcher, "threshold/score_floor_used": round(floor, 6)})
    tracker.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)})
    tracker.log_artifacts(out_dir, f"thresholding/{name}")
    key = "fd_at_cd" if model.mode == "cd" else "cd_at_fd"
    best = max((n for n in results if n != COMBINATION), key=lambda n: np.nan_to_num(results[n].summary()[key]),
               default=None)
    log.info("%s: weights %s, operating threshold %.4f; %s combination %.4f%s", title,
             dict(zip(model.uncertainties, np.round(model.weights, 3).tolist())), model.operating_threshold,
             results[COMBINATION].label, summary[key],
             "" if best is None else f", best single {best} {results[best].summary()[key]:.4f}")
    log.info("results in %s", out_dir)
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="threshold")
def main(cfg: DictConfig) -> None:
    with stage_run(cfg, "threshold") as tracker:
        run(plain_config(cfg), tracker)


if __name__ == "__main__":
    main()
