"""udet-al-loop end to end on tiny synthetic data: 2 rounds of entropy, the selection against the library on the
stored pool predictions, nested MLflow rounds, resuming after a kill mid-round, the shared warm-up, and a
mismatching re-run."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.apps.al_fixture import AL, LOOP
from tests.helpers import all_runs, mlflow_client, run_app


@pytest.fixture(scope="module")
def looped(tiny_al_loop):
    return tiny_al_loop


def _state(root, strategy="entropy"):
    return json.loads((root / AL / strategy / "state.json").read_text())


def test_rounds_state_and_selection(looped):
    from uncertainty_det.active_learning import image_scores, parse_strategy_name, select, select_random
    from uncertainty_det.tables import read_detections

    state = _state(looped)
    assert state["sizes"] == [10, 10, 20] and [r["round"] for r in state["rounds"]] == [0, 1]
    r0, r1 = (r["added"] for r in state["rounds"])
    assert len(r0) == len(r1) == 10 and not set(r0) & set(r1)
    pool = np.asarray(state["pool"])
    assert r0 == pool[select_random(pool.size, 10, np.random.default_rng([0, 0]))].tolist()
    # round 1 = top-10 entropy of the stored pool predictions of round 0's model, ties broken by the seeded perm
    frame, meta = read_detections(looped / AL / "entropy" / "round_1" / "pool_predictions.parquet")
    assert meta["run_name"] == "round_0"
    unlabeled = np.asarray([i for i in pool if i not in set(r0)])
    rng = np.random.default_rng([0, 1])
    scores = image_scores(frame, unlabeled, parse_strategy_name("entropy"), 0.0, rng)
    perm = rng.permutation(unlabeled.size)
    assert sorted(r1) == sorted(unlabeled[perm[select(scores[perm], 10, "topk")]].tolist())
    for k in (0, 1):
        metrics = json.loads((looped / AL / "entropy" / f"round_{k}" / "metrics.json").read_text())
        assert metrics["labeled"] == 10 * (k + 1) and "map/AP50" in metrics["metrics"]
        assert any(key.startswith("map/AP/") for key in metrics["metrics"])          # per-class AP kept
        assert (looped / AL / "entropy" / f"round_{k}" / "train" / "final.weights.h5").is_file()
    curve = (looped / AL / "entropy" / "curve.csv").read_text().splitlines()
    assert len(curve) == 3 and (looped / AL / "entropy" / "curve.png").is_file()


def test_rounds_are_nested_mlflow_runs_with_the_labeled_share_as_step(looped):
    client = mlflow_client(looped)
    runs = all_runs(client, "al_loop")
    children = {}
    for r in runs:
        children.setdefault(r.data.tags.get("mlflow.parentRunId"), []).append(r.info.run_name)
    # the multirun's loops (random, entropy) under its sweep run; the entropy loop's children are its 2 rounds
    (loop,) = [r for r in runs if r.data.tags.get("stage") == "al_loop"
               and any(name.startswith("al_round:entropy") for name in children.get(r.info.run_id, []))]
    assert sorted(children[loop.info.run_id]) == ["al_round:entropy:0", "al_round:entropy:1"]
    history = client.get_metric_history(loop.info.run_id, "map/AP50")
    assert sorted(m.step for m in history) == [25, 50]
    assert "auc/AP50" in loop.data.metrics and loop.info.status == "FINISHED"


def test_resume_after_a_kill_mid_round_gives_the_same_state(looped, tmp_path):
    shutil.copytree(looped / "outputs", tmp_path / "outputs")
    folder = tmp_path / AL / "entropy"
    state = json.loads((folder / "state.json").read_text())
    # killed during round 1's training, before its selection was even stored: no trace of round 1 but its
    # half-trained folder
    state["rounds"] = state["rounds"][:1]
    (folder / "state.json").write_text(json.dumps(state))
    (folder / "round_1" / "metrics.json").unlink()
    (folder / "round_1" / "selection.json").unlink()
    (folder / "round_1" / "train" / "final.weights.h5").unlink()
    proc = run_app("al_loop", *LOOP, cwd=tmp_path)
    assert "resuming" in proc.stdout + proc.stderr
    resumed, original = json.loads((folder / "state.json").read_text()), _state(looped)
    assert [sorted(r["added"]) for r in resumed["rounds"]] == [sorted(r["added"]) for r in original["rounds"]]
    assert [r["labeled"] for r in resumed["rounds"]] == [10, 20]


def test_shared_warmup_and_mismatched_rerun(looped, tmp_path):
    shutil.copytree(looped / "outputs", tmp_path / "outputs")
    proc = run_app("al_loop", *LOOP, "strategy=albox", "al.warm_start=true", "al.warm_start_epochs=2",
                   "tracking=none", cwd=tmp_path)
    log = proc.stdout + proc.stderr
    assert "reusing the shared warm-up model" in log
    assert _state(tmp_path, "albox")["rounds"][0]["added"] == _state(looped)["rounds"][0]["added"]
    # round 1 starts from round 0's weights and trains warm_start_epochs (2), not trainer.epochs (1)
    assert "init_from" in log and "albox/round_0/train" in log
    history = (tmp_path / AL / "albox" / "round_1" / "train" / "history.csv").read_text().splitlines()
    warmup = (tmp_path / AL / "albox" / "round_0" / "train" / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 2 and len(warmup) == 1 + 1
    proc = run_app("al_loop", *LOOP, "seed=5", "tracking=none", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "belongs to another loop" in proc.stderr and "seed 0 vs 5" in proc.stderr
    proc = run_app("al_loop", *LOOP, "al.budget=[50,50]", "tracking=none", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "budget [25.0, 25.0, 50.0] vs [50, 50]" in proc.stderr
