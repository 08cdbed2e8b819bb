"""``udet-evaluate``: COCO mAP (AP, AP50, AP75, APs/m/l, per class) of a trained run on a dataset split.

Compose config -> predict the split (from the run's weights or its export) -> COCO metrics
(faster-coco-eval) -> metrics and the per-class AP chart to MLflow.
"""
from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from ..data.catalog import dataset_spec_from_config, load_split
from ..errors import UserError
from ..workspace import require_upstream, run_workspace
from .common import CONFIG_DIR, plain_config, stage_run

log = logging.getLogger("uncertainty_det.evaluate")


def _predict_checkpoint(plain: dict, workspace, manifest):
    import dataclasses

    from ..data.pipeline import input_config_from_dict
    from ..inference.postprocess import postprocess_config_from_dict
    from ..inference.predictor import Predictor

    require_upstream(workspace.final_weights, "train", f"udet-train run_name={workspace.run_name}",
                     what="trained weights")
    try:
        post = postprocess_config_from_dict(plain["postprocess"])
        inputs = dataclasses.replace(input_config_from_dict(plain["input"]), batch_size=int(plain["batch_size"]))
    except ValueError as exc:
        raise UserError(f"invalid config: {exc}") from exc
    predictor = Predictor.from_train_dir(workspace.train, post, mc_samples=int(plain["mc_samples"]),
                                         mc_seed=plain["mc_seed"])
    return predictor.predict_manifest(manifest, inputs, progress=True)


def _predict_export(plain: dict, workspace, manifest):
    from ..inference.export import load_export
    from ..inference.image_sources import images_from_manifest
    from ..inference.infer import predict_images

    require_upstream(workspace.export, "export", f"udet-export run_name={workspace.run_name}", what="export")
    detector = load_export(workspace.export)
    selection = images_from_manifest(manifest)
    frame, _ = predict_images(detector, selection, batch_size=int(plain["batch_size"]))
    return frame


SOURCES = {"checkpoint": _predict_checkpoint, "export": _predict_export}


def run(plain: dict, tracker) -> dict:
    """The evaluate stage on a resolved config; returns the metrics."""
    from ..evaluation.detection_eval import SUMMARY_KEYS, evaluate_detections

    if plain["source"] not in SOURCES:
        raise UserError(f"unknown source {plain['source']!r}; use one of {sorted(SOURCES)}")
    spec = dataset_spec_from_config(plain["dataset"])
    workspace = run_workspace(plain["paths"]["runs_dir"], plain["run_name"])
    manifest = load_split(spec, plain["split"])
    detections = SOURCES[plain["source"]](plain, workspace, manifest)
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
