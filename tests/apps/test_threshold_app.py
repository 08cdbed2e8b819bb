"""udet-threshold through the CLI on a crafted Matches table of a generated split: outputs, the fitted model
against the library, the score floor, errors, and a budget x mode sweep nested in MLflow."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.apps.crafted import write_validation
from tests.helpers import all_runs, mlflow_client, run_app

RUN = "synthetic-tiny-mcdropout_lossatt_head"
DATA = ["dataset.generator.image_size=[64,64]", "dataset.generator.num_images={train:2,val:40,test:4}",
        "dataset.input_size=[64,64]"]
FAST = ["threshold.optimiser.maxiter=20", "threshold.optimiser.popsize=6"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from uncertainty_det.data.manifest import Manifest

    root = tmp_path_factory.mktemp("threshold")
    run_app("data", *DATA, cwd=root)
    manifest = Manifest.read(root / "outputs" / "data" / "synthetic" / "annotations" / "val.json")
    matches = write_validation(root / "outputs" / "runs" / RUN / "validation" / "synthetic-val", manifest, 6)
    return root, matches


def test_threshold_outputs_match_the_library(workspace):
    from uncertainty_det.apps.threshold import above_floor
    from uncertainty_det.thresholding import (
        OptimiserSettings, f1_score_floor, fit_threshold_model, load_threshold_model,
    )

    root, matches = workspace
    run_app("threshold", *DATA, *FAST, cwd=root)
    folder = root / "outputs" / "runs" / RUN / "thresholding" / "synthetic-val"
    model = load_threshold_model(folder / "threshold.json")
    floor, _ = f1_score_floor(matches)                          # auto on a greedy table: the F1-optimal score
    assert model.info["score_floor"] == floor and model.info["score_floor_rule"] == "f1"
    assert model.info["matcher"] == "greedy"
    assert model.uncertainties == ["entropy_cal", "al_rel_cal"] and model.budget == 0.95 and model.mode == "cd"
    expected = fit_threshold_model(above_floor(matches, floor), ["entropy_cal", "al_rel_cal"], 0.95, "cd",
                                   matcher="greedy", settings=OptimiserSettings(seed=0, maxiter=20, popsize=6))
    np.testing.assert_allclose(model.weights, expected.weights)
    np.testing.assert_allclose(model.thresholds, expected.thresholds)
    assert model.operating_threshold == pytest.approx(float(np.mean(expected.thresholds)))
    table = pd.read_csv(folder / "metrics.csv")
    assert {"entropy_cal", "al_rel_cal", "entropy", "al_rel", "one_minus_score", "combination"} <= set(
        table["uncertainty"])
    combo = table.set_index("uncertainty").loc["combination"]
    assert combo["fd_at_cd"] == pytest.approx(model.metrics["combination"]["fd_at_cd"])
    assert combo["fd_at_cd"] >= table.set_index("uncertainty").loc[["entropy_cal", "al_rel_cal"], "fd_at_cd"].max() - 1e-12
    for name in ("spider", "heatmaps", "images_correctly_removed", "images_falsely_kept", "images_untouched"):
        assert (folder / "plots" / f"{name}.png").is_file(), name
    picks = json.loads((folder / "picks.json").read_text())
    assert picks["iou"] == 0.75 and len(picks["untouched"]) <= 10
    (run,) = all_runs(mlflow_client(root), "threshold")
    assert run.info.status == "FINISHED"
    assert run.data.metrics["operating_threshold"] == pytest.approx(model.operating_threshold)
    assert {"combination/fd_at_cd", "single/entropy_cal/auroc", "weight/al_rel_cal"} <= set(run.data.metrics)


def test_threshold_score_floor_zero_keeps_every_row_and_operating_iou(workspace):
    from uncertainty_det.thresholding import load_threshold_model

    root, matches = workspace
    run_app("threshold", *DATA, *FAST, "threshold.score_floor=0", "threshold.operating_iou=0.5",
            "threshold.diagnostics.enabled=false", "threshold.uncertainties=[entropy,al_rel,one_minus_score]",
            "tracking=none", cwd=root)
    model = load_threshold_model(root / "outputs" / "runs" / RUN / "thresholding" / "synthetic-val" / "threshold.json")
    assert model.info["n_detections"] == int((matches["kind"] != "missed").sum())
    assert model.operating_threshold == model.thresholds[0]
    assert len(model.weights) == 3 and model.weights.sum() == pytest.approx(1.0)


def test_threshold_average_score_floor(workspace):
    from uncertainty_det.thresholding import load_threshold_model

    root, matches = workspace
    run_app("threshold", *DATA, *FAST, "threshold.score_floor=average", "threshold.diagnostics.enabled=false",
            "tracking=none", cwd=root)
    model = load_threshold_model(root / "outputs" / "runs" / RUN / "thresholding" / "synthetic-val" / "threshold.json")
    floor = json.loads((root / "outputs" / "runs" / RUN / "validation" / "synthetic-val" / "metrics.json").read_text()
                       )["metrics"]["score_floor"]
    assert model.info["score_floor"] == pytest.approx(floor) and model.info["score_floor_rule"] == "average"
    kept = (matches["kind"] != "missed") & (matches["score"] >= floor)
    assert model.info["n_detections"] == int(kept.sum())


def test_threshold_errors(workspace):
    root, _ = workspace
    proc = run_app("threshold", *DATA, "split=test", "tracking=none", cwd=root, check=False)
    assert proc.returncode == 2 and "udet-validate" in proc.stderr and "split=test" in proc.stderr
    proc = run_app("threshold", *DATA, "threshold.uncertainties=[ep_rel]", "tracking=none", cwd=root, check=False)
    assert proc.returncode == 2 and "ep_rel" in proc.stderr and "MC dropout" in proc.stderr
    proc = run_app("threshold", *DATA, "threshold.matcher=gt_centric", "tracking=none", cwd=root, check=False)
    assert proc.returncode == 2 and "built with greedy" in proc.stderr
    proc = run_app("threshold", *DATA, "threshold.score_floor=high", "tracking=none", cwd=root, check=False)
    assert proc.returncode == 2 and "threshold.score_floor must be auto, f1, average or a number" in proc.stderr


def test_threshold_budget_mode_sweep_nests_in_mlflow(workspace):
    root, _ = workspace
    run_app("threshold", *DATA, *FAST, "threshold.diagnostics.enabled=false", "threshold.budget=0.9,0.99",
            "threshold.mode=cd,fd", cwd=root, multirun=True)
    client = mlflow_client(root)
    runs = all_runs(client, "threshold")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    parents = {r.data.tags["mlflow.parentRunId"] for r in children}
    assert len(children) == 4 and len(parents) == 1
    combos = {(r.data.params["threshold.budget"], r.data.params["threshold.mode"]) for r in children}
    assert combos == {("0.9", "cd"), ("0.9", "fd"), ("0.99", "cd"), ("0.99", "fd")}
    assert all("combination/fd_at_cd" in r.data.metrics for r in children)
