"""Loop state: JSON round trip, labeled/unlabeled bookkeeping, resume checks, bad files."""
from __future__ import annotations

import pytest

from uncertainty_det.active_learning import StrategyError
from uncertainty_det.active_learning.state import LoopState, check_resume, load_state, save_state


def test_round_trip_and_bookkeeping(tmp_path):
    state = LoopState({"name": "entropy"}, 3, [5, 1, 9, 7, 2], [2, 3], budget=[40.0, 60.0])
    assert load_state(tmp_path / "none.json") is None
    state.rounds.append({"round": 0, "added": [9, 5], "labeled": 2, "metrics": {"map/AP50": 0.1}})
    path = save_state(state, tmp_path / "al" / "state.json")
    again = load_state(path)
    assert again == state and again.next_round == 1 and not again.done
    assert again.labeled() == [9, 5] and again.unlabeled().tolist() == [1, 7, 2]
    check_resume(again, {"name": "entropy"}, 3, [40, 60], path)
    with pytest.raises(StrategyError, match="seed 3 vs 4"):
        check_resume(again, {"name": "entropy"}, 4, [40, 60], path)
    with pytest.raises(StrategyError, match="strategy"):
        check_resume(again, {"name": "sota"}, 3, [40, 60], path)


def test_bad_state_file(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("{not json")
    with pytest.raises(StrategyError, match="unreadable.*delete the folder"):
        load_state(path)
    path.write_text('{"format": "something else"}')
    with pytest.raises(StrategyError, match="unreadable"):
        load_state(path)
