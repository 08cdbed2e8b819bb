"""MLflow glue: one run per stage execution, config logging, artifacts, the multirun parent callback.

This package (with ``apps/``) is the only place that imports mlflow; library modules never do.
"""
from .run import NullTracker, Tracker, TrackingUnavailableError, start_stage_run

__all__ = ["NullTracker", "Tracker", "TrackingUnavailableError", "start_stage_run"]
