"""Hash-based pool pruning: hashes, Hamming distances, duplicate groups, the fixed pruning, budgets, cache."""
from __future__ import annotations

import itertools
import os

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageDraw

from uncertainty_det.active_learning import pruning
from uncertainty_det.active_learning.pruning import (
    HASH_METHODS, PruneResult, PruningError, duplicate_groups, hamming_matrix, hash_prune, image_hashes,
    prune_pool, random_prune, rescale_budget,
)
from uncertainty_det.errors import UserError

W, H = 192, 112
PLANTED_MAX = 4     # bits a re-encoded / brightened / copied image may differ from its original
DISTINCT_MIN = 12   # bits two different synthetic images differ at least
THRESHOLD_BITS = 8  # between the two


# ---------------------------------------------------------------------------------------------
# Synthetic pool: 12 structurally different images plus planted near-duplicates


def _gray(v: np.ndarray) -> Image.Image:
    return Image.fromarray(np.repeat((v * 255).astype(np.uint8)[..., None], 3, axis=-1))


def _smooth_field(seed: int) -> Image.Image:
    small = (np.random.default_rng(seed).random((4, 6, 3)) * 255).astype(np.uint8)
    return Image.fromarray(small).resize((W, H), Image.BICUBIC)


def _radial(cx: float, cy: float) -> Image.Image:
    yy, xx = np.mgrid[0:H, 0:W]
    return _gray(0.5 + 0.5 * np.cos(2 * np.pi * 2.5 * np.hypot(xx - cx * W, yy - cy * H) / W))


def _stripes(freq: float, angle: float) -> Image.Image:
    yy, xx = np.mgrid[0:H, 0:W] / W
    return _gray(0.5 + 0.5 * np.sin(2 * np.pi * freq * (np.cos(angle) * xx + np.sin(angle) * yy)))


