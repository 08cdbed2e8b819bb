"""The tracked run of a stage: tags, chunked params, config artifact, disabled and unreachable tracking."""
import socket

import pytest
from mlflow.tracking import MlflowClient

from uncertainty_det.tracking import NullTracker, TrackingUnavailableError, start_stage_run
from uncertainty_det.tracking.config_utils import chunked, flatten_config


def _cfg(tmp_path, **tracking):
    base = {"enabled": True, "uri": f"sqlite:///{tmp_path}/mlflow.db", "artifact_root": str(tmp_path / "art"),
            "experiment": "unit", "connect_timeout_s": 1, "fallback_to_local": False, "parent_run_id": None}
    base.update(tracking)
    return {"stage": "unit", "run_name": "r1", "seed": 3, "dataset": {"name": "synthetic", "classes": ["a", "b"]},
            "big": {f"k{i}": i for i in range(250)}, "tracking": base}


def test_flatten_and_chunk():
    flat = flatten_config({"a": {"b": 1, "c": [1, 2]}, "d": None, "hydra": {"x": 1}, "e": {}})
    assert flat == {"a.b": "1", "a.c": "[1, 2]", "d": "None", "e": "{}"}
    long = flatten_config({"s": "x" * 7000})["s"]
    assert len(long) == 6000 and long.endswith("...")
    chunks = list(chunked({str(i): "v" for i in range(250)}))
    assert [len(c) for c in chunks] == [100, 100, 50]


def test_stage_run_logs_tags_params_config(tmp_path):
    cfg = _cfg(tmp_path)
    with start_stage_run(cfg, "unit") as tracker:
        tracker.log_metrics({"m": 1.5, "nan": float("nan"), "text": "x"}, step=2)
        run_id = tracker.run_id
    client = MlflowClient(tracking_uri=cfg["tracking"]["uri"])
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["stage"] == "unit" and run.data.tags["run_name"] == "r1"
    assert run.data.tags["dataset"] == "synthetic" and run.data.tags["seed"] == "3"
    assert "git_commit" in run.data.tags
    assert run.data.params["big.k249"] == "249"  # > 100 params: chunked batches all arrived
    assert len([k for k in run.data.params if k.startswith("big.")]) == 250
    assert run.data.metrics == {"m": 1.5}
    arts = [a.path for a in client.list_artifacts(run_id)]
    assert "config.yaml" in arts
    assert (tmp_path / "art" / "unit").is_dir()  # experiment artifacts under the configured root


def test_failed_stage_marks_run_failed(tmp_path):
    cfg = _cfg(tmp_path)
    with pytest.raises(RuntimeError):
        with start_stage_run(cfg, "unit") as tracker:
            run_id = tracker.run_id
            raise RuntimeError("boom")
    assert MlflowClient(tracking_uri=cfg["tracking"]["uri"]).get_run(run_id).info.status == "FAILED"


def test_tracking_disabled_writes_nothing(tmp_path):
    cfg = _cfg(tmp_path, enabled=False)
    with start_stage_run(cfg, "unit") as tracker:
        assert isinstance(tracker, NullTracker)
        tracker.log_metrics({"a": 1})
        tracker.log_image(None, "x.png")
    assert not (tmp_path / "mlflow.db").exists()


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_fails_fast_or_falls_back(tmp_path, monkeypatch):
    uri = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(TrackingUnavailableError, match="not reachable"):
        with start_stage_run(_cfg(tmp_path, uri=uri), "unit"):
            pass
    monkeypatch.chdir(tmp_path)
    with start_stage_run(_cfg(tmp_path, uri=uri, fallback_to_local=True), "unit") as tracker:
        assert tracker.run_id
    assert (tmp_path / "outputs" / "mlflow.db").is_file()
