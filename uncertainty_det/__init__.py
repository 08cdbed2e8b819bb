"""uncertainty_det: uncertainty-aware object detection."""
__version__ = "0.1.0"
