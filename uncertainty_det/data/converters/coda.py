"""CODA (corner cases for autonomous driving), read-only.

Layout on disk::

    CODA/annotations.json     COCO-style JSON (``bbox=[x, y, w, h]`` pixels), CODA's own categories
    CODA/images/...           the images (``file_name`` relative to this folder)

CODA's categories are remapped by name onto the classes of the model that is evaluated on it:

* ``target="kitti"`` (default): :data:`~.classes.CODA_TO_KITTI` onto the 7 KITTI classes
  (pedestrian -> 4, cyclist -> 6, car -> 1, truck -> 3);
* ``target="bdd100k"``: :data:`~.classes.CODA_TO_BDD` onto the 10 BDD100K classes (pedestrian -> 1,
  car -> 3, truck -> 4, bus -> 5, motorcycle -> 7, bicycle -> 8, traffic light -> 9, traffic sign -> 10).

Every other CODA category is dropped and counted, and images left without any kept object are
skipped and counted (``skip_empty``). Annotations are grouped by ``image_id``, so their order in the
file does not matter (the reference paired consecutive runs with a sorted file list by position).
Image sizes come from the JSON (``height``/``width``), else from the image headers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..manifest import Manifest
from .classes import BDD100K_CLASSES, CODA_TO_BDD, CODA_TO_KITTI, KITTI_CLASSES, name_key
from .coco import load_json, read_coco_data
from .common import ClassMapper, ConversionReport

TARGETS = {
    "kitti": (KITTI_CLASSES, CODA_TO_KITTI),
    "bdd100k": (BDD100K_CLASSES, CODA_TO_BDD),
}


def coda_mapper(target: str, classes: Sequence[str] | None = None):
    """``(name -> id or None, categories)`` of a CODA remap target.

    Only CODA categories listed in the target's map are kept; ``classes`` overrides the target's class
    list (ids are then positions in ``classes``).
    """
    key = str(target).lower().replace("-", "").replace("_", "")
    key = {"bdd": "bdd100k"}.get(key, key)
    if key not in TARGETS:
        raise ValueError(f"unknown CODA target {target!r}; choose one of {sorted(TARGETS)}")
    default_classes, remap = TARGETS[key]
    classes_mapper = ClassMapper(list(classes) if classes is not None else default_classes)
    allowed = {name_key(src): dst for src, dst in remap.items()}

    def mapper(name: str) -> int | None:
        target_name = allowed.get(name_key(name))
        return classes_mapper(target_name) if target_name is not None else None

    return mapper, classes_mapper.categories


def read_coda(
    src: Path,
    *,
    classes: Sequence[str] | None = None,
    image_dir: Path | None = None,
    target: str = "kitti",
    require_images: bool = False,
    skip_empty: bool = True,
) -> tuple[Manifest, ConversionReport]:
    """Read CODA's ``annotations.json`` remapped to ``target`` (``kitti`` or ``bdd100k``).

    Args:
      classes: target class list overriding the KITTI/BDD100K default (ids = positions).
      image_dir: image folder (default ``src.parent/images`` when it exists, else ``src.parent``).
      require_images: skip (and count) images whose file is missing or unreadable.
      skip_empty: skip (and count) images without any kept object (reference behaviour: True).
    """
    src = Path(src)
    data = load_json(src)
    if image_dir is None:
        image_dir = src.parent / "images" if (src.parent / "images").is_dir() else src.parent
    mapper, categories = coda_mapper(target, classes)
    return read_coco_data(
        data, src, Path(image_dir), f"coda->{target}", mapper, categories, require_images, skip_empty
    )
