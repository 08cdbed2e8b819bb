"""Manifest reader/validator, sanitising of boxes, builder, subset and atomic writes."""
import json

import numpy as np
import pytest

from uncertainty_det.data.boxes import sanitize_boxes, xywh_to_yxyx, yxyx_to_xywh
from uncertainty_det.data.errors import DatasetError
from uncertainty_det.data.manifest import Manifest, ManifestBuilder, categories_from_names
from uncertainty_det.io_utils import atomic_dir, atomic_write_text, safe_relative_path


def _coco(**changes):
    data = {
        "images": [{"id": 1, "file_name": "a.png", "height": 100, "width": 200},
                   {"id": 2, "file_name": "sub/b.png", "height": 50, "width": 50}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 20, 30, 40], "occluded": 1, "truncated": 0.2},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [190, 90, 20, 20]},   # out of the image -> clipped
            {"id": 3, "image_id": 2, "category_id": 1, "bbox": [5, 5, 0, 10]},       # zero width -> dropped
            {"id": 4, "image_id": 2, "category_id": 2, "bbox": [1, 2, 3, 4], "score": 0.7},
        ],
        "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "van"}],
    }
    data.update(changes)
    return data


def test_read_sanitizes_and_counts(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps(_coco()))
    m = Manifest.read(path)
    assert m.sanitize_report.clipped == 1 and m.sanitize_report.dropped == 1
    assert m.num_annotations == 3 and m.class_names == ["car", "van"]
    objs = m.objects(1)
    np.testing.assert_allclose(objs.boxes, [[20, 10, 60, 40], [90, 190, 100, 200]])
    assert objs.occluded.tolist() == [1, -1] and objs.truncated.tolist() == [0.2, -1.0]
    assert m.objects(2).scores.tolist() == [0.7]
    assert m.image_path(2) == tmp_path / "sub" / "b.png"
    assert m.class_counts() == {"car": 1, "van": 2}


@pytest.mark.parametrize("change,needle", [
    ({"annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2]}]}, "annotations[0]: 'bbox'"),
    ({"annotations": [{"id": 1, "image_id": 9, "category_id": 1, "bbox": [1, 2, 3, 4]}]}, "'image_id' 9"),
    ({"annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [1, 2, 3, 4]}]}, "'category_id' 7"),
    ({"categories": [{"id": 0, "name": "x"}]}, "1-based"),
    ({"images": [{"id": 1, "file_name": "../x.png", "height": 1, "width": 1}], "annotations": []}, "unsafe"),
    ({"images": [{"id": 1, "file_name": "x.png", "height": 0, "width": 1}], "annotations": []}, "'height'"),
])
def test_malformed_manifest_names_file_and_field(tmp_path, change, needle):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_coco(**change)))
    with pytest.raises(DatasetError) as info:
        Manifest.read(path)
    assert str(path) in str(info.value) and needle in str(info.value)


def test_missing_and_invalid_json(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        Manifest.read(tmp_path / "none.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        Manifest.read(tmp_path / "x.json")


def test_builder_write_read_subset_round_trip(tmp_path):
    b = ManifestBuilder(categories_from_names(["a", "b"]))
    i1 = b.add_image("x/1.png", 60, 80, weather="rainy")
    i2 = b.add_image("x/2.png", 60, 80)
    b.add_objects(i1, [[1.25, 2.5, 30.75, 40.125]], [2], occluded=[2], truncated=[0.5], scores=[0.9])
    b.add_objects(i2, [[0, 0, 10, 10], [5, 5, 20, 30]], [1, 2])
    m = b.build(image_root=tmp_path / "images")
    m.write(tmp_path / "ann" / "train.json")
    back = Manifest.read(tmp_path / "ann" / "train.json")
    assert back.image_root.resolve() == (tmp_path / "images").resolve()
    np.testing.assert_allclose(back.objects(i1).boxes, [[1.25, 2.5, 30.75, 40.125]])
    assert back.image(i1)["weather"] == "rainy" and back.objects(i1).scores.tolist() == [0.9]
    sub = back.subset([i2])
    assert sub.image_ids == [i2] and sub.num_annotations == 2
    with pytest.raises(DatasetError):
        back.subset([99])


def test_box_conversions_and_sanitize():
    boxes = np.array([[10, 20, 5, 40], [-5, -5, 5, 5], [np.nan, 0, 1, 1], [0, 0, 0.5, 10]])
    clipped, keep, rep = sanitize_boxes(boxes, 30, 30)
    assert keep.tolist() == [True, True, False, False]
    np.testing.assert_allclose(clipped, [[5, 20, 10, 30], [0, 0, 5, 5]])
    assert rep.clipped == 2 and rep.dropped == 2
    xywh = np.array([[1.0, 2.0, 3.0, 4.0]])
    np.testing.assert_allclose(yxyx_to_xywh(xywh_to_yxyx(xywh)), xywh)


def test_atomic_writes(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "b.txt").write_text("2")
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]          # old content intact
    assert [p.name for p in tmp_path.iterdir()] == ["out"]                  # no temp folder left
    atomic_write_text(tmp_path / "f.txt", "x")
    assert (tmp_path / "f.txt").read_text() == "x"
    for bad in ("../x", "/abs/x", ""):
        with pytest.raises(ValueError):
            safe_relative_path(bad)
