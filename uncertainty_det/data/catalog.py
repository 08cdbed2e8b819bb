"""Dataset catalog: the plain description of a dataset (from ``conf/dataset/<name>.yaml``) and split loading.

A dataset is either ``kind: synthetic`` (generated on first use by :mod:`.synthetic`) or
``kind: files`` (the user's data, converted once to COCO manifests with ``udet-data action=convert``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from .errors import DatasetError
from .manifest import Manifest

log = logging.getLogger(__name__)

DATASET_KINDS = ("synthetic", "files")


@dataclass
class DatasetSpec:
    """What a dataset config names: classes, where images and split manifests are, the model input size."""

    name: str
    kind: str
    root: Path
    image_dir: str
    splits: dict[str, str]
    classes: list[str]
    input_size: tuple[int, int]
    calib_split: str | None = None
    generator: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def image_root(self) -> Path:
        return self.root / self.image_dir

    def split_path(self, split: str) -> Path:
        """Path of a split's manifest JSON; unknown split -> DatasetError listing the known ones."""
        if split not in self.splits:
            raise DatasetError(
                f"dataset {self.name!r} has no split {split!r}; available: {sorted(self.splits)} "
                f"(set dataset.splits.{split}=<manifest.json> to add one)"
            )
        return self.root / self.splits[split]


def dataset_spec_from_config(cfg: Mapping[str, Any]) -> DatasetSpec:
    """Build a :class:`DatasetSpec` from a plain ``dataset`` config mapping (already resolved)."""
    cfg = dict(cfg)
    missing = [k for k in ("name", "kind", "root", "splits", "classes") if cfg.get(k) in (None, "???")]
    if missing:
        raise DatasetError(f"dataset config {cfg.get('name', '?')!r} lacks {missing}; set them in conf/dataset/ or by override")
    if cfg["kind"] not in DATASET_KINDS:
        raise DatasetError(f"dataset {cfg['name']!r}: kind {cfg['kind']!r} is not one of {list(DATASET_KINDS)}")
    known = {"name", "kind", "root", "image_dir", "splits", "classes", "input_size", "calib_split", "generator"}
    return DatasetSpec(
        name=str(cfg["name"]),
        kind=str(cfg["kind"]),
        root=Path(cfg["root"]),
        image_dir=str(cfg.get("image_dir") or "images"),
        splits={str(k): str(v) for k, v in dict(cfg["splits"]).items()},
        classes=[str(c) for c in cfg["classes"]],
        input_size=tuple(int(v) for v in cfg.get("input_size") or (512, 512)),
        calib_split=cfg.get("calib_split"),
        generator=dict(cfg["generator"]) if cfg.get("generator") else None,
        extra={k: v for k, v in cfg.items() if k not in known},
    )


def _ensure_synthetic(spec: DatasetSpec) -> None:
    from .synthetic import ensure_synthetic, synthetic_config_from_dict

    ensure_synthetic(spec.root, synthetic_config_from_dict(spec.generator or {}))


def load_split(spec: DatasetSpec, split: str, generate_if_missing: bool = True, sanitize: bool = True) -> Manifest:
    """Read one split's manifest; a synthetic dataset is generated first when missing or outdated.

    Raises DatasetError naming the command to run when a user dataset has not been converted yet,
    and when the manifest's classes differ from the config's.
    """
    path = spec.split_path(split)
    if spec.kind == "synthetic" and generate_if_missing:
        _ensure_synthetic(spec)
    if not path.is_file():
        if spec.kind == "synthetic":
            hint = f"udet-data dataset={spec.name} action=generate"
        else:
            hint = f"udet-data dataset={spec.name} action=convert convert.src=<labels> convert.src_format=<format>"
        raise DatasetError(f"split {split!r} of dataset {spec.name!r} not found at {path}; create it with: {hint}")
    manifest = Manifest.read(path, sanitize=sanitize)
    if manifest.class_names != spec.classes:
        raise DatasetError(
            f"manifest {path} has classes {manifest.class_names} but dataset {spec.name!r} is configured with "
            f"{spec.classes}; fix dataset.classes or re-create the manifest"
        )
    return manifest


def available_datasets(config_dir: str | Path) -> list[str]:
    """Names of the dataset configs in ``<config_dir>/dataset/``."""
    return sorted(p.stem for p in (Path(config_dir) / "dataset").glob("*.yaml"))
