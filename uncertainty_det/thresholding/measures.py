"""Per-detection uncertainty measures read from a Detections or Matches frame by name.

Named measures (higher = more likely a false detection), each with a calibrated variant ``<name>_cal``:

=====================  ==========================================================================
``entropy``            class entropy in bits (column ``entropy`` / ``entropy_cal``)
``al_rel``             mean relative aleatoric σ: ``mean_4(al_<corner> / [h, w, h, w])`` of the predicted box
``ep_rel``             mean relative epistemic σ (same with ``ep_<corner>``)
``ep_cls``             MC logit std of the predicted class (column ``ep_cls`` / ``ep_cls_cal``)
``one_minus_score``    ``1 - score``; calibrated: ``1 - score_cal`` or ``1 - probs_cal[class_id]``
=====================  ==========================================================================

``al`` / ``ep`` are accepted as aliases of ``al_rel`` / ``ep_rel``. Any other name is read as a numeric
column of the frame (e.g. ``ep_xmin``, ``entropy_cal``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..evaluation.uncertainty_quality import UncertaintyQualityError, uncertainty_values
from ..tables import CORNERS, DetectionsTableError, list_column
from ._common import ThresholdingError

MEASURES = ("entropy", "al_rel", "ep_rel", "ep_cls", "one_minus_score")
ALIASES = {"al": "al_rel", "ep": "ep_rel"}
CAL = "_cal"

# Where each named measure comes from, for error messages: (columns, the stage/option that writes them).
_SOURCES = {
    "entropy": ("entropy", "any Detections table has it"),
    "al_rel": ("al_ymin..al_xmax", "train/export the model with loss attenuation (aleatoric σ)"),
    "ep_rel": ("ep_ymin..ep_xmax", "export the model with MC dropout (epistemic σ)"),
    "ep_cls": ("ep_cls", "export the model with MC dropout (epistemic σ)"),
    "one_minus_score": ("score", "any Detections table has it"),
}


def parse_measure(name: str) -> tuple[str, bool]:
    """``name`` -> ``(base, calibrated)``: ``"al_rel_cal"`` -> ``("al_rel", True)``, ``"al"`` -> ``("al_rel", False)``.

    Names that are not a named measure (see module docstring) come back unchanged with ``False``.
    """
    name = str(name)
    calibrated = name.endswith(CAL)
    base = name[: -len(CAL)] if calibrated else name
    base = ALIASES.get(base, base)
    if base in MEASURES:
        return base, calibrated
    return ALIASES.get(name, name), False


def _missing(name: str, base: str, calibrated: bool, detail: str) -> ThresholdingError:
    cols, how = _SOURCES[base]
    if calibrated:
        fix = (f"run the calibrate stage so the table carries the calibrated columns, "
               f"or use the uncalibrated measure {base!r}")
    else:
        fix = how
    return ThresholdingError(f"uncertainty {name!r} needs {detail} (from {cols}{CAL if calibrated else ''}), "
                             f"which the table lacks; {fix}")


def _one_minus_score(frame: pd.DataFrame, name: str, calibrated: bool) -> np.ndarray:
    if not calibrated:
        if "score" not in frame.columns:
            raise _missing(name, "one_minus_score", False, "column 'score'")
        return 1.0 - frame["score"].to_numpy(dtype=np.float64)
    if "score_cal" in frame.columns:
        return 1.0 - frame["score_cal"].to_numpy(dtype=np.float64)
    if "probs_cal" not in frame.columns or "class_id" not in frame.columns:
        raise _missing(name, "one_minus_score", True, "column 'score_cal' or 'probs_cal' with 'class_id'")
    if len(frame) == 0:
        return np.zeros(0)
    probs = list_column(frame, "probs_cal")                                        # [N, C]
    idx = np.clip(frame["class_id"].to_numpy(dtype=np.int64) - 1, 0, probs.shape[1] - 1)
    return 1.0 - np.take_along_axis(probs, idx[:, None], axis=1)[:, 0]


def _raw_values(frame: pd.DataFrame, name: str) -> np.ndarray:
    base, calibrated = parse_measure(name)
    if base == "one_minus_score":
        return _one_minus_score(frame, name, calibrated)
    if base in ("al_rel", "ep_rel"):
        kind = base[:2]
        try:
            return uncertainty_values(frame, kind, calibrated)
        except (DetectionsTableError, UncertaintyQualityError):
            cols = [f"{kind}_{c}{CAL if calibrated else ''}" for c in CORNERS]
            raise _missing(name, base, calibrated, f"columns {cols}") from None
    if base in MEASURES:                                                           # entropy, ep_cls
        col = base + (CAL if calibrated else "")
        if col not in frame.columns:
            raise _missing(name, base, calibrated, f"column {col!r}")
        return frame[col].to_numpy(dtype=np.float64)
    if name not in frame.columns:
        raise ThresholdingError(
            f"unknown uncertainty {name!r}: it is neither a named measure ({', '.join(MEASURES)}, each also "
            f"with '{CAL}') nor a column of the table; pick one of {available_measures(frame)}")
    col = frame[name]
    if not (pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)):
        raise ThresholdingError(f"column {name!r} is not numeric ({col.dtype}); an uncertainty must be one number "
                                f"per detection")
    return col.to_numpy(dtype=np.float64)


def measure_values(frame: pd.DataFrame, name: str, check_finite: bool = True) -> np.ndarray:
    """One uncertainty per row of ``frame``: ``[N]`` float64 (higher = more likely false).

    name: a named measure (module docstring), optionally with ``_cal``, or a numeric column. With
    ``check_finite`` a NaN/inf value raises :class:`ThresholdingError` naming the measure, the count and
    the first bad row (pass detection rows only: ``missed`` rows of a Matches table have no detection).
    """
    values = np.asarray(_raw_values(frame, name), dtype=np.float64).reshape(-1)
    if check_finite:
        bad = ~np.isfinite(values)
        if bad.any():
            first = int(np.argmax(bad))
            where = (f"image_id={frame['image_id'].iloc[first]}" if "image_id" in frame.columns else f"row {first}")
            raise ThresholdingError(
                f"uncertainty {name!r} is NaN/inf in {int(bad.sum())} of {values.size} rows (first at {where}); "
                f"pass detection rows only (see thresholding.labels.detection_frame) or fix the stage that wrote "
                f"the table")
    return values


def measure_matrix(frame: pd.DataFrame, names: Sequence[str], check_finite: bool = True) -> np.ndarray:
    """Several measures side by side: ``[N, K]`` float64, column ``k`` = :func:`measure_values` of ``names[k]``."""
    names = list(names)
    if not names:
        raise ThresholdingError("need at least one uncertainty name (e.g. ['entropy', 'al_rel'])")
    if len(set(names)) != len(names):
        raise ThresholdingError(f"uncertainty names must be distinct, got {names}")
    cols = [measure_values(frame, n, check_finite) for n in names]
    return np.stack(cols, axis=1) if cols else np.zeros((len(frame), 0))


def has_measure(frame: pd.DataFrame, name: str) -> bool:
    """Whether :func:`measure_values` can read ``name`` from ``frame`` (columns present; values not checked)."""
    try:
        _raw_values(frame.iloc[:0], name)
    except ThresholdingError:
        return False
    return True


def available_measures(frame: pd.DataFrame) -> list[str]:
    """The named measures (and calibrated variants) that ``frame`` can provide, in :data:`MEASURES` order."""
    out = []
    for base in MEASURES:
        for name in (base, base + CAL):
            if has_measure(frame, name):
                out.append(name)
    return out
