"""MC-dropout inference cost: deterministic pass vs naive MC vs head-only cached MC (DESIGN §7, §14).

For each model size and batch size, in one process, all inside ``tf.function`` (graph mode, no XLA), warm-up
(tracing) excluded, median over ``--runs`` interleaved rounds:

* ``det``   one deterministic pass ``model(images)``;
* ``naive`` T full passes, a Python loop over the model with MC dropout on (what the reference does);
* ``full``  the whole net once on the T-times tiled batch (``mc_forward(mode="full")``), for reference;
* ``head``  backbone + BiFPN once, heads once on the T-times tiled features (``mc_forward(mode="head")``).

The config is the project default for uncertainty work (``mcdropout_lossatt_head``: 8A box head, head
dropout 0.05). Ratios printed: ``head / det`` (target <= 1.5x) and ``naive / head`` (target >= 5x).

    python experiments/benchmarks/mc_dropout.py                 # tiny @128, d0 @256; batch 1 and 16; T = 10
    python experiments/benchmarks/mc_dropout.py --d0-512        # d0 at its native 512 px
    python experiments/benchmarks/mc_dropout.py --models tiny --batches 1 4 16 --runs 9
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

METHODS = ("det", "naive", "full", "head")
MODELS = {  # name -> (conf/model file, default input side)
    "tiny": ("tiny", 128),
    "small": ("small", 256),
    "d0": ("efficientdet_d0", 256),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["tiny", "d0"], choices=sorted(MODELS))
    p.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    p.add_argument("--samples", type=int, default=10, help="T, MC samples (default 10)")
    p.add_argument("--runs", type=int, default=5, help="timed rounds per measurement; the median is reported")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per function (tracing included)")
    p.add_argument("--d0-512", action="store_true", help="run d0 at its native 512 px instead of 256")
    p.add_argument("--num-classes", type=int, default=6)
    p.add_argument("--uncertainty", default="mcdropout_lossatt_head", help="conf/uncertainty file name")
    p.add_argument("--policy", default="float32",
                   help="Keras dtype policy, e.g. mixed_bfloat16 (outputs stay float32); default float32")
    p.add_argument("--skip-naive-above", type=float, default=float("inf"),
                   help="skip naive MC when one deterministic pass takes longer than this many ms")
    return p.parse_args(argv)


def _load_yaml(path: Path) -> dict:
    import yaml

    with open(path) as f:
        return yaml.safe_load(f)


def make_config(model: str, side: int, num_classes: int, uncertainty: str):
    from uncertainty_det.model.config import detector_config_from_dicts

    model_cfg = _load_yaml(REPO / "conf" / "model" / f"{MODELS[model][0]}.yaml")
    model_cfg["image_size"] = [side, side]
    unc_cfg = _load_yaml(REPO / "conf" / "uncertainty" / f"{uncertainty}.yaml")
    return detector_config_from_dicts(model_cfg, unc_cfg, num_classes)


def make_functions(model, samples: int, mode: str):
    """tf.functions of the four methods, each ``fn(images) -> dict of tensors``."""
    import tensorflow as tf

    from uncertainty_det.model.mc import mc_forward

    @tf.function
    def det(images):
        return model(images, training=False)

    @tf.function
    def naive(images):
        outs = [model(images, training=False, mc=True) for _ in range(samples)]
        return {k: tf.stack([o[k] for o in outs]) for k in outs[0]}

    @tf.function
    def full(images):
        return mc_forward(model, images, samples, "full")

    @tf.function
    def head(images):
        return mc_forward(model, images, samples, "head")

    return {"det": det, "naive": naive, "full": full, "head": head}


def _run(fn, images) -> float:
    t0 = time.perf_counter()
    out = fn(images)
    for v in out.values():
        v.numpy()
    return (time.perf_counter() - t0) * 1000.0


def time_case(model, images, samples: int, args) -> dict[str, float]:
    fns = make_functions(model, samples, "head")
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    t_trace = {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        for _ in range(args.warmup):
            _run(fn, images)
        t_trace[name] = time.perf_counter() - t0
    det_ms = statistics.median(_run(fns["det"], images) for _ in range(2))
    active = [m for m in METHODS if not (m == "naive" and det_ms > args.skip_naive_above)]
    for _ in range(args.runs):  # interleaved rounds: drifts hit every method alike
        for name in active:
            times[name].append(_run(fns[name], images))
    result = {m: (statistics.median(v) if v else float("nan")) for m, v in times.items()}
    result["warmup_s"] = sum(t_trace.values())
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    import keras
    import tensorflow as tf

    from uncertainty_det.model.efficientdet import build_efficientdet, parameter_count

    keras.mixed_precision.set_global_policy(args.policy)

    devices = [d.device_type for d in tf.config.list_physical_devices()]
    print(f"TensorFlow {tf.__version__}, devices {devices}, {os.cpu_count()} CPU cores, {platform.processor() or ''}")
    print(f"T = {args.samples}, median of {args.runs} interleaved runs, warm-up {args.warmup} calls excluded, "
          f"uncertainty config {args.uncertainty}, {args.num_classes} classes, dtype policy {args.policy}\n")
    rows = []
    rng = np.random.default_rng(0)
    for name in args.models:
        side = MODELS[name][1]
        if name == "d0" and args.d0_512:
            side = 512
        cfg = make_config(name, side, args.num_classes, args.uncertainty)
        model = build_efficientdet(cfg)
        params = parameter_count(model)["total"]
        for batch in args.batches:
            images = tf.constant(rng.standard_normal((batch, side, side, 3)).astype(np.float32))
            r = time_case(model, images, args.samples, args)
            rows.append((name, side, params, batch, r))
            print(f"  measured {name}@{side} b{batch}: det {r['det']:.1f} ms, head {r['head']:.1f} ms "
                  f"(warm-up {r['warmup_s']:.0f} s)", flush=True)
        del model
        tf.keras.backend.clear_session() if hasattr(tf, "keras") else None

    header = (f"{'model':<6} {'px':>4} {'params':>8} {'batch':>5} | {'det ms':>8} {'naive ms':>9} "
              f"{'full ms':>8} {'head ms':>8} | {'head/det':>8} {'naive/head':>10} {'full/head':>9}")
    print("\n" + header)
    print("-" * len(header))
    for name, side, params, batch, r in rows:
        print(f"{name:<6} {side:>4} {params / 1e6:>7.2f}M {batch:>5} | {r['det']:>8.1f} {r['naive']:>9.1f} "
              f"{r['full']:>8.1f} {r['head']:>8.1f} | {r['head'] / r['det']:>7.2f}x {r['naive'] / r['head']:>9.2f}x "
              f"{r['full'] / r['head']:>8.2f}x")
    print("\ntargets: head/det <= 1.5x, naive/head >= 5x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
