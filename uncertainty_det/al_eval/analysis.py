"""Agreement between similarity and performance rankings, and the evaluation-reliability study (reference §4.5).

Rankings use :func:`scipy.stats.rankdata` (rank 1 = best; ties share the average rank); Kendall's tau is
``scipy.stats.kendalltau`` (tau-b) between two rank vectors. Pairs with a NaN on either side are dropped;
fewer than 2 remaining pairs give NaN.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ._common import AlEvalError, as_vector, finite_pairs, pearson


def _kendall(rank_a: np.ndarray, rank_b: np.ndarray) -> tuple[float, float]:
    a, b = finite_pairs(rank_a, rank_b)
    if a.size < 2:
        return float("nan"), float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.kendalltau(a, b)
    return float(res.statistic), float(res.pvalue)


def _rank(x: np.ndarray, descending: bool = True) -> np.ndarray:
    """Ranks with 1 = largest (``descending``) or smallest value; NaN stays NaN."""
    ranks = np.full(x.shape, np.nan)
    ok = np.isfinite(x)
    ranks[ok] = stats.rankdata(-x[ok] if descending else x[ok])
    return ranks


def rank_agreement(similarity: np.ndarray, performance: np.ndarray) -> dict:
    """Agreement of the similarity ranking with the performance ranking of ``S`` sets.

    Args:
      similarity: ``[S]`` set similarity (higher = more similar).
      performance: ``[S]`` mAP (any unit) of the model trained on each set.
    Returns:
      ``{"kendall_tau", "kendall_p"}``: tau between the ranking by similarity (descending) and by
      performance (descending); ``{"pearson_r", "pearson_p"}``: Pearson correlation of similarity vs
      performance; ``"n"``: the number of sets with both values finite.
    """
    sim = as_vector(similarity, "similarity")
    perf = as_vector(performance, "performance")
    if sim.shape != perf.shape:
        raise AlEvalError(f"similarity {sim.shape} and performance {perf.shape} must have the same length")
    tau, tau_p = _kendall(_rank(sim), _rank(perf))
    r, r_p = pearson(sim, perf)
    n = int((np.isfinite(sim) & np.isfinite(perf)).sum())
    return {"kendall_tau": tau, "kendall_p": tau_p, "pearson_r": r, "pearson_p": r_p, "n": n}


def per_class_agreement(m: np.ndarray, ap: np.ndarray, class_names: Sequence[str]) -> pd.DataFrame:
    """Per-class agreement of the dissimilarity ``m`` with per-class AP.

    Args:
      m: ``[C, S]`` combined dissimilarity per class and set (:attr:`.similarity.SimilarityResult.m`).
      ap: ``[S, C]`` per-class AP of each set's model (any unit).
      class_names: ``C`` names.
    Returns:
      DataFrame indexed by class name plus a final ``"mean"`` row (NaN-skipping mean over classes),
      columns ``kendall_tau, kendall_p`` (ranks by ascending ``m`` vs by descending AP: +1 when the least
      dissimilar set has the best AP), ``pearson_r, pearson_p`` (AP vs ``1 / m``) and ``n_sets``.
    """
    m = np.asarray(m, dtype=np.float64)
    ap = np.asarray(ap, dtype=np.float64)
    names = list(class_names)
    if m.ndim != 2 or ap.shape != m.T.shape or len(names) != m.shape[0]:
        raise AlEvalError(f"m must be [C, S], ap [S, C] and class_names C long; got m {m.shape}, "
                          f"ap {ap.shape}, {len(names)} names")
    rows = []
    for c in range(m.shape[0]):
        tau, tau_p = _kendall(_rank(m[c], descending=False), _rank(ap[:, c]))
        with np.errstate(divide="ignore"):
            inv = 1.0 / m[c]
        r, r_p = pearson(ap[:, c], inv)
        n = int((np.isfinite(m[c]) & np.isfinite(ap[:, c])).sum())
        rows.append({"kendall_tau": tau, "kendall_p": tau_p, "pearson_r": r, "pearson_p": r_p, "n_sets": n})
    table = pd.DataFrame(rows, index=pd.Index(names, name="class"))
    mean = table.mean(axis=0, skipna=True)
    mean["n_sets"] = np.nan
    table.loc["mean"] = mean
    return table


def subset_boundaries(n_images: int, split_factor: int = 10) -> np.ndarray:
    """Chunk boundaries of the reference: ``arange(0, L, int(L / split_factor))``, then the last
    boundary is set to ``L`` if ``|last - L| <= 10``, else ``L`` is appended.

    Note the rule's consequences: ``L = 100, split_factor = 10`` gives 9 chunks (the boundary 90 is
    snapped to 100), and a remainder above 10 (only possible for ``split_factor > 10``) adds a short chunk.
    Returns int64 ``[B]`` with ``B - 1`` chunks.
    """
    if split_factor < 1 or n_images < split_factor:
        raise AlEvalError(f"need 1 <= split_factor <= n_images, got split_factor={split_factor}, "
                          f"n_images={n_images}")
    bounds = np.arange(0, n_images, int(n_images / split_factor))
    if abs(bounds[-1] - n_images) <= 10 and bounds.size > 1:
        bounds[-1] = n_images
    else:
        bounds = np.append(bounds, n_images)
    return bounds


def random_subsets(n_images: int, split_factor: int = 10, seeds: Iterable[int] = range(1, 11)) -> list[np.ndarray]:
    """Random evaluation subsets: per seed, a permutation of ``0..L-1`` cut at :func:`subset_boundaries`.

    The permutation is ``numpy.random.RandomState(seed).permutation(L)`` (what the reference's
    ``np.random.seed(seed); np.random.permutation(L)`` draws, without touching global state).
    Returns a list of int64 index arrays (positions into the reference set's image list), seed-major then
    chunk order: 100 subsets for 10 seeds and ``split_factor=10`` when ``L > 100``.
    """
    bounds = subset_boundaries(n_images, split_factor)
    subsets = []
    for seed in seeds:
        perm = np.random.RandomState(seed).permutation(n_images)
        subsets.extend(perm[a:b] for a, b in zip(bounds[:-1], bounds[1:]))
    return subsets


def reliability(
    subset_perf: np.ndarray,
    val_perf: np.ndarray,
    ref_perf: np.ndarray,
    subset_similarity: np.ndarray,
    val_similarity: float,
) -> dict:
    """How well each evaluation set ranks ``S`` methods like the reference (test) set.

    Args:
      subset_perf: ``[K, S]`` performance of each method on each of ``K`` subsets.
      val_perf: ``[S]`` performance on the full validation set.
      ref_perf: ``[S]`` performance on the reference set.
      subset_similarity: ``[K]`` similarity of each subset to the reference (:func:`.set_similarity`).
      val_similarity: similarity of the full validation set (NaN if unknown).
    Returns:
      ``tau``, ``tau_p`` ``[K]``: Kendall tau of each subset's method ranking vs the reference ranking
      (both by descending performance); ``val_tau``, ``val_tau_p``; ``top_s``: index of the most similar
      subset, with ``top_s_tau``, ``top_s_similarity`` and ``top_s_beats_val`` (``top_s_tau > val_tau``);
      ``best_tau_index``/``best_tau``: the subset ranking methods most like the reference;
      ``pearson_r``/``pearson_p``: Pearson correlation of tau vs similarity over the ``K`` subsets and the
      validation set together (the reference's saved ``[tau, sim]`` points); ``perf``: the method
      performances ``{"ref", "val", "top_s", "best_tau"}`` (``[S]`` each).
    """
    sub = np.asarray(subset_perf, dtype=np.float64)
    val = as_vector(val_perf, "val_perf")
    ref = as_vector(ref_perf, "ref_perf")
    sim = as_vector(subset_similarity, "subset_similarity")
    if sub.ndim != 2 or sub.shape[1] != ref.size or val.size != ref.size or sim.size != sub.shape[0]:
        raise AlEvalError(f"expected subset_perf [K, S], val_perf/ref_perf [S], subset_similarity [K]; got "
                          f"{sub.shape}, {val.shape}, {ref.shape}, {sim.shape}")
    if sub.shape[0] == 0 or np.isnan(sim).all():
        raise AlEvalError("no subset with a finite similarity")
    ref_rank = _rank(ref)
    taus = np.array([_kendall(_rank(row), ref_rank) for row in sub]).reshape(-1, 2)
    val_tau, val_tau_p = _kendall(_rank(val), ref_rank)
    top = int(np.nanargmax(sim))
    best = int(np.nanargmax(taus[:, 0])) if np.isfinite(taus[:, 0]).any() else -1
    r, r_p = pearson(np.append(taus[:, 0], val_tau), np.append(sim, float(val_similarity)))
    return {
        "tau": taus[:, 0], "tau_p": taus[:, 1],
        "val_tau": val_tau, "val_tau_p": val_tau_p,
        "top_s": top, "top_s_tau": float(taus[top, 0]), "top_s_similarity": float(sim[top]),
        "top_s_beats_val": bool(taus[top, 0] > val_tau),
        "best_tau_index": best, "best_tau": float(taus[best, 0]) if best >= 0 else float("nan"),
        "pearson_r": r, "pearson_p": r_p,
        "perf": {"ref": ref, "val": val, "top_s": sub[top], "best_tau": sub[best] if best >= 0 else None},
    }
