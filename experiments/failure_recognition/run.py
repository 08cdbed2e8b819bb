"""Failure recognition on the synthetic val split and auto-labeling on the test split (issue 5 targets).

    python experiments/failure_recognition/run.py                       # the pipeline's run under outputs/
    python experiments/failure_recognition/run.py --root /tmp/x/outputs --run-name R

Needs a run that went through the pipeline (``udet-pipeline``, or the stages by hand: calibrate on val,
``udet-validate split=val validation.matcher=greedy``, ``udet-threshold``, ``udet-autolabel``).

Steps (all on the stored predictions; no model is run):
1. The val split's Detections (the detection rows of the greedy Matches table, calibrated columns included)
   are matched again with both matchers of the library:
   * ``reference``: ``gt_centric`` matching, every row (no score floor), as in the paper;
   * ``autolabel``: ``greedy`` matching with background false positives as FDs, detections above the
     F1-optimal score floor (what ``udet-threshold`` fits by default and ``udet-autolabel`` filters by).
2. For each protocol and budget b in {0.9, 0.95, 0.99} (mode cd): FD@CD(b), CD@FD(b) and AUROC of every
   single uncertainty, of the optimised combination of calibrated entropy and relative aleatoric σ (seed 0),
   and, for reference, of the combination that also includes ``one_minus_score``.
3. The auto-labeling result on the test split is read from ``autolabel/summary.json``.
Writes ``<root>/experiments/failure_recognition/{result.json,tables.md}`` and prints the tables.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from uncertainty_det.data.manifest import Manifest  # noqa: E402
from uncertainty_det.evaluation.matching import gt_frame_from_manifest, match  # noqa: E402
from uncertainty_det.tables import read_detections  # noqa: E402
from uncertainty_det.thresholding import (  # noqa: E402
    COMBINATION, OptimiserSettings, available_measures, cd_labels, f1_score_floor, fit_threshold_model,
    measure_values, threshold_metrics,
)

PAIR = ["entropy_cal", "al_rel_cal"]
WITH_SCORE = ["entropy_cal", "al_rel_cal", "one_minus_score"]
BUDGETS = (0.9, 0.95, 0.99)


def protocols(matches, manifest) -> dict:
    """``{name: (matches table, matcher, score floor)}`` of the two protocols (module docstring)."""
    dets = matches.loc[matches["kind"] != "missed", [c for c in matches.columns if not c.startswith("gt_")
                                                      and c not in ("iou", "kind")]].reset_index(drop=True)
    gt = gt_frame_from_manifest(manifest)
    reference = match(dets, gt, "gt_centric")
    greedy = match(dets, gt, "greedy", iou_threshold=0.5)
    floor, _ = f1_score_floor(greedy)
    keep = (greedy["kind"] == "missed") | (greedy["score"] >= floor)
    return {"reference": (reference, "gt_centric", 0.0),
            "autolabel": (greedy.loc[keep].reset_index(drop=True), "greedy", floor)}


def evaluate(table, matcher: str, budget: float) -> dict:
    """Metrics of every single uncertainty and of the two combinations at one budget (mode cd)."""
    dets, cd = cd_labels(table, matcher=matcher)
    out = {"n_detections": int(cd.shape[1]), "n_fd_at_0.5": int(cd.shape[1] - cd[0].sum()),
           "n_fd_at_0.75": int(cd.shape[1] - cd[-1].sum()), "singles": {}, "combinations": {}}
    for name in available_measures(dets):
        values = measure_values(dets, name, check_finite=False)
        if np.isfinite(values).all():
            out["singles"][name] = threshold_metrics(values, cd, budget, "cd").summary()
    for label, names in (("entropy_cal+al_rel_cal", PAIR), ("entropy_cal+al_rel_cal+one_minus_score", WITH_SCORE)):
        model = fit_threshold_model(table, names, budget, "cd", matcher=matcher, settings=OptimiserSettings(seed=0))
        out["combinations"][label] = {**model.metrics[COMBINATION],
                                      "weights": dict(zip(names, np.round(model.weights, 4).tolist()))}
    return out


def _table(result: dict) -> str:
    names = list(result["singles"]) + list(result["combinations"])
    rows = ["| uncertainty | FD@CD | CD@FD | AUROC |", "|---|---|---|---|"]
    for name in names:
        m = result["singles"].get(name) or result["combinations"][name]
        extra = f" (w {m['weights']})" if "weights" in m else ""
        rows.append(f"| {name}{extra} | {m['fd_at_cd']:.3f} | {m['cd_at_fd']:.3f} | {m['auroc']:.3f} |")
    return "\n".join(rows)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="outputs", help="paths.root of the run")
    p.add_argument("--run-name", default="synthetic-tiny-mcdropout_lossatt_head")
    p.add_argument("--dataset", default="synthetic")
    args = p.parse_args(argv)
    root = Path(args.root)
    ws = root / "runs" / args.run_name
    matches, meta = read_detections(ws / "validation" / f"{args.dataset}-val" / "matches.parquet")
    manifest = Manifest.read(root / "data" / args.dataset / "annotations" / "val.json")
    result: dict = {"run_name": args.run_name, "val_matches_meta": {k: meta.get(k) for k in ("split", "matcher")}}
    lines = []
    for proto, (table, matcher, floor) in protocols(matches, manifest).items():
        result[proto] = {"matcher": matcher, "score_floor": floor}
        for b in BUDGETS:
            res = evaluate(table, matcher, b)
            result[proto][str(b)] = res
            head = (f"### {proto}: {matcher}, score >= {floor:.3f}, b = {b} (mode cd); {res['n_detections']} "
                    f"detections, {res['n_fd_at_0.5']} / {res['n_fd_at_0.75']} FDs at IoU 0.5 / 0.75")
            lines += [head, "", _table(res), ""]
            best = max(PAIR, key=lambda n: res["singles"][n]["fd_at_cd"])
            combo = res["combinations"]["entropy_cal+al_rel_cal"]["fd_at_cd"]
            result[proto][str(b)]["target"] = {
                "combination": combo, "best_single_of_pair": best, "best_single_value": res["singles"][best]["fd_at_cd"],
                "one_minus_score": res["singles"]["one_minus_score"]["fd_at_cd"],
                "best_single_overall": max(res["singles"], key=lambda n: res["singles"][n]["fd_at_cd"])}
    summary = ws / "autolabel" / "summary.json"
    if summary.is_file():
        result["autolabel_test"] = json.loads(summary.read_text())["metrics"]
        a = result["autolabel_test"]
        lines += ["### auto-labeling on the test split", "",
                  f"{a['accepted_images']} of {a['images']} images accepted ({100 * a['auto_share']:.1f} %); precision "
                  f"of accepted labels {a['accepted_precision']:.3f} vs {a['all_precision']:.3f} for every "
                  f"prediction above the floor {a['score_floor']:.3f} (recall on accepted images "
                  f"{a['accepted_recall']:.3f}, all {a['all_recall']:.3f}); slipped through: "
                  f"{a['slipped_false_labels']} false labels, {a['slipped_missed_objects']} missed objects.", ""]
    out = root / "experiments" / "failure_recognition"
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result, indent=2))
    (out / "tables.md").write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"-> {out}")


if __name__ == "__main__":
    main()
