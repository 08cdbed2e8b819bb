"""``udet-stac``: STAC semi-supervised detection (DESIGN §10, reference §5.1, its defects fixed).

Everything lives in ``<runs>/<run_name>/stac/``:

1. ``split.json``: the labeled / unlabeled ids of ``ssl.pool_split`` (seeded random, or the pool-order prefix
   of the reference); a re-run with another percentage, seed or method is refused.
2. ``teacher/`` (a run workspace): trained on the labeled images only.
3. per round ``k`` (``0`` plus ``ssl.selftrain_rounds``; round ``k > 0`` uses student ``k-1`` as teacher):
   ``pseudo_<k>/``: the teacher's un-augmented predictions of the unlabeled images (calibrated, and for
   ``combo`` with the teacher's fitted thresholds, when the selection needs them), the selected pseudo-labels
   with their weights, and their quality against the hidden ground truth (``quality.json``);
   ``student_<k>/`` (a run workspace): trained on batches of ``[labeled | pseudo]`` in the proportion of
   :func:`~uncertainty_det.ssl.batching.stac_batch_composition`, strong box-aware augmentation on the pseudo
   stream, ``L = L_labeled + λ L_pseudo`` (:class:`~uncertainty_det.ssl.training.MixedBatchTrainer`).
4. ``summary.json``: teacher and student mAP per round, pseudo-label statistics.

Each model is a nested MLflow run under the stage run. Finished parts are skipped on a re-run (a part
interrupted mid-training continues from its last checkpoint).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
from omegaconf import DictConfig

from ..errors import UserError
from .common import CONFIG_DIR, plain_config, stage_run

log = logging.getLogger("uncertainty_det.stac")

SPLIT_METHODS = ("random", "prefix")
STUDENT_INITS = ("backbone", "teacher")


def load_split_ids(path: Path, pool_ids: list[int], percent: float, seed: int, method: str) -> tuple[list, list]:
    """The stored labeled / unlabeled ids, or a new split written to ``path``; a stored split of other
    settings is refused."""
    from ..io_utils import atomic_write_json
    from ..ssl.split import split_labeled

    settings = {"percent": float(percent), "seed": int(seed), "method": str(method)}
    if path.exists():
        stored = json.loads(path.read_text())
        if stored["settings"] != settings:
            raise UserError(f"{path} was made with {stored['settings']}, not {settings}; use another run_name or "
                            f"delete {path.parent} to start over")
        return [int(i) for i in stored["labeled"]], [int(i) for i in stored["unlabeled"]]
    labeled, unlabeled = split_labeled(pool_ids, percent, seed=seed, method=method)
    atomic_write_json(path, {"settings": settings, "labeled": labeled.tolist(), "unlabeled": unlabeled.tolist()})
    return labeled.tolist(), unlabeled.tolist()


def copy_teacher(source: Path, stac_dir: Path) -> None:
    """Copy another STAC run's ``split.json`` and trained ``teacher/`` into ``stac_dir`` (once), so a student
    can be trained on other pseudo-labels (``ssl.pseudo_source``) without training the same teacher again."""
    import shutil

    from ..workspace import require_upstream

    if (stac_dir / "teacher" / "metrics.json").exists():
        return
    require_upstream(source / "teacher" / "metrics.json", "stac", f"udet-stac run_name={source.parent.name}",
                     "the trained STAC teacher")
    stac_dir.mkdir(parents=True, exist_ok=True)
    split = stac_dir / "split.json"
    if split.exists() and split.read_text() != (source / "split.json").read_text():
        raise UserError(f"{split} differs from {source / 'split.json'}; ssl.reuse_teacher_of needs the same split")
    shutil.copy2(source / "split.json", split)
    tmp = stac_dir / "teacher.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source / "teacher", tmp)
    shutil.rmtree(stac_dir / "teacher", ignore_errors=True)
    tmp.rename(stac_dir / "teacher")
    log.info("teacher and split copied from %s", source)


def pseudo_manifest(pool_manifest, pseudo: pd.DataFrame, ignore: pd.DataFrame | None = None):
    """A manifest of the pool images that have pseudo-labels, one annotation per pseudo box with its weight
    as the annotation ``score`` (the input pipeline's per-box loss weight), plus the ignore regions of those
    images (``ignore``: weight-0 boxes, :func:`~uncertainty_det.ssl.pseudo_labels.select_ignore_regions`)."""
    from ..data.boxes import yxyx_to_xywh
    from ..data.manifest import Manifest

    images = [dict(pool_manifest.image(int(i))) for i in pd.unique(pseudo["image_id"])]
    if ignore is not None and len(ignore):
        regions = ignore[ignore["image_id"].isin(set(pseudo["image_id"]))].assign(weight=0.0)
        pseudo = pd.concat([pseudo, regions], ignore_index=True)
    boxes = yxyx_to_xywh(pseudo[["ymin", "xmin", "ymax", "xmax"]].to_numpy(np.float64))
    weights = pseudo["weight"].to_numpy(np.float64) if "weight" in pseudo else np.ones(len(pseudo))
    annotations = [
        {"id": k + 1, "image_id": int(i), "category_id": int(c), "bbox": [float(v) for v in box],
         "area": float(box[2] * box[3]), "iscrowd": 0, "score": float(w)}
        for k, (i, c, box, w) in enumerate(zip(pseudo["image_id"], pseudo["class_id"], boxes, weights))
    ]
    data = {"info": {"description": "STAC pseudo-labels"}, "images": images, "annotations": annotations,
            "categories": [dict(c) for c in pool_manifest.categories]}
    return Manifest.from_coco(data, source="<pseudo-labels>", image_root=pool_manifest.image_root)


def read_pseudo_source(path: str) -> pd.DataFrame:
    """A pseudo-label table from a file (``.parquet`` or ``.csv``: image_id, class_id, ymin, xmin, ymax, xmax,
    optional score / weight)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"ssl.pseudo_source={path} does not exist; give a pseudo-label table (.parquet or .csv)")
    frame = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p)
    missing = [c for c in ("image_id", "class_id", "ymin", "xmin", "ymax", "xmax") if c not in frame]
    if missing:
        raise UserError(f"ssl.pseudo_source={path} lacks the columns {missing}")
    if "weight" not in frame:
        frame["weight"] = 1.0
    if "score" not in frame:
        frame["score"] = 1.0
    return frame


