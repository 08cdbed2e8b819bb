"""udet-train end to end through the CLI: workspace files, MLflow metrics per epoch and artifacts, errors."""
from __future__ import annotations

import csv
import json

import pytest

from tests.helpers import TINY_SYNTHETIC, all_runs, mlflow_client, run_app

# The cheapest network to trace (64 px input, levels 3-6, one BiFPN cell, one head repeat).
SMALL_MODEL = [
    "model.image_size=[64,64]",
    "model.max_level=6",
    "model.depth_coefficient=0.25",
    "model.fpn_num_filters=16",
    "model.fpn_cell_repeats=1",
    "model.box_class_repeats=1",
    "uncertainty.mc_samples=4",
]
FAST = ["trainer=fast", "trainer.steps_per_epoch=2", "trainer.map_every=1", "input.batch_size=2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_app")
    proc = run_app("train", *TINY_SYNTHETIC, *SMALL_MODEL, *FAST, "run_name=smoke", cwd=root)
    return root, proc


def test_train_writes_the_workspace(trained):
    root, _ = trained
    train = root / "outputs" / "runs" / "smoke" / "train"
    for name in ("final.weights.h5", "detector_config.json", "history.csv"):
        assert (train / name).is_file(), name
    assert (train / "checkpoints" / "ckpt-2.index").is_file()
    info = json.loads((train / "detector_config.json").read_text())
    assert info["run_name"] == "smoke" and info["dataset"] == "synthetic"
    assert info["input_size"] == [64, 64] and len(info["class_names"]) == info["detector"]["num_classes"] == 6
    assert info["detector"]["uncertainty_name"] == "mcdropout_lossatt_head"
    assert info["normalization"] == {"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}
    rows = list(csv.DictReader((train / "history.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert rows[0]["map/AP50"] != "" and rows[1]["map/AP50"] != ""   # map_every=1 + the final evaluation
    assert {"loss", "val_loss", "lr", "rmse", "mean_sigma"} <= set(rows[0])


def test_train_logs_epochs_and_artifacts_to_mlflow(trained):
    root, _ = trained
    client = mlflow_client(root)
    runs = all_runs(client, "train")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["stage"] == "train" and run.data.tags["run_name"] == "smoke"
    for key in ("loss", "cls_loss", "box_loss", "lr", "rmse", "mean_sigma", "val_loss"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert sorted(steps) == [1, 2], (key, steps)
    ap50 = client.get_metric_history(run.info.run_id, "map/AP50")
    assert {m.step for m in ap50} == {1, 2} and all(0.0 <= m.value <= 1.0 for m in ap50)
    assert run.data.metrics["data/train_images"] == 6
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "train")}
    assert {"train/detector_config.json", "train/history.csv"} <= arts
    assert "config.yaml" in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_missing_init_from_run_names_the_train_command(tmp_path):
    proc = run_app("train", "init_from=nope", "tracking=none", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1
    assert "run the train stage first: udet-train run_name=nope" in errors[0]


def test_bad_config_is_one_line(tmp_path):
    proc = run_app("train", "trainer.optimizer=adam", "+trainer.nope=1", "tracking=none",
                   cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "nope" in errors[0]
    proc = run_app("train", "model=nope", "tracking=none", cwd=tmp_path, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "model/nope" in proc.stderr and "tiny" in proc.stderr
