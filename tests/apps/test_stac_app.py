"""udet-stac end to end on tiny synthetic data: split, teacher, pseudo-labels recomputed from the stored teacher
predictions, their quality against the hidden GT, a student per round on mixed batches (steps per epoch from
the batch composition), one self-training round, nested MLflow runs, resume, a pseudo-label source file,
and one-line errors."""
from __future__ import annotations

import json
import re
import shutil

import pandas as pd
import pytest

from tests.apps.stac_fixture import DATA, STAC, STAC_DIR
from tests.helpers import all_runs, mlflow_client, run_app



@pytest.fixture(scope="module")
def stac(tiny_stac):
    return tiny_stac


def test_split_teacher_pseudo_labels_and_students(stac):
    from uncertainty_det.ssl.pseudo_labels import PseudoLabelSelection, select_pseudo_labels
    from uncertainty_det.tables import read_detections

    root, _ = stac
    folder = root / STAC_DIR
    split = json.loads((folder / "split.json").read_text())
    labeled, unlabeled = split["labeled"], split["unlabeled"]
    assert len(labeled) == 10 and len(unlabeled) == 30 and not set(labeled) & set(unlabeled)
    assert split["settings"] == {"percent": 25.0, "seed": 0, "method": "random"}
    selection = PseudoLabelSelection(tau=0.0, min_score=0.0, max_per_image=3)
    for k, teacher in ((0, "teacher"), (1, "student_0")):
        frame, meta = read_detections(folder / f"pseudo_{k}" / "teacher_predictions.parquet")
        assert meta["run_name"] == teacher and set(frame["image_id"]) <= set(unlabeled)
        pseudo = pd.read_parquet(folder / f"pseudo_{k}" / "pseudo_labels.parquet")
        expected = select_pseudo_labels(frame, selection)
        pd.testing.assert_frame_equal(pseudo.reset_index(drop=True), expected.reset_index(drop=True),
                                      check_dtype=False)
        assert pseudo.groupby("image_id").size().max() <= 3
        quality = json.loads((folder / f"pseudo_{k}" / "quality.json").read_text())
        assert quality["pseudo_boxes"] == len(pseudo) and quality["pseudo_images"] == pseudo["image_id"].nunique()
        assert 0.0 <= quality["precision"] <= 1.0 and 0.0 <= quality["recall"] <= 1.0
    summary = json.loads((folder / "summary.json").read_text())
    assert [r["teacher"] for r in summary["rounds"]] == ["teacher", "student_0"]
    assert "map/AP50" in summary["teacher"] and all("map/AP50" in r["student"] for r in summary["rounds"])
    assert summary["gain/AP50"] == pytest.approx(summary["rounds"][-1]["student"]["map/AP50"]
                                                 - summary["teacher"]["map/AP50"])
    for part in ("teacher", "student_0", "student_1"):
        assert (folder / part / "train" / "final.weights.h5").is_file()
    history = pd.read_csv(folder / "student_0" / "train" / "history.csv")
    assert {"sup_loss", "pseudo_loss"} <= set(history.columns)


def test_nested_mlflow_runs(stac):
    root, _ = stac
    client = mlflow_client(root)
    runs = all_runs(client, "stac")
    (parent,) = [r for r in runs if not r.data.tags.get("mlflow.parentRunId")]
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(children) == {"stac:teacher", "stac:student_0", "stac:student_1"}
    student = children["stac:student_0"]
    assert student.data.params["ssl/labeled_per_batch"] == "1" and student.data.params["ssl/pseudo_per_batch"] == "3"
    assert student.data.params["ssl/steps_per_epoch"] == "10"
    assert "map/AP50" in student.data.metrics and "pseudo_loss" in student.data.metrics
    assert {"teacher/AP50", "student/AP50", "gain/AP50", "pseudo/precision"} <= set(parent.data.metrics)
    assert parent.data.params["ssl/labeled_images"] == "10"


