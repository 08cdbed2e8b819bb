"""udet-calibrate (single and multirun), udet-validate (calibrated, with a corruption) and udet-epal through the
CLI on a randomly initialised tiny run exported with MC head dropout and loss attenuation."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.apps.test_export_infer_apps import RUN, _write_train_workspace
from tests.helpers import all_runs, mlflow_client, run_app

DATA = ["dataset.generator.image_size=[64,64]", "dataset.generator.num_images={train:2,val:10,test:4}",
        "dataset.input_size=[64,64]"]


@pytest.fixture(scope="module")
def validated(tmp_path_factory):
    root = tmp_path_factory.mktemp("calibrate_validate")
    run_app("data", *DATA, cwd=root)
    _write_train_workspace(root)
    run_app("export", *DATA, "mc_samples=3", cwd=root)
    run_app("calibrate", *DATA, cwd=root)
    run_app("validate", *DATA, "validation.corruptions=[fog]", "validation.severities=[4]", "batch_size=2",
            cwd=root)
    run_app("epal", *DATA, "epal.iou_thr=0.0", cwd=root)
    return root


def test_calibrate_writes_every_calibrator_and_logs_the_selected_metrics(validated):
    folder = validated / "outputs" / "runs" / RUN / "calibration"
    summary = json.loads((folder / "calibration.json").read_text())
    assert summary["selected"] == {"class": "iso_percls", "box": "iso_perclscoo"}
    assert summary["methods"]["class"] == sorted(["ts_all", "ts_percls", "iso_all", "iso_percls"])
    assert summary["methods"]["al"] == summary["methods"]["ep"] == sorted(
        ["ts_all", "ts_percoo", "iso_all", "iso_percoo", "iso_perclscoo", "rel_iso_perclscoo"])
    for target, methods in summary["methods"].items():
        for method in methods:
            assert (folder / f"{target}_{method}.json").is_file()
    assert not list(folder.glob("*.pkl")) and not list(folder.glob("*.pickle"))
    metrics = pd.read_csv(folder / "metrics.csv")
    assert set(metrics["target"]) == {"class", "al", "ep"} and metrics[["before", "after"]].notna().any().all()
    for name in ("reliability_top_label", "reliability_per_class", "al_coverage", "ep_coverage",
                 "al_sigma_vs_residual", "methods"):
        assert (folder / "plots" / f"{name}.png").is_file()
    (run,) = all_runs(mlflow_client(validated), "calibrate")
    assert run.info.status == "FINISHED" and run.data.params["box_method"] == "iso_perclscoo"
    assert {"class/ece_before", "class/ece_after", "al/coverage_ece_after", "ep/coverage_ece_after"} <= set(
        run.data.metrics)


def test_validate_outputs(validated):
    from uncertainty_det.tables import read_detections

    folder = validated / "outputs" / "runs" / RUN / "validation" / "synthetic"
    matches, meta = read_detections(folder / "matches.parquet")
    assert meta["split"] == "test" and meta["matcher"] == "gt_centric"
    assert meta["calibration"] == {"class_method": "iso_percls", "box_method": "iso_perclscoo", "al": True, "ep": True}
    assert set(matches["kind"]) <= {"matched", "missed"} and {"probs_cal", "al_ymin_cal", "ep_xmax_cal"} <= set(matches)
    metrics = json.loads((folder / "metrics.json").read_text())["metrics"]
    for key in ("coco/AP50", "quality/missed_pct", "quality/average_score", "quality/miou", "runtime/mean_ms",
                "runtime/median_ms", "score_floor", "calibration/al/coverage_ece", "calibration/al_cal/coverage_ece"):
        assert key in metrics, key
    assert metrics["score_floor"] == metrics["quality/average_score"]         # full float, not "0.4"
    assert metrics["runtime/n_warmup"] == 1 and metrics["runtime/n_total"] == 2   # 4 images, batch 2
    table = pd.read_csv(folder / "uncertainty.csv")
    assert {"al", "ep", "entropy", "ep_cls"} <= set(table["uncertainty"])
    assert (folder / "plots" / "al" / "pit_coverage.png").is_file()
    per = json.loads((folder / "plots" / "al_cal" / "metrics.json").read_text())
    assert per["uncertainty"] == "al" and per["calibrated"] is True and "auroc_tp_fp" in per
    severity = pd.read_csv(folder / "corruptions" / "severity.csv")
    assert severity[["corruption", "severity"]].values.tolist() == [["fog", 0], ["fog", 4]]
    assert (folder / "corruptions" / "severity.png").is_file()
    (run,) = all_runs(mlflow_client(validated), "validate")
    assert "coco/AP50" in run.data.metrics and "corruption/fog/coco/AP50" in run.data.metrics


def test_epal_outputs(validated):
    folder = validated / "outputs" / "runs" / RUN / "validation" / "synthetic" / "epal"
    for y in ("ep", "entropy"):
        assert (folder / y / "scatter.png").is_file() and (folder / y / "comparison.png").is_file()
        assert (folder / y / "hal_lep.csv").is_file() and (folder / y / "lal_hep.csv").is_file()
    (run,) = all_runs(mlflow_client(validated), "epal")
    assert run.data.metrics["ep/grid_size"] >= 2


def test_other_calibrator_and_bad_method(validated):
    proc = run_app("validate", *DATA, "tracking=none", "calibration.box_method=platt", cwd=validated, check=False)
    assert proc.returncode == 2 and "available: iso_all" in proc.stderr and "Traceback" not in proc.stderr
    run_app("validate", *DATA, "tracking=none", "calibration.box_method=ts_percoo", cwd=validated)
    meta = json.loads((validated / "outputs" / "runs" / RUN / "validation" / "synthetic" / "metrics.json").read_text())
    assert meta["calibration"]["box_method"] == "ts_percoo"


def test_calibrate_sweep_gives_one_child_run_per_method(validated):
    run_app("calibrate", *DATA, "calibration/box=ts_all,iso_percoo", cwd=validated, multirun=True)
    runs = [r for r in all_runs(mlflow_client(validated), "calibrate") if r.data.tags.get("hydra_overrides")]
    assert sorted(r.data.params["box_method"] for r in runs) == ["iso_percoo", "ts_all"]
    assert all("al/coverage_ece_after" in r.data.metrics for r in runs)
    parents = {r.data.tags.get("mlflow.parentRunId") for r in runs}
    assert len(parents) == 1 and None not in parents


def test_calibrate_without_export_names_the_stage(tmp_path):
    proc = run_app("calibrate", *DATA, "tracking=none", "run_name=nothing", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "udet-export run_name=nothing" in proc.stderr


def test_decoding_sweep_validates_from_the_weights(validated):
    run_app("validate", *DATA, "decoding=lognormal,nflow", cwd=validated, multirun=True)
    runs = [r for r in all_runs(mlflow_client(validated), "validate") if r.data.tags.get("hydra_overrides")]
    by_method = {r.data.params["validate/decoding"]: r for r in runs}
    assert set(by_method) == {"lognormal", "nflow"}
    assert all(r.data.params["validate/source"] == "checkpoint" for r in runs)   # same MC masks for every method
    for key in ("coco/AP50", "quality/miou", "calibration/al/coverage_ece"):      # nflow == lognormal to 1e-6
        assert by_method["nflow"].data.metrics[key] == pytest.approx(by_method["lognormal"].data.metrics[key],
                                                                     rel=1e-4, abs=1e-6), key
    assert all(r.data.metrics["runtime/decoding_ms_per_image"] > 0 for r in runs)
    folder = validated / "outputs" / "runs" / RUN / "validation"
    assert (folder / "synthetic-nflow" / "metrics.json").is_file() and (folder / "synthetic-lognormal").is_dir()


def test_infer_applies_the_calibrators_and_the_validated_score_floor(validated):
    from uncertainty_det.tables import read_detections

    ws = validated / "outputs" / "runs" / RUN
    run_app("validate", *DATA, "tracking=none", cwd=validated)      # restore the default calibrators' validation
    average = json.loads((ws / "validation" / "synthetic" / "metrics.json").read_text())["metrics"][
        "quality/average_score"]
    run_app("infer", *DATA, "tracking=none", "source=split", "split=test", "max_drawn=0", cwd=validated)
    df, meta = read_detections(ws / "inference" / "detections.parquet")
    assert meta["score_floor"] == pytest.approx(average)
    selected = json.loads((ws / "calibration" / "calibration.json").read_text())["selected"]
    assert meta["calibration"]["box_method"] == selected["box"]          # the selection of the last udet-calibrate
    assert {"probs_cal", "entropy_cal", "al_ymin_cal", "ep_xmax_cal", "ep_cls_cal"} <= set(df.columns)
