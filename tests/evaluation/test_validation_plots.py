"""Validation figures render to PNG and carry the metrics in their titles."""
from __future__ import annotations

import io

import numpy as np
import pytest

from uncertainty_det.evaluation.uncertainty_quality import auroc_tp_fp, spearman
from uncertainty_det.evaluation.validation_plots import (
    pit_coverage_figure, sigma_residual_figure, sparsification_figure, tp_fp_histogram,
)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=40)
    return buf.getvalue()


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    sigma = rng.uniform(0.5, 3, size=(300, 4))
    residual = rng.normal(0, sigma)
    u = sigma.mean(axis=1)
    e = np.abs(residual).mean(axis=1)
    is_tp = rng.uniform(size=300) > u / 4
    return sigma, residual, u, e, is_tp


def test_sparsification_and_scatter(data):
    _, _, u, e, _ = data
    fig = sparsification_figure(u, e, name="al")
    assert _png(fig)[:4] == b"\x89PNG"
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["al", "oracle", "random"]
    assert "AUSE" in ax.get_title()
    fig = sigma_residual_figure(u, e, max_points=100)
    assert f"{spearman(u, e):.3f}" in fig.axes[0].get_title()
    assert len(fig.axes[0].collections[0].get_offsets()) == 100
    _png(fig)


def test_tp_fp_histogram(data):
    _, _, u, _, is_tp = data
    fig = tp_fp_histogram(u, is_tp, name="entropy")
    assert f"{auroc_tp_fp(u, is_tp):.3f}" in fig.axes[0].get_title()
    _png(fig)
    _png(tp_fp_histogram(u, np.ones_like(is_tp), name="all TP"))   # one class only: NaN AUROC, no crash


def test_pit_coverage_uncalibrated_vs_calibrated(data):
    sigma, residual, _, _, _ = data
    fig = pit_coverage_figure(residual, sigma / 3, sigma, name="al")
    assert len(fig.axes) == 5
    assert [ax.get_title() for ax in fig.axes] == ["ymin", "xmin", "ymax", "xmax", "all coordinates"]
    labels = [line.get_label() for line in fig.axes[4].get_lines()]
    assert labels[0].startswith("uncalibrated") and labels[1].startswith("calibrated")
    gap = [float(lbl.split("(")[1].rstrip(")")) for lbl in labels[:2]]
    assert gap[1] < gap[0]                                           # the right σ is closer to the diagonal
    _png(fig)
    assert len(pit_coverage_figure(residual, sigma).axes[0].get_lines()) == 2   # curve + diagonal
