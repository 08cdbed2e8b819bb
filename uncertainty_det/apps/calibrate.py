"""``udet-calibrate``: fit class and box-σ calibrators of a run on its calibration split (reference §3).

Compose config -> predict the split (export or checkpoint) -> match detections to GT -> fit every method on
the fitting part, score it on the held-out part, refit on all pairs -> calibrators (JSON + npz), metrics,
plots -> MLflow. The selected methods (``calibration/class=...``, ``calibration/box=...``) are the ones
downstream stages apply, and their metrics are logged under stable names (``class/ece_after``,
``al/coverage_ece_after``, ...), so a multirun over methods compares in one MLflow table.
"""
from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from ..data.catalog import dataset_spec_from_config, load_split
from ..errors import UserError
from ..workspace import run_workspace
from .common import CONFIG_DIR, plain_config, stage_run
from .predictions import predict_split

log = logging.getLogger("uncertainty_det.calibrate")


def box_options(calibration: dict) -> dict[str, dict]:
    """Constructor options of every box method from the ``calibration`` config section (each method gets
    the options its constructor takes)."""
    import inspect

    from ..calibration import BOX_CALIBRATORS

    candidates = {"target": calibration["box_target"], "min_samples": int(calibration["min_samples"]),
                  "min_sigma": float(calibration["min_sigma"])}
    return {name: {k: v for k, v in candidates.items() if k in inspect.signature(cls).parameters}
            for name, cls in BOX_CALIBRATORS.items()}


def _check_methods(calibration: dict) -> None:
    from ..calibration import BOX_CALIBRATORS, CLASS_CALIBRATORS

    if calibration["class_method"] not in CLASS_CALIBRATORS:
        raise UserError(f"unknown calibration.class_method {calibration['class_method']!r}; use one of "
                        f"{', '.join(CLASS_CALIBRATORS)}")
    if calibration["box_method"] not in BOX_CALIBRATORS:
        raise UserError(f"unknown calibration.box_method {calibration['box_method']!r}; use one of "
                        f"{', '.join(BOX_CALIBRATORS)}")


def _figures(result, selected: dict, class_names: list[str], title: str) -> dict:
    """``{file name: figure}`` for the selected methods, plus the all-methods comparison."""
    from ..calibration import plots
    from ..tables import softmax

    ev = result.eval_pairs
    figures = {}
    method = selected["class"]
    if ("class", method) in result.eval_outputs:
        probs, probs_cal = softmax(ev.logits), result.eval_outputs[("class", method)]
        figures["reliability_top_label.png"] = plots.reliability_diagram(
            probs, ev.labels, probs_cal, title=f"{title}: top label, class/{method}")
        figures["reliability_per_class.png"] = plots.per_class_reliability(
            probs, ev.labels, probs_cal, class_names=class_names, title=f"{title}: per class, class/{method}")
    method = selected["box"]
    for kind in ("al", "ep"):
        if (kind, method) not in result.eval_outputs:
            continue
        residual = ev.gt_boxes - ev.pred_boxes
        figures[f"{kind}_coverage.png"] = plots.coverage_plot(
            residual, ev.sigma[kind], result.eval_outputs[(kind, method)],
            title=f"{title}: {kind} σ coverage, {method}")
        figures[f"{kind}_sigma_vs_residual.png"] = plots.sigma_residual_plot(
            result.fit_pairs.sigma[kind], result.fit_pairs.gt_boxes - result.fit_pairs.pred_boxes,
            calibrator=result.calibrators[(kind, method)], pred_boxes=result.fit_pairs.pred_boxes,
            title=f"{title}: {kind} σ vs |residual|, {method}")
    figures["methods.png"] = methods_figure(result.metrics, title)
    return figures


