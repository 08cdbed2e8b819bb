"""Accepted labels: manifest content, the 4 formats written and read back, uncertainties in COCO and VOC."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from uncertainty_det.autolabel import LABEL_FORMATS, AutolabelError, accepted_manifest, decide_images, write_labels
from uncertainty_det.data.converters import READERS

from .helpers import CLASSES, threshold_model

CORNERS = ("ymin", "xmin", "ymax", "xmax")
# model: entropy / 2 and al_rel_cal / 0.5, weights 0.5 / 0.5, threshold 0.5
MODEL = dict(names=("entropy", "al_rel_cal"), hi=(2.0, 0.5))
SIZES = {"a.png": (60, 80), "b.png": (50, 100), "c.png": (40, 40), "d.png": (30, 30)}
IDS = {"a.png": 11, "b.png": 12, "c.png": 13, "d.png": 14}
# file, det, class, score, box, entropy, al σ, al_cal σ, ep σ
DETS = [
    ("a.png", 0, 1, 0.91, [1.25, 2.5, 30.125, 40.75], 0.20,
     [1.0, 2.0, 3.0, 4.0], [1.5, 2.5, 3.5, 4.5], [0.1, 0.2, 0.3, 0.4]),
    ("a.png", 3, 2, 0.62, [10.333, 20.667, 55.5, 33.25], 0.40,
     [0.5, 0.5, 0.5, 0.5], [0.25, 0.75, 1.25, 1.75], [1.0, 1.0, 2.0, 2.0]),
    ("b.png", 0, 3, 0.83, [0.5, 90.25, 9.75, 98.0], 0.10,
     [0.2, 0.1, 0.2, 0.1], [0.3, 0.2, 0.1, 0.05], [0.0, 0.0, 0.0, 0.0]),
    ("b.png", 1, 1, 0.75, [5.5, 60.125, 45.875, 99.5], 0.30,
     [2.0, 2.0, 2.0, 2.0], [1.0, 1.0, 1.0, 1.0], [0.5, 0.5, 0.5, 0.5]),
    ("b.png", 2, 2, 0.55, [12.0, 40.0, 49.0, 52.5], 0.60,
     [1.0, 1.0, 1.0, 1.0], [0.5, 0.5, 0.5, 0.5], [0.2, 0.2, 0.2, 0.2]),
    ("c.png", 0, 1, 0.90, [5.0, 5.0, 35.0, 35.0], 1.90,
     [1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]),
]


def detection_table() -> pd.DataFrame:
    rows = []
    for f, det, cls, score, box, ent, al, al_cal, ep in DETS:
        row = {"image_id": IDS[f], "file_name": f, "det": det, "class_id": cls, "score": score, "entropy": ent}
        row.update(zip(CORNERS, box))
        row.update({f"al_{c}": v for c, v in zip(CORNERS, al)})
        row.update({f"al_{c}_cal": v for c, v in zip(CORNERS, al_cal)})
        row.update({f"ep_{c}": v for c, v in zip(CORNERS, ep)})
        rows.append(row)
    return pd.DataFrame(rows)


def images() -> pd.DataFrame:
    return pd.DataFrame({"image_id": list(IDS.values()), "file_name": list(IDS),
                         "height": [SIZES[f][0] for f in IDS], "width": [SIZES[f][1] for f in IDS]})


def al_rel_cal(box, sigma) -> float:
    h, w = box[2] - box[0], box[3] - box[1]
    return float(np.mean(np.asarray(sigma) / [h, w, h, w]))


def expected_labels() -> dict[str, list[tuple[str, list[float], float]]]:
    """file -> [(class name, box, score)] of the accepted images (a, b, empty d), by descending score."""
    out = {"a.png": [], "b.png": [], "d.png": []}
    for f, _, cls, score, box, *_ in DETS:
        if f in out:
            out[f].append((CLASSES[cls - 1], box, score))
    return {f: sorted(v, key=lambda t: -t[2]) for f, v in out.items()}


@pytest.fixture(scope="module")
def decided():
    dets, decisions = decide_images(detection_table(), images(), threshold_model(**MODEL), 0.3, empty="accept")
    assert decisions.set_index("file_name")["accepted"].to_dict() == {
        "a.png": True, "b.png": True, "c.png": False, "d.png": True}
    return dets, decisions


@pytest.fixture(scope="module")
def written(decided, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("labels")
    (tmp / "images").mkdir()
    for f, (h, w) in SIZES.items():
        Image.new("RGB", (w, h)).save(tmp / "images" / f)
    manifest = accepted_manifest(*decided, CLASSES, image_root=tmp / "images")
    paths = write_labels(manifest, tmp / "out")
    return tmp, manifest, paths


def test_accepted_manifest_content(decided):
    manifest = accepted_manifest(*decided, CLASSES)
    assert [(img["id"], img["file_name"], img["height"], img["width"]) for img in manifest.images] == [
        (11, "a.png", 60, 80), (12, "b.png", 50, 100), (14, "d.png", 30, 30)]
    assert manifest.class_names == CLASSES
    anns = manifest.annotations
    assert len(anns) == 5 and [a["id"] for a in anns] == [1, 2, 3, 4, 5]
    for ann, (f, det, cls, score, box, ent, _, al_cal, ep) in zip(anns, DETS[:5]):
        assert ann["image_id"] == IDS[f] and ann["category_id"] == cls and ann["score"] == score and ann["det"] == det
        assert ann["bbox"] == pytest.approx([box[1], box[0], box[3] - box[1], box[2] - box[0]])
        unc = ann["uncertainty"]
        assert unc["entropy"] == ent and unc["al_rel_cal"] == pytest.approx(al_rel_cal(box, al_cal))
        expected_combined = 0.5 * ent / 2.0 + 0.5 * min(al_rel_cal(box, al_cal) / 0.5, 1.0)
        assert unc["combined"] == pytest.approx(expected_combined)
        assert unc["al_sigma"] == al_cal and unc["ep_sigma"] == ep      # calibrated al preferred
        assert unc["sigma_calibrated"] is False                         # ep has no calibrated columns
    assert "al_sigma" not in accepted_manifest(*decided, CLASSES, sigma_columns=False).annotations[0]["uncertainty"]


def test_sigma_calibrated_when_every_vector_is(decided):
    dets, decisions = decided
    only_al = dets.drop(columns=[f"ep_{c}" for c in CORNERS])
    unc = accepted_manifest(only_al, decisions, CLASSES).annotations[0]["uncertainty"]
    assert unc["sigma_calibrated"] is True and "ep_sigma" not in unc
    raw_al = detection_table().drop(columns=[f"al_{c}_cal" for c in CORNERS] + [f"ep_{c}" for c in CORNERS])
    decided_raw = decide_images(raw_al, images(), threshold_model(names=("entropy", "al_rel"), hi=(2.0, 0.5)), 0.3)
    unc = accepted_manifest(*decided_raw, CLASSES).annotations[0]["uncertainty"]
    assert unc["al_sigma"] == DETS[0][6] and unc["sigma_calibrated"] is False and "al_rel" in unc
    with pytest.raises(AutolabelError, match="al_ymin_cal"):
        accepted_manifest(raw_al.assign(combined=0.1, u_al_rel_cal=0.1, contribution_al_rel_cal=0.1), decisions,
                          CLASSES)


def test_class_ids_outside_the_classes_raise(decided):
    with pytest.raises(AutolabelError, match="class ids \\[3\\] outside 1..2"):
        accepted_manifest(*decided, CLASSES[:2])


def labels_by_file(manifest) -> dict[str, list[tuple[str, list[float], float]]]:
    names = {c["id"]: c["name"] for c in manifest.categories}
    out = {}
    for img in manifest.images:
        objs = manifest.objects(img["id"])
        rows = [(names[int(c)], b.tolist(), float(s)) for c, b, s in zip(objs.class_ids, objs.boxes, objs.scores)]
        out[img["file_name"]] = sorted(rows, key=lambda t: -t[2])
    return out


def assert_same_labels(manifest, atol: float) -> None:
    got, want = labels_by_file(manifest), expected_labels()
    assert sorted(got) == sorted(want)
    for f in want:
        assert [n for n, _, _ in got[f]] == [n for n, _, _ in want[f]], f
        assert [s for _, _, s in got[f]] == pytest.approx([s for _, _, s in want[f]], abs=1e-6), f
        assert np.allclose([b for _, b, _ in got[f]], [b for _, b, _ in want[f]], atol=atol), f


def test_write_paths(written):
    tmp, _, paths = written
    out = tmp / "out"
    assert paths == {"coco": out / "coco" / "labels.json", "kitti": out / "kitti", "yolo": out / "yolo",
                     "voc": out / "voc"}
    assert tuple(paths) == LABEL_FORMATS and paths["coco"].is_file()


def test_coco_round_trip_and_faster_coco_eval(written):
    tmp, manifest, paths = written
    back, _ = READERS["coco"](paths["coco"])
    assert_same_labels(back, 1e-9)
    assert back.image_ids == [11, 12, 14]
    data = json.loads(paths["coco"].read_text())
    assert [a["uncertainty"] for a in data["annotations"]] == [a["uncertainty"] for a in manifest.annotations]
    assert data["annotations"][0]["uncertainty"]["al_sigma"] == DETS[0][7]
    from faster_coco_eval import COCO

    coco = COCO(str(paths["coco"]))
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(anns) == 5 and sorted(coco.getImgIds()) == [11, 12, 14]
    first = next(a for a in anns if a["image_id"] == 11 and a["det"] == 0)
    assert first["bbox"] == pytest.approx([2.5, 1.25, 38.25, 28.875]) and first["score"] == 0.91
    assert first["uncertainty"]["entropy"] == 0.2
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == CLASSES


def test_kitti_round_trip(written):
    tmp, _, paths = written
    lines = (paths["kitti"] / "a.txt").read_text().splitlines()
    assert len(lines) == 2 and all(len(line.split()) == 16 for line in lines)
    back, _ = READERS["kitti"](paths["kitti"], classes=CLASSES, image_dir=tmp / "images")
    assert_same_labels(back, 1e-4)


def test_yolo_round_trip(written):
    tmp, _, paths = written
    assert all(len(line.split()) == 6 for line in (paths["yolo"] / "labels" / "b.txt").read_text().splitlines())
    back, _ = READERS["yolo"](paths["yolo"], image_dir=tmp / "images")
    assert_same_labels(back, 1e-4)


def test_voc_round_trip_and_uncertainty_element(written):
    _, manifest, paths = written
    back, _ = READERS["voc"](paths["voc"])
    assert_same_labels(back, 1e-4)
    anns = {img["file_name"]: [a for a in manifest.annotations if a["image_id"] == img["id"]]
            for img in manifest.images}
    checked = 0
    for f, file_anns in anns.items():
        root = ET.parse(paths["voc"] / f.replace(".png", ".xml")).getroot()
        objects = root.findall("object")
        assert len(objects) == len(file_anns)
        for obj, ann in zip(objects, file_anns):
            unc = obj.find("uncertainty")
            want = ann["uncertainty"]
            assert float(obj.find("score").text) == pytest.approx(ann["score"], abs=1e-6)
            assert float(unc.find("combined").text) == want["combined"]
            assert float(unc.find("entropy").text) == want["entropy"]
            assert float(unc.find("al_rel_cal").text) == want["al_rel_cal"]
            assert unc.find("sigma_calibrated").text == "false"
            for key in ("al_sigma", "ep_sigma"):
                vec = unc.find(key)
                assert [float(vec.find(c).text) for c in CORNERS] == want[key]
            checked += 1
    assert checked == 5
    # values equal the inputs, not only the manifest: first object of a.png
    obj = ET.parse(paths["voc"] / "a.xml").getroot().find("object")
    assert [float(obj.find("uncertainty/al_sigma").find(c).text) for c in CORNERS] == DETS[0][7]
    assert float(obj.find("uncertainty/entropy").text) == DETS[0][5]


def test_write_labels_options(written, tmp_path):
    _, manifest, _ = written
    with pytest.raises(AutolabelError, match="unknown label format.*'coco', 'kitti', 'yolo', 'voc'"):
        write_labels(manifest, tmp_path, formats=("coco", "pascal"))
    assert not any(tmp_path.iterdir())                          # nothing written before the check
    assert write_labels(manifest, tmp_path, formats=("yolo",)) == {"yolo": tmp_path / "yolo"}
    with pytest.raises(AutolabelError, match="already exist.*overwrite=True"):
        write_labels(manifest, tmp_path, formats=("coco", "yolo"))
    assert not (tmp_path / "coco").exists()
    paths = write_labels(manifest, tmp_path, formats=("coco", "yolo"), overwrite=True)
    assert paths["coco"].is_file()
