"""``udet-pls``: the pseudo-label sorting score of a STAC round (reference §5.7).

Reads ``<runs>/<run_name>/stac/pseudo_<k>/`` (the teacher's raw detections and the selected pseudo-labels) and
the hidden ground truth of the unlabeled images; writes ``<runs>/<run_name>/stac/pls/round_<k>/``:
``scores.csv`` (per pseudo-labelled image S, C, D, mean raw score, raw count, missed-GT rate), ``roc.csv``
(AUROC of each score against ``missed rate > thr``), ``pseudo_{top,bottom,random}.parquet`` (pseudo-label
tables of the subsets: ``udet-stac ssl.pseudo_source=<file> ssl.reuse_teacher_of=<run>`` trains a student on
one), ``subsets.json`` (per subset: images, boxes, mean missed rate, quality against the GT) and
``pls.png`` (score histograms and the AUROCs). Everything is logged to MLflow.
"""
from __future__ import annotations

import logging
import math

import hydra
import numpy as np
from omegaconf import DictConfig

from ..errors import UserError
from .common import CONFIG_DIR, plain_config, stage_run

log = logging.getLogger("uncertainty_det.pls")


def pls_figure(scores, roc, title: str):
    """Histograms of S and D over the pseudo-labelled images and the AUROC of each score per MD threshold."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12.0, 3.8))
    for i, key in enumerate(("S", "D")):
        ax = fig.add_subplot(1, 3, i + 1)
        ax.hist(scores[key].to_numpy(), bins=20, range=(0.0, 1.0), color="tab:blue", alpha=0.8)
        ax.set_xlabel(key)
        ax.set_ylabel("images")
        ax.grid(alpha=0.3)
    ax = fig.add_subplot(1, 3, 3)
    for key in ("S", "C", "D", "mean_score", "n_raw"):
        ax.plot(roc.index.to_numpy(), roc[key].to_numpy(), marker="o", label=key)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("missed-GT rate threshold")
    ax.set_ylabel("AUROC")
    ax.set_ylim(0.0, 1.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def run(plain: dict, tracker) -> dict:
    """PLS on a resolved config; returns the summary written to ``subsets.json``."""
    from ..io_utils import atomic_path, atomic_write_json
    from ..ssl.pls import pls_roc, pls_scores, pls_subsets
    from ..ssl.pseudo_gt import per_image_missed_rate, pseudo_label_report
    from .stac_outputs import load_stac_round

    cfg = plain["pls"]
    k = int(cfg["round"])
    data = load_stac_round(plain, k, str(cfg["pool_split"]))
    tau = cfg.get("tau")
    if tau is None:
        if "tau" not in data.selection:
            raise UserError(f"{data.folder} has no selection.json to take tau from; set pls.tau")
        tau = data.selection["tau"]
    raw = data.raw[data.raw["score"] >= float(data.selection.get("min_score", 0.0))]
    scores = pls_scores(raw, data.pseudo, float(tau), float(cfg["beta"]))
    iou = float(cfg["iou_threshold"])
    pseudo_images = scores.index.to_numpy()
    gt = data.gt[data.gt["image_id"].isin(set(pseudo_images.tolist()))]
    missed = per_image_missed_rate(data.pseudo, gt, iou)
    scores["missed_rate"] = missed.reindex(scores.index)
    roc = pls_roc(scores, missed, [float(t) for t in cfg["md_thresholds"]])
    subsets = pls_subsets(scores, float(cfg["top_fraction"]), int(plain["seed"]))
    out = data.stac_dir / "pls" / f"round_{k}"
    summary: dict = {"round": k, "tau": float(tau), "beta": float(cfg["beta"]),
                     "top_fraction": float(cfg["top_fraction"]), "images": int(len(scores)), "subsets": {}}
    for name, ids in subsets.items():
        keep = set(np.asarray(ids).tolist())
        pseudo = data.pseudo[data.pseudo["image_id"].isin(keep)].reset_index(drop=True)
        with atomic_path(out / f"pseudo_{name}.parquet") as tmp:
            pseudo.to_parquet(tmp, index=False)
        report = pseudo_label_report(pseudo, gt[gt["image_id"].isin(keep)], iou)
        summary["subsets"][name] = {
            "images": len(keep), "pseudo_boxes": int(len(pseudo)),
            "mean_missed_rate": float(scores.loc[sorted(keep), "missed_rate"].mean()),
            **{key: v for key, v in report.items() if isinstance(v, (int, float))}}
    with atomic_path(out / "scores.csv") as tmp:
        scores.to_csv(tmp, index_label="image_id")
    with atomic_path(out / "roc.csv") as tmp:
        roc.to_csv(tmp, index_label="threshold")
    summary["auroc"] = {f"{key}@{thr:g}": float(roc.loc[thr, key]) for thr in roc.index
                        for key in ("S", "C", "D", "mean_score", "n_raw")}
    atomic_write_json(out / "subsets.json", summary)
    fig = pls_figure(scores, roc, f"{plain['run_name']} round {k}: PLS (beta {cfg['beta']}, tau {tau})")
    with atomic_path(out / "pls.png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    tracker.log_params({"pls/round": k, "pls/beta": float(cfg["beta"]), "pls/tau": float(tau),
                        "pls/top_fraction": float(cfg["top_fraction"])})
    metrics = {f"auroc/{key}": v for key, v in summary["auroc"].items()}
    for name, stats in summary["subsets"].items():
        metrics.update({f"{name}/{key}": float(stats[key]) for key in
                        ("images", "pseudo_boxes", "mean_missed_rate", "precision", "recall")})
    tracker.log_metrics({key.replace("@", "_md"): v for key, v in metrics.items() if math.isfinite(v)})
    for name in ("scores.csv", "roc.csv", "subsets.json", "pls.png"):
        tracker.log_artifact(out / name, "pls")
    top, bottom = summary["subsets"]["top"], summary["subsets"]["bottom"]
    log.info("PLS round %d: %d images; top %d (missed rate %.3f, precision %.3f) vs bottom %d (%.3f, %.3f); "
             "AUROC of D at md>0: %.3f -> %s", k, len(scores), top["images"], top["mean_missed_rate"],
             top["precision"], bottom["images"], bottom["mean_missed_rate"], bottom["precision"],
             roc.loc[roc.index[0], "D"], out)
    print(f"train a student on a subset: udet-stac run_name={plain['run_name']}-pls-top "
          f"ssl.reuse_teacher_of={plain['run_name']} ssl.pseudo_source={out / 'pseudo_top.parquet'}")
    return summary


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="pls")
def main(cfg: DictConfig) -> None:
    with stage_run(cfg, "pls") as tracker:
        run(plain_config(cfg), tracker)


if __name__ == "__main__":
    main()
