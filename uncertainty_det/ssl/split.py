"""Labeled / unlabeled split of a training pool for semi-supervised learning (reference §5.1 step 1).

The reference labels the *first* ``int(p/100 · N)`` pool images in sorted order; DESIGN §10 makes the split
random and seeded instead, and keeps the prefix rule as ``method="prefix"`` to reproduce the paper. The
unlabeled images keep their ids only: their labels are never read by the SSL stages.
"""
from __future__ import annotations

import math
import numbers
from typing import Sequence

import numpy as np

from ..errors import UserError

METHODS = ("random", "prefix")


class SplitError(UserError, ValueError):
    """A labeled/unlabeled split that cannot be made; the message names the bad argument and the fix."""


def as_id_array(values: Sequence[int] | np.ndarray, name: str, error: type[UserError] = SplitError,
                unique: bool = True) -> np.ndarray:
    """``values`` as a 1-D int64 array of image ids (``[N]``), validated.

    Integer-valued floats are accepted; NaN, fractions, strings, booleans and >1-D input raise ``error``
    naming ``name``. With ``unique`` a repeated id raises too (a split or a sampler of repeated ids would
    not be disjoint).
    """
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise error(f"{name} must be a 1-D sequence of image ids, got an array of shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise error(f"{name} must hold integer image ids; it has NaN/inf or fractional values")
    elif arr.dtype.kind not in "iu":
        raise error(f"{name} must hold integer image ids, got dtype {arr.dtype}; pass the 'image_id' values")
    out = arr.astype(np.int64)
    if unique:
        vals, counts = np.unique(out, return_counts=True)
        if np.any(counts > 1):
            dup = vals[counts > 1][:5].tolist()
            raise error(f"{name} has repeated image ids {dup}; pass each image once")
    return out


def num_labeled_images(n_pool: int, percent: float) -> int:
    """Number of labeled images for ``percent`` (in (0, 100]) of a pool of ``n_pool`` images.

    ``floor(percent / 100 · n_pool)`` (computed as ``percent · n_pool / 100`` with a 1e-9 relative
    tolerance, so that e.g. 29 % of 100 is 29 and not 28 from float rounding), at least 1.
    """
    exact = float(percent) * int(n_pool) / 100.0
    return max(1, int(math.floor(exact * (1.0 + 1e-9))))


def split_labeled(image_ids: Sequence[int] | np.ndarray, percent: float, seed: int = 0,
                  method: str = "random") -> tuple[np.ndarray, np.ndarray]:
    """Split a pool of image ids into ``(labeled, unlabeled)`` int64 arrays.

    image_ids: ``[N]`` distinct pool image ids, ``N >= 1``; percent: share of the pool to label, in
    (0, 100] (percent, not a fraction); seed: non-negative int for ``np.random.default_rng``.
    ``num_labeled = floor(percent/100 · N)``, at least 1 (:func:`num_labeled_images`).

    method ``"random"``: a seeded uniform choice of ``num_labeled`` images; ``"prefix"``: the first
    ``num_labeled`` ids in the given order (the reference). Both outputs keep the input order and
    together are a partition of ``image_ids``. ``percent == 100`` gives an empty unlabeled array; any
    other percent that would leave no unlabeled image raises :class:`SplitError`.
    """
    if method not in METHODS:
        raise SplitError(f"unknown split method {method!r}; choose one of {list(METHODS)}")
    if isinstance(percent, bool) or not isinstance(percent, numbers.Real) or not math.isfinite(float(percent)):
        raise SplitError(f"percent must be a number in (0, 100], got {percent!r}")
    if not 0.0 < float(percent) <= 100.0:
        raise SplitError(f"percent must be in (0, 100] (a percentage of the pool, e.g. 10 for 10 %), got {percent!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or int(seed) < 0:
        raise SplitError(f"seed must be a non-negative integer, got {seed!r}")
    ids = as_id_array(image_ids, "image_ids")
    n = ids.size
    if n == 0:
        raise SplitError("the pool image_ids is empty; nothing to split (check the dataset split)")
    if float(percent) == 100.0:
        return ids.copy(), np.zeros(0, dtype=np.int64)
    k = num_labeled_images(n, percent)
    if k >= n:
        raise SplitError(f"percent={percent} of a pool of {n} images labels all {n} of them and leaves no unlabeled "
                         f"image; use a lower percent, a larger pool, or percent=100 for a fully labeled run")
    if method == "prefix":
        mask = np.zeros(n, dtype=bool)
        mask[:k] = True
    else:
        chosen = np.random.default_rng(int(seed)).choice(n, size=k, replace=False)
        mask = np.zeros(n, dtype=bool)
        mask[chosen] = True
    return ids[mask], ids[~mask]
