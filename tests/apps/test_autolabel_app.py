"""udet-autolabel through the CLI on a randomly initialised tiny run (exported, calibrated) with a hand-built
threshold model: the decisions against the library, every label format read back, the review queue, GT
quality, drawn images, MLflow, folder sources without GT, and the missing-upstream errors."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.apps.test_export_infer_apps import RUN, _write_train_workspace
from tests.helpers import all_runs, mlflow_client, run_app

DATA = ["dataset.generator.image_size=[64,64]", "dataset.generator.num_images={train:2,val:10,test:6}",
        "dataset.input_size=[64,64]"]


def _threshold_model(detections: pd.DataFrame, floor: float):
    """Weights 0.5/0.5 on entropy_cal and al_rel_cal, min-max over ``detections``, operating threshold = the
    median of the per-image maximum, so some images pass and some go to review."""
    from uncertainty_det.thresholding import MinMaxNormaliser, ThresholdModel, measure_matrix

    names = ["entropy_cal", "al_rel_cal"]
    above = detections.loc[detections["score"] >= floor]
    values = measure_matrix(above, names)
    model = ThresholdModel(names, MinMaxNormaliser.fit(values), np.array([0.5, 0.5]), np.array([0.5]),
                           np.array([np.nan]), float("nan"), 0.95, "cd", info={"score_floor": floor})
    per_image = pd.Series(model.score(above)).groupby(above["image_id"].to_numpy()).max()
    model.operating_threshold = float(np.median(per_image))
    model.thresholds = np.array([model.operating_threshold])
    return model


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    from uncertainty_det.tables import read_detections
    from uncertainty_det.thresholding import save_threshold_model

    root = tmp_path_factory.mktemp("autolabel")
    run_app("data", *DATA, cwd=root)
    _write_train_workspace(root)
    run_app("export", *DATA, "mc_samples=3", cwd=root)
    run_app("calibrate", *DATA, cwd=root)
    # the detections autolabel will see: infer on the same split, with the same export and calibrators
    run_app("infer", *DATA, "source=split", "split=test", "score_floor=0", "draw=false", "tracking=none", cwd=root)
    detections, _ = read_detections(root / "outputs" / "runs" / RUN / "inference" / "detections.parquet")
    floor = float(np.quantile(detections["score"], 0.9))
    model = _threshold_model(detections, floor)
    save_threshold_model(model, root / "outputs" / "runs" / RUN / "thresholding" / "synthetic-val" / "threshold.json")
    run_app("autolabel", *DATA, "batch_size=3", "autolabel.max_drawn=2", cwd=root)
    return root, model


def test_decisions_follow_the_rule(labelled):
    from uncertainty_det.autolabel import decide_images
    from uncertainty_det.tables import read_detections

    root, model = labelled
    out = root / "outputs" / "runs" / RUN / "autolabel"
    decisions = pd.read_csv(out / "decisions.csv")
    dets, _ = read_detections(out / "detections.parquet")
    assert len(decisions) == 6 and (dets["score"] >= model.info["score_floor"]).all()
    # the rule, recomputed from the written detections
    u = model.score(dets)
    np.testing.assert_allclose(dets["combined"], u)
    flagged = pd.Series(~(u < model.operating_threshold)).groupby(dets["image_id"].to_numpy()).any()
    expected = [(not flagged.get(i, True)) if i in flagged.index else False for i in decisions["image_id"]]
    assert decisions["accepted"].tolist() == expected                # images without detections: review
    assert 0 < decisions["accepted"].sum() < 6
    again, _ = decide_images(dets, decisions[["image_id", "file_name", "height", "width"]], model,
                             model.info["score_floor"])
    np.testing.assert_array_equal(again["flagged"], dets["flagged"])
    queue = pd.read_csv(out / "review_queue.csv")
    assert queue["rank"].tolist() == list(range(1, len(queue) + 1))
    assert set(queue["image_id"]) == set(decisions.loc[~decisions["accepted"], "image_id"])
    finite = queue["max_uncertainty"].dropna()
    assert finite.is_monotonic_decreasing and queue["reason"].str.len().gt(0).all()
    assert json.loads((out / "review_queue.json").read_text())[0]["rank"] == 1


def test_labels_read_back_in_every_format(labelled):
    from faster_coco_eval import COCO

    from uncertainty_det.autolabel import accepted_manifest
    from uncertainty_det.data.converters import READERS
    from uncertainty_det.tables import read_detections

    root, _ = labelled
    out = root / "outputs" / "runs" / RUN / "autolabel"
    decisions = pd.read_csv(out / "decisions.csv")
    dets, _ = read_detections(out / "detections.parquet")
    classes = ["circle", "square", "triangle", "cross", "star", "ring"]
    # the labels are the accepted detections after box sanitising (a random model can predict boxes outside
    # the image, which are clipped, or degenerate ones, which are dropped)
    expected = accepted_manifest(dets, decisions, classes)
    n_accepted = int(dets["image_id"].isin(decisions.loc[decisions["accepted"], "image_id"]).sum())
    assert expected.num_annotations == n_accepted - expected.sanitize_report.dropped
    coco = COCO(str(out / "labels" / "coco" / "labels.json"))
    assert len(coco.getAnnIds()) == expected.num_annotations
    assert len(coco.getImgIds()) == decisions["accepted"].sum()
    ann = coco.loadAnns(coco.getAnnIds())[0]
    assert {"score", "uncertainty"} <= set(ann) and {"combined", "al_sigma"} <= set(ann["uncertainty"])
    boxes = np.sort(np.concatenate([expected.objects(i).boxes for i in expected.image_ids]), axis=0)
    scores = np.sort(np.concatenate([expected.objects(i).scores for i in expected.image_ids]))
    for fmt in ("kitti", "yolo", "voc"):
        manifest, _ = READERS[fmt](out / "labels" / fmt, classes=classes,
                                   **({"image_dir": root / "outputs" / "data" / "synthetic" / "images"}
                                      if fmt != "voc" else {}))
        assert manifest.num_annotations == expected.num_annotations, fmt
        got = np.concatenate([manifest.objects(i).boxes for i in manifest.image_ids])
        np.testing.assert_allclose(np.sort(got, axis=0), boxes, atol=0.6, err_msg=fmt)
        got_scores = np.sort(np.concatenate([manifest.objects(i).scores for i in manifest.image_ids]))
        np.testing.assert_allclose(got_scores, scores, atol=1e-4, err_msg=fmt)


def test_quality_images_and_mlflow(labelled):
    root, _ = labelled
    out = root / "outputs" / "runs" / RUN / "autolabel"
    summary = json.loads((out / "summary.json").read_text())["metrics"]
    for key in ("auto_share", "accepted_precision", "all_precision", "accepted_recall", "slipped_false_labels",
                "slipped_missed_objects", "gt_objects"):
        assert key in summary, key
    assert summary["images"] == 6 and summary["accepted_images"] + summary["review_images"] == 6
    assert (out / "slipped.csv").is_file() and (out / "tradeoff.csv").is_file()
    assert (out / "plots" / "tradeoff.png").is_file()
    assert len(list((out / "images" / "accepted").rglob("*.png"))) <= 2
    assert len(list((out / "images" / "review").rglob("*.png"))) == 2
    (run,) = all_runs(mlflow_client(root), "autolabel")
    assert run.info.status == "FINISHED" and run.data.metrics["images"] == 6
    assert run.data.metrics["auto_share"] == pytest.approx(summary["auto_share"])
    assert run.data.params["autolabel/threshold_model"].endswith("synthetic-val/threshold.json")


def test_folder_source_has_no_gt_metrics_and_errors(labelled, tmp_path):
    root, _ = labelled
    folder = root / "outputs" / "data" / "synthetic" / "images" / "test"
    run_app("autolabel", *DATA, "source=folder", f"folder={folder}", "last=2", "autolabel.draw=false",
            "autolabel.formats=[yolo]", "tracking=none", cwd=root)
    out = root / "outputs" / "runs" / RUN / "autolabel"
    summary = json.loads((out / "summary.json").read_text())["metrics"]
    assert summary["images"] == 3 and "accepted_precision" not in summary
    assert not (out / "slipped.csv").exists() and sorted(p.name for p in (out / "labels").iterdir()) == ["yolo"]
    proc = run_app("autolabel", *DATA, "run_name=other", "tracking=none", cwd=root, check=False)
    assert proc.returncode == 2 and "udet-threshold run_name=other" in proc.stderr
    proc = run_app("autolabel", *DATA, "autolabel.formats=[csv]", "tracking=none", cwd=root, check=False)
    assert proc.returncode == 2 and "unknown format 'csv'" in proc.stderr
