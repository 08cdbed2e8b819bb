"""Hash-based de-duplication of an active-learning image pool (reference §3.5, defect 11 fixed).

Every pool image is resized to 512x256 (W x H) and hashed with a perceptual hash (``phash``, DCT based,
or ``whash``, Haar wavelet; 64 bits at ``hash_size=8``). ``D[i, j]`` is the Hamming distance of two
hashes and two images are duplicates when ``D[i, j] <= max(D) * prune_threshold``.

The reference kept one random representative per duplicate group ``dup_i`` and removed the rest of the
group; as the groups overlap, a representative could be removed by another group and a whole group could
vanish. Here the images are visited in a random order and an image is kept unless an already kept image
is a duplicate of it: the kept images form a maximal independent set of the duplicate graph, so no two
kept images are duplicates and every group keeps at least one member.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import imagehash
import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from ..errors import UserError

log = logging.getLogger(__name__)

HASH_METHODS = ("phash", "whash")
PRUNE_MODES = ("hash", "random", "off")
HASH_SIZE = 8
RESIZE = (512, 256)  # (width, height), as the reference
BUDGET_TOLERANCE = 1e-9
_READ_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)


class PruningError(UserError, ValueError):
    """Bad input to pool pruning: unknown method or mode, threshold out of range, bad budget."""


# ---------------------------------------------------------------------------------------------
# Input checks


def _check_method(method: str) -> str:
    if method not in HASH_METHODS:
        raise PruningError(f"unknown hash method {method!r}; choose one of {', '.join(HASH_METHODS)}")
    return method


def _check_threshold(prune_threshold: float) -> float:
    try:
        thr = float(prune_threshold)
    except (TypeError, ValueError):
        raise PruningError(f"prune_threshold must be a number in [0, 1], got {prune_threshold!r}") from None
    if not 0.0 <= thr <= 1.0:  # also rejects NaN
        raise PruningError(f"prune_threshold must be in [0, 1], got {prune_threshold!r}")
    return thr


def _check_distances(distances: np.ndarray) -> np.ndarray:
    d = np.asarray(distances)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise PruningError(f"distances must be a square [N, N] matrix, got shape {d.shape}")
    return d


def _check_hash_params(method: str, size: tuple[int, int], hash_size: int) -> None:
    if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
        raise PruningError(f"size must be (width, height) in positive pixels, got {size!r}")
    if int(hash_size) != hash_size or hash_size < 2:
        raise PruningError(f"hash_size must be an integer >= 2, got {hash_size!r}")
    if method == "whash":
        scale = 2 ** int(np.log2(min(size)))
        if hash_size & (hash_size - 1) or hash_size > scale:
            raise PruningError(f"whash needs hash_size a power of 2 and <= {scale} at size {tuple(size)}, "
                               f"got {hash_size}")


# ---------------------------------------------------------------------------------------------
# Hashes and distances


def _hash_one(path: str | os.PathLike, method: str, size: tuple[int, int], hash_size: int) -> np.ndarray:
    """``[hash_size**2]`` bool bits of one image (RGB, resized to ``size`` = (W, H) pixels)."""
    hasher = getattr(imagehash, method)  # looked up per call so tests can patch imagehash
    with Image.open(path) as img:
        resized = img.convert("RGB").resize(tuple(int(s) for s in size))
    return np.asarray(hasher(resized, hash_size=hash_size).hash, dtype=bool).reshape(-1)


def image_hashes(paths: Sequence[str | os.PathLike], method: str = "phash", size: tuple[int, int] = RESIZE,
                 hash_size: int = HASH_SIZE,
                 on_error: Callable[[int, Exception], None] | None = None) -> tuple[np.ndarray, list[int]]:
    """Perceptual hash bits of every image; returns ``(bits, unreadable)``.

    paths: N image files; method: one of :data:`HASH_METHODS`; size: (width, height) in pixels each image is
    resized to before hashing; hash_size: side of the hash (``hash_size**2`` bits).

    bits: ``[N, hash_size**2]`` bool, all False for an unreadable image. unreadable: indices into ``paths``
    of the images that could not be read (each also passed to ``on_error(index, exc)``); drop them.
    """
    _check_method(method)
    _check_hash_params(method, size, hash_size)
    bits = np.zeros((len(paths), hash_size * hash_size), dtype=bool)
    unreadable: list[int] = []
    for i, path in enumerate(tqdm(paths, desc=f"{method} hashes", unit="img", disable=None)):
        try:
            bits[i] = _hash_one(path, method, size, hash_size)
        except _READ_ERRORS as exc:
            log.warning("cannot hash image %s (index %d): %s", path, i, exc)
            unreadable.append(i)
            if on_error is not None:
                on_error(i, exc)
    return bits, unreadable


def hamming_matrix(bits: np.ndarray, block_rows: int = 512) -> np.ndarray:
    """``[N, N]`` pairwise Hamming distances (number of differing bits) of the rows of ``bits``.

    bits: ``[N, B]`` bool (or 0/1) matrix. Computed ``block_rows`` rows at a time as
    ``|a| + |b| - 2 a.b`` with a float matrix product, which is exact for ``B < 2**24``.
    Returns int16 (int32 when ``B > 32767``).
    """
    b = np.asarray(bits)
    if b.ndim != 2:
        raise PruningError(f"bits must be a [N, B] matrix, got shape {b.shape}")
    if block_rows < 1:
        raise PruningError(f"block_rows must be >= 1, got {block_rows}")
    n, n_bits = b.shape
    x = (b != 0).astype(np.float32 if n_bits < 2 ** 24 else np.float64)
    ones = x.sum(axis=1)
    out = np.empty((n, n), dtype=np.int16 if n_bits <= np.iinfo(np.int16).max else np.int32)
    for start in range(0, n, block_rows):
        stop = min(start + block_rows, n)
        block = ones[start:stop, None] + ones[None, :] - 2.0 * (x[start:stop] @ x.T)
        out[start:stop] = np.rint(block)
    return out


def threshold_distance(distances: np.ndarray, prune_threshold: float) -> float:
    """The duplicate distance ``max(D) * prune_threshold`` (bits; 0 for an empty matrix)."""
    d = _check_distances(distances)
    thr = _check_threshold(prune_threshold)
    return float(d.max()) * thr if d.size else 0.0


# ---------------------------------------------------------------------------------------------
# Duplicate groups and pruning


def duplicate_groups(distances: np.ndarray, prune_threshold: float, block_rows: int = 1024) -> list[np.ndarray]:
    """Duplicate group ``dup_i = {j : D[i, j] <= max(D) * prune_threshold}`` of every image i (it holds i).

    distances: ``[N, N]`` symmetric Hamming distances. Returns, in order of i, the sorted index arrays of
    the groups with more than one member; the same group can repeat (once per member), as the reference.
    """
    d = _check_distances(distances)
    limit = threshold_distance(d, prune_threshold)
    groups: list[np.ndarray] = []
    for start in range(0, d.shape[0], block_rows):
        close = d[start:start + block_rows] <= limit
        for row in np.flatnonzero(close.sum(axis=1) > 1):
            groups.append(np.flatnonzero(close[row]))
    return groups


def hash_prune(distances: np.ndarray, prune_threshold: float,
               rng: np.random.Generator | int | None) -> tuple[np.ndarray, np.ndarray]:
    """Remove duplicates, keeping a maximal set of mutually non-duplicate images; returns ``(kept, removed)``.

    distances: ``[N, N]`` symmetric Hamming distances; prune_threshold: in [0, 1], images within
    ``max(D) * prune_threshold`` bits are duplicates (0: identical hashes only; all identical: one kept);
    rng: generator (or seed) of the visiting order. kept / removed: sorted int64 indices that partition
    ``range(N)``. No two kept images are duplicates, and every :func:`duplicate_groups` group keeps a member.
    """
    d = _check_distances(distances)
    limit = threshold_distance(d, prune_threshold)
    n = d.shape[0]
    blocked = np.zeros(n, dtype=bool)
    keep = np.zeros(n, dtype=bool)
    for i in np.random.default_rng(rng).permutation(n):
        if not blocked[i]:
            keep[i] = True
            blocked |= d[i] <= limit  # d[i, i] == 0 blocks i itself
    return np.flatnonzero(keep), np.flatnonzero(~keep)


def _keep_count(n: int, prune_threshold: float) -> int:
    # The tolerance keeps e.g. (1 - 0.9) * 10 = 0.99999... from truncating to 0.
    return int(np.floor((1.0 - prune_threshold) * n + 1e-9))


def random_prune(n: int, prune_threshold: float,
                 rng: np.random.Generator | int | None) -> tuple[np.ndarray, np.ndarray]:
    """Keep a uniformly random ``int((1 - prune_threshold) * n)`` of ``n`` images; returns sorted ``(kept, removed)``.

    The reference's "rand" pruning; rng: generator (or seed) of the draw.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise PruningError(f"n must be a non-negative integer, got {n!r}")
    thr = _check_threshold(prune_threshold)
    n = int(n)
    keep = np.zeros(n, dtype=bool)
    keep[np.random.default_rng(rng).choice(n, size=_keep_count(n, thr), replace=False)] = True
    return np.flatnonzero(keep), np.flatnonzero(~keep)


