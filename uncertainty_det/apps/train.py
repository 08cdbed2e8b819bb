"""``udet-train``: train a detector on a dataset split (any uncertainty variant).

Compose the config -> :func:`uncertainty_det.model.training.train_from_manifests` -> log: per-epoch metrics
(step = epoch: losses, lr, rmse, mean_sigma, ``map/*`` where evaluated), the final mAP, and
``detector_config.json`` / ``history.csv`` as artifacts. Outputs go to ``<paths.runs_dir>/<run_name>/train/``.
"""
from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from ..data.catalog import dataset_spec_from_config, load_split
from ..errors import UserError
from ..workspace import require_upstream, run_workspace
from .common import CONFIG_DIR, plain_config, stage_run

log = logging.getLogger("uncertainty_det.train")


def _configs(plain: dict, num_classes: int):
    """Library configs from the resolved config; invalid values become one-line UserErrors."""
    from ..data.pipeline import input_config_from_dict
    from ..inference.postprocess import postprocess_config_from_dict
    from ..model.config import detector_config_from_dicts
    from ..model.training import trainer_config_from_dict

    try:
        detector = detector_config_from_dicts(plain["model"], plain["uncertainty"], num_classes)
        inputs = input_config_from_dict(plain["input"])
        post = postprocess_config_from_dict(plain["postprocess"])
    except ValueError as exc:
        raise UserError(f"invalid config: {exc}") from exc
    return detector, trainer_config_from_dict(plain["trainer"]), inputs, post


def run(plain: dict, tracker) -> dict:
    """The train stage on a resolved config (plain dicts); returns the final metrics."""
    from ..model.training import train_from_manifests

    spec = dataset_spec_from_config(plain["dataset"])
    detector_cfg, trainer_cfg, input_cfg, post_cfg = _configs(plain, len(spec.classes))
    workspace = run_workspace(plain["paths"]["runs_dir"], plain["run_name"])
    init_dir = None
    if plain.get("init_from"):
        source = run_workspace(plain["paths"]["runs_dir"], str(plain["init_from"]))
        require_upstream(source.final_weights, "train", f"udet-train run_name={source.run_name}",
                         what=f"trained weights of init_from={source.run_name}")
        init_dir = source.train
    train_manifest = load_split(spec, plain["train_split"])
    val_manifest = load_split(spec, plain["val_split"]) if plain.get("val_split") else None
    tracker.log_metrics({"data/train_images": len(train_manifest), "data/train_objects": train_manifest.num_annotations,
                         **({"data/val_images": len(val_manifest)} if val_manifest is not None else {})})
    log.info("run %s: %s on %s/%s, workspace %s", workspace.run_name, detector_cfg.name, spec.name,
             plain["train_split"], workspace.train)

    result = train_from_manifests(
        detector_cfg, trainer_cfg, input_cfg, train_manifest, workspace.train,
        val_manifest=val_manifest, postprocess_cfg=post_cfg,
        log_fn=lambda metrics, step: tracker.log_metrics(metrics, step=step),
        init_from=init_dir, seed=plain.get("seed"),
        extra_config={"run_name": workspace.run_name, "dataset": spec.name,
                      "normalization": {"mean": list(input_cfg.mean), "std": list(input_cfg.std)}},
    )
    from ..model.efficientdet import parameter_count

    tracker.log_metrics({"model/parameters": parameter_count(result.model)["total"],
                         "train/resumed_from_epoch": result.initial_epoch})
    for key in ("detector_config", "history"):
        tracker.log_artifact(result.paths[key], "train")
    if result.final_metrics:
        log.info("final: %s", ", ".join(f"{k}={v:.4f}" for k, v in result.final_metrics.items()
                                        if k.count("/") == 1 and k.startswith("map/")))
    return result.final_metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> None:
    with stage_run(cfg, "train") as tracker:
        run(plain_config(cfg), tracker)


if __name__ == "__main__":
    main()
