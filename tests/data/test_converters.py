"""Label-format converters: round trips, format quirks, dropped/clipped counting and unsafe input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from uncertainty_det.data.converters import (
    READERS,
    WRITERS,
    ConversionReport,
    available_formats,
    convert,
    get_reader,
    get_writer,
)
from uncertainty_det.data.converters.classes import BDD100K_CLASSES, KITTI_CLASSES, name_key
from uncertainty_det.data.errors import DatasetError, LabelFormatError
from uncertainty_det.data.manifest import Manifest, ManifestBuilder, categories_from_names

CLASSES = ["car", "pedestrian", "traffic light"]

# file_name, (height, width), objects: (class_id, [ymin, xmin, ymax, xmax], occluded, truncated)
IMAGES = [
    ("a.png", (60, 80), [
        (1, [1.25, 2.5, 30.125, 40.75], 0, 0.0),
        (2, [10.333, 20.667, 55.5, 33.25], 1, 0.25),
        (3, [0.0, 0.0, 12.5, 9.75], 2, 1.0),
    ]),
    ("b.jpg", (50, 100), [
        (1, [5.5, 60.125, 45.875, 99.5], 2, 0.5),
        (1, [3.1, 4.2, 20.3, 35.7], 0, 0.0),
        (2, [12.0, 40.0, 49.0, 52.5], 3, 0.0),
        (3, [0.5, 90.25, 9.75, 98.0], 1, 0.0),
        (2, [22.22, 11.11, 44.44, 22.22], 0, 0.75),
    ]),
    ("empty.png", (40, 40), []),
    ("c.png", (70, 90), [
        (3, [20.0625, 30.5, 69.9375, 89.875], 0, 0.0),
        (2, [1.0, 1.0, 2.5, 3.5], 1, 0.1),
    ]),
]


def _write_image(path: Path, size: tuple[int, int]) -> None:
    h, w = size
    arr = (np.arange(h * w * 3, dtype=np.uint32).reshape(h, w, 3) % 251).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


@pytest.fixture
def dataset(tmp_path: Path) -> Manifest:
    """A small manifest (4 images of different sizes, one without objects) with real image files."""
    root = tmp_path / "images"
    builder = ManifestBuilder(categories=categories_from_names(CLASSES))
    for name, size, objs in IMAGES:
        _write_image(root / name, size)
        img_id = builder.add_image(name, *size, weather="rainy", scene="city street", timeofday="night")
        if objs:
            builder.add_objects(
                img_id, np.array([o[1] for o in objs]), [o[0] for o in objs],
                occluded=[o[2] for o in objs], truncated=[o[3] for o in objs],
            )
    manifest = builder.build(image_root=root)
    assert manifest.sanitize_report.clipped == 0 and manifest.sanitize_report.dropped == 0
    return manifest


def _by_file(manifest: Manifest) -> dict[str, list[tuple]]:
    """file_name -> sorted [(class name, box, occluded, truncated, score)] for comparison."""
    names = {c["id"]: c["name"] for c in manifest.categories}
    out = {}
    for img in manifest.images:
        objs = manifest.objects(img["id"])
        rows = [
            (names[int(c)], tuple(float(v) for v in b), int(o), float(t), float(s))
            for c, b, o, t, s in zip(objs.class_ids, objs.boxes, objs.occluded, objs.truncated, objs.scores)
        ]
        out[img["file_name"]] = sorted(rows, key=lambda r: (r[0], round(r[1][1], 1), round(r[1][0], 1)))
    return out


def _assert_same(a: Manifest, b: Manifest, occluded=None, truncated=None, scores=False) -> None:
    """Same images, classes and boxes (1e-3 px); occlusion/truncation compared through the given maps."""
    ra, rb = _by_file(a), _by_file(b)
    assert sorted(ra) == sorted(rb)
    for name in ra:
        assert len(ra[name]) == len(rb[name]), name
        for x, y in zip(ra[name], rb[name]):
            assert x[0] == y[0]
            np.testing.assert_allclose(x[1], y[1], atol=1e-3, rtol=0)
            if occluded is not None:
                assert occluded(x[2]) == y[2]
            if truncated is not None:
                assert truncated(x[3]) == pytest.approx(y[3], abs=1e-4)
            if scores:
                assert x[4] == pytest.approx(y[4], abs=1e-5)


def _kitti_label(tmp_path: Path, lines: list[str], size=(50, 100), stem="000001") -> tuple[Path, Path]:
    labels, images = tmp_path / "label_2", tmp_path / "image_2"
    labels.mkdir(exist_ok=True)
    _write_image(images / f"{stem}.png", size)
    (labels / f"{stem}.txt").write_text("".join(line + "\n" for line in lines))
    return labels, images


def _kitti_line(obj_type: str, box, trunc=0.0, occ=0, score=None) -> str:
    x1, y1, x2, y2 = box
    line = f"{obj_type} {trunc} {occ} -1.5 {x1} {y1} {x2} {y2} 1.5 1.6 3.9 1.0 1.7 20.0 -1.2"
    return line + (f" {score}" if score is not None else "")


# ------------------------------------------------------------------------------------- round trips
def test_round_trip_kitti(dataset, tmp_path):
    report = WRITERS["kitti"](dataset, tmp_path / "kitti")
    assert (report.images, report.objects) == (4, 10)
    assert (tmp_path / "kitti" / "empty.txt").read_text() == ""
    first = (tmp_path / "kitti" / "a.txt").read_text().splitlines()[0].split()
    assert first[0] == "Car" and len(first) == 15
    back, rep = READERS["kitti"](tmp_path / "kitti", classes=CLASSES, image_dir=dataset.image_root)
    assert rep.lossless and (rep.images, rep.objects) == (4, 10)
    _assert_same(dataset, back, occluded=lambda o: o, truncated=lambda t: t)


def test_round_trip_yolo(dataset, tmp_path):
    WRITERS["yolo"](dataset, tmp_path / "yolo", copy_images=True)
    assert (tmp_path / "yolo" / "classes.txt").read_text().splitlines() == CLASSES
    assert "nc: 3" in (tmp_path / "yolo" / "data.yaml").read_text()
    assert (tmp_path / "yolo" / "images" / "b.jpg").is_file()
    back, rep = READERS["yolo"](tmp_path / "yolo")  # classes.txt and images/ found by default
    assert rep.lossless and back.class_names == CLASSES
    _assert_same(dataset, back)
    back2, _ = READERS["yolo"](tmp_path / "yolo" / "labels", image_dir=dataset.image_root)
    _assert_same(dataset, back2)


def test_round_trip_voc(dataset, tmp_path):
    WRITERS["voc"](dataset, tmp_path / "voc")
    text = (tmp_path / "voc" / "a.xml").read_text()
    assert "<xmin>2.5000</xmin>" in text and "DOCTYPE" not in text
    back, rep = READERS["voc"](tmp_path / "voc")  # sizes from the XML, classes from classes.txt
    assert rep.lossless and back.class_names == CLASSES
    _assert_same(dataset, back, occluded=lambda o: o, truncated=lambda t: float(t > 0))


def test_round_trip_bdd100k(dataset, tmp_path):
    WRITERS["bdd100k"](dataset, tmp_path / "labels.json")
    frames = json.loads((tmp_path / "labels.json").read_text())
    assert frames[0]["attributes"] == {"weather": "rainy", "scene": "city street", "timeofday": "night"}
    flags = frames[0]["labels"][1]["attributes"]
    assert flags == {"occluded": True, "truncated": True}
    back, rep = READERS["bdd100k"](tmp_path / "labels.json", classes=CLASSES, image_dir=dataset.image_root)
    assert rep.lossless
    assert back.image(back.image_ids[0])["timeofday"] == "night"
    _assert_same(dataset, back, occluded=lambda o: int(o >= 1), truncated=lambda t: float(t > 0))


def test_round_trip_coco_and_convert(dataset, tmp_path):
    WRITERS["coco"](dataset, tmp_path / "m.json")
    back, rep = READERS["coco"](tmp_path / "m.json")
    assert rep.lossless and back.image_root.resolve() == dataset.image_root.resolve()
    _assert_same(dataset, back, occluded=lambda o: o, truncated=lambda t: t)
    report = convert(tmp_path / "m.json", "coco", tmp_path / "kitti", "kitti", classes=CLASSES)
    assert (report.images, report.objects) == (4, 10) and report.lossless
    report = convert(tmp_path / "kitti", "kitti", tmp_path / "m2.json", "coco", classes=CLASSES,
                     image_dir=dataset.image_root)
    _assert_same(dataset, Manifest.read(tmp_path / "m2.json"), occluded=lambda o: o, truncated=lambda t: t)


def test_scores_round_trip(dataset, tmp_path):
    data = dataset.to_coco()
    for i, ann in enumerate(data["annotations"]):
        ann["score"] = 0.5 + 0.04 * i
    scored = Manifest.from_coco(data, image_root=dataset.image_root)
    WRITERS["kitti"](scored, tmp_path / "kitti")
    assert len((tmp_path / "kitti" / "a.txt").read_text().splitlines()[0].split()) == 16
    back, _ = READERS["kitti"](tmp_path / "kitti", classes=CLASSES, image_dir=dataset.image_root)
    _assert_same(scored, back, scores=True)
    WRITERS["yolo"](scored, tmp_path / "yolo")
    back, _ = READERS["yolo"](tmp_path / "yolo", image_dir=dataset.image_root)
    _assert_same(scored, back, scores=True)


# ------------------------------------------------------------------------------------------ KITTI
def test_kitti_dontcare_misc_dropped_and_counted(tmp_path):
    labels, images = _kitti_label(tmp_path, [
        _kitti_line("Car", (1.5, 2.5, 30.25, 40.75), 0.12, 1),
        _kitti_line("DontCare", (50, 10, 60, 20), -1, -1),
        _kitti_line("Misc", (5, 5, 15, 15)),
        _kitti_line("Person_sitting", (60, 5, 80, 45), 0.5, 2),
        _kitti_line("DontCare", (70, 10, 90, 20), -1, -1),
    ])
    manifest, report = READERS["kitti"](labels)  # default classes, image_dir = ../image_2
    assert manifest.class_names == list(KITTI_CLASSES)
    assert report.dropped_objects == 3 and report.objects == 2
    assert report.reasons["dropped object: class 'dontcare'"] == 2
    assert report.reasons["dropped object: class 'misc'"] == 1
    objs = manifest.objects(manifest.image_ids[0])
    assert objs.class_ids.tolist() == [1, 5]
    assert objs.occluded.tolist() == [1, 2] and objs.truncated.tolist() == pytest.approx([0.12, 0.5])
    np.testing.assert_allclose(objs.boxes[0], [2.5, 1.5, 40.75, 30.25])
    assert manifest.image(manifest.image_ids[0])["file_name"] == "000001.png"
    assert manifest.image_root == images


@pytest.mark.parametrize("bad, problem", [
    ("Car 0 0 -1 1 2 3 4 1 1 1 1 1 1", "expected 15 or 16 fields"),
    ("Car 0 0 -1 1 2 x 4 1 1 1 1 1 1 1", r"field 7 \(x2\) is not a number"),
])
def test_kitti_malformed_line_names_file_and_line(tmp_path, bad, problem):
    labels, _ = _kitti_label(tmp_path, [_kitti_line("Car", (1, 2, 30, 40)), "", bad])
    with pytest.raises(LabelFormatError, match=problem) as err:
        READERS["kitti"](labels)
    assert "000001.txt:3" in str(err.value) and err.value.line_no == 3


def test_kitti_score_column_read(tmp_path):
    labels, _ = _kitti_label(tmp_path, [
        _kitti_line("Car", (1, 2, 30, 40), score=0.875),
        _kitti_line("Pedestrian", (10, 5, 20, 45)),
    ])
    manifest, _ = READERS["kitti"](labels)
    assert manifest.objects(1).scores.tolist() == [0.875, 1.0]
    assert manifest.annotations[0]["score"] == 0.875 and "score" not in manifest.annotations[1]


def test_kitti_missing_image_skipped_or_default_size(tmp_path):
    labels, images = _kitti_label(tmp_path, [_kitti_line("Car", (1, 2, 30, 40))])
    (labels / "000002.txt").write_text(_kitti_line("Van", (1, 2, 30, 40)) + "\n")
    manifest, report = READERS["kitti"](labels)
    assert len(manifest) == 1 and report.skipped_images == 1 and report.dropped_objects == 1
    manifest, report = READERS["kitti"](labels, require_images=False)
    assert len(manifest) == 2 and report.skipped_images == 0
    assert manifest.image(2)["file_name"] == "000002.png" and manifest.image(2)["height"] == 375


# ---------------------------------------------------------------------------------------- BDD100K
def _bdd_frames() -> list[dict]:
    return [
        {
            "name": "f1.jpg",
            "attributes": {"weather": "snowy", "scene": "highway", "timeofday": "dawn/dusk"},
            "labels": [
                {"category": "car", "attributes": {"occluded": True, "truncated": False},
                 "box2d": {"x1": 10.5, "y1": 20.25, "x2": 50.0, "y2": 60.0}},
                {"category": "person", "attributes": {"occluded": False, "truncated": True},
                 "box2d": {"x1": 1, "y1": 2, "x2": 11, "y2": 32}},
                {"category": "bike", "attributes": {"occluded": False, "truncated": False},
                 "box2d": {"x1": 3, "y1": 4, "x2": 13, "y2": 24}},
                {"category": "motor", "attributes": {}, "box2d": {"x1": 5, "y1": 6, "x2": 25, "y2": 26}},
                {"category": "traffic light", "attributes": {"occluded": False, "truncated": False,
                                                             "trafficLightColor": "red"},
                 "box2d": {"x1": 70, "y1": 0, "x2": 75, "y2": 12}},
                {"category": "lane", "attributes": {}, "poly2d": [[0, 0], [1, 1]]},
                {"category": "drivable area", "attributes": {}, "box2d": {"x1": 0, "y1": 0, "x2": 9, "y2": 9}},
            ],
        },
        {"name": "f2.jpg", "attributes": {"weather": "clear"}, "labels": None},
        {"name": "missing.jpg", "labels": [
            {"category": "car", "attributes": {"occluded": False, "truncated": False},
             "box2d": {"x1": 1, "y1": 1, "x2": 9, "y2": 9}}]},
    ]


def test_bdd100k_booleans_attributes_aliases(tmp_path):
    _write_image(tmp_path / "img" / "f1.jpg", (72, 128))
    _write_image(tmp_path / "img" / "f2.jpg", (72, 128))
    (tmp_path / "labels.json").write_text(json.dumps(_bdd_frames()))
    manifest, report = READERS["bdd100k"](tmp_path / "labels.json", image_dir=tmp_path / "img")
    assert manifest.class_names == list(BDD100K_CLASSES)
    assert report.skipped_images == 1 and report.reasons["skipped image: image file missing"] == 1
    assert report.dropped_objects == 3  # lane (no box2d), drivable area, car of the missing image
    assert report.reasons["dropped object: class 'drivable_area'"] == 1
    img = manifest.image(1)
    assert (img["weather"], img["scene"], img["timeofday"], img["height"]) == ("snowy", "highway", "dawn/dusk", 72)
    assert manifest.image(2)["weather"] == "clear" and "scene" not in manifest.image(2)
    objs = manifest.objects(1)
    names = [manifest.class_names[c - 1] for c in objs.class_ids]
    assert names == ["car", "pedestrian", "bicycle", "motorcycle", "traffic light"]
    assert objs.occluded.tolist() == [1, 0, 0, -1, 0]  # real booleans, -1 = not given
    assert objs.truncated.tolist() == [0.0, 1.0, 0.0, -1.0, 0.0]
    np.testing.assert_allclose(objs.boxes[0], [20.25, 10.5, 60.0, 50.0])
    manifest, report = READERS["bdd100k"](tmp_path / "labels.json", image_dir=tmp_path / "img",
                                          require_images=False, skip_empty=True)
    assert [i["file_name"] for i in manifest.images] == ["f1.jpg", "missing.jpg"]
    assert manifest.image(2)["height"] == 720 and report.skipped_images == 1
    assert report.reasons["skipped image: no object of the kept classes"] == 1


def test_bdd100k_rejects_non_boolean_flags(tmp_path):
    frames = [{"name": "f.jpg", "labels": [{"category": "car", "attributes": {"occluded": "maybe"},
                                             "box2d": {"x1": 1, "y1": 1, "x2": 9, "y2": 9}}]}]
    (tmp_path / "l.json").write_text(json.dumps(frames))
    with pytest.raises(LabelFormatError, match=r"l.json.*occluded.*boolean"):
        READERS["bdd100k"](tmp_path / "l.json", require_images=False)


# ------------------------------------------------------------------------------------------- CODA
def _coda_json(tmp_path: Path) -> Path:
    images = [
        {"id": 7, "file_name": "c7.jpg", "width": 150, "height": 100},
        {"id": 3, "file_name": "c3.jpg", "width": 150, "height": 100},
        {"id": 5, "file_name": "c5.jpg", "width": 150, "height": 100},
    ]
    categories = [
        {"id": 1, "name": "pedestrian"}, {"id": 2, "name": "cyclist"}, {"id": 3, "name": "car"},
        {"id": 4, "name": "truck"}, {"id": 5, "name": "bus"}, {"id": 6, "name": "traffic_light"},
        {"id": 7, "name": "dog"}, {"id": 8, "name": "traffic_cone"},
    ]
    anns = [  # deliberately interleaved image ids
        (3, 3, [1, 2, 10, 10]), (7, 1, [5, 5, 20, 30]), (3, 6, [30, 3, 4, 8]), (7, 7, [50, 50, 10, 10]),
        (5, 8, [2, 2, 5, 5]), (3, 2, [60, 10, 12, 24]), (7, 5, [80, 20, 40, 30]), (5, 7, [9, 9, 5, 5]),
    ]
    annotations = [{"id": i + 1, "image_id": im, "category_id": c, "bbox": b} for i, (im, c, b) in enumerate(anns)]
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def _named(manifest: Manifest, image_id: int) -> list[tuple[str, list[float]]]:
    objs = manifest.objects(image_id)
    names = {c["id"]: c["name"] for c in manifest.categories}
    return sorted((names[int(c)], [float(v) for v in b]) for c, b in zip(objs.class_ids, objs.boxes))


def test_coda_remap_to_kitti_and_bdd(tmp_path):
    src = _coda_json(tmp_path)
    kitti, rep = READERS["coda"](src, target="kitti")
    assert kitti.class_names == list(KITTI_CLASSES)
    assert sorted(kitti.image_ids) == [3, 7] and rep.skipped_images == 1  # image 5: dog and cone only
    assert _named(kitti, 3) == [("car", [2.0, 1.0, 12.0, 11.0]), ("cyclist", [10.0, 60.0, 34.0, 72.0])]
    assert _named(kitti, 7) == [("pedestrian", [5.0, 5.0, 35.0, 25.0])]
    assert {a["category_id"] for a in kitti.annotations} == {1, 4, 6}
    assert rep.dropped_objects == 5 and rep.reasons["dropped object: class 'dog'"] == 2
    bdd, rep = READERS["coda"](src, target="bdd100k")
    assert bdd.class_names == list(BDD100K_CLASSES)
    assert _named(bdd, 3) == [("car", [2.0, 1.0, 12.0, 11.0]), ("traffic light", [3.0, 30.0, 11.0, 34.0])]
    assert _named(bdd, 7) == [("bus", [20.0, 80.0, 50.0, 120.0]), ("pedestrian", [5.0, 5.0, 35.0, 25.0])]
    assert {a["category_id"] for a in bdd.annotations} == {1, 3, 5, 9}
    assert rep.skipped_images == 1 and rep.reasons["dropped object: class 'cyclist'"] == 1
    with pytest.raises(ValueError, match="unknown CODA target"):
        READERS["coda"](src, target="coco")


# -------------------------------------------------------------------------------------------- VOC
_VOC = """<annotation><filename>{name}</filename><size><width>100</width><height>50</height><depth>3</depth></size>
<object><name>car</name><truncated>0</truncated><difficult>1</difficult>
<bndbox><xmin>1.5</xmin><ymin>2.5</ymin><xmax>20</xmax><ymax>30</ymax></bndbox></object></annotation>"""


def test_voc_reads_difficult_and_rejects_dtd_and_entities(tmp_path):
    folder = tmp_path / "ann"
    folder.mkdir()
    (folder / "x.xml").write_text(_VOC.format(name="x.jpg"))
    manifest, _ = READERS["voc"](folder)
    assert manifest.annotations[0]["difficult"] == 1 and manifest.class_names == ["car"]
    bomb = '<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">]>\n' + _VOC.format(name="&lol;.jpg")
    (folder / "x.xml").write_text(bomb)
    with pytest.raises(LabelFormatError, match=r"x\.xml.*DOCTYPE/ENTITY"):
        READERS["voc"](folder)


def test_voc_malformed_xml_names_file(tmp_path):
    folder = tmp_path / "ann"
    folder.mkdir()
    (folder / "broken.xml").write_text("<annotation><filename>a.jpg</filename>\n<object><name>car</annotation>")
    with pytest.raises(LabelFormatError, match=r"broken\.xml.*malformed XML"):
        READERS["voc"](folder, classes=["car"])


# ------------------------------------------------------------------------------ clipping / dropping
def test_out_of_image_clipped_and_degenerate_dropped(tmp_path):
    labels, _ = _kitti_label(tmp_path, [
        _kitti_line("Car", (-5.5, 10, 30, 60.75)),      # left and bottom outside -> clipped
        _kitti_line("Car", (120, 10, 150, 20)),         # entirely right of the image -> dropped
        _kitti_line("Van", (10, 10, 10.5, 30)),         # 0.5 px wide -> dropped
        _kitti_line("Truck", (40, 30, 20, 10)),         # inverted -> re-ordered (counted as clipped)
        _kitti_line("Tram", (1, 1, 99, 49)),            # fine
    ], size=(50, 100))
    manifest, report = READERS["kitti"](labels)
    assert (report.objects, report.clipped_objects, report.dropped_objects) == (3, 2, 2)
    boxes = manifest.objects(1).boxes
    np.testing.assert_allclose(boxes[0], [10, 0, 50, 30])
    np.testing.assert_allclose(boxes[1], [10, 20, 30, 40])
    coco = {"images": [{"id": 1, "file_name": "a.png", "height": 50, "width": 100}],
            "categories": [{"id": 1, "name": "car"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [90, 40, 20, 20]},
                            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [10, 10, 0, 5]},
                            {"id": 3, "image_id": 9, "category_id": 1, "bbox": [10, 10, 5, 5]}]}
    (tmp_path / "c.json").write_text(json.dumps(coco))
    manifest, report = READERS["coco"](tmp_path / "c.json")
    assert (report.objects, report.clipped_objects, report.dropped_objects) == (1, 1, 2)
    assert manifest.annotations[0]["bbox"] == [90.0, 40.0, 10.0, 10.0]


def test_coco_classes_remap_and_drop(tmp_path):
    coco = {"images": [{"id": 4, "file_name": "a.png", "height": 50, "width": 100, "scene": "tunnel"}],
            "categories": [{"id": 10, "name": "Car"}, {"id": 20, "name": "dog"}, {"id": 30, "name": "person"}],
            "annotations": [{"id": 1, "image_id": 4, "category_id": c, "bbox": [1, 1, 5, 5], "iscrowd": 0}
                            for c in (10, 20, 30, 30)]}
    (tmp_path / "c.json").write_text(json.dumps(coco))
    kept, rep = READERS["coco"](tmp_path / "c.json")
    assert kept.category_ids == [10, 20, 30] and rep.objects == 4
    manifest, rep = READERS["coco"](tmp_path / "c.json", classes=["pedestrian", "car"],
                                    aliases={"person": "pedestrian"})
    assert manifest.class_names == ["pedestrian", "car"] and manifest.image(4)["scene"] == "tunnel"
    assert sorted(a["category_id"] for a in manifest.annotations) == [1, 1, 2]
    assert rep.dropped_objects == 1 and rep.reasons == {"dropped object: class 'dog'": 1}


# ------------------------------------------------------------------------------------ unsafe input
@pytest.mark.parametrize("bad", ["../x.png", "/abs/x.png"])
def test_unsafe_file_names_rejected(tmp_path, dataset, bad):
    (tmp_path / "l.json").write_text(json.dumps([{"name": bad, "labels": []}]))
    with pytest.raises(DatasetError, match=r"l\.json frame 0: unsafe"):
        READERS["bdd100k"](tmp_path / "l.json", require_images=False)
    coco = {"images": [{"id": 1, "file_name": bad, "height": 5, "width": 5}], "annotations": [], "categories": []}
    (tmp_path / "c.json").write_text(json.dumps(coco))
    with pytest.raises(DatasetError, match="unsafe image file name"):
        READERS["coco"](tmp_path / "c.json")
    (tmp_path / "voc").mkdir(exist_ok=True)
    (tmp_path / "voc" / "v.xml").write_text(_VOC.format(name=bad))
    with pytest.raises(DatasetError, match=r"v\.xml: unsafe"):
        READERS["voc"](tmp_path / "voc")
    data = dataset.to_coco()
    data["images"][0]["file_name"] = bad
    forged = Manifest(data["images"], data["annotations"], data["categories"], image_root=dataset.image_root)
    for fmt, dst in (("kitti", "k"), ("yolo", "y"), ("voc", "v2"), ("bdd100k", "b.json"), ("coco", "c2.json")):
        with pytest.raises(DatasetError, match="unsafe"):
            WRITERS[fmt](forged, tmp_path / "out" / dst)
    assert not (tmp_path / "out" / "k").exists()  # nothing half-written


# ----------------------------------------------------------------------------- registry / options
def test_registry_and_unknown_names(dataset, tmp_path):
    assert available_formats() == ["bdd100k", "coco", "coda", "kitti", "voc", "yolo"]
    assert "coda" not in WRITERS and available_formats("write") == sorted(WRITERS)
    with pytest.raises(ValueError, match="available read formats: bdd100k, coco, coda, kitti, voc, yolo"):
        get_reader("pascal")
    with pytest.raises(ValueError, match="coda can only be read.*bdd100k, coco, kitti, voc, yolo"):
        get_writer("coda")
    with pytest.raises(ValueError, match="unknown writer option"):
        convert(tmp_path / "x.json", "coco", tmp_path / "y", "kitti", writer_options={"colour": 1})


def test_folder_writers_refuse_non_empty_dst_without_overwrite(dataset, tmp_path):
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "keep.txt").write_text("precious")
    with pytest.raises(DatasetError, match="overwrite=True"):
        WRITERS["voc"](dataset, dst)
    assert (dst / "keep.txt").read_text() == "precious"
    WRITERS["voc"](dataset, dst, overwrite=True)
    assert not (dst / "keep.txt").exists() and (dst / "a.xml").is_file()


def test_yolo_errors(tmp_path):
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n3 0.5 0.5 0.2 0.2\n")
    with pytest.raises(DatasetError, match="classes.txt"):
        READERS["yolo"](labels)
    with pytest.raises(LabelFormatError, match=r"a\.txt:2: class index '3'"):
        READERS["yolo"](labels, classes=["a", "b"])


def test_report_merge_and_name_key():
    a = ConversionReport(images=2, objects=5, dropped_objects=1, reasons={"dropped object: class 'x'": 1})
    b = ConversionReport(images=1, objects=1, skipped_images=1, clipped_objects=2,
                         reasons={"dropped object: class 'x'": 2})
    m = a.merge(b)
    assert (m.images, m.objects, m.skipped_images, m.dropped_objects, m.clipped_objects) == (3, 6, 1, 1, 2)
    assert m.reasons == {"dropped object: class 'x'": 3} and "3 images" in m.summary()
    assert name_key("Traffic Light") == name_key("traffic_light") == "traffic_light"


def test_yolo_names_from_data_yaml_and_subfolders(tmp_path):
    root = tmp_path / "imgs"
    _write_image(root / "seq1" / "x.png", (30, 40))
    builder = ManifestBuilder(categories=categories_from_names(["a", "b c"]))
    builder.add_image("seq1/x.png", 30, 40)
    builder.add_objects(1, np.array([[1.5, 2.25, 20.75, 30.5]]), [2])
    manifest = builder.build(image_root=root)
    WRITERS["yolo"](manifest, tmp_path / "yolo")
    assert (tmp_path / "yolo" / "labels" / "seq1" / "x.txt").is_file()
    (tmp_path / "yolo" / "classes.txt").unlink()
    back, _ = READERS["yolo"](tmp_path / "yolo", image_dir=root)
    assert back.class_names == ["a", "b c"]
    _assert_same(manifest, back)
    flat, rep = READERS["yolo"](tmp_path / "yolo", image_dir=root / "seq1")  # labels/seq1/x.txt -> x.png
    assert rep.lossless and flat.images[0]["file_name"] == "x.png" and flat.image_root == root / "seq1"
    WRITERS["kitti"](manifest, tmp_path / "kitti")
    back, _ = READERS["kitti"](tmp_path / "kitti", classes=["a", "b c"], image_dir=root)
    _assert_same(manifest, back)


def test_convert_coda_with_reader_options(tmp_path):
    src = _coda_json(tmp_path)
    report = convert(src, "coda", tmp_path / "out", "kitti", reader_options={"target": "kitti"},
                     writer_options={"capitalize": False})
    assert (report.images, report.objects, report.skipped_images, report.dropped_objects) == (2, 3, 1, 5)
    assert (tmp_path / "out" / "c3.txt").read_text().split()[0] == "car"
