"""Fixtures shared by the app tests."""
from __future__ import annotations

import pytest

from tests.apps import stac_fixture
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


@pytest.fixture(scope="session")
def tiny_stac(tmp_path_factory):
    """``(root, log)``: the synthetic data and a finished tiny STAC run (teacher, students 0 and 1). Tests that
    change it work on a copy; analysis stages (pls, glc) may add their own folders."""
    root = tmp_path_factory.mktemp("stac")
    run_app("data", *stac_fixture.DATA, cwd=root)
    proc = run_app("stac", *stac_fixture.STAC, cwd=root)
    return root, proc.stdout + proc.stderr
