"""Shared test helpers: run a stage app in a subprocess, read MLflow runs back."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# A synthetic dataset small enough for tests (a few images per split).
TINY_SYNTHETIC = [
    "dataset.generator.image_size=[64,64]",
    "dataset.generator.num_images={train:6,val:3,test:3}",
    "dataset.input_size=[64,64]",
]


def run_app(stage: str, *overrides: str, cwd: Path, multirun: bool = False, timeout: float = 600,
            check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m uncertainty_det.apps.<stage> [-m] overrides...`` in ``cwd`` with outputs under ``cwd/outputs``."""
    cmd = [sys.executable, "-m", f"uncertainty_det.apps.{stage}"]
    if multirun:
        cmd.append("-m")
    cmd += [f"paths.root={cwd / 'outputs'}", "sample_grid.num_images=4", *overrides] if stage == "data" else [
        f"paths.root={cwd / 'outputs'}", *overrides]
    full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
    full_env.update(env or {})
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def mlflow_client(root: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{root / 'outputs' / 'mlflow.db'}")


def all_runs(client, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r}"
    return client.search_runs([exp.experiment_id], max_results=1000)
