"""Dataset-level operations behind ``udet-data``: generate, import/convert, split, write TFRecords."""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .catalog import DatasetSpec
from .errors import DatasetError
from .manifest import Manifest

log = logging.getLogger(__name__)


def generate_dataset(spec: DatasetSpec, force: bool = False, progress: bool = True) -> dict[str, Manifest]:
    """Generate (or, when up to date and not ``force``, just read) a synthetic dataset's splits."""
    if spec.kind != "synthetic":
        raise DatasetError(
            f"dataset {spec.name!r} is kind {spec.kind!r}: it cannot be generated; use action=convert to import "
            f"its labels, or pick a synthetic dataset (dataset=synthetic, synthetic_fog, ...)"
        )
    from .synthetic import ensure_synthetic, generate_synthetic, synthetic_config_from_dict

    cfg = synthetic_config_from_dict(spec.generator or {})
    if force:
        return generate_synthetic(spec.root, cfg, progress=progress)
    return ensure_synthetic(spec.root, cfg)


def split_manifest(manifest: Manifest, fractions: Mapping[str, float], seed: int = 0) -> dict[str, Manifest]:
    """Split a manifest's images at random (seeded) into named parts with the given fractions.

    Fractions must be positive and sum to 1 (within 1e-6); the last part takes the rounding rest.
    """
    names = list(fractions)
    values = np.array([float(fractions[n]) for n in names])
    if len(names) == 0 or np.any(values <= 0) or abs(values.sum() - 1.0) > 1e-6:
        raise DatasetError(f"split fractions {dict(fractions)} must be positive and sum to 1; fix convert.split_fractions")
    ids = np.array(manifest.image_ids)
    order = np.random.default_rng(seed).permutation(len(ids))
    bounds = np.round(np.cumsum(values) * len(ids)).astype(int)
    bounds[-1] = len(ids)
    parts, start = {}, 0
    for name, end in zip(names, bounds):
        parts[name] = manifest.subset(sorted(ids[order[start:end]].tolist()))
        start = end
    return parts


@dataclass
class ImportResult:
    """What :func:`import_dataset` wrote: manifest paths per split and the conversion counts."""

    manifests: dict[str, str] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)


def read_source(
    src: str | Path, src_format: str, classes: Sequence[str] | None, image_dir: str | Path | None,
    options: Mapping[str, Any] | None = None, image_out_dir: str | Path | None = None,
):
    """Read labels of any supported format into a Manifest; returns ``(manifest, counts dict)``."""
    if src_format == "tfrecord":
        from .tfrecord import tfrecord_files, tfrecords_to_manifest

        if image_out_dir is None:
            raise DatasetError("reading TFRecords needs a folder to write the images to (convert.image_dir)")
        manifest = tfrecords_to_manifest(tfrecord_files(src), Path(image_out_dir), class_names=classes)
        return manifest, {"images": len(manifest), "objects": manifest.num_annotations}
    from .converters import READERS

    if src_format not in READERS:
        raise DatasetError(f"unknown source format {src_format!r}; available: {sorted(READERS) + ['tfrecord']}")
    manifest, report = READERS[src_format](
        Path(src), classes=classes, image_dir=Path(image_dir) if image_dir else None, **dict(options or {})
    )
    return manifest, asdict(report)


def import_dataset(
    spec: DatasetSpec, src: str | Path, src_format: str, image_dir: str | Path | None,
    fractions: Mapping[str, float], seed: int = 0, options: Mapping[str, Any] | None = None,
) -> ImportResult:
    """Convert a user's labels into the dataset's split manifests (``spec.root / spec.splits[...]``).

    With one fraction entry the whole source becomes that split; otherwise it is split at random (seeded).
    """
    manifest, counts = read_source(src, src_format, spec.classes, image_dir, options, image_out_dir=spec.image_root)
    unknown = [name for name in fractions if name not in spec.splits]
    if unknown:
        raise DatasetError(
            f"convert.split_fractions names splits {unknown} that dataset {spec.name!r} does not define "
            f"(its splits: {sorted(spec.splits)})"
        )
    parts = split_manifest(manifest, fractions, seed) if len(fractions) > 1 else {next(iter(fractions)): manifest}
    result = ImportResult(counts=dict(counts))
    for name, part in parts.items():
        path = spec.split_path(name)
        part.write(path)
        result.manifests[name] = str(path)
        result.counts[f"{name}_images"] = len(part)
        result.counts[f"{name}_objects"] = part.num_annotations
    return result


