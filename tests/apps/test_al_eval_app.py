"""udet-al-eval end to end on a tiny 2-strategy AL loop (random, entropy; 2 rounds): the performance analysis
against the library recomputed on the same crop features, the reliability analysis on random val subsets, the
MLflow runs, one-line errors, NaN propagation on constant performances, another dataset as the reference."""
from __future__ import annotations

import json
import math
import re
import shutil

import numpy as np
import pandas as pd
import pytest

from tests.apps.al_fixture import DATA, RUNS, STRATEGIES
from tests.helpers import all_runs, mlflow_client, run_app

PERF = [*DATA, "al_eval.round=1", "al_eval.num_samples=400"]
# 8 val images, split_factor 4: boundaries [0, 2, 4, 8] (the last snapped to L), 3 subsets per seed
REL = [*DATA, "al_eval.mode=reliability", "al_eval.split_factor=4", "al_eval.subset_seeds=[1,2]",
       "al_eval.num_samples=300", "al_eval.reference_split=test"]
ANN = "outputs/data/synthetic/annotations"


@pytest.fixture(scope="module")
def evaluated(tiny_al_loop):
    root = tiny_al_loop
    run_app("al_eval", *PERF, cwd=root)
    run_app("al_eval", *REL, cwd=root)
    return root


class Recorder:
    """A stand-in for the MLflow tracker of a stage run."""

    def __init__(self):
        self.metrics, self.params, self.artifacts = {}, {}, []

    def log_metrics(self, metrics, step=None):
        self.metrics.update(metrics)

    def log_params(self, params):
        self.params.update(params)

    def log_artifacts(self, folder, artifact_path=None):
        self.artifacts.append((folder, artifact_path))


def _plain(root, *overrides):
    from hydra import compose, initialize_config_dir

    from uncertainty_det.apps.common import CONFIG_DIR, plain_config

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="al_eval", overrides=[f"paths.root={root / 'outputs'}", *DATA, *overrides])
    return plain_config(cfg)


def _state(root, strategy):
    return json.loads((root / RUNS / "al" / strategy / "state.json").read_text())


def _manifest(root, split):
    from uncertainty_det.data.manifest import Manifest

    return Manifest.read(root / ANN / f"{split}.json")


def _close(a, b):
    a, b = (np.asarray(x, dtype=np.float64) for x in (a, b))
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12, equal_nan=True)


def _num(value):
    return float("nan") if value is None else float(value)


def test_performance_similarity_and_agreement_match_the_library(evaluated):
    from uncertainty_det.al_eval import manifest_features, per_class_agreement, rank_agreement, set_similarity

    out = evaluated / RUNS / "al_eval" / "performance_round1"
    for name in ("similarity.csv", "per_class.csv", "summary.json", "similarity_vs_map.png", "per_class.png"):
        assert (out / name).is_file(), name
    table = pd.read_csv(out / "similarity.csv")
    summary = json.loads((out / "summary.json").read_text())
    assert table["strategy"].tolist() == STRATEGIES == summary["strategies"]

    pool, val = _manifest(evaluated, "train"), _manifest(evaluated, "val")
    classes, names = pool.category_ids, pool.class_names
    states = [_state(evaluated, s) for s in STRATEGIES]
    labeled = [r["rounds"][0]["added"] + r["rounds"][1]["added"] for r in states]
    assert table["labeled"].tolist() == [len(ids) for ids in labeled] == [20, 20]
    result = set_similarity([manifest_features(pool, classes, image_ids=ids) for ids in labeled],
                            manifest_features(val, classes), classes, num_samples=400, seed=0)
    _close(table["similarity"], result.similarity)
    _close(table[[f"m/{n}" for n in names]].to_numpy(), result.m.T)
    assert table["crops"].tolist() == result.total.tolist()
    assert summary["size_factors"] == dict(zip(STRATEGIES, result.size_factor.tolist()))
    assert summary["class_balance"] == result.class_balance

    # performance = each round-1 model's mAP from the loop states
    _close(table["mAP"], [s["rounds"][1]["metrics"]["map/AP"] for s in states])
    ap = np.array([[s["rounds"][1]["metrics"].get(f"map/AP/{n}", np.nan) for n in names] for s in states])
    _close(table[[f"AP/{n}" for n in names]].to_numpy(), ap)
    agreement = rank_agreement(table["similarity"].to_numpy(), table["mAP"].to_numpy())
    for key in ("kendall_tau", "kendall_p", "pearson_r", "pearson_p"):
        _close(_num(summary[key]), agreement[key])
    assert summary["reference"] == {"kind": "eval", "dataset": "synthetic", "split": "val", "images": 8}
    per_class = pd.read_csv(out / "per_class.csv").set_index("class")
    expected = per_class_agreement(result.m, ap, names)
    assert per_class.index.tolist() == [*names, "mean"]
    _close(per_class[["kendall_tau", "pearson_r"]].to_numpy(), expected[["kendall_tau", "pearson_r"]].to_numpy())
    _close(per_class["weight"].to_numpy()[:-1], result.weights)


