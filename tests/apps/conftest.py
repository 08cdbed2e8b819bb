"""Fixtures shared by the app tests."""
from __future__ import annotations

import pytest

from tests.apps.al_fixture import DATA, LOOP
from tests.helpers import run_app


@pytest.fixture(scope="session")
def tiny_al_loop(tmp_path_factory):
    """A folder with the synthetic data and a finished 2-round loop per strategy (random, entropy). Tests read
    it; a test that changes it works on a copy."""
    root = tmp_path_factory.mktemp("al_loop")
    run_app("data", *DATA, cwd=root)
    run_app("al_loop", *LOOP, "strategy=random,entropy", multirun=True, cwd=root)
    return root
