"""Similarity of candidate sets to a reference set from per-class feature divergences (reference §4.4).

For class ``c`` and candidate ``s`` with ``N_{c,s}`` crops (``N_c`` in the reference):

* ``ratio_{c,s} = N_c / N_{c,s}`` and ``JSD_{c,s}`` (:func:`.divergence.empirical_jsd`), both NaN when
  the candidate has no crop of ``c``;
* ``T_s = sum_c N_{c,s}``; class proportion ``pi_c = mean_s N_{c,s} / T_s``;
* weights: ``w_c = 1 / pi_c``; class balance is active when ``round(std(w) / mean(w), 1) > 1.3``
  (population std). Then classes with ``pi_c`` below the 25th percentile of ``pi`` get ``w_c = 0`` and
  the others keep ``1 / pi_c``; otherwise every ``w_c = 1``;
* size factor ``beta_s = max(1, int(T_s / P25(T)))``;
* ``m_{c,s} = JSD_{c,s} + 0.25 * ratio_{c,s} * beta_s + 0.5`` (``inf`` -> NaN);
* ``sim_s = nansum_c(w_c / m_{c,s}) / sum_c w_c`` (higher = more similar).

A class that no candidate contains (``pi_c = 0``) gets weight 0 and is left out of the class-balance
rule and the percentile of ``pi``: in the reference its ``1 / 0 = inf`` weight turned the rule's
statistic into NaN, which silently disabled class balance.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ._common import AlEvalError
from .divergence import empirical_jsd

#: Class balance is activated when ``round(std(w) / mean(w), 1)`` exceeds this.
BALANCE_CV = 1.3
#: Percentile of the class proportions below which balanced weights are zeroed, and of ``T`` for ``beta``.
PERCENTILE = 25
RATIO_WEIGHT = 0.25
M_OFFSET = 0.5

JsdFn = Callable[[np.ndarray, np.ndarray], float]


@dataclass
class SimilarityResult:
    """Output of :func:`set_similarity` (``C`` classes in the given order, ``S`` candidates).

    similarity ``[S]``; m, jsd, ratio, counts ``[C, S]``; reference_counts, proportions, weights ``[C]``;
    size_factor ``[S]`` int; total ``[S]`` crops per candidate (``T``); class_balance: whether the
    class-balanced weights were used; classes: the class ids of the rows.
    """

    similarity: np.ndarray
    m: np.ndarray
    jsd: np.ndarray
    ratio: np.ndarray
    weights: np.ndarray
    class_balance: bool
    size_factor: np.ndarray
    counts: np.ndarray
    reference_counts: np.ndarray
    total: np.ndarray
    proportions: np.ndarray
    classes: tuple[int, ...]

    def order(self) -> np.ndarray:
        """Candidate indices from most to least similar (``[S]``, NaN last)."""
        return np.argsort(-np.nan_to_num(self.similarity, nan=-np.inf), kind="stable")


def _rows(features: Mapping[int, np.ndarray], c: int) -> np.ndarray:
    arr = features.get(c)
    return np.zeros((0, 3)) if arr is None else np.asarray(arr, dtype=np.float64)


def class_weights(proportions: np.ndarray) -> tuple[np.ndarray, bool]:
    """Class weights and the class-balance flag from class proportions.

    Args:
      proportions: ``[C]`` mean share of each class among the candidates' crops (fractions).
    Returns:
      ``(weights [C], class_balance)`` per the module rule; classes with proportion 0 weigh 0.
    """
    pi = np.asarray(proportions, dtype=np.float64)
    present = pi > 0
    weights = present.astype(np.float64)
    if not present.any():
        return weights, False
    inv = 1.0 / pi[present]
    balance = bool(np.round(inv.std() / inv.mean(), 1) > BALANCE_CV)
    if balance:
        keep = pi[present] >= np.percentile(pi[present], PERCENTILE)
        weights[present] = np.where(keep, inv, 0.0)
    return weights, balance


def size_factors(total: np.ndarray) -> np.ndarray:
    """``beta_s = max(1, int(T_s / P25(T)))`` for crop totals ``T`` ``[S]`` (all > 0); int64 ``[S]``."""
    total = np.asarray(total, dtype=np.float64)
    # int() truncates toward zero; the ratio is positive, so floor is the same
    return np.maximum(1, np.floor(total / np.percentile(total, PERCENTILE))).astype(np.int64)


def set_similarity(
    candidates: Sequence[Mapping[int, np.ndarray]],
    reference: Mapping[int, np.ndarray],
    classes: Sequence[int],
    num_samples: int = 10000,
    seed: int = 42,
    jsd_fn: JsdFn | None = None,
) -> SimilarityResult:
    """Similarity of each candidate set to the reference set (module rule, reference §4.4).

    Args:
      candidates: ``S`` dicts ``{class_id: [N, 3] crop features}`` (:func:`.features.manifest_features`);
        a missing class means no crops.
      reference: the reference set's dict.
      classes: the ``C`` class ids to compare.
      num_samples, seed: passed to :func:`.divergence.empirical_jsd`.
      jsd_fn: ``(candidate [n, 3], reference [m, 3]) -> float`` replacing ``empirical_jsd`` (tests); the
        only expensive step, called once per class and candidate that has crops of the class.
    Returns:
      :class:`SimilarityResult`.
    """
    classes = tuple(int(c) for c in classes)
    if not classes:
        raise AlEvalError("classes is empty; give the class ids to compare")
    if not candidates:
        raise AlEvalError("no candidate sets given")
    if jsd_fn is None:
        jsd_fn = functools.partial(empirical_jsd, num_samples=num_samples, seed=seed)
    C, S = len(classes), len(candidates)
    counts = np.array([[len(_rows(cand, c)) for cand in candidates] for c in classes], dtype=np.int64).reshape(C, S)
    ref_counts = np.array([len(_rows(reference, c)) for c in classes], dtype=np.int64)
    total = counts.sum(axis=0)
    empty = np.flatnonzero(total == 0)
    if empty.size:
        raise AlEvalError(f"candidate sets {empty.tolist()} have no crops of classes {list(classes)}; "
                          f"they cannot be compared (check the class ids and the sets' annotations)")

    from tqdm.auto import tqdm

    has = counts > 0
    jsd = np.full((C, S), np.nan)
    pairs = list(zip(*np.nonzero(has)))
    for ci, si in tqdm(pairs, desc="set similarity", unit="jsd", disable=None):
        jsd[ci, si] = jsd_fn(_rows(candidates[si], classes[ci]), _rows(reference, classes[ci]))
    ratio = np.full((C, S), np.nan)
    ratio[has] = (ref_counts[:, None] / np.where(has, counts, 1))[has]

    proportions = (counts / total).mean(axis=1)
    weights, balance = class_weights(proportions)
    beta = size_factors(total)
    m = jsd + RATIO_WEIGHT * ratio * beta + M_OFFSET
    m[np.isinf(m)] = np.nan
    similarity = np.nansum(weights[:, None] / m, axis=0) / weights.sum()
    return SimilarityResult(
        similarity=similarity, m=m, jsd=jsd, ratio=ratio, weights=weights, class_balance=balance,
        size_factor=beta, counts=counts, reference_counts=ref_counts, total=total,
        proportions=proportions, classes=classes,
    )
