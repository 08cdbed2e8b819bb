"""Labeled-set builders: merging manifests across image roots, the rare-class rule, class names, and the
collage set (ids, files, determinism, full images) on crafted images."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from uncertainty_det.data.manifest import Manifest, ManifestBuilder, categories_from_names
from uncertainty_det.errors import UserError
from uncertainty_det.ssl.labeled_sets import (
    LabeledSetError, build_collage_set, class_ids_from_names, collage_figure, labeled_class_counts, merge_manifests,
    rare_target_classes,
)

CLASSES = ["car", "tram", "bike"]


def _png(path: Path, h: int, w: int, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)


def _manifest(root: Path, specs, first_id: int = 1, sub: str = "") -> Manifest:
    """specs: per image a list of (class_id, [ymin, xmin, ymax, xmax]); images 40x60 written under root."""
    builder = ManifestBuilder(categories_from_names(CLASSES))
    for k, objects in enumerate(specs):
        image_id = first_id + k
        name = f"{sub}img_{image_id}.png"
        _png(root / name, 40, 60, image_id)
        builder.add_image(name, 40, 60, image_id=image_id)
        if objects:
            builder.add_objects(image_id, np.array([b for _, b in objects], float), [c for c, _ in objects])
    return builder.build(image_root=root)


# ----------------------------------------------------------------------------------------------- merging


def test_merge_same_root_keeps_everything(tmp_path):
    base = _manifest(tmp_path, [[(1, [1, 1, 10, 10])], [(2, [5, 5, 20, 30])]])
    extra = _manifest(tmp_path, [[(3, [2, 2, 12, 12]), (1, [0, 0, 5, 5])]], first_id=10)
    merged = merge_manifests(base, extra)
    assert merged.image_ids == [1, 2, 10] and merged.image_root == Path(tmp_path).absolute()
    assert [img["file_name"] for img in merged.images] == ["img_1.png", "img_2.png", "img_10.png"]
    # annotation ids 1, 2 of base and 1, 2 of extra collide -> extra's shifted by base's max (2)
    assert [a["id"] for a in merged.annotations] == [1, 2, 3, 4]
    np.testing.assert_allclose(merged.objects(10).boxes, extra.objects(10).boxes)
    assert merged.objects(10).class_ids.tolist() == [3, 1]
    assert merged.class_counts() == {"car": 2, "tram": 1, "bike": 1}


def test_merge_across_roots_resolves_every_image(tmp_path):
    """Absolute file names are not an option: the validator and image_path reject them (pathlib alone would
    let them win the join); the merged root is the common folder instead."""
    assert Path("/root/a") / "/abs/x.png" == Path("/abs/x.png")
    with pytest.raises(UserError, match="unsafe file name"):
        Manifest.from_coco({"images": [{"id": 1, "file_name": str(tmp_path / "x.png"), "height": 4, "width": 4}],
                            "annotations": [], "categories": [{"id": 1, "name": "a"}]})
    base = _manifest(tmp_path / "data" / "images", [[(1, [1, 1, 10, 10])], []], sub="sub/")
    extra = _manifest(tmp_path / "runs" / "R" / "rcc" / "images", [[(2, [1, 1, 30, 30])]], first_id=100)
    extra.annotations[0]["id"] = 50                      # disjoint annotation ids are kept
    extra = Manifest.from_coco(extra.to_coco(), image_root=extra.image_root)
    merged = merge_manifests(base, extra)
    assert merged.image_root == tmp_path.absolute()
    assert [img["file_name"] for img in merged.images] == [
        "data/images/sub/img_1.png", "data/images/sub/img_2.png", "runs/R/rcc/images/img_100.png"]
    assert [a["id"] for a in merged.annotations] == [1, 50]
    for i, source in ((1, base), (2, base), (100, extra)):
        assert merged.image_path(i).resolve() == source.image_path(i).resolve() and merged.image_path(i).is_file()
    # a merged manifest is a plain one: it writes, reads back and subsets
    merged.write(tmp_path / "merged.json")
    again = Manifest.read(tmp_path / "merged.json")
    assert again.image_path(100).resolve() == extra.image_path(100).resolve()
    assert again.subset([100, 1]).image_ids == [100, 1]
    # a relative image root is taken from the working directory
    rel = Manifest(base.images, base.annotations, base.categories, image_root=Path("data/images"))
    assert merge_manifests(rel, extra).image_path(1).is_absolute()


def test_merge_errors(tmp_path):
    base = _manifest(tmp_path, [[(1, [1, 1, 10, 10])], []])
    with pytest.raises(LabeledSetError, match=r"image ids \[2\] are in both"):
        merge_manifests(base, _manifest(tmp_path, [[]], first_id=2))
    other = Manifest(base.images[:1], [], [{"id": 1, "name": "car"}, {"id": 2, "name": "tram"}],
                     image_root=tmp_path)
    with pytest.raises(LabeledSetError, match="categories differ"):
        merge_manifests(base, Manifest([{"id": 9, "file_name": "img_1.png", "height": 40, "width": 60}], [],
                                       other.categories, image_root=tmp_path))
    with pytest.raises(UserError, match="two Manifest"):
        merge_manifests(base, base.to_coco())


# ----------------------------------------------------------------------------------------------- classes


def test_rare_target_classes_rule():
    # x = 1/ln n: n = 100, 10, 1000 -> 1/(2 ln10), 1/ln10, 1/(3 ln10): scaled 0.25, 1, 0
    assert rare_target_classes({1: 100, 2: 10, 3: 1000}) == [2]
    assert rare_target_classes({1: 100, 2: 10, 3: 1000}, 0.25) == [1, 2]
    assert rare_target_classes({1: 100, 2: 10, 3: 1000}, 0.0) == [1, 2, 3]
    # one object -> weight 1 (a target); no object -> nothing to crop; the scale spans the classes with n > 1,
    # so the rarest of them (20) weighs 1 too
    assert rare_target_classes({1: 50, 2: 1, 3: 0, 4: 20}) == [2, 4]
    x = {n: 1 / math.log(n) for n in (50, 30, 20)}
    w30 = (x[30] - x[50]) / (x[20] - x[50])                                    # ~0.48
    assert rare_target_classes({1: 50, 2: 30, 3: 20}, w30 - 1e-4) == [2, 3]
    assert rare_target_classes({1: 50, 2: 30, 3: 20}, w30 + 1e-4) == [3]
    # equal counts: no spread, every class weighs 0
    assert rare_target_classes({1: 7, 2: 7}) == [] and rare_target_classes({1: 7, 2: 7}, 0.0) == [1, 2]
    with pytest.raises(LabeledSetError, match="rare_weight_min"):
        rare_target_classes({1: 5}, 1.5)


def test_class_ids_from_names():
    cats = categories_from_names(CLASSES)
    assert class_ids_from_names(["bike", "tram", "bike"], cats) == [3, 2]
    assert class_ids_from_names("tram", cats) == [2]
    with pytest.raises(LabeledSetError, match=r"unknown class name\(s\) \['unicorn'\].*car"):
        class_ids_from_names(["tram", "unicorn"], cats)
    with pytest.raises(LabeledSetError, match="empty"):
        class_ids_from_names([], cats)


# ----------------------------------------------------------------------------------------------- collages


@pytest.fixture()
def pool(tmp_path):
    specs = [
        [(1, [2, 2, 20, 20]), (2, [10, 30, 30, 50])],       # tram next to a car
        [(1, [5, 5, 25, 25])],
        [(3, [0, 0, 39, 59]), (2, [15, 15, 25, 25])],       # a tram inside a large bike box
        [(1, [1, 1, 9, 9])],
        [(2, [4, 40, 36, 58])],                             # not labeled
    ]
    return _manifest(tmp_path / "pool", specs)


def test_collage_set_ids_files_and_classes(pool, tmp_path):
    labeled = [1, 2, 3, 4]
    made = build_collage_set(pool, labeled, [2], tmp_path / "out", seed=3)
    m = made.manifest
    assert made.images_with_targets == [1, 3] and made.crops == 2 and made.skipped_images == []
    assert made.collage_hw == (40, 60) and made.collages == len(m) >= 1 and made.full_images == 0
    assert m.image_ids == list(range(6, 6 + made.collages))                     # above the pool's ids
    assert min(a["id"] for a in m.annotations) == pool.num_annotations + 1
    along = {1, 2, 3}
    for i in m.image_ids:
        path = m.image_path(i)
        assert path.parent == tmp_path / "out" and path.name == f"collage_{i - 5:06d}.png"
        with Image.open(path) as im:
            assert im.size == (60, 40)
        objs = m.objects(i)
        assert np.all(objs.boxes[:, [0, 2]] <= 40) and np.all(objs.boxes[:, [1, 3]] <= 60) and np.all(objs.boxes >= 0)
        assert set(objs.class_ids.tolist()) <= along
    # the bike box spanning image 3 comes along with its tram (rectangle intersection)
    assert 3 in {c for i in m.image_ids for c in m.objects(i).class_ids.tolist()}
    again = build_collage_set(pool, labeled, [2], tmp_path / "again", seed=3)
    assert again.manifest.to_coco()["annotations"] == m.to_coco()["annotations"]
    for i in m.image_ids:
        assert again.manifest.image_path(i).read_bytes() == m.image_path(i).read_bytes()
    fig = collage_figure(m, title="t")
    assert len(fig.axes) == len(m)
    assert labeled_class_counts(m) == {1: m.class_counts()["car"], 2: m.class_counts()["tram"],
                                       3: m.class_counts()["bike"]}


def test_collage_set_full_images_ids_and_errors(pool, tmp_path):
    made = build_collage_set(pool, [1, 2, 3, 4], [2], tmp_path / "out", seed=0, full_images=True,
                             first_image_id=1000, first_annotation_id=500, collage_hw=(32, 32))
    m = made.manifest
    full = [img for img in m.images if img["rcc"] == "full_image"]
    assert [img["source_image_id"] for img in full] == [1, 3] and made.full_images == 2
    assert m.image_ids[0] == 1000 and min(a["id"] for a in m.annotations) == 500
    assert all((img["height"], img["width"]) == (32, 32) for img in m.images if img["rcc"] == "collage")
    for img in full:
        assert m.image_path(img["id"]).read_bytes() == pool.image_path(img["source_image_id"]).read_bytes()
        assert m.objects(img["id"]).class_ids.tolist() == pool.objects(img["source_image_id"]).class_ids.tolist()
    # an unreadable labeled image is skipped and listed
    pool.image_path(3).write_bytes(b"not a png")
    made = build_collage_set(pool, [1, 2, 3, 4], [2], tmp_path / "skip", seed=0)
    assert made.skipped_images == [3] and made.crops == 1
    with pytest.raises(LabeledSetError, match="not in the pool"):
        build_collage_set(pool, [1, 99], [2], tmp_path / "x")
    with pytest.raises(LabeledSetError, match="not classes"):
        build_collage_set(pool, [1], [7], tmp_path / "x")
    with pytest.raises(LabeledSetError, match="no labeled images"):
        build_collage_set(pool, [], [2], tmp_path / "x")