def methods_figure(metrics, title: str):
    """Bar chart per target: the headline calibration error of every method, before vs after."""
    from matplotlib.figure import Figure

    headline = {"class": "ece", "al": "coverage_ece", "ep": "coverage_ece"}
    targets = [t for t in headline if (metrics["target"] == t).any()]
    fig = Figure(figsize=(5.0 * max(len(targets), 1), 3.8))
    for k, target in enumerate(targets):
        ax = fig.add_subplot(1, len(targets), k + 1)
        rows = metrics[(metrics["target"] == target) & (metrics["metric"] == headline[target])]
        x = range(len(rows))
        ax.bar([i - 0.2 for i in x], rows["before"], width=0.4, label="uncalibrated", color="tab:gray")
        ax.bar([i + 0.2 for i in x], rows["after"], width=0.4, label="calibrated", color="tab:blue")
        ax.set_xticks(list(x))
        ax.set_xticklabels(rows["method"], rotation=30, ha="right")
        ax.set_ylabel(headline[target])
        ax.set_title(f"{target}: held-out {headline[target]}")
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def selected_metrics(result, selected: dict) -> dict[str, float]:
    """``<target>/<metric>_{before,after}`` of the selected methods (stable names across a sweep)."""
    out = {}
    for _, row in result.metrics.iterrows():
        method = selected["class"] if row["target"] == "class" else selected["box"]
        if row["method"] == method:
            out[f"{row['target']}/{row['metric']}_before"] = row["before"]
            out[f"{row['target']}/{row['metric']}_after"] = row["after"]
    return out


def run(plain: dict, tracker) -> dict:
    """The calibrate stage on a resolved config; returns the selected methods' metrics."""
    from ..calibration.fitting import fit_calibration, pairs_from_matches, save_calibration
    from ..evaluation.matching import gt_frame_from_manifest, match
    from ..io_utils import atomic_dir

    cal_cfg = plain["calibration"]
    _check_methods(cal_cfg)
    if not plain.get("split"):
        raise UserError(f"dataset {plain['dataset']['name']!r} has no calibration split (dataset.calib_split is "
                        f"null): pass split=<a split with ground truth>, e.g. split=val")
    spec = dataset_spec_from_config(plain["dataset"])
    workspace = run_workspace(plain["paths"]["runs_dir"], plain["run_name"])
    manifest = load_split(spec, plain["split"])
    detections = predict_split(plain, workspace, manifest)
    matches = match(detections, gt_frame_from_manifest(manifest), cal_cfg["matcher"])
    pairs = pairs_from_matches(matches, float(cal_cfg["min_iou"]))
    log.info("%d matched pairs on %s/%s (%d images, %d detections)", len(pairs), spec.name, plain["split"],
             len(manifest), len(detections))
    result = fit_calibration(
        pairs, box_options=box_options(cal_cfg), eval_fraction=float(cal_cfg["eval_fraction"]),
        mc_samples=int(cal_cfg["mc_samples"]), seed=int(plain["seed"]), n_bins=int(cal_cfg["n_bins"]))
    selected = {"class": cal_cfg["class_method"], "box": cal_cfg["box_method"]}
    title = f"{workspace.run_name} on {spec.name}/{plain['split']}"
    with atomic_dir(workspace.calibration) as tmp:
        save_calibration(result, tmp, selected, extra={
            "run_name": workspace.run_name, "dataset": spec.name, "split": plain["split"],
            "matcher": cal_cfg["matcher"], "min_iou": cal_cfg["min_iou"], "box_target": cal_cfg["box_target"]})
        (tmp / "plots").mkdir()
        for name, fig in _figures(result, selected, manifest.class_names, title).items():
            fig.savefig(tmp / "plots" / name, dpi=110)
    metrics = selected_metrics(result, selected)
    metrics.update({"pairs/total": len(pairs), "pairs/fit": len(result.fit_pairs), "pairs/eval": len(result.eval_pairs)})
    tracker.log_params({"class_method": selected["class"], "box_method": selected["box"]})
    tracker.log_metrics(metrics)
    tracker.log_artifacts(workspace.calibration, "calibration")
    for key, value in metrics.items():
        if key.endswith(("ece_after", "coverage_ece_after")):
            log.info("%s: %.4f (uncalibrated %.4f)", key[:-6], value, metrics[key[:-5] + "before"])
    log.info("calibrators written to %s", workspace.calibration)
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="calibrate")
def main(cfg: DictConfig) -> None:
    with stage_run(cfg, "calibrate") as tracker:
        run(plain_config(cfg), tracker)


if __name__ == "__main__":
    main()
