"""``udet-al-loop``: active-learning rounds on a dataset split (DESIGN §10, reference §3).

Round ``k`` of strategy ``S`` lives in ``<runs>/<run_name>/al/<S>/round_<k>/`` (a run workspace of its own,
so the calibrate/validate/threshold apps work on it with ``paths.runs_dir=<al dir> run_name=round_<k>``):

1. selection: round 0 draws the seeded random warm-up; later rounds predict the still-unlabeled pool with
   round ``k-1``'s model (calibrated, and for ``combo`` with its fitted thresholds, when the strategy needs
   them), score it and select; the last round takes the rest of the pool. Stored in ``selection.json``
   before training, so an interrupted round is redone with the same images.
2. training on every labeled image (from scratch, or from round ``k-1`` with ``al.warm_start``), the
   model's COCO mAP and per-class AP on ``al.eval_split``; round 0 is shared between strategies of the same
   seed and training setup (``al.share_warmup``).
3. ``state.json`` gets the round (atomic), the loop run the round's metrics with the labeled percentage as
   step, the round its own nested MLflow run.
At the end: ``curve.csv`` / ``curve.png`` (mAP vs labeled share) and the area under the curve.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import shutil
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from ..errors import UserError
from .common import CONFIG_DIR, plain_config, stage_run

log = logging.getLogger("uncertainty_det.al_loop")

#: strategy.training -> the uncertainty config the round models are trained with (reference §3.1).
TRAINING_UNCERTAINTY = {"baseline": "baseline", "lossatt": "lossatt", "mcdropout_lossatt": "mcdropout_lossatt_head"}
CURVE_KEYS = ("map/AP50", "map/AP")


def training_uncertainty(strategy, plain: dict) -> tuple[str, dict]:
    """``(name, config)`` of the uncertainty variant of ``strategy.training``: the composed ``uncertainty``
    group (with its overrides) when it is that variant, else ``conf/uncertainty/<variant>.yaml``."""
    name = TRAINING_UNCERTAINTY[strategy.training]
    if (plain.get("uncertainty") or {}).get("name") == name:
        return name, plain["uncertainty"]
    log.info("strategy %s trains with uncertainty=%s (strategy.training=%s)", strategy.name, name, strategy.training)
    return name, OmegaConf.to_container(OmegaConf.load(Path(CONFIG_DIR) / "uncertainty" / f"{name}.yaml"))


def plan_pool(strategy, pool_manifest, budget, seed: int, cache_dir: Path) -> tuple[list[int], list[int], dict]:
    """``(pool ids, round sizes, pruning info)``: the pool after the strategy's pruning and its schedule."""
    from ..active_learning import prune_pool, rescale_budget, round_sizes

    ids = [int(i) for i in pool_manifest.image_ids]
    if strategy.prune == "off":
        return ids, round_sizes(len(ids), budget).tolist(), {"mode": "off"}
    mode = "random" if strategy.prune == "random" else "hash"
    paths = [pool_manifest.image_path(i) for i in ids]
    result = prune_pool(paths, strategy.hash, strategy.prune_threshold, mode, seed, cache_dir)
    kept = [ids[i] for i in result.kept.tolist()]
    info = {"mode": strategy.prune, "removed": [ids[i] for i in result.removed.tolist()],
            "unreadable": [ids[i] for i in np.asarray(result.unreadable, dtype=np.int64).tolist()],
            "kept": len(kept), "original": len(ids)}
    log.info("pruning (%s): kept %d of %d pool images", strategy.prune, len(kept), len(ids))
    if strategy.prune == "full":
        return kept, [len(kept)], info
    return kept, round_sizes(len(kept), rescale_budget(budget, len(ids), len(kept))).tolist(), info


def _round_rng(seed: int, k: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(k)])