def rescale_budget(budget: Sequence[float], n_original: int, n_kept: int) -> list[float]:
    """Rescale per-iteration budgets (% of the pool) to the pruned pool, so absolute counts stay the same.

    ``budget'_i = budget_i * n_original / n_kept``, keeping the leading entries whose cumulative sum is
    <= 100 %. E.g. 10 % pruned, ``[5, 5, 5, 10, 20, 30, 25]`` -> cumulative 5.6, 11.1, 16.7, 27.8, 50,
    83.3 (six iterations; the caller sets the last one to the rest of the pool).
    """
    values = list(budget)
    if not values:
        raise PruningError("budget is empty; give at least one iteration share in %")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not np.isfinite(value) \
                or value <= 0:
            raise PruningError(f"budget entries must be positive numbers (% of the pool), got {value!r}")
    for name, value in (("n_original", n_original), ("n_kept", n_kept)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise PruningError(f"{name} must be a positive integer, got {value!r}")
    if n_kept > n_original:
        raise PruningError(f"n_kept ({n_kept}) must not exceed n_original ({n_original})")
    scaled = np.asarray(values, dtype=np.float64) * (n_original / n_kept)
    fits = np.cumsum(scaled) <= 100.0 + BUDGET_TOLERANCE
    if not fits[0]:
        raise PruningError(f"the first iteration ({values[0]} % of {n_original} images) needs more than the "
                           f"{n_kept} images left after pruning; lower the prune threshold or the first budget")
    # Entries are positive, so the cumulative sum rises and the entries that fit are a prefix.
    return [float(v) for v in scaled[: int(fits.sum())]]


# ---------------------------------------------------------------------------------------------
# Whole pool, with the hash cache


@dataclass
class PruneResult:
    """Outcome of :func:`prune_pool`; indices are into the ``paths`` given.

    kept / removed: sorted int64 indices (removed includes the unreadable images); unreadable: indices of
    images that could not be hashed; groups: number of distinct duplicate groups; method: the hash
    (None unless mode is ``hash``); threshold_distance / max_distance: in bits (None unless mode is ``hash``).
    """

    kept: np.ndarray
    removed: np.ndarray
    unreadable: np.ndarray
    groups: int
    method: str | None
    threshold_distance: float | None
    max_distance: int | None
    mode: str = "hash"


def _cache_key(paths: Sequence[str | os.PathLike], method: str) -> str:
    """SHA-256 hex digest of the paths with their sizes and mtimes (ns), the method and the hash settings."""
    entries = []
    for path in paths:
        try:
            st = os.stat(path)
            entries.append([os.fspath(path), st.st_size, st.st_mtime_ns])
        except OSError:
            entries.append([os.fspath(path), -1, -1])
    payload = json.dumps({"method": method, "size": list(RESIZE), "hash_size": HASH_SIZE, "files": entries})
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _load_cache(file: Path, key: str, n: int) -> tuple[np.ndarray, list[int]] | None:
    """Cached ``(bits, unreadable)`` when ``file`` exists and matches ``key``; None otherwise."""
    if not file.is_file():
        return None
    try:
        with np.load(file, allow_pickle=False) as data:
            if str(data["key"]) != key or data["bits"].shape[0] != n:
                return None
            return data["bits"].astype(bool), [int(i) for i in data["unreadable"]]
    except (OSError, ValueError, KeyError) as exc:
        log.warning("ignoring unreadable hash cache %s: %s", file, exc)
        return None


def _save_cache(file: Path, key: str, bits: np.ndarray, unreadable: list[int]) -> None:
    """Write the cache atomically (temp file in the same folder, then ``os.replace``)."""
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, key=np.asarray(key), bits=bits, unreadable=np.asarray(unreadable, dtype=np.int64))
        os.replace(tmp, file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _cached_hashes(paths: Sequence[str | os.PathLike], method: str,
                   cache_dir: str | os.PathLike | None) -> tuple[np.ndarray, list[int]]:
    if cache_dir is None:
        return image_hashes(paths, method=method)
    file = Path(cache_dir) / f"{method}_hashes.npz"
    key = _cache_key(paths, method)
    cached = _load_cache(file, key, len(paths))
    if cached is not None:
        log.info("loaded %s hashes of %d images from %s", method, len(paths), file)
        return cached
    bits, unreadable = image_hashes(paths, method=method)
    _save_cache(file, key, bits, unreadable)
    return bits, unreadable


def _distinct_groups(groups: list[np.ndarray]) -> int:
    return len({g.tobytes() for g in groups})


def prune_pool(paths: Sequence[str | os.PathLike], method: str = "phash", prune_threshold: float = 0.1,
               mode: str = "hash", seed: int = 0, cache_dir: str | os.PathLike | None = None) -> PruneResult:
    """Prune an image pool of near-duplicates (``hash``), at random (``random``) or not at all (``off``).

    paths: N image files; method: one of :data:`HASH_METHODS`; prune_threshold: in [0, 1], the duplicate
    distance as a share of the largest distance (``hash``) or the share removed (``random``); seed: seeds
    the visiting / sampling order (same inputs and seed -> same result); cache_dir: where
    ``<method>_hashes.npz`` is kept, recomputed when a path, size or mtime changes.

    Only ``hash`` reads the images: unreadable ones are reported and removed.
    """
    if mode not in PRUNE_MODES:
        raise PruningError(f"unknown prune mode {mode!r}; choose one of {', '.join(PRUNE_MODES)}")
    _check_method(method)
    thr = _check_threshold(prune_threshold)
    n = len(paths)
    none = np.zeros(0, dtype=np.int64)
    if mode == "off":
        return PruneResult(np.arange(n, dtype=np.int64), none, none, 0, None, None, None, mode)
    rng = np.random.default_rng(seed)
    if mode == "random":
        kept, removed = random_prune(n, thr, rng)
        return PruneResult(kept, removed, none, 0, None, None, None, mode)

    bits, unreadable_list = _cached_hashes(paths, method, cache_dir)
    unreadable = np.asarray(sorted(unreadable_list), dtype=np.int64)
    readable = np.setdiff1d(np.arange(n, dtype=np.int64), unreadable)
    distances = hamming_matrix(bits[readable])
    kept_local, removed_local = hash_prune(distances, thr, rng)
    removed = np.union1d(readable[removed_local], unreadable)
    result = PruneResult(
        kept=readable[kept_local], removed=removed, unreadable=unreadable,
        groups=_distinct_groups(duplicate_groups(distances, thr)), method=method,
        threshold_distance=threshold_distance(distances, thr),
        max_distance=int(distances.max()) if distances.size else 0, mode=mode,
    )
    log.info("%s pruning kept %d of %d images (%d duplicates, %d unreadable; threshold %.1f of %d bits)",
             method, result.kept.size, n, removed_local.size, unreadable.size, result.threshold_distance,
             result.max_distance)
    return result