def _shapes(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (W, H), tuple(int(c) for c in rng.integers(0, 80, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(4):
        x0, y0 = int(rng.integers(0, W - 40)), int(rng.integers(0, H - 30))
        box = (x0, y0, x0 + int(rng.integers(20, 70)), y0 + int(rng.integers(15, 50)))
        colour = tuple(int(c) for c in rng.integers(120, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    return img


def _checker(cell: int) -> Image.Image:
    yy, xx = np.mgrid[0:H, 0:W]
    return _gray((((xx // cell + yy // cell) % 2) * 200 + 30) / 255)


def _distinct() -> list[Image.Image]:
    return [_smooth_field(1), _smooth_field(2), _smooth_field(3), _smooth_field(7), _radial(0.3, 0.4),
            _radial(0.8, 0.7), _stripes(3, 0.0), _stripes(2, 1.2), _shapes(4), _shapes(6), _shapes(9),
            _checker(37)]


def _brighter(img: Image.Image) -> Image.Image:
    return Image.fromarray(np.clip(np.asarray(img).astype(int) + 5, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """(paths, groups): 12 distinct PNGs then planted copies; groups lists the index sets of each original."""
    folder = tmp_path_factory.mktemp("pool")
    paths = []
    for k, img in enumerate(_distinct()):
        paths.append(folder / f"img{k:02d}.png")
        img.save(paths[-1])
    groups = {0: [0], 4: [4], 7: [7], 11: [11]}

    def plant(base: int, name: str, make) -> None:
        paths.append(folder / name)
        make(Image.open(paths[base]).convert("RGB"), paths[-1])
        groups[base].append(len(paths) - 1)

    plant(0, "img00_q90.jpg", lambda im, p: im.save(p, "JPEG", quality=90))
    plant(0, "img00_bright.png", lambda im, p: _brighter(im).save(p))
    plant(4, "img04_q90.jpg", lambda im, p: im.save(p, "JPEG", quality=90))
    plant(7, "img07_bright.png", lambda im, p: _brighter(im).save(p))
    plant(11, "img11_copy.png", lambda im, p: im.save(p))
    return [str(p) for p in paths], [np.array(g) for g in groups.values()]


@pytest.fixture(scope="module")
def pool_bits(pool):
    paths, _ = pool
    return {m: image_hashes(paths, method=m)[0] for m in HASH_METHODS}


def _planted_mask(n: int, groups: list[np.ndarray]) -> np.ndarray:
    mask = np.zeros((n, n), dtype=bool)
    for g in groups:
        mask[np.ix_(g, g)] = True
    return mask & ~np.eye(n, dtype=bool)


# ---------------------------------------------------------------------------------------------
# Hashes


@pytest.mark.parametrize("method", HASH_METHODS)
def test_image_hashes_match_imagehash_on_resized_image(pool, pool_bits, method):
    paths, _ = pool
    bits = pool_bits[method]
    assert bits.shape == (len(paths), 64) and bits.dtype == bool
    hasher = getattr(imagehash, method)
    for i, path in enumerate(paths):
        expected = hasher(Image.open(path).convert("RGB").resize((512, 256))).hash.reshape(-1)
        np.testing.assert_array_equal(bits[i], expected, err_msg=path)


@pytest.mark.parametrize("method", HASH_METHODS)
def test_planted_duplicates_are_close_and_distinct_images_far(pool, pool_bits, method):
    paths, groups = pool
    d = hamming_matrix(pool_bits[method])
    planted = _planted_mask(len(paths), groups)
    distinct = ~planted & ~np.eye(len(paths), dtype=bool)
    assert d[planted].max() <= PLANTED_MAX
    assert d[distinct].min() >= DISTINCT_MIN
    assert d[planted].max() < THRESHOLD_BITS < d[distinct].min()


@pytest.mark.parametrize("method", HASH_METHODS)
def test_hash_prune_keeps_one_per_planted_group_and_every_distinct_image(pool, pool_bits, method):
    paths, groups = pool
    d = hamming_matrix(pool_bits[method])
    thr = THRESHOLD_BITS / d.max()
    for seed in range(5):
        kept, removed = hash_prune(d, thr, np.random.default_rng(seed))
        for g in groups:
            assert np.isin(g, kept).sum() == 1
        assert kept.size == 12 and removed.size == len(paths) - 12
    planted = np.concatenate(groups)
    other = np.setdiff1d(np.arange(len(paths)), planted)
    assert np.isin(other, kept).all()


def test_image_hashes_sizes_hash_size_and_rejects_unknown_method(pool):
    paths, _ = pool
    bits, bad = image_hashes(paths[:2], method="phash", hash_size=4)
    assert bits.shape == (2, 16) and bad == []
    expected = imagehash.phash(Image.open(paths[1]).resize((512, 256)), hash_size=4).hash.reshape(-1)
    np.testing.assert_array_equal(bits[1], expected)
    with pytest.raises(PruningError, match="phash, whash"):
        image_hashes(paths, method="dhash")
    with pytest.raises(PruningError, match="power of 2"):
        image_hashes(paths, method="whash", hash_size=6)
    assert issubclass(PruningError, UserError) and issubclass(PruningError, ValueError)


def test_unreadable_image_is_reported_with_false_row(pool, tmp_path):
    paths, _ = pool
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")
    missing = tmp_path / "missing.png"
    seen = []
    bits, bad = image_hashes([paths[0], str(broken), paths[1], str(missing)],
                             on_error=lambda i, exc: seen.append((i, type(exc))))
    assert bad == [1, 3]
    assert [i for i, _ in seen] == [1, 3] and all(issubclass(t, Exception) for _, t in seen)
    assert not bits[1].any() and not bits[3].any() and bits[0].any() and bits[2].any()


# ---------------------------------------------------------------------------------------------
# Hamming distances


def _brute_hamming(bits: np.ndarray) -> np.ndarray:
    return (bits[:, None, :] != bits[None, :, :]).sum(axis=-1)


@pytest.mark.parametrize("n,n_bits,block", [(1, 64, 4), (7, 64, 3), (10, 13, 4), (33, 64, 8), (20, 256, 1),
                                            (16, 64, 512), (0, 64, 4)])
def test_hamming_matrix_equals_brute_force(n, n_bits, block):
    bits = np.random.default_rng(n * 1000 + n_bits).random((n, n_bits)) < 0.5
    d = hamming_matrix(bits, block_rows=block)
    assert d.shape == (n, n) and d.dtype in (np.int16, np.int32)
    np.testing.assert_array_equal(d, _brute_hamming(bits))
    np.testing.assert_array_equal(hamming_matrix(bits.astype(np.uint8), block_rows=block), d)


def test_hamming_matrix_rejects_non_matrix():
    with pytest.raises(PruningError, match="shape"):
        hamming_matrix(np.zeros(8, dtype=bool))


# ---------------------------------------------------------------------------------------------
# Duplicate groups and pruning


def test_duplicate_groups_follow_the_definition_with_repeats():
    # max 10, threshold 0.2 -> 2 bits: {0,1} close, {2,3,4} a chain 2-3-4 (2 and 4 are 4 apart), 5 alone
    d = np.array([[0, 1, 9, 9, 9, 10],
                  [1, 0, 9, 9, 9, 10],
                  [9, 9, 0, 2, 4, 10],
                  [9, 9, 2, 0, 2, 10],
                  [9, 9, 4, 2, 0, 10],
                  [10, 10, 10, 10, 10, 0]])
    groups = duplicate_groups(d, 0.2)
    assert [g.tolist() for g in groups] == [[0, 1], [0, 1], [2, 3], [2, 3, 4], [3, 4]]


def _random_distances(seed: int) -> tuple[np.ndarray, float]:
    rng = np.random.default_rng(seed)
    n, n_bits = int(rng.integers(2, 60)), int(rng.integers(4, 16))
    bits = rng.random((n, n_bits)) < rng.uniform(0.2, 0.8)
    return hamming_matrix(bits), float(rng.choice([0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0]))


@pytest.mark.parametrize("seed", range(60))
def test_hash_prune_keeps_an_independent_set_covering_every_group(seed):
    d, thr = _random_distances(seed)
    limit = d.max() * thr
    kept, removed = hash_prune(d, thr, np.random.default_rng(seed))
    n = d.shape[0]
    assert np.array_equal(np.sort(np.concatenate([kept, removed])), np.arange(n))
    assert np.all(np.diff(kept) > 0) and np.all(np.diff(removed) > 0)
    sub = d[np.ix_(kept, kept)]
    assert (sub[~np.eye(kept.size, dtype=bool)] > limit).all(), "two kept images are duplicates"
    for g in duplicate_groups(d, thr):
        assert np.isin(g, kept).any(), f"group {g} lost every member"
    # maximal: every removed image has a kept duplicate
    assert all((d[r, kept] <= limit).any() for r in removed)
    k2, r2 = hash_prune(d, thr, np.random.default_rng(seed))
    assert np.array_equal(kept, k2) and np.array_equal(removed, r2)


def _reference_removed(groups: list[np.ndarray], representatives: tuple[int, ...]) -> set[int]:
    """Reference §3.5: one representative per recorded group, the rest of every group removed."""
    removed: set[int] = set()
    for g, rep in zip(groups, representatives):
        removed |= set(g.tolist()) - {rep}
    return removed


def test_overlapping_groups_reference_can_lose_a_group_ours_cannot():
    # chain a-b-c (a, c two apart) plus a far image: threshold 0.1 * 10 = 1 bit
    d = np.array([[0, 1, 2, 10],
                  [1, 0, 1, 10],
                  [2, 1, 0, 10],
                  [10, 10, 10, 0]])
    groups = duplicate_groups(d, 0.1)
    assert [g.tolist() for g in groups] == [[0, 1], [0, 1, 2], [1, 2]]
    lost = [reps for reps in itertools.product(*[g.tolist() for g in groups])
            if any(set(g.tolist()) <= _reference_removed(groups, reps) for g in groups)]
    assert lost, "the crafted case must expose the reference defect"
    assert (0, 2, 1) in lost  # a for {a,b}, c for {a,b,c}, b for {b,c}: a, b and c all removed
    outcomes = set()
    for seed in range(50):
        kept, _ = hash_prune(d, 0.1, np.random.default_rng(seed))
        assert all(np.isin(g, kept).any() for g in groups)
        assert 3 in kept
        outcomes.add(tuple(kept.tolist()))
    assert outcomes == {(1, 3), (0, 2, 3)}


def test_threshold_zero_removes_only_identical_hashes():
    rng = np.random.default_rng(3)
    base = rng.random((8, 16)) < 0.5
    bits = np.concatenate([base, base[[1, 1, 5]]])  # rows 8, 9 copy 1; row 10 copies 5
    bits[7] = base[6]
    bits[7, 0] = ~bits[7, 0]  # one bit away from 6: not identical, must survive thr 0
    d = hamming_matrix(bits)
    for seed in range(10):
        kept, removed = hash_prune(d, 0.0, np.random.default_rng(seed))
        assert removed.size == 3
        assert np.isin([6, 7], kept).all()
        assert np.isin([1, 8, 9], kept).sum() == 1 and np.isin([5, 10], kept).sum() == 1


@pytest.mark.parametrize("thr", [0.0, 0.1, 1.0])
def test_all_identical_keeps_exactly_one(thr):
    d = np.zeros((6, 6), dtype=np.int16)
    kept, removed = hash_prune(d, thr, np.random.default_rng(0))
    assert kept.size == 1 and removed.size == 5
    assert {int(hash_prune(d, thr, np.random.default_rng(s))[0][0]) for s in range(40)} == set(range(6))


def test_hash_prune_edge_sizes_and_bad_input():
    assert [a.size for a in hash_prune(np.zeros((0, 0)), 0.1, np.random.default_rng(0))] == [0, 0]
    kept, removed = hash_prune(np.zeros((1, 1)), 0.1, np.random.default_rng(0))
    assert kept.tolist() == [0] and removed.size == 0
    with pytest.raises(PruningError, match="square"):
        hash_prune(np.zeros((2, 3)), 0.1, np.random.default_rng(0))
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(PruningError, match="prune_threshold"):
            hash_prune(np.zeros((2, 2)), bad, np.random.default_rng(0))


# ---------------------------------------------------------------------------------------------
# Random pruning and the budget


@pytest.mark.parametrize("n,thr,size", [(100, 0.1, 90), (10, 0.9, 1), (10, 0.7, 3), (7, 0.0, 7), (7, 1.0, 0),
                                        (0, 0.5, 0), (33, 0.25, 24)])
def test_random_prune_sizes(n, thr, size):
    kept, removed = random_prune(n, thr, np.random.default_rng(1))
    assert kept.size == size
    assert np.array_equal(np.sort(np.concatenate([kept, removed])), np.arange(n))
    assert np.all(np.diff(kept) > 0) and np.all(np.diff(removed) > 0)


def test_random_prune_is_seeded_and_uniform():
    a = random_prune(50, 0.4, np.random.default_rng(7))
    b = random_prune(50, 0.4, np.random.default_rng(7))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    counts = np.zeros(50)
    for seed in range(400):
        counts[random_prune(50, 0.4, np.random.default_rng(seed))[0]] += 1
    assert len({tuple(random_prune(50, 0.4, np.random.default_rng(s))[0]) for s in range(5)}) == 5
    assert np.abs(counts / 400 - 0.6).max() < 0.15  # every image about 60 % of the time


def test_rescale_budget_reference_example():
    out = rescale_budget([5, 5, 5, 10, 20, 30, 25], 1000, 900)
    assert np.round(np.cumsum(out), 1).tolist() == [5.6, 11.1, 16.7, 27.8, 50.0, 83.3]
    assert out[0] == pytest.approx(5 / 0.9)


def test_rescale_budget_without_pruning_and_tolerance():
    assert rescale_budget([5, 5, 5, 10, 20, 30, 25], 500, 500) == [5, 5, 5, 10, 20, 30, 25]
    assert np.cumsum([100 / 7] * 7)[-1] > 100  # float round-off ...
    assert len(rescale_budget([100 / 7] * 7, 10, 10)) == 7  # ... is within the 1e-9 tolerance
    assert len(rescale_budget([50, 50], 99, 98)) == 1


@pytest.mark.parametrize("budget,n_orig,n_kept,match", [
    ([], 10, 10, "empty"),
    ([5, -1], 10, 10, "-1"),
    ([5, 0], 10, 10, "0"),
    ([5, float("nan")], 10, 10, "nan"),
    ([5, "7"], 10, 10, "'7'"),
    ([5, 95], 10, 11, r"n_kept \(11\)"),
    ([5, 95], 10, 0, "n_kept"),
    ([5, 95], 0, 0, "n_original"),
    ([5, 95], 10.5, 5, "10.5"),
    ([60, 40], 100, 50, "first iteration"),
])
def test_rescale_budget_rejects_bad_input(budget, n_orig, n_kept, match):
    with pytest.raises(PruningError, match=match):
        rescale_budget(budget, n_orig, n_kept)


# ---------------------------------------------------------------------------------------------
# prune_pool


def test_prune_pool_hash_mode_is_seeded_and_drops_planted_copies(pool):
    paths, groups = pool
    res = prune_pool(paths, method="phash", prune_threshold=0.2, seed=3)
    assert isinstance(res, PruneResult) and res.method == "phash" and res.mode == "hash"
    assert res.threshold_distance == pytest.approx(0.2 * res.max_distance)
    assert PLANTED_MAX < res.threshold_distance < DISTINCT_MIN
    assert res.kept.size == 12 and res.unreadable.size == 0 and res.groups == len(groups)
    assert all(np.isin(g, res.kept).sum() == 1 for g in groups)
    again = prune_pool(paths, method="phash", prune_threshold=0.2, seed=3)
    assert np.array_equal(res.kept, again.kept) and np.array_equal(res.removed, again.removed)


def test_prune_pool_random_and_off_modes(pool):
    paths, _ = pool
    off = prune_pool(paths, mode="off")
    assert off.kept.tolist() == list(range(len(paths))) and off.removed.size == 0
    rand = prune_pool(paths, prune_threshold=0.25, mode="random", seed=1)
    assert rand.kept.size == int(0.75 * len(paths)) and rand.method is None
    assert np.array_equal(rand.kept, prune_pool(paths, prune_threshold=0.25, mode="random", seed=1).kept)
    with pytest.raises(PruningError, match="hash, random, off"):
        prune_pool(paths, mode="dedupe")
    with pytest.raises(PruningError, match="phash, whash"):
        prune_pool(paths, method="ahash")


def test_prune_pool_removes_unreadable(pool, tmp_path):
    paths, _ = pool
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 truncated")
    items = paths[:5] + [str(broken)] + paths[5:12]
    res = prune_pool(items, prune_threshold=0.2, seed=0)
    assert res.unreadable.tolist() == [5]
    assert 5 in res.removed and 5 not in res.kept
    assert res.kept.size == 12 and res.removed.tolist() == [5]


def test_prune_pool_cache_hit_and_invalidation(pool, tmp_path, monkeypatch):
    paths, _ = pool
    files = []
    for k, src in enumerate(paths[:14]):
        files.append(str(tmp_path / f"{k:02d}.png"))
        Image.open(src).convert("RGB").save(files[-1])
    calls = []
    original = pruning.image_hashes

    def counting(*args, **kwargs):
        calls.append(kwargs.get("method"))
        return original(*args, **kwargs)

    monkeypatch.setattr(pruning, "image_hashes", counting)
    cache = tmp_path / "cache"
    first = prune_pool(files, prune_threshold=0.2, cache_dir=cache)
    second = prune_pool(files, prune_threshold=0.2, cache_dir=cache)
    assert calls == ["phash"]
    assert np.array_equal(first.kept, second.kept) and first.max_distance == second.max_distance
    with np.load(cache / "phash_hashes.npz", allow_pickle=False) as data:
        np.testing.assert_array_equal(data["bits"], original(files)[0])
    assert sorted(p.name for p in cache.iterdir()) == ["phash_hashes.npz"]  # no temp file left

    prune_pool(files, method="whash", prune_threshold=0.2, cache_dir=cache)
    assert calls == ["phash", "whash"] and (cache / "whash_hashes.npz").is_file()

    _checker(11).save(files[3])  # a changed file: new size and mtime
    st = os.stat(files[3])
    os.utime(files[3], ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))
    prune_pool(files, prune_threshold=0.2, cache_dir=cache)
    assert calls == ["phash", "whash", "phash"]
    prune_pool(files, prune_threshold=0.2, cache_dir=cache)
    assert len(calls) == 3
    prune_pool(files[:-1], prune_threshold=0.2, cache_dir=cache)  # a different list of files
    assert len(calls) == 4


# ---------------------------------------------------------------------------------------------
# The loop's pool plan (udet-al-loop's plan_pool) on the planted pool


def test_loop_pool_plan_prunes_planted_duplicates_and_rescales_the_budget(pool, tmp_path):
    import dataclasses
    from pathlib import Path

    from uncertainty_det.active_learning import parse_strategy_name
    from uncertainty_det.apps.al_loop import plan_pool
    from uncertainty_det.data.manifest import ManifestBuilder, categories_from_names

    paths, groups = pool
    builder = ManifestBuilder(categories_from_names(["shape"]))
    ids = [builder.add_image(Path(p).name, H, W, image_id=100 + k) for k, p in enumerate(paths)]
    manifest = builder.build(image_root=Path(paths[0]).parent)
    budget = [25, 25, 25, 25]
    strategy = dataclasses.replace(parse_strategy_name("prune_entropy"), prune_threshold=0.2)
    kept, sizes, info = plan_pool(strategy, manifest, budget, 0, tmp_path / "cache")
    removed = set(info["removed"])
    # one member of each planted group survives, every distinct image stays; ids, not indices
    for g in groups:
        assert len({ids[i] for i in g} - removed) == 1
    assert len(removed) == sum(len(g) - 1 for g in groups) == 5
    assert sorted(kept + sorted(removed)) == sorted(ids) and info["kept"] == 12 and info["original"] == 17
    # 25 % of 17 images is 4.25 images; rescaled to the 12 kept: 35.4 % each, two fit, the last takes the rest
    assert sizes == [4, 8]
    full = plan_pool(dataclasses.replace(strategy, prune="full"), manifest, budget, 0, tmp_path / "cache")
    assert full[0] == kept and full[1] == [12]
    off = plan_pool(parse_strategy_name("entropy"), manifest, budget, 0, tmp_path / "cache")
    assert off[0] == ids and sum(off[1]) == 17
