"""Semi-supervised detection side by side at 10 % labels of the synthetic pool (150 labeled, 1350 unlabeled
images): the labeled-only teacher, STAC with score and with the uncertainty-based ``combo`` selection (students
from the backbone init, the reference, and fine-tuned from the teacher, with a no-pseudo-label control), and
CSD (with a no-consistency control); mAP@0.5 on the held-out test split per seed. See README.md.

    python experiments/ssl/run.py                                   # every method, 3 seeds, then the analysis
    python experiments/ssl/run.py --seeds 0 --methods stac-score ft-score ft-control
    python experiments/ssl/run.py --analyse-only --root outputs/experiments/ssl
    python experiments/ssl/run.py -- selection.tau=0.5              # extra overrides for every run

Per seed ``s`` (run names in ``RUN_NAMES``): ``stac-score`` trains the teacher and a score-selected student
(``udet-stac run_name=ssl-s<s>``); every other STAC method copies that split and teacher
(``ssl.reuse_teacher_of``): ``stac-combo`` (pseudo-labels filtered by the teacher's fitted combo thresholds,
calibrated and fitted on the val split), ``ft-score`` / ``ft-combo`` (the student starts from the teacher,
``FINETUNE``) and ``ft-control`` (the same with ``ssl.unsup_weight=0``); ``csd`` (the class term averaged
over the kept anchors, the default), ``csd-ref`` (``csd.class_reduction=image``: summed per image, the
reference), ``csd-fine`` (``csd.levels=[3,4]``: consistency on the two finest pyramid levels only) and
``csd-nocons`` (``csd.consistency_weight=0``) use the same seeded split; ``stac-ignore`` / ``ft-ignore`` are
``stac-score`` / ``ft-score`` with ignore regions (``IGNORE``). Finished runs are skipped (the apps resume too).
The analysis reads every ``summary.json`` under ``--root`` and writes ``<root>/comparison.csv`` (one row per
seed and method: mAP@0.5, mAP, the paired gain over the teacher, pseudo-label count and precision/recall against
the hidden labels), ``comparison.md`` (mean ± std over seeds) and ``comparison.png``.
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

#: The measured setup: the tiny model; every model (teacher, students, CSD) trains 1200 optimiser steps
#: (24 x 50) of 16 images from the backbone init; no augmentation of labeled images (the STAC pseudo stream
#: keeps its strong box-aware RandAugment, CSD its flip views); mAP only at the end, on the test split.
COMMON = [
    "model=tiny", "trainer.epochs=24", "trainer.steps_per_epoch=50", "trainer.map_every=0",
    "trainer.validation_loss=false", "input.batch_size=16", "input.cache_decoded=true", "input.augment=none",
    "ssl.labeled_percent=10", "ssl.eval_split=test",
]
#: The fine-tuning recipe (``ft-*``): the student starts from the teacher's weights and trains 400 more steps
#: (8 x 50, warm-up and cosine again) on the same mixed batches; ``ft-control`` is the same student with
#: ``ssl.unsup_weight=0`` (the pseudo-labelled images pass through the network but add no loss), so the gain of
#: ``ft-score`` / ``ft-combo`` over it is the pseudo-labels', not the extra steps'.
FINETUNE = ["ssl.student_init=teacher", "ssl.student_epochs=8"]
METHODS = ("stac-score", "stac-combo", "stac-ignore", "csd", "csd-ref", "csd-fine", "csd-nocons", "ft-control",
           "ft-score", "ft-combo", "ft-ignore")
#: ``*-ignore``: score selection plus ignore regions for the unsure detections (0.1 <= score <= tau)
IGNORE = ["selection.ignore_score=0.1"]
RUN_NAMES = {"stac-score": ("ssl-s{seed}", "stac"), "stac-combo": ("ssl-combo-s{seed}", "stac"),
             "csd": ("ssl-csd-s{seed}", "csd"), "csd-ref": ("ssl-csd-ref-s{seed}", "csd"),
             "csd-fine": ("ssl-csd-fine-s{seed}", "csd"), "csd-nocons": ("ssl-csd-nocons-s{seed}", "csd"),
             "ft-control": ("ssl-ft-control-s{seed}", "stac"),
             "ft-score": ("ssl-ft-score-s{seed}", "stac"), "ft-combo": ("ssl-ft-combo-s{seed}", "stac"),
             "stac-ignore": ("ssl-ignore-s{seed}", "stac"), "ft-ignore": ("ssl-ft-ignore-s{seed}", "stac")}


#: control -> the methods measured against it
CONTROLS = {"ft-control": ("ft-score", "ft-combo", "ft-ignore"), "csd-nocons": ("csd", "csd-ref", "csd-fine")}


def commands(seed: int, method: str, root: Path, extra: list[str]) -> list[str]:
    """The command line of one run (``python -m uncertainty_det.apps.<app> ...``)."""
    base = [f"paths.root={root}", f"seed={seed}", *COMMON]
    if method == "stac-score":
        args = ["stac", f"run_name=ssl-s{seed}", "selection.strategy=score"]
    elif method == "stac-combo":
        args = ["stac", f"run_name=ssl-combo-s{seed}", f"ssl.reuse_teacher_of=ssl-s{seed}",
                "selection.strategy=combo"]
    elif method == "stac-ignore":
        args = ["stac", f"run_name=ssl-ignore-s{seed}", f"ssl.reuse_teacher_of=ssl-s{seed}",
                "selection.strategy=score", *IGNORE]
    elif method == "csd":
        args = ["csd", f"run_name=ssl-csd-s{seed}"]
    elif method == "csd-ref":                 # the reference's class term: summed over the kept anchors per image
        args = ["csd", f"run_name=ssl-csd-ref-s{seed}", "csd.class_reduction=image"]
    elif method == "csd-fine":                # consistency on the two finest levels (the coarse ones do not mirror)
        args = ["csd", f"run_name=ssl-csd-fine-s{seed}", "csd.levels=[3,4]"]
    elif method == "csd-nocons":              # CSD's batches and schedule without the consistency loss (control)
        args = ["csd", f"run_name=ssl-csd-nocons-s{seed}", "csd.consistency_weight=0"]
    elif method.startswith("ft-"):
        # the combo student reuses the teacher copy that already holds its calibration and thresholds
        source = f"ssl-combo-s{seed}" if method == "ft-combo" and _summary(root, seed, "stac-combo") else f"ssl-s{seed}"
        args = ["stac", f"run_name={RUN_NAMES[method][0].format(seed=seed)}", f"ssl.reuse_teacher_of={source}",
                *FINETUNE, "selection.strategy=" + ("combo" if method == "ft-combo" else "score")]
        if method == "ft-control":
            args.append("ssl.unsup_weight=0")
        if method == "ft-ignore":
            args.extend(IGNORE)
    else:
        raise SystemExit(f"unknown method {method!r}: choose from {', '.join(METHODS)}")
    return [sys.executable, "-m", f"uncertainty_det.apps.{args[0]}", *base, *args[1:], *extra]


def run_all(root: Path, seeds, methods, extra: list[str]) -> None:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
    for seed in seeds:
        for method in methods:
            reuses = method in ("stac-combo", "stac-ignore") or method.startswith("ft-")
            if reuses and not _summary(root, seed, "stac-score") and "stac-score" not in methods:
                raise SystemExit(f"{method} reuses the stac-score run's teacher: run stac-score first")
            if _summary(root, seed, method):
                print(f"[seed {seed}] {method}: done already", flush=True)
                continue
            cmd = commands(seed, method, root, extra)
            print(f"[seed {seed}] {method}: {' '.join(cmd[2:])}", flush=True)
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                print(proc.stdout[-2000:], proc.stderr[-4000:])
                raise SystemExit(f"{method} failed for seed {seed}")
            print(f"[seed {seed}] {method}: {time.perf_counter() - t0:.0f} s", flush=True)


def _summary(root: Path, seed: int, method: str) -> dict | None:
    name, stage = RUN_NAMES[method]
    path = root / "runs" / name.format(seed=seed) / stage / "summary.json"
    return json.loads(path.read_text()) if path.exists() else None


def collect(root: Path, seeds) -> pd.DataFrame:
    """One row per (seed, method) with a finished summary; the teacher is a method of its own."""
    rows = []
    for seed in seeds:
        for method in METHODS:
            s = _summary(root, seed, method)
            if s is None:
                continue
            if method.startswith("csd"):
                rows.append({"seed": seed, "method": method, "AP50": s["model"].get("map/AP50"),
                             "AP": s["model"].get("map/AP")})
                continue
            if method == "stac-score":
                rows.append({"seed": seed, "method": "teacher (labeled only)", "AP50": s["teacher"].get("map/AP50"),
                             "AP": s["teacher"].get("map/AP")})
            last = s["rounds"][-1]
            q = {} if method == "ft-control" else last["pseudo"]       # the control trains on no pseudo-label
            rows.append({"seed": seed, "method": method, "AP50": last["student"].get("map/AP50"),
                         "AP": last["student"].get("map/AP"), "pseudo_boxes": q.get("pseudo_boxes"),
                         "pseudo_images": q.get("pseudo_images"), "pseudo_precision": q.get("precision"),
                         "pseudo_recall": q.get("recall"), "ignore_regions": q.get("ignore_regions")})
    return pd.DataFrame(rows)


def analyse(root: Path, seeds) -> pd.DataFrame:
    table = collect(root, seeds)
    if table.empty:
        raise SystemExit(f"no finished run under {root}/runs/ssl-*; run the experiment first")
    teacher = table[table["method"] == "teacher (labeled only)"].set_index("seed")["AP50"]
    table["gain_AP50"] = table["AP50"].to_numpy() - teacher.reindex(table["seed"]).to_numpy()
    # the paired gain over the method's control (same batches and steps without the pseudo-label / consistency term)
    table["gain_vs_control_AP50"] = np.nan
    for control, methods in CONTROLS.items():
        ref = table[table["method"] == control].set_index("seed")["AP50"]
        rows = table["method"].isin(methods)
        table.loc[rows, "gain_vs_control_AP50"] = (table.loc[rows, "AP50"].to_numpy()
                                                   - ref.reindex(table.loc[rows, "seed"]).to_numpy())
    table.to_csv(root / "comparison.csv", index=False)
    cols = [c for c in ("AP50", "AP", "gain_AP50", "gain_vs_control_AP50", "pseudo_boxes", "pseudo_precision",
                        "pseudo_recall", "ignore_regions")
            if c in table.columns]
    order = ["teacher (labeled only)", *METHODS]
    lines = ["| method | seeds | " + " | ".join(cols) + " | AP50 per seed |", "|---|---|" + "---|" * (len(cols) + 1)]
    for method in [m for m in order if m in set(table["method"])]:
        g = table[table["method"] == method].sort_values("seed")
        cells = []
        for c in cols:
            v = g[c].to_numpy(dtype=np.float64)
            if np.all(np.isnan(v)):
                cells.append("")
                continue
            spread = np.nanstd(v, ddof=1) if np.isfinite(v).sum() > 1 else 0.0
            cells.append(f"{np.nanmean(v):.4f} ± {spread:.4f}")
        per_seed = " / ".join(f"{v:.3f}" for v in g["AP50"])
        lines.append(f"| {method} | {len(g)} | " + " | ".join(cells) + f" | {per_seed} |")
    (root / "comparison.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    methods = [m for m in order if m in set(table["method"])]
    for i, method in enumerate(methods):
        g = table[table["method"] == method]
        ax.scatter(np.full(len(g), i) + 0.06 * (g["seed"].to_numpy() - 1), g["AP50"], alpha=0.7)
        ax.hlines(g["AP50"].mean(), i - 0.25, i + 0.25, color="k")
    ax.set_xticks(range(len(methods)), [m.replace(" (labeled only)", "") for m in methods], rotation=30, ha="right")
    ax.set_ylabel("mAP@0.5 on test (dots: seeds; bar: mean)")
    ax.set_title("10 % labels, tiny model")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(root / "comparison.png", dpi=110)
    print(f"-> {root}/comparison.{{csv,md,png}}")
    return table


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=str(REPO / "outputs" / "experiments" / "ssl"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--analyse-only", action="store_true")
    args = p.parse_args(argv)
    root = Path(args.root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    if not args.analyse_only:
        run_all(root, args.seeds, args.methods, extra)
    analyse(root, args.seeds)


if __name__ == "__main__":
    main()
