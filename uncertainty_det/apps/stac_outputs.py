"""Reading a finished STAC pseudo-label round (``<runs>/<run_name>/stac/pseudo_<k>/``) for the pseudo-label
studies (``udet-pls``, ``udet-noise-study``)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..errors import UserError


@dataclass
class StacRound:
    """One round's inputs: ``raw`` (the teacher's Detections table of the unlabeled images), ``pseudo`` (the
    selected pseudo-labels), ``gt`` (the hidden ground truth of the unlabeled images), ``selection`` (the
    stored selection settings), ``stac_dir``, ``folder`` (``pseudo_<k>``)."""

    raw: pd.DataFrame
    pseudo: pd.DataFrame
    gt: pd.DataFrame
    selection: dict
    stac_dir: Path
    folder: Path


def load_stac_round(plain: dict, k: int, pool_split: str = "train") -> StacRound:
    """The outputs of round ``k`` of the STAC run ``plain["run_name"]``; a missing one is an error naming the
    udet-stac command that makes it."""
    from ..data.catalog import dataset_spec_from_config, load_split
    from ..evaluation.matching import gt_frame_from_manifest
    from ..tables import read_detections
    from ..workspace import require_upstream, run_workspace

    stac_dir = run_workspace(plain["paths"]["runs_dir"], plain["run_name"]).root / "stac"
    folder = stac_dir / f"pseudo_{int(k)}"
    command = f"udet-stac run_name={plain['run_name']}" + (f" ssl.selftrain_rounds={k}" if k else "")
    pseudo_path = require_upstream(folder / "pseudo_labels.parquet", "stac", command, "STAC pseudo-labels")
    raw_path = folder / "teacher_predictions.parquet"
    if not raw_path.exists():
        raise UserError(f"{folder} has pseudo-labels from a file (ssl.pseudo_source) but no teacher predictions; "
                        f"point run_name at a STAC run whose teacher made the pseudo-labels")
    raw, _ = read_detections(raw_path)
    split = json.loads(require_upstream(stac_dir / "split.json", "stac", command).read_text())
    pool = load_split(dataset_spec_from_config(plain["dataset"]), pool_split)
    gt = gt_frame_from_manifest(pool.subset([int(i) for i in split["unlabeled"]]))
    selection_path = folder / "selection.json"
    selection = json.loads(selection_path.read_text()) if selection_path.exists() else {}
    return StacRound(raw, pd.read_parquet(pseudo_path), gt, selection, stac_dir, folder)
