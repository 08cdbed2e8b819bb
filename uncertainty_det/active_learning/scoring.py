"""Per-image active-learning scores of an unlabeled pool from its Detections table (reference §3.4.2-§3.4.3).

Everything is vectorised over the pool: detections are mapped to pool positions once and reduced per
image with ``np.maximum.reduceat`` / ``np.add.reduceat`` over a stable sort by position.

* Single scores (``entropy``, ``mcclass``, ``albox``, ``mcbox`` or a column; list columns are averaged
  over their entries): per-detection value, then ``max`` or ``mean`` per image.
* ``ental`` [al box, entropy], ``epuncert`` [ep box, mcclass], ``alluncert`` [ep box, al box, mcclass]:
  each component aggregated per image, min-max scaled across the pool images that have detections
  (a constant component scales to 0 instead of the reference's NaN), summed. ``highep_lowal``:
  ``mm(ep box) + mm(mcclass) - mm(al box)``. ``sota`` (Choi et al. 2021): each of the three components
  z-scored across images (population std; a constant component gives 0), image score = max over them.
  Box components of combinations are relative (``mean_4(σ / [h, w, h, w])``).
* ``combo``: the per-detection combined uncertainty of a fitted
  :class:`~uncertainty_det.thresholding.ThresholdModel` (its stored normalisation and weights), aggregated
  like a single score.
* ``class_balance="perc"``: ``w_c = D / n_c`` over the above-floor detections of the pool (0 for classes
  never predicted; indexed by class id, fixing the reference's misplaced zeros, D9), image weight = mean of
  ``w_c`` over the distinct classes predicted in it, final score = weight x score. Scores that can be
  negative (``sota``, ``highep_lowal``) are shifted to start at 0 first, so the product keeps the
  intended ranking (D9).
* Images without a detection above the score floor get ``-inf`` (``empty="lowest"``, never picked by
  top-k before any scored image) or ``+inf`` (``"highest"``), instead of vanishing from the ranking.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..tables import CORNERS, list_column
from .strategy import COMBINATIONS, Strategy, StrategyError

#: Components of the multi-uncertainty combinations (reference §3.4.2).
COMPONENTS = {
    "ental": ("albox", "entropy"),
    "epuncert": ("mcbox", "mcclass"),
    "alluncert": ("mcbox", "albox", "mcclass"),
    "highep_lowal": ("mcbox", "albox", "mcclass"),
    "sota": ("mcbox", "albox", "mcclass"),
}


def _require(frame: pd.DataFrame, columns: Sequence[str], why: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        fix = ("calibrate the round model (udet-calibrate) or use calibrated=false" if missing[0].endswith("_cal")
               else "train/export a model that has it (strategy.training)")
        raise StrategyError(f"the pool's Detections table has no column {missing[0]!r}, needed for {why}; {fix}")


def detection_values(dets: pd.DataFrame, key: str, calibrated: bool = False, relative: bool = False) -> np.ndarray:
    """``[N]`` per-detection value of score ``key`` (higher = more informative).

    entropy: ``entropy`` (``entropy_cal``); mcclass: mean of ``ep_logit_std`` (calibrated: of the calibrated
    probability std ``probs_std_cal``); albox / mcbox: mean over the 4 corners of ``al_*`` / ``ep_*`` σ in
    px, or of ``σ / [h, w, h, w]`` of the predicted box with ``relative``; ``_cal`` columns when
    ``calibrated``. Any other key: that numeric column (a list column is averaged over its entries).
    """
    suffix = "_cal" if calibrated else ""
    if key == "entropy":
        _require(dets, [f"entropy{suffix}"], f"score {key!r}")
        return dets[f"entropy{suffix}"].to_numpy(dtype=np.float64)
    if key == "mcclass":
        col = "probs_std_cal" if calibrated else "ep_logit_std"
        _require(dets, [col], f"score {key!r}")
        return list_column(dets, col).mean(axis=1) if len(dets) else np.zeros(0)
    if key in ("albox", "mcbox"):
        kind = "al" if key == "albox" else "ep"
        cols = [f"{kind}_{c}{suffix}" for c in CORNERS]
        _require(dets, cols, f"score {key!r}")
        sigma = dets.loc[:, cols].to_numpy(dtype=np.float64)
        if relative:
            boxes = dets.loc[:, list(CORNERS)].to_numpy(dtype=np.float64)
            h = np.maximum(boxes[:, 2] - boxes[:, 0], 1e-6)
            w = np.maximum(boxes[:, 3] - boxes[:, 1], 1e-6)
            sigma = sigma / np.stack([h, w, h, w], axis=1)
        return sigma.mean(axis=1)
    column = f"{key}{suffix}" if calibrated and f"{key}{suffix}" in dets.columns else key
    _require(dets, [column], f"score {key!r}")
    values = dets[column]
    if values.dtype == object:
        return list_column(dets, column).mean(axis=1) if len(dets) else np.zeros(0)
    try:
        return values.to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        raise StrategyError(f"column {column!r} of the Detections table is not numeric; it cannot be a score") from None


class PoolIndex:
    """Maps detections to pool images once: ``order`` sorts the detections by pool position, ``starts`` are
    the first sorted row of each image that has detections (``present`` positions), for ``reduceat``."""

    def __init__(self, pool_ids: np.ndarray, det_image_ids: np.ndarray):
        self.size = int(pool_ids.size)
        pos = pd.Index(pool_ids).get_indexer(det_image_ids)
        if np.any(pos < 0):
            unknown = np.unique(det_image_ids[pos < 0])[:5].tolist()
            raise StrategyError(f"detections of images {unknown} that are not in the unlabeled pool")
        self.order = np.argsort(pos, kind="stable")
        sorted_pos = pos[self.order]
        first = np.ones(sorted_pos.size, dtype=bool)
        first[1:] = sorted_pos[1:] != sorted_pos[:-1]
        self.starts = np.flatnonzero(first)
        self.present = sorted_pos[self.starts]
        self.counts = np.diff(np.append(self.starts, sorted_pos.size))
        self.pos = pos

    def aggregate(self, values: np.ndarray, how: str) -> np.ndarray:
        """``[P]`` per-image max or mean of per-detection ``values [N]``; NaN for images without detections."""
        out = np.full(self.size, np.nan)
        if self.starts.size == 0:
            return out
        v = np.asarray(values, dtype=np.float64)[self.order]
        if how == "max":
            out[self.present] = np.maximum.reduceat(v, self.starts)
        elif how == "mean":
            out[self.present] = np.add.reduceat(v, self.starts) / self.counts
        else:
            raise StrategyError(f"aggregate={how!r} is not one of ['max', 'mean']")
        return out


def minmax(x: np.ndarray) -> np.ndarray:
    """Min-max scale the finite entries of ``x`` to [0, 1] (constant -> 0); NaN stays NaN."""
    finite = np.isfinite(x)
    if not finite.any():
        return x.copy()
    lo, hi = np.min(x[finite]), np.max(x[finite])
    return np.where(finite, (x - lo) / (hi - lo) if hi > lo else 0.0, np.nan)


def zscore(x: np.ndarray) -> np.ndarray:
    """Standardise the finite entries of ``x`` (population std; constant -> 0); NaN stays NaN."""
    finite = np.isfinite(x)
    if not finite.any():
        return x.copy()
    mu, sd = np.mean(x[finite]), np.std(x[finite])
    return np.where(finite, (x - mu) / sd if sd > 0 else 0.0, np.nan)


def class_balance_weights(classes: np.ndarray, index: PoolIndex) -> np.ndarray:
    """``[P]`` per-image ``perc`` weight: mean over the distinct predicted classes of ``w_c = D / n_c``
    (module docstring); NaN for images without detections. classes: ``[N]`` 1-based class ids."""
    classes = np.asarray(classes, dtype=np.int64)
    counts = np.bincount(classes, minlength=int(classes.max(initial=0)) + 1).astype(np.float64)
    w_c = np.where(counts > 0, counts.sum() / np.where(counts > 0, counts, 1.0), 0.0)     # indexed by class id
    pairs = pd.DataFrame({"pos": index.pos, "cls": classes}).drop_duplicates()
    means = pd.Series(w_c[pairs["cls"].to_numpy()]).groupby(pairs["pos"].to_numpy()).mean()
    out = np.full(index.size, np.nan)
    out[means.index.to_numpy()] = means.to_numpy()
    return out


def image_scores(detections: pd.DataFrame, pool_ids: Sequence[int] | np.ndarray, strategy: Strategy,
                 score_floor: float = 0.0, rng: np.random.Generator | None = None,
                 threshold_model: Any = None) -> np.ndarray:
    """``[P]`` score of every pool image (``pool_ids`` order; higher = select first with top-k).

    detections: the pool's Detections table (rows of other images raise); detections with
    ``score < score_floor`` are ignored; rng: for ``score="random"``; threshold_model: a fitted
    :class:`~uncertainty_det.thresholding.ThresholdModel`, needed by ``combo``.
    """
    pool_ids = np.asarray(pool_ids, dtype=np.int64)
    if strategy.score == "random":
        rng = rng if rng is not None else np.random.default_rng(0)
        return rng.random(pool_ids.size)
    # values are computed on the whole table and then masked: copying a 2M-row frame with list columns
    # (loc[mask]) costs more than the scoring itself
    keep = detections["score"].to_numpy(dtype=np.float64) >= float(score_floor)
    index = PoolIndex(pool_ids, detections["image_id"].to_numpy(dtype=np.int64)[keep])
    s = strategy

    def values(key: str, relative: bool) -> np.ndarray:
        return detection_values(detections, key, s.calibrated, relative)[keep]

    if s.score in COMPONENTS:
        comps = [index.aggregate(values(c, True), s.aggregate) for c in COMPONENTS[s.score]]
        if s.score == "sota":
            scores = np.max(np.stack([zscore(c) for c in comps]), axis=0)
        elif s.score == "highep_lowal":
            ep_box, al_box, ep_cls = (minmax(c) for c in comps)
            scores = ep_box + ep_cls - al_box
        else:
            scores = np.sum(np.stack([minmax(c) for c in comps]), axis=0)
    elif s.score == "combo":
        if threshold_model is None:
            raise StrategyError("score=combo needs the round's fitted threshold model (udet-threshold)")
        combined = np.asarray(threshold_model.score(detections), dtype=np.float64)[keep]
        scores = index.aggregate(combined, s.aggregate)
    elif s.score in COMBINATIONS:
        raise StrategyError(f"score {s.score!r} has no implementation")      # pragma: no cover - guarded above
    else:
        scores = index.aggregate(values(s.score, s.relative), s.aggregate)
    if s.class_balance == "perc" and keep.any():
        finite = np.isfinite(scores)
        if finite.any() and np.min(scores[finite]) < 0:
            scores = scores - np.min(scores[finite])
        scores = scores * class_balance_weights(detections["class_id"].to_numpy(dtype=np.int64)[keep], index)
    empty = np.isnan(scores)
    scores[empty] = -np.inf if s.empty == "lowest" else np.inf
    return scores
