"""Class lists and name maps of the catalog datasets (KITTI, BDD100K, CODA).

Ids are 1-based positions in the lists below (``KITTI_CLASSES[0]`` is id 1). Names are matched
case-insensitively, with spaces, ``_`` and ``-`` treated alike (see :func:`name_key`), so
``Person_sitting`` matches ``person_sitting`` and ``traffic_light`` matches ``traffic light``.

* ``KITTI_CLASSES``: the 7 KITTI 2D object classes; ``Misc`` and ``DontCare`` are not classes and are
  dropped (and counted) by the KITTI reader.
* ``BDD100K_CLASSES``: the 10 BDD100K detection classes; ``BDD100K_ALIASES`` maps the names of the newer
  BDD100K label releases (``person``, ``bike``, ``motor``) onto them.
* ``CODA_TO_KITTI`` / ``CODA_TO_BDD``: CODA category name -> target class name. CODA has no rider or train,
  so those BDD classes are never produced; CODA categories missing from a map are dropped.
"""
from __future__ import annotations

import re

KITTI_CLASSES: tuple[str, ...] = (
    "car", "van", "truck", "pedestrian", "person_sitting", "cyclist", "tram",
)

BDD100K_CLASSES: tuple[str, ...] = (
    "pedestrian", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
    "traffic light", "traffic sign",
)

#: Newer BDD100K releases (``det_20``) renamed three classes; readers map them back.
BDD100K_ALIASES: dict[str, str] = {
    "person": "pedestrian",
    "bike": "bicycle",
    "motor": "motorcycle",
}

#: CODA category -> KITTI class (ids 4, 6, 1, 3).
CODA_TO_KITTI: dict[str, str] = {
    "pedestrian": "pedestrian",
    "cyclist": "cyclist",
    "car": "car",
    "truck": "truck",
}

#: CODA category -> BDD100K class (ids 1, 3, 4, 5, 8, 7, 9, 10).
CODA_TO_BDD: dict[str, str] = {
    "pedestrian": "pedestrian",
    "car": "car",
    "truck": "truck",
    "bus": "bus",
    "bicycle": "bicycle",
    "motorcycle": "motorcycle",
    "traffic_light": "traffic light",
    "traffic light": "traffic light",
    "traffic_sign": "traffic sign",
    "traffic sign": "traffic sign",
}

_SEPARATORS = re.compile(r"[\s_\-]+")


def name_key(name: str) -> str:
    """Normalised class-name key: lower case, runs of spaces/``_``/``-`` become one ``_``."""
    return _SEPARATORS.sub("_", str(name).strip().lower())
