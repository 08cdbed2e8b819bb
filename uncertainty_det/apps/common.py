"""Shared plumbing of the stage apps: config location, error reporting, the tracked run of a stage."""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Iterator

from omegaconf import DictConfig, OmegaConf

from ..errors import UserError
from ..tracking import start_stage_run
from ..tracking.hydra_callback import sweep_parent_run_id

log = logging.getLogger("uncertainty_det")

#: The Hydra config tree (``conf/`` at the repository root); UDET_CONFIG_DIR overrides it.
CONFIG_DIR = os.environ.get("UDET_CONFIG_DIR", str(Path(__file__).resolve().parents[2] / "conf"))


def plain_config(cfg: DictConfig) -> dict:
    """The resolved config as plain dicts/lists (what library functions and MLflow receive)."""
    return OmegaConf.to_container(cfg, resolve=True)


def _multirun_parent() -> tuple[str | None, str | None]:
    """(parent run id, job label) when running as a job of a Hydra multirun."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None, None
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return None, None
    return sweep_parent_run_id(hc.sweep.dir), f"job{hc.job.num}"


@contextlib.contextmanager
def stage_run(cfg: DictConfig, stage: str) -> Iterator:
    """Open the stage's tracked run (nested under the sweep parent in a multirun) and report user errors.

    A :class:`UserError` (bad input, missing upstream artifact) is printed as one line and the
    process exits with status 2; other exceptions propagate with their traceback.
    """
    plain = plain_config(cfg)
    parent, job = _multirun_parent()
    extra_tags = {}
    run_name = None
    if job is not None:
        from hydra.core.hydra_config import HydraConfig

        overrides = " ".join(HydraConfig.get().overrides.task)
        extra_tags["hydra_overrides"] = overrides[:5000]
        run_name = f"{stage}:{plain.get('run_name', stage)}:{job}"
    try:
        with start_stage_run(plain, stage, parent_run_id=parent, run_name=run_name, extra_tags=extra_tags) as tracker:
            yield tracker
    except UserError as exc:
        log.error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
