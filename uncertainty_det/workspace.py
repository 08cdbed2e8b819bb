"""Run workspaces: where every stage of one trained model reads and writes (DESIGN §5).

A trained model owns the folder ``<runs_dir>/<run_name>/`` (``runs_dir`` is ``paths.runs_dir``, by default
``outputs/runs``) with one subfolder per stage::

    train/                      checkpoints/, final.weights.h5, detector_config.json, history.csv
    export/                     the SavedModel
    calibration/                calibrators
    validation/<eval_dataset>/  Matches table, metrics, plots
    thresholding/<eval_dataset>/
    inference/  autolabel/  al/<strategy>/round_<k>/  ssl/<method>/

A downstream stage finds its inputs from ``run_name`` alone; :func:`require_upstream` turns a missing input
into a :class:`UpstreamMissingError` (a :class:`~uncertainty_det.errors.UserError`) that names the stage to
run first and its command.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

__all__ = [
    "RunWorkspace",
    "UpstreamMissingError",
    "check_run_name",
    "require_upstream",
    "run_workspace",
    "evaluation_name",
]


class UpstreamMissingError(UserError, FileNotFoundError):
    """An artifact of an earlier stage is missing; the message names the stage and the command to run."""


def check_run_name(run_name: str) -> str:
    """Return ``run_name`` if it is one safe folder name (no separators, not ``.``/``..``, not empty).

    Raises:
      UserError: naming the bad value and the rule.
    """
    name = str(run_name)
    if (not name.strip() or name in (".", "..") or "/" in name or "\\" in name or os.sep in name
            or name != name.strip()):
        raise UserError(
            f"run_name {run_name!r} is not a valid workspace name: use one folder name without '/', '\\', "
            f"surrounding spaces, '.' or '..' (e.g. run_name=synthetic-tiny-lossatt)")
    return name


@dataclass(frozen=True)
class RunWorkspace:
    """Paths of one run's workspace (nothing is created until a stage writes).

    Attributes:
      runs_dir: the root of all workspaces (``paths.runs_dir``).
      run_name: this run's folder name.
    """

    runs_dir: Path
    run_name: str

    @property
    def root(self) -> Path:
        """``<runs_dir>/<run_name>``."""
        return Path(self.runs_dir) / self.run_name

    # ---------------------------------------------------------------- train
    @property
    def train(self) -> Path:
        """``train/``: everything ``udet-train`` writes."""
        return self.root / "train"

    @property
    def checkpoints(self) -> Path:
        """``train/checkpoints/``: ``tf.train.CheckpointManager`` files (model, optimizer, epoch)."""
        return self.train / "checkpoints"

    @property
    def final_weights(self) -> Path:
        """``train/final.weights.h5``: the trained detector's weights (EMA values when EMA is on)."""
        return self.train / "final.weights.h5"

    @property
    def detector_config(self) -> Path:
        """``train/detector_config.json``: ``DetectorConfig.to_dict()`` + class names + input size."""
        return self.train / "detector_config.json"

    @property
    def history(self) -> Path:
        """``train/history.csv``: one row per epoch (losses, lr, mAP where evaluated)."""
        return self.train / "history.csv"

    # ---------------------------------------------------------------- downstream stages
    @property
    def export(self) -> Path:
        return self.root / "export"

    @property
    def calibration(self) -> Path:
        return self.root / "calibration"

    @property
    def inference(self) -> Path:
        return self.root / "inference"

    @property
    def autolabel(self) -> Path:
        return self.root / "autolabel"

    def validation(self, eval_dataset: str) -> Path:
        """``validation/<eval_dataset>/``."""
        return self.root / "validation" / check_run_name(eval_dataset)

    def thresholding(self, eval_dataset: str) -> Path:
        """``thresholding/<eval_dataset>/``."""
        return self.root / "thresholding" / check_run_name(eval_dataset)

    def al(self, strategy: str) -> Path:
        """``al/<strategy>/``."""
        return self.root / "al" / check_run_name(strategy)

    def al_round(self, strategy: str, k: int) -> Path:
        """``al/<strategy>/round_<k>/``."""
        return self.al(strategy) / f"round_{int(k)}"

    def ssl(self, method: str) -> Path:
        """``ssl/<method>/``."""
        return self.root / "ssl" / check_run_name(method)


def evaluation_name(dataset: str, split: str, eval_split: str | None) -> str:
    """Folder name of a validation/thresholding of ``dataset``'s ``split``: ``<dataset>`` for the dataset's
    evaluation split (``eval_split``; ``None`` = every split), else ``<dataset>-<split>`` (e.g. the
    ``synthetic-val`` Matches table the thresholds are fitted on next to the ``synthetic`` test results)."""
    if eval_split is None or str(split) == str(eval_split):
        return str(dataset)
    return f"{dataset}-{split}"


def run_workspace(runs_dir: str | os.PathLike, run_name: str) -> RunWorkspace:
    """The workspace of ``run_name`` under ``runs_dir`` (validated name; nothing is created)."""
    return RunWorkspace(Path(runs_dir), check_run_name(run_name))


def require_upstream(path: str | os.PathLike, stage: str, command: str, what: str | None = None) -> Path:
    """Return ``path`` if it exists, else raise :class:`UpstreamMissingError`.

    Args:
      path: the upstream artifact (file or folder).
      stage: the stage that produces it (``train``, ``export``, ...).
      command: the command that runs that stage, e.g. ``udet-train run_name=R``.
      what: optional description of the artifact for the message (default: its file name).

    Example message: ``trained weights not found at outputs/runs/R/train/final.weights.h5; run the train
    stage first: udet-train run_name=R``.
    """
    path = Path(path)
    if not path.exists():
        label = what or path.name
        raise UpstreamMissingError(f"{label} not found at {path}; run the {stage} stage first: {command}")
    return path
