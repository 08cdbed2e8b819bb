"""``udet-rcc``: rare-class crop collages for the STAC teacher (DESIGN §10, reference §5.4 RCC).

Reads udet-stac's labeled ids (``<runs>/<run_name>/stac/split.json``) and the pool split, cuts a context crop
around every labeled box of the target classes (``rcc.target_classes``, or the rare classes by labeled object
count, :func:`~uncertainty_det.ssl.labeled_sets.rare_target_classes`), pastes the crops into collages of the
most common labeled image size (:func:`~uncertainty_det.ssl.labeled_sets.build_collage_set`), and replaces
``<runs>/<run_name>/stac/rcc/`` atomically with:

* ``images/``: the collages (``collage_<k>.png``; with ``rcc.full_images`` also ``full_<id>.<ext>`` copies);
* ``collages.json``: a COCO manifest of ONLY those images (ids above the pool's largest, so
  ``merge_manifests(pool.subset(labeled), collages)`` never collides), readable with ``Manifest.read``;
* ``summary.json``: target classes, crops, collages, objects per class before / added / after;
* ``collages.png``: up to 6 collages with their boxes.

The counts go to MLflow as metrics, the summary and figure as artifacts.
"""
from __future__ import annotations

import json
import logging
import re

import hydra
from omegaconf import DictConfig

from ..errors import UserError
from .common import CONFIG_DIR, plain_config, stage_run

log = logging.getLogger("uncertainty_det.rcc")


def _metric_key(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_\-./ ]", "_", str(name))


def _check_settings(rcc: dict) -> None:
    try:
        low, high = float(rcc["low"]), float(rcc["high"])
    except (TypeError, ValueError):
        raise UserError(f"rcc.low={rcc['low']!r} and rcc.high={rcc['high']!r} must be numbers") from None
    if not 0.0 <= low <= high:
        raise UserError(f"need 0 <= rcc.low <= rcc.high, got low={low}, high={high}")
    if isinstance(rcc["max_boxes"], bool) or not isinstance(rcc["max_boxes"], int) or rcc["max_boxes"] < 1:
        raise UserError(f"rcc.max_boxes={rcc['max_boxes']!r} must be a positive integer")
    targets = rcc.get("target_classes")
    if targets is not None and not isinstance(targets, (list, str)):
        raise UserError(f"rcc.target_classes={targets!r}: give null or a list of class names, e.g. "
                        f"rcc.target_classes=[ring,star]")


def run(plain: dict, tracker) -> dict:
    """RCC on a resolved config; returns the summary."""
    from ..data.catalog import dataset_spec_from_config, load_split
    from ..data.manifest import Manifest
    from ..io_utils import atomic_dir, atomic_write_json
    from ..ssl.labeled_sets import (build_collage_set, class_ids_from_names, collage_figure, labeled_class_counts,
                                    rare_target_classes)
    from ..workspace import require_upstream, run_workspace

    rcc = plain["rcc"]
    _check_settings(rcc)
    spec = dataset_spec_from_config(plain["dataset"])
    pool = load_split(spec, str(rcc["pool_split"]))
    ws = run_workspace(plain["paths"]["runs_dir"], plain["run_name"])
    stac_dir = ws.root / "stac"
    split_path = require_upstream(stac_dir / "split.json", "stac", f"udet-stac run_name={plain['run_name']}",
                                  what="the labeled / unlabeled split")
    try:
        labeled = [int(i) for i in json.loads(split_path.read_text())["labeled"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{split_path} is not a udet-stac split ({exc}); re-run udet-stac "
                        f"run_name={plain['run_name']}") from exc
    names = {c["id"]: c["name"] for c in pool.categories}
    before = labeled_class_counts(pool, labeled)
    if rcc.get("target_classes") is None:
        targets = rare_target_classes(before, float(rcc["rare_weight_min"]))
        if not targets:
            raise UserError(f"no class of the {len(labeled)} labeled images reaches rcc.rare_weight_min="
                            f"{rcc['rare_weight_min']} (labeled objects per class: "
                            f"{ {names[c]: n for c, n in before.items()} }); lower it or set rcc.target_classes")
    else:
        targets = class_ids_from_names(rcc["target_classes"], pool.categories)
    target_names = [names[c] for c in targets]
    log.info("RCC: target classes %s (labeled objects %s)", target_names, [before[c] for c in targets])

    rcc_dir = stac_dir / "rcc"
    with atomic_dir(rcc_dir) as tmp:
        made = build_collage_set(pool, labeled, targets, tmp / "images", seed=int(plain["seed"]),
                                 low=float(rcc["low"]), high=float(rcc["high"]), max_boxes=int(rcc["max_boxes"]),
                                 augment=bool(rcc["augment"]), scale=bool(rcc["scale"]),
                                 full_images=bool(rcc["full_images"]))
        if made.collages == 0:
            raise UserError(f"no collage could be made: the {len(labeled)} labeled images hold "
                            f"{sum(before[c] for c in targets)} objects of {target_names} and "
                            f"{len(made.skipped_images)} of their images were unreadable; choose other "
                            f"rcc.target_classes")
        made.manifest.write(tmp / "collages.json", image_root=tmp / "images")
        added = labeled_class_counts(made.manifest)
        summary = {
            "settings": {k: rcc[k] for k in ("pool_split", "target_classes", "rare_weight_min", "low", "high",
                                             "augment", "scale", "max_boxes", "full_images")} | {
                "seed": int(plain["seed"])},
            "labeled_images": len(labeled),
            "target_classes": target_names,
            "target_class_ids": targets,
            "images_with_targets": len(made.images_with_targets),
            "skipped_images": made.skipped_images,
            "crops": made.crops,
            "collages": made.collages,
            "full_images": made.full_images,
            "collage_size": list(made.collage_hw),
            "first_image_id": min(made.manifest.image_ids),
            "objects_before": {names[c]: n for c, n in before.items()},
            "objects_added": {names[c]: n for c, n in added.items()},
            "objects_after": {names[c]: before[c] + added[c] for c in before},
        }
        atomic_write_json(tmp / "summary.json", summary)
        fig = collage_figure(Manifest(made.manifest.images[: made.collages], made.manifest.annotations,
                                      made.manifest.categories, image_root=tmp / "images"),
                             title=f"RCC collages of {', '.join(target_names)}")
        fig.savefig(tmp / "collages.png", dpi=100)
    tracker.log_params({"rcc/target_classes": ",".join(target_names), "rcc/labeled_images": len(labeled)})
    metrics = {"rcc/crops": made.crops, "rcc/collages": made.collages, "rcc/full_images": made.full_images,
               "rcc/skipped_images": len(made.skipped_images),
               "rcc/objects_added": sum(added.values()),
               "rcc/target_objects_added": sum(added[c] for c in targets)}
    metrics.update({f"rcc/objects_after/{_metric_key(k)}": v for k, v in summary["objects_after"].items()})
    tracker.log_metrics(metrics)
    tracker.log_artifact(rcc_dir / "summary.json", "rcc")
    tracker.log_artifact(rcc_dir / "collages.png", "rcc")
    log.info("RCC: %d crops of %s in %d collages (+%d full images), %d objects added -> %s", made.crops,
             target_names, made.collages, made.full_images, sum(added.values()), rcc_dir)
    return summary


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="rcc")
def main(cfg: DictConfig) -> None:
    with stage_run(cfg, "rcc") as tracker:
        run(plain_config(cfg), tracker)


if __name__ == "__main__":
    main()
