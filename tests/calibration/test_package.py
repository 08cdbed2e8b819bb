"""The calibration package stays free of TensorFlow, Hydra and MLflow (DESIGN §3)."""
from __future__ import annotations

import subprocess
import sys

CODE = (
    "import sys\n"
    "import uncertainty_det.calibration, uncertainty_det.calibration.plots\n"
    "bad = sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'hydra', 'mlflow'})\n"
    "assert not bad, bad\n"
)


def test_no_tensorflow_hydra_or_mlflow_import():
    subprocess.run([sys.executable, "-c", CODE], check=True, timeout=120)
