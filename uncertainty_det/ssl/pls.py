"""PLS: pseudo-label sorting score (reference §5.7).

Per pseudo-labelled image ``i``, from the teacher's raw detections (every score above the raw floor the
caller used, 0.1 in the reference) and the pseudo-labels kept at the confidence threshold ``tau``:

* ``S_i = #{raw scores of i >= tau} / #{raw scores of i}``: the share of the raw candidates that survive
  the threshold. Few survivors (many low-confidence candidates) go with missed objects. The reference
  read ``tau`` as a digit from a folder name (``thr_04`` -> ``drate_4 / drate_0`` with
  ``drate_k = #{s >= k/10}``); ``tau=0.4`` gives the same value.
* ``C_i = mean over the distinct pseudo classes c of i of (1 - f_c)``, ``f_c`` = share of class ``c``
  among all pseudo-labels (rarity term).
* ``D_i = (1 - beta) S_i + beta C_i``.

:func:`pls_subsets` splits the images into top / bottom / random subsets by ``D``; :func:`pls_roc` checks
how well each score ranks images by their missed-GT rate (:func:`~uncertainty_det.ssl.pseudo_gt.per_image_missed_rate`).
The reference's extra diagnostics on consecutive ``drate`` drops are not reproduced.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from .pseudo_gt import PseudoLabelError, check_frame

SCORE_COLUMNS = ("S", "C", "D", "mean_score", "n_raw")
# AUROC orientation: True = the positive class is "image not missing GT" (a high score should mean a
# well-labelled image); False = the positive class is "image missing GT" (a high value means trouble).
ROC_POSITIVE_IS_WELL_LABELLED = {"S": True, "C": True, "D": True, "mean_score": True, "n_raw": False}


def pls_scores(raw: pd.DataFrame, pseudo: pd.DataFrame, tau: float, beta: float = 0.1) -> pd.DataFrame:
    """PLS scores of the pseudo-labelled images.

    raw: the teacher's raw detections (``image_id``, ``score``; one row each, already above the raw score
    floor); pseudo: the pseudo-labels (``image_id``, ``class_id``); tau: the confidence threshold the
    pseudo-labels were taken at (same units as ``score``); beta: weight of the class-rarity term, in [0, 1].

    Returns a frame indexed by ``image_id`` (ascending) of the images that have at least one pseudo-label,
    columns ``S``, ``C``, ``D`` (float64, see the module docstring), ``mean_score`` (mean raw score of
    the image) and ``n_raw`` (int64, number of raw detections); the last two feed :func:`pls_roc`.
    Raises :class:`PseudoLabelError` when a pseudo-labelled image has no raw detection.
    """
    check_frame(raw, "raw detections", ("image_id", "score"))
    check_frame(pseudo, "pseudo-labels", ("image_id", "class_id"))
    tau = float(tau)
    if not np.isfinite(tau):
        raise PseudoLabelError(f"tau must be a finite score threshold, got {tau!r}")
    beta = float(beta)
    if not 0.0 <= beta <= 1.0:
        raise PseudoLabelError(f"beta must be in [0, 1], got {beta!r}")
    if len(pseudo) == 0:
        raise PseudoLabelError("pseudo-labels are empty; PLS needs at least one pseudo-labelled image")

    raw_img = raw["image_id"].to_numpy(dtype=np.int64)
    raw_score = raw["score"].to_numpy(dtype=np.float64)
    per_raw = pd.DataFrame({"n": np.ones(raw_img.size), "kept": (raw_score >= tau).astype(np.float64),
                            "score": raw_score}).groupby(raw_img).agg(n=("n", "sum"), kept=("kept", "sum"),
                                                                       mean_score=("score", "mean"))

    p_img = pseudo["image_id"].to_numpy(dtype=np.int64)
    p_cls = pseudo["class_id"].to_numpy(dtype=np.int64)
    classes, inv, counts = np.unique(p_cls, return_inverse=True, return_counts=True)
    rarity = 1.0 - counts / p_cls.size                                   # 1 - f_c per class
    distinct = pd.DataFrame({"image_id": p_img, "class_id": p_cls, "r": rarity[inv]}).drop_duplicates(
        ["image_id", "class_id"])
    c_term = distinct.groupby("image_id")["r"].mean()

    images = c_term.index.to_numpy(dtype=np.int64)
    missing = np.setdiff1d(images, per_raw.index.to_numpy(dtype=np.int64))
    if missing.size:
        raise PseudoLabelError(f"{missing.size} pseudo-labelled image(s) have no raw detection (first: "
                               f"{int(missing[0])}); pass the teacher's raw detections of the same images")
    r = per_raw.loc[images]
    s_term = (r["kept"] / r["n"]).to_numpy(dtype=np.float64)
    c = c_term.to_numpy(dtype=np.float64)
    out = pd.DataFrame({"S": s_term, "C": c, "D": (1.0 - beta) * s_term + beta * c,
                        "mean_score": r["mean_score"].to_numpy(dtype=np.float64),
                        "n_raw": r["n"].to_numpy().astype(np.int64)},
                       index=pd.Index(images, name="image_id"))
    return out


def pls_subsets(scores: pd.DataFrame, top_fraction: float = 0.4, seed: int = 0) -> dict[str, np.ndarray]:
    """Split the scored images into ``top``, ``bottom`` and ``random`` subsets (arrays of ``image_id``).

    scores: the frame of :func:`pls_scores` (needs ``D``); top_fraction in (0, 1]. As the reference:
    ``thr = np.percentile(D, 100 * (1 - top_fraction))``, ``top`` = images with ``D >= thr`` (ties at the
    threshold all go to ``top``, so it can hold more than ``top_fraction`` of the images), ``bottom`` =
    the others, ``random`` = ``|top|`` images drawn without replacement from all images with
    ``np.random.default_rng(seed)``. ``top`` and ``bottom`` keep the order of ``scores``; ``random``
    is sorted.
    """
    if not isinstance(scores, pd.DataFrame) or "D" not in scores.columns:
        raise PseudoLabelError("scores must be the frame of pls_scores() (a DataFrame with a 'D' column)")
    top_fraction = float(top_fraction)
    if not 0.0 < top_fraction <= 1.0:
        raise PseudoLabelError(f"top_fraction must be in (0, 1], got {top_fraction!r}")
    if len(scores) == 0:
        raise PseudoLabelError("scores are empty; there is nothing to split")
    d = scores["D"].to_numpy(dtype=np.float64)
    if not np.isfinite(d).all():
        raise PseudoLabelError("scores: column 'D' has NaN/inf values; recompute it with pls_scores()")
    ids = scores.index.to_numpy()
    thr = np.percentile(d, 100.0 * (1.0 - top_fraction))
    top = d >= thr
    rng = np.random.default_rng(seed)
    rand = np.sort(rng.choice(ids, size=int(top.sum()), replace=False))
    return {"top": ids[top], "bottom": ids[~top], "random": rand}


def pls_roc(scores: pd.DataFrame, missed_rate: pd.Series,
            thresholds: Sequence[float] = (0.0, 0.25, 0.5, 0.75)) -> pd.DataFrame:
    """AUROC of each image score against the missed-GT indicator ``missed_rate > thr``.

    scores: the frame of :func:`pls_scores` (``S, C, D, mean_score, n_raw``); missed_rate: the Series of
    :func:`~uncertainty_det.ssl.pseudo_gt.per_image_missed_rate`. Only images in both are used.

    Orientation (as the reference): for ``S``, ``C``, ``D`` and ``mean_score`` the positive class is
    "not missing" (``missed_rate <= thr``), so AUROC 1 means the score ranks every well-labelled image
    above every image that misses GT; for ``n_raw`` (number of raw detections) the positive class is
    "missing", so AUROC 1 means images with more raw detections miss more. 0.5 is chance.

    Returns a frame indexed by ``threshold`` with one AUROC column per score (NaN when the indicator has
    a single class at that threshold) plus ``n_images`` and ``n_missing`` (images with the indicator set).
    """
    if not isinstance(scores, pd.DataFrame) or any(c not in scores.columns for c in SCORE_COLUMNS):
        raise PseudoLabelError(f"scores must be the frame of pls_scores() with columns {list(SCORE_COLUMNS)}")
    if not isinstance(missed_rate, pd.Series):
        raise PseudoLabelError("missed_rate must be the Series of per_image_missed_rate() (indexed by image_id)")
    common = scores.index.intersection(missed_rate.index)
    if common.size == 0:
        raise PseudoLabelError("scores and missed_rate share no image_id; compute both on the same images")
    s = scores.loc[common]
    rate = missed_rate.loc[common].to_numpy(dtype=np.float64)
    rows = []
    for thr in thresholds:
        missing = rate > float(thr)
        row = {"threshold": float(thr), "n_images": int(common.size), "n_missing": int(missing.sum())}
        single = missing.all() or not missing.any()
        for col in SCORE_COLUMNS:
            if single:
                row[col] = float("nan")
                continue
            y = ~missing if ROC_POSITIVE_IS_WELL_LABELLED[col] else missing
            row[col] = float(roc_auc_score(y.astype(int), s[col].to_numpy(dtype=np.float64)))
        rows.append(row)
    out = pd.DataFrame(rows, columns=["threshold", *SCORE_COLUMNS, "n_images", "n_missing"])
    return out.set_index("threshold")
