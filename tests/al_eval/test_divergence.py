"""1-NN KL estimator against the Gaussian closed form; the KDE-resampled JSD's properties."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from uncertainty_det.al_eval import AlEvalError, empirical_jsd, knn_kl_divergence


def _gauss_kl(mu: float, sigma: float, d: int) -> float:
    """KL(N(0, I) || N(mu 1, sigma^2 I)) in d dimensions."""
    return d * (math.log(sigma) + (1 + mu ** 2) / (2 * sigma ** 2) - 0.5)


@pytest.mark.parametrize("n, m", [(4000, 4000), (3000, 6000)])
def test_knn_kl_matches_gaussian_closed_form(n, m):
    rng = np.random.default_rng(7)
    d = 3
    x = rng.normal(0.0, 1.0, (n, d))
    y = rng.normal(1.0, 1.5, (m, d))
    # the estimator's spread is about 0.02-0.03 at these sizes; n != m exercises log(m / (n - 1))
    assert knn_kl_divergence(x, y) == pytest.approx(_gauss_kl(1.0, 1.5, d), abs=0.1)
    # same distribution: about 0
    assert abs(knn_kl_divergence(x, rng.normal(0.0, 1.0, (m, d)))) < 0.1


def test_knn_kl_duplicates_stay_finite():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    doubled = np.concatenate([x, x])
    assert math.isfinite(knn_kl_divergence(doubled, rng.normal(size=(300, 3))))
    assert math.isfinite(knn_kl_divergence(x, x))
    assert math.isnan(knn_kl_divergence(np.ones((5, 3)), np.ones((4, 3))))


def test_knn_kl_rejects_bad_shapes():
    with pytest.raises(AlEvalError):
        knn_kl_divergence(np.zeros((5, 3)), np.zeros((5, 2)))
    with pytest.raises(AlEvalError):
        knn_kl_divergence(np.zeros((1, 3)), np.zeros((5, 3)))


def _features(rng, n, shift=0.0):
    return np.exp(rng.normal(shift, 0.3, (n, 3)))


def test_jsd_identical_near_zero_and_separated_large():
    rng = np.random.default_rng(3)
    p = _features(rng, 400)
    same = empirical_jsd(p, p)
    assert abs(same) < 0.05
    assert abs(empirical_jsd(p, _features(rng, 600))) < 0.05
    # about 6 standard deviations apart: the JSD (with the 1/2) is near its maximum ln 2
    far = empirical_jsd(p, _features(rng, 400, shift=1.0))
    assert far == pytest.approx(math.log(2), abs=0.1)
    # further apart the reference's pooled-KDE mixture is broader than the true mixture: above ln 2
    assert empirical_jsd(p, _features(rng, 400, shift=5.0)) > far + 0.3


def test_jsd_symmetric_and_seeded():
    rng = np.random.default_rng(4)
    p, q = _features(rng, 300), _features(rng, 250, shift=0.5)
    a = empirical_jsd(p, q, num_samples=3000, seed=5)
    assert a == empirical_jsd(q, p, num_samples=3000, seed=5)
    assert a == empirical_jsd(p.copy(), q.copy(), num_samples=3000, seed=5)
    assert a != empirical_jsd(p, q, num_samples=3000, seed=6)


def test_jsd_nan_for_too_few_finite_rows():
    rng = np.random.default_rng(5)
    p = _features(rng, 100)
    few = _features(rng, 10)
    few[:6, 1] = -1.0  # negative DCT means: log is NaN -> 4 finite rows < d + 2 = 5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(empirical_jsd(p, few))
        assert math.isnan(empirical_jsd(few, p))
        assert math.isnan(empirical_jsd(p, p[:4]))
    assert math.isfinite(empirical_jsd(p, p[:5], num_samples=500))


def test_jsd_degenerate_features_nan_with_warning():
    rng = np.random.default_rng(6)
    degenerate = np.ones((20, 3))
    degenerate[:, 1] = np.exp(rng.normal(size=20))  # aspect and size constant -> singular covariance
    with pytest.warns(RuntimeWarning, match="KDE"):
        assert math.isnan(empirical_jsd(_features(rng, 50), degenerate, num_samples=200))
