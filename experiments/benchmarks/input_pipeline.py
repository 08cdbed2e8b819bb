"""Input-pipeline throughput: images/s of ``build_manifest_dataset`` for augment = none / standard / strong.

Makes (or takes via ``--data``) a set of images, then times training batches for each augmentation mode
(and evaluation batches, ``eval``),
with files decoded every time and with ``cache_decoded`` (so the decode share is visible), in one
process and interleaved over ``--rounds`` rounds (the median is reported). Warm-up batches (tracing,
autotune start-up, filling the shuffle buffer) are excluded.

    python experiments/benchmarks/input_pipeline.py                      # 512 synthetic 256x256 images
    python experiments/benchmarks/input_pipeline.py --data path/to/train.json --input-size 512
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

MODES = ("none", "standard", "strong", "eval")  # eval: training=False (exact letterbox, no shuffle)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="manifest JSON to read (default: generate a synthetic set)")
    p.add_argument("--num-images", type=int, default=512, help="images to generate (default 512)")
    p.add_argument("--image-size", type=int, default=256, help="generated image side, px (default 256)")
    p.add_argument("--input-size", type=int, default=256, help="model input side, px (default 256)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--timed-images", type=int, default=512, help="images timed per measurement (default 512)")
    p.add_argument("--warmup-batches", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    p.add_argument("--workdir", type=Path, help="where to generate images (default: a temp folder)")
    p.add_argument("--no-cache-column", action="store_true", help="skip the cache_decoded measurements")
    return p.parse_args(argv)


def _simple_images(root: Path, num: int, size: int, seed: int = 0):
    """Fallback generator: PIL images with 1-6 random rectangles/ellipses and their boxes."""
    from PIL import Image, ImageDraw

    from uncertainty_det.data.manifest import ManifestBuilder, categories_from_names

    rng = np.random.default_rng(seed)
    builder = ManifestBuilder(categories=categories_from_names(["rectangle", "ellipse"]))
    (root / "images").mkdir(parents=True, exist_ok=True)
    for i in range(num):
        img = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(img)
        boxes, classes = [], []
        for _ in range(int(rng.integers(1, 7))):
            h, w = rng.uniform(0.05, 0.4, 2) * size
            y0, x0 = rng.uniform(0, size - h), rng.uniform(0, size - w)
            cls = int(rng.integers(1, 3))
            shape = draw.rectangle if cls == 1 else draw.ellipse
            shape([x0, y0, x0 + w, y0 + h], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
            boxes.append([y0, x0, y0 + h, x0 + w])
            classes.append(cls)
        name = f"{i:05d}.png"
        img.save(root / "images" / name)
        builder.add_image(name, size, size)
        builder.add_objects(i + 1, np.array(boxes), classes)
    return builder.build(image_root=root / "images")


def make_dataset(args: argparse.Namespace, workdir: Path):
    """The benchmark manifest: ``--data``, else the project's synthetic generator, else simple PIL shapes."""
    from uncertainty_det.data.manifest import Manifest

    if args.data is not None:
        return Manifest.read(args.data), f"{args.data}"
    size = args.image_size
    try:
        from uncertainty_det.data.synthetic import SyntheticConfig, generate_synthetic
    except ImportError:
        return _simple_images(workdir, args.num_images, size), "simple PIL shapes (synthetic module missing)"
    cfg = SyntheticConfig(seed=0, image_size=(size, size), num_images={"bench": args.num_images})
    manifests = generate_synthetic(workdir / "synthetic", cfg, progress=False)
    return manifests["bench"], "uncertainty_det.data.synthetic"


def measure(manifest, mode: str, cache: bool, args: argparse.Namespace) -> float:
    """Images/s of training batches for one augmentation mode, or of evaluation batches (``eval``);
    warm-up excluded."""
    from uncertainty_det.data.pipeline import InputConfig, build_manifest_dataset

    training = mode != "eval"
    cfg = InputConfig(
        image_size=(args.input_size, args.input_size), batch_size=args.batch_size,
        augment=mode if training else "none", repeat=True, shuffle=True, shuffle_buffer=256,
        cache_decoded=cache, seed=0,
    )
    ds, _ = build_manifest_dataset(manifest, cfg, training=training)
    batches = max(1, args.timed_images // args.batch_size)
    it = iter(ds)
    for _ in range(args.warmup_batches):
        next(it)["image"].numpy()
    start = time.perf_counter()
    for _ in range(batches):
        next(it)["image"].numpy()
    return batches * args.batch_size / (time.perf_counter() - start)


def main(argv=None) -> int:
    args = parse_args(argv)
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="udet-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        t0 = time.perf_counter()
        manifest, source = make_dataset(args, workdir)
        print(f"data: {len(manifest)} images from {source} ({time.perf_counter() - t0:.1f} s to prepare)")
        print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs; input {args.input_size}x{args.input_size}, "
              f"batch {args.batch_size}, {args.timed_images} images timed per run, median of {args.rounds} rounds")
        columns = [False] if args.no_cache_column else [False, True]
        results: dict[tuple[str, bool], list[float]] = {(m, c): [] for m in MODES for c in columns}
        for r in range(args.rounds):
            for mode in MODES:
                for cache in columns:
                    results[(mode, cache)].append(measure(manifest, mode, cache, args))
            print(f"  round {r + 1}/{args.rounds} done", file=sys.stderr)
    med = {key: statistics.median(vals) for key, vals in results.items()}
    header = f"{'augment':<10} {'img/s (decode)':>15} {'wall ms/img':>12} {'vs none':>8}"
    if len(columns) == 2:
        header += f" {'img/s (cached)':>15} {'vs none':>8} {'decode share':>13}"
    print(header)
    print("-" * len(header))
    for mode in MODES:
        rate = med[(mode, False)]
        line = f"{mode:<10} {rate:>15.1f} {1000.0 / rate:>12.2f} {rate / med[('none', False)]:>8.2f}"
        if len(columns) == 2:
            cached = med[(mode, True)]
            share = 1.0 - rate / cached  # fraction of per-image time spent reading + decoding
            line += f" {cached:>15.1f} {cached / med[('none', True)]:>8.2f} {share:>13.0%}"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
