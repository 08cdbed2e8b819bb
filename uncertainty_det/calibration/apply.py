"""Apply fitted calibrators to a Detections table (DESIGN §6.3) and split matched pairs for evaluation."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..tables import CORNERS, box_array, entropy_bits, list_column, sigma_array
from ._common import CalibrationError
from .box import BoxCalibrator
from .classification import ClassCalibrator, MCClassCalibrator

CAL_SUFFIX = "_cal"


def _require(frame: pd.DataFrame, columns: list[str], why: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise CalibrationError(f"detections table has no column {missing[0]!r}, needed {why}; "
                               f"produce the table with that uncertainty enabled or drop that calibrator")


def _classes(frame: pd.DataFrame) -> np.ndarray:
    return frame["class_id"].to_numpy(dtype=np.int64)


def _calibrate_class(frame: pd.DataFrame, out: pd.DataFrame, cal: ClassCalibrator) -> None:
    _require(frame, ["logits"], "for class calibration")
    n = len(frame)
    mc = isinstance(cal, MCClassCalibrator) and "ep_logit_std" in frame.columns
    if n == 0:
        out["probs_cal"] = pd.Series([], dtype=object)
        out["entropy_cal"] = pd.Series([], dtype=np.float64)
        if mc:
            out["probs_std_cal"] = pd.Series([], dtype=object)
            out["ep_cls_cal"] = pd.Series([], dtype=np.float64)
        return
    logits = list_column(frame, "logits")
    if mc:
        res = cal.transform_mc(logits, list_column(frame, "ep_logit_std"))
        out["probs_cal"] = pd.Series(res.probs.tolist(), index=out.index, dtype=object)
        out["entropy_cal"] = res.entropy
        out["probs_std_cal"] = pd.Series(res.probs_std.tolist(), index=out.index, dtype=object)
        idx = np.clip(_classes(frame) - 1, 0, res.probs.shape[1] - 1)
        out["ep_cls_cal"] = np.take_along_axis(res.probs_std, idx[:, None], axis=1)[:, 0]
    else:
        probs = cal.transform(logits)
        out["probs_cal"] = pd.Series(probs.tolist(), index=out.index, dtype=object)
        out["entropy_cal"] = entropy_bits(probs)


def _calibrate_box(frame: pd.DataFrame, out: pd.DataFrame, cal: BoxCalibrator, kind: str) -> None:
    cols = [f"{kind}_{c}" for c in CORNERS]
    _require(frame, cols, f"for {'aleatoric' if kind == 'al' else 'epistemic'} box calibration")
    if len(frame) == 0:
        sigma_cal = np.zeros((0, 4))
    else:
        sigma_cal = cal.transform(box_array(frame), sigma_array(frame, kind), _classes(frame))
    for k, c in enumerate(cols):
        out[c + CAL_SUFFIX] = sigma_cal[:, k]


def calibrate_detections(frame: pd.DataFrame, class_calibrator: ClassCalibrator | None = None,
                         al_calibrator: BoxCalibrator | None = None,
                         ep_calibrator: BoxCalibrator | None = None) -> pd.DataFrame:
    """A copy of a Detections table with calibrated columns added (or replaced).

    * ``class_calibrator``: ``probs_cal`` (list ``[C]``) and ``entropy_cal`` (bits) from ``logits``. When it
      is an :class:`MCClassCalibrator` and the table has ``ep_logit_std``, also ``probs_std_cal`` (list
      ``[C]``, std over MC samples of the calibrated probabilities) and ``ep_cls_cal`` (that std for the
      predicted ``class_id``).
    * ``al_calibrator`` / ``ep_calibrator``: ``al_ymin_cal .. al_xmax_cal`` / ``ep_ymin_cal .. ep_xmax_cal``
      (pixels) from the boxes, ``al_*``/``ep_*`` σ and the predicted ``class_id``.

    A calibrator whose input columns are missing raises :class:`CalibrationError`.
    """
    out = frame.copy()
    if class_calibrator is not None:
        _calibrate_class(frame, out, class_calibrator)
    if al_calibrator is not None:
        _calibrate_box(frame, out, al_calibrator, "al")
    if ep_calibrator is not None:
        _calibrate_box(frame, out, ep_calibrator, "ep")
    return out


def split_fit_eval(n: int, eval_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random split of ``n`` samples into ``(fit_idx, eval_idx)`` (sorted int64 index arrays).

    ``round(n·eval_fraction)`` samples evaluate, kept within ``[1, n-1]`` when ``n >= 2`` and
    ``0 < eval_fraction < 1``. (The reference split by order, which correlates with image order.)
    """
    n = int(n)
    if n < 0 or not 0.0 <= float(eval_fraction) <= 1.0:
        raise CalibrationError(f"split_fit_eval needs n >= 0 and 0 <= eval_fraction <= 1, got {n}, {eval_fraction}")
    n_eval = int(round(n * float(eval_fraction)))
    if n >= 2 and 0.0 < eval_fraction < 1.0:
        n_eval = min(max(n_eval, 1), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_eval:]).astype(np.int64), np.sort(perm[:n_eval]).astype(np.int64)
