"""Per-image auto-labeling decision (DESIGN §9) and the ranked human-review queue.

An image is accepted when every detection with ``score >= score_floor`` has a combined uncertainty
(:meth:`ThresholdModel.score`) strictly below the model's operating threshold; a NaN combined value
counts as flagged. An image with no detection above the floor goes to review by default: the
reference accepted such images, which hides the images on which the model missed everything.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import UserError
from ..tables import CORNERS
from ..thresholding import ThresholdingError, ThresholdModel
from ..thresholding.measures import MEASURES, available_measures, has_measure, measure_matrix, parse_measure

EMPTY_POLICIES = ("review", "accept")
IMAGE_COLUMNS = ("image_id", "file_name", "height", "width")
DETECTION_COLUMNS = ("image_id", "det", "class_id", "score")
DECISION_COLUMNS = (*IMAGE_COLUMNS, "n_detections", "n_flagged", "accepted", "max_uncertainty", "worst_det",
                    "worst_class_id", "worst_score", "dominant", "reason")


class AutolabelError(UserError, ValueError):
    """Bad input to auto-labeling: missing columns or options, inconsistent tables."""


# ---------------------------------------------------------------------------------------------
# Input checks


def _measure_columns(name: str) -> list[str]:
    """The columns measure ``name`` reads (for error messages)."""
    base, calibrated = parse_measure(name)
    sfx = "_cal" if calibrated else ""
    if base in ("al_rel", "ep_rel"):
        return [f"{base[:2]}_{c}{sfx}" for c in CORNERS]
    if base == "one_minus_score":
        return ["score_cal", "probs_cal"] if calibrated else ["score"]      # either calibrated column will do
    if base in MEASURES:
        return [base + sfx]
    return [name]


def check_measures(frame: pd.DataFrame, names: Sequence[str]) -> None:
    """:class:`AutolabelError` naming the columns ``frame`` lacks for the threshold model's ``names``."""
    absent = [n for n in names if not has_measure(frame, n)]
    if not absent:
        return
    missing = [c for n in absent for c in _measure_columns(n) if c not in frame.columns]
    calibrated = any(parse_measure(n)[1] for n in absent)
    hint = ("calibrated columns (*_cal) come from applying the run's calibrators: run udet-calibrate on this "
            "detections table first, or " if calibrated else "")
    raise AutolabelError(
        f"the threshold model needs the uncertainties {absent}, but the detections table lacks the columns "
        f"{missing}; {hint}produce the table with those uncertainties enabled or refit the threshold model on "
        f"uncertainties the table has ({available_measures(frame)})")


def _check_columns(frame: pd.DataFrame, required: Sequence[str], what: str) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise AutolabelError(f"{what} has no column(s) {missing} (needs {list(required)})")


def _image_positions(dets: pd.DataFrame, images: pd.DataFrame) -> np.ndarray:
    """Row of ``images`` of each detection ``[N]``; unknown or duplicated image ids raise."""
    ids = pd.Index(images["image_id"].to_numpy(dtype=np.int64))
    if ids.has_duplicates:
        dup = ids[ids.duplicated()][0]
        raise AutolabelError(f"images table lists image_id {dup} more than once; pass one row per image")
    pos = ids.get_indexer(dets["image_id"].to_numpy(dtype=np.int64))
    if np.any(pos < 0):
        unknown = np.unique(dets["image_id"].to_numpy(dtype=np.int64)[pos < 0])
        raise AutolabelError(f"detections of {unknown.size} images not in the images table (first image_id "
                             f"{unknown[0]}); pass the images table of the split the detections come from")
    return pos


# ---------------------------------------------------------------------------------------------
# Decision


def _fmt(x: float) -> str:
    return f"{x:.2f}"