class _Parts:
    """What the training parts share: configs, manifests, the tracker for nested runs."""

    def __init__(self, plain: dict, tracker, stac_dir: Path, pool, eval_manifest):
        from .train import _configs

        self.plain, self.tracker, self.stac_dir = plain, tracker, stac_dir
        self.pool, self.eval = pool, eval_manifest
        self.detector, self.trainer, self.inputs, self.post = _configs(plain, len(pool.class_names))
        self.seed = int(plain["seed"])

    def nested(self, name: str):
        from ..tracking import start_stage_run

        return start_stage_run({**self.plain, "run_name": f"{self.plain['run_name']}/stac/{name}"}, "stac",
                               parent_run_id=getattr(self.tracker, "run_id", None), run_name=f"stac:{name}")

    def labeled_set(self, labeled: list[int]):
        """The manifest the teacher (and the students' labeled stream) train on: the labeled pool images, their
        annotations replaced by ``ssl.labeled_source`` (e.g. udet-glc's cleaned labels) and extended by
        ``ssl.extra_labeled`` (e.g. udet-rcc's collages) when given."""
        from ..data.manifest import Manifest
        from ..ssl.labeled_sets import merge_manifests

        ssl = self.plain["ssl"]
        manifest = self.pool.subset(labeled)
        if ssl.get("labeled_source"):
            source = Manifest.read(str(ssl["labeled_source"]))
            if sorted(source.image_ids) != sorted(labeled):
                raise UserError(f"ssl.labeled_source={ssl['labeled_source']} holds other images than this run's "
                                f"{len(labeled)} labeled ones; make it from the same STAC run (udet-glc)")
            manifest = source
        if ssl.get("extra_labeled"):
            manifest = merge_manifests(manifest, Manifest.read(str(ssl["extra_labeled"])))
        return manifest

    def epochs(self, key: str):
        value = self.plain["ssl"].get(key)
        return self.trainer if value is None else dataclasses.replace(self.trainer, epochs=int(value))

    def done(self, ws) -> dict | None:
        path = ws.root / "metrics.json"
        return json.loads(path.read_text()) if path.exists() and ws.final_weights.exists() else None

    def finish(self, ws, metrics: dict, tracker) -> dict:
        from ..io_utils import atomic_write_json

        clean = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        atomic_write_json(ws.root / "metrics.json", clean)
        tracker.log_metrics({k: v for k, v in clean.items() if math.isfinite(v)})
        return clean

    def train_teacher(self, ws, labeled: list[int]) -> dict:
        from ..model.training import train_from_manifests

        if (metrics := self.done(ws)) is not None:
            log.info("teacher: done (%s)", ws.root)
            return metrics
        with self.nested("teacher") as tracker:
            tracker.log_params({"ssl/part": "teacher", "ssl/labeled_images": len(labeled)})
            cfg = dataclasses.replace(self.epochs("teacher_epochs"), resume=True)
            manifest = self.labeled_set(labeled)
            log_fn = lambda m, step: tracker.log_metrics(m, step=step)  # noqa: E731
            extra = {"run_name": "teacher", "ssl": "stac_teacher"}
            curriculum = self.plain["ssl"].get("curriculum") or {}
            if not curriculum.get("enabled", False):
                result = train_from_manifests(self.detector, cfg, self.inputs, manifest, ws.train,
                                              val_manifest=self.eval, postprocess_cfg=self.post, seed=self.seed,
                                              log_fn=log_fn, extra_config=extra)
                return self.finish(ws, result.final_metrics, tracker)
            from ..data.pipeline import build_manifest_dataset
            from ..model.training import make_map_evaluator, train_detector
            from ..ssl.curriculum import curriculum_dataset

            size = tuple(self.detector.image_size)
            inputs = dataclasses.replace(self.inputs, image_size=size)
            data, info = curriculum_dataset(
                manifest, manifest.image_ids, inputs, int(inputs.batch_size), self.seed,
                highest_weight=float(curriculum["highest_weight"]), aug_rare=int(curriculum["aug_rare"]),
                image_score_weights=bool(curriculum["image_score_weights"]))
            tracker.log_params({"ssl/curriculum_rare_images": len(info["rare_ids"]),
                                "ssl/curriculum_steps_per_epoch": info["steps_per_epoch"]})
            eval_cfg = dataclasses.replace(inputs, repeat=False)
            val_ds, _ = build_manifest_dataset(self.eval, eval_cfg, training=False)
            result = train_detector(
                self.detector, cfg, data, ws.train, num_train_batches=info["steps_per_epoch"], val_dataset=val_ds,
                evaluate_fn=make_map_evaluator(self.eval, eval_cfg, self.detector, self.post, self.pool.class_names),
                log_fn=log_fn, class_names=self.pool.class_names, input_size=size, seed=self.seed, extra_config=extra)
            return self.finish(ws, result.final_metrics, tracker)

    def train_student(self, ws, k: int, labeled: list[int], pseudo: pd.DataFrame, teacher_ws,
                      ignore: pd.DataFrame | None = None) -> dict:
        from ..data.pipeline import build_manifest_dataset
        from ..model.training import make_map_evaluator, train_detector
        from ..ssl.batching import stac_batch_composition
        from ..ssl.training import MixedBatchTrainer, zip_streams

        if (metrics := self.done(ws)) is not None:
            log.info("student %d: done (%s)", k, ws.root)
            return metrics
        ssl = self.plain["ssl"]
        size = tuple(self.detector.image_size)
        manifest = pseudo_manifest(self.pool, pseudo, ignore)
        labeled_manifest = self.labeled_set(labeled)
        n_labeled, n_pseudo = len(labeled_manifest.image_ids), len(manifest.image_ids)
        comp = stac_batch_composition(n_labeled, n_pseudo, int(self.inputs.batch_size))
        base = dataclasses.replace(self.inputs, image_size=size, repeat=True)
        labeled_cfg = dataclasses.replace(base, batch_size=comp.labeled_per_batch)
        pseudo_cfg = dataclasses.replace(base, batch_size=comp.pseudo_per_batch, augment=str(ssl["pseudo_augment"]),
                                         seed=int(base.seed) + 1)
        labeled_ds, _ = build_manifest_dataset(labeled_manifest, labeled_cfg, training=True)
        pseudo_ds, report = build_manifest_dataset(manifest, pseudo_cfg, training=True)
        data = zip_streams(labeled_ds, pseudo_ds)
        eval_cfg = dataclasses.replace(self.inputs, image_size=size, repeat=False)
        val_ds, _ = build_manifest_dataset(self.eval, eval_cfg, training=False)
        evaluate = make_map_evaluator(self.eval, eval_cfg, self.detector, self.post, self.pool.class_names)
        cfg = dataclasses.replace(self.epochs("student_epochs"), resume=True)
        init = teacher_ws.train if ssl["student_init"] == "teacher" else None
        factory = functools.partial(MixedBatchTrainer, unsup_weight=float(ssl["unsup_weight"]),
                                    weighting=str(ssl["weighting"]))
        log.info("student %d: %d labeled + %d pseudo-labelled images, batches of %d + %d, %d steps per epoch", k,
                 n_labeled, n_pseudo, comp.labeled_per_batch, comp.pseudo_per_batch,
                 cfg.steps_per_epoch or comp.steps_per_epoch)
        with self.nested(f"student_{k}") as tracker:
            tracker.log_params({"ssl/part": f"student_{k}", "ssl/labeled_images": n_labeled,
                                "ssl/pseudo_images": n_pseudo, "ssl/labeled_per_batch": comp.labeled_per_batch,
                                "ssl/pseudo_per_batch": comp.pseudo_per_batch,
                                "ssl/steps_per_epoch": cfg.steps_per_epoch or comp.steps_per_epoch})
            result = train_detector(
                self.detector, cfg, data, ws.train, num_train_batches=comp.steps_per_epoch, val_dataset=val_ds,
                evaluate_fn=evaluate, log_fn=lambda m, step: tracker.log_metrics(m, step=step),
                class_names=self.pool.class_names, input_size=size, init_from=init, seed=self.seed + 1 + k,
                trainer_factory=factory, extra_config={"run_name": f"student_{k}", "ssl": "stac_student"})
            metrics = {**result.final_metrics, "pseudo_images_readable": report.num_images}
            return self.finish(ws, metrics, tracker)


