"""Read a `udet-calibrate -m calibration/box=...` sweep back from MLflow: comparison table and plot.

    python experiments/calibration_sweep/analyze.py                       # latest sweep in outputs/mlflow.db
    python experiments/calibration_sweep/analyze.py --root /tmp/x --out /tmp/x/calibration_sweep

Takes the newest `calibrate` sweep parent run (or `--parent <run id>`), collects its child runs (one per
box method) and writes `<out>/box_methods.csv`, `<out>/box_methods.md` (held-out metrics of aleatoric and
epistemic σ before/after calibration, one row per method) and `<out>/box_methods.png`.
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

METRICS = ("coverage_ece", "nll", "ence", "inside_1sigma", "sharpness")


def comparison_table(children) -> pd.DataFrame:
    """One row per child run: the box method and ``<kind>/<metric>_{before,after}`` for al and ep."""
    rows = []
    for run in children:
        row = {"box_method": run.data.params.get("box_method", "?")}
        for kind in ("al", "ep"):
            for metric in METRICS:
                for stage in ("before", "after"):
                    key = f"{kind}/{metric}_{stage}"
                    if key in run.data.metrics:
                        row[key] = run.data.metrics[key]
        rows.append(row)
    return pd.DataFrame(rows).sort_values("box_method").reset_index(drop=True)


def comparison_figure(table: pd.DataFrame):
    """Held-out coverage ECE and NLL per method, aleatoric and epistemic, uncalibrated as a dashed line."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 7))
    panels = [(k, m) for k in ("al", "ep") for m in ("coverage_ece", "nll") if f"{k}/{m}_after" in table]
    for i, (kind, metric) in enumerate(panels):
        ax = fig.add_subplot(2, 2, i + 1)
        ax.bar(table["box_method"], table[f"{kind}/{metric}_after"], color="tab:blue", label="calibrated")
        ax.axhline(table[f"{kind}/{metric}_before"].iloc[0], color="tab:red", linestyle="--", label="uncalibrated")
        ax.set_title(f"{'aleatoric' if kind == 'al' else 'epistemic'} σ: held-out {metric}")
        ax.tick_params(axis="x", rotation=30)
        ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=str(REPO / "outputs"), help="paths.root of the sweep (holds mlflow.db)")
    parser.add_argument("--parent", default=None, help="sweep parent run id (default: the newest sweep)")
    parser.add_argument("--out", default=None, help="output folder (default <root>/experiments/calibration_sweep)")
    args = parser.parse_args()
    root = Path(args.root)
    out = Path(args.out) if args.out else root / "experiments" / "calibration_sweep"
    parent, children = sweep_children(root, "calibrate", args.parent)
    table = comparison_table(children)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "box_methods.csv", index=False)
    cols = ["box_method"] + [c for c in table.columns if c.endswith("_after")]
    first = table.iloc[0]
    header = "uncalibrated: " + ", ".join(f"{c[:-6]}_before={first[c[:-6] + '_before']:.4g}" for c in cols[1:]
                                          if c[:-6] + "_before" in table)
    (out / "box_methods.md").write_text(header + "\n\n" + markdown_table(table[cols]) + "\n")
    comparison_figure(table).savefig(out / "box_methods.png", dpi=110)
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"sweep {parent}: {len(children)} methods -> {out}")


if __name__ == "__main__":
    main()
