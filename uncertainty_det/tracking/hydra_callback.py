"""Hydra callback: one MLflow parent run per multirun sweep; every job becomes its nested child.

The parent is created in the launching process (``on_multirun_start``) and its id written to
``<sweep dir>/mlflow_parent_run.json``; jobs -- in this process or in joblib/submitit/ray workers --
read it back with :func:`sweep_parent_run_id` and tag their run with ``mlflow.parentRunId``. Jobs
never re-open the parent (safe across processes).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from ..io_utils import atomic_write_json

log = logging.getLogger(__name__)

PARENT_FILE = "mlflow_parent_run.json"


def _plain(config: DictConfig) -> dict:
    """The task config (without the ``hydra`` node) as plain resolved containers."""
    cfg = OmegaConf.to_container(config, resolve=False)
    cfg.pop("hydra", None)
    return OmegaConf.to_container(OmegaConf.create(cfg), resolve=True)


def sweep_parent_run_id(sweep_dir: str | Path) -> str | None:
    """The parent run id written for a sweep, or None when there is none (single run, tracking off)."""
    path = Path(sweep_dir) / PARENT_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())["run_id"]


class MlflowSweepCallback(Callback):
    """Creates the parent run of a multirun and closes it when the sweep ends."""

    def __init__(self) -> None:
        self._client = None
        self._run_id: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        cfg = _plain(config)
        tracking = cfg.get("tracking") or {}
        if not tracking.get("enabled"):
            return
        from .config_utils import stage_tags
        from .run import _get_or_create_experiment, local_artifact_root, open_client

        stage = str(cfg.get("stage", "sweep"))
        self._client, uri = open_client(tracking)
        experiment_id = _get_or_create_experiment(
            self._client, str(tracking.get("experiment") or stage), local_artifact_root(uri, tracking)
        )
        overrides = list(config.hydra.overrides.task)
        tags = stage_tags(cfg, stage)
        tags.update({"sweep": "true", "sweep_overrides": " ".join(overrides)[:5000]})
        if tracking.get("parent_run_id"):
            tags["mlflow.parentRunId"] = str(tracking["parent_run_id"])
        run = self._client.create_run(experiment_id, run_name=f"{stage}:sweep", tags=tags)
        self._run_id = run.info.run_id
        sweep_dir = Path(config.hydra.sweep.dir)
        atomic_write_json(sweep_dir / PARENT_FILE, {"run_id": self._run_id, "experiment_id": experiment_id})
        log.info("MLflow sweep parent run %s", self._run_id)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self._client is not None and self._run_id is not None:
            self._client.set_terminated(self._run_id, status="FINISHED")
