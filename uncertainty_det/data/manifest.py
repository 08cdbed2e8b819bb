"""The canonical dataset manifest: one COCO-format JSON per split plus an image root.

Images carry ``id, file_name, height, width`` and optional attributes (``weather``, ``timeofday``,
``scene``). Annotations carry ``id, image_id, category_id, bbox=[x, y, w, h]`` (pixels), ``area``,
``iscrowd`` and optionally ``occluded`` (int level, KITTI style 0-3), ``truncated`` (fraction 0-1)
and ``score`` (pseudo-label confidence). Category ids are 1-based.

The reader validates structure and names the file and field of the first problem; out-of-image or
degenerate boxes are clipped or dropped and counted (``Manifest.sanitize_report``).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..io_utils import atomic_write_json, safe_relative_path
from .boxes import SanitizeReport, sanitize_boxes, xywh_to_yxyx, yxyx_to_xywh
from .errors import DatasetError

IMAGE_ATTRIBUTES = ("weather", "timeofday", "scene")


@dataclass
class ObjectArrays:
    """The objects of one image as arrays (N objects).

    boxes: ``[N,4]`` float64 ``[ymin, xmin, ymax, xmax]`` pixels; class_ids: ``[N]`` int64 (1-based);
    ann_ids: ``[N]`` int64; occluded: ``[N]`` int64 (-1 = unknown); truncated: ``[N]`` float64
    (-1 = unknown); scores: ``[N]`` float64 (1.0 for ground truth, the confidence for pseudo-labels).
    """

    boxes: np.ndarray
    class_ids: np.ndarray
    ann_ids: np.ndarray
    occluded: np.ndarray
    truncated: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return int(self.class_ids.shape[0])


def _fail(source: str, where: str, problem: str) -> DatasetError:
    return DatasetError(
        f"manifest {source}: {where}: {problem}; fix that entry or re-create the manifest "
        f"(udet-data action=generate / action=convert)"
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


class Manifest:
    """A validated COCO-style split. Construct with :meth:`read`, :meth:`from_coco` or :class:`ManifestBuilder`."""

    def __init__(
        self,
        images: list[dict],
        annotations: list[dict],
        categories: list[dict],
        image_root: str | os.PathLike | None = None,
        source: str = "<memory>",
        info: dict | None = None,
        sanitize_report: SanitizeReport | None = None,
    ):
        self.images = images
        self.annotations = annotations
        self.categories = sorted(categories, key=lambda c: c["id"])
        self.image_root = Path(image_root) if image_root is not None else None
        self.source = source
        self.info = dict(info or {})
        self.sanitize_report = sanitize_report or SanitizeReport()
        self._image_index = {img["id"]: i for i, img in enumerate(images)}
        self._objects_cache: dict[int, ObjectArrays] | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def read(
        cls, path: str | os.PathLike, image_root: str | os.PathLike | None = None, sanitize: bool = True
    ) -> "Manifest":
        """Read and validate a manifest JSON.

        ``image_root`` defaults to the manifest's ``info.image_root`` (relative to the JSON's folder)
        or else the JSON's folder.
        """
        path = Path(path)
        if not path.is_file():
            raise DatasetError(
                f"manifest {path} does not exist; create it first (udet-data action=generate for the "
                f"synthetic dataset, action=convert for your own labels) or set dataset.root"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DatasetError(f"manifest {path} is not valid JSON ({exc}); re-create it") from exc
        if image_root is None:
            rel = (data.get("info") or {}).get("image_root") if isinstance(data, dict) else None
            image_root = (path.parent / rel) if rel else path.parent
        return cls.from_coco(data, source=str(path), image_root=image_root, sanitize=sanitize)

    @classmethod
    def from_coco(
        cls,
        data: Any,
        source: str = "<dict>",
        image_root: str | os.PathLike | None = None,
        sanitize: bool = True,
    ) -> "Manifest":
        """Validate a COCO dict and build a manifest (clipping/dropping bad boxes when ``sanitize``)."""
        if not isinstance(data, dict):
            raise _fail(source, "top level", f"must be a JSON object, got {type(data).__name__}")
        for key in ("images", "annotations", "categories"):
            if key not in data:
                raise _fail(source, "top level", f"missing the {key!r} list")
            if not isinstance(data[key], list):
                raise _fail(source, key, f"must be a list, got {type(data[key]).__name__}")

        categories = []
        cat_ids: set[int] = set()
        for i, cat in enumerate(data["categories"]):
            where = f"categories[{i}]"
            if not isinstance(cat, dict) or not _is_int(cat.get("id")) or cat["id"] < 1:
                raise _fail(source, where, "'id' must be an integer >= 1 (category ids are 1-based)")
            if not isinstance(cat.get("name"), str) or not cat["name"]:
                raise _fail(source, where, "'name' must be a non-empty string")
            if cat["id"] in cat_ids:
                raise _fail(source, where, f"duplicate category id {cat['id']}")
            cat_ids.add(int(cat["id"]))
            categories.append({"id": int(cat["id"]), "name": cat["name"]})

        images = []
        img_sizes: dict[int, tuple[int, int]] = {}
        for i, img in enumerate(data["images"]):
            where = f"images[{i}]"
            if not isinstance(img, dict):
                raise _fail(source, where, "must be an object")
            if not _is_int(img.get("id")):
                raise _fail(source, where, "'id' must be an integer")
            if img["id"] in img_sizes:
                raise _fail(source, where, f"duplicate image id {img['id']}")
            if not isinstance(img.get("file_name"), str):
                raise _fail(source, where, "'file_name' must be a string")
            try:
                safe_relative_path(img["file_name"])
            except ValueError as exc:
                raise _fail(source, where, str(exc)) from exc
            for dim in ("height", "width"):
                if not _is_int(img.get(dim)) or img[dim] <= 0:
                    raise _fail(source, where, f"'{dim}' must be a positive integer, got {img.get(dim)!r}")
            img_sizes[int(img["id"])] = (int(img["height"]), int(img["width"]))
            images.append(dict(img))

        annotations = []
        ann_ids: set[int] = set()
        report = SanitizeReport()
        for i, ann in enumerate(data["annotations"]):
            where = f"annotations[{i}]"
            if not isinstance(ann, dict):
                raise _fail(source, where, "must be an object")
            if not _is_int(ann.get("id")):
                raise _fail(source, where, "'id' must be an integer")
            if ann["id"] in ann_ids:
                raise _fail(source, where, f"duplicate annotation id {ann['id']}")
            ann_ids.add(int(ann["id"]))
            if ann.get("image_id") not in img_sizes:
                raise _fail(source, where, f"'image_id' {ann.get('image_id')!r} is not an image of this manifest")
            if ann.get("category_id") not in cat_ids:
                raise _fail(
                    source, where, f"'category_id' {ann.get('category_id')!r} is not one of {sorted(cat_ids)}"
                )
            bbox = ann.get("bbox")
            if (
                not isinstance(bbox, (list, tuple))
                or len(bbox) != 4
                or not all(_is_number(v) and math.isfinite(v) for v in bbox)
            ):
                raise _fail(source, where, f"'bbox' must be 4 finite numbers [x, y, w, h], got {bbox!r}")
            for opt in ("occluded", "truncated", "score"):
                if opt in ann and ann[opt] is not None and not _is_number(ann[opt]):
                    raise _fail(source, where, f"'{opt}' must be a number, got {ann[opt]!r}")
            ann = dict(ann)
            if sanitize:
                h, w = img_sizes[ann["image_id"]]
                clipped, keep, rep = sanitize_boxes(xywh_to_yxyx(np.asarray(bbox, dtype=np.float64)), h, w)
                report = report + rep
                if not keep[0]:
                    continue
                if rep.clipped:
                    ann["bbox"] = [float(v) for v in yxyx_to_xywh(clipped)[0]]
                    ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])
            ann.setdefault("area", float(ann["bbox"][2] * ann["bbox"][3]))
            ann.setdefault("iscrowd", 0)
            annotations.append(ann)
        return cls(
            images,
            annotations,
            categories,
            image_root=image_root,
            source=source,
            info=data.get("info") if isinstance(data.get("info"), dict) else None,
            sanitize_report=report,
        )

    # ------------------------------------------------------------------ output
    def to_coco(self) -> dict:
        """The manifest as a COCO dict (``info`` included)."""
        return {
            "info": dict(self.info),
            "images": [dict(img) for img in self.images],
            "annotations": [dict(ann) for ann in self.annotations],
            "categories": [dict(cat) for cat in self.categories],
        }

    def write(self, path: str | os.PathLike, image_root: str | os.PathLike | None = None) -> Path:
        """Write the manifest JSON atomically; ``info.image_root`` is stored relative to the JSON."""
        path = Path(path)
        data = self.to_coco()
        root = Path(image_root) if image_root is not None else self.image_root
        if root is not None:
            data["info"]["image_root"] = os.path.relpath(Path(root).resolve(), path.parent.resolve())
        return atomic_write_json(path, data, indent=None)

    # ------------------------------------------------------------------ access
    @property
    def class_names(self) -> list[str]:
        """Category names in id order."""
        return [c["name"] for c in self.categories]

    @property
    def category_ids(self) -> list[int]:
        return [c["id"] for c in self.categories]

    @property
    def image_ids(self) -> list[int]:
        return [img["id"] for img in self.images]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_annotations(self) -> int:
        return len(self.annotations)

    def image(self, image_id: int) -> dict:
        try:
            return self.images[self._image_index[image_id]]
        except KeyError:
            raise DatasetError(f"manifest {self.source}: no image with id {image_id}") from None

    def image_path(self, image_id: int) -> Path:
        """Absolute-or-relative path of an image: ``image_root / file_name``."""
        rel = safe_relative_path(self.image(image_id)["file_name"])
        return (self.image_root / rel) if self.image_root is not None else rel

    def _build_objects(self) -> dict[int, ObjectArrays]:
        anns = self.annotations
        n = len(anns)
        image_ids = np.fromiter((a["image_id"] for a in anns), dtype=np.int64, count=n)
        boxes = xywh_to_yxyx(np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(n, 4))
        class_ids = np.fromiter((a["category_id"] for a in anns), dtype=np.int64, count=n)
        ann_ids = np.fromiter((a["id"] for a in anns), dtype=np.int64, count=n)

        def _opt(key: str, dtype, default):
            vals = [a.get(key) for a in anns]
            return np.array([default if v is None else v for v in vals], dtype=dtype)

        occluded = _opt("occluded", np.int64, -1)
        truncated = _opt("truncated", np.float64, -1.0)
        scores = _opt("score", np.float64, 1.0)
        order = np.argsort(image_ids, kind="stable")
        sorted_ids = image_ids[order]
        cache: dict[int, ObjectArrays] = {}
        uniq, starts = np.unique(sorted_ids, return_index=True)
        ends = np.append(starts[1:], n)
        empty = ObjectArrays(
            np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0, np.int64),
            np.zeros(0, np.int64), np.zeros(0), np.zeros(0),
        )
        for img_id in self.image_ids:
            cache[img_id] = empty
        for img_id, s, e in zip(uniq.tolist(), starts.tolist(), ends.tolist()):
            idx = order[s:e]
            cache[img_id] = ObjectArrays(
                boxes[idx], class_ids[idx], ann_ids[idx], occluded[idx], truncated[idx], scores[idx]
            )
        return cache

    def objects(self, image_id: int) -> ObjectArrays:
        """All annotations of one image as arrays (see :class:`ObjectArrays`)."""
        if self._objects_cache is None:
            self._objects_cache = self._build_objects()
        if image_id not in self._objects_cache:
            self.image(image_id)  # raises a clear error
        return self._objects_cache[image_id]

    def class_counts(self) -> dict[str, int]:
        """Number of annotations per class name (every class listed, zero included)."""
        counts = {c["id"]: 0 for c in self.categories}
        for ann in self.annotations:
            counts[ann["category_id"]] += 1
        return {c["name"]: counts[c["id"]] for c in self.categories}

    def subset(self, image_ids: Iterable[int]) -> "Manifest":
        """A manifest of the given image ids (in the given order) and their annotations."""
        ids = list(image_ids)
        for img_id in ids:
            self.image(img_id)
        keep = set(ids)
        return Manifest(
            [self.image(i) for i in ids],
            [a for a in self.annotations if a["image_id"] in keep],
            self.categories,
            image_root=self.image_root,
            source=f"{self.source}[subset of {len(ids)}]",
            info=self.info,
        )


@dataclass
class ManifestBuilder:
    """Accumulates images and objects, then builds a validated :class:`Manifest`.

    Used by the synthetic generator and the converters; image and annotation ids are assigned
    consecutively from 1 unless given.
    """

    categories: Sequence[dict]
    info: dict = field(default_factory=dict)
    images: list[dict] = field(default_factory=list)
    annotations: list[dict] = field(default_factory=list)

    def add_image(self, file_name: str, height: int, width: int, image_id: int | None = None, **attrs) -> int:
        """Add an image; extra keyword attributes (weather, timeofday, scene, ...) are stored as-is."""
        img_id = int(image_id) if image_id is not None else len(self.images) + 1
        entry = {"id": img_id, "file_name": str(file_name), "height": int(height), "width": int(width)}
        entry.update({k: v for k, v in attrs.items() if v is not None})
        self.images.append(entry)
        return img_id

    def add_objects(
        self,
        image_id: int,
        boxes_yxyx: np.ndarray,
        class_ids: Sequence[int],
        occluded: Sequence[int] | None = None,
        truncated: Sequence[float] | None = None,
        scores: Sequence[float] | None = None,
    ) -> None:
        """Add ``N`` objects of one image: boxes ``[N,4]`` ``[ymin, xmin, ymax, xmax]`` pixels."""
        boxes = np.asarray(boxes_yxyx, dtype=np.float64).reshape(-1, 4)
        xywh = yxyx_to_xywh(boxes)
        for k in range(boxes.shape[0]):
            ann = {
                "id": len(self.annotations) + 1,
                "image_id": int(image_id),
                "category_id": int(class_ids[k]),
                "bbox": [float(v) for v in xywh[k]],
                "area": float(xywh[k, 2] * xywh[k, 3]),
                "iscrowd": 0,
            }
            if occluded is not None and occluded[k] is not None and occluded[k] >= 0:
                ann["occluded"] = int(occluded[k])
            if truncated is not None and truncated[k] is not None and truncated[k] >= 0:
                ann["truncated"] = float(truncated[k])
            if scores is not None and scores[k] is not None:
                ann["score"] = float(scores[k])
            self.annotations.append(ann)

    def build(self, image_root: str | os.PathLike | None = None, source: str = "<built>", sanitize: bool = True) -> Manifest:
        data = {
            "info": dict(self.info),
            "images": self.images,
            "annotations": self.annotations,
            "categories": [dict(c) for c in self.categories],
        }
        return Manifest.from_coco(data, source=source, image_root=image_root, sanitize=sanitize)


def categories_from_names(names: Sequence[str]) -> list[dict]:
    """``["car", "van"]`` -> ``[{"id": 1, "name": "car"}, {"id": 2, "name": "van"}]``."""
    return [{"id": i + 1, "name": str(n)} for i, n in enumerate(names)]
