"""The pixel normalisation recorded at training time wins over the inference config's."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from uncertainty_det.data.pipeline import InputConfig  # noqa: E402
from uncertainty_det.inference.predictor import Predictor, with_trained_normalization  # noqa: E402
from uncertainty_det.model.config import DetectorConfig  # noqa: E402
from uncertainty_det.model.efficientdet import build_efficientdet  # noqa: E402
from uncertainty_det.model.training import write_detector_config  # noqa: E402

TRAINED = {"mean": [10.0, 20.0, 30.0], "std": [2.0, 3.0, 4.0]}


def test_trained_normalization_replaces_the_config_and_warns(caplog):
    cfg = InputConfig(image_size=(64, 64))
    with caplog.at_level(logging.WARNING):
        out = with_trained_normalization(cfg, TRAINED)
    assert out.mean == (10.0, 20.0, 30.0) and out.std == (2.0, 3.0, 4.0)
    assert out.image_size == cfg.image_size and "training normalisation" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        same = with_trained_normalization(out, TRAINED)
    assert same == out and caplog.text == ""
    assert with_trained_normalization(cfg, None) is cfg  # runs trained before it was recorded


def test_predictor_from_train_dir_reads_the_normalization(tmp_path):
    config = DetectorConfig(num_classes=2, image_size=(64, 64), max_level=6, fpn_num_filters=16,
                            fpn_cell_repeats=1, box_class_repeats=1, depth_coefficient=0.25)
    model = build_efficientdet(config)
    model(np.zeros((1, 64, 64, 3), np.float32))
    model.save_weights(str(tmp_path / "final.weights.h5"))
    write_detector_config(tmp_path / "detector_config.json", config, ["a", "b"], (64, 64), normalization=TRAINED)
    predictor = Predictor.from_train_dir(tmp_path)
    assert predictor.normalization == {"mean": (10.0, 20.0, 30.0), "std": (2.0, 3.0, 4.0)}
    info = json.loads((tmp_path / "detector_config.json").read_text())
    info.pop("normalization")
    (tmp_path / "detector_config.json").write_text(json.dumps(info))
    assert Predictor.from_train_dir(tmp_path).normalization is None


def test_predict_manifest_normalises_like_training(tmp_path, monkeypatch):
    import uncertainty_det.data.pipeline as pipeline

    config = DetectorConfig(num_classes=2, image_size=(64, 64), max_level=6, fpn_num_filters=16,
                            fpn_cell_repeats=1, box_class_repeats=1, depth_coefficient=0.25)
    predictor = Predictor(build_efficientdet(config), config, normalization=TRAINED)
    seen = {}

    class Stop(Exception):
        pass

    def capture(manifest, cfg, **kwargs):
        seen["cfg"] = cfg
        raise Stop

    monkeypatch.setattr(pipeline, "build_manifest_dataset", capture)
    with pytest.raises(Stop):
        predictor.predict_manifest(object(), InputConfig(image_size=(128, 128)))
    assert seen["cfg"].mean == (10.0, 20.0, 30.0) and seen["cfg"].std == (2.0, 3.0, 4.0)
    assert seen["cfg"].image_size == (64, 64)
