"""udet-pipeline end to end on tiny synthetic data: every stage runs as a child MLflow run of one pipeline run,
command-line overrides reach the stages that have them, and the closing message says where things are."""
from __future__ import annotations

import json

import pytest

from tests.apps.test_train_app import SMALL_MODEL
from tests.helpers import all_runs, mlflow_client, run_app
from uncertainty_det.apps.pipeline import accepts, forwarded

DATA = ["dataset.generator.image_size=[64,64]", "dataset.generator.num_images={train:24,val:12,test:6}",
        "dataset.input_size=[64,64]"]
TRAIN = ["trainer.epochs=3", "trainer.steps_per_epoch=6", "input.batch_size=4"]


def test_override_routing():
    assert accepts("train", "trainer.epochs=3") and not accepts("validate", "trainer.epochs=3")
    assert all(accepts(s, "model=small") for s in ("train", "export", "calibrate", "validate", "threshold"))
    assert accepts("calibrate", "calibration/box=ts_all") and not accepts("validate", "calibration/box=ts_all")
    assert accepts("validate", "calibration.box_method=ts_all")
    assert accepts("threshold", "threshold.budget=0.99") and not accepts("autolabel", "threshold.budget=0.99")
    assert accepts("data", "dataset.generator.seed=3") and accepts("data", "seed=1")
    assert not accepts("train", "pipeline.run=[train]") and not accepts("train", "hydra.verbose=true")
    assert forwarded(["seed=1", "trainer.epochs=2", "autolabel.empty=accept"], "autolabel") == [
        "seed=1", "autolabel.empty=accept"]


@pytest.mark.slow
def test_pipeline_end_to_end(tmp_path):
    proc = run_app("pipeline", *DATA, *SMALL_MODEL, *TRAIN, "threshold.optimiser.maxiter=10",
                   "threshold.optimiser.popsize=5", "autolabel.max_drawn=2", cwd=tmp_path, timeout=1200)
    out = proc.stdout
    assert "pipeline finished" in out and "mlflow ui --backend-store-uri sqlite:///" in out
    ws = tmp_path / "outputs" / "runs" / "synthetic-tiny-mcdropout_lossatt_head"
    assert f"results: {ws}" in out
    for path in ("train/final.weights.h5", "export/export_config.json", "calibration/calibration.json",
                 "validation/synthetic-val/matches.parquet", "validation/synthetic/metrics.json",
                 "thresholding/synthetic-val/threshold.json", "autolabel/summary.json",
                 "autolabel/labels/coco/labels.json", "autolabel/review_queue.csv"):
        assert (ws / path).exists(), path
    history = (ws / "train" / "history.csv").read_text().strip().splitlines()
    assert len(history) == 1 + 3                                       # trainer.epochs=3 reached train
    threshold = json.loads((ws / "thresholding" / "synthetic-val" / "threshold.json").read_text())
    assert threshold["info"]["matcher"] == "greedy" and threshold["info"]["settings"]["maxiter"] == 10

    client = mlflow_client(tmp_path)
    runs = all_runs(client, "pipeline")
    (parent,) = [r for r in runs if r.data.tags.get("stage") == "pipeline"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    stages = sorted(r.data.tags["stage"] for r in children)
    assert stages == sorted(["data", "train", "export", "calibrate", "validate", "validate", "threshold",
                             "autolabel"])
    assert parent.info.status == "FINISHED" and all(r.info.status == "FINISHED" for r in children)
    assert {"time/train_s", "time/autolabel_s", "time/total_s"} <= set(parent.data.metrics)
    (train_run,) = [r for r in children if r.data.tags["stage"] == "train"]
    assert train_run.data.params["trainer.epochs"] == "3"


def test_pipeline_failing_step_says_how_to_resume(tmp_path):
    proc = run_app("pipeline", *DATA, "pipeline.run=[threshold]", "tracking=none", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "udet-validate" in proc.stderr and "pipeline.run=[threshold]" in proc.stderr
