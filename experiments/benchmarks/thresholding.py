"""Thresholding optimiser time: the seeded combination fit on 100k detections x 4 uncertainties.

Synthetic detections: a latent localisation quality ``q ~ U(0, 1)`` gives the IoU with the GT
(``iou = 0.3 + 0.65 q`` plus noise); a detection is correct at IoU threshold t when ``iou >= t`` and its
class is right (90 %). Four uncertainties carry different, noisy views of ``1 - q`` and of the class error,
so the optimum mixes them. Reported side by side in one run:

* one objective evaluation (the metric of the combined uncertainty at 6 IoU thresholds), ms, by the
  partition fast path the optimiser uses and by the full sorted ROC;
* the full :func:`fit_combination` (differential evolution + the uniform/one-hot candidates + metrics of
  every single uncertainty), s, and the number of objective evaluations it made;
* FD@CD(b) of the combination and of the best single uncertainty (sanity check: combination >= best).

Target (issue 5): the fit finishes in < 30 s.

    python experiments/benchmarks/thresholding.py
    python experiments/benchmarks/thresholding.py --detections 20000 --mode fd --budget 0.9
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from uncertainty_det.thresholding import combine as combine_mod  # noqa: E402
from uncertainty_det.thresholding import DEFAULT_IOU_THRESHOLDS, OptimiserSettings, fit_combination  # noqa: E402
from uncertainty_det.thresholding.metrics import budget_from_roc, roc_table  # noqa: E402

NAMES = ["entropy_cal", "al_rel_cal", "ep_rel", "ep_cls"]


def detections(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(values [n, 4], cd [T, n])`` of the synthetic problem (module docstring)."""
    rng = np.random.default_rng(seed)
    q = rng.uniform(0.0, 1.0, n)
    iou = np.clip(0.3 + 0.65 * q + rng.normal(0.0, 0.05, n), 0.0, 1.0)
    right_class = rng.uniform(size=n) < 0.9
    cd = (iou[None, :] >= DEFAULT_IOU_THRESHOLDS[:, None]) & right_class[None, :]
    values = np.stack([
        np.where(right_class, 0.4, 1.2) + rng.gamma(2.0, 0.2, n),          # entropy: class errors
        0.02 + 0.1 * (1.0 - q) * rng.lognormal(0.0, 0.4, n),                 # relative aleatoric σ: localisation
        0.01 + 0.05 * (1.0 - q) * rng.lognormal(0.0, 0.8, n),                # relative epistemic σ: noisier
        rng.gamma(2.0, 0.1, n) + 0.1 * ~right_class,                         # logit std: weak
    ], axis=1)
    return values, cd


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--detections", type=int, default=100_000)
    p.add_argument("--budget", type=float, default=0.95)
    p.add_argument("--mode", default="cd", choices=["cd", "fd"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", type=int, default=1, help="timed fits; the median is reported")
    args = p.parse_args(argv)

    values, cd = detections(args.detections, args.seed)
    normalised = combine_mod.MinMaxNormaliser.fit(values).transform(values)
    w = np.full(values.shape[1], 0.25)
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        combine_mod.objective_value(normalised @ w, cd, args.budget, args.mode)
        times.append(time.perf_counter() - t0)
    eval_ms = 1000 * statistics.median(times)
    roc_times = []
    for _ in range(5):
        t0 = time.perf_counter()
        budget_from_roc(roc_table(normalised @ w, cd), args.budget, args.mode).metric
        roc_times.append(time.perf_counter() - t0)
    roc_ms = 1000 * statistics.median(roc_times)

    calls = {"n": 0}
    original = combine_mod.objective_value

    def counted(*a, **k):
        calls["n"] += 1
        return original(*a, **k)

    combine_mod.objective_value = counted
    fit_times = []
    try:
        for _ in range(args.runs):
            calls["n"] = 0
            t0 = time.perf_counter()
            model = fit_combination(values, cd, NAMES, args.budget, args.mode,
                                    settings=OptimiserSettings(seed=args.seed))
            fit_times.append(time.perf_counter() - t0)
    finally:
        combine_mod.objective_value = original
    fit_s = statistics.median(fit_times)
    key = "fd_at_cd" if args.mode == "cd" else "cd_at_fd"
    singles = {name: model.metrics[name][key] for name in NAMES}
    best = max(singles, key=singles.get)
    print(f"{args.detections} detections x {len(NAMES)} uncertainties, {cd.shape[0]} IoU thresholds, "
          f"mode={args.mode}, budget={args.budget}")
    print(f"  one objective evaluation      {eval_ms:8.2f} ms  (partition fast path)")
    print(f"  the same via the full ROC     {roc_ms:8.2f} ms  (ratio {roc_ms / eval_ms:.1f}x)")
    print(f"  fit_combination               {fit_s:8.2f} s  ({calls['n']} objective evaluations; target < 30 s)")
    print(f"  weights                       {np.round(model.weights, 3).tolist()}")
    print(f"  {key} combination           {model.metrics['combination'][key]:8.4f}")
    print(f"  {key} best single ({best}) {singles[best]:8.4f}")
    print(f"  {key} singles                 " + ", ".join(f"{k} {v:.4f}" for k, v in singles.items()))


if __name__ == "__main__":
    main()
