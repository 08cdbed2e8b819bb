"""Read the child runs of a Hydra multirun back from MLflow (shared by the experiments' analysis scripts)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd


def sweep_children(root: Path, experiment: str, parent: str | None = None) -> tuple[str, list]:
    """(parent run id, finished child runs) of the newest sweep of ``experiment`` (or of ``parent``) in
    ``root/mlflow.db``; exits with a message naming the command to run when there is none."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"no {experiment} runs in {root / 'mlflow.db'}: run the sweep first (see README.md)")
    if parent is None:
        parents = client.search_runs([exp.experiment_id], "tags.sweep = 'true'",
                                     order_by=["attributes.start_time DESC"], max_results=1)
        if not parents:
            raise SystemExit(f"no {experiment} sweep found in {root / 'mlflow.db'}: run the sweep first (README.md)")
        parent = parents[0].info.run_id
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent}'", max_results=1000)
    children = [r for r in children if r.info.status == "FINISHED"]
    if not children:
        raise SystemExit(f"sweep {parent} has no finished child runs")
    return parent, children


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub markdown table (floats with 4 significant decimals)."""
    cell = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)
