"""Cost-sensitive thresholding (DESIGN §9, reference §1): budget thresholds, FD@CD / CD@FD / AUROC / JSD,
the seeded combination optimiser, the persisted :class:`ThresholdModel` and diagnostics.

NumPy/SciPy/scikit-learn only (matplotlib for the figures); no TensorFlow, Hydra or MLflow.

* :mod:`.measures` — uncertainty measures by name from a Detections/Matches frame;
* :mod:`.labels` — detection rows and CD labels ``[T, N]`` per IoU threshold;
* :mod:`.metrics` — ROC, budget thresholds, FD@CD(b), CD@FD(b), AUROC, JSD;
* :mod:`.combine` — normalisation, weight optimisation, :class:`ThresholdModel` (JSON);
* :mod:`.diagnostics` — spider plot, heatmaps, image picks;
* :mod:`.floor` — the F1-optimal score floor of auto-labeling.
"""
from __future__ import annotations

from ._common import DEFAULT_IOU_THRESHOLDS, MODES, ThresholdingError, check_budget, check_mode
from .combine import (
    COMBINATION, MinMaxNormaliser, OptimiserSettings, ThresholdModel, fit_combination, fit_threshold_model,
    load_threshold_model, optimise_weights, save_threshold_model,
)
from .floor import f1_score_floor
from .labels import cd_labels, cd_matrix, detection_frame, detection_mask
from .measures import MEASURES, available_measures, measure_matrix, measure_values
from .metrics import (
    BudgetResult, ThresholdMetrics, auroc, budget_threshold, jsd, metrics_table, operating_rates, threshold_metrics,
)

__all__ = [
    "COMBINATION", "DEFAULT_IOU_THRESHOLDS", "MEASURES", "MODES", "BudgetResult", "MinMaxNormaliser",
    "OptimiserSettings", "ThresholdMetrics", "ThresholdModel", "ThresholdingError", "auroc", "available_measures",
    "budget_threshold", "cd_labels", "cd_matrix", "check_budget", "check_mode", "detection_frame", "detection_mask",
    "f1_score_floor", "fit_combination", "fit_threshold_model", "jsd", "load_threshold_model", "measure_matrix", "measure_values",
    "metrics_table", "operating_rates", "optimise_weights", "save_threshold_model", "threshold_metrics",
]
