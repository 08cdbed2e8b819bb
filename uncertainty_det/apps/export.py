"""``udet-export``: export a trained run as a SavedModel (pre-processing, MC sampling, decoding, NMS inside).

Reads ``<runs>/<run_name>/train/final.weights.h5`` and ``train/detector_config.json``, writes
``<runs>/<run_name>/export/`` (replaced atomically) and logs it as an MLflow artifact.
"""
from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from ..errors import UserError
from .common import CONFIG_DIR, plain_config, stage_run

log = logging.getLogger("uncertainty_det.export")


def _train_command(cfg: dict) -> str:
    return (f"udet-train run_name={cfg['run_name']} dataset={cfg['dataset']['name']} model={cfg['model']['name']} "
            f"uncertainty={cfg['uncertainty']['name']}")


def load_trained(cfg: dict):
    """``(model, DetectorConfig, class names, workspace, detector_config.json dict)`` of the run; a missing
    train output -> UserError naming ``udet-train run_name=...``."""
    from ..inference.predictor import load_detector
    from ..workspace import require_upstream, run_workspace

    ws = run_workspace(cfg["paths"]["runs_dir"], cfg["run_name"])
    require_upstream(ws.final_weights, "train", _train_command(cfg), "trained weights")
    require_upstream(ws.detector_config, "train", _train_command(cfg), "detector config")
    model, detector_cfg, info = load_detector(ws.train)
    class_names = [str(c) for c in (info.get("class_names") or cfg["dataset"]["classes"])]
    return model, detector_cfg, class_names, ws, info


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="export")
def main(cfg: DictConfig) -> None:
    with stage_run(cfg, "export") as tracker:
        plain = plain_config(cfg)
        from ..data.pipeline import input_config_from_dict
        from ..inference.export import export_model
        from ..inference.postprocess import postprocess_config_from_dict
        from ..inference.predictor import with_trained_normalization

        model, detector_cfg, class_names, ws, info = load_trained(plain)
        if detector_cfg.uncertainty_name != plain["uncertainty"]["name"]:
            log.warning("run %s was trained with uncertainty=%s, the config says %s; the trained model's MC "
                        "dropout and σ head are used", plain["run_name"], detector_cfg.uncertainty_name,
                        plain["uncertainty"]["name"])
        input_dict = dict(plain["input"], image_size=list(detector_cfg.image_size))
        try:
            input_cfg = with_trained_normalization(input_config_from_dict(input_dict), info.get("normalization"))
            post_cfg = postprocess_config_from_dict(plain["postprocess"])
        except ValueError as exc:
            raise UserError(str(exc)) from exc
        out_dir = ws.export
        mc_samples = int(plain["mc_samples"])
        mc_seed = plain.get("mc_seed")
        export_model(model, detector_cfg, class_names, input_cfg, post_cfg, mc_samples, detector_cfg.mc, mc_seed,
                     out_dir, run_name=plain["run_name"],
                     extra={"dataset": plain["dataset"]["name"], "weights": str(ws.final_weights)})
        tracker.log_params({
            "export/decoding": post_cfg.decoding,
            "export/mc_mode": detector_cfg.mc if mc_samples > 1 else "off",
            "export/mc_samples": mc_samples,
            "export/mc_seed": mc_seed,
        })
        tracker.log_artifacts(out_dir, "export")
        log.info("exported run %s to %s", plain["run_name"], out_dir)


if __name__ == "__main__":
    main()
