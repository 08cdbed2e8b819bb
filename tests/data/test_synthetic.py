"""Tests of the synthetic dataset generator (uncertainty_det.data.synthetic) and its Hydra configs."""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from uncertainty_det.data import synthetic
from uncertainty_det.data.corruptions import apply_corruption
from uncertainty_det.data.errors import DatasetError
from uncertainty_det.data.images import load_rgb
from uncertainty_det.data.manifest import Manifest
from uncertainty_det.data.synthetic import (
    BACKGROUND_FNS,
    SyntheticConfig,
    config_to_dict,
    ensure_synthetic,
    generate_synthetic,
    image_seed,
    render_sample,
    sample_classes,
    sample_sizes,
    synthetic_config_from_dict,
)

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def tiny(**overrides) -> SyntheticConfig:
    """A small, fast config: 96x96 images, 8 train + 6 val."""
    base = dict(
        seed=3,
        image_size=(96, 96),
        num_images={"train": 8, "val": 6},
        objects_per_image=(1, 4),
        clutter=(1, 3),
    )
    base.update(overrides)
    return SyntheticConfig(**base)


def clean(**overrides) -> SyntheticConfig:
    """Plain background, no noise, no clutter, no occlusion: every drawn pixel belongs to a labelled object."""
    return tiny(background="plain", noise_std=0.0, clutter=(0, 0), occlusion=0.0, **overrides)


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def annotations(root: Path, split: str) -> list[dict]:
    return json.loads((root / "annotations" / f"{split}.json").read_text())["annotations"]


@pytest.fixture(scope="module")
def base_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "base"
    generate_synthetic(root, tiny(), progress=False)
    return root


# ----------------------------------------------------------------------------- layout and determinism
def test_layout_and_manifests(base_root):
    cfg = tiny()
    info = json.loads((base_root / "dataset_info.json").read_text())
    assert info["config"] == config_to_dict(cfg)
    assert info["generator_version"] == synthetic.GENERATOR_VERSION
    for split, n in cfg.num_images.items():
        man = Manifest.read(base_root / "annotations" / f"{split}.json")
        assert len(man) == n
        assert man.class_names == list(cfg.classes)
        assert man.sanitize_report.dropped == 0
        assert man.image_root.resolve() == (base_root / "images").resolve()
        for k, img in enumerate(man.images, start=1):
            assert img["file_name"] == f"{split}/{split}_{k:06d}.png"
            path = man.image_path(img["id"])
            assert path.is_file() and load_rgb(path).shape == (96, 96, 3)
        for ann in man.annotations:
            assert ann["occluded"] in (0, 1, 2)
            assert 0.0 <= ann["truncated"] <= cfg.max_truncated
        stats = info["splits"][split]
        assert stats["images"] == n and stats["objects"] == man.num_annotations
        assert stats["per_class"] == man.class_counts()


def test_same_seed_gives_identical_bytes(base_root, tmp_path):
    again = tmp_path / "again"
    generate_synthetic(again, tiny(), progress=False)
    assert all_files(again) == all_files(base_root)
    other = tmp_path / "other"
    generate_synthetic(other, tiny(seed=4), progress=False)
    a, b = all_files(other), all_files(base_root)
    assert a.keys() == b.keys()
    assert a["images/train/train_000001.png"] != b["images/train/train_000001.png"]
    assert a["annotations/train.json"] != b["annotations/train.json"]


def test_worker_pool_gives_identical_bytes(base_root, tmp_path):
    pooled = tmp_path / "pooled"
    generate_synthetic(pooled, tiny(), progress=False, workers=2)
    assert all_files(pooled) == all_files(base_root)


def test_split_seeds_are_stable_and_distinct():
    assert image_seed(0, "train", 1) == image_seed(0, "train", 1)
    seeds = {image_seed(0, s, i, st) for s in ("train", "val") for i in (1, 2) for st in ("scene", "labels", "shift")}
    assert len(seeds) == 12
    # the split hash is SHA-256 based (stable across processes), not Python's salted hash()
    assert synthetic._split_key("train") == int.from_bytes(hashlib.sha256(b"train").digest()[:8], "little") >> 1


# ----------------------------------------------------------------------------- content statistics
def test_class_imbalance_matches_weights():
    cfg = SyntheticConfig()
    assert len(cfg.classes) >= 6
    ids = sample_classes(cfg, 2000, np.random.default_rng(0))
    freq = np.bincount(ids, minlength=len(cfg.classes) + 1)[1:] / 2000
    assert np.allclose(freq, cfg.weights, atol=0.03)
    assert cfg.weights.min() <= 0.05 and freq[np.argmin(cfg.weights)] > 0  # a rare class, still present


