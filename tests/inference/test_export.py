"""Export (SavedModel in a fresh process vs in-memory), image sources and drawing."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.helpers import REPO
from uncertainty_det.inference import drawing
from uncertainty_det.inference import image_sources as src

CLASSES = ["circle", "square", "triangle"]
T = 4
SEED = 7


# ------------------------------------------------------------------------------------------ export
@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A random-weight tiny EfficientDet (loss attenuation + head MC) exported at 128 x 128."""
    from uncertainty_det.data.pipeline import InputConfig
    from uncertainty_det.inference.export import export_model
    from uncertainty_det.inference.postprocess import PostprocessConfig
    from uncertainty_det.model.config import DetectorConfig
    from uncertainty_det.model.efficientdet import build_efficientdet

    cfg = DetectorConfig(num_classes=len(CLASSES), image_size=(128, 128), loss_attenuation=True, mc="head",
                         mc_class_head_rate=0.1, mc_box_head_rate=0.1, mc_samples=T, mc_seed=SEED)
    model = build_efficientdet(cfg)
    input_cfg = InputConfig(image_size=(128, 128))
    post_cfg = PostprocessConfig(max_detections=50)
    out = tmp_path_factory.mktemp("export") / "export"
    out.mkdir()
    (out / "stale.txt").write_text("old")            # the folder is replaced as a whole
    export_model(model, cfg, CLASSES, input_cfg, post_cfg, T, "head", SEED, out, run_name="unit")
    return {"model": model, "cfg": cfg, "input_cfg": input_cfg, "post_cfg": post_cfg, "dir": out}


def _images():
    rng = np.random.default_rng(0)
    return {
        "rgb": rng.integers(0, 256, (2, 77, 123, 3), dtype=np.uint8),          # odd size, wide
        "tall": rng.integers(0, 256, (1, 150, 61, 3), dtype=np.uint8),         # taller than wide
        "gray": rng.integers(0, 256, (90, 90), dtype=np.uint8),                # one grayscale image
    }


def _in_memory(exported, images_uint8: np.ndarray) -> dict:
    """In-process reference: the input pipeline's eval letterbox + the in-memory Predictor (same seed)."""
    import tensorflow as tf

    from uncertainty_det.data.pipeline import prepare_example

    examples = [prepare_example({"image": tf.constant(im), "boxes": tf.zeros([0, 4]),
                                 "classes": tf.zeros([0], tf.int32), "weights": tf.zeros([0]),
                                 "image_id": tf.constant(0, tf.int64)}, tf.constant(0, tf.int64),
                                exported["input_cfg"], False) for im in images_uint8]
    x = tf.stack([e["image"] for e in examples])
    scale = tf.stack([e["scale"] for e in examples])
    shape = tf.stack([e["image_shape"] for e in examples])
    from uncertainty_det.inference.predictor import Predictor

    predictor = Predictor(exported["model"], exported["cfg"], exported["post_cfg"], mc_samples=T, mc_mode="head",
                          mc_seed=SEED)
    out = predictor.predict_batch(x, scale, shape, seed=SEED)
    return {k: np.asarray(v) for k, v in out.items()}


