"""STAC pseudo-label selection and weighting from a teacher's Detections table (reference §5.1-§5.2).

Candidates are the detections with ``score >= min_score``, of which each image keeps its
``max_per_image`` highest-scoring ones (for every strategy; the reference's truncation missed the
multi-component strategies). Then, per strategy, with ``τ = tau``:

* ``score`` / a table column — value: ``score`` / that column; filter: ``value > τ``; weight:
  ``clip(value, 0, 1)``.
* ``combo`` — value: the combined uncertainty ``u*`` of a fitted
  :class:`~uncertainty_det.thresholding.ThresholdModel`, in the model's own normalised units; filter:
  ``score > τ`` and ``u* < operating_threshold``; weight: ``clip(1 - u*, 0, 1)``.
* ``ental`` / ``epuncert`` / ``alluncert`` — value: the normalised certainty ``c`` (below); filter:
  ``score > τ`` and ``c > certainty_min``; weight: ``c``.

``use`` picks what the strategy does: ``"filter"`` keeps by the filter with weight 1; ``"weight"`` keeps
by the score rule alone (``score > τ``, or ``value > τ`` for ``score`` / a column) and attaches the
weight; ``"both"`` filters and weights. For ``score`` / a column the filter *is* the score rule.

Defects of the reference fixed here (reference §8 item 13):

* ``combo`` compares ``u*`` with the model's operating threshold in the same units (the reference
  re-normalised ``u*`` over the pool and compared it with thresholds fitted on unnormalised values), and
  the weight is a certainty ``1 - u*`` (the reference used the uncertainty itself, higher = worse, as a
  weight). ``u*`` is a simplex combination of values clipped to [0, 1], so ``1 - u*`` lies in [0, 1];
  it is not rescaled by the operating threshold, so a box just under the threshold keeps a
  positive weight instead of ~0.
* ``ental = mean(albox, entropy)``, ``epuncert = mean(mcbox, mcclass)``,
  ``alluncert = mean(mcbox, albox, mcclass)`` of the raw per-detection values of
  :func:`~uncertainty_det.active_learning.scoring.detection_values` (box σ relative to the predicted box
  with ``relative``). The certainty ``1 / mean`` (``+inf`` for a zero mean, treated as the largest) is
  min-max scaled over the candidates with ``score > τ`` (a constant certainty scales to 1). The reference
  weighted by it but, for ``ental`` / ``epuncert``, never filtered with it; here ``use="filter"`` /
  ``"both"`` keep ``c > certainty_min``.

A detection whose value is NaN cannot be judged and is never kept. Images left without a box are not
returned.

Ignore regions (``ignore_score``, off by default; :func:`select_ignore_regions`): the candidates with
``score >= ignore_score`` that the rules above did not keep. They go into the student's pseudo-labelled
images as boxes of weight 0, which the target assigner turns into ignored anchors: an object the teacher saw
but was unsure of is then neither learned as an object nor, as without them, as background (at 10 % labels of
the synthetic set, 23 % of the unlabeled objects have their best teacher detection in [0.1, 0.4), 62 % of
what ``tau = 0.4`` misses). :func:`image_weights` gives the per-image loss weight ``s_i`` (the mean box weight) of
reference §5.1.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..active_learning.scoring import detection_values
from ..active_learning.strategy import StrategyError
from ..errors import UserError
from ..tables import CORNERS

#: Multi-component strategies: the per-detection values averaged into the uncertainty whose inverse is the certainty.
COMPONENTS = {
    "ental": ("albox", "entropy"),
    "epuncert": ("mcbox", "mcclass"),
    "alluncert": ("mcbox", "albox", "mcclass"),
}
NAMED_STRATEGIES = ("score", "combo", *COMPONENTS)
USES = ("filter", "weight", "both")
#: Columns of the frame :func:`select_pseudo_labels` returns.
PSEUDO_COLUMNS = ("image_id", "class_id", *CORNERS, "score", "value", "weight")
_REQUIRED = ("image_id", "class_id", "score", *CORNERS)


class PseudoLabelError(UserError, ValueError):
    """Bad pseudo-label settings or a Detections table that cannot serve them; the message names the fix."""


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise PseudoLabelError(f"pseudo-label {name} must be a finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class PseudoLabelSelection:
    """How pseudo-labels are picked from a teacher's detections (module docstring).

    strategy: ``"score"``, ``"combo"``, ``"ental"``, ``"epuncert"``, ``"alluncert"`` or a numeric column of
    the Detections table (its values are compared with ``tau`` and, as weights, clipped to [0, 1], so a
    column only makes sense if it is a confidence in [0, 1], higher = better); tau: score threshold
    (``score > tau``); min_score: detections below it are never candidates; max_per_image: candidates
    kept per image, highest scores first; use: ``"filter"`` | ``"weight"`` | ``"both"``; certainty_min:
    for ental/epuncert/alluncert, the normalised certainty must exceed it when ``use`` filters (in [0, 1);
    ``use="weight"`` disables the certainty filter); calibrated: read the ``_cal`` columns (for ``score``
    / a column: ``<column>_cal`` where the table has it, else the column itself; ``combo`` reads the
    measures its threshold model names); relative: box σ relative to the predicted box size (``σ / [h, w,
    h, w]``) for the multi-component strategies, mean pixel σ otherwise; ignore_score: candidates with
    ``score >= ignore_score`` that are not kept become ignore regions (:func:`select_ignore_regions`;
    ``None``: none).
    """

    strategy: str = "score"
    tau: float = 0.4
    min_score: float = 0.1
    max_per_image: int = 99
    use: str = "filter"
    certainty_min: float = 0.0
    calibrated: bool = False
    relative: bool = True
    ignore_score: float | None = None

    def __post_init__(self) -> None:
        s = self.strategy
        if not isinstance(s, str) or not s or not s.replace("_", "").isalnum():
            raise PseudoLabelError(f"pseudo-label strategy {s!r} is not one of {list(NAMED_STRATEGIES)} "
                                   f"nor a Detections column name")
        tau = _number("tau", self.tau)
        min_score = _number("min_score", self.min_score)
        if not 0.0 <= min_score <= 1.0:
            raise PseudoLabelError(f"pseudo-label min_score must be in [0, 1] (a detection score), "
                                   f"got {self.min_score!r}")
        if s in ("score", "combo", *COMPONENTS) and not 0.0 <= tau < 1.0:
            raise PseudoLabelError(f"pseudo-label tau must be in [0, 1) for strategy {s!r} (it thresholds the "
                                   f"detection score), got {self.tau!r}")
        if (isinstance(self.max_per_image, bool) or not isinstance(self.max_per_image, numbers.Integral)
                or int(self.max_per_image) < 1):
            raise PseudoLabelError(f"pseudo-label max_per_image must be an integer >= 1, got {self.max_per_image!r}")
        if self.use not in USES:
            raise PseudoLabelError(f"pseudo-label use={self.use!r} is not one of {list(USES)}")
        c_min = _number("certainty_min", self.certainty_min)
        if not 0.0 <= c_min < 1.0:
            raise PseudoLabelError(f"pseudo-label certainty_min must be in [0, 1) (normalised certainty), got "
                                   f"{self.certainty_min!r}; use='weight' keeps boxes regardless of certainty")
        if self.ignore_score is not None:
            ignore = _number("ignore_score", self.ignore_score)
            if not 0.0 <= ignore <= 1.0:
                raise PseudoLabelError(f"pseudo-label ignore_score must be in [0, 1] (a detection score) or null "
                                       f"(no ignore regions), got {self.ignore_score!r}")
        for name in ("calibrated", "relative"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise PseudoLabelError(f"pseudo-label {name} must be true or false, got {getattr(self, name)!r}")

    @property
    def filters(self) -> bool:
        """Whether ``use`` applies the strategy's filter (``filter`` or ``both``)."""
        return self.use in ("filter", "both")

    @property
    def weights(self) -> bool:
        """Whether ``use`` attaches the strategy's weight (``weight`` or ``both``)."""
        return self.use in ("weight", "both")


