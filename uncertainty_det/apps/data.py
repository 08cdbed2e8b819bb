"""``udet-data``: generate the synthetic dataset, convert label formats, write TFRecord shards.

Logs counts (images, objects per class, skipped/clipped/dropped) and a sample-grid image to MLflow.
"""
from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from ..data.catalog import dataset_spec_from_config, load_split
from ..data.dataset_ops import export_manifest, generate_dataset, import_dataset, read_source
from ..data.errors import DatasetError
from ..data.visualize import sample_grid
from .common import CONFIG_DIR, plain_config, stage_run

log = logging.getLogger("uncertainty_det.data")


def _log_manifest(tracker, split: str, manifest) -> dict:
    metrics = {
        f"{split}/images": len(manifest),
        f"{split}/objects": manifest.num_annotations,
        f"{split}/clipped_boxes": manifest.sanitize_report.clipped,
        f"{split}/dropped_boxes": manifest.sanitize_report.dropped,
    }
    metrics.update({f"{split}/class/{name}": n for name, n in manifest.class_counts().items()})
    tracker.log_metrics(metrics)
    return metrics


def _generate(cfg: dict, spec, tracker) -> dict:
    manifests = generate_dataset(spec, force=bool(cfg["force"]), progress=bool(cfg["progress"]))
    for split, manifest in manifests.items():
        _log_manifest(tracker, split, manifest)
        log.info("%s/%s: %d images, %d objects", spec.name, split, len(manifest), manifest.num_annotations)
    return manifests


def _convert(cfg: dict, spec, tracker) -> dict:
    conv = cfg["convert"]
    if conv["src"] is None and conv["split"] is None:
        raise DatasetError("action=convert needs convert.src=<labels> (import) or convert.split=<split> (export)")
    if conv["src"] is not None and conv["dst"] is None:
        result = import_dataset(
            spec, conv["src"], conv["src_format"], conv["image_dir"], conv["split_fractions"],
            seed=int(cfg["seed"]), options=conv["reader_options"],
        )
        tracker.log_metrics({f"convert/{k}": v for k, v in result.counts.items() if isinstance(v, (int, float))})
        log.info("wrote %s (%s)", result.manifests, result.counts)
        return {name: load_split(spec, name, generate_if_missing=False) for name in result.manifests}
    if conv["dst"] is None:
        raise DatasetError("action=convert with convert.split needs convert.dst=<folder> and convert.dst_format")
    if conv["src"] is not None:
        manifest, counts = read_source(conv["src"], conv["src_format"], None, conv["image_dir"], conv["reader_options"],
                                       image_out_dir=Path(conv["dst"]) / "images")
        tracker.log_metrics({f"read/{k}": v for k, v in counts.items() if isinstance(v, (int, float))})
        name = "source"
    else:
        manifest = load_split(spec, conv["split"])
        name = conv["split"]
    counts = export_manifest(manifest, conv["dst"], conv["dst_format"], conv["writer_options"])
    tracker.log_metrics({f"write/{k}": v for k, v in counts.items() if isinstance(v, (int, float))})
    log.info("wrote %s as %s to %s (%s)", name, conv["dst_format"], conv["dst"], counts)
    return {name: manifest}


def _tfrecord(cfg: dict, spec, tracker) -> dict:
    from ..data.tfrecord import write_tfrecords

    splits = cfg["tfrecord"]["splits"] or list(spec.splits)
    manifests = {}
    for split in splits:
        manifest = load_split(spec, split)
        report = write_tfrecords(manifest, Path(cfg["tfrecord"]["out_dir"]), split,
                                 num_shards=int(cfg["tfrecord"]["num_shards"]), progress=bool(cfg["progress"]))
        tracker.log_metrics({
            f"{split}/tfrecord_images": report.num_images, f"{split}/tfrecord_objects": report.num_objects,
            f"{split}/missing_images": report.missing_images, f"{split}/corrupt_images": report.corrupt_images,
        })
        log.info("%s: %d images in %d shards under %s", split, report.num_images, len(report.files),
                 cfg["tfrecord"]["out_dir"])
        manifests[split] = manifest
    return manifests


ACTIONS = {"generate": _generate, "convert": _convert, "tfrecord": _tfrecord}


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="data")
def main(cfg: DictConfig) -> None:
    with stage_run(cfg, "data") as tracker:
        plain = plain_config(cfg)
        if plain["action"] not in ACTIONS:
            raise DatasetError(f"unknown action {plain['action']!r}; use one of {sorted(ACTIONS)}")
        spec = dataset_spec_from_config(plain["dataset"])
        manifests = ACTIONS[plain["action"]](plain, spec, tracker)
        for split, manifest in list(manifests.items())[:1]:
            if len(manifest) and plain["sample_grid"]["num_images"] > 0:
                grid = sample_grid(manifest, int(plain["sample_grid"]["num_images"]), seed=int(plain["seed"]))
                tracker.log_image(grid, f"samples_{split}.png")


if __name__ == "__main__":
    main()
