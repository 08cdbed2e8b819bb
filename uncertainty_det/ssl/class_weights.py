"""Class-distribution weights and the rare/common curriculum (reference §5.3 and the RCF part of §5.4).

* :func:`log_class_weights` — ``w_c`` from the GT object count ``n_c`` of each class in the labeled set:
  ``x_c = 1 / ln(n_c)`` (``n_c > 1``), min-max scaled to ``[lowest, highest]``; rare classes weigh more.
* :func:`image_class_scores` — the mean class weight of each image's objects (the ``imscore`` image
  weight, and the RCF ranking score).
* :func:`rare_common_split` — the ``n // batch_size`` highest-scoring images are "rare", the rest "common".
* :class:`RareCommonSampler` — batches of ``batch_size - 1`` common + 1 rare image (+ ``extra_rare`` rare
  images that the trainer augments strongly, the reference's ``aug`` option), so every batch holds a
  rare-class image.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import UserError
from .split import as_id_array


class ClassWeightError(UserError, ValueError):
    """Bad class counts/weights or rare/common input; the message names the bad argument and the fix."""


def _finite(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ClassWeightError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _count_table(counts: Mapping[int, int] | Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(class_ids [K] int64, counts [K] int64)`` from a mapping or a 1-D array (position i = class id i+1)."""
    if isinstance(counts, Mapping):
        ids = np.asarray(list(counts.keys()))
        n = np.asarray(list(counts.values()))
    else:
        n = np.asarray(counts)
        if n.ndim != 1:
            raise ClassWeightError(f"counts must be a mapping class id -> count or a 1-D array, got shape {n.shape}")
        ids = np.arange(1, n.size + 1)
    if n.size == 0:
        raise ClassWeightError("counts is empty; pass the GT object count of every class of the labeled set")
    for name, arr in (("class ids", ids), ("counts", n)):
        integral = arr.dtype.kind in "iu" or (
            arr.dtype.kind == "f" and bool(np.all(np.isfinite(arr))) and bool(np.all(arr == np.round(arr))))
        if not integral:
            raise ClassWeightError(f"{name} of counts must be integers, got {arr.tolist()[:5]}")
    ids, n = ids.astype(np.int64), n.astype(np.int64)
    if np.any(n < 0):
        raise ClassWeightError(f"counts must be >= 0, got {n.tolist()}")
    if np.any(ids < 1):
        raise ClassWeightError(f"class ids must be 1-based (>= 1), got {ids.tolist()}")
    return ids, n


def log_class_weights(counts: Mapping[int, int] | Sequence[int] | np.ndarray, lowest: float = 1.0,
                      highest: float = 10.0) -> dict[int, float]:
    """Per-class loss weight from the GT object counts of the labeled set (reference §5.3).

    counts: ``{class_id: n_c}`` (1-based ids), or a 1-D array ``[K]`` whose position ``i`` is the count of
    class id ``i + 1`` (not a ``np.bincount`` with a background slot 0); lowest, highest: the weight
    range, ``0 <= lowest <= highest``.

    For classes with ``n_c > 1``: ``x_c = 1 / ln(n_c)``, ``w_c = lowest + (x_c - min x)(highest -
    lowest)/(max x - min x)`` (the rarest such class gets ``highest``, the most frequent ``lowest``).
    Classes with ``n_c <= 1`` get ``highest``. When all classes with ``n_c > 1`` have the same count (the
    reference divided by zero), they get ``lowest``: none of them is rarer than another, and
    ``highest`` stays reserved for the classes with at most one object. Weights are rounded to 5
    decimals like the reference. Returns ``{class_id: w_c}`` in class-id order.
    """
    lo, hi = _finite("lowest", lowest), _finite("highest", highest)
    if not 0.0 <= lo <= hi:
        raise ClassWeightError(f"need 0 <= lowest <= highest, got lowest={lowest!r}, highest={highest!r}")
    ids, n = _count_table(counts)
    if np.unique(ids).size != ids.size:
        raise ClassWeightError(f"class ids of counts repeat: {ids.tolist()}")
    many = n > 1
    w = np.full(n.size, hi)
    if many.any():
        x = 1.0 / np.log(n[many].astype(np.float64))
        span = x.max() - x.min()
        w[many] = lo + (x - x.min()) * (hi - lo) / span if span > 0 else lo
    order = np.argsort(ids)
    return {int(ids[i]): round(float(w[i]), 5) for i in order}


