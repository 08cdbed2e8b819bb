"""Box-σ calibration throughput: fit and transform of every box method on 1M detections x 4 coordinates.

Synthetic matched pairs (boxes 20-150 px, σ_true ~ U(1, 10) px, residual ~ N(0, σ_true), predicted σ = 3·σ_true
plus noise, 6 classes). For each method: wall time of ``fit`` on all pairs and of ``transform`` on all pairs
(median of ``--runs``), transform throughput in σ values per second, and the held-out coverage ECE after
calibration as a sanity check. Targets (issue): fit < 10 s, transform > 5M values/s.

    python experiments/benchmarks/calibration.py
    python experiments/benchmarks/calibration.py --detections 200000 --runs 3
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from uncertainty_det.calibration import BOX_CALIBRATORS, make_box_calibrator  # noqa: E402
from uncertainty_det.calibration.metrics import coverage_ece  # noqa: E402


def pairs(n: int, seed: int, classes: int = 6):
    rng = np.random.default_rng(seed)
    sigma_true = rng.uniform(1.0, 10.0, (n, 4))
    pred = rng.uniform(0.0, 500.0, (n, 4))
    pred[:, 2:] = pred[:, :2] + rng.uniform(20.0, 150.0, (n, 2))
    gt = pred + rng.normal(size=(n, 4)) * sigma_true
    sigma = 3.0 * sigma_true + np.abs(rng.normal(0.0, 0.3, (n, 4)))
    return pred, gt, sigma, rng.integers(1, classes + 1, n)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--detections", type=int, default=1_000_000)
    p.add_argument("--runs", type=int, default=3, help="timed repeats; the median is reported")
    p.add_argument("--methods", nargs="+", default=list(BOX_CALIBRATORS))
    args = p.parse_args(argv)
    pred, gt, sigma, cls = pairs(args.detections, 0)
    hold = pairs(100_000, 1)
    values = 4 * args.detections
    print(f"{args.detections:,} detections x 4 coordinates = {values:,} σ values, median of {args.runs} runs")
    print(f"{'method':<20}{'fit s':>8}{'transform s':>13}{'M values/s':>12}{'held-out cov. ECE':>19}")
    print(f"{'(uncalibrated)':<20}{'':>8}{'':>13}{'':>12}{coverage_ece(hold[1] - hold[0], hold[2]):>19.4f}")
    for name in args.methods:
        fit_t, tr_t = [], []
        for _ in range(args.runs):
            cal = make_box_calibrator(name)
            start = time.perf_counter()
            cal.fit(pred, gt, sigma, cls)
            fit_t.append(time.perf_counter() - start)
            start = time.perf_counter()
            cal.transform(pred, sigma, cls)
            tr_t.append(time.perf_counter() - start)
        fit_s, tr_s = statistics.median(fit_t), statistics.median(tr_t)
        ece = coverage_ece(hold[1] - hold[0], cal.transform(hold[0], hold[2], hold[3]))
        print(f"{name:<20}{fit_s:>8.2f}{tr_s:>13.3f}{values / tr_s / 1e6:>12.1f}{ece:>19.4f}")


if __name__ == "__main__":
    main()
