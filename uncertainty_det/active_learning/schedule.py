"""The active-learning budget schedule: images added per round (reference §3.2)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .strategy import StrategyError

DEFAULT_BUDGET = (5, 5, 5, 10, 20, 30, 25)


def round_sizes(pool_size: int, budget: Sequence[float] = DEFAULT_BUDGET) -> np.ndarray:
    """``[R]`` images added in each round: ``int(N * b_i / 100)``, the last round the remainder ``N - sum``.

    budget: percentages of the pool per round (positive, summing to <= 100 + 1e-6; the reference's default
    5,5,5,10,20,30,25 labels 5, 10, 15, 25, 45, 75, 100 % cumulatively). With a sum below 100 the last
    round still takes the rest of the pool (the 100 % upper bound), as the reference.
    """
    b = np.asarray(list(budget), dtype=np.float64)
    n = int(pool_size)
    if b.size == 0 or np.any(~np.isfinite(b)) or np.any(b <= 0):
        raise StrategyError(f"budget must be a non-empty list of positive percentages, got {list(budget)}")
    if b.sum() > 100.0 + 1e-6:
        raise StrategyError(f"budget {list(budget)} sums to {b.sum():g} % of the pool (> 100)")
    if n < b.size:
        raise StrategyError(f"a pool of {n} images cannot fill {b.size} rounds; use a larger pool or fewer rounds")
    sizes = (n * b / 100.0).astype(np.int64)
    sizes[-1] = n - sizes[:-1].sum()
    if np.any(sizes <= 0):
        raise StrategyError(f"budget {list(budget)} gives an empty round on a pool of {n} images: {sizes.tolist()}")
    return sizes


def cumulative_fractions(sizes: np.ndarray, pool_size: int) -> np.ndarray:
    """``[R]`` labeled share of the pool after each round."""
    return np.cumsum(np.asarray(sizes, dtype=np.float64)) / float(pool_size)