def predict_pool(plain: dict, strategy, prev_ws, pool_manifest, unlabeled, cli, unc_name, parent, al_dir):
    """The Detections table of the unlabeled images by the previous round's model (calibrated when the
    strategy needs it) and, for ``combo``, the threshold model fitted on that round."""
    from ..data.pipeline import input_config_from_dict
    from ..inference.postprocess import postprocess_config_from_dict
    from ..inference.predictor import Predictor
    from .child_stages import calibrate_and_threshold

    al = plain["al"]
    post = postprocess_config_from_dict(plain["postprocess"])
    inputs = dataclasses.replace(input_config_from_dict(plain["input"]), batch_size=int(al["batch_size"]))
    kwargs = {} if al.get("mc_samples") is None else {"mc_samples": int(al["mc_samples"])}
    predictor = Predictor.from_train_dir(prev_ws.train, post, **kwargs)
    frame = predictor.predict_manifest(pool_manifest.subset(unlabeled.tolist()), inputs, progress=True)
    return calibrate_and_threshold(frame, plain, prev_ws, str(al["eval_split"]), strategy.needs_calibration,
                                   strategy.needs_thresholds, cli, unc_name, parent,
                                   "re-run the same udet-al-loop command to resume")


def select_round(k: int, state, strategy, plain, al_dir: Path, pool_manifest, cli, unc_name, parent) -> list[int]:
    """The ids round ``k`` adds (stored in ``round_<k>/selection.json`` and reused when it exists)."""
    from ..active_learning import image_scores, select, select_random
    from ..io_utils import atomic_write_json
    from ..tables import write_detections
    from ..workspace import run_workspace

    round_dir = al_dir / f"round_{k}"
    path = round_dir / "selection.json"
    unlabeled = state.unlabeled()
    if path.exists():
        added = [int(i) for i in json.loads(path.read_text())["added"]]
        if not set(added) <= set(unlabeled.tolist()):
            raise UserError(f"{path} selects images that are already labeled; delete {round_dir} to redo the round")
        return added
    n = int(state.sizes[k])
    info: dict = {"round": k, "size": n}
    if k == 0 or strategy.score == "random":
        added = unlabeled[select_random(unlabeled.size, n, _round_rng(state.seed, k))].tolist()
        info["how"] = "random warm-up" if k == 0 else "random"
    elif n >= unlabeled.size:
        added = unlabeled.tolist()
        info["how"] = "the rest of the pool"
    else:
        prev = run_workspace(al_dir, f"round_{k - 1}")
        frame, model = predict_pool(plain, strategy, prev, pool_manifest, unlabeled, cli, unc_name, parent, al_dir)
        rng = _round_rng(state.seed, k)
        scores = image_scores(frame, unlabeled, strategy, float(plain["al"]["score_floor"]), rng,
                              threshold_model=model)
        # ties (e.g. images without detections) are broken by a seeded permutation, not by pool order
        perm = rng.permutation(unlabeled.size)
        pos = perm[select(scores[perm], n, strategy.select)]
        added = unlabeled[pos].tolist()
        write_detections(frame, round_dir / "pool_predictions.parquet",
                         metadata={"run_name": f"round_{k - 1}", "round": k, "strategy": strategy.name})
        finite = scores[np.isfinite(scores)]
        info.update(how=f"{strategy.select} of {strategy.score}",
                    scores={str(i): (float(v) if math.isfinite(v) else None)
                            for i, v in zip(unlabeled[pos].tolist(), scores[pos])},
                    pool_score_mean=float(finite.mean()) if finite.size else None,
                    no_detection=int((~np.isfinite(scores)).sum()))
    atomic_write_json(path, {**info, "added": [int(i) for i in added]})
    return [int(i) for i in added]


def warmup_dir(plain: dict, state, added: list[int], unc_name: str, al_root: Path) -> Path:
    """Where the shared round-0 model of this seed, warm-up set and training setup lives (``al/_warmup/<key>``)."""
    dataset = {k: v for k, v in plain["dataset"].items() if k != "root"}     # not the location: outputs may move
    key = json.dumps({"dataset": dataset, "model": plain["model"], "uncertainty": unc_name,
                      "trainer": plain["trainer"], "input": plain["input"], "postprocess": plain["postprocess"],
                      "eval_split": plain["al"]["eval_split"], "seed": state.seed, "ids": sorted(added)},
                     sort_keys=True, default=str)
    return al_root / "_warmup" / hashlib.sha256(key.encode()).hexdigest()[:16]


