"""The score floor of auto-labeling: the detection score that maximises F1 on a greedy Matches table."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ._common import ThresholdingError


def f1_score_floor(matches: pd.DataFrame, iou_threshold: float = 0.5) -> tuple[float, dict[str, float]]:
    """``(floor, info)``: the score ``s`` maximising F1 of the detections with ``score >= s``.

    matches: a ``greedy`` Matches table (one-to-one, with ``background`` and ``missed`` rows). A detection is
    a true positive when it is ``matched`` with the right class and ``iou >= iou_threshold``; every GT row
    (``matched`` or ``missed``) counts once. ``F1(s) = 2 TP(s) / (P(s) + G)``; the floor is a detection
    score (ties: the highest such score). info: ``f1``, ``precision``, ``recall`` at the floor.
    """
    need = ("kind", "score", "iou", "class_id", "gt_class_id")
    missing = [c for c in need if c not in matches.columns]
    if missing:
        raise ThresholdingError(f"Matches table has no column {missing[0]!r}; run the validate stage")
    kind = matches["kind"].to_numpy(dtype=object)
    det = kind != "missed"
    n_gt = int(np.sum(kind != "background"))
    score = matches["score"].to_numpy(dtype=np.float64)[det]
    tp = ((kind[det] == "matched")
          & (matches["class_id"].to_numpy()[det] == matches["gt_class_id"].to_numpy()[det])
          & (matches["iou"].to_numpy(dtype=np.float64)[det] >= float(iou_threshold)))
    if score.size == 0 or n_gt == 0 or not np.all(np.isfinite(score)):
        raise ThresholdingError("an F1 score floor needs detections with finite scores and ground truth; "
                                "set a numeric score floor instead")
    order = np.argsort(-score, kind="stable")
    s = score[order]
    cum_tp = np.cumsum(tp[order])
    last = np.ones(s.size, dtype=bool)
    last[:-1] = s[1:] != s[:-1]                      # keep only whole tie groups (a floor keeps all equal scores)
    idx = np.nonzero(last)[0]
    f1 = 2.0 * cum_tp[idx] / (idx + 1 + n_gt)
    best = idx[int(np.argmax(f1))]                    # first maximum = the highest score
    tp_b, p_b = float(cum_tp[best]), float(best + 1)
    return float(s[best]), {"f1": 2 * tp_b / (p_b + n_gt), "precision": tp_b / p_b, "recall": tp_b / n_gt}