def export_manifest(manifest: Manifest, dst: str | Path, dst_format: str, options: Mapping[str, Any] | None = None) -> dict:
    """Write a manifest in another format (coco, kitti, bdd100k, yolo, voc, tfrecord); returns counts."""
    options = dict(options or {})
    if dst_format == "tfrecord":
        from .tfrecord import write_tfrecords

        report = write_tfrecords(
            manifest, Path(dst), split=options.pop("split", "data"), num_shards=int(options.pop("num_shards", 4))
        )
        return asdict(report)
    from .converters import WRITERS

    if dst_format not in WRITERS:
        raise DatasetError(f"unknown target format {dst_format!r}; available: {sorted(WRITERS) + ['tfrecord']}")
    return asdict(WRITERS[dst_format](manifest, Path(dst), **options))


def corrupted_copy(manifest: Manifest, name: str, severity: int, folder: str | Path, seed: int = 0,
                   progress: bool = True) -> tuple[Manifest, int]:
    """A copy of a split's images with a corruption applied, as a manifest whose image root is ``folder``.

    Images are written once as PNG under ``folder`` (same relative file names, so ids and GT are unchanged;
    each image seeded with ``seed + image_id``) and reused while ``folder/corruption.json`` records the same
    corruption, severity, seed and source; the folder is replaced atomically otherwise. Unreadable source
    images are skipped and counted.

    Returns:
      ``(manifest of the copies, number of skipped images)``.
    """
    import json

    from PIL import Image
    from tqdm import tqdm

    from ..io_utils import atomic_dir, atomic_write_json, safe_relative_path
    from .corruptions import apply_corruption, validate_corruption
    from .images import UNREADABLE_IMAGE_ERRORS, load_rgb

    try:
        validate_corruption(name, int(severity))
    except ValueError as exc:
        raise DatasetError(f"validation.corruptions: {exc}") from None
    folder = Path(folder)
    stamp = {"corruption": name, "severity": int(severity), "seed": int(seed), "source": str(manifest.source),
             "image_root": str(manifest.image_root), "images": len(manifest)}
    marker = folder / "corruption.json"
    skipped: list[int] = []
    if marker.exists() and json.loads(marker.read_text()).get("stamp") == stamp:
        skipped = json.loads(marker.read_text()).get("skipped", [])
    else:
        with atomic_dir(folder) as tmp:
            for image_id in tqdm(manifest.image_ids, desc=f"{name} {severity}", unit="img", disable=not progress,
                                 leave=False):
                try:
                    image = load_rgb(manifest.image_path(image_id))
                except UNREADABLE_IMAGE_ERRORS as exc:
                    log.warning("skipping unreadable image %s: %s", manifest.image_path(image_id), exc)
                    skipped.append(int(image_id))
                    continue
                out = tmp / safe_relative_path(manifest.image(image_id)["file_name"])
                out.parent.mkdir(parents=True, exist_ok=True)
                corrupted = apply_corruption(image, name, int(severity), seed=int(seed) + int(image_id))
                Image.fromarray(corrupted).save(out, format="PNG")
            atomic_write_json(tmp / "corruption.json", {"stamp": stamp, "skipped": skipped})
    keep = [i for i in manifest.image_ids if i not in set(skipped)]
    copy = manifest.subset(keep)
    copy.image_root = folder
    return copy, len(skipped)
