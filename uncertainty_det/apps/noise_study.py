"""``udet-noise-study``: which pseudo-label errors hurt the student (reference §5.8, the "3d" analysis).

From a STAC round's pseudo-labels and the hidden ground truth of the unlabeled images it writes one
pseudo-label table per variant to ``<runs>/<run_name>/stac/noise/round_<k>/<variant>.parquet``:
``nomd`` (drop images that miss a GT box), ``nofd`` (drop pseudo boxes that match no GT), ``nomdfd`` (both),
``fixmd`` (add the missed GT boxes), ``highprec`` (keep boxes matched at IoU >= 0.9), ``nonoise`` (boxes matched
at IoU >= 0.75 take their GT box and class); ``report.json`` / ``report.csv`` with the quality before and after
each, ``variants.png``, and the udet-stac command that trains a student on each variant with the run's
teacher and split. Logged to MLflow.
"""
from __future__ import annotations

import logging
import math

import hydra
from omegaconf import DictConfig

from ..errors import UserError
from .common import CONFIG_DIR, plain_config, stage_run

log = logging.getLogger("uncertainty_det.noise_study")

REPORT_KEYS = ("n_pseudo", "precision", "recall", "gt_missing_pct", "extra_pct", "mean_iou", "class_accuracy")


def variants_figure(table, title: str):
    """Precision, recall and mean IoU of the original pseudo-labels and of each variant."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    names = table.index.tolist()
    width = 0.27
    for j, key in enumerate(("precision", "recall", "mean_iou")):
        ax.bar([i + (j - 1) * width for i in range(len(names))], table[key].to_numpy(), width, label=key)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylim(0.0, 1.05)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def run(plain: dict, tracker) -> dict:
    """The noise study on a resolved config; returns the per-variant reports."""
    import pandas as pd

    from ..io_utils import atomic_path, atomic_write_json
    from ..ssl.noise_study import VARIANTS, pseudo_label_variant
    from ..ssl.pseudo_gt import pseudo_label_report
    from .stac_outputs import load_stac_round

    cfg = plain["noise"]
    variants = [str(v) for v in cfg["variants"]]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise UserError(f"noise.variants={variants}: choose from {', '.join(VARIANTS)}")
    k = int(cfg["round"])
    data = load_stac_round(plain, k, str(cfg["pool_split"]))
    out = data.stac_dir / "noise" / f"round_{k}"
    rows = {"original": pseudo_label_report(data.pseudo, data.gt)}
    commands = {}
    for variant in variants:
        table = pseudo_label_variant(data.pseudo, data.gt, variant)
        path = out / f"{variant}.parquet"
        with atomic_path(path) as tmp:
            table.to_parquet(tmp, index=False)
        rows[variant] = pseudo_label_report(table, data.gt)
        rows[variant]["images"] = int(table["image_id"].nunique())
        commands[variant] = (f"udet-stac run_name={plain['run_name']}-{variant} ssl.reuse_teacher_of={plain['run_name']}"
                             f" ssl.pseudo_source={path}")
    rows["original"]["images"] = int(data.pseudo["image_id"].nunique())
    table = pd.DataFrame({name: {key: r.get(key) for key in ("images", *REPORT_KEYS)} for name, r in rows.items()}).T
    with atomic_path(out / "report.csv") as tmp:
        table.to_csv(tmp, index_label="variant")
    report = {"round": k, "variants": {name: {key: v for key, v in r.items() if key != "per_class"}
                                       for name, r in rows.items()}, "commands": commands}
    atomic_write_json(out / "report.json", report)
    fig = variants_figure(table.astype(float), f"{plain['run_name']} round {k}: pseudo-label variants vs hidden GT")
    with atomic_path(out / "variants.png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    tracker.log_params({"noise/round": k, "noise/variants": ",".join(variants)})
    tracker.log_metrics({f"{name}/{key}": float(r[key]) for name, r in rows.items() for key in REPORT_KEYS
                         if isinstance(r.get(key), (int, float)) and math.isfinite(float(r[key]))})
    for name in ("report.csv", "report.json", "variants.png"):
        tracker.log_artifact(out / name, "noise_study")
    log.info("noise study round %d:\n%s", k, table.to_string())
    print("train a student on each variant (the run's teacher and split):")
    for command in commands.values():
        print(f"  {command}")
    return report


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="noise_study")
def main(cfg: DictConfig) -> None:
    with stage_run(cfg, "noise_study") as tracker:
        run(plain_config(cfg), tracker)


if __name__ == "__main__":
    main()
