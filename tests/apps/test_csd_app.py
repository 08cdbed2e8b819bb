"""udet-csd end to end on tiny synthetic data: the split (the same as udet-stac's), the batch composition and
steps per epoch, the consistency metrics in the history and MLflow, unlabeled images without annotations,
one-line errors."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.apps.test_train_app import SMALL_MODEL
from tests.helpers import all_runs, mlflow_client, run_app

DATA = ["dataset.generator.image_size=[64,64]", "dataset.generator.num_images={train:40,val:6,test:2}",
        "dataset.input_size=[64,64]"]
# batch 4, ratio 3: 1 labeled + 3 unlabeled per batch; steps per epoch = 40 pool images // 4 = 10
CSD = [*DATA, *SMALL_MODEL, "trainer=fast", "trainer.epochs=1", "trainer.steps_per_epoch=null",
       "trainer.warmup_epochs=0", "input.batch_size=4", "ssl.labeled_percent=25"]
CSD_DIR = "outputs/runs/synthetic-tiny-csd/csd"


@pytest.fixture(scope="module")
def csd(tmp_path_factory):
    root = tmp_path_factory.mktemp("csd")
    run_app("data", *DATA, cwd=root)
    run_app("csd", *CSD, cwd=root)
    return root


def test_split_composition_and_consistency_metrics(csd):
    from uncertainty_det.ssl.split import split_labeled

    folder = csd / CSD_DIR
    split = json.loads((folder / "split.json").read_text())
    pool = json.loads((csd / "outputs/data/synthetic/annotations/train.json").read_text())
    ids = [img["id"] for img in pool["images"]]
    labeled, unlabeled = split_labeled(ids, 25, seed=0)
    assert split["labeled"] == labeled.tolist() and split["unlabeled"] == unlabeled.tolist()
    summary = json.loads((folder / "summary.json").read_text())
    assert (summary["labeled_per_batch"], summary["unlabeled_per_batch"], summary["steps_per_epoch"]) == (1, 3, 10)
    assert "map/AP50" in summary["model"]
    history = pd.read_csv(folder / "model" / "train" / "history.csv")
    assert {"sup_loss", "cons_cls", "cons_box", "cons_weight", "mask_fraction", "val_loss"} <= set(history.columns)
    assert (history["cons_cls"] >= 0).all() and (history["mask_fraction"] > 0).all()
    assert 0.0 < history["cons_weight"].iloc[-1] <= 1.0          # the ramp's mean over the epoch's steps
    client = mlflow_client(csd)
    (run,) = all_runs(client, "csd")
    assert run.data.params["csd/labeled_per_batch"] == "1" and run.data.params["csd/steps_per_epoch"] == "10"
    assert "cons_cls" in run.data.metrics and "map/AP50" in run.data.metrics


def test_unlabeled_stream_has_no_annotations(csd):
    from uncertainty_det.apps.csd import without_annotations
    from uncertainty_det.data.manifest import Manifest

    pool = Manifest.read(csd / "outputs/data/synthetic/annotations/train.json")
    sub = without_annotations(pool, pool.image_ids[:5])
    assert sub.image_ids == pool.image_ids[:5] and sub.num_annotations == 0 and pool.num_annotations > 0


def test_levels_checked_against_the_model_before_data():
    from uncertainty_det.apps.csd import check_csd_options
    from uncertainty_det.errors import UserError

    good = {"divergence": "jsd", "background_threshold": 0.4, "background_scope": "image",
            "class_reduction": "anchor", "ratio": 3, "levels": [3, 4]}
    check_csd_options(good, {"min_level": 3, "max_level": 7})
    with pytest.raises(UserError, match=r"integer in \[3, 7\]"):
        check_csd_options({**good, "levels": [3, 8]}, {"min_level": 3, "max_level": 7})


@pytest.mark.parametrize("override, message", [
    ("csd.divergence=l2", "divergence"),
    ("csd.background_scope=level", "background scope"),
    ("csd.ratio=0", "ratio"),
    ("ssl.split=sorted", "ssl.split"),
])
def test_one_line_errors(csd, tmp_path, override, message):
    import shutil

    shutil.copytree(csd / "outputs" / "data", tmp_path / "outputs" / "data")
    proc = run_app("csd", *CSD, override, "tracking=none", cwd=tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr and proc.stderr.count("error:") == 1