def image_class_scores(image_ids: Sequence[int] | np.ndarray, object_image_ids: Sequence[int] | np.ndarray,
                       object_class_ids: Sequence[int] | np.ndarray, weights: Mapping[int, float],
                       empty: float | None = None) -> np.ndarray:
    """``[N]`` mean class weight of the objects of each image (``image_ids`` order).

    image_ids: ``[N]`` distinct image ids; object_image_ids, object_class_ids: ``[M]`` image id and 1-based
    class id of each GT object (objects of images not in ``image_ids`` are ignored, so a whole annotation
    table can be passed); weights: ``{class_id: w_c}`` (e.g. :func:`log_class_weights`), covering every
    class of the counted objects; empty: score of images without objects, default the smallest weight
    (an image without objects shows no rare class).
    """
    ids = as_id_array(image_ids, "image_ids", ClassWeightError)
    obj_img = as_id_array(object_image_ids, "object_image_ids", ClassWeightError, unique=False)
    obj_cls = as_id_array(object_class_ids, "object_class_ids", ClassWeightError, unique=False)
    if obj_img.size != obj_cls.size:
        raise ClassWeightError(f"object_image_ids has {obj_img.size} entries but object_class_ids {obj_cls.size}; "
                               f"pass one image id and one class id per object")
    if not isinstance(weights, Mapping) or not weights:
        raise ClassWeightError("weights must be a non-empty mapping class id -> weight (see log_class_weights)")
    w_ids = np.asarray(sorted(int(c) for c in weights), dtype=np.int64)
    w_val = np.asarray([_finite(f"weight of class {c}", weights[c]) for c in w_ids.tolist()])
    fill = float(w_val.min()) if empty is None else _finite("empty", empty)
    pos = pd.Index(ids).get_indexer(obj_img)
    inside = pos >= 0
    cls = obj_cls[inside]
    at = np.minimum(np.searchsorted(w_ids, cls), w_ids.size - 1)
    unknown = w_ids[at] != cls
    if unknown.any():
        raise ClassWeightError(f"objects of class ids {np.unique(cls[unknown])[:5].tolist()} have no weight; "
                               f"count every class of the labeled set in log_class_weights")
    sums = np.bincount(pos[inside], weights=w_val[at], minlength=ids.size)
    num = np.bincount(pos[inside], minlength=ids.size)
    return np.where(num > 0, sums / np.maximum(num, 1), fill)


