"""Calibrate / validate / threshold a model trained inside another stage (an AL round, an SSL teacher) by
running those stage apps in child processes on its run workspace (``paths.runs_dir=<dir> run_name=<name>``)."""
from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from ..errors import UserError

log = logging.getLogger("uncertainty_det.child_stages")


def run_child_stage(stage: str, run_name: str, runs_dir: Path, plain: dict, cli: list[str], unc_name: str,
                    parent: str | None, extra: list[str], rerun_hint: str) -> None:
    """Run ``udet-<stage>`` on ``runs_dir/run_name`` with the command line's overrides that ``stage`` knows,
    nested under the MLflow run ``parent``; a failure is a UserError ending with ``rerun_hint``."""
    from .pipeline import child_env, forwarded

    argv = [sys.executable, "-m", f"uncertainty_det.apps.{stage}", *forwarded(cli, stage),
            f"paths.runs_dir={runs_dir}", f"run_name={run_name}", f"uncertainty={unc_name}", *extra]
    if parent and plain["tracking"].get("enabled", False):
        argv += [f"tracking.parent_run_id={parent}", f"tracking.experiment={plain['tracking']['experiment']}"]
    log.info("%s: %s", run_name, " ".join(argv[2:]))
    proc = subprocess.run(argv, env=child_env())
    if proc.returncode != 0:
        raise UserError(f"udet-{stage} for {run_name} failed (exit {proc.returncode}); see its message above, "
                        f"then {rerun_hint}")


def calibrate_and_threshold(frame, plain: dict, ws, split: str, calibrate: bool, thresholds: bool, cli: list[str],
                            unc_name: str, parent: str | None, rerun_hint: str):
    """``(frame, threshold model or None)``: ``frame`` (a Detections table of ``ws``'s model) calibrated with the
    run's calibrators when ``calibrate`` (fitted on ``split`` first when missing) and, with ``thresholds``, the
    run's threshold model fitted on ``split`` (validated with the greedy matcher first when missing)."""
    from ..thresholding import load_threshold_model
    from ..workspace import evaluation_name
    from .calibrators import calibrated, load_run_calibration

    runs_dir, name = ws.runs_dir, ws.run_name
    model = None
    # combo's threshold model combines calibrated measures by default, so it calibrates too
    if calibrate or thresholds:
        if not (ws.calibration / "calibration.json").exists():
            run_child_stage("calibrate", name, runs_dir, plain, cli, unc_name, parent,
                            ["source=checkpoint", f"split={split}"], rerun_hint)
        frame = calibrated(frame, load_run_calibration({"calibration": plain["calibration"]}, ws))
    if thresholds:
        evaluation = evaluation_name(plain["dataset"]["name"], split, plain["dataset"].get("eval_split", "val"))
        path = ws.thresholding(evaluation) / "threshold.json"
        if not path.exists():
            run_child_stage("validate", name, runs_dir, plain, cli, unc_name, parent,
                            ["source=checkpoint", f"split={split}", "validation.matcher=greedy"], rerun_hint)
            run_child_stage("threshold", name, runs_dir, plain, cli, unc_name, parent, [f"split={split}"], rerun_hint)
        model = load_threshold_model(path)
    return frame, model