@pytest.fixture(scope="module")
def fresh_process_outputs(exported, tmp_path_factory):
    """Load the export in a fresh Python process, predict every image batch twice, save the outputs."""
    work = tmp_path_factory.mktemp("fresh")
    for name, arr in _images().items():
        np.save(work / f"{name}.npy", arr)
    script = textwrap.dedent(f"""
        import sys, numpy as np
        from pathlib import Path
        from uncertainty_det.inference.export import load_export
        work = Path({str(work)!r})
        det = load_export({str(exported['dir'])!r})
        for name in ("rgb", "tall", "gray"):
            images = np.load(work / f"{{name}}.npy")
            a = det.predict(images)
            b = det.predict(images)
            np.savez(work / f"{{name}}_a.npz", **a)
            np.savez(work / f"{{name}}_b.npz", **b)
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {name: (dict(np.load(work / f"{name}_a.npz")), dict(np.load(work / f"{name}_b.npz")))
            for name in ("rgb", "tall", "gray")}


def test_export_folder_layout_and_config(exported):
    from uncertainty_det.inference.export import read_export_config

    out = exported["dir"]
    assert not (out / "stale.txt").exists()
    assert (out / "saved_model" / "saved_model.pb").is_file()
    config = read_export_config(out)
    assert config["class_names"] == CLASSES
    assert config["run_name"] == "unit"
    assert config["mc"] == {"mode": "head", "samples": T, "seed": SEED}
    assert config["decoding"] == "lognormal"
    assert config["input"]["image_size"] == [128, 128]
    assert config["has_aleatoric"] and config["has_epistemic"]
    assert config["has_epistemic_box"] and config["has_epistemic_class"]
    assert not any(p.name.startswith(".") for p in out.parent.iterdir())      # no temp leftovers


def test_fresh_process_matches_in_memory(exported, fresh_process_outputs):
    images = _images()
    for name in ("rgb", "tall"):
        got, _ = fresh_process_outputs[name]
        want = _in_memory(exported, images[name])
        np.testing.assert_array_equal(got["num_detections"], want["num_detections"])
        np.testing.assert_array_equal(got["classes"], want["classes"])
        for key in ("boxes", "scores", "logits", "al_std", "ep_std", "ep_logit_std"):
            np.testing.assert_allclose(got[key], want[key], atol=1e-4, rtol=1e-5, err_msg=f"{name}/{key}")
        np.testing.assert_allclose(got["scores"], want["scores"], atol=1e-5)


def test_output_keys_shapes_dtypes(fresh_process_outputs):
    from uncertainty_det.inference.export import OUTPUT_KEYS

    out, _ = fresh_process_outputs["rgb"]
    assert set(OUTPUT_KEYS) <= set(out)
    b, d, c = 2, 50, len(CLASSES)
    expect = {"boxes": ((b, d, 4), np.float32), "scores": ((b, d), np.float32), "classes": ((b, d), np.int32),
              "logits": ((b, d, c), np.float32), "al_std": ((b, d, 4), np.float32),
              "ep_std": ((b, d, 4), np.float32), "ep_logit_std": ((b, d, c), np.float32),
              "num_detections": ((b,), np.int32)}
    for key, (shape, dtype) in expect.items():
        assert out[key].shape == shape and out[key].dtype == dtype, (key, out[key].shape, out[key].dtype)
    # boxes are in original-image pixels (77 x 123), uncertainties are present and positive
    assert out["boxes"][..., [0, 2]].max() <= 77 and out["boxes"][..., [1, 3]].max() <= 123
    n = int(out["num_detections"][0])
    assert n > 0 and (out["al_std"][0, :n] > 0).all() and (out["ep_std"][0, :n] > 0).any()
    assert (out["scores"][0, n:] == 0).all() and (out["classes"][0, n:] == 0).all()


def test_grayscale_and_repeated_calls(fresh_process_outputs):
    gray, gray_again = fresh_process_outputs["gray"]
    assert gray["boxes"].shape[0] == 1 and gray["num_detections"][0] > 0
    assert gray["boxes"].max() <= 90
    for name, (a, b) in fresh_process_outputs.items():
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}/{key} differs between calls")


def test_load_export_errors_name_the_fix(tmp_path):
    from uncertainty_det.errors import UserError
    from uncertainty_det.inference.export import load_export

    with pytest.raises(UserError, match="udet-export"):
        load_export(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    with pytest.raises(UserError, match="udet-export"):
        load_export(tmp_path / "half")


def test_as_rgb_uint8_conversions():
    from uncertainty_det.inference.export import as_rgb_uint8

    assert as_rgb_uint8(np.zeros((4, 5), np.uint8)).shape == (4, 5, 3)
    assert as_rgb_uint8(np.zeros((4, 5, 1), np.uint8)).shape == (4, 5, 3)
    rgba = np.arange(4 * 5 * 4, dtype=np.uint8).reshape(4, 5, 4)
    np.testing.assert_array_equal(as_rgb_uint8(rgba), rgba[..., :3])
    with pytest.raises(ValueError):
        as_rgb_uint8(np.zeros((4, 5, 2), np.uint8))


# ------------------------------------------------------------------------------------------ image sources
def _make_folder(folder: Path, n: int = 5) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        name = f"img_{i:02d}.png"
        Image.new("RGB", (20 + i, 10), (i, i, i)).save(folder / name)
        names.append(name)
    return names


def test_folder_first_last_inclusive(tmp_path):
    names = _make_folder(tmp_path / "imgs")
    every = src.images_from_folder(tmp_path / "imgs")
    assert [it.file_name for it in every.items] == names           # the last image is included
    sel = src.images_from_folder(tmp_path / "imgs", first=1, last=3)
    assert [it.image_id for it in sel.items] == [1, 2, 3]
    assert [it.file_name for it in sel.items] == names[1:4]
    assert len(src.images_from_folder(tmp_path / "imgs", first=4, last=4)) == 1
    assert len(src.images_from_folder(tmp_path / "imgs", first=2, last=99)) == 3
    with pytest.raises(src.ImageSourceError, match="no images selected"):
        src.images_from_folder(tmp_path / "imgs", first=5)
    with pytest.raises(src.ImageSourceError, match="does not exist"):
        src.images_from_folder(tmp_path / "missing")


def test_corrupt_and_missing_files_are_skipped_and_counted(tmp_path):
    _make_folder(tmp_path / "imgs", 3)
    (tmp_path / "imgs" / "img_01.png").write_bytes(b"not a png")
    sel = src.images_from_folder(tmp_path / "imgs")
    assert [it.file_name for it in sel.items] == ["img_00.png", "img_02.png"]
    assert len(sel.corrupt) == 1 and sel.skipped == 1
    # a list file naming a missing image
    (tmp_path / "list.txt").write_text("# images\nimgs/img_00.png\n\nimgs/img_09.png\nimgs/img_02.png\n")
    lst = src.images_from_list(tmp_path / "list.txt")
    assert [(it.image_id, it.file_name) for it in lst.items] == [(2, "imgs/img_00.png"), (5, "imgs/img_02.png")]
    assert lst.items[0].path == tmp_path / "imgs" / "img_00.png"
    assert len(lst.missing) == 1 and lst.skipped == 1


def test_unsafe_names_are_rejected(tmp_path):
    (tmp_path / "list.txt").write_text("ok.png\n../escape.png\n")
    with pytest.raises(src.ImageSourceError, match="line 2"):
        src.images_from_list(tmp_path / "list.txt")
    (tmp_path / "abs.txt").write_text("/etc/passwd\n")
    with pytest.raises(src.ImageSourceError, match="unsafe"):
        src.images_from_list(tmp_path / "abs.txt")

    class FakeManifest:
        source = "fake.json"
        image_ids = [1]

        def image(self, image_id):
            return {"file_name": "../../outside.png"}

        def image_path(self, image_id):
            return tmp_path / "outside.png"

    with pytest.raises(src.ImageSourceError, match="unsafe"):
        src.images_from_manifest(FakeManifest())


def test_iter_batches_groups_equal_sizes_and_converts(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.new("L", (30, 20), 100).save(folder / "a_gray.png")
    Image.new("RGBA", (30, 20), (1, 2, 3, 4)).save(folder / "b_rgba.png")
    Image.new("RGB", (16, 16)).save(folder / "c_small.png")
    Image.new("RGB", (30, 20)).save(folder / "d_rgb.png")
    sel = src.images_from_folder(folder)
    batches = list(src.iter_batches(sel.items, batch_size=2))
    shapes = [(len(items), arr.shape) for items, arr in batches]
    assert shapes == [(2, (2, 20, 30, 3)), (1, (1, 20, 30, 3)), (1, (1, 16, 16, 3))]
    assert [it.file_name for it in batches[0][0]] == ["a_gray.png", "b_rgba.png"]
    np.testing.assert_array_equal(batches[0][1][1, 0, 0], [1, 2, 3])
    # a file that breaks after selection is reported, not fatal
    (folder / "d_rgb.png").write_bytes(b"broken")
    errors = []
    batches = list(src.iter_batches(sel.items, batch_size=8, on_error=lambda it, e: errors.append(it.file_name)))
    assert errors == ["d_rgb.png"] and sum(len(items) for items, _ in batches) == 3


def test_unique_stems():
    assert src.unique_stems(["a.png", "a.jpg", "sub/b.png", "a_jpg.png"]) == ["a", "a_jpg", "sub/b", "a_jpg_png"]


# ------------------------------------------------------------------------------------------ drawing
def _detections():
    """Two detections: det 1 is large with a small σ, det 2 small with a much larger σ (relative)."""
    boxes = np.array([[10, 10, 90, 90], [20, 100, 40, 120]], np.float64)
    return {
        "boxes": boxes,
        "scores": np.array([0.9, 0.8]),
        "classes": np.array([1, 2]),
        "logits": np.zeros((2, 3)),
        "al_std": np.array([[1.0, 1.0, 1.0, 1.0], [5.0, 5.0, 5.0, 5.0]]),   # relative 0.0125 vs 0.25
        "ep_std": np.array([[8.0, 8.0, 8.0, 8.0], [0.2, 0.2, 0.2, 0.2]]),   # relative 0.1 vs 0.01
        "ep_logit_std": np.array([[0.1, 0.9, 0.0], [0.5, 0.2, 0.0]]),        # predicted-class std: 0.1, 0.2
    }


def test_per_detection_sigma_used():
    det = _detections()
    values = drawing.detection_uncertainties(det["boxes"], det["classes"], det["al_std"], det["ep_std"],
                                             det["ep_logit_std"])
    np.testing.assert_allclose(values["al_box"], [1 / 80, 5 / 20])
    np.testing.assert_allclose(values["ep_box"], [0.1, 0.01])
    np.testing.assert_allclose(values["ep_cls"], [0.1, 0.2])
    np.testing.assert_allclose(drawing.normalise_values(values["al_box"]), [0.0, 1.0])
    np.testing.assert_allclose(drawing.normalise_values([3.0, 3.0]), [0.5, 0.5])


def test_uncertainty_image_gives_top_colour_to_the_uncertain_detection():
    from matplotlib import colormaps

    det = _detections()
    image = np.zeros((100, 140, 3), np.uint8)
    values = drawing.detection_uncertainties(det["boxes"], al_std=det["al_std"])["al_box"]
    out = drawing.draw_uncertainty(image, det["boxes"], values, "al")
    lay = drawing.uncertainty_layout(100, 140)
    assert out.shape == (lay.height, lay.width, 3)

    def pixel(y, x):
        return out[int(lay.top + y * lay.scale), int(lay.left + x * lay.scale)].astype(float)

    top = np.array(colormaps["jet"](1.0)[:3]) * 255 * 0.5
    bottom = np.array(colormaps["jet"](0.0)[:3]) * 255 * 0.5
    np.testing.assert_allclose(pixel(30, 110), top, atol=6)      # inside det 2 only
    np.testing.assert_allclose(pixel(70, 50), bottom, atol=6)    # inside det 1 only


def test_draw_image_outputs_files_and_sizes(tmp_path):
    det = _detections()
    image = np.full((100, 140, 3), 90, np.uint8)
    kinds = drawing.available_kinds(True, True, True)
    written = drawing.draw_image_outputs(image, det, tmp_path, "sub/img", CLASSES, 0.3, True, kinds)
    assert [p.name for p in written] == ["img.png", "img_al_box.png", "img_ep_box.png", "img_ep_cls.png"]
    assert np.asarray(Image.open(written[0])).shape == (100, 140, 3)
    lay = drawing.uncertainty_layout(100, 140)
    for p in written[1:]:
        assert np.asarray(Image.open(p)).shape[:2] == (lay.height, lay.width)
    # only the available uncertainties; none when switched off; none when nothing is above the floor
    only_al = drawing.draw_image_outputs(image, det, tmp_path / "al", "x", CLASSES, 0.3, True,
                                         drawing.available_kinds(True, False, False))
    assert [p.name for p in only_al] == ["x.png", "x_al_box.png"]
    off = drawing.draw_image_outputs(image, det, tmp_path / "off", "x", CLASSES, 0.3, False, kinds)
    assert [p.name for p in off] == ["x.png"]
    high = drawing.draw_image_outputs(image, det, tmp_path / "hi", "x", CLASSES, 0.95, True, kinds)
    assert [p.name for p in high] == ["x.png"]
    assert not list(tmp_path.rglob(".*"))                                   # atomic writes leave nothing behind


def test_predictions_image_respects_score_floor():
    det = _detections()
    image = np.zeros((100, 140, 3), np.uint8)
    both = drawing.draw_predictions(image, det["boxes"], det["classes"], det["scores"], CLASSES, 0.5)
    one = drawing.draw_predictions(image, det["boxes"], det["classes"], det["scores"], CLASSES, 0.85)
    assert both.shape == image.shape
    assert both[30, 100].any() and not one[30, 100].any()                 # det 2's left edge only above 0.8


def test_image_summary_and_extremes():
    from uncertainty_det.tables import detections_to_frame

    rng = np.random.default_rng(1)
    b, d = 4, 3
    boxes = np.tile(np.array([10, 10, 30, 50], np.float32), (b, d, 1))
    outputs = {
        "boxes": boxes, "scores": np.tile([0.9, 0.5, 0.1], (b, 1)), "classes": np.ones((b, d), np.int32),
        "logits": rng.normal(size=(b, d, 3)), "num_detections": np.array([3, 3, 0, 2]),
        "al_std": np.ones((b, d, 4)) * np.arange(1, b + 1)[:, None, None],
        "ep_std": np.ones((b, d, 4)) * np.arange(b, 0, -1)[:, None, None],
        "ep_logit_std": np.full((b, d, 3), 0.3),
    }
    outputs["al_std"][0, 2] = 100.0                      # below the floor: ignored
    df = detections_to_frame(outputs, [10, 11, 12, 13], ["a.png", "b.png", "c.png", "d.png"], None, True, True)
    images = pd.DataFrame({"image_id": [10, 11, 12, 13], "file_name": ["a.png", "b.png", "c.png", "d.png"]})
    summary = drawing.image_summary(df, images, score_floor=0.3)
    assert list(summary.columns) == ["image_id", "file_name", "num_detections", "max_rel_al", "max_rel_ep",
                                     "max_ep_cls", "max_entropy"]
    np.testing.assert_array_equal(summary["num_detections"], [2, 2, 0, 2])
    np.testing.assert_allclose(summary["max_rel_al"], [1 / 20, 2 / 20, np.nan, 4 / 20])   # h = 20 px
    assert np.isnan(summary.loc[2, "max_entropy"])
    most, least = drawing.extreme_images(summary, 0.1)
    assert most["max_rel_al"] == [{"image_id": 13, "file_name": "d.png", "value": pytest.approx(0.2)}]
    assert least["max_rel_al"] == [{"image_id": 10, "file_name": "a.png", "value": pytest.approx(0.05)}]
    assert most["max_rel_ep"][0]["file_name"] == "a.png"            # each name keeps its own value (D11)
    json.dumps(most)
