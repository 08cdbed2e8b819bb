"""The tf.data input pipeline on a tiny manifest of PNGs with solid coloured objects."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tests.data.test_augment import assert_boxes_on_objects, draw_scene
from uncertainty_det.data.manifest import ManifestBuilder, categories_from_names
from uncertainty_det.data.pipeline import (
    InputConfig,
    PipelineReport,
    build_manifest_dataset,
    build_tfrecord_dataset,
    input_config_from_dict,
)

MEAN = np.array(InputConfig().mean, np.float32)
STD = np.array(InputConfig().std, np.float32)

# id -> (height, width, objects, scores); objects as in draw_scene (class k+1 = colour k)
SCENES = {
    1: (120, 200, [("rect", 10, 20, 50, 80), ("disc", 80.0, 140.0, 20.0), ("rect", 70, 30, 110, 60)], None),
    2: (200, 120, [("rect", 20, 10, 90, 50), ("disc", 150.0, 80.0, 25.0)], [1.0, 0.6]),
    3: (120, 200, [("rect", 5, 5, 25, 25), ("rect", 5, 40, 25, 60), ("rect", 5, 80, 25, 100),
                   ("rect", 60, 5, 80, 25), ("rect", 60, 40, 80, 60), ("rect", 60, 80, 80, 100)],
        [1.0, 1.0, 0.7, 1.0, 1.0, 0.5]),
    4: (150, 150, [], None),
}


def _write_png(path, image: np.ndarray, mode: str = "RGB") -> None:
    img = Image.fromarray(image.astype(np.uint8), "RGB")
    (img.convert(mode) if mode != "RGB" else img).save(path)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Manifest with 4 good images (id 4 is RGBA, without objects), a missing (5) and a corrupt (6) one."""
    root = tmp_path_factory.mktemp("tiny")
    builder = ManifestBuilder(categories=categories_from_names(["red", "green", "blue", "yellow", "magenta", "cyan"]))
    truth = {}
    for img_id, (h, w, objects, scores) in SCENES.items():
        image, boxes, classes = draw_scene(h, w, objects)
        _write_png(root / f"{img_id}.png", image, mode="RGBA" if img_id == 4 else "RGB")
        builder.add_image(f"{img_id}.png", h, w, image_id=img_id)
        builder.add_objects(img_id, boxes, classes.tolist(), scores=scores)
        truth[img_id] = (image, boxes, classes)
    builder.add_image("5.png", 100, 100, image_id=5)  # never written: missing
    (root / "6.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    builder.add_image("6.png", 100, 100, image_id=6)
    full = builder.build(image_root=root)
    return full, full.subset([1, 2, 3, 4]), truth


def _batches(ds) -> list[dict]:
    return [{k: v.numpy() for k, v in batch.items()} for batch in ds]


def _concat(batches: list[dict]) -> dict:
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def _rgb(image: np.ndarray) -> np.ndarray:
    return image * STD + MEAN


def test_eval_batch_shapes_padding_scale_and_letterbox(dataset):
    _, good, truth = dataset
    cfg = InputConfig(image_size=(100, 100), batch_size=4, max_boxes=8)
    ds, report = build_manifest_dataset(good, cfg)
    assert report == PipelineReport(num_images=4)
    (batch,) = _batches(ds)
    expected = {"image": (np.float32, (4, 100, 100, 3)), "boxes": (np.float32, (4, 8, 4)),
                "classes": (np.int32, (4, 8)), "weights": (np.float32, (4, 8)), "num_boxes": (np.int32, (4,)),
                "image_id": (np.int64, (4,)), "scale": (np.float32, (4,)), "image_shape": (np.int32, (4, 2))}
    assert set(batch) == set(expected)
    for key, (dtype, shape) in expected.items():
        assert batch[key].dtype == dtype and batch[key].shape == shape, key
    np.testing.assert_array_equal(batch["image_id"], [1, 2, 3, 4])
    np.testing.assert_array_equal(batch["num_boxes"], [3, 2, 6, 0])
    np.testing.assert_array_equal(batch["image_shape"], [[120, 200], [200, 120], [120, 200], [150, 150]])
    np.testing.assert_allclose(batch["scale"], [0.5, 0.5, 0.5, 100 / 150], rtol=1e-6)
    np.testing.assert_allclose(batch["weights"][1, :2], [1.0, 0.6])
    for i, img_id in enumerate([1, 2, 3, 4]):
        n = batch["num_boxes"][i]
        _, boxes, classes = truth[img_id]
        np.testing.assert_allclose(batch["boxes"][i, :n], boxes * batch["scale"][i], rtol=1e-5)
        np.testing.assert_array_equal(batch["classes"][i, :n], classes)
        assert np.all(batch["classes"][i, n:] == -1) and np.all(batch["weights"][i, n:] == 0)
        assert np.all(batch["boxes"][i, n:] == 0)
        assert_boxes_on_objects(_rgb(batch["image"][i]), batch["boxes"][i, :n], classes, tight=True)
    # letterbox: content top-left, exact zeros (normalised padding) bottom/right
    image1 = batch["image"][0]  # 120x200 -> 60x100
    assert np.all(image1[60:] == 0.0)
    np.testing.assert_allclose(image1[0, 0], -MEAN / STD, rtol=1e-5)  # black background pixel
    image2 = batch["image"][1]  # 200x120 -> 100x60
    assert np.all(image2[:, 60:] == 0.0) and not np.any(np.all(image2[:, :60] == 0.0, axis=-1))
    np.testing.assert_allclose(batch["image"][3, :99, :99], np.broadcast_to(-MEAN / STD, (99, 99, 3)), rtol=1e-5)


@pytest.mark.parametrize("augment", ["none", "standard", "strong"])
def test_training_batches(dataset, augment):
    _, good, truth = dataset
    cfg = InputConfig(image_size=(96, 128), batch_size=3, max_boxes=8, augment=augment, scale_jitter=(0.7, 1.4),
                      strong_magnitude=0.6, seed=3)
    ds, _ = build_manifest_dataset(good, cfg, training=True)
    batches = _batches(ds)
    assert [b["image"].shape for b in batches] == [(3, 96, 128, 3), (1, 96, 128, 3)]
    batch = _concat(batches)
    assert sorted(batch["image_id"].tolist()) == [1, 2, 3, 4]
    for i, img_id in enumerate(batch["image_id"]):
        n = batch["num_boxes"][i]
        assert 0 <= n <= len(truth[img_id][2])
        boxes = batch["boxes"][i, :n]
        assert np.all(boxes >= 0) and np.all(boxes[:, 2] <= 96) and np.all(boxes[:, 3] <= 128)
        assert np.all(batch["classes"][i, n:] == -1) and np.all(batch["weights"][i, n:] == 0)
        assert np.all(np.isin(batch["classes"][i, :n], truth[img_id][2]))
        if augment != "strong":  # strong colour ops change the object colours
            assert_boxes_on_objects(_rgb(batch["image"][i]), boxes, batch["classes"][i, :n], tight=True)


def test_objects_beyond_max_boxes_are_dropped_with_a_warning(dataset, caplog):
    _, good, _ = dataset
    cfg = InputConfig(image_size=(64, 64), batch_size=4, max_boxes=4)
    with caplog.at_level(logging.WARNING, logger="uncertainty_det.data.pipeline"):
        ds, report = build_manifest_dataset(good, cfg)
    assert report.dropped_objects_over_cap == 2 and report.images_over_cap == 1
    assert "2 objects in 1 images are beyond max_boxes=4" in caplog.text
    (batch,) = _batches(ds)
    np.testing.assert_array_equal(batch["num_boxes"], [3, 2, 4, 0])
    np.testing.assert_array_equal(batch["classes"][2], [1, 2, 4, 5])  # scores 0.7 and 0.5 dropped
    assert batch["boxes"].shape == (4, 4, 4)


def test_missing_and_corrupt_images_are_skipped_and_counted(dataset):
    full, _, _ = dataset
    ds, report = build_manifest_dataset(full, InputConfig(image_size=(64, 64), batch_size=3))
    assert (report.num_images, report.missing_images, report.corrupt_images) == (4, 1, 1)
    assert report.missing_ids == [5] and report.corrupt_ids == [6]
    assert report.to_dict()["missing_images"] == 1
    batches = _batches(ds)
    assert [len(b["image_id"]) for b in batches] == [3, 1]
    np.testing.assert_array_equal(_concat(batches)["image_id"], [1, 2, 3, 4])


def test_image_ids_subset_in_given_order(dataset):
    full, _, _ = dataset
    ds, report = build_manifest_dataset(full, InputConfig(image_size=(64, 64), batch_size=8), image_ids=[4, 2])
    assert report.num_images == 2
    np.testing.assert_array_equal(_concat(_batches(ds))["image_id"], [4, 2])
    with pytest.raises(ValueError, match="no image with id 99"):
        build_manifest_dataset(full, InputConfig(), image_ids=[1, 99])


def test_same_seed_same_augmented_batches(dataset):
    _, good, _ = dataset

    def run(seed):
        cfg = InputConfig(image_size=(64, 64), batch_size=2, max_boxes=8, augment="strong", seed=seed)
        return _concat(_batches(build_manifest_dataset(good, cfg, training=True)[0]))

    a, b, c = run(11), run(11), run(12)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert not np.array_equal(a["image"], c["image"])


def test_repeat_drop_remainder_and_cache(dataset):
    _, good, _ = dataset
    base = dict(image_size=(64, 64), batch_size=3, max_boxes=8)
    ds, _ = build_manifest_dataset(good, InputConfig(**base, repeat=True, drop_remainder=True))
    assert ds.element_spec["image"].shape == (3, 64, 64, 3)
    ids = np.concatenate([b["image_id"].numpy() for b in ds.take(3)])
    np.testing.assert_array_equal(ids, [1, 2, 3, 4, 1, 2, 3, 4, 1])
    plain = _concat(_batches(build_manifest_dataset(good, InputConfig(**base))[0]))
    cached = _concat(_batches(build_manifest_dataset(good, InputConfig(**base, cache_decoded=True))[0]))
    for key in plain:
        np.testing.assert_array_equal(plain[key], cached[key], err_msg=key)


def test_tfrecord_eval_batches_equal_manifest_batches(dataset, tmp_path):
    from uncertainty_det.data.tfrecord import write_tfrecords

    _, good, _ = dataset
    report = write_tfrecords(good, tmp_path, "val", num_shards=3, progress=False)
    cfg = InputConfig(image_size=(100, 100), batch_size=4, max_boxes=8)
    from_manifest = _concat(_batches(build_manifest_dataset(good, cfg)[0]))
    from_records = _concat(_batches(build_tfrecord_dataset(report.files, cfg)))
    assert set(from_records) == set(from_manifest)
    np.testing.assert_array_equal(from_records["image_id"], [1, 2, 3, 4])
    for key in from_manifest:
        assert from_records[key].dtype == from_manifest[key].dtype, key
        np.testing.assert_allclose(from_records[key], from_manifest[key], atol=1e-3, err_msg=key)
    # training mode reads the shards too
    train = build_tfrecord_dataset(tmp_path, InputConfig(image_size=(64, 64), batch_size=2, augment="standard"),
                                   training=True)
    assert sorted(_concat(_batches(train))["image_id"].tolist()) == [1, 2, 3, 4]


def test_input_config_from_dict():
    cfg = input_config_from_dict({"image_size": [128, 96], "scale_jitter": [0.5, 2.0], "augment": "strong"})
    assert cfg.image_size == (128, 96) and cfg.scale_jitter == (0.5, 2.0) and cfg.augment == "strong"
    assert input_config_from_dict(None) == InputConfig()
    omegaconf = pytest.importorskip("omegaconf")
    from_yaml = input_config_from_dict(omegaconf.OmegaConf.create({"image_size": [64, 80], "mean": [1, 2, 3]}))
    assert from_yaml.image_size == (64, 80) and from_yaml.mean == (1.0, 2.0, 3.0)
    with pytest.raises(ValueError, match="imagesize"):
        input_config_from_dict({"imagesize": [1, 2]})
    with pytest.raises(ValueError, match="augment must be one of"):
        input_config_from_dict({"augment": "heavy"})


def test_tfrecord_skips_undecodable_images_and_warns_over_cap(dataset, tmp_path, capfd):
    from uncertainty_det.data.tfrecord import encode_example

    _, good, _ = dataset
    path = tmp_path / "bad.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for img_id in (1, 2, 3):
            data = b"not an image" if img_id == 2 else good.image_path(img_id).read_bytes()
            example = encode_example(data, good.image(img_id), good.objects(img_id), good.class_names, "png")
            writer.write(example.SerializeToString())
    batch = _concat(_batches(build_tfrecord_dataset([str(path)], InputConfig(image_size=(64, 64), max_boxes=4))))
    np.testing.assert_array_equal(batch["image_id"], [1, 3])
    np.testing.assert_array_equal(batch["num_boxes"], [3, 4])
    np.testing.assert_array_equal(batch["classes"][1], [1, 2, 4, 5])  # highest scores kept, as from a manifest
    err = capfd.readouterr().err
    assert "has 6 objects; dropping 2 beyond max_boxes = 4" in err
    assert 'skipping image "2" whose encoded bytes are not PNG/JPEG/GIF/BMP' in err