# ---------------------------------------------------------------------------------------------


def _check_columns(dets: pd.DataFrame, sel: PseudoLabelSelection) -> None:
    if not isinstance(dets, pd.DataFrame):
        raise PseudoLabelError(f"detections must be a pandas DataFrame (a Detections table), got {type(dets).__name__}")
    missing = [c for c in _REQUIRED if c not in dets.columns]
    if missing:
        raise PseudoLabelError(f"the teacher's Detections table lacks columns {missing}; pass a Detections table "
                               f"(DESIGN §6.3) with at least {list(_REQUIRED)}")
    suffix = "_cal" if sel.calibrated else ""
    fix_cal = "calibrate the teacher (calibrate stage) or set calibrated=false"
    fix_unc = "predict with a teacher that has it (loss attenuation for al_*, MC dropout for ep_*)"
    if sel.strategy in COMPONENTS:
        for key in COMPONENTS[sel.strategy]:
            if key == "entropy":
                cols = [f"entropy{suffix}"]
            elif key == "mcclass":
                cols = ["probs_std_cal" if sel.calibrated else "ep_logit_std"]
            else:
                cols = [f"{'al' if key == 'albox' else 'ep'}_{c}{suffix}" for c in CORNERS]
            absent = [c for c in cols if c not in dets.columns]
            if absent:
                raise PseudoLabelError(
                    f"pseudo-label strategy {sel.strategy!r} needs column {absent[0]!r} (for {key}), which the "
                    f"teacher's Detections table lacks; {fix_cal if absent[0].endswith('_cal') else fix_unc}")
    elif sel.strategy not in ("combo", "score") and sel.strategy not in dets.columns:
        raise PseudoLabelError(
            f"pseudo-label strategy {sel.strategy!r} is not one of {list(NAMED_STRATEGIES)} nor a column of the "
            f"teacher's Detections table (columns: {list(dets.columns)})")


