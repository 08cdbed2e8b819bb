"""Batch composition of semi-supervised training: STAC (reference §5.1) and CSD (reference §5.9).

Every batch is ``[labeled | pseudo-labeled or unlabeled]`` along the batch axis, the labeled part first.

STAC: with ``n_L`` labeled and ``n_U`` pseudo-labeled images, ``N = n_L + n_U`` and batch size ``B``:
``L = ceil(B·n_L/N)`` and ``U = floor(B·n_U/N)`` (so ``L + U = B``); if ``L == 0`` (or ``L < 2`` with the
rare/common curriculum, which needs one common and one rare labeled slot) one slot moves from the pseudo to
the labeled part; then if ``U == 0`` one slot moves back. Steps per epoch are
``ceil(max(N/B, n_L/L, n_U/U))``: one epoch shows every labeled and every pseudo-labeled image at least
once (the reference meant this but its labeled branch replaced the step count instead of adding to it).
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

from ..errors import UserError


class BatchCompositionError(UserError, ValueError):
    """A batch composition that cannot be built; the message names the bad argument and the fix."""


@dataclass(frozen=True)
class BatchComposition:
    """Images per batch from each stream and steps per epoch.

    labeled_per_batch: labeled images at the start of each batch; pseudo_per_batch: pseudo-labeled (STAC)
    or unlabeled (CSD) images after them; steps_per_epoch: batches per epoch, ``None`` when not
    determined (CSD without a pool size).
    """

    labeled_per_batch: int
    pseudo_per_batch: int
    steps_per_epoch: int | None

    @property
    def batch_size(self) -> int:
        """Total images per batch (``labeled_per_batch + pseudo_per_batch``)."""
        return self.labeled_per_batch + self.pseudo_per_batch


def _int(name: str, value: Any, minimum: int, fix: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        raise BatchCompositionError(f"{name} must be an integer >= {minimum}, got {value!r}{fix}")
    return int(value)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def stac_batch_composition(n_labeled: int, n_pseudo: int, batch_size: int, curriculum: bool = False,
                           ) -> BatchComposition:
    """STAC batch composition (module docstring) for ``n_labeled`` labeled and ``n_pseudo`` pseudo-labeled
    images (counts of images, both >= 1) and ``batch_size`` (>= 2) images per step.

    curriculum: the labeled part is drawn as ``L - 1`` common + 1 rare image (RCF), so ``L >= 2`` is
    required. Raises :class:`BatchCompositionError` when no valid composition exists.
    """
    n_l = _int("n_labeled", n_labeled, 1, " (the number of labeled images)")
    n_u = _int("n_pseudo", n_pseudo, 1, " (the number of pseudo-labeled images; with 0, no pseudo-label passed the "
               "selection: lower tau or check the teacher)")
    b = _int("batch_size", batch_size, 2)
    n = n_l + n_u
    big_l = _ceil_div(b * n_l, n)
    big_u = (b * n_u) // n
    if big_l == 0 or (curriculum and big_l < 2):
        big_u, big_l = big_u - 1, big_l + 1
    if big_u == 0:
        big_l, big_u = big_l - 1, big_u + 1
    if big_l + big_u > b or big_l < 1 or big_u < 1 or (curriculum and big_l < 2):
        need = "2 labeled (curriculum) + 1 pseudo" if curriculum else "1 labeled + 1 pseudo"
        raise BatchCompositionError(
            f"batch_size={b} cannot hold {need} images for {n_l} labeled and {n_u} pseudo-labeled images "
            f"(got {big_l} labeled + {big_u} pseudo); use a larger batch_size")
    steps = max(_ceil_div(n, b), _ceil_div(n_l, big_l), _ceil_div(n_u, big_u))
    return BatchComposition(big_l, big_u, steps)


def csd_batch_composition(batch_size: int, ratio: int, n_pool: int | None = None) -> BatchComposition:
    """CSD batch composition (reference §5.9): ``ratio`` unlabeled images per labeled one.

    labeled per batch = ``max(1, batch_size // (ratio + 1))``, unlabeled = the rest (>= 1 required);
    steps_per_epoch = ``n_pool // batch_size`` for a pool of ``n_pool`` images (labeled + unlabeled,
    ``>= batch_size``), ``None`` without ``n_pool``.
    """
    b = _int("batch_size", batch_size, 2)
    r = _int("ratio", ratio, 1, " (unlabeled images per labeled image, e.g. 3)")
    big_l = max(1, b // (r + 1))
    big_u = b - big_l
    if big_u < 1:                                    # pragma: no cover - b >= 2 and r >= 1 give b // (r+1) < b
        raise BatchCompositionError(f"batch_size={b} leaves no unlabeled slot with ratio={r}; use a larger batch_size")
    steps = None
    if n_pool is not None:
        pool = _int("n_pool", n_pool, 1, " (images in the pool, labeled + unlabeled)")
        if pool < b:
            raise BatchCompositionError(f"n_pool={pool} is smaller than batch_size={b}, so an epoch has no step; "
                                        f"use a smaller batch_size or a larger pool")
        steps = pool // b
    return BatchComposition(big_l, big_u, steps)