def test_reliability_subsets_similarity_and_taus(evaluated):
    from uncertainty_det.al_eval import manifest_features, random_subsets, reliability, set_similarity

    out = evaluated / RUNS / "al_eval" / "reliability_round1"
    for name in ("subsets.csv", "summary.json", "tau_vs_similarity.png", "rank_heatmap.png"):
        assert (out / name).is_file(), name
    table = pd.read_csv(out / "subsets.csv")
    summary = json.loads((out / "summary.json").read_text())
    assert table["seed"].tolist() == [1, 1, 1, 2, 2, 2] and table["size"].tolist() == [2, 2, 4] * 2
    assert summary["reference"] == {"dataset": "synthetic", "split": "test", "images": 6}
    assert summary["strategies"] == STRATEGIES and summary["performance"] == "AP"

    val, test = _manifest(evaluated, "val"), _manifest(evaluated, "test")
    ids = np.asarray(val.image_ids)
    subsets = [ids[pos].tolist() for pos in random_subsets(len(ids), 4, [1, 2])]
    sets = [*subsets, ids.tolist()]
    feats = [manifest_features(val, val.category_ids, image_ids=s) for s in sets]
    has = [i for i, f in enumerate(feats) if sum(len(v) for v in f.values())]
    result = set_similarity([feats[i] for i in has], manifest_features(test, test.category_ids), val.category_ids,
                            num_samples=300, seed=0)
    sim = np.full(len(sets), np.nan)
    sim[has] = result.similarity
    _close(table["similarity"], sim[:-1])
    _close(_num(summary["val_similarity"]), sim[-1])

    ap = table[[f"AP/{s}" for s in STRATEGIES]].to_numpy()
    assert np.all((ap[np.isfinite(ap)] >= 0) & (ap[np.isfinite(ap)] <= 1))
    val_perf = np.array([_num(summary["perf"]["val"][s]) for s in STRATEGIES])
    ref_perf = np.array([_num(summary["perf"]["ref"][s]) for s in STRATEGIES])
    rel = reliability(ap, val_perf, ref_perf, table["similarity"].to_numpy(), _num(summary["val_similarity"]))
    _close(table["tau"], rel["tau"])
    for key in ("val_tau", "top_s_tau", "pearson_r"):
        _close(_num(summary[key]), rel[key])
    assert summary["top_s"] == rel["top_s"] and summary["top_s_beats_val"] == rel["top_s_beats_val"]


def test_mlflow_runs_metrics_and_artifacts(evaluated):
    client = mlflow_client(evaluated)
    runs = {r.data.params.get("al_eval.mode", r.data.params.get("al_eval/mode")): r
            for r in all_runs(client, "al_eval")}
    assert set(runs) == {"performance", "reliability"}
    perf, rel = runs["performance"], runs["reliability"]
    assert perf.info.status == rel.info.status == "FINISHED"
    summary = json.loads((evaluated / RUNS / "al_eval" / "performance_round1" / "summary.json").read_text())
    assert {f"similarity/{s}" for s in STRATEGIES} <= set(perf.data.metrics)
    for s in STRATEGIES:
        assert perf.data.metrics[f"similarity/{s}"] == pytest.approx(summary["similarity"][s])
    for key in ("kendall_tau", "pearson_r"):       # logged when defined (NaN is not logged)
        assert (key in perf.data.metrics) == (summary[key] is not None)
        if summary[key] is not None:
            assert perf.data.metrics[key] == pytest.approx(summary[key])
    rsum = json.loads((evaluated / RUNS / "al_eval" / "reliability_round1" / "summary.json").read_text())
    for key in ("val_tau", "top_s_tau", "pearson_r"):
        assert (key in rel.data.metrics) == (rsum[key] is not None)
    assert {f"val_AP/{s}" for s in STRATEGIES} | {f"ref_AP/{s}" for s in STRATEGIES} <= set(rel.data.metrics)
    listed = {a.path for a in client.list_artifacts(perf.info.run_id, "al_eval/performance_round1")}
    assert "al_eval/performance_round1/similarity.csv" in listed
    listed = {a.path for a in client.list_artifacts(rel.info.run_id, "al_eval/reliability_round1")}
    assert "al_eval/reliability_round1/subsets.csv" in listed


