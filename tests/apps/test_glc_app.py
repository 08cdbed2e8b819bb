"""udet-glc end to end on tiny synthetic data after a tiny udet-stac run: the views and their cached predictions,
the cleaned manifest recomputed from the stored predictions with clean_labels, the change log against the
summary counts, a synthetic drop run (recovery, corruption counts, cached predictions reused), MLflow, and
one-line errors."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.apps.stac_fixture import DATA, STAC_DIR
from tests.helpers import all_runs, mlflow_client, run_app

# The tiny teacher scores everything at ~0.01 (the focal-loss prior): thresholds of 0 let md add and noisy
# correct boxes. The assertions recompute the result from the stored predictions rather than count.
THRESHOLDS = {"md_iou_consistency": 0.0, "md_max_overlap": 0.0, "md_min_score": 0.0, "mistakes_min_score": 0.0,
              "noisy_iou_consistency": 0.0, "noisy_max_iou": 1.0, "noisy_min_score": 0.0}
GLC = [*DATA, "glc.batch_size=4", *(f"glc.{k.replace('_', '.', 1)}={v}" for k, v in THRESHOLDS.items())]
DROP = [*DATA, "glc.batch_size=4", "glc.synthetic=drop", "glc.methods=[md,mistakes]", "glc.md.iou_consistency=0.0",
        "glc.md.min_score=0.0", "glc.mistakes.min_score=0.0", "glc.drop_fraction=0.3"]


@pytest.fixture(scope="module")
def glc(tiny_stac):
    root, _ = tiny_stac
    run_app("glc", *GLC, cwd=root)
    proc = run_app("glc", *DROP, cwd=root)
    return root, proc.stdout + proc.stderr


def _inputs(root):
    from uncertainty_det.data.manifest import Manifest
    from uncertainty_det.evaluation.matching import gt_frame_from_manifest
    from uncertainty_det.tables import read_detections

    folder = root / STAC_DIR
    labeled = json.loads((folder / "split.json").read_text())["labeled"]
    pool = Manifest.read(root / "outputs/data/synthetic/annotations/train.json")
    predictions, _ = read_detections(folder / "glc" / "predictions.parquet")
    return folder, labeled, pool, gt_frame_from_manifest(pool.subset(labeled)), predictions


def _read_back(path, pool, labeled):
    from uncertainty_det.data.manifest import Manifest
    from uncertainty_det.evaluation.matching import gt_frame_from_manifest

    back = Manifest.read(path)
    assert back.image_ids == labeled and back.class_names == pool.class_names
    for i in labeled:                                            # the dataset's images, file names kept
        assert back.image(i) == pool.image(i)
        assert back.image_path(i).resolve() == pool.image_path(i).resolve() and back.image_path(i).is_file()
    return gt_frame_from_manifest(back)


def _assert_same_labels(got: pd.DataFrame, expected: pd.DataFrame, labeled):
    """The labels read back equal ``expected`` (clipped to the image as the manifest reader does), in the order
    the manifest gives them (image-major, then annotation order)."""
    order = {i: k for k, i in enumerate(labeled)}
    want = expected.assign(_pos=expected["image_id"].map(order)).sort_values("_pos", kind="stable")
    assert len(got) == len(want)
    np.testing.assert_array_equal(got["image_id"], want["image_id"])
    np.testing.assert_array_equal(got["class_id"], want["class_id"])
    np.testing.assert_allclose(got[["ymin", "xmin", "ymax", "xmax"]], want[["ymin", "xmin", "ymax", "xmax"]],
                               atol=1e-6)
    kept = want["gt_id"].to_numpy() >= 0                        # dataset boxes keep their annotation id
    np.testing.assert_array_equal(got["gt_id"].to_numpy()[kept], want["gt_id"].to_numpy()[kept])
    assert (got["gt_id"].to_numpy()[~kept] > max(0, want["gt_id"].max())).all()


def test_views_and_cached_predictions(glc):
    from uncertainty_det.data.manifest import Manifest
    from uncertainty_det.tables import read_detections

    root, _ = glc
    folder, labeled, pool, _, predictions = _inputs(root)
    assert set(predictions["image_id"]) <= set(labeled) and len(predictions)
    assert predictions["cons_iou"].between(0, 1).all() and predictions["cons_cls"].dtype == bool
    for view in ("flip", "blur", "noise"):
        m = Manifest.read(folder / "glc" / "views" / view / "manifest.json")
        assert sorted(m.image_ids) == sorted(labeled)
        for i in labeled:
            assert m.image_path(i).suffix == ".png" and m.image_path(i).is_file()
            assert (m.image(i)["height"], m.image(i)["width"]) == (pool.image(i)["height"], pool.image(i)["width"])
        frame, meta = read_detections(folder / "glc" / "views" / view / "predictions.parquet")
        assert meta["view"] == view and set(frame["image_id"]) <= set(labeled)
        assert (frame["xmin"] >= -1e-6).all() and (frame["xmax"] <= 64 + 1e-6).all()   # mapped back inside


def test_cleaned_manifest_equals_clean_labels_on_stored_predictions(glc):
    from uncertainty_det.ssl.glc import clean_labels

    root, _ = glc
    folder, labeled, pool, gt, predictions = _inputs(root)
    expected, counts = clean_labels(gt, predictions, ["md", "mistakes", "noisy"], **THRESHOLDS)
    got = _read_back(folder / "glc" / "clean" / "labeled.json", pool, labeled)
    _assert_same_labels(got, expected, labeled)
    summary = json.loads((folder / "glc" / "clean" / "summary.json").read_text())
    assert {k: summary[k] for k in counts} == counts
    assert counts["added"] + counts["corrected"] > 0                  # the rules did something
    assert summary["boxes_before"] == len(gt) and summary["boxes_after"] == len(expected)
    assert summary["thresholds"] == THRESHOLDS and summary["synthetic"] is None
    assert summary["sanitized"] == {"clipped": 0, "dropped": 0}


def test_changes_match_summary(glc):
    root, _ = glc
    folder, _, _, gt, _ = _inputs(root)
    for name in ("clean", "synthetic_drop"):
        changes = pd.read_csv(folder / "glc" / name / "changes.csv")
        summary = json.loads((folder / "glc" / name / "summary.json").read_text())
        assert set(changes["change"]) <= {"added", "removed", "corrected"}
        for kind in ("added", "removed", "corrected"):
            assert (changes["change"] == kind).sum() == summary[kind]
    changes = pd.read_csv(folder / "glc" / "clean" / "changes.csv")
    corrected = changes[changes["change"] == "corrected"]
    assert corrected["gt_id"].isin(gt["gt_id"]).all() and corrected["prev_ymin"].notna().all()
    assert (changes.loc[changes["change"] == "added", "gt_id"] < 0).all()
    labels = json.loads((folder / "glc" / "clean" / "labeled.json").read_text())
    ann_ids = {a["id"] for a in labels["annotations"]}
    live = changes[changes["ann_id"] >= 0]
    assert live["ann_id"].isin(ann_ids).all()


def test_synthetic_drop_reports_recovery(glc):
    from uncertainty_det.ssl.glc import clean_labels
    from uncertainty_det.ssl.glc_views import corrupt_labels

    root, log = glc
    assert "predictions: reusing" in log                              # the second run reused the cache
    folder, labeled, pool, gt, predictions = _inputs(root)
    summary = json.loads((folder / "glc" / "synthetic_drop" / "summary.json").read_text())
    assert summary["synthetic"] == "drop" and summary["methods"] == ["md", "mistakes"]
    assert set(summary["recovery"]) == {"n_dropped", "n_added", "n_recovered", "recovered_share", "n_spurious"}
    assert summary["corruption"]["dropped"] == summary["recovery"]["n_dropped"] > 0
    assert summary["clean_boxes"] == len(gt) and summary["boxes_before"] == len(gt) - summary["corruption"]["dropped"]
    sizes = {i: (pool.image(i)["height"], pool.image(i)["width"]) for i in labeled}
    corrupted, _ = corrupt_labels(gt, "drop", sizes, len(pool.class_names), seed=0, drop_fraction=0.3)
    expected, counts = clean_labels(corrupted, predictions, ["md", "mistakes"], md_iou_consistency=0.0,
                                    md_min_score=0.0, mistakes_min_score=0.0)
    assert {k: summary[k] for k in counts} == counts and summary["corrected"] == 0
    assert summary["recovery"]["n_added"] == counts["added"] > 0
    got = _read_back(folder / "glc" / "synthetic_drop" / "labeled.json", pool, labeled)
    _assert_same_labels(got, expected, labeled)


def test_mlflow_run_has_metrics_and_artifacts(glc):
    root, _ = glc
    client = mlflow_client(root)
    runs = {r.data.params["glc/synthetic"]: r for r in all_runs(client, "glc")}
    assert set(runs) == {"none", "drop"}
    clean, drop = runs["none"], runs["drop"]
    summary = json.loads((root / STAC_DIR / "glc" / "clean" / "summary.json").read_text())
    for key in ("added", "removed", "corrected", "boxes_before", "boxes_after"):
        assert clean.data.metrics[key] == summary[key]
    assert clean.data.params["glc/methods"] == "md,mistakes,noisy" and drop.data.params["glc/methods"] == "md,mistakes"
    assert {"recovery/n_dropped", "recovery/n_recovered", "corruption/dropped"} <= set(drop.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(clean.info.run_id, "glc/clean")}
    assert artifacts == {"glc/clean/labeled.json", "glc/clean/changes.csv", "glc/clean/summary.json"}


@pytest.mark.parametrize("override, message", [
    ("glc.methods=[md,typo]", "glc.methods"),
    ("glc.synthetic=rotate", "glc.synthetic='rotate'"),
    ("+glc.md.min_iou=0.5", "md.min_iou"),
    ("glc.noise_std=-1", "noise_std"),
])
def test_one_line_errors(tmp_path, override, message):
    proc = run_app("glc", *DATA, override, "tracking=none", cwd=tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr and proc.stderr.count("error:") == 1


def test_missing_stac_run_names_the_command(tmp_path):
    proc = run_app("glc", *DATA, "tracking=none", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and proc.stderr.count("error:") == 1
    assert "udet-stac run_name=synthetic-tiny-stac" in proc.stderr
