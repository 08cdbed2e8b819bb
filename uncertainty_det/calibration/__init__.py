"""Calibration of class probabilities and box σ (reference §3, DESIGN §8).

NumPy/SciPy/scikit-learn only (no TensorFlow, Hydra or MLflow):

* :mod:`.metrics`: ECE/MCE/SCE/Brier/NLL, coverage ECE, Gaussian NLL, RMSUE, sharpness, ENCE, PIT, reports;
* :mod:`.classification`: ``ts_all``, ``ts_percls``, ``iso_all``, ``iso_percls`` and :class:`MCClassCalibrator`;
* :mod:`.box`: ``ts_all``, ``ts_percoo``, ``iso_all``, ``iso_percoo``, ``iso_perclscoo``, ``rel_iso_perclscoo``;
* :mod:`.registry`: name -> class registries, construction by name, JSON + ``.npz`` persistence;
* :mod:`.apply`: calibrated columns of a Detections table, seeded fit/eval split;
* :mod:`.plots`: reliability diagrams, coverage curves, σ-vs-residual plots (import it explicitly).
"""
from ._common import CalibrationError, CalibrationWarning
from .apply import calibrate_detections, split_fit_eval
from .box import BoxCalibrator
from .classification import ClassCalibrator, MCClassCalibrator, MCProbs
from .metrics import classification_report, regression_report
from .registry import (
    BOX_CALIBRATORS,
    CLASS_CALIBRATORS,
    CalibratorFileError,
    load_calibrator,
    make_box_calibrator,
    make_class_calibrator,
    save_calibrator,
)

__all__ = [
    "BOX_CALIBRATORS",
    "CLASS_CALIBRATORS",
    "BoxCalibrator",
    "CalibrationError",
    "CalibrationWarning",
    "CalibratorFileError",
    "ClassCalibrator",
    "MCClassCalibrator",
    "MCProbs",
    "calibrate_detections",
    "classification_report",
    "load_calibrator",
    "make_box_calibrator",
    "make_class_calibrator",
    "regression_report",
    "save_calibrator",
    "split_fit_eval",
]
