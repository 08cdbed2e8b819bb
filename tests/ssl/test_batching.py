"""STAC and CSD batch composition: hand-computed cases, the edge rules and a coverage property over a grid."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from uncertainty_det.errors import UserError
from uncertainty_det.ssl.batching import (
    BatchComposition, BatchCompositionError, csd_batch_composition, stac_batch_composition,
)


@pytest.mark.parametrize("n_l, n_u, b, curriculum, expected", [
    # L = ceil(8·10/40) = 2, U = floor(8·30/40) = 6; steps = max(5, 5, 5)
    (10, 30, 8, False, (2, 6, 5)),
    # L = ceil(0.24) = 1, U = floor(7.76) = 7; steps = max(ceil(12.5), 3, ceil(97/7) = 14)
    (3, 97, 8, False, (1, 7, 14)),
    # U = floor(0.4) = 0 -> L 8 -> 7, U 0 -> 1; steps = max(13, ceil(95/7) = 14, 5). The reference's
    # labeled branch replaced spe = 12.5 by (95 - 87.5)/7 and ended with 5 steps, leaving labeled images out.
    (95, 5, 8, False, (7, 1, 14)),
    # curriculum: L = 1 < 2 -> L 2, U 7 -> 6; steps = max(13, 5, 15)
    (10, 90, 8, True, (2, 6, 15)),
    (10, 90, 8, False, (1, 7, 13)),
    # smallest batch
    (1, 100, 2, False, (1, 1, 100)),
    (5, 5, 2, False, (1, 1, 5)),
    # many more labeled than pseudo with curriculum: L = ceil(7.92) = 8, U = 0 -> L 7, U 1
    (99, 1, 8, True, (7, 1, 15)),
])
def test_stac_hand_computed(n_l, n_u, b, curriculum, expected):
    comp = stac_batch_composition(n_l, n_u, b, curriculum)
    assert (comp.labeled_per_batch, comp.pseudo_per_batch, comp.steps_per_epoch) == expected
    assert comp.batch_size == b


@pytest.mark.parametrize("args, match", [
    ((0, 10, 8), "n_labeled must be an integer >= 1"),
    ((10, 0, 8), "n_pseudo must be an integer >= 1.*lower tau"),
    ((10, 10, 1), "batch_size must be an integer >= 2"),
    ((10, 10, 8.0), "batch_size"),
    ((True, 10, 8), "n_labeled"),
])
def test_stac_bad_input(args, match):
    with pytest.raises(BatchCompositionError, match=match):
        stac_batch_composition(*args)


def test_stac_curriculum_needs_room():
    assert issubclass(BatchCompositionError, UserError)
    # B = 2: curriculum moves to L = 2, U = 0, and U == 0 moves back to L = 1 < 2
    with pytest.raises(BatchCompositionError, match="batch_size=2 cannot hold 2 labeled \\(curriculum\\)"):
        stac_batch_composition(1, 100, 2, curriculum=True)
    comp = stac_batch_composition(1, 100, 3, curriculum=True)
    assert (comp.labeled_per_batch, comp.pseudo_per_batch) == (2, 1)


def _cyclic_coverage(n: int, per_step: int, steps: int, rng: np.random.Generator) -> bool:
    """Whether a shuffled-and-repeated stream of n images shows every one in steps · per_step draws."""
    reps = math.ceil(steps * per_step / n)
    stream = np.concatenate([rng.permutation(n) for _ in range(reps)])[: steps * per_step]
    return np.unique(stream).size == n


@pytest.mark.parametrize("curriculum", [False, True])
def test_stac_property_grid(curriculum):
    rng = np.random.default_rng(0)
    sizes = [1, 2, 3, 5, 8, 13, 37, 100, 1001]
    for n_l, n_u, b in itertools.product(sizes, sizes, [2, 3, 4, 8, 16]):
        try:
            comp = stac_batch_composition(n_l, n_u, b, curriculum)
        except BatchCompositionError:
            assert curriculum and b == 2, (n_l, n_u, b)
            continue
        big_l, big_u, steps = comp.labeled_per_batch, comp.pseudo_per_batch, comp.steps_per_epoch
        assert big_l + big_u == b and big_u >= 1 and big_l >= (2 if curriculum else 1), (n_l, n_u, b, comp)
        # one epoch covers every labeled and every pseudo image and at least N / B batches ...
        assert steps * big_l >= n_l and steps * big_u >= n_u and steps * b >= n_l + n_u
        # ... with the fewest steps that do
        assert (steps - 1) * big_l < n_l or (steps - 1) * big_u < n_u or (steps - 1) * b < n_l + n_u
        if n_l + n_u < 300:
            assert _cyclic_coverage(n_l, big_l, steps, rng) and _cyclic_coverage(n_u, big_u, steps, rng)
        # the labeled share of a batch is the labeled share of the data, rounded up (before the edge rules)
        if not curriculum and big_u > 1:
            assert big_l == math.ceil(b * n_l / (n_l + n_u))


@pytest.mark.parametrize("b, ratio, n_pool, expected", [
    (8, 3, 100, (2, 6, 12)),
    (8, 3, None, (2, 6, None)),
    (8, 1, 8, (4, 4, 1)),
    (8, 10, 17, (1, 7, 2)),        # B // 11 = 0 -> at least one labeled
    (2, 1, 5, (1, 1, 2)),
    (9, 2, 100, (3, 6, 11)),
])
def test_csd_hand_computed(b, ratio, n_pool, expected):
    comp = csd_batch_composition(b, ratio, n_pool)
    assert isinstance(comp, BatchComposition)
    assert (comp.labeled_per_batch, comp.pseudo_per_batch, comp.steps_per_epoch) == expected


@pytest.mark.parametrize("args, match", [
    ((8, 0), "ratio must be an integer >= 1"),
    ((1, 3), "batch_size must be an integer >= 2"),
    ((8, 3, 7), "n_pool=7 is smaller than batch_size=8"),
    ((8, 3, 0), "n_pool must be an integer >= 1"),
    ((8, 2.5), "ratio"),
])
def test_csd_bad_input(args, match):
    with pytest.raises(BatchCompositionError, match=match):
        csd_batch_composition(*args)


def test_composition_is_frozen():
    comp = stac_batch_composition(10, 30, 8)
    with pytest.raises(Exception):
        comp.labeled_per_batch = 3
