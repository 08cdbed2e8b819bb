"""The resumable state of an active-learning loop (``al/<strategy>/state.json``, DESIGN §10).

The state records what a re-run needs to continue without repeating or changing anything: the strategy,
seed, pool (ids after pruning), round sizes, and per finished round the ids added and its metrics. A
round is *finished* when its selection for the next round is stored; a re-run of the same command skips
finished rounds and redoes an interrupted one from its start (its outputs are replaced atomically).
Written atomically (temp file + rename) after every change; plain JSON.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..io_utils import atomic_write_json
from .strategy import StrategyError

FORMAT = "uncertainty_det.al_state"
VERSION = 1


@dataclass
class LoopState:
    """What an AL loop has done so far.

    strategy: the :class:`~.strategy.Strategy` as a dict; seed; pool: ``[P]`` image ids the rounds draw
    from (after pruning); sizes: ``[R]`` images added per round; budget: the requested percentages;
    rounds: one dict per *finished* round
    ``{"round": k, "added": [ids], "labeled": n, "metrics": {...}}`` (round 0's ``added`` is the seeded
    random warm-up); pruning: what pruning removed (``{"mode", "removed", "unreadable", ...}``).
    """

    strategy: dict[str, Any]
    seed: int
    pool: list[int]
    sizes: list[int]
    rounds: list[dict[str, Any]] = field(default_factory=list)
    pruning: dict[str, Any] = field(default_factory=dict)
    budget: list[float] = field(default_factory=list)

    @property
    def next_round(self) -> int:
        return len(self.rounds)

    @property
    def done(self) -> bool:
        return len(self.rounds) >= len(self.sizes)

    def labeled(self, upto: int | None = None) -> list[int]:
        """Ids labeled after rounds ``0..upto`` (default: every finished round), in selection order."""
        rounds = self.rounds if upto is None else self.rounds[: upto + 1]
        return [i for r in rounds for i in r["added"]]

    def unlabeled(self) -> np.ndarray:
        """Pool ids not labeled yet, in pool order."""
        taken = set(self.labeled())
        return np.asarray([i for i in self.pool if i not in taken], dtype=np.int64)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, **asdict(self)}


def save_state(state: LoopState, path: str | os.PathLike) -> Path:
    """Write ``state`` as JSON atomically."""
    return atomic_write_json(path, state.to_dict())


def load_state(path: str | os.PathLike) -> LoopState | None:
    """The state at ``path`` (``None`` when there is none); a malformed file is a :class:`StrategyError`."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        if d.get("format") != FORMAT or int(d.get("version", 0)) > VERSION:
            raise ValueError(f"format {d.get('format')!r} version {d.get('version')!r}")
        return LoopState(strategy=dict(d["strategy"]), seed=int(d["seed"]), pool=[int(i) for i in d["pool"]],
                         sizes=[int(n) for n in d["sizes"]], rounds=list(d.get("rounds", [])),
                         pruning=dict(d.get("pruning", {})), budget=[float(b) for b in d.get("budget", [])])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StrategyError(f"active-learning state {path} is unreadable ({exc}); delete the folder to start "
                            f"the loop again") from exc


def check_resume(state: LoopState, strategy: dict[str, Any], seed: int, budget: list[float], path) -> None:
    """Refuse to resume a loop whose strategy, seed or budget differ from the command's."""
    diffs = []
    if state.strategy != strategy:
        diffs.append(f"strategy {state.strategy} vs {strategy}")
    if state.seed != int(seed):
        diffs.append(f"seed {state.seed} vs {seed}")
    if [float(b) for b in state.budget] != [float(b) for b in budget]:
        diffs.append(f"budget {state.budget} vs {list(budget)}")
    if diffs:
        raise StrategyError(f"{path} belongs to another loop ({'; '.join(diffs)}); use another run_name or "
                            f"delete that folder to start again")