def rare_common_split(image_ids: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray,
                      batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(rare, common)`` int64 id arrays of the RCF curriculum (reference §5.4).

    image_ids: ``[N]`` distinct labeled image ids (``N >= 1``); scores: ``[N]`` image scores
    (:func:`image_class_scores`, higher = rarer classes); batch_size: images per batch (>= 1).
    The ``k = max(1, N // batch_size)`` highest-scoring images (one per batch of an epoch) are rare; equal
    scores are taken in input order. Both outputs keep the input order.
    """
    ids = as_id_array(image_ids, "image_ids", ClassWeightError)
    s = np.asarray(scores, dtype=np.float64) if np.asarray(scores).dtype.kind in "iuf" else None
    if s is None or s.shape != ids.shape:
        raise ClassWeightError(f"scores must be {ids.size} numbers, one per image id, got {np.asarray(scores).shape}")
    if not np.all(np.isfinite(s)):
        raise ClassWeightError("scores contain NaN/inf; compute them with image_class_scores")
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or int(batch_size) < 1:
        raise ClassWeightError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if ids.size == 0:
        raise ClassWeightError("image_ids is empty; the curriculum needs the labeled images")
    k = max(1, ids.size // int(batch_size))
    rare = np.zeros(ids.size, dtype=bool)
    rare[np.argsort(-s, kind="stable")[:k]] = True
    return ids[rare], ids[~rare]


class RareCommonSampler:
    """Batches of the rare/common curriculum (reference §5.4 RCF).

    Each batch is ``[batch_size - 1 common | 1 rare | extra_rare rare]`` (width ``batch_size +
    extra_rare``). Common images are drawn without replacement within an epoch from a fresh shuffle;
    when an epoch needs more than there are, they are reshuffled and recycled. Rare images cycle
    through a fresh shuffle the same way. An image can repeat within one batch only where a reshuffle
    falls inside it (or when there are fewer distinct images than slots).

    rare, common: disjoint, non-empty id arrays (:func:`rare_common_split`); batch_size: >= 2;
    seed: non-negative int; extra_rare: >= 0 extra rare slots per batch (2 for the reference's ``aug``).
    Epoch ``e`` draws from ``np.random.default_rng([seed, e])``, so epochs are reproducible and
    resumable (:meth:`epoch` with ``index``).
    """

    def __init__(self, rare: Sequence[int] | np.ndarray, common: Sequence[int] | np.ndarray, batch_size: int,
                 seed: int = 0, extra_rare: int = 0):
        self.rare = as_id_array(rare, "rare", ClassWeightError)
        self.common = as_id_array(common, "common", ClassWeightError)
        if self.rare.size == 0 or self.common.size == 0:
            raise ClassWeightError(f"the curriculum needs rare and common images, got {self.rare.size} rare and "
                                   f"{self.common.size} common; use more labeled images or turn the curriculum off")
        both = np.intersect1d(self.rare, self.common)
        if both.size:
            raise ClassWeightError(f"images {both[:5].tolist()} are both rare and common; build the sets with "
                                   f"rare_common_split")
        for name, value, minimum in (("batch_size", batch_size, 2), ("seed", seed, 0), ("extra_rare", extra_rare, 0)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
                raise ClassWeightError(f"{name} must be an integer >= {minimum}, got {value!r}")
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.extra_rare = int(extra_rare)
        self.epochs_drawn = 0

    @property
    def width(self) -> int:
        """Images per batch: ``batch_size + extra_rare``."""
        return self.batch_size + self.extra_rare

    def steps_for_coverage(self) -> int:
        """Fewest steps whose epoch shows every common and every rare image at least once."""
        per_rare = 1 + self.extra_rare
        return max(-(-self.common.size // (self.batch_size - 1)), -(-self.rare.size // per_rare))

    @staticmethod
    def _stream(ids: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
        reps = -(-total // ids.size)
        return rng.permuted(np.tile(ids, (reps, 1)), axis=1).reshape(-1)[:total]

    def epoch(self, steps: int, index: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One epoch of ``steps`` batches: ``(ids [steps, width] int64, extra [steps, width] bool)``.

        ids: per row ``batch_size - 1`` common ids, then 1 rare id, then ``extra_rare`` rare ids;
        extra: True at the ``extra_rare`` slots the trainer augments strongly. index: the epoch number
        (reproducible draw); ``None`` takes the next one (0, 1, ... per call).
        """
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or int(steps) < 1:
            raise ClassWeightError(f"steps must be an integer >= 1, got {steps!r}")
        if index is None:
            index = self.epochs_drawn
            self.epochs_drawn += 1
        elif isinstance(index, bool) or not isinstance(index, numbers.Integral) or int(index) < 0:
            raise ClassWeightError(f"epoch index must be an integer >= 0, got {index!r}")
        steps = int(steps)
        rng = np.random.default_rng([self.seed, int(index)])
        n_c = self.batch_size - 1
        n_r = 1 + self.extra_rare
        common = self._stream(self.common, steps * n_c, rng).reshape(steps, n_c)
        rare = self._stream(self.rare, steps * n_r, rng).reshape(steps, n_r)
        ids = np.concatenate([common, rare], axis=1)
        extra = np.zeros(ids.shape, dtype=bool)
        extra[:, self.batch_size:] = True
        return ids, extra
