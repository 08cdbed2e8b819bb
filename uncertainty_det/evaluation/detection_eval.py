"""COCO-style evaluation of a detector on a manifest split (the library side of ``udet-evaluate``)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from ..io_utils import atomic_dir
from .coco_eval import coco_metrics

SUMMARY_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100")


def per_class_table(metrics: Mapping[str, float], class_names: list[str]) -> pd.DataFrame:
    """``class, AP`` rows (NaN where the split has no object of the class)."""
    return pd.DataFrame({"class": class_names, "AP": [float(metrics.get(f"AP/{c}", np.nan)) for c in class_names]})


def per_class_figure(table: pd.DataFrame, title: str):
    """A horizontal bar chart of per-class AP (matplotlib Figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 0.4 * len(table) + 1.2))
    ax.barh(table["class"], table["AP"].fillna(0.0), color="tab:blue")
    for y, value in enumerate(table["AP"]):
        ax.text(min(float(np.nan_to_num(value)) + 0.01, 0.92), y, "n/a" if np.isnan(value) else f"{value:.3f}",
                va="center")
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_xlabel("COCO AP (IoU 0.50:0.95)")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def evaluate_detections(gt_coco: dict, detections: pd.DataFrame, class_names: list[str], out_dir: str | Path,
                        title: str = "") -> dict:
    """COCO metrics of a Detections table against a manifest's COCO dict; writes the results folder atomically.

    Returns the metrics dict (``AP``, ``AP50``, ..., ``AP/<class>``).
    """
    metrics = coco_metrics(gt_coco, detections, class_names)
    table = per_class_table(metrics, class_names)
    with atomic_dir(out_dir) as tmp:
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True, default=float) + "\n")
        table.to_csv(tmp / "per_class_ap.csv", index=False)
        fig = per_class_figure(table, title)
        fig.savefig(tmp / "per_class_ap.png", dpi=120)
        import matplotlib.pyplot as plt

        plt.close(fig)
    return metrics