def _reasons(dec: pd.DataFrame, worst: pd.DataFrame, nan_names: list[str], threshold: float,
             score_floor: float) -> list[str]:
    """Review reason of every image (``""`` when accepted); one string per image, not per detection."""
    out = []
    rows = zip(dec["accepted"].tolist(), dec["n_detections"].tolist(), worst["det"].tolist(),
               worst["class_id"].tolist(), worst["score"].tolist(), worst["combined"].tolist(),
               worst["dominant"].tolist(), worst["contribution"].tolist(), nan_names)
    for accepted, n, det, cls, score, u, dominant, contrib, nans in rows:
        if accepted:
            out.append("")
        elif n == 0:
            out.append(f"no detection above the score floor {_fmt(score_floor)}")
        elif np.isnan(u):
            what = f": {nans} is NaN" if nans else ""
            out.append(f"NaN uncertainty in det {det} (class {cls}, score {_fmt(score)}){what}")
        else:
            mostly = f", mostly {dominant} ({_fmt(contrib)})" if dominant else ""
            out.append(f"det {det} (class {cls}, score {_fmt(score)}): combined uncertainty {_fmt(u)} >= "
                       f"{_fmt(threshold)}{mostly}")
    return out


def decide_images(detections: pd.DataFrame, images: pd.DataFrame, model: ThresholdModel, score_floor: float,
                  empty: str = "review") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Decide per image whether its detections are accepted as labels or go to human review.

    detections: a Detections table (DESIGN §6.3) with the columns the model's uncertainties need;
    images: one row per processed image, ``image_id, file_name, height, width`` (images without any
    detection included); score_floor: detections with ``score < score_floor`` are ignored;
    empty: ``"review"`` (default) or ``"accept"`` for images without a detection above the floor.

    Returns ``(dets, decisions)``. ``dets`` [N above floor]: the detection rows (input order) plus
    ``combined`` (model score), ``u_<name>`` (normalised value in [0, 1]), ``contribution_<name>``
    (weight x normalised), ``flagged`` (combined >= operating threshold or NaN) and ``dominant`` (name of
    the largest contribution, ``""`` when all are NaN). ``decisions``: one row per image, in ``images``
    order, columns :data:`DECISION_COLUMNS`; the worst detection is the first NaN-combined one if any,
    else the one with max combined (ties: lower ``det``); ``max_uncertainty`` is the max of the finite
    combined values (NaN when there is none).
    """
    if empty not in EMPTY_POLICIES:
        raise AutolabelError(f"option empty={empty!r} is not one of {list(EMPTY_POLICIES)} ('review' sends "
                             f"images without a detection above the score floor to review, 'accept' accepts them)")
    floor = float(score_floor)
    if not np.isfinite(floor):
        raise AutolabelError(f"score_floor must be a finite number, got {score_floor!r}")
    _check_columns(detections, DETECTION_COLUMNS, "detections table")
    _check_columns(images, IMAGE_COLUMNS, "images table")
    names = list(model.uncertainties)
    check_measures(detections, names)

    keep = detections["score"].to_numpy(dtype=np.float64) >= floor
    dets = detections.loc[keep].reset_index(drop=True)
    pos = _image_positions(dets, images)
    try:
        raw = measure_matrix(dets, names, check_finite=False)                             # [N, K]
        combined = np.asarray(model.score(dets), dtype=np.float64).reshape(-1)              # [N]
    except ThresholdingError as exc:
        raise AutolabelError(f"cannot score the detections with the threshold model: {exc}") from exc
    normalised = model.normaliser.transform(raw)
    contrib = normalised * model.weight_table(dets["class_id"].to_numpy(dtype=np.int64))    # [N, K]
    with np.errstate(invalid="ignore"):
        flagged = ~(combined < model.operating_threshold)
    finite_contrib = np.where(np.isnan(contrib), -np.inf, contrib)
    dom_idx = np.argmax(finite_contrib, axis=1)                                            # [N]
    name_arr = np.asarray(names, dtype=object)
    dominant = np.where(np.any(~np.isnan(contrib), axis=1), name_arr[dom_idx], "").astype(object)

    for k, name in enumerate(names):
        dets[f"u_{name}"] = normalised[:, k]
    for k, name in enumerate(names):
        dets[f"contribution_{name}"] = contrib[:, k]
    dets["combined"] = combined
    dets["flagged"] = flagged
    dets["dominant"] = dominant

    n_img = len(images)
    n_det = np.bincount(pos, minlength=n_img)
    n_flag = np.bincount(pos, weights=flagged.astype(np.float64), minlength=n_img).astype(np.int64)
    max_u = pd.Series(combined).groupby(pos).max().reindex(range(n_img)).to_numpy(dtype=np.float64)
    # worst detection per image: NaN first (it is why the image is flagged), then max combined, then lower det
    key = np.where(np.isnan(combined), np.inf, combined)
    order = np.lexsort((dets["det"].to_numpy(dtype=np.int64), -key, pos))
    first = np.ones(order.size, dtype=bool)
    first[1:] = pos[order][1:] != pos[order][:-1]
    worst_rows = np.full(n_img, -1, dtype=np.int64)
    worst_rows[pos[order[first]]] = order[first]
    has = worst_rows >= 0
    w = np.where(has, worst_rows, 0)

    def pick(values: np.ndarray, fill, dtype) -> np.ndarray:
        if len(dets) == 0:
            return np.full(n_img, fill, dtype=dtype)
        return np.where(has, values[w], fill).astype(dtype)

    dom_contrib = contrib[np.arange(len(dets)), dom_idx]
    worst = pd.DataFrame({
        "det": pick(dets["det"].to_numpy(dtype=np.int64), -1, np.int64),
        "class_id": pick(dets["class_id"].to_numpy(dtype=np.int64), -1, np.int64),
        "score": pick(dets["score"].to_numpy(dtype=np.float64), np.nan, np.float64),
        "combined": pick(combined, np.nan, np.float64),
        "dominant": pick(dominant, "", object),
        "contribution": pick(dom_contrib, np.nan, np.float64),
    })
    nan_mask = np.isnan(normalised[w]) if len(dets) else np.zeros((n_img, len(names)), bool)
    nan_names = [", ".join(name_arr[m]) if h else "" for m, h in zip(nan_mask, has)]

    accepted = np.where(n_det > 0, n_flag == 0, empty == "accept")
    dec = images.loc[:, list(IMAGE_COLUMNS)].reset_index(drop=True).copy()
    dec["n_detections"] = n_det.astype(np.int64)
    dec["n_flagged"] = n_flag
    dec["accepted"] = accepted.astype(bool)
    dec["max_uncertainty"] = max_u
    dec["worst_det"] = worst["det"].to_numpy()
    dec["worst_class_id"] = worst["class_id"].to_numpy()
    dec["worst_score"] = worst["score"].to_numpy()
    dec["dominant"] = worst["dominant"].to_numpy(dtype=object)
    dec["reason"] = _reasons(dec, worst, nan_names, float(model.operating_threshold), floor)
    return dets, dec


def review_queue(decisions: pd.DataFrame) -> pd.DataFrame:
    """The not-accepted images of ``decisions`` ranked for human review.

    Sorted by ``max_uncertainty`` descending, NaN (e.g. images without a detection) last, ties by
    ``image_id``; a ``rank`` column (1..n) comes first. Index reset.
    """
    _check_columns(decisions, ("image_id", "accepted", "max_uncertainty"), "decisions table")
    review = decisions.loc[~decisions["accepted"].to_numpy(dtype=bool)]
    u = review["max_uncertainty"].to_numpy(dtype=np.float64)
    nan = np.isnan(u)
    order = np.lexsort((review["image_id"].to_numpy(dtype=np.int64), -np.where(nan, 0.0, u), nan))
    queue = review.iloc[order].reset_index(drop=True)
    queue.insert(0, "rank", np.arange(1, len(queue) + 1, dtype=np.int64))
    return queue
