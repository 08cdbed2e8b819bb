"""TFRecord shards: writing, graph-mode parsing, COCO -> TFRecord -> COCO round trip, robustness."""
from __future__ import annotations

import hashlib
import logging
import os
import zlib
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from uncertainty_det.data import tfrecord  # noqa: E402
from uncertainty_det.data.errors import DatasetError  # noqa: E402
from uncertainty_det.data.manifest import ManifestBuilder, categories_from_names  # noqa: E402
from uncertainty_det.data.tfrecord import (  # noqa: E402
    encode_example,
    parse_example,
    read_tfrecords,
    tfrecord_files,
    tfrecords_to_manifest,
    write_tfrecords,
)

CLASSES = ["car", "pedestrian", "cyclist"]


# ---------------------------------------------------------------------------------------- fixtures
def _save(root: Path, name: str, height: int, width: int, fmt: str, mode: str = "RGB") -> None:
    """Write a small noisy image of ``height x width`` pixels as ``fmt`` (PNG/JPEG/BMP)."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (height, width, 3) if mode == "RGB" else (height, width)
    pixels = rng.integers(0, 255, size=shape, dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=fmt)  # [H,W] uint8 -> mode "L"


def _build_manifest(root: Path, with_scores: bool = True):
    """Five images (PNG/JPEG, 1 grayscale, 1 in a subfolder, 1 without objects, ~2000 px) with objects."""
    specs = [
        ("a.png", 40, 60, "PNG", "RGB"),
        ("sub/b.jpg", 1999, 1987, "JPEG", "RGB"),
        ("c.png", 33, 47, "PNG", "RGB"),  # no objects
        ("d.jpg", 64, 80, "JPEG", "RGB"),  # pseudo-labels
        ("e.png", 25, 31, "PNG", "L"),
    ]
    for name, h, w, fmt, mode in specs:
        _save(root, name, h, w, fmt, mode)
    b = ManifestBuilder(categories=categories_from_names(CLASSES))
    i1 = b.add_image("a.png", 40, 60, weather="rainy", timeofday="night", scene="city street")
    b.add_objects(i1, [[1.25, 2.5, 20.75, 30.125], [0.0, 0.0, 40.0, 60.0]], [1, 3],
                  occluded=[2, 0], truncated=[0.3, -1])
    i2 = b.add_image("sub/b.jpg", 1999, 1987, weather="clear")
    b.add_objects(i2, [[1234.5678, 1001.1234, 1998.9876, 1986.4321], [0.3333, 0.6667, 3.1416, 2.7183],
                       [1500.0, 1.0, 1999.0, 1987.0]], [2, 2, 1])
    b.add_image("c.png", 33, 47)
    i4 = b.add_image("d.jpg", 64, 80)
    b.add_objects(i4, [[3.5, 4.5, 30.25, 60.75], [10.0, 11.0, 20.0, 22.0]], [2, 1],
                  scores=[0.8125, 0.35] if with_scores else None, occluded=[1, 3], truncated=[0.0, 0.95])
    i5 = b.add_image("e.png", 25, 31, scene="highway")
    b.add_objects(i5, [[2.2, 3.3, 24.4, 30.1]], [3])
    return b.build(image_root=root)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """(manifest, report, shard folder) written once with 2 shards."""
    root = tmp_path_factory.mktemp("images")
    manifest = _build_manifest(root)
    out = tmp_path_factory.mktemp("tfr")
    report = write_tfrecords(manifest, out, "train", num_shards=2, progress=False)
    return manifest, report, out


def _raw_examples(files) -> list[tf.train.Example]:
    return [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(list(files))]


# ---------------------------------------------------------------------------------------- writing
def test_shards_names_counts_and_sha(dataset):
    manifest, report, out = dataset
    expected = [str(out / f"train-{i:05d}-of-00002.tfrecord") for i in range(2)]
    assert report.files == expected
    assert sorted(os.listdir(out)) == [Path(p).name for p in expected]
    assert report.num_images == 5 and report.num_objects == manifest.num_annotations == 8
    assert report.missing_images == report.corrupt_images == 0
    assert report.images_per_shard == [3, 2]  # round-robin
    per_shard = [len(_raw_examples([f])) for f in expected]
    assert per_shard == [3, 2]
    examples = _raw_examples(expected)
    ids = sorted(int(ex.features.feature["image/source_id"].bytes_list.value[0]) for ex in examples)
    assert ids == sorted(manifest.image_ids)  # every image exactly once
    for ex in examples:
        f = ex.features.feature
        data = f["image/encoded"].bytes_list.value[0]
        assert f["image/key/sha256"].bytes_list.value[0].decode() == hashlib.sha256(data).hexdigest()
        img_id = int(f["image/source_id"].bytes_list.value[0])
        assert data == manifest.image_path(img_id).read_bytes()  # stored as-is, not re-encoded
        fmt = f["image/format"].bytes_list.value[0].decode()
        assert fmt == ("png" if manifest.image(img_id)["file_name"].endswith(".png") else "jpeg")
        n = len(manifest.objects(img_id))
        assert list(f["image/object/difficult"].int64_list.value) == [0] * n
        # pseudo_score: a flat float list of N values (not the reference's 1-tuple defect)
        assert len(f["image/object/pseudo_score"].float_list.value) == n


def test_no_pseudo_score_key_without_scores(tmp_path):
    manifest = _build_manifest(tmp_path / "img", with_scores=False)
    report = write_tfrecords(manifest, tmp_path / "out", "val", num_shards=1, progress=False)
    for ex in _raw_examples(report.files):
        assert "image/object/pseudo_score" not in ex.features.feature
    rt = tfrecords_to_manifest(report.files, tmp_path / "back")
    assert not any("score" in a for a in rt.annotations)


def test_image_ids_subset_and_stale_shards(dataset, tmp_path):
    manifest, _, _ = dataset
    out = tmp_path / "out"
    write_tfrecords(manifest, out, "al", num_shards=3, progress=False)
    report = write_tfrecords(manifest, out, "al", num_shards=2, image_ids=[4, 2], progress=False)
    assert sorted(os.listdir(out)) == ["al-00000-of-00002.tfrecord", "al-00001-of-00002.tfrecord"]
    got = [int(ex.features.feature["image/source_id"].bytes_list.value[0]) for ex in _raw_examples(report.files)]
    assert got == [4, 2]
    with pytest.raises(ValueError, match="duplicates"):
        write_tfrecords(manifest, out, "al", image_ids=[1, 1], progress=False)
    with pytest.raises(ValueError, match="split"):
        write_tfrecords(manifest, out, "../x", progress=False)


# ---------------------------------------------------------------------------------------- round trip
def test_coco_tfrecord_coco_round_trip(dataset, tmp_path):
    manifest, report, out = dataset
    back_dir = tmp_path / "back"
    rt = tfrecords_to_manifest(str(out), back_dir)  # a folder works as input
    assert rt.image_root == back_dir
    assert sorted(rt.image_ids) == sorted(manifest.image_ids)
    assert rt.categories == manifest.categories  # names from image/object/class/text
    assert rt.sanitize_report.clipped == rt.sanitize_report.dropped == 0
    for img_id in manifest.image_ids:
        src, dst = manifest.image(img_id), rt.image(img_id)
        for key in ("file_name", "height", "width", "weather", "timeofday", "scene"):
            assert src.get(key) == dst.get(key), key
        assert rt.image_path(img_id).read_bytes() == manifest.image_path(img_id).read_bytes()
        a, b = manifest.objects(img_id), rt.objects(img_id)
        assert len(a) == len(b)
        np.testing.assert_allclose(b.boxes, a.boxes, rtol=0, atol=1e-3)
        np.testing.assert_array_equal(b.class_ids, a.class_ids)
        np.testing.assert_array_equal(b.occluded, a.occluded)
        np.testing.assert_allclose(b.truncated, a.truncated, atol=1e-7)
        np.testing.assert_allclose(b.scores, a.scores, atol=1e-7)
    # short decimals come back exactly (no 0.30000001 noise in the JSON)
    ann = next(a for a in rt.annotations if a["image_id"] == 1 and a["category_id"] == 1)
    assert ann["truncated"] == 0.3
    # explicit class names are used as given
    rt2 = tfrecords_to_manifest(report.files, tmp_path / "back2", class_names=CLASSES)
    assert rt2.class_names == CLASSES
    with pytest.raises(DatasetError, match="class id 3"):
        tfrecords_to_manifest(report.files, tmp_path / "back3", class_names=CLASSES[:2])


def test_float32_precision_for_large_images():
    rng = np.random.default_rng(0)
    for size in (2000, 1999, 1242, 375):
        boxes = rng.uniform(0, size, size=(2000, 4))
        back = tfrecord.denormalise_boxes(tfrecord.normalise_boxes(boxes, size, size), size, size)
        assert np.max(np.abs(back - boxes)) < 1e-3


# ---------------------------------------------------------------------------------------- parsing
def test_parse_example_in_dataset_map(dataset):
    manifest, report, _ = dataset
    ds = read_tfrecords(report.files)
    spec = ds.element_spec
    expected = {
        "image_bytes": (tf.string, []), "height": (tf.int64, []), "width": (tf.int64, []),
        "filename": (tf.string, []), "source_id": (tf.string, []), "boxes": (tf.float32, [None, 4]),
        "classes": (tf.int64, [None]), "class_text": (tf.string, [None]), "scores": (tf.float32, [None]),
        "occluded": (tf.int64, [None]), "truncated": (tf.float32, [None]),
    }
    assert set(spec) == set(expected)
    for key, (dtype, shape) in expected.items():
        assert spec[key].dtype == dtype, key
        assert spec[key].shape.as_list() == shape, key
    seen = set()
    for ex in ds.as_numpy_iterator():
        img_id = int(ex["source_id"])
        seen.add(img_id)
        objs = manifest.objects(img_id)
        n = len(objs)
        assert ex["boxes"].shape == (n, 4)
        for key in ("classes", "class_text", "scores", "occluded", "truncated"):
            assert ex[key].shape == (n,), key
        h, w = int(ex["height"]), int(ex["width"])
        assert (h, w) == (manifest.image(img_id)["height"], manifest.image(img_id)["width"])
        assert np.all((ex["boxes"] >= 0) & (ex["boxes"] <= 1))
        np.testing.assert_allclose(ex["boxes"] * [h, w, h, w], objs.boxes, atol=1e-3)
        assert [t.decode() for t in ex["class_text"]] == [CLASSES[c - 1] for c in objs.class_ids]
        decoded = tf.io.decode_image(ex["image_bytes"], channels=3)
        assert tuple(decoded.shape[:2]) == (h, w)
    assert seen == set(manifest.image_ids)
    assert 3 in seen  # the image without objects parsed to [0,4] boxes


def test_parse_defaults_for_minimal_foreign_example():
    """An Example with only the keys the EfficientDet decoder reads gets the documented defaults."""
    feats = {
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"x"])),
        "image/height": tf.train.Feature(int64_list=tf.train.Int64List(value=[10])),
        "image/width": tf.train.Feature(int64_list=tf.train.Int64List(value=[20])),
        "image/object/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[2, 1])),
    }
    for key in ("ymin", "xmin", "ymax", "xmax"):
        feats[f"image/object/bbox/{key}"] = tf.train.Feature(float_list=tf.train.FloatList(value=[0.1, 0.5]))
    raw = tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()
    ex = next(iter(tf.data.Dataset.from_tensors(raw).map(parse_example).as_numpy_iterator()))
    assert ex["filename"] == b"" and ex["source_id"] == b""
    np.testing.assert_array_equal(ex["scores"], [1.0, 1.0])
    np.testing.assert_array_equal(ex["occluded"], [-1, -1])
    np.testing.assert_array_equal(ex["truncated"], [-1.0, -1.0])
    assert list(ex["class_text"]) == [b"", b""]
    assert ex["boxes"].shape == (2, 4)


# ---------------------------------------------------------------------------------------- robustness
def test_missing_corrupt_and_wrong_size_images_are_skipped(tmp_path, caplog):
    root = tmp_path / "img"
    _save(root, "ok.png", 12, 14, "PNG")
    _save(root, "other.bmp", 9, 11, "BMP")  # neither PNG nor JPEG: stored as lossless PNG
    _save(root, "small.png", 12, 10, "PNG")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")
    b = ManifestBuilder(categories=categories_from_names(CLASSES))
    for name, h, w in [("ok.png", 12, 14), ("gone.jpg", 30, 30), ("broken.png", 8, 8),
                       ("other.bmp", 9, 11), ("small.png", 10, 10)]:
        img_id = b.add_image(name, h, w)
        b.add_objects(img_id, [[1, 1, 5, 5]], [1])
    manifest = b.build(image_root=root)
    with caplog.at_level(logging.WARNING):
        report = write_tfrecords(manifest, tmp_path / "out", "test", num_shards=2, progress=False)
    assert (report.num_images, report.missing_images, report.corrupt_images) == (2, 1, 2)
    assert report.transcoded_images == 1 and report.num_objects == 2
    text = caplog.text
    assert "gone.jpg" in text and "broken.png" in text and "small.png" in text
    examples = _raw_examples(report.files)
    formats = {ex.features.feature["image/filename"].bytes_list.value[0]:
               ex.features.feature["image/format"].bytes_list.value[0] for ex in examples}
    assert formats == {b"ok.png": b"png", b"other.bmp": b"png"}
    bmp = next(ex for ex in examples if ex.features.feature["image/filename"].bytes_list.value[0] == b"other.bmp")
    decoded = tf.io.decode_image(bmp.features.feature["image/encoded"].bytes_list.value[0]).numpy()
    with Image.open(root / "other.bmp") as img:
        np.testing.assert_array_equal(decoded, np.asarray(img.convert("RGB")))


def test_atomic_shards(dataset, tmp_path, monkeypatch):
    manifest, _, _ = dataset
    out = tmp_path / "out"
    report = write_tfrecords(manifest, out, "train", num_shards=2, progress=False)
    assert sorted(os.listdir(out)) == [Path(f).name for f in report.files]  # no temp files left
    before = {f: Path(f).read_bytes() for f in report.files}

    calls = {"n": 0}
    real = tfrecord.encode_example

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("injected failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(tfrecord, "encode_example", flaky)
    with pytest.raises(RuntimeError, match="injected"):
        write_tfrecords(manifest, out, "train", num_shards=2, progress=False)
    assert sorted(os.listdir(out)) == [Path(f).name for f in report.files]  # no temps, old shards kept
    assert {f: Path(f).read_bytes() for f in report.files} == before
    fresh = tmp_path / "fresh"
    calls["n"] = 0
    with pytest.raises(RuntimeError, match="injected"):
        write_tfrecords(manifest, fresh, "train", num_shards=2, progress=False)
    assert os.listdir(fresh) == []  # nothing with a final (or temporary) name


def test_unsafe_filename_rejected(dataset, tmp_path):
    manifest, _, _ = dataset
    image = dict(manifest.image(1), file_name="../evil.png")
    data = manifest.image_path(1).read_bytes()
    path = tmp_path / "evil.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(encode_example(data, image, manifest.objects(1), CLASSES, "png").SerializeToString())
    out = tmp_path / "sub" / "images"
    with pytest.raises(DatasetError, match="unsafe image/filename '../evil.png'"):
        tfrecords_to_manifest([str(path)], out)
    assert not (tmp_path / "sub" / "evil.png").exists()


def test_tfrecord_files_resolution(dataset, tmp_path):
    _, report, out = dataset
    assert tfrecord_files(out) == report.files
    assert tfrecord_files(str(out / "train-*.tfrecord")) == report.files
    assert tfrecord_files(report.files[1]) == [report.files[1]]
    with pytest.raises(DatasetError, match="no TFRecord files"):
        tfrecord_files(tmp_path)
    with pytest.raises(DatasetError, match="no file matches"):
        tfrecord_files(str(tmp_path / "nothing-*.tfrecord"))
