"""Turn a (resolved) config mapping into MLflow params and tags. Pure Python, no MLflow import."""
from __future__ import annotations

import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Mapping

MAX_PARAMS_PER_BATCH = 100     # MLflow log_batch limit
MAX_PARAM_VALUE_LENGTH = 6000  # MLflow param value limit
MAX_KEY_LENGTH = 250


def flatten_config(cfg: Mapping[str, Any], prefix: str = "", skip: tuple[str, ...] = ("hydra",)) -> dict[str, str]:
    """``{"a": {"b": 1}, "c": [1, 2]}`` -> ``{"a.b": "1", "c": "[1, 2]"}`` (lists kept whole, values as strings).

    Values longer than MLflow's limit are truncated with a trailing ``...``.
    """
    out: dict[str, str] = {}
    for key, value in cfg.items():
        if not prefix and key in skip:
            continue
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            if value:
                out.update(flatten_config(value, name, skip))
            else:
                out[name[:MAX_KEY_LENGTH]] = "{}"
            continue
        text = "None" if value is None else str(value)
        if len(text) > MAX_PARAM_VALUE_LENGTH:
            text = text[: MAX_PARAM_VALUE_LENGTH - 3] + "..."
        out[name[:MAX_KEY_LENGTH]] = text
    return out


def chunked(items: Mapping[str, str], size: int = MAX_PARAMS_PER_BATCH) -> Iterator[dict[str, str]]:
    """Split a dict into dicts of at most ``size`` entries (MLflow's batch limit)."""
    keys = list(items)
    for start in range(0, len(keys), size):
        yield {k: items[k] for k in keys[start : start + size]}


@lru_cache(maxsize=1)
def git_commit(repo_dir: str | None = None) -> str:
    """The git commit of the code (``<sha>`` or ``<sha>-dirty``), or ``unknown`` outside a checkout."""
    cwd = repo_dir or str(Path(__file__).resolve().parents[2])
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        return f"{sha}-dirty" if dirty else sha
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _get(cfg: Mapping[str, Any], dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def stage_tags(cfg: Mapping[str, Any], stage: str) -> dict[str, str]:
    """The standard tags of a stage run (DESIGN §11); absent config entries are left out."""
    candidates = {
        "stage": stage,
        "run_name": _get(cfg, "run_name"),
        "dataset": _get(cfg, "dataset.name"),
        "model": _get(cfg, "model.name"),
        "uncertainty": _get(cfg, "uncertainty.name"),
        "strategy": _get(cfg, "strategy.name"),
        "seed": _get(cfg, "seed"),
        "git_commit": git_commit(),
    }
    return {k: str(v) for k, v in candidates.items() if v is not None}
