"""``udet-csd``: consistency-based semi-supervised detection (DESIGN §10, reference §5.9, defects fixed).

``<runs>/<run_name>/csd/``: ``split.json`` (the labeled / unlabeled ids of ``ssl.pool_split``: the seeded split
of ``udet-stac`` with the same seed and percentage), ``model/`` (a run workspace: the trained detector), and
``summary.json``. Every batch holds ``batch_size // (ratio + 1)`` labeled images and unlabeled ones for the rest
(the unlabeled images' annotations are removed before they enter the pipeline); the loss is the supervised
detection loss on the labeled part plus ``w(t)`` times the flip-consistency loss on the whole batch
(:class:`~uncertainty_det.ssl.training.CSDTrainer`). An epoch is ``pool size // batch_size`` steps unless
``trainer.steps_per_epoch`` is set.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import math

import hydra
from omegaconf import DictConfig

from ..errors import UserError
from .common import CONFIG_DIR, plain_config, stage_run

log = logging.getLogger("uncertainty_det.csd")


def without_annotations(manifest, image_ids):
    """The images ``image_ids`` of ``manifest`` with no annotation (the unlabeled stream)."""
    from ..data.manifest import Manifest

    sub = manifest.subset(image_ids)
    return Manifest(sub.images, [], sub.categories, image_root=sub.image_root, source=f"{sub.source} unlabeled",
                    info=sub.info)


def check_csd_options(csd: dict, model: dict | None = None) -> None:
    """The ``csd`` settings (``csd.levels`` against the ``model`` config's pyramid levels when given), checked
    before any data is loaded (one-line errors)."""
    from ..ssl.csd import check_csd_options as check_loss_options

    check_loss_options(str(csd["divergence"]), csd["background_threshold"], str(csd["background_scope"]),
                       str(csd["class_reduction"]))
    if isinstance(csd["ratio"], bool) or not isinstance(csd["ratio"], int) or csd["ratio"] < 1:
        raise UserError(f"csd.ratio={csd['ratio']!r} must be an integer >= 1 (unlabeled images per labeled one)")
    if model is not None:
        from ..ssl.training import consistency_levels

        consistency_levels(csd["levels"], int(model["min_level"]), int(model["max_level"]))


def run(plain: dict, tracker) -> dict:
    """CSD training on a resolved config; returns the summary (final mAP, batch composition)."""
    from ..data.catalog import dataset_spec_from_config, load_split
    from ..data.pipeline import build_manifest_dataset
    from ..io_utils import atomic_write_json
    from ..model.training import make_map_evaluator, train_detector
    from ..ssl.batching import csd_batch_composition
    from ..ssl.training import CSDTrainer, zip_streams
    from ..workspace import run_workspace
    from .stac import SPLIT_METHODS, load_split_ids
    from .train import _configs

    ssl, csd = plain["ssl"], plain["csd"]
    if ssl["split"] not in SPLIT_METHODS:
        raise UserError(f"ssl.split={ssl['split']!r}: choose one of {', '.join(SPLIT_METHODS)}")
    check_csd_options(csd, plain["model"])
    spec = dataset_spec_from_config(plain["dataset"])
    pool = load_split(spec, str(ssl["pool_split"]))
    eval_manifest = load_split(spec, str(ssl["eval_split"]))
    ws = run_workspace(plain["paths"]["runs_dir"], plain["run_name"])
    csd_dir = ws.root / "csd"
    labeled, unlabeled = load_split_ids(csd_dir / "split.json", [int(i) for i in pool.image_ids],
                                        float(ssl["labeled_percent"]), int(plain["seed"]), str(ssl["split"]))
    detector, trainer_cfg, inputs, post = _configs(plain, len(pool.class_names))
    comp = csd_batch_composition(int(inputs.batch_size), int(csd["ratio"]), len(labeled) + len(unlabeled))
    size = tuple(detector.image_size)
    base = dataclasses.replace(inputs, image_size=size, repeat=True)
    labeled_ds, _ = build_manifest_dataset(pool, dataclasses.replace(base, batch_size=comp.labeled_per_batch),
                                           image_ids=labeled, training=True)
    unlabeled_ds, report = build_manifest_dataset(
        without_annotations(pool, unlabeled),
        dataclasses.replace(base, batch_size=comp.pseudo_per_batch, seed=int(base.seed) + 1), training=True)
    data = zip_streams(labeled_ds, unlabeled_ds, names=("labeled", "unlabeled"))
    eval_cfg = dataclasses.replace(inputs, image_size=size, repeat=False)
    val_ds, _ = build_manifest_dataset(eval_manifest, eval_cfg, training=False)
    evaluate = make_map_evaluator(eval_manifest, eval_cfg, detector, post, pool.class_names)
    factory = functools.partial(
        CSDTrainer, consistency_weight=float(csd["consistency_weight"]), ramp=bool(csd["ramp"]),
        divergence=str(csd["divergence"]), background_elimination=bool(csd["background_elimination"]),
        background_threshold=float(csd["background_threshold"]), background_scope=str(csd["background_scope"]),
        class_reduction=str(csd["class_reduction"]), levels=csd["levels"])
    steps = trainer_cfg.steps_per_epoch or comp.steps_per_epoch
    tracker.log_params({"ssl/labeled_images": len(labeled), "ssl/unlabeled_images": len(unlabeled),
                        "csd/labeled_per_batch": comp.labeled_per_batch,
                        "csd/unlabeled_per_batch": comp.pseudo_per_batch, "csd/steps_per_epoch": steps})
    log.info("CSD: %d labeled + %d unlabeled images, batches of %d + %d, %d steps per epoch", len(labeled),
             report.num_images, comp.labeled_per_batch, comp.pseudo_per_batch, steps)
    model_ws = run_workspace(csd_dir, "model")
    result = train_detector(
        detector, dataclasses.replace(trainer_cfg, resume=True), data, model_ws.train,
        num_train_batches=comp.steps_per_epoch, val_dataset=val_ds, evaluate_fn=evaluate,
        log_fn=lambda m, step: tracker.log_metrics(m, step=step), class_names=pool.class_names, input_size=size,
        seed=int(plain["seed"]), trainer_factory=factory, extra_config={"run_name": "model", "ssl": "csd"})
    metrics = {k: float(v) for k, v in result.final_metrics.items() if isinstance(v, (int, float))}
    summary = {"labeled_images": len(labeled), "unlabeled_images": len(unlabeled),
               "labeled_per_batch": comp.labeled_per_batch, "unlabeled_per_batch": comp.pseudo_per_batch,
               "steps_per_epoch": steps, "model": metrics}
    atomic_write_json(csd_dir / "summary.json", summary)
    tracker.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)})
    tracker.log_artifact(csd_dir / "summary.json", "csd")
    log.info("CSD: mAP@0.5 %.4f on %s -> %s", metrics.get("map/AP50", float("nan")), ssl["eval_split"], csd_dir)
    return summary


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="csd")
def main(cfg: DictConfig) -> None:
    with stage_run(cfg, "csd") as tracker:
        run(plain_config(cfg), tracker)


if __name__ == "__main__":
    main()
