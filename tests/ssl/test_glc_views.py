"""GLC views and cleaning glue: flip mapping, view images, view consistency, cleaning with a change log, synthetic
corruption, the cleaned labels as a manifest."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from uncertainty_det.data.manifest import Manifest, ManifestBuilder, categories_from_names
from uncertainty_det.errors import UserError
from uncertainty_det.evaluation.matching import gt_frame_from_manifest
from uncertainty_det.ssl.glc import clean_labels, recovery
from uncertainty_det.ssl.glc_views import (
    CHANGE_KINDS, VIEWS, ViewSettings, annotation_ids, augment_image, check_methods, clean_with_changes,
    corrupt_labels, flip_boxes_back, labels_manifest, read_views, rule_thresholds, view_consistency,
    view_file_name, write_views,
)

CORNERS = ["ymin", "xmin", "ymax", "xmax"]


def frame(rows, **extra):
    """rows: (image_id, class_id, [ymin, xmin, ymax, xmax], score[, cons_iou])."""
    df = pd.DataFrame({
        "image_id": np.array([r[0] for r in rows], dtype=np.int64),
        "class_id": np.array([r[1] for r in rows], dtype=np.int64),
        **{c: np.array([float(r[2][k]) for r in rows], dtype=np.float64) for k, c in enumerate(CORNERS)},
        "score": np.array([r[3] for r in rows], dtype=np.float64),
    })
    if rows and len(rows[0]) > 4:
        df["cons_iou"] = np.array([r[4] for r in rows], dtype=np.float64)
    for k, v in extra.items():
        df[k] = v
    return df


def gt_frame(rows):
    """rows: (gt_id, image_id, class_id, box)."""
    return pd.DataFrame({
        "gt_id": np.array([r[0] for r in rows], dtype=np.int64),
        "image_id": np.array([r[1] for r in rows], dtype=np.int64),
        "class_id": np.array([r[2] for r in rows], dtype=np.int64),
        **{c: np.array([float(r[3][k]) for r in rows], dtype=np.float64) for k, c in enumerate(CORNERS)},
        "occluded": np.full(len(rows), -1, dtype=np.int64), "truncated": np.full(len(rows), -1.0),
        "file_name": [f"{r[1]}.png" for r in rows],
    })


# ---------------------------------------------------------------------------------------------
# Flip


def test_flip_boxes_back_crafted_case():
    # image 1 is 100 px wide, image 2 is 40 px wide
    pred = frame([(1, 1, [5, 10, 20, 30], 0.9), (2, 2, [0, 0, 10, 40], 0.5), (1, 3, [1, 70, 9, 100], 0.2)],
                 al_xmin=[1.0, 2.0, 3.0], al_xmax=[10.0, 20.0, 30.0], al_ymin=[7.0, 7.0, 7.0],
                 ep_xmin_cal=[4.0, 5.0, 6.0], ep_xmax_cal=[40.0, 50.0, 60.0])
    out = flip_boxes_back(pred, {1: 100, 2: 40})
    np.testing.assert_allclose(out[CORNERS].to_numpy(), [[5, 70, 20, 90], [0, 0, 10, 40], [1, 0, 9, 30]])
    np.testing.assert_allclose(out["al_xmin"], [10, 20, 30])
    np.testing.assert_allclose(out["al_xmax"], [1, 2, 3])
    np.testing.assert_allclose(out["ep_xmin_cal"], [40, 50, 60])
    np.testing.assert_allclose(out["al_ymin"], [7, 7, 7])
    assert list(out["score"]) == list(pred["score"]) and list(out.index) == list(pred.index)
    # twice = identity; the input frame is untouched
    pd.testing.assert_frame_equal(flip_boxes_back(out, {1: 100, 2: 40}), pred)
    assert pred["xmin"].tolist() == [10, 0, 70]


def test_flip_boxes_back_covariance_and_missing_width():
    cov = np.arange(16, dtype=np.float64).reshape(4, 4)
    cov = cov + cov.T
    pred = frame([(1, 1, [0, 10, 5, 20], 0.5)], al_cov=[cov.reshape(-1).tolist()])
    out = flip_boxes_back(pred, {1: 50})
    back = np.asarray(out["al_cov"].iloc[0]).reshape(4, 4)
    # var(xmin') = var(xmax), cov(ymin, xmin') = -cov(ymin, xmax), cov(xmin', xmax') = cov(xmax, xmin)
    assert back[1, 1] == cov[3, 3] and back[0, 1] == -cov[0, 3] and back[1, 3] == cov[3, 1]
    with pytest.raises(UserError, match="no image width for image 7"):
        flip_boxes_back(frame([(7, 1, [0, 0, 1, 1], 0.5)]), {1: 50})


def _equivariant_predictions(image_boxes, widths):
    """What a perfectly flip-equivariant predictor outputs: on the mirrored image, the mirrored boxes."""
    plain = frame([(i, c, b, s) for i, c, b, s in image_boxes])
    mirrored = plain.copy()
    w = plain["image_id"].map(widths).to_numpy(dtype=np.float64)
    mirrored["xmin"], mirrored["xmax"] = w - plain["xmax"], w - plain["xmin"]
    return plain, mirrored


def test_flip_equivariant_predictor_gives_cons_iou_one():
    widths = {1: 64, 2: 100}
    plain, mirrored = _equivariant_predictions(
        [(1, 1, [2, 3, 20, 15], 0.9), (1, 2, [30, 40, 60, 63], 0.6), (2, 3, [10, 5, 50, 35], 0.4)], widths)
    assert not np.allclose(mirrored[CORNERS], plain[CORNERS])            # asymmetric boxes: the flip matters
    out, mapped = view_consistency(plain, {"flip": mirrored}, widths)
    np.testing.assert_allclose(out["cons_iou"], 1.0)
    assert out["cons_cls"].all()
    pd.testing.assert_frame_equal(mapped["flip"][CORNERS], plain[CORNERS])
    # all three views equivariant / invariant -> still 1; without the mapping the flip view would disagree
    out, _ = view_consistency(plain, {"flip": mirrored, "blur": plain, "noise": plain}, widths)
    np.testing.assert_allclose(out["cons_iou"], 1.0)
    out, _ = view_consistency(plain, {"blur": mirrored}, widths)
    assert (out["cons_iou"] < 1.0).all()


def test_view_consistency_partial_agreement():
    plain = frame([(1, 1, [0, 0, 10, 10], 0.9)])
    half = frame([(1, 1, [0, 0, 10, 5], 0.8)])                      # IoU 0.5 with the plain box
    out, _ = view_consistency(plain, {"blur": half, "noise": plain.iloc[:0]}, {1: 10})
    assert out["cons_iou"].iloc[0] == pytest.approx(0.25) and not out["cons_cls"].iloc[0]
    with pytest.raises(UserError, match="unknown view"):
        view_consistency(plain, {"rotate": plain}, {1: 10})


# ---------------------------------------------------------------------------------------------
# View images


def test_augment_image_views():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    flipped = augment_image(image, "flip")
    np.testing.assert_array_equal(flipped[:, 0], image[:, -1])
    np.testing.assert_array_equal(augment_image(flipped, "flip"), image)
    blurred = augment_image(image, "blur", ViewSettings(blur_sigma=1.7))
    assert blurred.dtype == np.uint8 and blurred.shape == image.shape and blurred.std() < image.std()
    flat = np.full((8, 8, 3), 100, np.uint8)
    np.testing.assert_array_equal(augment_image(flat, "blur"), flat)
    settings = ViewSettings(noise_std=8.0, seed=3)
    noisy = augment_image(flat, "noise", settings, image_id=5)
    assert noisy.dtype == np.uint8 and 5 < (noisy.astype(float) - 100).std() < 11
    np.testing.assert_array_equal(noisy, augment_image(flat, "noise", settings, image_id=5))   # seeded by image
    assert not np.array_equal(noisy, augment_image(flat, "noise", settings, image_id=6))
    np.testing.assert_array_equal(augment_image(flat, "noise", ViewSettings(noise_std=0.0)), flat)
    with pytest.raises(UserError, match="unknown view"):
        augment_image(image, "rotate")
    with pytest.raises(UserError, match="blur_sigma"):
        ViewSettings(blur_sigma=0.0)


def _tiny_dataset(tmp_path, n=3):
    root = tmp_path / "data"
    (root / "images" / "sub").mkdir(parents=True)
    builder = ManifestBuilder(categories_from_names(["a", "b"]))
    rng = np.random.default_rng(1)
    for k in range(n):
        name = f"sub/img{k}.jpg" if k == 0 else f"img{k}.png"
        Image.fromarray(rng.integers(0, 256, (20, 30 + k, 3), dtype=np.uint8)).save(root / "images" / name)
        img = builder.add_image(name, 20, 30 + k, image_id=10 + k)
        builder.add_objects(img, np.array([[1.0, 2.0, 10.0, 12.0 + k]]), [1 + k % 2])
    manifest = builder.build(image_root=root / "images")
    manifest.write(root / "train.json")
    return Manifest.read(root / "train.json")


def test_write_and_read_views(tmp_path):
    manifest = _tiny_dataset(tmp_path)
    (manifest.image_root / "img2.png").write_bytes(b"not an image")          # corrupt: skipped with a warning
    settings = ViewSettings(blur_sigma=1.0, noise_std=4.0, seed=2)
    views, skipped = write_views(manifest, tmp_path / "views", settings)
    assert skipped == [12] and set(views) == set(VIEWS)
    for view, m in views.items():
        assert m.image_ids == [10, 11] and m.image(10)["file_name"] == "sub/img0.png"
        assert (m.image(11)["height"], m.image(11)["width"]) == (20, 31)
        assert m.num_annotations == 2 and (tmp_path / "views" / view / "manifest.json").is_file()
        on_disk = np.asarray(Image.open(m.image_path(10)))
        source = np.asarray(Image.open(manifest.image_path(10)).convert("RGB"))
        np.testing.assert_array_equal(on_disk, augment_image(source, view, settings, image_id=10))
    again = read_views(tmp_path / "views", manifest.image_ids, settings)
    assert again is not None and again["flip"].image_ids == [10, 11]
    assert read_views(tmp_path / "views", manifest.image_ids, ViewSettings(blur_sigma=2.0)) is None
    assert read_views(tmp_path / "views", [10, 11], settings) is None       # made for other images
    assert read_views(tmp_path / "nothing", manifest.image_ids, settings) is None
    assert view_file_name("a/b.jpg") == "a/b.png" and view_file_name("x") == "x.png"


def test_write_views_skips_every_unreadable_image_error(tmp_path, monkeypatch):
    """PIL raises SyntaxError for some broken PNG chunks: skipped and counted like OSError/ValueError."""
    import uncertainty_det.data.images as images

    manifest = _tiny_dataset(tmp_path)
    load_rgb = images.load_rgb
    errors = {str(manifest.image_path(11)): SyntaxError("broken PNG file"), str(manifest.image_path(12)): ValueError}

    def flaky(path):
        if str(path) in errors:
            raise errors[str(path)]
        return load_rgb(path)

    monkeypatch.setattr(images, "load_rgb", flaky)
    views, skipped = write_views(manifest, tmp_path / "views", ViewSettings(seed=2))
    assert skipped == [11, 12] and all(m.image_ids == [10] for m in views.values())


# ---------------------------------------------------------------------------------------------
# Cleaning with a change log


def _case():
    gt = gt_frame([
        (1, 1, 1, [0, 0, 10, 10]),      # supported, noisy: the consistent prediction 1 moves it
        (2, 1, 2, [50, 50, 60, 60]),    # no prediction touches it -> removed
        (3, 2, 1, [0, 0, 20, 20]),      # matched exactly (box unchanged)
    ])
    preds = frame([
        (1, 1, [0, 1, 10, 11], 0.9, 0.95),     # IoU 0.82 with gt 1
        (1, 3, [30, 30, 40, 40], 0.8, 0.95),   # touches no GT -> added
        (2, 1, [0, 0, 20, 20], 0.9, 0.95),
        (2, 2, [21, 21, 25, 25], 0.05, 0.99),  # below md min_score
    ])
    return gt, preds


@pytest.mark.parametrize("methods", [["md", "mistakes", "noisy"], ["noisy", "md"], ["mistakes"]])
def test_clean_with_changes_equals_clean_labels(methods):
    gt, preds = _case()
    cleaned, counts, changes = clean_with_changes(gt, preds, methods)
    expected, expected_counts = clean_labels(gt, preds, methods)
    pd.testing.assert_frame_equal(cleaned, expected)
    assert counts == expected_counts
    for kind in CHANGE_KINDS:
        assert (changes["change"] == kind).sum() == counts[kind]


def test_change_rows():
    gt, preds = _case()
    _, counts, changes = clean_with_changes(gt, preds, ["md", "mistakes", "noisy"])
    assert counts == {"added": 1, "removed": 1, "corrected": 1}
    assert changes["change"].tolist() == ["added", "removed", "corrected"]
    added, removed, corrected = (changes.iloc[k] for k in range(3))
    assert added["gt_id"] < 0 and added["class_id"] == 3 and added["xmin"] == 30 and added["score"] == 0.8
    assert added["cons_iou"] == 0.95 and np.isnan(added["prev_xmin"])
    assert removed["gt_id"] == 2 and removed["xmin"] == 50 and np.isnan(removed["score"])
    assert corrected["gt_id"] == 1 and corrected["prev_xmin"] == 0 and corrected["xmin"] == 1
    assert corrected["iou"] == pytest.approx(9 * 10 / (11 * 10)) and corrected["score"] == 0.9
    with pytest.raises(UserError, match="unique"):
        clean_with_changes(pd.concat([gt, gt], ignore_index=True), preds)


def test_methods_and_thresholds_checks():
    assert check_methods(["noisy", "md"]) == ["md", "noisy"] and check_methods("mistakes") == ["mistakes"]
    with pytest.raises(UserError, match="unknown GLC method"):
        check_methods(["md", "typo"])
    with pytest.raises(UserError, match="no GLC method"):
        check_methods([])
    kwargs = rule_thresholds({"md": {"iou_consistency": 0.5, "max_overlap": 0}, "noisy": {"min_score": "0.2"},
                              "mistakes": None})
    assert kwargs == {"md_iou_consistency": 0.5, "md_max_overlap": 0.0, "noisy_min_score": 0.2}
    with pytest.raises(UserError, match="md.min_iou"):
        rule_thresholds({"md": {"min_iou": 0.1}})
    with pytest.raises(UserError, match="number"):
        rule_thresholds({"noisy": {"max_iou": "high"}})


# ---------------------------------------------------------------------------------------------
# Synthetic corruption and the labels manifest


def _many_boxes():
    rows = []
    for img in range(1, 6):
        for k in range(4):
            rows.append((img * 10 + k, img, 1 + k % 3, [5 + 20 * k, 5, 15 + 20 * k, 25]))
    return gt_frame(rows)


@pytest.mark.parametrize("kind, key, n", [("drop", "dropped", 4), ("mistakes", "planted", 10),
                                         ("noise", "perturbed", 4)])
def test_corrupt_labels(kind, key, n):
    gt = _many_boxes()
    sizes = {i: (100, 100) for i in range(1, 6)}
    corrupted, counts = corrupt_labels(gt, kind, sizes, num_classes=3, seed=4, mistakes_per_image=2)
    assert counts == {key: n}
    again, _ = corrupt_labels(gt, kind, sizes, num_classes=3, seed=4, mistakes_per_image=2)
    pd.testing.assert_frame_equal(corrupted, again)                     # seeded
    rec = recovery(gt, corrupted, corrupted, kind)                       # nothing cleaned: nothing recovered
    assert rec.get("n_dropped", rec.get("n_planted", rec.get("n_perturbed"))) == n
    with pytest.raises(UserError, match="synthetic corruption"):
        corrupt_labels(gt, "blur", sizes, num_classes=3)


def test_annotation_ids():
    np.testing.assert_array_equal(annotation_ids([5, -3, 7, -2, -4], 100), [5, 101, 7, 100, 102])


def test_labels_manifest_round_trip(tmp_path):
    manifest = _tiny_dataset(tmp_path)
    gt = gt_frame_from_manifest(manifest)
    preds = frame([(10, 2, [12, 20, 18, 29], 0.9, 1.0), (11, 1, [1, 2, 10, 13], 0.9, 1.0),
                   (12, 1, [1, 2, 10, 14], 0.9, 1.0)])
    cleaned, counts, _ = clean_with_changes(gt, preds, ["md"])
    assert counts["added"] == 1
    labels, ann_ids = labels_manifest(manifest, cleaned, info={"description": "cleaned"})
    assert ann_ids.tolist() == [*gt["gt_id"].tolist(), max(gt["gt_id"]) + 1]
    labels.write(tmp_path / "out" / "labeled.json", image_root=manifest.image_root)
    back = Manifest.read(tmp_path / "out" / "labeled.json")
    assert back.image_ids == manifest.image_ids and back.image_path(10).resolve() == manifest.image_path(10).resolve()
    assert back.image_path(10).is_file()
    got = gt_frame_from_manifest(back)
    want = cleaned.assign(gt_id=ann_ids, file_name=cleaned["image_id"].map(
        {i: manifest.image(i)["file_name"] for i in manifest.image_ids}))
    want = want.sort_values("image_id", kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_exact=False, atol=1e-9)
    assert json.loads((tmp_path / "out" / "labeled.json").read_text())["info"]["description"] == "cleaned"
    # boxes outside the image are clipped, degenerate ones dropped and counted
    odd = cleaned.copy()
    odd.loc[0, "xmax"] = 500.0
    odd.loc[1, ["ymin", "ymax"]] = [3.0, 3.2]
    labels, _ = labels_manifest(manifest, odd)
    assert (labels.sanitize_report.clipped, labels.sanitize_report.dropped) == (1, 1)
    with pytest.raises(UserError, match="not in the manifest"):
        labels_manifest(manifest, cleaned.assign(image_id=99))
