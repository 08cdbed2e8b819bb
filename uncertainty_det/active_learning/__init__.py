"""Active learning (DESIGN §10, reference §3): typed strategies, pool scoring, selection, the budget schedule
and pool pruning. NumPy/pandas/PIL only (no TensorFlow, Hydra or MLflow); the loop is the ``al_loop`` app.

* :mod:`.strategy` — :class:`Strategy` and the reference's stacked names;
* :mod:`.scoring` — per-detection values, per-image aggregation, combinations, class balance;
* :mod:`.selection` — top-k, bottom-k, nee, random;
* :mod:`.schedule` — images per round;
* :mod:`.pruning` — perceptual-hash and random pool pruning, budget rescaling.
"""
from __future__ import annotations

from .pruning import PruneResult, PruningError, hash_prune, prune_pool, random_prune, rescale_budget
from .schedule import DEFAULT_BUDGET, cumulative_fractions, round_sizes
from .scoring import COMPONENTS, class_balance_weights, detection_values, image_scores, minmax, zscore
from .selection import select, select_bottomk, select_nee, select_random, select_topk
from .strategy import Strategy, StrategyError, parse_strategy_name, strategy_from_config

__all__ = [
    "COMPONENTS", "DEFAULT_BUDGET", "PruneResult", "PruningError", "Strategy", "StrategyError", "class_balance_weights", "cumulative_fractions",
    "detection_values", "hash_prune", "image_scores", "minmax", "parse_strategy_name", "prune_pool", "random_prune",
    "rescale_budget", "round_sizes", "select",
    "select_bottomk", "select_nee", "select_random", "select_topk", "strategy_from_config", "zscore",
]
