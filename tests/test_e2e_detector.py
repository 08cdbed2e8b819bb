"""End to end on tiny synthetic data, as a user runs it: udet-data -> train -> evaluate -> export -> evaluate
(export) -> infer, each a CLI call with overrides only, each one MLflow run in one store."""
import json

import pytest

from tests.apps.test_train_app import FAST, SMALL_MODEL
from tests.helpers import TINY_SYNTHETIC, all_runs, mlflow_client, run_app

COMMON = [*TINY_SYNTHETIC, *SMALL_MODEL, "run_name=e2e"]


@pytest.mark.slow
def test_detector_stages_in_sequence(tmp_path):
    run_app("data", *TINY_SYNTHETIC, cwd=tmp_path)
    run_app("train", *COMMON, *FAST, "trainer.map_every=0", cwd=tmp_path)
    run_app("evaluate", *COMMON, "split=val", cwd=tmp_path)
    ws = tmp_path / "outputs" / "runs" / "e2e"
    metrics = json.loads((ws / "evaluation" / "synthetic" / "val" / "metrics.json").read_text())
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl"} <= set(metrics)
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("AP", "AP50", "AP75"))
    assert (ws / "evaluation" / "synthetic" / "val" / "per_class_ap.png").is_file()

    run_app("export", *COMMON, cwd=tmp_path)
    assert (ws / "export" / "export_config.json").is_file()
    run_app("evaluate", *COMMON, "split=val", "source=export", cwd=tmp_path)
    run_app("infer", *COMMON, "source=split", "split=test", cwd=tmp_path)
    assert (ws / "inference" / "detections.parquet").is_file()

    client = mlflow_client(tmp_path)
    for stage, count in (("data", 1), ("train", 1), ("evaluate", 2), ("export", 1), ("infer", 1)):
        runs = all_runs(client, stage)
        assert len(runs) == count and all(r.info.status == "FINISHED" for r in runs), stage
    evaluate_runs = all_runs(client, "evaluate")
    assert all("AP50" in r.data.metrics for r in evaluate_runs)
    assert all(r.data.tags["run_name"] == "e2e" for r in evaluate_runs)


def test_evaluate_without_training_names_the_stage(tmp_path):
    proc = run_app("evaluate", *COMMON, "tracking=none", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "udet-train run_name=e2e" in proc.stderr and "Traceback" not in proc.stderr
