"""``udet-validate``: detection and uncertainty quality of a run on a dataset split (reference §4).

Compose config -> predict the split (export or checkpoint, timed per call) -> apply the run's calibrators ->
Matches table, detection quality, COCO mAP, runtime, average score, uncertainty quality (uncalibrated and
calibrated) -> optional corrupted copies at several severities -> files under
``validation/<dataset>/`` and MLflow.
"""
from __future__ import annotations

import json
import logging

import hydra
from omegaconf import DictConfig

from ..data.catalog import dataset_spec_from_config, load_split
from ..errors import UserError
from ..workspace import evaluation_name, run_workspace
from .common import CONFIG_DIR, plain_config, stage_run
from .calibrators import calibrated, load_run_calibration
from .predictions import predict_split

log = logging.getLogger("uncertainty_det.validate")

#: Columns of the corruption table (besides corruption, severity) and of its plot.
SEVERITY_METRICS = ("coco/AP50", "coco/AP", "quality/missed_pct")


def decoding_source(plain: dict, workspace) -> tuple[dict, dict]:
    """``(plain, decoding info)``: with ``decoding=<method>`` given, the predictions come from the run's
    weights (``source=checkpoint``) decoded with that method, so a sweep over decodings needs no retraining
    or re-export and every method sees the same MC masks. Info: ``method``, ``options``, ``samples`` (T),
    ``candidates`` (pre-NMS anchors per image) of the predictions."""
    from ..inference.decoding import ALIASES
    from ..inference.export import read_export_config

    requested = (plain.get("decoding") or {}).get("name")
    post = plain["postprocess"]
    samples = int(plain["mc_samples"]) if plain["uncertainty"].get("mc", "off") not in ("off", False) else 1
    if requested and plain["source"] == "export":
        log.info("decoding=%s: validated from the run's weights (source=checkpoint), decoded with it", requested)
        plain = {**plain, "source": "checkpoint"}
    elif plain["source"] == "export" and workspace.export.exists():
        config = read_export_config(workspace.export)
        post = config["postprocess"]
        samples = int(config["mc"]["samples"])
    info = {"method": ALIASES.get(post["decoding"], post["decoding"]),
            "options": {k: v for k, v in (post.get("decoding_options") or {}).items() if k != "name"},
            "samples": max(1, samples), "candidates": int(post["max_nms_inputs"]) or None}
    return plain, info


def decoding_runtime(info: dict, num_anchors: int) -> float:
    """Median ms to decode one image's pre-NMS candidates of every MC sample with the method of ``info``."""
    from ..inference.decoding import time_decoding
    from ..inference.postprocess import decoder_options

    k = min(info["candidates"] or num_anchors, num_anchors)
    return time_decoding(info["method"], k, info["samples"], decoder_options(info["method"], info["options"]))


def _validate(plain: dict, workspace, manifest, calibration, figures: bool, title: str, cache: dict):
    from ..evaluation.validation import validate_detections

    timings: list = []
    detections = calibrated(predict_split(plain, workspace, manifest, timings=timings, cache=cache), calibration)
    v = plain["validation"]
    return validate_detections(
        detections, manifest, matcher=v["matcher"], iou_threshold=float(v["iou_threshold"]),
        score_floor=v["score_floor"], timings=timings, warmup=int(v["warmup"]), figures=figures, title=title)


def _corruption_table(plain: dict, workspace, manifest, calibration, spec, clean_metrics: dict, cache: dict):
    import pandas as pd

    from ..data.dataset_ops import corrupted_copy

    v = plain["validation"]
    keys = [*SEVERITY_METRICS, *sorted(k for k in clean_metrics if k.endswith("/mean_uncertainty"))]
    rows = []
    for name in v["corruptions"]:
        rows.append({"corruption": name, "severity": 0, **{k: clean_metrics.get(k) for k in keys}})
        for severity in v["severities"]:
            folder = _corruption_folder(plain, spec, name, severity)
            copy, skipped = corrupted_copy(manifest, name, int(severity), folder, seed=int(plain["seed"]))
            report = _validate(plain, workspace, copy, calibration, figures=False, title="", cache=cache)
            rows.append({"corruption": name, "severity": int(severity), "skipped_images": skipped,
                         **{k: report.metrics.get(k) for k in keys}})
            log.info("%s %d: mAP@0.5 %.3f", name, severity, report.metrics.get("coco/AP50", float("nan")))
    return pd.DataFrame(rows), keys


def _num_anchors(plain: dict, workspace) -> int:
    """Anchors per image of the run's model (from its detector config)."""
    from ..model.anchors import generate_anchors
    from ..model.training import read_detector_config

    cfg, _ = read_detector_config(workspace.detector_config)
    return len(generate_anchors(cfg.image_size, cfg.min_level, cfg.max_level, cfg.num_scales, cfg.aspect_ratios,
                                cfg.anchor_scale))


