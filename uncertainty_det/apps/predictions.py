"""Detections of a dataset split for the stages that score a trained run (evaluate, calibrate, validate).

Two sources, chosen with ``source=``: ``checkpoint`` (the run's ``train/final.weights.h5`` through the
:class:`~uncertainty_det.inference.predictor.Predictor`, post-processing from the stage config) and ``export``
(the SavedModel written by ``udet-export``, with the post-processing baked into it).
"""
from __future__ import annotations

import dataclasses

from ..errors import UserError
from ..workspace import require_upstream


def _predict_checkpoint(plain: dict, workspace, manifest, timings: list | None = None, cache: dict | None = None):
    from ..data.pipeline import input_config_from_dict
    from ..inference.postprocess import postprocess_config_from_dict
    from ..inference.predictor import Predictor

    require_upstream(workspace.final_weights, "train", f"udet-train run_name={workspace.run_name}",
                     what="trained weights")
    try:
        post = postprocess_config_from_dict(plain["postprocess"])
        inputs = dataclasses.replace(input_config_from_dict(plain["input"]), batch_size=int(plain["batch_size"]))
    except ValueError as exc:
        raise UserError(f"invalid config: {exc}") from exc
    cache = {} if cache is None else cache
    if "predictor" not in cache:
        cache["predictor"] = Predictor.from_train_dir(workspace.train, post, mc_samples=int(plain["mc_samples"]),
                                                      mc_seed=plain["mc_seed"])
    return cache["predictor"].predict_manifest(manifest, inputs, progress=True, timings=timings)


def _predict_export(plain: dict, workspace, manifest, timings: list | None = None, cache: dict | None = None):
    from ..inference.export import load_export
    from ..inference.image_sources import images_from_manifest
    from ..inference.infer import predict_images

    require_upstream(workspace.export, "export", f"udet-export run_name={workspace.run_name}", what="export")
    cache = {} if cache is None else cache
    if "export" not in cache:
        cache["export"] = load_export(workspace.export)
    detector = cache["export"]
    selection = images_from_manifest(manifest)
    frame, _ = predict_images(detector, selection, batch_size=int(plain["batch_size"]), timings=timings)
    return frame


SOURCES = {"checkpoint": _predict_checkpoint, "export": _predict_export}


def predict_split(plain: dict, workspace, manifest, timings: list | None = None, cache: dict | None = None):
    """The Detections table of ``manifest``'s images from ``plain["source"]`` (a key of :data:`SOURCES`).

    ``plain`` needs ``source``, ``batch_size`` and, for ``checkpoint``, ``mc_samples``, ``mc_seed``, ``input``
    and ``postprocess``. ``timings``: per-call ``(seconds, images)`` are appended to it. ``cache``: a dict
    that keeps the loaded model between calls with the same ``plain`` and workspace (several splits or
    corrupted copies predicted by one stage: the weights or export are loaded and traced once).
    """
    source = plain.get("source")
    if source not in SOURCES:
        raise UserError(f"unknown source {source!r}; use one of {sorted(SOURCES)} (source=export needs udet-export "
                        f"first)")
    return SOURCES[source](plain, workspace, manifest, timings, cache)
