"""Decoding speed and accuracy: lognormal vs sample vs nflow vs falsedec (vs lognormal_full).

Decodes ``--anchors`` random anchors (codes ~ N(0, 0.5), sigma ~ U(0.01, --sigma-max)) with each method
inside a ``tf.function`` (tracing and ``--warmup`` calls excluded), repeats ``--runs`` times interleaved
over the methods and reports the median. Prints one table: ms per 100k anchors, speed relative to
``sample`` (sample time / method time), and the max relative difference of boxes and std vs lognormal
(|x - ref| / |ref| over all corners; box differences are also given relative to lognormal's std, since a
corner near 0 makes the plain relative difference meaningless), plus the median relative std difference.

    python experiments/benchmarks/decoding.py
    python experiments/benchmarks/decoding.py --anchors 100000 --samples 100 --runs 15 --dtype float32
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

METHODS = ("lognormal", "sample", "nflow", "falsedec", "lognormal_full")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--anchors", type=int, default=100_000, help="anchors decoded per call (default 100k)")
    p.add_argument("--samples", type=int, default=100, help="Monte-Carlo samples of `sample` (default 100)")
    p.add_argument("--quadrature-points", type=int, default=32, help="nflow Gauss-Hermite nodes (default 32)")
    p.add_argument("--sigma-max", type=float, default=1.0, help="sigma ~ U(0.01, sigma_max) (default 1.0)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="input dtype")
    p.add_argument("--runs", type=int, default=9, help="timed calls per method; the median is reported")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per method after tracing")
    p.add_argument("--methods", nargs="+", default=list(METHODS), help="methods to time (lognormal always)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def make_inputs(n: int, sigma_max: float, dtype: str, seed: int):
    """``codes [n,4]``, ``sigma [n,4]``, ``anchors [n,4]`` (``[ymin, xmin, ymax, xmax]`` px on a 512x1024 canvas)."""
    rng = np.random.default_rng(seed)
    centre = rng.uniform([0, 0], [512, 1024], (n, 2))
    size = np.exp(rng.uniform(np.log(8), np.log(512), (n, 2)))
    anchors = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    codes = rng.normal(0.0, 0.5, (n, 4))
    sigma = rng.uniform(0.01, sigma_max, (n, 4))
    return codes.astype(dtype), sigma.astype(dtype), anchors.astype(dtype)


def _max_rel(x: np.ndarray, ref: np.ndarray) -> float:
    x, ref = x.astype(np.float64), ref.astype(np.float64)
    return float(np.max(np.abs(x - ref) / np.maximum(np.abs(ref), 1e-12)))


def main(argv=None) -> int:
    args = parse_args(argv)
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # one tf.function per method: the retracing notice is spurious
    from uncertainty_det.inference.decoding import decode, get_decoder

    methods = ["lognormal"] + [m for m in args.methods if m != "lognormal"]
    for m in methods:
        get_decoder(m)  # fail early on a typo
    options = {"sample": {"samples": args.samples, "seed": 0},
               "nflow": {"quadrature_points": args.quadrature_points}}
    codes, sigma, anchors = make_inputs(args.anchors, args.sigma_max, args.dtype, args.seed)
    codes_t, sigma_t, anchors_t = (tf.constant(a) for a in (codes, sigma, anchors))

    fns, outputs = {}, {}
    for m in methods:
        opts = options.get(m, {})
        fns[m] = tf.function(lambda c, s, a, _m=m, _o=opts: {
            k: v for k, v in decode(_m, c, s, a, **_o).items() if k in ("boxes", "std")
        })
        outputs[m] = {k: v.numpy() for k, v in fns[m](codes_t, sigma_t, anchors_t).items()}  # trace
        for _ in range(args.warmup):
            fns[m](codes_t, sigma_t, anchors_t)

    times = {m: [] for m in methods}
    for _ in range(args.runs):  # interleaved so drifts in machine load hit every method alike
        for m in methods:
            t0 = time.perf_counter()
            out = fns[m](codes_t, sigma_t, anchors_t)
            out["std"].numpy()
            times[m].append(time.perf_counter() - t0)

    per100k = {m: statistics.median(t) * 1e3 * 100_000 / args.anchors for m, t in times.items()}
    ref = outputs["lognormal"]
    print(f"decoding {args.anchors} anchors, {args.dtype} inputs, sigma ~ U(0.01, {args.sigma_max}), "
          f"sample: {args.samples} samples, nflow: {args.quadrature_points} nodes, "
          f"median of {args.runs} runs (tf.function, warm-up excluded), "
          f"TF {tf.__version__}, {os.cpu_count()} CPUs")
    header = (f"{'method':<16}{'ms / 100k':>11}{'x vs sample':>13}"
              f"{'max rel d(box)':>16}{'max d(box)/std':>16}{'max rel d(std)':>16}{'med rel d(std)':>16}")
    print(header)
    print("-" * len(header))
    for m in methods:
        speed = (per100k["sample"] / per100k[m]) if "sample" in per100k else float("nan")
        box, std = outputs[m]["boxes"], outputs[m]["std"]
        d_box = _max_rel(box, ref["boxes"])
        d_box_std = float(np.max(np.abs(box.astype(np.float64) - ref["boxes"]) / ref["std"].astype(np.float64)))
        d_std = _max_rel(std, ref["std"])
        med_std = float(np.median(np.abs(std.astype(np.float64) / ref["std"] - 1.0)))
        print(f"{m:<16}{per100k[m]:>11.2f}{speed:>13.1f}{d_box:>16.2e}{d_box_std:>16.2e}{d_std:>16.2e}"
              f"{med_std:>16.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