def test_size_range_covers_small_and_large():
    cfg = SyntheticConfig(size_range=(0.03, 0.5))
    sizes = sample_sizes(cfg, 2000, np.random.default_rng(0))
    assert sizes.min() < 9 and sizes.max() > 0.45 * 256
    default = sample_sizes(SyntheticConfig(), 2000, np.random.default_rng(0))
    assert 25.6 <= default.min() < 27 and default.max() > 0.45 * 256   # default: 0.1 .. 0.5 of 256 px
    cfg = tiny(image_size=(128, 128), num_images={"train": 40}, size_range=(0.03, 0.5))
    sides = []
    for i in range(1, 41):
        b = render_sample(cfg, "train", i).true_boxes
        sides.append(np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]))
    sides = np.concatenate(sides)
    assert sides.min() <= 8 and sides.max() >= 0.35 * 128


def test_occlusion_and_truncation_occur_and_are_consistent():
    cfg = tiny(occlusion=0.6, objects_per_image=(3, 6), image_size=(128, 128))
    h, w = cfg.image_size
    occ, trunc = [], []
    for i in range(1, 41):
        s = render_sample(cfg, "train", i)
        occ.append(s.occluded)
        trunc.append(s.truncated)
        for box, t in zip(s.true_boxes, s.truncated):
            assert 0 <= box[0] < box[2] <= h and 0 <= box[1] < box[3] <= w
            if t > 0.005:
                assert box[0] == 0 or box[1] == 0 or box[2] == h or box[3] == w, "truncated box must touch the border"
            if box[0] > 0 and box[1] > 0 and box[2] < h and box[3] < w:
                assert t == 0
    occ, trunc = np.concatenate(occ), np.concatenate(trunc)
    assert set(np.unique(occ)) <= {0, 1, 2} and (occ > 0).sum() >= 3 and (occ == 0).sum() > 0
    assert (trunc > 0).sum() >= 3 and trunc.max() <= cfg.max_truncated


# ----------------------------------------------------------------------------- boxes are on their objects
def test_boxes_cover_drawn_pixels_and_are_tight():
    cfg = clean(objects_per_image=(2, 5))
    h, w = cfg.image_size
    n_objects = 0
    for i in range(1, 31):
        s = render_sample(cfg, "train", i)
        bg = BACKGROUND_FNS["plain"](h, w, np.random.default_rng(image_seed(cfg.seed, "train", i, "background")))
        drawn = np.any(s.image != bg.astype(np.uint8), axis=2)
        union = np.zeros((h, w), dtype=bool)
        assert np.all(s.occluded == 0)
        for box in s.true_boxes.astype(int):
            union[box[0] : box[2], box[1] : box[3]] = True
        assert not np.any(drawn & ~union), f"image {i}: drawn pixels outside every GT box"
        for box in s.true_boxes:
            y0, x0, y1, x1 = box.astype(int)
            assert np.all(box == box.astype(int))
            ys, xs = np.nonzero(drawn[y0:y1, x0:x1])
            assert ys.size > 0
            # the drawn extent fills the box to within 1 px on every side
            assert ys.min() <= 1 and xs.min() <= 1 and (y1 - y0) - 1 - ys.max() <= 1 and (x1 - x0) - 1 - xs.max() <= 1
            n_objects += 1
    assert n_objects >= 40


@pytest.mark.parametrize("class_colour", [0.0, 1.0])
def test_objects_contrast_with_background(class_colour):
    cfg = clean(class_colour=class_colour)
    h, w = cfg.image_size
    for i in range(1, 16):
        s = render_sample(cfg, "train", i)
        bg = BACKGROUND_FNS["plain"](h, w, np.random.default_rng(image_seed(cfg.seed, "train", i, "background")))[0, 0]
        for y0, x0, y1, x1 in s.true_boxes.astype(int):
            dist = np.linalg.norm(s.image[y0:y1, x0:x1].astype(float) - bg, axis=2)
            # colour >= 60 RGB units from the local background, shading moves it by at most ~26
            assert np.percentile(dist[dist > 0], 90) > 34


def _object_hues(cfg: SyntheticConfig, n_images: int = 25) -> list[tuple[int, float]]:
    """(class id, hue of the median drawn colour) of every object of a clean config's images."""
    import colorsys

    h, w = cfg.image_size
    out = []
    for i in range(1, n_images + 1):
        s = render_sample(cfg, "train", i)
        bg = BACKGROUND_FNS["plain"](h, w, np.random.default_rng(image_seed(cfg.seed, "train", i, "background")))
        drawn = np.any(s.image != bg.astype(np.uint8), axis=2)
        for (y0, x0, y1, x1), k in zip(s.true_boxes.astype(int), s.true_class_ids):
            pixels = s.image[y0:y1, x0:x1][drawn[y0:y1, x0:x1]].astype(float)
            r, g, b = np.median(pixels, axis=0) / 255.0
            out.append((int(k), colorsys.rgb_to_hsv(r, g, b)[0]))
    return out


