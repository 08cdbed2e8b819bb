"""Run an exported detector over a selection of images and collect one Detections table."""
from __future__ import annotations

import time

import pandas as pd
from tqdm import tqdm

from .. import tables
from .image_sources import ImageSelection, iter_batches


def predict_images(detector, selection: ImageSelection, batch_size: int = 8,
                   progress: bool = True, timings: list | None = None,
                   sizes: list | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Detections of every readable image of ``selection`` (equal-size images are batched together).

    Args:
      detector: an :class:`~uncertainty_det.inference.export.ExportedDetector`.
      selection: images from :mod:`.image_sources`.
      batch_size: images per serving call.
      timings: when a list, ``(seconds, images)`` of every serving call is appended to it.
      sizes: when a list, ``(image_id, file_name, height, width)`` of every image read is appended to it.
    Returns:
      ``(detections table, paths of files that failed to load)``.
    """
    failed: list[str] = []
    frames = []
    bar = tqdm(total=len(selection.items), desc="predict", unit="img", disable=not progress)
    for items, images in iter_batches(selection.items, batch_size, on_error=lambda it, exc: failed.append(str(it.path))):
        start = time.perf_counter()
        outputs = detector.predict(images)
        if timings is not None:
            timings.append((time.perf_counter() - start, len(items)))
        frames.append(tables.detections_to_frame(
            outputs, [it.image_id for it in items], [it.file_name for it in items], detector.class_names,
            detector.has_aleatoric, detector.has_epistemic))
        if sizes is not None:
            sizes.extend((it.image_id, it.file_name, int(images.shape[1]), int(images.shape[2])) for it in items)
        bar.update(len(items))
    bar.close()
    if not frames:
        return tables.empty_frame(detector.has_aleatoric, detector.has_epistemic), failed
    return pd.concat(frames, ignore_index=True), failed
