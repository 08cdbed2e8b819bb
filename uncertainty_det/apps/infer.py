"""``udet-infer``: run a run's export on a folder / split / list of images.

Writes ``<runs>/<run_name>/inference/`` (replaced atomically): ``detections.parquet``, ``json/<stem>.json``,
``images/`` (drawn predictions and uncertainty images), ``uncertainty_summary.csv``,
``most_uncertain.json`` / ``least_uncertain.json``; logs counts and a few drawn images to MLflow.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import hydra
from omegaconf import DictConfig

from ..errors import UserError
from .calibrators import calibrated, load_run_calibration
from .common import CONFIG_DIR, plain_config, stage_run

log = logging.getLogger("uncertainty_det.infer")

#: Score floor of a run that ``udet-validate`` has not scored (no measured average score).
DEFAULT_SCORE_FLOOR = 0.3


def _select(cfg: dict):
    from ..data.catalog import dataset_spec_from_config, load_split
    from ..inference import image_sources as src

    source = str(cfg["source"])
    if source == "folder":
        if not cfg.get("folder"):
            raise UserError("source=folder needs folder=<path to a folder of images> "
                            "(or source=split split=<name>, source=list list_file=<file>)")
        return src.images_from_folder(cfg["folder"], cfg.get("first") or 0, cfg.get("last")), f"folder:{cfg['folder']}"
    if source == "split":
        spec = dataset_spec_from_config(cfg["dataset"])
        manifest = load_split(spec, str(cfg["split"]))
        return src.images_from_manifest(manifest), f"split:{spec.name}/{cfg['split']}"
    if source == "list":
        if not cfg.get("list_file"):
            raise UserError("source=list needs list_file=<text file with one image path per line>")
        return src.images_from_list(cfg["list_file"]), f"list:{cfg['list_file']}"
    raise UserError(f"unknown source {source!r}; use one of {', '.join(src.SOURCES)}")


def _json_detections(det: dict, keep, class_names) -> list[dict]:
    rows = []
    for i in keep:
        c = int(det["classes"][i])
        row = {
            "det": int(i), "class_id": c, "class_name": class_names[c - 1] if 1 <= c <= len(class_names) else str(c),
            "score": float(det["scores"][i]), "box": [float(v) for v in det["boxes"][i]],
            "logits": [float(v) for v in det["logits"][i]],
        }
        for key in ("al_std", "ep_std", "ep_logit_std", "total_std"):
            if key in det:
                row[key] = [float(v) for v in det[key][i]]
        rows.append(row)
    return rows


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="infer")
def main(cfg: DictConfig) -> None:
    with stage_run(cfg, "infer") as tracker:
        run(plain_config(cfg), tracker)


def run(cfg: dict, tracker) -> dict:
    """The stage body on a plain config; returns the logged metrics."""
    import numpy as np
    import pandas as pd

    from .. import tables
    from ..inference import drawing
    from ..inference.export import load_export
    from ..inference.image_sources import iter_batches, unique_stems
    from ..io_utils import atomic_dir, atomic_path, atomic_write_json
    from ..workspace import require_upstream, run_workspace

    ws = run_workspace(cfg["paths"]["runs_dir"], cfg["run_name"])
    export_dir = require_upstream(ws.export, "export", f"udet-export run_name={cfg['run_name']}", "the exported model")
    score_floor = cfg["score_floor"]
    if score_floor is None:
        from .calibrators import validated_average_score

        score_floor = validated_average_score(ws, cfg["dataset"]["name"])
        if score_floor is None:
            score_floor = DEFAULT_SCORE_FLOOR
            log.info("score_floor: run %s is not validated on %s (udet-validate measures its average score); "
                     "using %.2f", cfg["run_name"], cfg["dataset"]["name"], score_floor)
        else:
            log.info("score_floor: %.4f, the average score measured by udet-validate", score_floor)
    score_floor = float(score_floor)
    if not math.isfinite(score_floor):
        raise UserError(f"score_floor must be a finite number, got {cfg['score_floor']}")
    detector = load_export(export_dir)
    ecfg = detector.config
    class_names = detector.class_names
    selection, source_desc = _select(cfg)
    if cfg["source"] == "split" and list(cfg["dataset"]["classes"]) != class_names:
        raise UserError(f"dataset {cfg['dataset']['name']!r} has classes {list(cfg['dataset']['classes'])} but run "
                        f"{cfg['run_name']!r} was trained on {class_names}")
    stems = dict(zip((it.image_id for it in selection.items), unique_stems([it.file_name for it in selection.items])))
    kinds = drawing.available_kinds(ecfg["has_aleatoric"], ecfg.get("has_epistemic_box", ecfg["has_epistemic"]),
                                    ecfg.get("has_epistemic_class", ecfg["has_epistemic"]))
    failed: list[str] = []

    def on_error(item, exc):
        log.warning("skipping unreadable image %s: %s", item.path, exc)
        failed.append(str(item.path))

    frames, processed, drawn_files = [], [], []
    num_drawn = 0
    max_drawn = int(cfg["max_drawn"]) if cfg["draw"] else 0
    out_dir = ws.inference
    with atomic_dir(out_dir) as tmp:
        for items, images in iter_batches(selection.items, int(cfg["batch_size"]), on_error=on_error):
            outputs = detector.predict(images)
            frames.append(tables.detections_to_frame(
                outputs, [it.image_id for it in items], [it.file_name for it in items], class_names,
                ecfg["has_aleatoric"], ecfg["has_epistemic"]))
            for b, item in enumerate(items):
                processed.append({"image_id": item.image_id, "file_name": item.file_name})
                det = drawing.image_detections(outputs, b)
                keep = [int(i) for i in np.argsort(-det["scores"], kind="stable") if det["scores"][i] >= score_floor]
                stem = stems[item.image_id]
                atomic_write_json(tmp / "json" / f"{stem}.json", {
                    "image_id": int(item.image_id), "file_name": item.file_name,
                    "height": int(images.shape[1]), "width": int(images.shape[2]), "score_floor": score_floor,
                    "box_order": "ymin,xmin,ymax,xmax (original-image pixels)", "class_names": class_names,
                    "detections": _json_detections(det, keep, class_names)})
                if num_drawn < max_drawn:
                    written = drawing.draw_image_outputs(
                        images[b], det, tmp / "images", stem, class_names, score_floor,
                        bool(cfg["draw_uncertainty"]), kinds, int(cfg["max_boxes_drawn"]))
                    drawn_files += [p.relative_to(tmp / "images") for p in written]
                    num_drawn += 1
        if not processed:
            raise UserError(f"none of the {len(selection.items) + selection.skipped} selected images could be read "
                            f"({source_desc}); check the image files")
        df = pd.concat(frames, ignore_index=True) if frames else tables.empty_frame()
        calibration = load_run_calibration(cfg, ws)
        df = calibrated(df, calibration)
        tables.write_detections(df, tmp / "detections.parquet", metadata={
            "run_name": cfg["run_name"], "dataset": cfg["dataset"]["name"], "decoding": ecfg["decoding"],
            "mc_samples": ecfg["mc"]["samples"], "mc_mode": ecfg["mc"]["mode"], "mc_seed": ecfg["mc"]["seed"],
            "source": source_desc, "score_floor": score_floor,
            "calibration": None if calibration is None else calibration.describe()})
        summary = drawing.image_summary(df, pd.DataFrame(processed), score_floor)
        with atomic_path(tmp / "uncertainty_summary.csv") as p:
            summary.to_csv(p, index=False, na_rep="nan")
        most, least = drawing.extreme_images(summary, float(cfg["extreme_fraction"]))
        atomic_write_json(tmp / "most_uncertain.json", most)
        atomic_write_json(tmp / "least_uncertain.json", least)

    above = df["score"] >= score_floor
    metrics = {
        "images": len(processed),
        "skipped_missing": len(selection.missing),
        "skipped_corrupt": len(selection.corrupt) + len(failed),
        "skipped_images": selection.skipped + len(failed),
        "detections": len(df),
        "detections_above_floor": int(above.sum()),
        "images_with_detections": int(df.loc[above, "image_id"].nunique()),
        "drawn_images": num_drawn,
        "score_floor": score_floor,
    }
    for col in [c for c in drawing.SUMMARY_MEASURES if c in summary.columns]:
        values = summary[col].to_numpy(np.float64)
        if np.isfinite(values).any():
            metrics[f"mean_{col}"] = float(np.nanmean(values))
    tracker.log_metrics(metrics)
    for name in ("uncertainty_summary.csv", "most_uncertain.json", "least_uncertain.json", "detections.parquet"):
        tracker.log_artifact(out_dir / name, "inference")
    for rel in drawn_files[: max(0, int(cfg["log_images"]))]:
        tracker.log_artifact(out_dir / "images" / rel, str(Path("inference/images") / rel.parent))
    log.info("%d images (%d skipped), %d detections (%d >= %.2f) -> %s", metrics["images"],
             metrics["skipped_images"], metrics["detections"], metrics["detections_above_floor"], score_floor, out_dir)
    return metrics


if __name__ == "__main__":
    main()