def pseudo_round(k: int, parts: _Parts, teacher_ws, unlabeled: list[int], selection, cli: list[str]):
    """Round ``k``'s pseudo-labels (``pseudo_<k>/pseudo_labels.parquet``, reused when present), their quality
    against the hidden ground truth, and the ignore regions (``pseudo_<k>/ignore_regions.parquet`` with
    ``selection.ignore_score``, else ``None``): ``(pseudo, quality, ignore)``."""
    from ..data.pipeline import input_config_from_dict
    from ..evaluation.matching import gt_frame_from_manifest
    from ..inference.predictor import Predictor
    from ..io_utils import atomic_path, atomic_write_json
    from ..ssl.pseudo_gt import pseudo_label_report
    from ..ssl.pseudo_labels import select_pseudo_labels_and_ignore_regions
    from ..tables import write_detections
    from .child_stages import calibrate_and_threshold

    plain, ssl = parts.plain, parts.plain["ssl"]
    folder = parts.stac_dir / f"pseudo_{k}"
    path = folder / "pseudo_labels.parquet"
    ignore_path = folder / "ignore_regions.parquet"
    ignore = None
    if path.exists():
        pseudo = pd.read_parquet(path)
        if selection.ignore_score is not None:
            if not ignore_path.exists():
                raise UserError(f"{folder} holds pseudo-labels selected without ignore regions; use another "
                                f"run_name for selection.ignore_score={selection.ignore_score}")
            ignore = pd.read_parquet(ignore_path)
    elif ssl.get("pseudo_source"):
        pseudo = read_pseudo_source(str(ssl["pseudo_source"]))
        pseudo = pseudo[pseudo["image_id"].isin(set(unlabeled))].reset_index(drop=True)
    else:
        inputs = input_config_from_dict(plain["input"])
        kwargs = {} if ssl.get("mc_samples") is None else {"mc_samples": int(ssl["mc_samples"])}
        predictor = Predictor.from_train_dir(teacher_ws.train, parts.post, **kwargs)
        frame = predictor.predict_manifest(parts.pool.subset(unlabeled), inputs, progress=True)
        # fitted on the calibration split, never on the split that scores teacher and student
        calib_split = str(ssl.get("calib_split") or ssl["eval_split"])
        frame, model = calibrate_and_threshold(
            frame, plain, teacher_ws, calib_split, selection.calibrated, selection.strategy == "combo",
            cli, plain["uncertainty"]["name"], getattr(parts.tracker, "run_id", None),
            "re-run the same udet-stac command to resume")
        write_detections(frame, folder / "teacher_predictions.parquet",
                         metadata={"run_name": teacher_ws.run_name, "round": k})
        pseudo, regions = select_pseudo_labels_and_ignore_regions(frame, selection, threshold_model=model)
        ignore = regions if selection.ignore_score is not None else None
    if pseudo.empty:
        raise UserError(f"round {k}: no pseudo-label survives the selection ({selection.strategy}, tau "
                        f"{selection.tau}); lower selection.tau or check the teacher ({teacher_ws.root})")
    if not path.exists():
        if ignore is not None:                           # first: pseudo_labels.parquet marks the round done
            with atomic_path(ignore_path) as tmp:
                ignore.to_parquet(tmp, index=False)
        with atomic_path(path) as tmp:
            pseudo.to_parquet(tmp, index=False)
        source = {"pseudo_source": str(ssl["pseudo_source"])} if ssl.get("pseudo_source") else {}
        atomic_write_json(folder / "selection.json", {**dataclasses.asdict(selection), **source,
                                                      "teacher": teacher_ws.run_name})
    gt = gt_frame_from_manifest(parts.pool.subset(unlabeled))
    quality = {"pseudo_boxes": int(len(pseudo)), "pseudo_images": int(pseudo["image_id"].nunique()),
               "unlabeled_images": len(unlabeled), "mean_weight": float(pseudo["weight"].mean())}
    if ignore is not None:
        quality["ignore_regions"] = int(ignore["image_id"].isin(set(pseudo["image_id"])).sum())
    if len(gt):
        report = pseudo_label_report(pseudo, gt[gt["image_id"].isin(set(unlabeled))])
        quality.update({k2: v for k2, v in report.items() if isinstance(v, (int, float))})
    atomic_write_json(folder / "quality.json", quality)
    return pseudo, quality, ignore