def test_missing_round_is_a_one_line_error(evaluated):
    proc = run_app("al_eval", *DATA, "al_eval.round=2", "tracking=none", cwd=evaluated, check=False)
    assert proc.returncode == 2
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert "entropy has not finished round 2" in line and "udet-al-loop strategy=entropy al.rounds=3" in line


def test_other_user_errors(evaluated):
    from uncertainty_det.apps.al_eval import run
    from uncertainty_det.errors import UserError

    cases = [
        (["al_eval.strategies=[random]"], "needs at least 2"),
        (["run_name=nothing"], "no active-learning strategy"),
        (["al_eval.mode=both"], "unknown al_eval.mode"),
        (["al_eval.strategies=[random,sota]"], "udet-al-loop strategy=sota al.rounds=2"),
        (["al_eval.round=3"], "has only 3 rounds"),
        (["al_eval.classes=[blob]"], "unknown classes ['blob']"),
    ]
    for overrides, message in cases:
        with pytest.raises(UserError, match=re.escape(message)):
            run(_plain(evaluated, *overrides), Recorder())


def test_constant_performance_gives_nan_agreement_without_crashing(evaluated, tmp_path):
    from uncertainty_det.apps.al_eval import run

    runs = tmp_path / "runs"
    shutil.copytree(evaluated / RUNS / "al", runs / "synthetic-tiny-al" / "al")
    for s in STRATEGIES:
        path = runs / "synthetic-tiny-al" / "al" / s / "state.json"
        state = json.loads(path.read_text())
        for r in state["rounds"]:
            r["metrics"] = {k: 0.0 for k in r["metrics"]}
        path.write_text(json.dumps(state))
    tracker = Recorder()
    metrics = run(_plain(evaluated, f"paths.runs_dir={runs}", *PERF[len(DATA):]), tracker)
    assert math.isnan(metrics["kendall_tau"]) and math.isnan(metrics["pearson_r"])
    assert all(math.isfinite(metrics[f"similarity/{s}"]) for s in STRATEGIES)
    summary = json.loads((runs / "synthetic-tiny-al" / "al_eval" / "performance_round1" / "summary.json").read_text())
    assert summary["kendall_tau"] is None and summary["pearson_r"] is None
    assert tracker.artifacts and tracker.artifacts[0][1] == "al_eval/performance_round1"


def test_another_dataset_as_the_reference(evaluated):
    from uncertainty_det.apps.al_eval import run

    fog = ["al_eval.reference_dataset=synthetic_fog",
           'al_eval.reference_dataset_overrides=["dataset.generator.image_size=[64,64]",'
           '"dataset.generator.num_images={train:40,val:8,test:6}","dataset.input_size=[64,64]"]']
    run(_plain(evaluated, *PERF[len(DATA):], *fog, "al_eval.classes=[circle,square,cross]"), Recorder())
    out = evaluated / RUNS / "al_eval" / "performance_round1-synthetic_fog-val"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reference"]["dataset"] == "synthetic_fog" and summary["reference"]["split"] == "val"
    assert summary["classes"] == ["circle", "square", "cross"]
    assert summary["performance"].startswith("mean of map/AP/<class>")
    assert (evaluated / "outputs" / "data" / "synthetic_fog" / "annotations" / "val.json").is_file()
    table = pd.read_csv(out / "similarity.csv")
    assert [c for c in table.columns if c.startswith("m/")] == ["m/circle", "m/square", "m/cross"]


def test_reference_manifest_in_the_training_classes():
    from uncertainty_det.apps.al_eval import in_class_space
    from uncertainty_det.data.manifest import Manifest

    images = [{"id": 1, "file_name": "a.png", "height": 10, "width": 10}]
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 4]},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [1, 1, 4, 4]}]
    other = Manifest(images, anns, [{"id": 1, "name": "bus"}, {"id": 2, "name": "car"}])
    mapped = in_class_space(other, ["car", "truck", "bus"])
    assert mapped.class_names == ["car", "truck", "bus"]
    assert sorted((a["id"], a["category_id"]) for a in mapped.annotations) == [(1, 3), (2, 1)]
    assert in_class_space(mapped, ["car", "truck", "bus"]) is mapped
    assert [a["category_id"] for a in in_class_space(other, ["car"]).annotations] == [1]
