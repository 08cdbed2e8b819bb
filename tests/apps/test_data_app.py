"""udet-data end to end through the CLI: generate, tfrecord, convert (import and export), bad input, sweeps."""
import json
from pathlib import Path

import pytest

from tests.helpers import TINY_SYNTHETIC, all_runs, mlflow_client, run_app


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("data_app")
    proc = run_app("data", *TINY_SYNTHETIC, cwd=root)
    return root, proc


def test_generate_writes_splits_and_logs_to_mlflow(generated):
    root, _ = generated
    ann = root / "outputs" / "data" / "synthetic" / "annotations"
    for split, n in (("train", 6), ("val", 3), ("test", 3)):
        data = json.loads((ann / f"{split}.json").read_text())
        assert len(data["images"]) == n
    runs = all_runs(mlflow_client(root), "data")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["stage"] == "data" and run.data.tags["dataset"] == "synthetic"
    assert run.data.metrics["train/images"] == 6
    assert run.data.params["dataset.name"] == "synthetic"
    arts = {a.path for a in mlflow_client(root).list_artifacts(run.info.run_id)}
    assert {"config.yaml", "samples_train.png"} <= arts


def test_tfrecord_action_shards_every_split(generated):
    root, _ = generated
    run_app("data", *TINY_SYNTHETIC, "action=tfrecord", "tfrecord.num_shards=2", "tracking=none", cwd=root)
    out = root / "outputs" / "data" / "synthetic" / "tfrecord"
    names = sorted(p.name for p in out.glob("*.tfrecord"))
    assert names == sorted(f"{s}-0000{i}-of-00002.tfrecord" for s in ("train", "val", "test") for i in range(2))


def test_export_then_import_round_trip(generated):
    root, _ = generated
    yolo = root / "yolo_export"
    run_app("data", *TINY_SYNTHETIC, "action=convert", "convert.split=train", f"convert.dst={yolo}",
            "convert.dst_format=yolo", "tracking=none", cwd=root)
    assert (yolo / "classes.txt").is_file()
    images = root / "outputs" / "data" / "synthetic" / "images" / "train"
    # import the YOLO labels back as a user dataset (kind: files) with a 50/50 train/val split
    original = json.loads((root / "outputs/data/synthetic/annotations/train.json").read_text())
    classes = "[" + ",".join(c["name"] for c in original["categories"]) + "]"
    run_app("data", "dataset=coco", f"dataset.root={root / 'imported'}", f"dataset.classes={classes}",
            "action=convert", f"convert.src={yolo / 'labels'}", "convert.src_format=yolo",
            f"convert.image_dir={images}", "convert.split_fractions={train:0.5,val:0.5}", "tracking=none", cwd=root)
    train = json.loads((root / "imported/annotations/train.json").read_text())
    val = json.loads((root / "imported/annotations/val.json").read_text())
    assert len(train["images"]) + len(val["images"]) == 6
    assert len(train["annotations"]) + len(val["annotations"]) == len(original["annotations"])


def test_unknown_dataset_lists_available(tmp_path):
    proc = run_app("data", "dataset=nope", cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert "synthetic" in proc.stderr and "kitti" in proc.stderr


def test_missing_user_dataset_names_the_fix(tmp_path):
    proc = run_app("data", "dataset=kitti", "action=tfrecord", "tracking=none", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "action=convert" in proc.stderr and "Traceback" not in proc.stderr


def test_malformed_label_line_names_file_and_line(tmp_path):
    labels = tmp_path / "label_2"
    images = tmp_path / "image_2"
    labels.mkdir()
    images.mkdir()
    from PIL import Image

    Image.new("RGB", (40, 30)).save(images / "000001.png")
    (labels / "000001.txt").write_text("Car 0.0 0 0 1 2 10 12 1 1 1 1 1 1 0\nCar 0.0 0 zero 1 2\n")
    proc = run_app("data", "dataset=kitti", f"dataset.root={tmp_path / 'kitti'}", "action=convert",
                   f"convert.src={labels}", "convert.src_format=kitti", f"convert.image_dir={images}",
                   "tracking=none", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "000001.txt:2" in proc.stderr


def test_multirun_creates_parent_and_children(tmp_path):
    run_app("data", *TINY_SYNTHETIC, "sample_grid.num_images=2,3", cwd=tmp_path, multirun=True)
    client = mlflow_client(tmp_path)
    runs = all_runs(client, "data")
    parents = [r for r in runs if r.data.tags.get("sweep") == "true"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(parents) == 1 and len(children) == 2
    assert all(c.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for c in children)
    assert sorted(c.data.params["sample_grid.num_images"] for c in children) == ["2", "3"]
    for child in children:
        assert child.data.tags["stage"] == "data"
        assert "config.yaml" in {a.path for a in client.list_artifacts(child.info.run_id)}
    assert parents[0].info.status == "FINISHED"
    sweep_dirs = list((tmp_path / "outputs" / "multirun" / "data").iterdir())
    assert len(sweep_dirs) == 1 and (sweep_dirs[0] / "0").is_dir() and (sweep_dirs[0] / "1").is_dir()


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_multirun_with_launcher_plugins(tmp_path, launcher):
    pytest.importorskip({"joblib": "hydra_plugins.hydra_joblib_launcher",
                         "submitit_local": "hydra_plugins.hydra_submitit_launcher"}[launcher])
    # generate once, so the parallel jobs only read the dataset
    run_app("data", *TINY_SYNTHETIC, "tracking=none", cwd=tmp_path)
    extra = ["hydra.launcher.n_jobs=2"] if launcher == "joblib" else ["hydra.launcher.timeout_min=10"]
    run_app("data", *TINY_SYNTHETIC, f"hydra/launcher={launcher}", *extra, "sample_grid.num_images=2,3",
            cwd=tmp_path, multirun=True)
    runs = all_runs(mlflow_client(tmp_path), "data")
    parents = [r for r in runs if r.data.tags.get("sweep") == "true"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(parents) == 1 and len(children) == 2
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert all(c.info.status == "FINISHED" for c in children)


def test_missing_and_corrupt_images_are_skipped_and_counted(tmp_path):
    run_app("data", *TINY_SYNTHETIC, "tracking=none", cwd=tmp_path)
    images = tmp_path / "outputs" / "data" / "synthetic" / "images" / "val"
    files = sorted(images.iterdir())
    files[0].unlink()
    files[1].write_bytes(b"not a png")
    run_app("data", *TINY_SYNTHETIC, "action=tfrecord", "tfrecord.splits=[val]", "tfrecord.num_shards=1",
            cwd=tmp_path)
    run = all_runs(mlflow_client(tmp_path), "data")[0]
    assert run.data.metrics["val/missing_images"] == 1
    assert run.data.metrics["val/corrupt_images"] == 1
    assert run.data.metrics["val/tfrecord_images"] == 1
