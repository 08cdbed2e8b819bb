"""Read a `udet-validate -m decoding=...` sweep back from MLflow: one row per decoding method.

    python experiments/decoding/analyze.py                          # newest validate sweep in outputs/mlflow.db
    python experiments/decoding/analyze.py --root /tmp/x --parent <sweep run id>

Writes `<out>/decoding.csv` and `<out>/decoding.md` (default out: `<root>/experiments/decoding`): localisation
quality (mAP@0.5, mIoU, RMSE px), aleatoric σ calibration on the matched detections (coverage ECE, NLL,
share inside ±σ, Spearman σ vs |residual|) and the decoding cost per image.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "experiments"))

from sweep_runs import markdown_table, sweep_children  # noqa: E402

COLUMNS = {
    "coco/AP50": "mAP@0.5", "coco/AP": "mAP", "quality/miou": "mIoU", "quality/rmse_px": "RMSE px",
    "calibration/al/coverage_ece": "al coverage ECE", "calibration/al/nll": "al NLL",
    "calibration/al/inside_1sigma": "al inside ±σ", "uncertainty/al/spearman": "al Spearman",
    "calibration/al_cal/coverage_ece": "al coverage ECE (cal)", "runtime/decoding_ms_per_image": "decoding ms/img",
    "runtime/mean_ms": "total ms/img",
}


def decoding_table(children) -> pd.DataFrame:
    """One row per child run: its decoding method and the :data:`COLUMNS` metrics it logged."""
    rows = []
    for run in children:
        row = {"decoding": run.data.params.get("validate/decoding", "?")}
        row.update({label: run.data.metrics.get(key, float("nan")) for key, label in COLUMNS.items()})
        rows.append(row)
    return pd.DataFrame(rows).sort_values("decoding").reset_index(drop=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=str(REPO / "outputs"), help="paths.root of the sweep (holds mlflow.db)")
    parser.add_argument("--parent", default=None, help="sweep parent run id (default: the newest validate sweep)")
    parser.add_argument("--out", default=None, help="output folder (default <root>/experiments/decoding)")
    args = parser.parse_args()
    root = Path(args.root)
    out = Path(args.out) if args.out else root / "experiments" / "decoding"
    parent, children = sweep_children(root, "validate", args.parent)
    table = decoding_table(children)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "decoding.csv", index=False)
    (out / "decoding.md").write_text(markdown_table(table) + "\n")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"sweep {parent}: {len(children)} methods -> {out}")


if __name__ == "__main__":
    main()
