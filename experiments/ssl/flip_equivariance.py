"""Feature-level horizontal-flip equivariance of a trained detector (the assumption behind CSD's consistency).

    python experiments/ssl/flip_equivariance.py <run>/csd/model/train --manifest <data>/annotations/test.json

For each BiFPN level: the relative squared difference between ``F(x)`` and the back-flipped ``F(flip(x))``,
compared column j with column j + s for s in (-1, 0, +1); s = 0 is the mirror registration CSD assumes
(anchor j of the image <-> anchor w-1-j of the flipped image). A network whose features mirror exactly has 0 at
s = 0; a smaller value at s = +-1 means the mirrored features sit one cell off (e.g. the asymmetric 'same'
padding of stride-2 convolutions on even sizes, which also gives the network an absolute-position signal).
"""
from __future__ import annotations

import argparse

import numpy as np
import tensorflow as tf

from uncertainty_det.data.manifest import Manifest
from uncertainty_det.data.pipeline import InputConfig, build_manifest_dataset
from uncertainty_det.inference.predictor import load_detector


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("train_dir")
    p.add_argument("--manifest", required=True, help="a COCO manifest of images to test (e.g. the test split)")
    p.add_argument("--images", type=int, default=16)
    args = p.parse_args()
    model, cfg, _ = load_detector(args.train_dir)
    manifest = Manifest.read(args.manifest)
    ds, _ = build_manifest_dataset(manifest.subset(manifest.image_ids[: args.images]),
                                   InputConfig(batch_size=args.images, image_size=tuple(cfg.image_size)), training=False)
    images = next(iter(ds))["image"]
    plain, flipped = model.features(images), model.features(tf.image.flip_left_right(images))
    for level, (a, b) in enumerate(zip(plain, flipped), start=cfg.min_level):
        a, g = a.numpy(), b.numpy()[:, :, ::-1]
        w = a.shape[2]
        cells = []
        for s in (-1, 0, 1):
            if w - abs(s) < 1:
                cells.append("  -  ")
                continue
            x, y = a[:, :, max(0, -s): w - max(0, s)], g[:, :, max(0, s): w - max(0, -s)]
            cells.append(f"{((x - y) ** 2).mean() / (0.5 * (x ** 2).mean() + 0.5 * (y ** 2).mean()):.3f}")
        print(f"level {level} ({w} cells wide): relative squared difference at shift -1 / 0 / +1 = "
              + " / ".join(cells))


if __name__ == "__main__":
    main()
