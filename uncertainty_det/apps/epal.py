"""``udet-epal``: epistemic vs aleatoric uncertainty of a validated run (reference §4.7).

Reads the Matches table of ``udet-validate`` -> per matched detection (IoU > ``iou_thr``) the mean relative
aleatoric σ against the mean relative epistemic σ (or the class entropy) -> the grid search for the corner
sets high AL / low EP and low AL / high EP -> scatter, CSVs and crop mosaics under
``validation/<dataset>/epal/<y>/`` and MLflow.
"""
from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from ..data.catalog import dataset_spec_from_config, load_split
from ..errors import UserError
from ..workspace import evaluation_name, require_upstream, run_workspace
from .common import CONFIG_DIR, plain_config, stage_run

log = logging.getLogger("uncertainty_det.epal")


def run(plain: dict, tracker) -> dict:
    """The epal stage on a resolved config; returns per-y metrics (grid size, points, corner counts)."""
    from PIL import Image

    from ..data.visualize import crop_mosaic, crop_sharpness
    from ..evaluation.epal import epal_analysis, epal_comparison_figure, epal_figure
    from ..io_utils import atomic_dir
    from ..tables import read_detections

    spec = dataset_spec_from_config(plain["dataset"])
    workspace = run_workspace(plain["paths"]["runs_dir"], plain["run_name"])
    name = evaluation_name(spec.name, plain["split"], plain["dataset"].get("eval_split", "val"))
    matches_path = workspace.validation(name) / "matches.parquet"
    require_upstream(matches_path, "validate", f"udet-validate run_name={workspace.run_name} dataset={spec.name} "
                     f"split={plain['split']}", what="Matches table")
    matches, meta = read_detections(matches_path)
    manifest = load_split(spec, meta.get("split") or plain["split"])
    cfg = plain["epal"]
    ys = [cfg["y"]] if isinstance(cfg["y"], str) else list(cfg["y"])
    bad = [y for y in ys if y not in ("ep", "entropy")]
    if bad:
        raise UserError(f"epal.y must list ep and/or entropy, got {bad[0]!r}")
    metrics = {}
    out_dir = workspace.validation(name) / "epal"
    with atomic_dir(out_dir) as tmp:
        for y in ys:
            if y == "ep" and "ep_ymin" not in matches.columns:
                log.warning("no epistemic box σ in the Matches table (no MC dropout): skipping epal.y=ep")
                continue
            result = epal_analysis(matches, float(cfg["iou_thr"]), y, bool(cfg["calibrated"]), int(cfg["n"]),
                                   int(cfg["min_samples"]))
            folder = tmp / y
            folder.mkdir()
            epal_figure(result).savefig(folder / "scatter.png", dpi=110)
            quality = {"hal_lep": crop_sharpness(manifest, result.hal_lep),
                       "lal_hep": crop_sharpness(manifest, result.lal_hep)}
            epal_comparison_figure(result, quality, manifest.class_names).savefig(folder / "comparison.png", dpi=110)
            keep = ["image_id", "file_name", "det", "class_id", "score", "gt_class_id", "iou", "epal_x", "epal_y",
                    "epal_cell", "ymin", "xmin", "ymax", "xmax"]
            for name, rows in (("hal_lep", result.hal_lep), ("lal_hep", result.lal_hep)):
                rows[[c for c in keep if c in rows.columns]].to_csv(folder / f"{name}.csv", index=False)
                for gt in (False, True):
                    mosaic = crop_mosaic(manifest, rows, gt=gt)
                    if mosaic is not None:
                        Image.fromarray(mosaic).save(folder / f"{'gt' if gt else 'pred'}_{name}.png")
            metrics.update({f"{y}/grid_size": result.grid_size, f"{y}/points": len(result.points),
                            f"{y}/hal_lep": len(result.hal_lep), f"{y}/lal_hep": len(result.lal_hep),
                            f"{y}/nonfinite": result.n_nonfinite})
            log.info("AL vs %s: %d detections, grid %dx%d, %d high-AL/low-EP and %d low-AL/high-EP examples",
                     y, len(result.points), result.grid_size, result.grid_size, len(result.hal_lep),
                     len(result.lal_hep))
    tracker.log_metrics(metrics)
    tracker.log_artifacts(out_dir, f"epal/{spec.name}")
    log.info("results in %s", out_dir)
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="epal")
def main(cfg: DictConfig) -> None:
    with stage_run(cfg, "epal") as tracker:
        run(plain_config(cfg), tracker)


if __name__ == "__main__":
    main()
