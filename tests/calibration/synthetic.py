"""Seeded synthetic data shared by the calibration tests (known ground-truth calibration)."""
from __future__ import annotations

import numpy as np

from uncertainty_det.tables import softmax


def sample_labels(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One categorical draw per row of ``probs [N, C]`` -> ``[N]`` 0-based labels."""
    return (probs.cumsum(axis=1) > rng.uniform(size=(probs.shape[0], 1))).argmax(axis=1)


def calibrated_logits(n: int = 20000, c: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits ``[N, C]`` of a perfectly calibrated model and labels ``[N]`` drawn from its softmax."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 2.0, size=(n, c))
    return z, sample_labels(softmax(z), rng)


def gaussian_boxes(n: int, seed: int, over: float = 3.0, n_classes: int = 3):
    """Matched pairs with known σ: ``r ~ N(0, σ_true)``, predicted σ = ``over·σ_true + |noise|``.

    Returns ``(pred, gt, sigma_pred, sigma_true, classes)``; boxes are ``[N, 4]`` pixels, classes 1-based.
    """
    rng = np.random.default_rng(seed)
    sigma_true = rng.uniform(1.0, 10.0, size=(n, 4))
    pred = rng.uniform(0.0, 200.0, size=(n, 4))
    pred[:, 2:] = pred[:, :2] + rng.uniform(20.0, 150.0, size=(n, 2))
    gt = pred + rng.normal(size=(n, 4)) * sigma_true
    sigma_pred = over * sigma_true + np.abs(rng.normal(0.0, 0.3, size=(n, 4)))
    classes = rng.integers(1, n_classes + 1, size=n)
    return pred, gt, sigma_pred, sigma_true, classes
