"""udet-evaluate without a trained run names the stage to run. (Evaluate on the trained weights and on the
export, chained with the other stages as a user runs them, is in tests/test_pipeline.py.)"""
from tests.apps.test_train_app import SMALL_MODEL
from tests.helpers import TINY_SYNTHETIC, run_app

COMMON = [*TINY_SYNTHETIC, *SMALL_MODEL, "run_name=e2e"]


def test_evaluate_without_training_names_the_stage(tmp_path):
    proc = run_app("evaluate", *COMMON, "tracking=none", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "udet-train run_name=e2e" in proc.stderr and "Traceback" not in proc.stderr
