"""Evaluation: COCO mAP (:mod:`.coco_eval`), GT matching, uncertainty-quality and runtime analyses.

NumPy/pandas only (no TensorFlow): everything here works on Detections tables (DESIGN §6.3) and
COCO-format ground-truth manifests (DESIGN §6.1).
"""
