"""Active-learning selection time: scoring + selecting on a 100k-image pool with 20 detections per image.

A synthetic Detections table of the unlabeled pool (2M rows, 6 classes, shuffled so rows are not grouped
by image; list column ``ep_logit_std`` of Python lists made in row order, as ``read_detections`` gives them;
calibrated entropy) is scored with every strategy
(:func:`image_scores`) and 5 % of the pool is selected (:func:`select`); the median of ``--runs`` is
printed per strategy. Target (issue 6): < 2 s for every strategy.

    python experiments/benchmarks/al_selection.py
    python experiments/benchmarks/al_selection.py --images 20000 --per-image 10
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from uncertainty_det.active_learning import image_scores, parse_strategy_name, select  # noqa: E402
from uncertainty_det.thresholding import MinMaxNormaliser, ThresholdModel  # noqa: E402

STRATEGIES = ["random", "entropy", "calib_entropy", "mean_entropy", "mcclass", "box_albox", "norm_box_mcbox",
              "perc_calib_norm_box_albox", "nee_combo", "ental", "epuncert", "alluncert", "highep_lowal", "sota",
              "bottomk_entropy"]


def pool(n_images: int, per_image: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = n_images * per_image
    y0, x0 = rng.uniform(0, 400, (2, n))
    h, w = rng.uniform(10, 150, (2, n))
    df = pd.DataFrame({
        "image_id": np.repeat(np.arange(n_images, dtype=np.int64), per_image),
        "class_id": rng.integers(1, 7, n), "score": rng.uniform(0, 1, n), "entropy": rng.gamma(2, 0.3, n),
        "ymin": y0, "xmin": x0, "ymax": y0 + h, "xmax": x0 + w,
        **{f"al_{c}": rng.gamma(2, 2, n) for c in ("ymin", "xmin", "ymax", "xmax")},
        **{f"ep_{c}": rng.gamma(2, 1, n) for c in ("ymin", "xmin", "ymax", "xmax")},
    })
    df["entropy_cal"] = df["entropy"] * 0.9
    for c in ("ymin", "xmin", "ymax", "xmax"):
        df[f"al_{c}_cal"] = df[f"al_{c}"] * 0.5
    df = df.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    # Python lists created in row order, as read_detections creates them from a Parquet file
    df["ep_logit_std"] = rng.gamma(2, 0.1, (n, 6)).tolist()
    return df


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=100_000)
    p.add_argument("--per-image", type=int, default=20)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--floor", type=float, default=0.0)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    dets = pool(args.images, args.per_image)
    print(f"pool: {args.images} images x {args.per_image} detections = {len(dets)} rows "
          f"(built in {time.perf_counter() - t0:.1f} s); selecting 5 % = {args.images // 20} images")
    ids = np.arange(args.images, dtype=np.int64)
    dets["al_rel"] = 0.0                                   # not used; keeps the frame's layout realistic
    model = ThresholdModel(["entropy_cal", "al_rel_cal"], MinMaxNormaliser(np.zeros(2), np.array([3.0, 0.2])),
                           np.array([0.6, 0.4]), np.array([0.5]), np.array([0.5]), 0.5, 0.95, "cd")
    k = args.images // 20
    print(f"{'strategy':30s} {'median s':>9s}  (target < 2 s)")
    for name in STRATEGIES:
        s = parse_strategy_name(name)
        times = []
        for r in range(args.runs):
            t0 = time.perf_counter()
            scores = image_scores(dets, ids, s, args.floor, np.random.default_rng(r), threshold_model=model)
            chosen = select(scores, k, s.select) if s.score != "random" else np.argsort(scores)[-k:]
            times.append(time.perf_counter() - t0)
        assert chosen.size == k
        print(f"{name:30s} {statistics.median(times):9.3f}")


if __name__ == "__main__":
    main()
