"""``udet-autolabel``: accept a run's predictions as labels where the combined uncertainty is low (DESIGN §9).

Compose config -> load the threshold model (``udet-threshold``) -> predict the images with the export ->
apply the run's calibrators -> per image: accept when every detection above the score floor has a combined
uncertainty below the operating threshold, else review -> labels (COCO, KITTI, YOLO, VOC), review queue,
drawn images, and with ground truth the precision/recall of the accepted labels -> ``autolabel/`` and MLflow.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from ..errors import UserError
from .calibrators import calibrated, load_run_calibration
from .common import CONFIG_DIR, plain_config, stage_run

log = logging.getLogger("uncertainty_det.autolabel")

#: Box colours of the drawn images: detections below / at or above the operating threshold.
KEPT_COLOUR, FLAGGED_COLOUR = (60, 180, 75), (230, 25, 75)


def threshold_path(plain: dict, workspace) -> Path:
    """``autolabel.threshold_file`` or ``thresholding/<dataset>[-<threshold_split>]/threshold.json``."""
    from ..workspace import evaluation_name, require_upstream

    cfg = plain["autolabel"]
    if cfg.get("threshold_file"):
        path = Path(cfg["threshold_file"])
        if not path.is_file():
            raise UserError(f"autolabel.threshold_file={path} does not exist; give a threshold.json of udet-threshold")
        return path
    ds = plain["dataset"]
    split = str(cfg["threshold_split"])
    name = evaluation_name(ds["name"], split, ds.get("eval_split", "val"))
    return require_upstream(workspace.thresholding(name) / "threshold.json", "threshold",
                            f"udet-validate run_name={workspace.run_name} split={split} validation.matcher=greedy "
                            f"&& udet-threshold run_name={workspace.run_name} split={split}",
                            what="threshold parameters")


def draw_decisions(selection, dets, decisions, out_dir: Path, class_names, max_drawn: int) -> dict[str, list[Path]]:
    """Draw up to ``max_drawn`` accepted and review images (review: in queue order) with their above-floor
    detections, green below the operating threshold and red at or above it, labelled ``class score u``.
    Returns ``{"accepted"|"review": [paths relative to out_dir]}``."""
    from ..data.images import load_rgb
    from ..data.visualize import draw_boxes
    from ..inference.drawing import write_png
    from ..inference.image_sources import unique_stems

    paths = {it.image_id: it.path for it in selection.items}
    stems = dict(zip(decisions["image_id"], unique_stems(list(decisions["file_name"]))))
    by_image = {k: g for k, g in dets.groupby("image_id", sort=False)}
    from ..autolabel import review_queue

    chosen = {"accepted": decisions.loc[decisions["accepted"], "image_id"].tolist()[:max_drawn],
              "review": review_queue(decisions)["image_id"].tolist()[:max_drawn]}
    written: dict[str, list[Path]] = {}
    for subset, ids in chosen.items():
        written[subset] = []
        for image_id in ids:                                          # <= max_drawn images, not detections
            try:
                image = load_rgb(paths[image_id])
            except Exception as exc:                                  # noqa: BLE001 - a drawing, not the labels
                log.warning("cannot draw %s: %s", paths[image_id], exc)
                continue
            g = by_image.get(image_id)
            if g is None or len(g) == 0:
                drawn = image
            else:
                boxes = g[["ymin", "xmin", "ymax", "xmax"]].to_numpy(np.float64)
                colours = [FLAGGED_COLOUR if f else KEPT_COLOUR for f in g["flagged"]]
                labels = [f"{class_names[c - 1] if 1 <= c <= len(class_names) else c} {s:.2f} u{u:.2f}"
                          for c, s, u in zip(g["class_id"], g["score"], g["combined"])]
                drawn = draw_boxes(image, boxes, g["class_id"].tolist(), labels, width=2, colors=colours)
            path = write_png(out_dir / subset / f"{stems[image_id]}.png", drawn)
            written[subset].append(path.relative_to(out_dir))
    return written


def run(plain: dict, tracker) -> dict:
    """The autolabel stage on a resolved config; returns the logged metrics."""
    import json

    from .. import autolabel as al
    from .. import tables
    import pandas as pd

    from ..inference.export import load_export
    from ..inference.infer import predict_images
    from ..io_utils import atomic_dir, atomic_write_json
    from ..thresholding import load_threshold_model
    from ..workspace import require_upstream, run_workspace
    from .infer import _select

    cfg = plain["autolabel"]
    ws = run_workspace(plain["paths"]["runs_dir"], plain["run_name"])
    model_path = threshold_path(plain, ws)
    model = load_threshold_model(model_path)
    floor = cfg["score_floor"] if cfg["score_floor"] is not None else model.info.get("score_floor")
    if floor is None:
        raise UserError(f"{model_path} records no score floor; set autolabel.score_floor=<number in [0, 1]>")
    floor = float(floor)
    if not math.isfinite(floor) or not 0.0 <= floor <= 1.0:
        raise UserError(f"autolabel.score_floor must be a number in [0, 1], got {cfg['score_floor']!r}")
    formats = [str(f) for f in cfg["formats"]]
    bad = [f for f in formats if f not in al.LABEL_FORMATS]
    if bad:
        raise UserError(f"autolabel.formats: unknown format {bad[0]!r}; choose from {list(al.LABEL_FORMATS)}")
    export_dir = require_upstream(ws.export, "export", f"udet-export run_name={plain['run_name']}",
                                  "the exported model")
    detector = load_export(export_dir)
    class_names = detector.class_names
    selection, source_desc = _select(plain)
    manifest = None
    if plain["source"] == "split":
        from ..data.catalog import dataset_spec_from_config, load_split

        if list(plain["dataset"]["classes"]) != class_names:
            raise UserError(f"dataset {plain['dataset']['name']!r} has classes {list(plain['dataset']['classes'])} "
                            f"but run {plain['run_name']!r} was trained on {class_names}")
        manifest = load_split(dataset_spec_from_config(plain["dataset"]), str(plain["split"]))
    calibration = load_run_calibration(plain, ws)
    sizes: list = []
    detections, failed = predict_images(detector, selection, int(plain["batch_size"]), sizes=sizes)
    for path in failed:
        log.warning("skipped unreadable image %s", path)
    images = pd.DataFrame(sizes, columns=["image_id", "file_name", "height", "width"])
    if images.empty:
        raise UserError(f"none of the {len(selection.items) + selection.skipped} selected images could be read "
                        f"({source_desc}); check the image files")
    detections = calibrated(detections, calibration)
    dets, decisions = al.decide_images(detections, images, model, floor, str(cfg["empty"]))
    queue = al.review_queue(decisions)
    accepted = al.accepted_manifest(dets, decisions, class_names,
                                    image_root=None if manifest is None else manifest.image_root)
    metrics = {"images": len(images), "skipped_images": selection.skipped + len(failed),
               "accepted_images": int(decisions["accepted"].sum()), "review_images": int(len(queue)),
               "auto_share": float(decisions["accepted"].mean()), "accepted_labels": len(accepted.annotations),
               "detections_above_floor": len(dets), "score_floor": floor,
               "operating_threshold": float(model.operating_threshold)}
    slipped = curve = None
    has_gt = manifest is not None and manifest.num_annotations > 0
    if has_gt:
        matches = al.label_matches(dets, decisions, manifest, float(cfg["iou_threshold"]))
        quality, slipped = al.label_quality(dets, decisions, manifest, float(cfg["iou_threshold"]), matches=matches)
        metrics.update({k: v for k, v in quality.items() if k not in metrics})
        counts = al.per_image_counts(matches, decisions, dets)
        curve = al.tradeoff_curve(counts, model.operating_threshold, str(cfg["empty"]) == "accept")
    out_dir = ws.autolabel
    drawn: dict = {}
    with atomic_dir(out_dir) as tmp:
        al.write_labels(accepted, tmp / "labels", formats)
        queue.to_csv(tmp / "review_queue.csv", index=False)
        atomic_write_json(tmp / "review_queue.json", json.loads(queue.to_json(orient="records")))
        decisions.to_csv(tmp / "decisions.csv", index=False)
        tables.write_detections(dets, tmp / "detections.parquet", metadata={
            "run_name": ws.run_name, "dataset": plain["dataset"]["name"], "source": source_desc,
            "score_floor": floor, "threshold_model": str(model_path),
            "calibration": None if calibration is None else calibration.describe()})
        if slipped is not None:
            slipped.to_csv(tmp / "slipped.csv", index=False)
        if curve is not None:
            curve.to_csv(tmp / "tradeoff.csv", index=False)
            (tmp / "plots").mkdir()
            al.tradeoff_figure(curve, metrics.get("all_precision"),
                               f"{ws.run_name}: {source_desc}, floor {floor:.2f}").savefig(
                tmp / "plots" / "tradeoff.png", dpi=110)
        if cfg["draw"] and int(cfg["max_drawn"]) > 0:
            drawn = draw_decisions(selection, dets, decisions, tmp / "images", class_names, int(cfg["max_drawn"]))
        atomic_write_json(tmp / "summary.json", {
            "run_name": ws.run_name, "source": source_desc, "threshold_model": str(model_path),
            "uncertainties": model.uncertainties, "weights": [float(w) for w in model.weights],
            "budget": model.budget, "mode": model.mode, "empty": cfg["empty"], "formats": formats,
            "skipped": {"missing": selection.missing, "corrupt": selection.corrupt + failed},
            "metrics": {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}})
    tracker.log_params({"autolabel/threshold_model": str(model_path), "autolabel/score_floor_used": round(floor, 6)})
    tracker.log_metrics({k: float(v) for k, v in metrics.items()
                         if isinstance(v, (int, float)) and math.isfinite(float(v))})
    for name in ("summary.json", "review_queue.csv", "decisions.csv", "slipped.csv", "tradeoff.csv",
                 "plots/tradeoff.png"):
        if (out_dir / name).exists():
            tracker.log_artifact(out_dir / name, str(Path("autolabel") / Path(name).parent))
    tracker.log_artifacts(out_dir / "labels", "autolabel/labels")
    for files in drawn.values():
        for rel in files[: int(cfg["log_images"])]:
            tracker.log_artifact(out_dir / "images" / rel, str(Path("autolabel/images") / rel.parent))
    msg = (f"{metrics['accepted_images']} of {metrics['images']} images auto-labelled "
           f"({100 * metrics['auto_share']:.1f} %), {metrics['review_images']} to review")
    if has_gt:
        msg += (f"; precision of accepted labels {metrics['accepted_precision']:.3f} vs "
                f"{metrics['all_precision']:.3f} for all predictions >= {floor:.2f}, "
                f"{metrics['slipped_false_labels']} false labels and {metrics['slipped_missed_objects']} missed "
                f"objects slipped through")
    log.info("%s -> %s", msg, out_dir)
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="autolabel")
def main(cfg: DictConfig) -> None:
    with stage_run(cfg, "autolabel") as tracker:
        run(plain_config(cfg), tracker)


if __name__ == "__main__":
    main()
