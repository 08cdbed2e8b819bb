"""``udet-evaluate``: COCO mAP (AP, AP50, AP75, APs/m/l, per class) of a trained run on a dataset split.

Compose config -> predict the split (from the run's weights or its export) -> COCO metrics
(faster-coco-eval) -> metrics and the per-class AP chart to MLflow.
"""
from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from ..data.catalog import dataset_spec_from_config, load_split
from ..workspace import run_workspace
from .common import CONFIG_DIR, plain_config, stage_run
from .predictions import predict_split

log = logging.getLogger("uncertainty_det.evaluate")


def run(plain: dict, tracker) -> dict:
    """The evaluate stage on a resolved config; returns the metrics."""
    from ..evaluation.detection_eval import SUMMARY_KEYS, evaluate_detections

    spec = dataset_spec_from_config(plain["dataset"])
    workspace = run_workspace(plain["paths"]["runs_dir"], plain["run_name"])
    manifest = load_split(spec, plain["split"])
    detections = predict_split(plain, workspace, manifest)
    out_dir = workspace.root / "evaluation" / spec.name / plain["split"]
    metrics = evaluate_detections(manifest.to_coco(), detections, manifest.class_names, out_dir,
                                  title=f"{workspace.run_name} on {spec.name}/{plain['split']}")
    tracker.log_metrics({k: v for k, v in metrics.items() if k in SUMMARY_KEYS or k.startswith("AP/")})
    tracker.log_metrics({"num_images": len(manifest), "num_detections": len(detections)})
    tracker.log_artifacts(out_dir, "evaluation")
    log.info("%s on %s/%s: %s", workspace.run_name, spec.name, plain["split"],
             ", ".join(f"{k}={metrics[k]:.4f}" for k in ("AP", "AP50", "AP75")))
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="evaluate")
def main(cfg: DictConfig) -> None:
    with stage_run(cfg, "evaluate") as tracker:
        run(plain_config(cfg), tracker)


if __name__ == "__main__":
    main()