def _corruption_folder(plain: dict, spec, name: str, severity: int):
    from pathlib import Path

    return Path(plain["paths"]["data_dir"]) / "corrupted" / spec.name / str(plain["split"]) / f"{name}_{int(severity)}"


def run(plain: dict, tracker) -> dict:
    """The validate stage on a resolved config; returns the metrics."""
    from ..evaluation.validation import severity_figure
    from ..io_utils import atomic_dir, atomic_write_json
    from ..tables import write_detections

    spec = dataset_spec_from_config(plain["dataset"])
    workspace = run_workspace(plain["paths"]["runs_dir"], plain["run_name"])
    manifest = load_split(spec, plain["split"])
    calibration = load_run_calibration(plain, workspace)
    plain, decoding = decoding_source(plain, workspace)
    if calibration is not None and spec.calib_split == plain["split"]:
        log.warning("validating on %s, the split the calibrators were fitted on: calibrated numbers are "
                    "optimistic (use split=<another split>)", plain["split"])
    title = f"{workspace.run_name} on {spec.name}/{plain['split']}"
    cache: dict = {}                    # the model is loaded once for the split and every corrupted copy
    report = _validate(plain, workspace, manifest, calibration, figures=True, title=title, cache=cache)
    metrics = dict(report.metrics)
    if "al_ymin" in report.matches.columns:
        metrics["runtime/decoding_ms_per_image"] = decoding_runtime(decoding, _num_anchors(plain, workspace))
    corruption_table = None
    if plain["validation"]["corruptions"]:
        corruption_table, keys = _corruption_table(plain, workspace, manifest, calibration, spec, metrics, cache)
    # an explicitly requested decoding (decoding=<method>, e.g. a sweep over methods) gets its own folder
    requested = (plain.get("decoding") or {}).get("name")
    name = evaluation_name(spec.name, plain["split"], plain["dataset"].get("eval_split", "val"))
    out_dir = workspace.validation(name if not requested else f"{name}-{decoding['method']}")
    meta = {"run_name": workspace.run_name, "dataset": spec.name, "split": plain["split"],
            "matcher": plain["validation"]["matcher"], "source": plain["source"], "decoding": decoding,
            "calibration": None if calibration is None else calibration.describe()}
    with atomic_dir(out_dir) as tmp:
        write_detections(report.matches, tmp / "matches.parquet", metadata=meta)
        atomic_write_json(tmp / "metrics.json", {**meta, "metrics": metrics})
        quality = {"overall": report.quality["overall"]}
        for key in ("by_occlusion", "by_truncation"):
            frame = report.quality[key]
            quality[key] = None if frame is None else json.loads(frame.to_json(orient="records"))
        atomic_write_json(tmp / "quality.json", quality)
        report.uncertainty.to_csv(tmp / "uncertainty.csv", index=False)
        for _, row in report.uncertainty.iterrows():       # one metrics JSON per uncertainty, next to its plots
            tag = f"{row['uncertainty']}{'_cal' if row['calibrated'] else ''}"
            atomic_write_json(tmp / "plots" / tag / "metrics.json", json.loads(row.to_json()))
        report.calibration.to_csv(tmp / "calibration.csv", index=False)
        for name, fig in report.figures.items():
            (tmp / "plots" / name).parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(tmp / "plots" / name, dpi=110)
        if corruption_table is not None:
            (tmp / "corruptions").mkdir()
            corruption_table.to_csv(tmp / "corruptions" / "severity.csv", index=False)
            severity_figure(corruption_table, keys, title).savefig(tmp / "corruptions" / "severity.png", dpi=110)
    tracker.log_params({"validate/decoding": decoding["method"], "validate/source": plain["source"]})
    tracker.log_metrics({k: v for k, v in metrics.items() if v == v})
    if corruption_table is not None:
        for _, row in corruption_table.iterrows():
            tracker.log_metrics({f"corruption/{row['corruption']}/{k}": row[k] for k in keys if row[k] == row[k]},
                                step=int(row["severity"]))
    tracker.log_artifacts(out_dir, f"validation/{out_dir.name}")
    log.info("%s: mAP@0.5 %.4f, missed %.1f %%, average score %.4f, runtime %.1f ms/image", title,
             metrics.get("coco/AP50", float("nan")), metrics.get("quality/missed_pct", float("nan")),
             metrics.get("quality/average_score", float("nan")), metrics.get("runtime/mean_ms", float("nan")))
    log.info("results in %s", out_dir)
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="validate")
def main(cfg: DictConfig) -> None:
    with stage_run(cfg, "validate") as tracker:
        run(plain_config(cfg), tracker)


if __name__ == "__main__":
    main()
