"""``udet-glc``: ground-truth label cleaning (GLC) of a STAC run's labeled images with its teacher (DESIGN §10,
reference §5.5; defect 15 fixed: ``cons_cls`` compares matched detections, not same-rank ones).

Reads ``<runs>/<run_name>/stac/split.json`` (its ``labeled`` ids of ``glc.pool_split``) and the teacher
``stac/teacher/train/``; writes ``<runs>/<run_name>/stac/glc/``:

1. ``views/<view>/``: PNG copies of the labeled images (``flip``, ``blur``, ``noise``;
   :func:`~uncertainty_det.ssl.glc_views.write_views`), their ``manifest.json`` and the teacher's detections on
   them (``predictions.parquet``, boxes mapped back to the original frame);
2. ``predictions.parquet``: the teacher's detections on the plain images with ``cons_iou`` / ``cons_cls``
   (reused when present and made with the same teacher weights, images, view settings and post-processing);
3. ``<name>/`` (``clean``, or ``synthetic_<kind>`` when ``glc.synthetic`` corrupts the GT first), replaced as a
   whole: ``labeled.json`` (a COCO manifest of the labeled images with the cleaned labels; its image root is the
   dataset's), ``changes.csv`` (one row per added / removed / corrected box, column ``change``) and
   ``summary.json`` (counts; in synthetic mode the corruption counts and the ``recovery`` dict).
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import hydra
from omegaconf import DictConfig

from ..errors import UserError
from .common import CONFIG_DIR, plain_config, stage_run

log = logging.getLogger("uncertainty_det.glc")

PREDICTIONS = "predictions.parquet"


def _settings(plain: dict):
    """Validated GLC settings: (methods, thresholds, synthetic kind or None, view settings)."""
    from ..ssl.glc import STRESS_KINDS
    from ..ssl.glc_views import ViewSettings, check_methods, rule_thresholds
    from ..ssl.pseudo_gt import PseudoLabelError

    glc = plain["glc"]
    try:
        methods = check_methods(glc["methods"])
    except PseudoLabelError as exc:
        raise UserError(f"glc.methods={glc['methods']!r}: {exc}") from exc
    kind = glc.get("synthetic")
    if kind is not None and kind not in STRESS_KINDS:
        raise UserError(f"glc.synthetic={kind!r}: choose null or one of {', '.join(STRESS_KINDS)}")
    try:
        thresholds = rule_thresholds({m: glc.get(m) for m in ("md", "mistakes", "noisy")})
        views = ViewSettings(blur_sigma=float(glc["blur_sigma"]), noise_std=float(glc["noise_std"]),
                             seed=int(plain["seed"]))
    except (PseudoLabelError, TypeError, ValueError) as exc:
        raise UserError(f"invalid glc config: {exc}") from exc
    ranges = {"drop_fraction": (float, lambda v: 0 <= v <= 1), "noise_fraction": (float, lambda v: 0 <= v <= 1),
              "noise_deviation": (float, lambda v: 0 <= v < 1), "mistakes_per_image": (int, lambda v: v >= 0),
              "batch_size": (int, lambda v: v >= 1)}
    for key, (kind_of, ok) in ranges.items():
        try:
            good = ok(kind_of(glc[key]))
        except (TypeError, ValueError):
            good = False
        if not good:
            raise UserError(f"glc.{key}={glc[key]!r} is invalid (fractions in [0, 1], noise_deviation in [0, 1), "
                            f"mistakes_per_image >= 0, batch_size >= 1)")
    return methods, thresholds, kind, views


def _labeled_ids(split_path: Path) -> list[int]:
    try:
        return [int(i) for i in json.loads(split_path.read_text())["labeled"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{split_path} is not a STAC split (no list 'labeled'): {exc}; re-run udet-stac") from exc


def teacher_predictions(plain: dict, teacher_ws, manifest, glc_dir: Path, views_cfg) -> tuple:
    """The teacher's detections on ``manifest``'s images with their view consistency, cached in
    ``glc_dir/predictions.parquet``; returns ``(frame, number of unreadable images)``."""
    from ..ssl.glc_views import ids_digest, read_views, view_consistency, write_views
    from ..tables import read_detections, write_detections

    path = glc_dir / PREDICTIONS
    weights = teacher_ws.final_weights.stat()
    stamp = json.loads(json.dumps({
        "views": views_cfg.as_dict(), "images": ids_digest(manifest.image_ids),
        "teacher_weights": {"size": weights.st_size, "mtime": int(weights.st_mtime)},
        "postprocess": plain["postprocess"]}, sort_keys=True))
    if path.exists():
        frame, meta = read_detections(path)
        if meta.get("glc") == stamp:
            log.info("predictions: reusing %s", path)
            return frame, int(meta.get("skipped_images", 0))
        log.info("predictions: %s was made with another teacher, images or view settings; predicting again", path)
    views_dir = glc_dir / "views"
    views = read_views(views_dir, manifest.image_ids, views_cfg)
    if views is None:
        log.info("views: writing %d images x 3 under %s", len(manifest), views_dir)
        views, _ = write_views(manifest, views_dir, views_cfg)
    else:
        log.info("views: reusing %s", views_dir)
    skipped = len(manifest) - len(next(iter(views.values())))
    import dataclasses

    from ..data.pipeline import input_config_from_dict          # TensorFlow from here on
    from ..inference.postprocess import postprocess_config_from_dict
    from ..inference.predictor import Predictor

    try:
        post = postprocess_config_from_dict(plain["postprocess"])
        inputs = dataclasses.replace(input_config_from_dict(plain["input"]), batch_size=int(plain["glc"]["batch_size"]))
    except ValueError as exc:
        raise UserError(f"invalid config: {exc}") from exc
    predictor = Predictor.from_train_dir(teacher_ws.train, post)
    log.info("predictions: the teacher on %d labeled images and their %d views", len(manifest), len(views))
    original = predictor.predict_manifest(manifest, inputs, progress=True)
    if original.empty:
        raise UserError(f"the teacher ({teacher_ws.train}) detects nothing on the {len(manifest)} labeled images; "
                        f"check it (udet-stac summary) or lower postprocess.score_threshold")
    raw = {view: predictor.predict_manifest(m, inputs, progress=True) for view, m in views.items()}
    widths = {int(img["id"]): float(img["width"]) for img in manifest.images}
    frame, mapped = view_consistency(original, raw, widths)
    meta = {"run_name": teacher_ws.run_name, "dataset": plain["dataset"]["name"],
            "decoding": plain["postprocess"].get("decoding")}
    for view, detections in mapped.items():
        write_detections(detections, views_dir / view / PREDICTIONS, metadata={**meta, "view": view})
    write_detections(frame, path, metadata={**meta, "glc": stamp, "skipped_images": skipped})
    return frame, skipped


def run(plain: dict, tracker) -> dict:
    """GLC on a resolved config; returns the summary."""
    from ..data.catalog import dataset_spec_from_config, load_split
    from ..evaluation.matching import gt_frame_from_manifest
    from ..io_utils import atomic_dir, atomic_write_json
    from ..ssl.glc import recovery
    from ..ssl.glc_views import CHANGE_COLUMNS, clean_with_changes, corrupt_labels, labels_manifest
    from ..workspace import require_upstream, run_workspace

    methods, thresholds, kind, views_cfg = _settings(plain)
    glc = plain["glc"]
    run_name = plain["run_name"]
    stac_dir = run_workspace(plain["paths"]["runs_dir"], run_name).root / "stac"
    command = f"udet-stac run_name={run_name}"
    split_path = require_upstream(stac_dir / "split.json", "stac", command, what="the STAC split")
    teacher_ws = run_workspace(stac_dir, "teacher")
    require_upstream(teacher_ws.final_weights, "stac", command, what="the STAC teacher's weights")
    labeled = _labeled_ids(split_path)
    spec = dataset_spec_from_config(plain["dataset"])
    pool = load_split(spec, str(glc["pool_split"]))
    absent = sorted(set(labeled) - set(int(i) for i in pool.image_ids))
    if absent:
        raise UserError(f"{len(absent)} labeled image(s) of {split_path} are not in split {glc['pool_split']!r} of "
                        f"dataset {spec.name!r} (first: {absent[0]}); set glc.pool_split to udet-stac's ssl.pool_split")
    manifest = pool.subset(labeled)
    name = "clean" if kind is None else f"synthetic_{kind}"
    tracker.log_params({"glc/methods": ",".join(methods), "glc/synthetic": kind or "none",
                        "glc/labeled_images": len(labeled)})
    glc_dir = stac_dir / "glc"
    predictions, skipped = teacher_predictions(plain, teacher_ws, manifest, glc_dir, views_cfg)

    gt = gt_frame_from_manifest(manifest)
    source, summary = gt, {}
    if kind is not None:
        sizes = {int(img["id"]): (int(img["height"]), int(img["width"])) for img in manifest.images}
        source, corruption = corrupt_labels(
            gt, kind, sizes, len(pool.class_names), seed=int(plain["seed"]), drop_fraction=glc["drop_fraction"],
            mistakes_per_image=glc["mistakes_per_image"], noise_fraction=glc["noise_fraction"],
            noise_deviation=glc["noise_deviation"])
        summary.update({"corruption": corruption, "clean_boxes": len(gt)})
    cleaned, counts, changes = clean_with_changes(source, predictions, methods, **thresholds)
    first_new = max([0, *(int(a["id"]) for a in pool.annotations), *source["gt_id"].tolist()]) + 1
    labels, ann_ids = labels_manifest(manifest, cleaned, first_new_id=first_new,
                                      info={"description": f"GLC {name} labels of {run_name}",
                                            "glc": {"methods": methods, "synthetic": kind}})
    changes["ann_id"] = changes["gt_id"].map(dict(zip(cleaned["gt_id"].tolist(), ann_ids.tolist())))
    changes["ann_id"] = changes["ann_id"].fillna(-1).astype("int64")
    changes = changes.loc[:, list(CHANGE_COLUMNS)]
    if len(source) and counts["removed"] > 0.5 * len(source):
        log.warning("GLC removed %d of %d labeled boxes: the teacher supports few of them (no detection with score >= "
                    "glc.mistakes.min_score=%s overlaps them); check the teacher or lower that threshold",
                    counts["removed"], len(source), thresholds.get("mistakes_min_score", 0.1))
    summary.update({
        "name": name, "run_name": run_name, "teacher": str(teacher_ws.train), "methods": methods,
        "thresholds": thresholds, "synthetic": kind, "labeled_images": len(labeled), "skipped_images": skipped,
        "predictions": len(predictions), "boxes_before": len(source), "boxes_after": len(cleaned), **counts,
        "sanitized": {"clipped": labels.sanitize_report.clipped, "dropped": labels.sanitize_report.dropped}})
    if kind is not None:
        rec = recovery(gt, source, cleaned, kind)
        summary["recovery"] = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                               for k, v in rec.items()}
    out = glc_dir / name
    with atomic_dir(out) as tmp:
        labels.write(tmp / "labeled.json", image_root=pool.image_root)
        changes.to_csv(tmp / "changes.csv", index=False)
        atomic_write_json(tmp / "summary.json", summary)
    metrics = {**counts, "boxes_before": len(source), "boxes_after": len(cleaned), "predictions": len(predictions)}
    metrics.update({f"corruption/{k}": v for k, v in summary.get("corruption", {}).items()})
    metrics.update({f"recovery/{k}": v for k, v in summary.get("recovery", {}).items() if v is not None})
    tracker.log_metrics(metrics)
    tracker.log_artifacts(out, f"glc/{name}")
    log.info("GLC %s (%s): %d boxes -> %d (%d added, %d removed, %d corrected)%s -> %s", name, ",".join(methods),
             len(source), len(cleaned), counts["added"], counts["removed"], counts["corrected"],
             "" if kind is None else f"; recovery {summary['recovery']}", out)
    return summary


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="glc")
def main(cfg: DictConfig) -> None:
    with stage_run(cfg, "glc") as tracker:
        run(plain_config(cfg), tracker)


if __name__ == "__main__":
    main()
