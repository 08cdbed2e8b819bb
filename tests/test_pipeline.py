"""udet-pipeline end to end on tiny synthetic data: every stage runs as a child MLflow run of one pipeline run,
command-line overrides reach the stages that have them, and the closing message says where things are. Two
steps added on the command line (evaluate the weights and the export, infer a split) cover udet-evaluate and
udet-infer the same way a user chains them."""
from __future__ import annotations

import json

import pytest

from tests.apps.test_train_app import SMALL_MODEL
from tests.helpers import all_runs, mlflow_client, run_app
from uncertainty_det.apps.pipeline import accepts, forwarded

DATA = ["dataset.generator.image_size=[64,64]", "dataset.generator.num_images={train:24,val:12,test:6}",
        "dataset.input_size=[64,64]"]
TRAIN = ["trainer.epochs=3", "trainer.steps_per_epoch=6", "input.batch_size=4"]
# steps a user adds under pipeline.steps: evaluate the trained weights and the export, infer the test split
EXTRA_STEPS = ["+pipeline.steps.evaluate={stage:evaluate,overrides:['split=val']}",
               "+pipeline.steps.evaluate_export={stage:evaluate,overrides:['split=test','source=export']}",
               "+pipeline.steps.infer={stage:infer,overrides:['source=split','split=test']}",
               "pipeline.run=[data,train,evaluate,export,evaluate_export,calibrate,validate_fit,validate,threshold,"
               "autolabel,infer]"]


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
                   "threshold.optimiser.popsize=5", "autolabel.max_drawn=2", *EXTRA_STEPS, cwd=tmp_path,
                   timeout=1200)
    out = proc.stdout
    assert "pipeline finished" in out and "mlflow ui --backend-store-uri sqlite:///" in out
    ws = tmp_path / "outputs" / "runs" / "synthetic-tiny-mcdropout_lossatt_head"
    assert f"results: {ws}" in out
    for path in ("train/final.weights.h5", "export/export_config.json", "calibration/calibration.json",
                 "validation/synthetic-val/matches.parquet", "validation/synthetic/metrics.json",
                 "thresholding/synthetic-val/threshold.json", "autolabel/summary.json",
                 "autolabel/labels/coco/labels.json", "autolabel/review_queue.csv", "inference/detections.parquet",
                 "evaluation/synthetic/val/per_class_ap.png", "evaluation/synthetic/test/metrics.json"):
        assert (ws / path).exists(), path
    for split in ("val", "test"):                                     # the weights on val, the export on test
        metrics = json.loads((ws / "evaluation" / "synthetic" / split / "metrics.json").read_text())
        assert {"AP", "AP50", "AP75", "APs", "APm", "APl"} <= set(metrics)
        assert all(0.0 <= metrics[k] <= 1.0 for k in ("AP", "AP50", "AP75"))
    history = (ws / "train" / "history.csv").read_text().strip().splitlines()
    assert len(history) == 1 + 3                                       # trainer.epochs=3 reached train
    threshold = json.loads((ws / "thresholding" / "synthetic-val" / "threshold.json").read_text())
    assert threshold["info"]["matcher"] == "greedy" and threshold["info"]["settings"]["maxiter"] == 10

    client = mlflow_client(tmp_path)
    runs = all_runs(client, "pipeline")
    (parent,) = [r for r in runs if r.data.tags.get("stage") == "pipeline"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    stages = sorted(r.data.tags["stage"] for r in children)
    assert stages == sorted(["data", "train", "evaluate", "export", "evaluate", "calibrate", "validate",
                             "validate", "threshold", "autolabel", "infer"])
    assert parent.info.status == "FINISHED" and all(r.info.status == "FINISHED" for r in children)
    assert {"time/train_s", "time/autolabel_s", "time/total_s"} <= set(parent.data.metrics)
    (train_run,) = [r for r in children if r.data.tags["stage"] == "train"]
    assert train_run.data.params["trainer.epochs"] == "3"
    evaluate_runs = [r for r in children if r.data.tags["stage"] == "evaluate"]
    assert all("AP50" in r.data.metrics for r in evaluate_runs)
    assert sorted(r.data.params["source"] for r in evaluate_runs) == ["checkpoint", "export"]


def test_pipeline_failing_step_says_how_to_resume(tmp_path):
    proc = run_app("pipeline", *DATA, "pipeline.run=[threshold]", "tracking=none", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "udet-validate" in proc.stderr and "pipeline.run=[threshold]" in proc.stderr
