"""``udet-pipeline``: data -> train -> export -> calibrate -> validate -> threshold -> autolabel in one command.

Each step runs its stage app in a child process (``python -m uncertainty_det.apps.<stage>``) with the step's
own overrides, then the command-line overrides that its stage config accepts, plus
``tracking.parent_run_id`` so every stage is a child MLflow run of the pipeline run (in the pipeline's
experiment). A failing step stops the pipeline with its exit status and says how to resume.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from ..errors import UserError
from .common import CONFIG_DIR, plain_config, stage_run

log = logging.getLogger("uncertainty_det.pipeline")

#: Stages a pipeline step may run (their apps are ``uncertainty_det.apps.<stage>``).
STAGES = ("data", "train", "export", "infer", "evaluate", "calibrate", "validate", "epal", "threshold", "autolabel")


@lru_cache(maxsize=None)
def stage_keys(stage: str, config_dir: str = CONFIG_DIR) -> tuple[frozenset[str], frozenset[str]]:
    """``(groups, names)`` of a stage's primary config: the config groups of its defaults list (``model``,
    ``calibration/box``, ...) and the top-level names its config has (its own keys and the groups' packages)."""
    raw = OmegaConf.to_container(OmegaConf.load(Path(config_dir) / f"{stage}.yaml"), resolve=False)
    groups = set()
    for entry in raw.get("defaults", []):
        if isinstance(entry, dict):
            groups.update(str(k).removeprefix("override ").split("@")[0].strip() for k in entry)
    names = {k for k in raw if k != "defaults"} | {g.split("/")[0] for g in groups}
    return frozenset(groups), frozenset(names)


def override_key(override: str) -> str:
    """The key an override sets: ``trainer.epochs=3`` -> ``trainer.epochs``, ``+a.b=1`` -> ``a.b``."""
    return override.split("=", 1)[0].lstrip("+~").strip()


def accepts(stage: str, override: str, config_dir: str = CONFIG_DIR) -> bool:
    """Whether a stage's config takes ``override``: a group choice (``model=small``, ``calibration/box=x``)
    when the stage has that group; a value (``trainer.epochs=3``, ``seed=1``) when it has the top-level name.
    ``hydra.*`` and ``pipeline.*`` belong to the pipeline itself."""
    key = override_key(override)
    top = key.split(".")[0].split("/")[0]
    if top in ("hydra", "pipeline"):
        return False
    groups, names = stage_keys(stage, config_dir)
    if "." not in key:
        return key in groups or key in names
    return top in names


def forwarded(overrides: list[str], stage: str, config_dir: str = CONFIG_DIR) -> list[str]:
    """The command-line overrides a step of ``stage`` receives (see :func:`accepts`), in their order."""
    return [o for o in overrides if accepts(stage, o, config_dir)]


def step_commands(plain: dict, cli_overrides: list[str], parent_run_id: str | None) -> list[tuple[str, list[str]]]:
    """``[(step name, argv)]`` of the steps in ``pipeline.run`` (validated against ``pipeline.steps``)."""
    steps = plain["pipeline"]["steps"]
    names = [str(n) for n in plain["pipeline"]["run"]]
    unknown = [n for n in names if n not in steps]
    if unknown:
        raise UserError(f"pipeline.run names unknown step {unknown[0]!r}; the steps are {list(steps)} "
                        f"(add one under pipeline.steps)")
    commands = []
    for name in names:
        step = steps[name] or {}
        stage = str(step.get("stage", name))
        if stage not in STAGES:
            raise UserError(f"pipeline.steps.{name}.stage={stage!r} is not a stage; choose one of {list(STAGES)}")
        args = [str(o) for o in (step.get("overrides") or [])]
        passed = forwarded(cli_overrides, stage)
        tracking = []
        if parent_run_id and plain["tracking"].get("enabled", False):
            tracking.append(f"tracking.parent_run_id={parent_run_id}")
            if not any(override_key(o) == "tracking.experiment" for o in passed):
                tracking.append(f"tracking.experiment={plain['tracking']['experiment']}")
        argv = [sys.executable, "-m", f"uncertainty_det.apps.{stage}", *args, *tracking, *passed]
        commands.append((name, argv))
    return commands


def child_env() -> dict[str, str]:
    """The environment of a stage child process: this checkout first on ``PYTHONPATH``, quiet TensorFlow."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    repo = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def cli_overrides() -> list[str]:
    """The command-line overrides of the running Hydra app (empty outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def mlflow_ui_command(plain: dict) -> str | None:
    """How to open the tracking store of this run (``None`` without tracking)."""
    t = plain["tracking"]
    if not t.get("enabled", False):
        return None
    uri = str(t["uri"])
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    if uri.startswith(("http://", "https://")):
        return f"open {uri} in a browser"
    return f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000   # then open http://127.0.0.1:5000"


def run(plain: dict, tracker, cli_overrides: list[str]) -> dict:
    """Run the steps; returns ``{"time/<step>_s": seconds}``. A failing step raises SystemExit with its status."""
    commands = step_commands(plain, cli_overrides, getattr(tracker, "run_id", None))
    env = child_env()
    timings: dict[str, float] = {}
    start = time.perf_counter()
    for k, (name, argv) in enumerate(commands):
        log.info("[%d/%d] %s: %s", k + 1, len(commands), name, " ".join(argv[2:]))
        t0 = time.perf_counter()
        proc = subprocess.run(argv, env=env)
        timings[f"time/{name}_s"] = time.perf_counter() - t0
        tracker.log_metrics({f"time/{name}_s": timings[f"time/{name}_s"]})
        if proc.returncode != 0:
            rest = ",".join(n for n, _ in commands[k:])
            kept = " ".join(o for o in cli_overrides if override_key(o) != "pipeline.run")
            message = (f"pipeline step {name} failed (exit {proc.returncode}); fix the cause above and resume "
                       f"with: udet-pipeline {kept + ' ' if kept else ''}pipeline.run=[{rest}]")
            log.error("%s", message)
            print(f"error: {message}", file=sys.stderr, flush=True)
            raise SystemExit(proc.returncode)
        log.info("[%d/%d] %s done in %.0f s", k + 1, len(commands), name, timings[f"time/{name}_s"])
    timings["time/total_s"] = time.perf_counter() - start
    tracker.log_metrics({"time/total_s": timings["time/total_s"]})
    return timings


def report(plain: dict, timings: dict) -> str:
    """The closing message: where the results are and how to open them."""
    root = Path(plain["paths"]["runs_dir"]).resolve() / str(plain["run_name"])
    lines = [f"pipeline finished in {timings['time/total_s'] / 60:.1f} min "
             f"({', '.join(f'{k[5:-2]} {v:.0f} s' for k, v in timings.items() if k != 'time/total_s')})",
             f"results: {root}"]
    for sub in ("validation", "thresholding", "autolabel"):
        if (root / sub).exists():
            lines.append(f"  {sub}/: {', '.join(sorted(p.name for p in (root / sub).iterdir())) or '-'}")
    ui = mlflow_ui_command(plain)
    if ui:
        lines.append(f"open the runs: {ui}")
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="pipeline")
def main(cfg: DictConfig) -> None:
    plain = plain_config(cfg)
    with stage_run(cfg, "pipeline") as tracker:
        timings = run(plain, tracker, cli_overrides())
    log.info("%s", report(plain, timings))


if __name__ == "__main__":
    main()
