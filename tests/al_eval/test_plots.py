"""Each figure builds without pyplot, has the expected axes and draws what it claims."""
from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.figure import Figure
from scipy import stats

from uncertainty_det.al_eval import (
    AlEvalError, per_class_figure, rank_heatmap_figure, similarity_vs_performance_figure, tau_similarity_figure,
)


def _renders(fig: Figure) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:4] == b"\x89PNG"


def test_similarity_vs_performance():
    sim = np.array([0.5, 0.6, 0.7, 0.65])
    perf = np.array([30.0, 32.0, 36.0, 33.0])
    fig = similarity_vs_performance_figure(sim, perf, labels=["a", "b", "c", "d"])
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    r = stats.pearsonr(perf, sim).statistic
    assert f"r = {r:.3f}" in fig.axes[0].get_title()
    assert len(fig.axes[0].lines) == 1  # the linear fit
    _renders(fig)


def test_per_class_grid_skips_absent_classes_and_orders_by_proportion():
    rng = np.random.default_rng(0)
    m = rng.uniform(1, 2, (4, 5))
    ap = rng.uniform(0, 1, (5, 4))
    names = ["car", "person", "bike", "bus"]
    fig = per_class_figure(m, ap, names, proportions=[0.2, 0.5, 0.0, 0.3])
    assert len(fig.axes) == 3
    assert [ax.get_title().split(" ")[0] for ax in fig.axes] == ["person", "bus", "car"]
    assert len(per_class_figure(m, ap, names).axes) == 4
    _renders(fig)
    with pytest.raises(AlEvalError):
        per_class_figure(m, ap.T, names)


def test_tau_similarity_marks_top_s_and_val():
    tau = np.array([0.2, 0.6, -0.1, 0.4])
    sim = np.array([0.3, 0.9, 0.1, 0.5])
    fig = tau_similarity_figure(tau, sim, val_tau=0.5, val_similarity=0.4)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    offsets = [c.get_offsets() for c in ax.collections]
    assert len(offsets) == 3
    np.testing.assert_allclose(offsets[1], [[0.9, 0.6]])  # top-s = the most similar subset
    np.testing.assert_allclose(offsets[2], [[0.4, 0.5]])
    _renders(fig)


def test_rank_heatmap_ranks():
    perf = np.array([[0.3, 0.5, 0.1], [0.2, 0.1, np.nan]])
    fig = rank_heatmap_figure(perf, ["set 1", "val"], ["M0", "M1", "M2"])
    assert len(fig.axes) == 2  # map + colour bar
    ranks = fig.axes[0].images[0].get_array()
    np.testing.assert_array_equal(ranks.filled(-1), [[2, 1, 3], [1, 2, -1]])
    _renders(fig)


def test_package_imports_no_pyplot_tensorflow_hydra_mlflow():
    code = (
        "import sys, numpy as np\n"
        "import uncertainty_det.al_eval as a\n"
        "a.rank_heatmap_figure(np.ones((1, 2)), ['s'], ['a', 'b'])\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'hydra', 'mlflow')"
        " or m == 'matplotlib.pyplot']\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