def _hue_distance(a: float, b: float) -> float:
    d = abs(a - b) % 1.0
    return min(d, 1.0 - d)


def test_class_colour_paints_objects_in_their_hue_band():
    num_classes = len(SyntheticConfig().classes)
    always = _object_hues(clean(class_colour=1.0, objects_per_image=(2, 4)))
    assert len(always) >= 50
    # band half-width 0.25 / C; the +-15 grey-level shading and noise-free median move the hue a little
    for k, hue in always:
        assert _hue_distance(hue, (k - 1) / num_classes) <= 0.25 / num_classes + 0.02, (k, hue)
    never = _object_hues(clean(class_colour=0.0, objects_per_image=(2, 4)))
    outside = [_hue_distance(hue, (k - 1) / num_classes) > 0.25 / num_classes + 0.02 for k, hue in never]
    assert np.mean(outside) > 0.5   # free colours: most objects are outside their class band
    with pytest.raises(ValueError, match="class_colour"):
        tiny(class_colour=1.5)


# ----------------------------------------------------------------------------- label noise and shifts
def test_label_noise_changes_labels_only(tmp_path):
    a, b = tmp_path / "clean", tmp_path / "noisy"
    generate_synthetic(a, tiny(), progress=False)
    generate_synthetic(b, tiny(label_noise={"box_jitter": 0.1, "class_flip": 0.3}), progress=False)
    fa, fb = all_files(a), all_files(b)
    for name in fa:
        if name.startswith("images/"):
            assert fa[name] == fb[name], name
    for split in ("train", "val"):
        ca, cb = annotations(a, split), annotations(b, split)
        assert len(ca) == len(cb)
        assert [x["image_id"] for x in ca] == [x["image_id"] for x in cb]
        assert any(x["bbox"] != y["bbox"] for x, y in zip(ca, cb))
    all_a = annotations(a, "train") + annotations(a, "val")
    all_b = annotations(b, "train") + annotations(b, "val")
    assert any(x["category_id"] != y["category_id"] for x, y in zip(all_a, all_b))
    s_clean = render_sample(tiny(), "train", 2)
    s_noisy = render_sample(tiny(label_noise={"box_jitter": 0.1, "class_flip": 0.3}), "train", 2)
    assert np.array_equal(s_clean.boxes, s_noisy.true_boxes)
    assert np.array_equal(s_clean.class_ids, s_noisy.true_class_ids)


def test_fog_shift_matches_base_scenes(base_root, tmp_path):
    fog = tmp_path / "fog"
    generate_synthetic(fog, tiny(shift={"name": "fog", "severity": 5}), progress=False)
    cfg = tiny()
    for split in cfg.num_images:
        assert annotations(fog, split) == annotations(base_root, split)
        for i in range(1, cfg.num_images[split] + 1):
            rel = f"{split}/{split}_{i:06d}.png"
            base = load_rgb(base_root / "images" / rel)
            shifted = load_rgb(fog / "images" / rel)
            assert not np.array_equal(base, shifted)
            expected = apply_corruption(base, "fog", 5, seed=image_seed(cfg.seed, split, i, "shift"))
            assert np.array_equal(shifted, expected)
    man = Manifest.read(fog / "annotations" / "train.json")
    assert all(img["weather"] == "foggy" for img in man.images)


def test_newbg_keeps_scenes(base_root, tmp_path):
    cfg = tiny(background="newbg", num_images={"train": 8})
    new = tmp_path / "newbg"
    generate_synthetic(new, cfg, progress=False)
    assert annotations(new, "train") == annotations(base_root, "train")
    a = load_rgb(new / "images/train/train_000001.png").astype(float)
    b = load_rgb(base_root / "images/train/train_000001.png").astype(float)
    assert np.abs(a - b).mean() > 20


# ----------------------------------------------------------------------------- atomicity and ensure
def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = synthetic.render_sample

    def failing(cfg, split, index):
        calls["n"] += 1
        if calls["n"] > 3:
            raise RuntimeError("boom")
        return real(cfg, split, index)

    monkeypatch.setattr(synthetic, "render_sample", failing)
    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError, match="boom"):
        generate_synthetic(fresh, tiny(), progress=False, workers=1)
    assert not fresh.exists()
    assert list(tmp_path.iterdir()) == []

    monkeypatch.setattr(synthetic, "render_sample", real)
    root = tmp_path / "kept"
    generate_synthetic(root, tiny(), progress=False)
    before = all_files(root)
    calls["n"] = 0
    monkeypatch.setattr(synthetic, "render_sample", failing)
    with pytest.raises(RuntimeError):
        generate_synthetic(root, tiny(seed=9), progress=False, workers=1)
    assert all_files(root) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]