def _candidates(dets: pd.DataFrame, sel: PseudoLabelSelection) -> np.ndarray:
    """Row positions of the candidates, sorted by image id then descending score (ties: input order)."""
    score = dets["score"].to_numpy(dtype=np.float64)
    image = dets["image_id"].to_numpy(dtype=np.int64)
    rows = np.flatnonzero(score >= sel.min_score)
    rows = rows[np.argsort(-score[rows], kind="stable")]
    rows = rows[np.argsort(image[rows], kind="stable")]
    g = image[rows]
    first = np.ones(g.size, dtype=bool)
    first[1:] = g[1:] != g[:-1]
    start = np.maximum.accumulate(np.where(first, np.arange(g.size), 0))
    rank = np.arange(g.size) - start
    return rows[rank < int(sel.max_per_image)]


def _values(cands: pd.DataFrame, key: str, sel: PseudoLabelSelection, relative: bool) -> np.ndarray:
    try:
        return detection_values(cands, key, sel.calibrated, relative)
    except StrategyError as exc:                     # e.g. a non-numeric column
        raise PseudoLabelError(f"pseudo-label strategy {sel.strategy!r}: {exc}") from None


def normalised_certainty(uncertainty: np.ndarray, population: np.ndarray) -> np.ndarray:
    """``[N]`` certainty ``1 / uncertainty`` min-max scaled to [0, 1] over ``population [N]`` (bool).

    uncertainty: ``[N]`` non-negative mean uncertainty per detection. A zero (or negative) uncertainty
    gives ``+inf``, which counts as the largest certainty (1.0); a constant certainty over the population
    gives 1.0; NaN uncertainty and rows outside the population give NaN.
    """
    u = np.asarray(uncertainty, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.where(u > 0, 1.0 / np.where(u > 0, u, 1.0), np.where(np.isnan(u), np.nan, np.inf))
    out = np.full(u.shape, np.nan)
    pop = np.asarray(population, dtype=bool) & ~np.isnan(c)
    finite = pop & np.isfinite(c)
    if finite.any():
        lo, hi = np.min(c[finite]), np.max(c[finite])
        out[finite] = (c[finite] - lo) / (hi - lo) if hi > lo else 1.0
    out[pop & np.isinf(c)] = 1.0
    return out


def select_pseudo_labels(detections: pd.DataFrame, selection: PseudoLabelSelection = PseudoLabelSelection(),
                         threshold_model: Any = None) -> pd.DataFrame:
    """Pseudo-labels of a teacher's Detections table (module docstring for the rules).

    detections: Detections table (DESIGN §6.3) with at least ``image_id, class_id, score, ymin, xmin,
    ymax, xmax`` (boxes in original-image pixels, 1-based class ids) plus the uncertainty columns the
    strategy reads; threshold_model: a fitted
    :class:`~uncertainty_det.thresholding.ThresholdModel`, needed by ``combo``.

    Returns one row per kept box, columns :data:`PSEUDO_COLUMNS` (``image_id, class_id, ymin, xmin, ymax,
    xmax, score, value, weight``), sorted by image id then descending score, index ``0..n-1``. ``value``
    is the strategy's per-box value; ``weight`` in [0, 1] (higher = more trustworthy) is 1.0 with
    ``use="filter"``.
    """
    cands, keep, score, value, weight = _decide(detections, selection, threshold_model)
    return _frame(cands, keep, score, value, weight)


def select_ignore_regions(detections: pd.DataFrame, selection: PseudoLabelSelection = PseudoLabelSelection(),
                          threshold_model: Any = None) -> pd.DataFrame:
    """The ignore regions of a teacher's Detections table (module docstring): the candidates with
    ``score >= selection.ignore_score`` that :func:`select_pseudo_labels` does not keep, as a frame with
    :data:`PSEUDO_COLUMNS` and ``weight`` 0 (the input pipeline's per-box weight; the target assigner makes a
    weight-0 box an ignore region). Empty when ``selection.ignore_score`` is ``None``. Same arguments as
    :func:`select_pseudo_labels`."""
    return select_pseudo_labels_and_ignore_regions(detections, selection, threshold_model)[1]


def select_pseudo_labels_and_ignore_regions(detections: pd.DataFrame,
                                            selection: PseudoLabelSelection = PseudoLabelSelection(),
                                            threshold_model: Any = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(pseudo_labels, ignore_regions)`` as :func:`select_pseudo_labels` and :func:`select_ignore_regions`
    return them, from one pass of the selection rules (``combo`` scores the candidates once)."""
    cands, keep, score, value, weight = _decide(detections, selection, threshold_model)
    if selection.ignore_score is None:
        region = np.zeros(keep.shape, dtype=bool)
    else:
        region = ~keep & (score >= float(selection.ignore_score))
    return _frame(cands, keep, score, value, weight), _frame(cands, region, score, value, np.zeros(keep.shape))


def _frame(cands: pd.DataFrame, keep: np.ndarray, score: np.ndarray, value: np.ndarray,
           weight: np.ndarray) -> pd.DataFrame:
    kept = cands.iloc[np.flatnonzero(keep)]
    return pd.DataFrame({
        "image_id": kept["image_id"].to_numpy(dtype=np.int64),
        "class_id": kept["class_id"].to_numpy(dtype=np.int64),
        **{c: kept[c].to_numpy(dtype=np.float64) for c in CORNERS},
        "score": score[keep],
        "value": value[keep],
        "weight": weight[keep],
    })


def _decide(detections: pd.DataFrame, selection: PseudoLabelSelection, threshold_model: Any):
    """``(candidates, keep, score, value, weight)``: the candidate rows and per-candidate arrays ``[n]``."""
    sel = selection
    if not isinstance(sel, PseudoLabelSelection):
        raise PseudoLabelError(f"selection must be a PseudoLabelSelection, got {type(sel).__name__}")
    _check_columns(detections, sel)
    if sel.strategy == "combo":
        if threshold_model is None or not hasattr(threshold_model, "score"):
            raise PseudoLabelError("pseudo-label strategy 'combo' needs the teacher's fitted threshold model "
                                   "(threshold stage on the teacher's validation Matches); pass threshold_model=")
        op = float(threshold_model.operating_threshold)
        if not math.isfinite(op):
            raise PseudoLabelError(f"the threshold model's operating_threshold is {op}; re-fit it (threshold stage)")
    rows = _candidates(detections, sel)
    cands = detections.iloc[rows]
    score = cands["score"].to_numpy(dtype=np.float64)
    n = rows.size
    weight = np.ones(n)
    if sel.strategy in COMPONENTS:
        comps = [_values(cands, key, sel, sel.relative) for key in COMPONENTS[sel.strategy]]
        mean_u = np.mean(np.stack(comps), axis=0) if n else np.zeros(0)
        above = score > sel.tau
        value = normalised_certainty(mean_u, above)
        keep = above & ~np.isnan(value)
        if sel.filters:
            keep &= value > sel.certainty_min
        if sel.weights:
            weight = value
    elif sel.strategy == "combo":
        value = np.asarray(threshold_model.score(cands), dtype=np.float64).reshape(-1)
        if value.size != n:
            raise PseudoLabelError(f"threshold_model.score returned {value.size} values for {n} detections")
        keep = (score > sel.tau) & ~np.isnan(value)
        if sel.filters:
            keep &= value < op
        if sel.weights:
            weight = np.clip(1.0 - value, 0.0, 1.0)
    else:
        value = score if sel.strategy == "score" and not sel.calibrated else _values(cands, sel.strategy, sel, False)
        value = np.asarray(value, dtype=np.float64)
        keep = value > sel.tau                       # NaN > tau is False
        if sel.weights:
            weight = np.clip(value, 0.0, 1.0)
    return cands, keep, score, np.asarray(value, dtype=np.float64), np.asarray(weight, dtype=np.float64)


def image_weights(pseudo: pd.DataFrame) -> pd.Series:
    """Per-image pseudo weight ``s_i``: the mean box ``weight`` of each image (reference §5.1).

    pseudo: a frame from :func:`select_pseudo_labels` (columns ``image_id`` and ``weight``). Returns a
    float64 Series named ``weight`` indexed by ``image_id`` (ascending), one entry per image with a box.
    """
    if not isinstance(pseudo, pd.DataFrame) or not {"image_id", "weight"} <= set(pseudo.columns):
        raise PseudoLabelError("image_weights needs the frame select_pseudo_labels returns (columns 'image_id' and "
                               "'weight')")
    w = pseudo["weight"].to_numpy(dtype=np.float64)
    if np.any(np.isnan(w)):
        raise PseudoLabelError("pseudo-label weights contain NaN; build them with select_pseudo_labels")
    ids = pseudo["image_id"].to_numpy(dtype=np.int64)
    s = pd.Series(w).groupby(ids, sort=True).mean()
    s.index = s.index.astype(np.int64)
    s.index.name = "image_id"
    return s.rename("weight")
