"""Selecting k images of the unlabeled pool from their scores (reference §3.4.4)."""
from __future__ import annotations

import numpy as np

from .strategy import SELECTIONS, StrategyError

NEE_BINS = 5


def _check_k(k: int, n: int) -> int:
    k = int(k)
    if k < 0:
        raise StrategyError(f"cannot select {k} images")
    return min(k, n)


def select_topk(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` highest scores: ascending stable sort, the last ``k`` (ties: later positions)."""
    scores = np.asarray(scores, dtype=np.float64)
    k = _check_k(k, scores.size)
    return np.argsort(scores, kind="stable")[scores.size - k:] if k else np.zeros(0, dtype=np.int64)


def select_bottomk(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` lowest scores: ascending stable sort, the first ``k``."""
    scores = np.asarray(scores, dtype=np.float64)
    k = _check_k(k, scores.size)
    return np.argsort(scores, kind="stable")[:k]


def select_nee(scores: np.ndarray, k: int, bins: int = NEE_BINS) -> np.ndarray:
    """Binned exploration/exploitation (Roy et al. 2018, reference §3.4.4).

    Sort ascending (stable), split the sorted positions into ``bins`` near-equal bins (``np.array_split``);
    from each of the lower ``bins - 1`` bins take its ``k // bins`` highest-scored images, from the top bin
    its ``k // bins + k % bins`` *lowest*-scored ones. A bin smaller than its quota gives what it has.
    """
    scores = np.asarray(scores, dtype=np.float64)
    k = _check_k(k, scores.size)
    order = np.argsort(scores, kind="stable")
    parts = np.array_split(order, bins)
    q, rem = divmod(k, bins)
    picked = [part[part.size - min(q, part.size):] if q else part[:0] for part in parts[:-1]]
    picked.append(parts[-1][: q + rem])
    return np.concatenate(picked).astype(np.int64)


def select_random(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` positions of ``n`` uniformly at random without replacement (seeded ``rng``)."""
    k = _check_k(k, int(n))
    return np.sort(rng.choice(int(n), size=k, replace=False)).astype(np.int64)


def select(scores: np.ndarray, k: int, method: str = "topk") -> np.ndarray:
    """Positions into ``scores`` of the ``k`` images chosen by ``method`` (``topk``, ``bottomk``, ``nee``)."""
    if method == "topk":
        return select_topk(scores, k)
    if method == "bottomk":
        return select_bottomk(scores, k)
    if method == "nee":
        return select_nee(scores, k)
    raise StrategyError(f"select={method!r} is not one of {list(SELECTIONS)}")
