"""The run's calibrators for the stages that apply them (validate, infer, autolabel), and the average score
that ``udet-validate`` measured (the default score floor of those stages)."""
from __future__ import annotations

import json
import logging

from ..errors import UserError

log = logging.getLogger("uncertainty_det")


def load_run_calibration(plain: dict, workspace):
    """The run's calibrators per ``calibration.*`` (``None`` when off or when the run has none)."""
    from ..calibration.fitting import SUMMARY_FILE, load_calibration

    cal = plain.get("calibration") or {}
    if not cal.get("apply", True):
        return None
    if not (workspace.calibration / SUMMARY_FILE).exists():
        if cal.get("class_method") or cal.get("box_method"):
            raise UserError(f"calibration.class_method/box_method given but run {workspace.run_name!r} has no "
                            f"calibrators: run udet-calibrate run_name={workspace.run_name} first")
        log.warning("run %s has no calibrators (udet-calibrate run_name=%s fits them): only uncalibrated "
                    "uncertainties are available", workspace.run_name, workspace.run_name)
        return None
    return load_calibration(workspace.calibration, cal.get("class_method"), cal.get("box_method"))


def calibrated(detections, calibration):
    """``detections`` with the ``*_cal`` columns of ``calibration`` (unchanged when ``None``)."""
    if calibration is None:
        return detections
    from ..calibration import calibrate_detections

    return calibrate_detections(detections, calibration.class_calibrator,
                                calibration.al_calibrator if "al_ymin" in detections.columns else None,
                                calibration.ep_calibrator if "ep_ymin" in detections.columns else None)


def validation_metric(validation_dir, key: str) -> float | None:
    """Metric ``key`` of a validation folder's ``metrics.json`` (``None`` when absent, unreadable or NaN)."""
    try:
        value = json.loads((validation_dir / "metrics.json").read_text())["metrics"][key]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return float(value) if value is not None and value == value else None


def validated_average_score(workspace, dataset: str) -> float | None:
    """The average score ``udet-validate`` measured for ``dataset`` (``None`` when not validated there)."""
    return validation_metric(workspace.validation(dataset), "quality/average_score")