def run(plain: dict, tracker, cli: list[str]) -> dict:
    """STAC on a resolved config; returns the summary (teacher and student mAP per round, pseudo stats)."""
    from ..data.catalog import dataset_spec_from_config, load_split
    from ..io_utils import atomic_write_json
    from ..ssl.pseudo_labels import PseudoLabelSelection
    from ..workspace import run_workspace

    ssl = plain["ssl"]
    if ssl["split"] not in SPLIT_METHODS:
        raise UserError(f"ssl.split={ssl['split']!r}: choose one of {', '.join(SPLIT_METHODS)}")
    if ssl["student_init"] not in STUDENT_INITS:
        raise UserError(f"ssl.student_init={ssl['student_init']!r}: choose one of {', '.join(STUDENT_INITS)}")
    if int(ssl["selftrain_rounds"]) < 0:
        raise UserError(f"ssl.selftrain_rounds={ssl['selftrain_rounds']!r} must be >= 0")
    try:
        selection = PseudoLabelSelection(**plain["selection"])
    except TypeError as exc:
        raise UserError(f"invalid selection config: {exc}") from exc
    if selection.ignore_score is not None and ssl.get("pseudo_source"):
        raise UserError(f"selection.ignore_score={selection.ignore_score} needs the teacher's detections; with "
                        f"ssl.pseudo_source the pseudo-labels come from a table: drop one of the two")
    spec = dataset_spec_from_config(plain["dataset"])
    pool = load_split(spec, str(ssl["pool_split"]))
    eval_manifest = load_split(spec, str(ssl["eval_split"]))
    ws = run_workspace(plain["paths"]["runs_dir"], plain["run_name"])
    stac_dir = ws.root / "stac"
    if ssl.get("reuse_teacher_of"):
        copy_teacher(run_workspace(plain["paths"]["runs_dir"], str(ssl["reuse_teacher_of"])).root / "stac", stac_dir)
    labeled, unlabeled = load_split_ids(stac_dir / "split.json", [int(i) for i in pool.image_ids],
                                        float(ssl["labeled_percent"]), int(plain["seed"]), str(ssl["split"]))
    tracker.log_params({"ssl/labeled_images": len(labeled), "ssl/unlabeled_images": len(unlabeled),
                        "ssl/selection": json.dumps(plain["selection"], sort_keys=True)[:500]})
    parts = _Parts(plain, tracker, stac_dir, pool, eval_manifest)
    teacher_ws = run_workspace(stac_dir, "teacher")
    teacher = parts.train_teacher(teacher_ws, labeled)
    summary = {"labeled_images": len(labeled), "unlabeled_images": len(unlabeled), "teacher": teacher, "rounds": []}
    log.info("teacher: mAP@0.5 %.4f on %s", teacher.get("map/AP50", float("nan")), ssl["eval_split"])
    current = teacher_ws
    for k in range(int(ssl["selftrain_rounds"]) + 1):
        pseudo, quality, ignore = pseudo_round(k, parts, current, unlabeled, selection, cli)
        tracker.log_metrics({f"pseudo/{key}": float(v) for key, v in quality.items()
                             if isinstance(v, (int, float)) and math.isfinite(v)}, step=k)
        student_ws = run_workspace(stac_dir, f"student_{k}")
        student = parts.train_student(student_ws, k, labeled, pseudo, current, ignore)
        summary["rounds"].append({"round": k, "teacher": current.run_name, "pseudo": quality, "student": student})
        tracker.log_metrics({f"student/{key}": v for key, v in student.items() if key.startswith("map/")
                             and math.isfinite(v)}, step=k)
        log.info("student %d: mAP@0.5 %.4f (teacher %.4f), %d pseudo boxes on %d images", k,
                 student.get("map/AP50", float("nan")), teacher.get("map/AP50", float("nan")),
                 quality["pseudo_boxes"], quality["pseudo_images"])
        current = student_ws
    final = summary["rounds"][-1]["student"]
    summary["gain/AP50"] = final.get("map/AP50", float("nan")) - teacher.get("map/AP50", float("nan"))
    ends = {"teacher/AP50": teacher.get("map/AP50", float("nan")), "student/AP50": final.get("map/AP50", float("nan")),
            "gain/AP50": summary["gain/AP50"]}
    tracker.log_metrics({key: v for key, v in ends.items() if math.isfinite(v)})
    atomic_write_json(stac_dir / "summary.json", summary)
    tracker.log_artifact(stac_dir / "summary.json", "stac")
    log.info("STAC: teacher mAP@0.5 %.4f -> student %.4f (%+.4f) -> %s", teacher.get("map/AP50", float("nan")),
             final.get("map/AP50", float("nan")), summary["gain/AP50"], stac_dir)
    return summary


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="stac")
def main(cfg: DictConfig) -> None:
    from .pipeline import cli_overrides

    with stage_run(cfg, "stac") as tracker:
        run(plain_config(cfg), tracker, cli_overrides())


if __name__ == "__main__":
    main()
