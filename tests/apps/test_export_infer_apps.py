"""udet-export then udet-infer through the CLI on a randomly initialised tiny run; missing upstream errors."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.helpers import all_runs, mlflow_client, run_app

RUN = "synthetic-tiny-mcdropout_lossatt_head"          # the configs' default run_name
SIZE = ["dataset.input_size=[128,128]"]
CLASSES = ["circle", "square", "triangle", "cross", "star", "ring"]


def _write_train_workspace(root):
    """What udet-train leaves behind (random weights): train/final.weights.h5 + train/detector_config.json."""
    from uncertainty_det.model.config import DetectorConfig
    from uncertainty_det.model.efficientdet import build_efficientdet
    from uncertainty_det.model.training import write_detector_config

    cfg = DetectorConfig(num_classes=len(CLASSES), image_size=(128, 128), uncertainty_name="mcdropout_lossatt_head",
                         loss_attenuation=True, mc="head", mc_class_head_rate=0.05, mc_box_head_rate=0.05,
                         mc_samples=10, mc_seed=0)
    train = root / "outputs" / "runs" / RUN / "train"
    train.mkdir(parents=True)
    model = build_efficientdet(cfg)
    model.save_weights(str(train / "final.weights.h5"))
    write_detector_config(train / "detector_config.json", cfg, CLASSES, (128, 128), run_name=RUN)


def _write_images(folder):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)).save(folder / f"rgb_{i}.png")
    Image.fromarray(rng.integers(0, 256, (50, 50), dtype=np.uint8)).save(folder / "gray.png")          # grayscale
    Image.fromarray(rng.integers(0, 256, (40, 30, 4), dtype=np.uint8), "RGBA").save(folder / "rgba.png")
    (folder / "zz_corrupt.png").write_bytes(b"\x89PNG not really")


@pytest.fixture(scope="module")
def inferred(tmp_path_factory):
    root = tmp_path_factory.mktemp("export_infer")
    _write_train_workspace(root)
    images = root / "images"
    _write_images(images)
    run_app("export", *SIZE, "mc_samples=3", cwd=root)
    run_app("infer", *SIZE, f"folder={images}", "score_floor=0.005", "batch_size=2", cwd=root)
    return root


def test_export_folder_and_mlflow(inferred):
    export = inferred / "outputs" / "runs" / RUN / "export"
    config = json.loads((export / "export_config.json").read_text())
    assert config["run_name"] == RUN and config["class_names"] == CLASSES
    assert config["mc"] == {"mode": "head", "samples": 3, "seed": 0}
    assert config["decoding"] == "lognormal" and config["has_aleatoric"] and config["has_epistemic"]
    client = mlflow_client(inferred)
    (run,) = all_runs(client, "export")
    assert run.info.status == "FINISHED"
    assert run.data.params["export/decoding"] == "lognormal" and run.data.params["export/mc_samples"] == "3"
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "export")}
    assert {"export/export_config.json", "export/saved_model"} <= arts


def test_infer_outputs(inferred):
    from uncertainty_det.tables import has_aleatoric, has_epistemic, read_detections

    out = inferred / "outputs" / "runs" / RUN / "inference"
    df, meta = read_detections(out / "detections.parquet")
    assert meta["run_name"] == RUN and meta["decoding"] == "lognormal" and meta["mc_samples"] == 3
    assert meta["dataset"] == "synthetic"
    assert has_aleatoric(df) and has_epistemic(df)
    names = ["gray.png", "rgb_0.png", "rgb_1.png", "rgb_2.png", "rgba.png"]
    assert sorted(df["file_name"].unique()) == names
    # boxes in original pixels of each image
    rgb = df[df["file_name"] == "rgb_0.png"]
    assert rgb["ymax"].max() <= 48 and rgb["xmax"].max() <= 80
    for name in names:
        stem = name[:-4]
        data = json.loads((out / "json" / f"{stem}.json").read_text())
        assert data["file_name"] == name and all(d["score"] >= 0.005 for d in data["detections"])
        assert (out / "images" / f"{stem}.png").is_file()
        for kind in ("al_box", "ep_box", "ep_cls"):
            assert (out / "images" / f"{stem}_{kind}.png").is_file()
    assert np.asarray(Image.open(out / "images" / "rgb_0.png")).shape == (48, 80, 3)
    summary = pd.read_csv(out / "uncertainty_summary.csv")
    assert sorted(summary["file_name"]) == names
    assert {"max_rel_al", "max_rel_ep", "max_ep_cls", "max_entropy"} <= set(summary.columns)
    most = json.loads((out / "most_uncertain.json").read_text())
    least = json.loads((out / "least_uncertain.json").read_text())
    for measure in ("max_rel_al", "max_rel_ep", "max_ep_cls", "max_entropy"):
        (top,) = most[measure]                  # 10 % of 5 images -> 1
        (bottom,) = least[measure]
        row = summary.set_index("file_name").loc[top["file_name"]]
        assert top["value"] == pytest.approx(row[measure]) and top["value"] == pytest.approx(summary[measure].max())
        assert bottom["value"] == pytest.approx(summary[measure].min())
    client = mlflow_client(inferred)
    (run,) = all_runs(client, "infer")
    assert run.info.status == "FINISHED"
    m = run.data.metrics
    assert m["images"] == 5 and m["skipped_corrupt"] == 1 and m["skipped_images"] == 1
    assert m["detections"] == len(df) and m["drawn_images"] == 5
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "inference")}
    assert {"inference/detections.parquet", "inference/uncertainty_summary.csv",
            "inference/most_uncertain.json", "inference/images"} <= arts
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]       # atomic: no temp folders left


def test_infer_without_export_names_udet_export(inferred):
    proc = run_app("infer", *SIZE, "run_name=never-exported", f"folder={inferred / 'images'}", "tracking=none",
                   cwd=inferred, check=False)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "udet-export run_name=never-exported" in lines[0]
    assert "Traceback" not in proc.stderr


def test_export_without_train_names_udet_train(inferred):
    proc = run_app("export", *SIZE, "run_name=never-trained", "tracking=none", cwd=inferred, check=False)
    assert proc.returncode == 2
    assert "udet-train run_name=never-trained" in proc.stderr and "Traceback" not in proc.stderr


def test_infer_on_a_dataset_split(inferred):
    import shutil

    from tests.helpers import TINY_SYNTHETIC

    runs = inferred / "outputs" / "runs"
    shutil.copytree(runs / RUN / "export", runs / "split-run" / "export")
    run_app("infer", *TINY_SYNTHETIC, *SIZE, "run_name=split-run", "source=split", "split=val", "score_floor=0.005",
            "draw_uncertainty=false", "tracking=none", cwd=inferred)
    out = runs / "split-run" / "inference"
    manifest = json.loads((inferred / "outputs/data/synthetic/annotations/val.json").read_text())
    from uncertainty_det.tables import read_detections

    df, meta = read_detections(out / "detections.parquet")
    assert sorted(df["image_id"].unique()) == sorted(im["id"] for im in manifest["images"])
    assert meta["source"] == "split:synthetic/val"
    drawn = sorted(p.name for p in (out / "images").rglob("*.png"))
    assert len(drawn) == len(manifest["images"]) and not any("_al_box" in n for n in drawn)
    assert len(list((out / "json").rglob("*.json"))) == len(manifest["images"])
