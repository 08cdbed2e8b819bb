"""Active-learning strategies side by side: mAP after each round and the area under the mAP-vs-labels curve.

    python experiments/active_learning/run.py                                  # run the loops, then analyse
    python experiments/active_learning/run.py --seeds 0 1 2 --strategies random entropy combo --rounds 4
    python experiments/active_learning/run.py --analyse-only --root outputs/experiments/active_learning
    python experiments/active_learning/run.py -- trainer.epochs=10             # extra udet-al-loop overrides

Each (seed, strategy) is one ``udet-al-loop`` run (``run_name=al-s<seed>``, so the strategies of a seed share
the random warm-up round) with the overrides in ``OVERRIDES``; a loop that already finished its rounds is
skipped (the loop resumes by itself). The analysis reads every ``al/<strategy>/state.json`` under
``--root`` and writes ``<root>/comparison.csv`` (per seed and strategy: mAP@0.5 and mAP per round, the area
under the mAP@0.5 curve over the first ``--rounds`` rounds), ``comparison.md`` (the mean over seeds) and
``comparison.png`` (mean mAP@0.5 vs labeled share per strategy, min-max over seeds shaded).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[2]

#: The measured setup: the tiny model; round 0 (the shared random warm-up) trains 1200 optimiser steps from the
#: backbone init, every later round fine-tunes the previous round's model for 500 steps (warm start: a round's
#: model is comparable across strategies of a seed, which all start from the same warm-up weights); no
#: augmentation, detections >= 0.1 scored. (The first recipe, 320 steps per round from scratch, measured
#: under-training: mAP fell as labels were added; see the README.)
OVERRIDES = [
    "model=tiny", "trainer.epochs=24", "trainer.steps_per_epoch=50", "al.warm_start=true", "al.warm_start_epochs=10",
    "trainer.map_every=0", "trainer.validation_loss=false", "input.batch_size=16", "input.cache_decoded=true",
    "input.augment=none", "al.score_floor=0.1",
]


def run_loops(root: Path, seeds, strategies, rounds: int, extra: list[str]) -> None:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
    for seed in seeds:
        for strategy in strategies:
            cmd = [sys.executable, "-m", "uncertainty_det.apps.al_loop", f"paths.root={root}", f"seed={seed}",
                   f"run_name=al-s{seed}", f"strategy={strategy}", f"al.rounds={rounds}", *OVERRIDES, *extra]
            t0 = time.perf_counter()
            print(f"[seed {seed}] {strategy}: {' '.join(cmd[3:])}", flush=True)
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                print(proc.stdout[-2000:], proc.stderr[-4000:])
                raise SystemExit(f"udet-al-loop failed for seed {seed}, strategy {strategy}")
            print(f"[seed {seed}] {strategy}: {time.perf_counter() - t0:.0f} s", flush=True)


def collect(root: Path, rounds: int) -> pd.DataFrame:
    """One row per (seed, strategy, round) of every state.json under ``root``."""
    rows = []
    for path in sorted(root.glob("runs/al-s*/al/*/state.json")):
        state = json.loads(path.read_text())
        seed, strategy = int(state["seed"]), path.parent.name
        for r in state["rounds"][:rounds]:
            rows.append({"seed": seed, "strategy": strategy, "round": r["round"], "labeled": r["labeled"],
                         "fraction": r["labeled"] / len(state["pool"]), "AP50": r["metrics"].get("map/AP50"),
                         "AP": r["metrics"].get("map/AP")})
    return pd.DataFrame(rows)


def area(frame: pd.DataFrame, key: str = "AP50") -> float:
    """Trapezoid area under ``key`` vs labeled fraction, divided by the fraction range (mean mAP)."""
    f = frame["fraction"].to_numpy()
    v = frame[key].to_numpy(dtype=np.float64)
    return float(np.trapezoid(v, f) / (f[-1] - f[0])) if len(f) >= 2 else float("nan")


def analyse(root: Path, rounds: int) -> pd.DataFrame:
    data = collect(root, rounds)
    if data.empty:
        raise SystemExit(f"no finished AL rounds under {root}/runs/al-s*/al/; run the loops first")
    per_run = []
    for (seed, strategy), g in data.groupby(["seed", "strategy"]):
        g = g.sort_values("round")
        row = {"seed": seed, "strategy": strategy, "rounds": len(g), f"area_AP50_{rounds}r": area(g)}
        row.update({f"AP50_r{int(r)}": v for r, v in zip(g["round"], g["AP50"])})
        row.update({f"AP_r{int(r)}": v for r, v in zip(g["round"], g["AP"])})
        per_run.append(row)
    table = pd.DataFrame(per_run)
    table.to_csv(root / "comparison.csv", index=False)
    cols = [c for c in table.columns if c.startswith(("AP50_r", "area"))]
    mean = table.groupby("strategy")[cols].agg(["mean", "std"])
    lines = [f"| strategy | seeds | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for strategy, row in mean.iterrows():
        n = int((table["strategy"] == strategy).sum())
        cells = [f"{row[(c, 'mean')]:.4f} ± {np.nan_to_num(row[(c, 'std')]):.4f}" for c in cols]
        lines.append(f"| {strategy} | {n} | " + " | ".join(cells) + " |")
    (root / "comparison.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    for strategy, g in data.groupby("strategy"):
        by_round = g.groupby("round").agg(f=("fraction", "mean"), m=("AP50", "mean"), lo=("AP50", "min"),
                                          hi=("AP50", "max"))
        ax.plot(100 * by_round["f"], by_round["m"], marker="o", label=strategy)
        ax.fill_between(100 * by_round["f"], by_round["lo"], by_round["hi"], alpha=0.15)
    ax.set_xlabel("labeled share of the pool (%)")
    ax.set_ylabel("mAP@0.5 on val (mean over seeds)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(root / "comparison.png", dpi=110)
    print(f"-> {root}/comparison.{{csv,md,png}}")
    return table


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=str(REPO / "outputs" / "experiments" / "active_learning"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--strategies", nargs="+", default=["random", "entropy"])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--analyse-only", action="store_true")
    args = p.parse_args(argv)
    root = Path(args.root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    if not args.analyse_only:
        run_loops(root, args.seeds, args.strategies, args.rounds, extra)
    analyse(root, args.rounds)


if __name__ == "__main__":
    main()
