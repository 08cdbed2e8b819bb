"""One MLflow run per stage execution.

``start_stage_run(cfg, stage)`` opens the run (tags, flattened params, the resolved config as an
artifact) and yields a :class:`Tracker`; with ``tracking.enabled=false`` it yields a
:class:`NullTracker` whose methods do nothing, so apps never branch on tracking.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from ..errors import UserError
from .config_utils import chunked, flatten_config, stage_tags

log = logging.getLogger(__name__)


class TrackingUnavailableError(UserError):
    """The configured tracking server does not answer."""


def resolve_tracking_uri(uri: str) -> str:
    """Make a relative ``sqlite:///rel/path.db`` absolute (so every process and cwd agrees) and create its folder."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = Path(uri[len("sqlite:///"):]).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    if uri.startswith("sqlite:////"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return uri


def check_server(uri: str, timeout_s: float) -> None:
    """Raise TrackingUnavailableError unless an HTTP tracking server answers ``/health``."""
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (user-configured URL)
            if response.status >= 400:
                raise TrackingUnavailableError(f"tracking server {uri} answered HTTP {response.status}")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise TrackingUnavailableError(
            f"tracking server {uri} is not reachable ({exc}); start it, or run with "
            f"tracking.uri=sqlite:///outputs/mlflow.db (local store), tracking.fallback_to_local=true, or tracking=none"
        ) from exc


class NullTracker:
    """Stands in for :class:`Tracker` when tracking is off: every method is a no-op."""

    run_id: str | None = None
    enabled = False

    def __getattr__(self, name: str):
        if name.startswith("log_") or name in ("set_tags", "set_tag"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)


class Tracker:
    """Logging calls bound to one MLflow run (thread-safe, explicit run id)."""

    enabled = True

    def __init__(self, client, run_id: str):
        self.client = client
        self.run_id = run_id

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log finite scalar metrics; non-finite or non-numeric values are skipped with a debug line."""
        from mlflow.entities import Metric
        from mlflow.utils.time import get_current_time_millis

        now = get_current_time_millis()
        batch = []
        for key, value in metrics.items():
            try:
                value = float(value)
            except (TypeError, ValueError):
                log.debug("metric %s=%r is not a number; not logged", key, value)
                continue
            if not math.isfinite(value):
                log.debug("metric %s=%r is not finite; not logged", key, value)
                continue
            batch.append(Metric(key=str(key), value=value, timestamp=now, step=int(step or 0)))
        for start in range(0, len(batch), 1000):
            self.client.log_batch(self.run_id, metrics=batch[start : start + 1000])

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        self.log_metrics({key: value}, step=step)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params in chunks of MLflow's batch limit (values stringified)."""
        from mlflow.entities import Param

        flat = {str(k): str(v) for k, v in params.items()}
        for chunk in chunked(flat):
            self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in chunk.items()])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(str(k), str(v)) for k, v in tags.items()])

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, folder: str | os.PathLike, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(folder), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        self.client.log_dict(self.run_id, obj, artifact_file)

    def log_figure(self, figure, artifact_file: str) -> None:
        self.client.log_figure(self.run_id, figure, artifact_file)

    def log_image(self, image: np.ndarray, artifact_file: str) -> None:
        """Log an ``[H,W,3]`` uint8 image as a PNG artifact."""
        from PIL import Image

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(artifact_file).name
            Image.fromarray(np.asarray(image, dtype=np.uint8)).save(path)
            parent = str(Path(artifact_file).parent)
            self.client.log_artifact(self.run_id, str(path), None if parent in ("", ".") else parent)


def _get_or_create_experiment(client, name: str, artifact_root: str | None) -> str:
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if artifact_root:
        location = (Path(artifact_root).resolve() / name).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:
        # another process (a parallel sweep job) created it first
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def local_artifact_root(uri: str, tracking_cfg: Mapping[str, Any]) -> str | None:
    """The artifact root for new experiments: ``tracking.artifact_root`` on a local store, the server's own otherwise."""
    if uri.startswith(("http://", "https://")):
        return None
    return tracking_cfg.get("artifact_root")


def open_client(tracking_cfg: Mapping[str, Any]):
    """An ``MlflowClient`` for the configured URI (health-checked for servers, with optional local fallback)."""
    from mlflow.tracking import MlflowClient

    uri = str(tracking_cfg.get("uri") or "sqlite:///outputs/mlflow.db")
    if uri.startswith(("http://", "https://")):
        try:
            check_server(uri, float(tracking_cfg.get("connect_timeout_s", 5)))
        except TrackingUnavailableError as exc:
            if not tracking_cfg.get("fallback_to_local"):
                raise
            log.warning("%s -- falling back to the local store sqlite:///outputs/mlflow.db", exc)
            uri = "sqlite:///outputs/mlflow.db"
    uri = resolve_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri), uri


@contextlib.contextmanager
def start_stage_run(
    cfg: Mapping[str, Any],
    stage: str,
    parent_run_id: str | None = None,
    run_name: str | None = None,
    extra_tags: Mapping[str, Any] | None = None,
) -> Iterator[Tracker | NullTracker]:
    """Open the MLflow run of one stage execution.

    Args:
      cfg: the resolved config as a plain mapping (``OmegaConf.to_container(cfg, resolve=True)``).
      stage: stage name (``data``, ``train``, ...).
      parent_run_id: nest under this run (multirun parent or pipeline run); defaults to
        ``cfg.tracking.parent_run_id``.
    Yields:
      a :class:`Tracker` (or :class:`NullTracker` when ``tracking.enabled`` is false). The run ends
      FINISHED, FAILED on an exception, KILLED on Ctrl-C.
    """
    tracking_cfg = dict(cfg.get("tracking") or {})
    if not tracking_cfg.get("enabled", False):
        yield NullTracker()
        return
    import yaml

    client, uri = open_client(tracking_cfg)
    experiment_id = _get_or_create_experiment(
        client, str(tracking_cfg.get("experiment") or stage), local_artifact_root(uri, tracking_cfg)
    )
    tags = stage_tags(cfg, stage)
    tags.update({k: str(v) for k, v in (extra_tags or {}).items()})
    parent = parent_run_id or tracking_cfg.get("parent_run_id")
    if parent:
        tags["mlflow.parentRunId"] = str(parent)
    name = run_name or tracking_cfg.get("run_name") or f"{stage}:{cfg.get('run_name', stage)}"
    run = client.create_run(experiment_id, run_name=str(name), tags=tags)
    tracker = Tracker(client, run.info.run_id)
    log.info("MLflow run %s (%s) in %s", run.info.run_id, name, uri)
    status = "FAILED"
    try:
        tracker.log_params(flatten_config(cfg))
        tracker.log_text(yaml.safe_dump(dict(cfg), sort_keys=False), "config.yaml")
        yield tracker
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        client.set_terminated(run.info.run_id, status=status)