def train_round(k, labeled, plain, state, strategy, al_dir, pool_manifest, eval_manifest, unc_cfg, log_fn):
    """Train round ``k``'s model on ``labeled`` ids; returns its final mAP metrics."""
    from ..model.training import train_from_manifests
    from .train import _configs

    detector_cfg, trainer_cfg, input_cfg, post_cfg = _configs({**plain, "uncertainty": unc_cfg},
                                                               len(pool_manifest.class_names))
    trainer_cfg = dataclasses.replace(trainer_cfg, resume=True)      # an interrupted round continues its epochs
    train_dir = al_dir / f"round_{k}" / "train"
    init = al_dir / f"round_{k - 1}" / "train" if (k > 0 and plain["al"]["warm_start"]) else None
    if init is not None and plain["al"].get("warm_start_epochs") is not None:
        trainer_cfg = dataclasses.replace(trainer_cfg, epochs=int(plain["al"]["warm_start_epochs"]))
    result = train_from_manifests(detector_cfg, trainer_cfg, input_cfg, pool_manifest, train_dir,
                                  val_manifest=eval_manifest, postprocess_cfg=post_cfg, train_ids=labeled,
                                  log_fn=log_fn, init_from=init, seed=int(state.seed) + k,
                                  extra_config={"run_name": f"round_{k}", "al_round": k, "strategy": strategy.name})
    return result.final_metrics


def curve(state) -> tuple[list[dict], dict]:
    """Rows ``{round, labeled, fraction, map/AP50, map/AP}`` and the areas under the curves (trapezoid over the
    labeled fraction, divided by the fraction range: the mean mAP over the covered budget)."""
    rows = []
    for r in state.rounds:
        rows.append({"round": r["round"], "labeled": r["labeled"], "fraction": r["labeled"] / len(state.pool),
                     **{k: r["metrics"].get(k, float("nan")) for k in CURVE_KEYS}})
    areas = {}
    if len(rows) >= 2:
        f = np.array([row["fraction"] for row in rows])
        for key in CURVE_KEYS:
            v = np.array([row[key] for row in rows], dtype=np.float64)
            areas[f"auc/{key.split('/')[1]}"] = float(np.trapezoid(v, f) / (f[-1] - f[0]))
    return rows, areas