def test_refuses_to_replace_foreign_folder(tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    (root / "precious.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="refusing"):
        ensure_synthetic(root, tiny(), log=lambda msg: None, progress=False)
    assert (root / "precious.txt").read_text() == "keep me"


def test_ensure_generates_reads_and_regenerates(tmp_path):
    root = tmp_path / "ds"
    messages: list[str] = []
    cfg = tiny(num_images={"train": 4, "val": 2})
    first = ensure_synthetic(root, cfg, log=messages.append, progress=False)
    assert set(first) == {"train", "val"} and len(first["train"]) == 4
    assert len(messages) == 1 and "generating" in messages[0]
    stamp = (root / "annotations" / "train.json").stat().st_mtime_ns
    second = ensure_synthetic(root, cfg, log=messages.append, progress=False)
    assert len(messages) == 1 and len(second["val"]) == 2
    assert (root / "annotations" / "train.json").stat().st_mtime_ns == stamp
    changed = tiny(num_images={"train": 4, "val": 2}, noise_std=2.0)
    third = ensure_synthetic(root, changed, log=messages.append, progress=False)
    assert len(messages) == 2 and "regenerating" in messages[1] and "noise_std" in messages[1]
    assert json.loads((root / "dataset_info.json").read_text())["config"]["noise_std"] == 2.0
    assert len(third["train"]) == 4
    (root / "annotations" / "val.json").unlink()
    ensure_synthetic(root, changed, log=logging.getLogger("test"), progress=False)
    assert (root / "annotations" / "val.json").is_file()


# ----------------------------------------------------------------------------- config
def test_config_from_dict_roundtrip_and_errors():
    cfg = SyntheticConfig()
    d = config_to_dict(cfg)
    assert isinstance(d["image_size"], list)
    back = synthetic_config_from_dict(d)
    assert back == cfg and isinstance(back.image_size, tuple) and isinstance(back.classes, tuple)
    with pytest.raises(ValueError, match="colour_mode"):
        synthetic_config_from_dict({"colour_mode": 1})
    with pytest.raises(ValueError, match="class_weights"):
        synthetic_config_from_dict({"class_weights": [1, 2]})
    with pytest.raises(ValueError, match="available: .*circle"):
        synthetic_config_from_dict({"classes": ["circle", "blob"], "class_weights": None})
    with pytest.raises(ValueError, match="shift"):
        synthetic_config_from_dict({"shift": {"name": "hail", "severity": 3}})
    with pytest.raises(ValueError, match="background"):
        synthetic_config_from_dict({"background": "space"})
    with pytest.raises(ValueError, match="unknown split"):
        generate_synthetic("/nonexistent/never", tiny(), splits=["test"], progress=False)
    partial = synthetic_config_from_dict({"label_noise": {"class_flip": 0.2}})
    assert partial.label_noise == {"box_jitter": 0.0, "class_flip": 0.2}


@pytest.mark.parametrize(
    "name, shift, background",
    [
        ("synthetic", None, "gradient"),
        ("synthetic_fog", {"name": "fog", "severity": 5}, "gradient"),
        ("synthetic_noise", {"name": "gaussian_noise", "severity": 5}, "gradient"),
        ("synthetic_blur", {"name": "gaussian_blur", "severity": 5}, "gradient"),
        ("synthetic_dark", {"name": "darkness", "severity": 5}, "gradient"),
        ("synthetic_newbg", None, "newbg"),
    ],
)
def test_hydra_dataset_configs(name, shift, background):
    hydra = pytest.importorskip("hydra")
    from omegaconf import OmegaConf

    with hydra.initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = hydra.compose(overrides=[f"+dataset={name}", "+paths.data_dir=/tmp/x"])
    ds = OmegaConf.to_container(cfg.dataset, resolve=True)
    assert ds["name"] == name and ds["kind"] == "synthetic" and ds["root"] == f"/tmp/x/{name}"
    assert ds["splits"] == {s: f"annotations/{s}.json" for s in ("train", "val", "test")}
    assert ds["generator"]["classes"] == ds["classes"]
    gen = synthetic_config_from_dict(ds["generator"])
    assert gen.shift == shift and gen.background == background
    assert gen.seed == SyntheticConfig().seed
    assert list(gen.image_size) == ds["input_size"]
    assert config_to_dict(synthetic_config_from_dict(ds["generator"])) == config_to_dict(
        SyntheticConfig(shift=shift, background=background)
    )
