"""Calibration figures build and save (smoke tests with small data)."""
from __future__ import annotations

import numpy as np

from uncertainty_det.calibration.box import BoxIsoPerCoo, BoxRelIsoPerClsCoo, BoxTSAll
from uncertainty_det.calibration.classification import TSAll
from uncertainty_det.calibration.plots import (
    coverage_plot,
    per_class_reliability,
    reliability_diagram,
    sigma_residual_plot,
)
from uncertainty_det.tables import softmax

from .synthetic import calibrated_logits, gaussian_boxes


def test_reliability_figures(tmp_path):
    z, y = calibrated_logits(n=500, c=3, seed=30)
    probs = softmax(3 * z)
    cal = TSAll().fit(3 * z, y).transform(3 * z)
    fig = reliability_diagram(probs, y, cal, title="test")
    assert len(fig.axes) == 2 and "ECE=" in fig.axes[0].get_title()
    fig.savefig(tmp_path / "rel.png", dpi=40)
    fig = per_class_reliability(probs, y, cal, class_names=["a", "b", "c"])
    assert len(fig.axes) == 6 and fig.axes[2].get_title().startswith("b:")
    assert len(reliability_diagram(probs, y).axes) == 1
    fig.savefig(tmp_path / "rel_cls.png", dpi=40)
    assert (tmp_path / "rel.png").stat().st_size > 0


def test_box_figures(tmp_path):
    pred, gt, sigma, _, classes = gaussian_boxes(400, seed=31)
    r = gt - pred
    fig = coverage_plot(r, sigma, BoxTSAll().fit(pred, gt, sigma).transform(pred, sigma))
    assert len(fig.axes) == 4 and fig.axes[0].get_title() == "ymin"
    fig.savefig(tmp_path / "cov.png", dpi=40)
    for cal in (None, BoxTSAll().fit(pred, gt, sigma), BoxIsoPerCoo().fit(pred, gt, sigma),
                BoxRelIsoPerClsCoo().fit(pred, gt, sigma, classes)):
        fig = sigma_residual_plot(sigma, r, cal, pred_boxes=pred, class_id=2)
        assert len(fig.axes) == 4 and fig.axes[0].get_xscale() == "log"
    fig.savefig(tmp_path / "scatter.png", dpi=40)
    # zero σ / zero residual do not break the log axes
    sigma_residual_plot(np.zeros((3, 4)), np.zeros((3, 4))).savefig(tmp_path / "zeros.png", dpi=40)