def test_rerun_skips_finished_parts_and_refuses_another_split(stac, tmp_path):
    root, _ = stac
    shutil.copytree(root / "outputs", tmp_path / "outputs")
    proc = run_app("stac", *STAC, "tracking=none", cwd=tmp_path)
    log = proc.stdout + proc.stderr
    assert "teacher: done" in log and "student 1: done" in log and "trained" not in log
    proc = run_app("stac", *STAC, "ssl.labeled_percent=50", "tracking=none", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "split.json was made with" in proc.stderr


def test_pls_scores_subsets_and_roc(stac):
    from uncertainty_det.ssl.pls import pls_scores
    from uncertainty_det.tables import read_detections

    root, _ = stac
    run_app("pls", *DATA, "pls.tau=0.05", "pls.top_fraction=0.5", cwd=root)
    folder, out = root / STAC_DIR / "pseudo_0", root / STAC_DIR / "pls" / "round_0"
    raw, _ = read_detections(folder / "teacher_predictions.parquet")
    pseudo = pd.read_parquet(folder / "pseudo_labels.parquet")
    scores = pd.read_csv(out / "scores.csv", index_col="image_id")
    expected = pls_scores(raw, pseudo, 0.05, 0.1)
    pd.testing.assert_frame_equal(scores[expected.columns], expected, check_dtype=False, check_names=False)
    assert scores["missed_rate"].between(0, 1).all()
    parts = {name: pd.read_parquet(out / f"pseudo_{name}.parquet") for name in ("top", "bottom", "random")}
    top, bottom = set(parts["top"]["image_id"]), set(parts["bottom"]["image_id"])
    assert not top & bottom and top | bottom == set(pseudo["image_id"])
    assert len(parts["top"]) + len(parts["bottom"]) == len(pseudo)
    summary = json.loads((out / "subsets.json").read_text())
    assert summary["subsets"]["random"]["images"] == summary["subsets"]["top"]["images"] == len(top)
    assert (out / "pls.png").is_file() and len(pd.read_csv(out / "roc.csv")) == 4
    (run,) = [r for r in all_runs(mlflow_client(root), "pls")]
    assert "top/images" in run.data.metrics


def test_noise_study_variants_and_the_teacher_reuse(stac, tmp_path):
    """udet-noise-study writes the variants and the udet-stac commands that train on them with the run's teacher."""
    from uncertainty_det.ssl.noise_study import pseudo_label_variant
    from uncertainty_det.ssl.pseudo_gt import pseudo_label_report

    root, _ = stac
    shutil.copytree(root / "outputs", tmp_path / "outputs")
    proc = run_app("noise_study", *DATA, "noise.variants=[nofd,fixmd]", "tracking=none", cwd=tmp_path)
    out = tmp_path / STAC_DIR / "noise" / "round_0"
    report = json.loads((out / "report.json").read_text())
    assert set(report["variants"]) == {"original", "nofd", "fixmd"}
    pseudo = pd.read_parquet(tmp_path / STAC_DIR / "pseudo_0" / "pseudo_labels.parquet")
    split = json.loads((tmp_path / STAC_DIR / "split.json").read_text())
    from uncertainty_det.evaluation.matching import gt_frame_from_manifest
    from uncertainty_det.data.manifest import Manifest

    pool = Manifest.read(tmp_path / "outputs/data/synthetic/annotations/train.json")
    gt = gt_frame_from_manifest(pool.subset(split["unlabeled"]))
    fixmd = pd.read_parquet(out / "fixmd.parquet")
    pd.testing.assert_frame_equal(fixmd, pseudo_label_variant(pseudo, gt, "fixmd"), check_dtype=False)
    assert report["variants"]["fixmd"]["recall"] == pytest.approx(pseudo_label_report(fixmd, gt)["recall"]) == 1.0
    assert "ssl.reuse_teacher_of=synthetic-tiny-stac" in proc.stdout
    # udet-stac ssl.reuse_teacher_of copies the split and the trained teacher (once; another split is refused)
    from uncertainty_det.apps.stac import copy_teacher
    from uncertainty_det.errors import UserError

    target = tmp_path / "outputs/runs/variant/stac"
    copy_teacher(tmp_path / STAC_DIR, target)
    assert (target / "split.json").read_text() == (tmp_path / STAC_DIR / "split.json").read_text()
    assert (target / "teacher/metrics.json").read_text() == (tmp_path / STAC_DIR / "teacher/metrics.json").read_text()
    assert (target / "teacher/train/final.weights.h5").is_file() and not (target / "teacher.tmp").exists()
    other = tmp_path / "outputs/runs/other/stac"
    other.mkdir(parents=True)
    (other / "split.json").write_text(json.dumps({"settings": {}, "labeled": [], "unlabeled": []}))
    with pytest.raises(UserError, match="needs the same split"):
        copy_teacher(tmp_path / STAC_DIR, other)
    # the variant (plus a row of an image outside the pool) as a pseudo-label source: test_refined_... trains on it
    source = pd.concat([fixmd, fixmd.iloc[:1].assign(image_id=10**6)], ignore_index=True)
    source.to_csv(tmp_path / "variant.csv", index=False)
    from uncertainty_det.apps.stac import read_pseudo_source

    back = read_pseudo_source(str(tmp_path / "variant.csv"))
    assert len(back) == len(fixmd) + 1 and (back["weight"] == 1.0).all()


def test_refined_labeled_set_and_curriculum_teacher(stac, tmp_path):
    """The teacher and the students' labeled stream train on cleaned labels (ssl.labeled_source, as udet-glc
    writes them) plus udet-rcc's collages (ssl.extra_labeled), the teacher with the RCF curriculum; the student's
    pseudo-labels come from a file (ssl.pseudo_source: a noise-study variant)."""
    from uncertainty_det.data.manifest import Manifest

    root, _ = stac
    shutil.copytree(root / "outputs" / "data", tmp_path / "outputs" / "data")
    (tmp_path / "outputs/runs/refined/stac").mkdir(parents=True)
    shutil.copy2(root / STAC_DIR / "split.json", tmp_path / "outputs/runs/refined/stac/split.json")
    labeled = json.loads((root / STAC_DIR / "split.json").read_text())["labeled"]
    pool = Manifest.read(tmp_path / "outputs/data/synthetic/annotations/train.json")
    cleaned = pool.subset(labeled)
    dropped = cleaned.annotations.pop(0)                    # a "cleaning" that removed one box
    cleaned.write(tmp_path / "labeled.json", image_root=pool.image_root)
    run_app("rcc", *DATA, "run_name=refined", "tracking=none", cwd=tmp_path)
    from uncertainty_det.evaluation.matching import gt_frame_from_manifest
    from uncertainty_det.ssl.noise_study import pseudo_label_variant

    unlabeled = json.loads((root / STAC_DIR / "split.json").read_text())["unlabeled"]
    pseudo = pd.read_parquet(root / STAC_DIR / "pseudo_0" / "pseudo_labels.parquet")
    fixmd = pseudo_label_variant(pseudo, gt_frame_from_manifest(pool.subset(unlabeled)), "fixmd")
    pd.concat([fixmd, fixmd.iloc[:1].assign(image_id=10**6)]).to_parquet(tmp_path / "variant.parquet")
    collages = Manifest.read(tmp_path / "outputs/runs/refined/stac/rcc/collages.json")
    proc = run_app("stac", *STAC, "run_name=refined", "ssl.selftrain_rounds=0", "trainer.steps_per_epoch=2",
                   f"ssl.labeled_source={tmp_path / 'labeled.json'}",
                   f"ssl.extra_labeled={tmp_path / 'outputs/runs/refined/stac/rcc/collages.json'}",
                   "ssl.curriculum.enabled=true", "ssl.curriculum.aug_rare=1", "ssl.student_init=teacher",
                   f"ssl.pseudo_source={tmp_path / 'variant.parquet'}", "tracking=none", cwd=tmp_path)
    log = proc.stdout + proc.stderr
    n = len(labeled) + len(collages.image_ids)
    assert f"student 0: {n} labeled" in log and dropped["id"] not in {a["id"] for a in cleaned.annotations}
    # ssl.student_init=teacher: the student starts from every weight of the teacher
    teacher_dir = tmp_path / "outputs/runs/refined/stac/teacher/train"
    assert re.search(rf"init_from {re.escape(str(teacher_dir))}: loaded all \d+ variables", log), log[-3000:]
    assert (tmp_path / "outputs/runs/refined/stac/student_0/train/final.weights.h5").is_file()
    quality = json.loads((tmp_path / "outputs/runs/refined/stac/pseudo_0/quality.json").read_text())
    assert quality["pseudo_boxes"] == len(fixmd) and quality["recall"] == 1.0    # the outside row dropped
    (tmp_path / "bad.json").write_text(json.dumps({**pool.subset(labeled[1:]).to_coco()}))
    proc = run_app("stac", *STAC, "run_name=other", f"ssl.labeled_source={tmp_path / 'bad.json'}",
                   "tracking=none", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "holds other images" in proc.stderr


def test_ignore_regions_reach_the_student(stac, tmp_path):
    """selection.ignore_score: the candidates the selection drops (score <= tau here) are written as ignore
    regions, counted in quality.json and go into the student's pseudo-labelled manifest as weight-0 boxes."""
    from uncertainty_det.apps.stac import pseudo_manifest
    from uncertainty_det.data.manifest import Manifest

    root, _ = stac
    shutil.copytree(root / "outputs" / "data", tmp_path / "outputs" / "data")
    shutil.copytree(root / STAC_DIR / "teacher", tmp_path / STAC_DIR / "teacher")
    shutil.copy2(root / STAC_DIR / "split.json", tmp_path / STAC_DIR / "split.json")
    teacher = pd.read_parquet(root / STAC_DIR / "pseudo_0" / "teacher_predictions.parquet")
    tau = float(teacher.sort_values("score", ascending=False).groupby("image_id").head(3)["score"].median())
    proc = run_app("stac", *STAC, "run_name=ignore", "ssl.reuse_teacher_of=synthetic-tiny-stac",
                   "ssl.selftrain_rounds=0", "trainer.steps_per_epoch=1", f"selection.tau={tau}",
                   "selection.ignore_score=0.0", "tracking=none", cwd=tmp_path)
    folder = tmp_path / "outputs/runs/ignore/stac/pseudo_0"
    preds = pd.read_parquet(folder / "teacher_predictions.parquet")
    cands = preds.sort_values("score", ascending=False).groupby("image_id").head(3)
    pseudo = pd.read_parquet(folder / "pseudo_labels.parquet")
    regions = pd.read_parquet(folder / "ignore_regions.parquet")
    assert len(pseudo) == (cands["score"] > tau).sum() > 0 and len(regions) == (cands["score"] <= tau).sum() > 0
    assert (regions["weight"] == 0).all() and (regions["score"] <= tau).all()
    quality = json.loads((folder / "quality.json").read_text())
    on_pseudo_images = regions["image_id"].isin(set(pseudo["image_id"]))
    assert quality["ignore_regions"] == on_pseudo_images.sum() and quality["pseudo_boxes"] == len(pseudo)
    assert (tmp_path / "outputs/runs/ignore/stac/student_0/train/final.weights.h5").is_file(), proc.stderr[-2000:]
    pool = Manifest.read(tmp_path / "outputs/data/synthetic/annotations/train.json")
    manifest = pseudo_manifest(pool, pseudo, regions)
    scores = sorted(a["score"] for a in manifest.annotations)
    assert len(scores) == len(pseudo) + on_pseudo_images.sum() and scores.count(0.0) == on_pseudo_images.sum()
    assert set(manifest.image_ids) == set(pseudo["image_id"])


@pytest.mark.parametrize("override, message", [
    ("ssl.split=sorted", "ssl.split='sorted'"),
    ("ssl.student_init=imagenet", "ssl.student_init='imagenet'"),
    ("selection.tau=1.5", "tau"),
    ("selection.use=sometimes", "use"),
    ("selection.ignore_score=0.1 ssl.pseudo_source=x.csv", "ignore_score=0.1 needs the teacher's detections"),
])
def test_one_line_errors(stac, tmp_path, override, message):
    root, _ = stac
    shutil.copytree(root / "outputs", tmp_path / "outputs")
    for k in (0, 1):
        shutil.rmtree(tmp_path / STAC_DIR / f"pseudo_{k}", ignore_errors=True)
    proc = run_app("stac", *STAC, *override.split(), "tracking=none", cwd=tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr and proc.stderr.count("error:") == 1
