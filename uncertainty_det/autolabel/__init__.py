"""Auto-labeling (DESIGN §9): accept an image's predictions as labels or send it to human review.

NumPy/pandas only (no TensorFlow, Hydra or MLflow).

* :mod:`.decision` — per-image decision with a :class:`~uncertainty_det.thresholding.ThresholdModel`,
  the ranked review queue;
* :mod:`.labels` — accepted labels as a manifest with per-object uncertainties, written as COCO, KITTI,
  YOLO and Pascal VOC;
* :mod:`.quality` — ground-truth quality of the accepted labels and the errors that slip through;
* :mod:`.tradeoff` — share auto-labelled vs label precision as the operating threshold moves.
"""
from __future__ import annotations

from .decision import DECISION_COLUMNS, EMPTY_POLICIES, AutolabelError, decide_images, review_queue
from .labels import LABEL_FORMATS, accepted_manifest, label_paths, uncertainty_names, write_labels
from .quality import SLIPPED_COLUMNS, label_matches, label_quality
from .tradeoff import per_image_counts, tradeoff_curve, tradeoff_figure

__all__ = [
    "DECISION_COLUMNS", "EMPTY_POLICIES", "LABEL_FORMATS", "SLIPPED_COLUMNS", "AutolabelError", "accepted_manifest",
    "decide_images", "label_matches", "label_paths", "label_quality", "per_image_counts", "review_queue", "tradeoff_curve",
    "tradeoff_figure", "uncertainty_names", "write_labels",
]
