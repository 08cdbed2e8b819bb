"""Extra labeled sets for the teacher: rare-class crop collages (RCC, reference §5.4) and manifest merging.

* :func:`rare_target_classes` — the default RCC target classes: the classes whose normalised log class
  weight (:func:`~uncertainty_det.ssl.class_weights.log_class_weights` of the labeled object counts, scaled
  to ``[0, 1]``: 0 = the most frequent class, 1 = the rarest) is at least ``rare_weight_min``.
* :func:`class_ids_from_names` — class names -> 1-based ids, with a clear error for unknown names.
* :func:`build_collage_set` — crops around every target-class box of the labeled images, pasted into
  collages (:func:`~uncertainty_det.ssl.rcc.extract_rare_crops`, :func:`~uncertainty_det.ssl.rcc.make_collages`),
  written as PNG files and returned as a manifest of ONLY the new images (ids above the pool's), optionally
  with a copy of every labeled image that shows a target class (the reference's ``full_im``).
* :func:`collage_figure` — a grid of a few collages with their boxes (matplotlib ``Figure``, no pyplot state).
* :func:`merge_manifests` — one manifest with the images and annotations of two (e.g. the labeled pool
  subset plus the collages), whatever their image roots.

NumPy/Pillow/matplotlib; no TensorFlow.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Mapping, Sequence

import numpy as np

from ..data.boxes import yxyx_to_xywh
from ..data.manifest import Manifest
from ..errors import UserError
from .class_weights import log_class_weights
from .rcc import extract_rare_crops, make_collages

log = logging.getLogger(__name__)

__all__ = [
    "CollageSet",
    "LabeledSetError",
    "build_collage_set",
    "class_ids_from_names",
    "collage_figure",
    "labeled_class_counts",
    "merge_manifests",
    "rare_target_classes",
]


class LabeledSetError(UserError, ValueError):
    """Bad input to the labeled-set builders (unknown class, colliding ids, other categories ...)."""


# ----------------------------------------------------------------------------------------------- classes


def labeled_class_counts(manifest: Manifest, image_ids: Sequence[int] | None = None) -> dict[int, int]:
    """``{class_id: number of objects}`` over ``image_ids`` (all images when ``None``), every category of the
    manifest listed (zeros included), in class-id order."""
    counts = {int(c): 0 for c in manifest.category_ids}
    ids = manifest.image_ids if image_ids is None else [int(i) for i in image_ids]
    for i in ids:
        for c in manifest.objects(i).class_ids.tolist():
            counts[int(c)] += 1
    return counts


def rare_target_classes(counts: Mapping[int, int], rare_weight_min: float = 0.5) -> list[int]:
    """The rare classes by labeled object count (the default RCC targets).

    The weights are :func:`~uncertainty_det.ssl.class_weights.log_class_weights` with ``lowest=0`` and
    ``highest=1``, so a class's weight is how far it lies from the most frequent class (0) to the rarest one
    (1) on the ``1 / ln(n_c)`` scale, the span taken over the classes with ``n_c > 1`` (so the rarest of them
    weighs 1); classes with exactly one object weigh 1 as well. A class is a target when its
    weight is ``>= rare_weight_min`` and it has at least one labeled object (a class without objects has
    nothing to crop). With every class at the same count (no spread) all weigh 0, so only
    ``rare_weight_min <= 0`` selects them. Returns class ids in id order.
    """
    try:
        threshold = float(rare_weight_min)
    except (TypeError, ValueError):
        raise LabeledSetError(f"rare_weight_min must be a number in [0, 1], got {rare_weight_min!r}") from None
    if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise LabeledSetError(f"rare_weight_min must be a number in [0, 1], got {rare_weight_min!r}")
    weights = log_class_weights(dict(counts), lowest=0.0, highest=1.0)
    return [c for c, w in weights.items() if counts[c] > 0 and w >= threshold]


def class_ids_from_names(names: Sequence[str], categories: Sequence[Mapping]) -> list[int]:
    """The 1-based ids of class ``names`` (order kept, repeats removed); an unknown name raises
    :class:`LabeledSetError` listing the known ones."""
    if isinstance(names, (str, bytes)):
        names = [names]
    by_name = {str(c["name"]): int(c["id"]) for c in categories}
    unknown = [str(n) for n in names if str(n) not in by_name]
    if unknown:
        raise LabeledSetError(f"unknown class name(s) {unknown}; the dataset's classes are {list(by_name)}")
    out: list[int] = []
    for n in names:
        if by_name[str(n)] not in out:
            out.append(by_name[str(n)])
    if not out:
        raise LabeledSetError("the list of target classes is empty; name at least one class or pass null")
    return out


# ----------------------------------------------------------------------------------------------- collages


@dataclass
class CollageSet:
    """What :func:`build_collage_set` made.

    manifest: the new images only (collages, then full-image copies) with ``image_root`` = the image folder;
    target_class_ids: the classes cropped around; images_with_targets: labeled image ids with a target box
    (in labeled order); skipped_images: those of them that could not be read; crops / collages / full_images:
    counts; collage_hw: ``(H, W)`` of every collage.
    """

    manifest: Manifest
    target_class_ids: list[int]
    images_with_targets: list[int]
    skipped_images: list[int]
    crops: int
    collages: int
    full_images: int
    collage_hw: tuple[int, int]


def most_common_size(manifest: Manifest, image_ids: Sequence[int]) -> tuple[int, int]:
    """The most frequent ``(height, width)`` of the images (ties: the first seen)."""
    if not len(image_ids):
        raise LabeledSetError("no labeled images: cannot size the collages")
    sizes = Counter((int(manifest.image(i)["height"]), int(manifest.image(i)["width"])) for i in image_ids)
    return sizes.most_common(1)[0][0]


def _annotation(ann_id: int, image_id: int, class_id: int, box_yxyx: np.ndarray) -> dict:
    x, y, w, h = (float(v) for v in yxyx_to_xywh(np.asarray(box_yxyx, np.float64).reshape(1, 4))[0])
    return {"id": int(ann_id), "image_id": int(image_id), "category_id": int(class_id), "bbox": [x, y, w, h],
            "area": w * h, "iscrowd": 0}


def build_collage_set(
    pool: Manifest,
    labeled_ids: Sequence[int],
    target_class_ids: Sequence[int],
    image_dir: str | os.PathLike,
    *,
    seed: int = 0,
    low: float = 0.5,
    high: float = 1.0,
    max_boxes: int = 100,
    augment: bool = False,
    scale: bool = False,
    full_images: bool = False,
    collage_hw: Sequence[int] | None = None,
    first_image_id: int | None = None,
    first_annotation_id: int | None = None,
) -> CollageSet:
    """Rare-class crop collages of the labeled images, written to ``image_dir`` (reference §5.4 RCC).

    1. The labeled images that hold a box of a target class are read (unreadable ones are skipped with a
       warning and listed in ``skipped_images``).
    2. ``rng = numpy.random.default_rng(seed)`` drives :func:`~uncertainty_det.ssl.rcc.extract_rare_crops`
       (context ``U(low, high)``, every other labeled box visible in a crop carried along, crops with
       ``>= max_boxes`` boxes skipped) and then :func:`~uncertainty_det.ssl.rcc.make_collages` (shuffle,
       optional per-crop ``augment`` and ``scale``, at most ``max_boxes`` boxes per collage).
    3. Collage ``k`` (1-based) is written as ``image_dir/collage_<k:06d>.png`` with image id
       ``first_image_id + k - 1`` (default: the pool's largest image id + 1, so the ids never collide with
       the pool's) and image attribute ``rcc: collage``.
    4. With ``full_images``, every readable labeled image with a target box is copied byte for byte to
       ``image_dir/full_<source id><suffix>`` as one more image (``rcc: full_image``, ``source_image_id``)
       with all its annotations (the reference's ``full_im``: those images are seen twice per epoch).

    Annotation ids start at ``first_annotation_id`` (default: the pool's largest annotation id + 1). The
    collage size ``collage_hw`` defaults to the most common ``(H, W)`` of the labeled images. The returned
    manifest holds only the new images; its ``image_root`` is ``image_dir``. A seed fixes every pixel.

    Raises:
      LabeledSetError: no labeled images, unknown labeled ids / target classes.
    """
    labeled = [int(i) for i in labeled_ids]
    if not labeled:
        raise LabeledSetError("no labeled images: the collages are cut from the labeled set")
    pool_ids = set(pool.image_ids)
    unknown = [i for i in labeled if i not in pool_ids]
    if unknown:
        raise LabeledSetError(f"labeled image ids {unknown[:5]} are not in the pool manifest {pool.source}; "
                              f"the split does not belong to this dataset split")
    targets = [int(c) for c in target_class_ids]
    bad = [c for c in targets if c not in pool.category_ids]
    if bad or not targets:
        raise LabeledSetError(f"target class ids {bad or targets} are not classes of {pool.source} "
                              f"({pool.category_ids})")
    hw = tuple(int(v) for v in collage_hw) if collage_hw is not None else most_common_size(pool, labeled)
    first_img = int(first_image_id) if first_image_id is not None else max(pool.image_ids, default=0) + 1
    first_ann = (int(first_annotation_id) if first_annotation_id is not None
                 else max((int(a["id"]) for a in pool.annotations), default=0) + 1)
    target_set = set(targets)

    from ..data.images import UNREADABLE_IMAGE_ERRORS, load_rgb

    with_targets = [i for i in labeled if target_set & set(pool.objects(i).class_ids.tolist())]
    images, boxes, classes, readable, skipped = [], [], [], [], []
    for i in with_targets:
        try:
            img = load_rgb(pool.image_path(i))
        except UNREADABLE_IMAGE_ERRORS as exc:
            log.warning("RCC: skipping unreadable labeled image %s (id %d): %s", pool.image_path(i), i, exc)
            skipped.append(i)
            continue
        objs = pool.objects(i)
        images.append(img)
        boxes.append(objs.boxes)
        classes.append(objs.class_ids)
        readable.append(i)
    rng = np.random.default_rng(int(seed))
    crops = extract_rare_crops(images, boxes, classes, targets, rng, low=low, high=high, max_boxes=max_boxes)
    collages = make_collages(crops, hw, rng, max_boxes=max_boxes, augment=bool(augment), scale=bool(scale))

    from PIL import Image

    image_dir = Path(image_dir)
    image_dir.mkdir(parents=True, exist_ok=True)
    out_images, out_anns = [], []
    next_img, next_ann = first_img, first_ann
    for k, (canvas, cboxes, cclasses) in enumerate(collages, start=1):
        name = f"collage_{k:06d}.png"
        Image.fromarray(canvas).save(image_dir / name)
        out_images.append({"id": next_img, "file_name": name, "height": int(canvas.shape[0]),
                           "width": int(canvas.shape[1]), "rcc": "collage"})
        for box, c in zip(cboxes, cclasses):
            out_anns.append(_annotation(next_ann, next_img, int(c), box))
            next_ann += 1
        next_img += 1
    n_full = 0
    if full_images:
        anns_of: dict[int, list[dict]] = {}
        for ann in pool.annotations:
            anns_of.setdefault(int(ann["image_id"]), []).append(ann)
        for i in readable:
            src = pool.image_path(i)
            name = f"full_{i}{Path(src).suffix.lower() or '.png'}"
            shutil.copyfile(src, image_dir / name)
            entry = {k: v for k, v in pool.image(i).items() if k not in ("id", "file_name")}
            entry.update({"id": next_img, "file_name": name, "rcc": "full_image", "source_image_id": int(i)})
            out_images.append(entry)
            for ann in anns_of.get(i, []):
                out_anns.append({**ann, "id": next_ann, "image_id": next_img})
                next_ann += 1
            next_img += 1
            n_full += 1
    data = {"info": {"description": "RCC rare-class crop collages", "seed": int(seed),
                     "target_class_ids": targets},
            "images": out_images, "annotations": out_anns, "categories": [dict(c) for c in pool.categories]}
    manifest = Manifest.from_coco(data, source=f"<rcc collages of {pool.source}>", image_root=image_dir)
    return CollageSet(manifest=manifest, target_class_ids=targets, images_with_targets=with_targets,
                      skipped_images=skipped, crops=len(crops), collages=len(collages), full_images=n_full,
                      collage_hw=hw)


def collage_figure(manifest: Manifest, max_images: int = 6, columns: int = 3, title: str | None = None):
    """A grid of the first ``max_images`` images of ``manifest`` with their boxes and class names drawn.

    Returns a matplotlib ``Figure`` (no pyplot state; save it with ``fig.savefig``).
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    from ..data.images import load_rgb

    ids = manifest.image_ids[: max(0, int(max_images))]
    names = {c["id"]: c["name"] for c in manifest.categories}
    palette = colormaps["tab10"]
    cols = max(1, min(int(columns), len(ids) or 1))
    rows = max(1, math.ceil(len(ids) / cols))
    fig = Figure(figsize=(3.2 * cols, 3.2 * rows + (0.4 if title else 0.0)))
    if not ids:
        ax = fig.add_subplot(1, 1, 1)
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no collages", ha="center", va="center")
    for k, i in enumerate(ids):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.set_axis_off()
        try:
            ax.imshow(load_rgb(manifest.image_path(i)), interpolation="nearest")
        except (OSError, ValueError):
            ax.text(0.5, 0.5, "unreadable", ha="center", va="center", transform=ax.transAxes)
            continue
        objs = manifest.objects(i)
        for (ymin, xmin, ymax, xmax), c in zip(objs.boxes, objs.class_ids.tolist()):
            colour = palette((int(c) - 1) % 10)
            ax.add_patch(Rectangle((xmin, ymin), xmax - xmin, ymax - ymin, fill=False, edgecolor=colour,
                                   linewidth=1.2))
            ax.text(xmin, ymin, names.get(int(c), str(c)), fontsize=6, color="white", va="bottom",
                    bbox={"facecolor": colour, "alpha": 0.7, "pad": 0.5, "linewidth": 0})
        ax.set_title(f"{manifest.image(i)['file_name']} ({len(objs)} boxes)", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------- merging


def _root(manifest: Manifest) -> str:
    return os.path.abspath(manifest.image_root if manifest.image_root is not None else os.curdir)


def merge_manifests(base: Manifest, extra: Manifest) -> Manifest:
    """One manifest with the images and annotations of ``base`` followed by those of ``extra``.

    Image ids are kept: an id in both raises :class:`LabeledSetError`. Annotation ids are kept when the two
    sets are disjoint; otherwise every annotation id of ``extra`` is shifted by the largest id of ``base``
    (annotation ids only need to be unique). The categories (ids and names) must be equal.

    Image paths: a manifest image is found at ``image_root / file_name``, and ``file_name`` must be a
    relative path without ``..`` (the manifest validator and ``Manifest.image_path`` reject absolute names,
    although ``pathlib`` would let an absolute name win the join). So when the two image roots differ, the
    merged ``image_root`` is their deepest common folder (both taken absolute, symlinks not resolved) and
    every ``file_name`` becomes relative to it, e.g. ``data/synthetic/images/000001.png`` and
    ``runs/R/stac/rcc/images/collage_000001.png`` under ``outputs/``; with equal roots nothing changes.
    ``merged.image_path(i)`` is the same file as in the source manifest for every image. The sanitize
    reports are added; ``info`` is ``base``'s plus ``merged_from``.
    """
    if not isinstance(base, Manifest) or not isinstance(extra, Manifest):
        raise LabeledSetError("merge_manifests takes two Manifest objects")
    cats_b = [(int(c["id"]), str(c["name"])) for c in base.categories]
    cats_e = [(int(c["id"]), str(c["name"])) for c in extra.categories]
    if cats_b != cats_e:
        raise LabeledSetError(f"cannot merge {extra.source} into {base.source}: the categories differ "
                              f"({cats_e} vs {cats_b}); both must come from the same dataset")
    both = sorted(set(base.image_ids) & set(extra.image_ids))
    if both:
        raise LabeledSetError(f"cannot merge {extra.source} into {base.source}: image ids {both[:5]} are in both; "
                              f"give the extra images ids above {max(base.image_ids)}")
    root_b, root_e = _root(base), _root(extra)
    if root_b == root_e:
        root, prefix_b, prefix_e = root_b, None, None
    else:
        try:
            root = os.path.commonpath([root_b, root_e])
        except ValueError:
            raise LabeledSetError(f"cannot merge {extra.source} into {base.source}: their image folders "
                                  f"{root_b} and {root_e} share no common folder (different drives)") from None
        prefix_b, prefix_e = os.path.relpath(root_b, root), os.path.relpath(root_e, root)

    def images(manifest: Manifest, prefix: str | None) -> list[dict]:
        out = []
        for img in manifest.images:
            img = dict(img)
            if prefix not in (None, os.curdir):
                img["file_name"] = PurePath(prefix, img["file_name"]).as_posix()
            out.append(img)
        return out

    ann_b = [dict(a) for a in base.annotations]
    ann_e = [dict(a) for a in extra.annotations]
    ids_b = {int(a["id"]) for a in ann_b}
    if ids_b & {int(a["id"]) for a in ann_e}:
        shift = max(ids_b)
        for a in ann_e:
            a["id"] = int(a["id"]) + shift
    info = {k: v for k, v in base.info.items() if k != "image_root"}
    info["merged_from"] = [str(base.source), str(extra.source)]
    data = {"info": info, "images": images(base, prefix_b) + images(extra, prefix_e),
            "annotations": ann_b + ann_e, "categories": [dict(c) for c in base.categories]}
    merged = Manifest.from_coco(data, source=f"{base.source} + {extra.source}", image_root=root, sanitize=False)
    merged.sanitize_report = base.sanitize_report + extra.sanitize_report
    return merged