def curve_figure(rows: list[dict], areas: dict, title: str):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    f = [100 * r["fraction"] for r in rows]
    for key in CURVE_KEYS:
        label = f"{key} (area {areas.get('auc/' + key.split('/')[1], float('nan')):.3f})"
        ax.plot(f, [r[key] for r in rows], marker="o", label=label)
    ax.set_xlabel("labeled share of the pool (%)")
    ax.set_ylabel("COCO mAP on the eval split")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def run(plain: dict, tracker, cli: list[str]) -> dict:
    """The AL loop on a resolved config; returns the areas under the curve and the last round's metrics."""
    import pandas as pd

    from ..active_learning import strategy_from_config
    from ..active_learning.state import LoopState, check_resume, load_state, save_state
    from ..data.catalog import dataset_spec_from_config, load_split
    from ..io_utils import atomic_path, atomic_write_json
    from ..tracking import start_stage_run
    from ..workspace import run_workspace

    strategy = strategy_from_config(plain["strategy"])
    al = plain["al"]
    spec = dataset_spec_from_config(plain["dataset"])
    ws = run_workspace(plain["paths"]["runs_dir"], plain["run_name"])
    al_dir = ws.al(strategy.name)
    pool_manifest = load_split(spec, str(al["pool_split"]))
    eval_manifest = load_split(spec, str(al["eval_split"]))
    unc_name, unc_cfg = training_uncertainty(strategy, plain)
    state_path = al_dir / "state.json"
    state = load_state(state_path)
    if state is None:
        pool, sizes, pruning = plan_pool(strategy, pool_manifest, list(al["budget"]), int(plain["seed"]),
                                         ws.root / "al" / "_hash_cache")
        state = LoopState(strategy.to_dict(), int(plain["seed"]), pool, sizes, [], pruning,
                          [float(b) for b in al["budget"]])
        save_state(state, state_path)
    else:
        check_resume(state, strategy.to_dict(), int(plain["seed"]), list(al["budget"]), state_path)
        log.info("resuming %s at round %d of %d", state_path, state.next_round, len(state.sizes))
    limit = len(state.sizes) if al.get("rounds") is None else min(int(al["rounds"]), len(state.sizes))
    tracker.log_params({"al/strategy_fields": json.dumps(strategy.to_dict(), sort_keys=True)[:500],
                        "al/round_sizes": str(state.sizes)[:500]})
    for k in range(state.next_round, limit):
        round_name = f"round_{k}"
        with start_stage_run({**plain, "run_name": f"{plain['run_name']}/{strategy.name}/{round_name}"}, "al_round",
                             parent_run_id=getattr(tracker, "run_id", None),
                             run_name=f"al_round:{strategy.name}:{k}") as rtracker:
            parent = getattr(rtracker, "run_id", None)
            added = select_round(k, state, strategy, plain, al_dir, pool_manifest, cli, unc_name, parent)
            labeled = state.labeled() + added
            shared = warmup_dir(plain, state, added, unc_name, ws.root / "al") if (k == 0 and al["share_warmup"]) \
                else None
            train_dir = al_dir / round_name / "train"
            reuse = shared is not None and (shared / "metrics.json").exists()
            if reuse and not (train_dir / "final.weights.h5").exists():
                log.info("round 0: reusing the shared warm-up model %s", shared)
                if train_dir.exists():
                    shutil.rmtree(train_dir)
                shutil.copytree(shared / "train", train_dir)
                metrics = json.loads((shared / "metrics.json").read_text())
            else:
                metrics = train_round(k, labeled, plain, state, strategy, al_dir, pool_manifest, eval_manifest,
                                      unc_cfg, lambda m, step: rtracker.log_metrics(m, step=step))
                if shared is not None and not (shared / "metrics.json").exists():
                    tmp = shared.with_name(shared.name + ".tmp")
                    shutil.rmtree(tmp, ignore_errors=True)
                    shutil.copytree(train_dir, tmp / "train")
                    atomic_write_json(tmp / "metrics.json", metrics)
                    shutil.rmtree(shared, ignore_errors=True)
                    tmp.rename(shared)
            percent = int(round(100 * len(labeled) / len(state.pool)))
            summary = {"round": k, "added": added, "labeled": len(labeled), "percent": percent,
                       "metrics": {key: float(v) for key, v in metrics.items() if isinstance(v, (int, float))}}
            atomic_write_json(al_dir / round_name / "metrics.json", summary)
            state.rounds.append(summary)
            save_state(state, state_path)
            finite = {key: v for key, v in summary["metrics"].items() if math.isfinite(v)}
            rtracker.log_metrics({"labeled_images": len(labeled), "labeled_fraction": len(labeled) / len(state.pool),
                                  **finite})
            tracker.log_metrics({"labeled_images": len(labeled), **finite}, step=percent)
            log.info("%s round %d: %d labeled (%d %%), mAP@0.5 %.4f", strategy.name, k, len(labeled), percent,
                     metrics.get("map/AP50", float("nan")))
    rows, areas = curve(state)
    if rows:
        with atomic_path(al_dir / "curve.csv") as p:
            pd.DataFrame(rows).to_csv(p, index=False)
        fig = curve_figure(rows, areas, f"{plain['run_name']}: {strategy.name}, seed {state.seed}")
        with atomic_path(al_dir / "curve.png") as p:
            fig.savefig(p, dpi=110, format="png")
        tracker.log_artifact(al_dir / "curve.csv", "al")
        tracker.log_artifact(al_dir / "curve.png", "al")
        tracker.log_artifact(state_path, "al")
    tracker.log_metrics({**areas, "rounds_done": len(state.rounds)})
    log.info("%s: %d of %d rounds done%s -> %s", strategy.name, len(state.rounds), len(state.sizes),
             "".join(f", {k} {v:.4f}" for k, v in areas.items()), al_dir)
    return {**areas, **(rows[-1] if rows else {})}


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="al_loop")
def main(cfg: DictConfig) -> None:
    from .pipeline import cli_overrides

    with stage_run(cfg, "al_loop") as tracker:
        run(plain_config(cfg), tracker, cli_overrides())


if __name__ == "__main__":
    main()
