"""A real `mlflow server` on 127.0.0.1: a stage run logs to it over HTTP and is read back."""
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from uncertainty_det.tracking import start_stage_run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def mlflow_server(tmp_path):
    port = _free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
           "--artifacts-destination", str(tmp_path / "server-artifacts")]
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(uri + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError("mlflow server exited: " + (tmp_path / "server.log").read_text()[-2000:])
                time.sleep(0.5)
        else:
            raise RuntimeError("mlflow server did not start in 90 s")
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_stage_run_against_http_server(mlflow_server, tmp_path):
    cfg = {"stage": "unit", "run_name": "served", "seed": 0,
           "tracking": {"enabled": True, "uri": mlflow_server, "artifact_root": str(tmp_path / "unused"),
                        "experiment": "served-exp", "connect_timeout_s": 5}}
    with start_stage_run(cfg, "unit") as tracker:
        tracker.log_metrics({"loss": 0.25}, step=1)
        tracker.log_dict({"a": 1}, "result.json")
        run_id = tracker.run_id
    client = MlflowClient(tracking_uri=mlflow_server)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["loss"] == 0.25
    assert run.data.tags["run_name"] == "served"
    assert {a.path for a in client.list_artifacts(run_id)} >= {"config.yaml", "result.json"}
    assert not (tmp_path / "unused").exists()  # the server owns the artifact store
