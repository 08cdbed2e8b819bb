"""Focal, box and attenuated losses; sigma parametrisation; detection_loss."""
import math

import numpy as np
import pytest
import tensorflow as tf

from uncertainty_det.model.anchors import generate_anchors
from uncertainty_det.model.losses import (
    LossConfig,
    attenuated_box_loss,
    attenuated_box_terms,
    box_loss,
    detection_loss,
    focal_loss,
    sigma_from_raw,
)
from uncertainty_det.model.target_assigner import assign_targets


def _np_focal(logits, targets, alpha, gamma, ls, weights):
    b, n, c = logits.shape
    y = np.zeros((b, n, c))
    for i in range(b):
        for j in range(n):
            if targets[i, j] >= 0:
                y[i, j, targets[i, j]] = 1.0
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    p_t = y * p + (1 - y) * (1 - p)
    a_t = y * alpha + (1 - y) * (1 - alpha)
    ys = y * (1 - ls) + 0.5 * ls
    ce = -(ys * np.log(p) + (1 - ys) * np.log(1 - p))
    loss = a_t * (1 - p_t) ** gamma * ce
    w = np.where(targets == -2, 0.0, 1.0)
    if weights is not None:
        w = w * np.where(targets >= 0, weights, 1.0)
    return (loss * w[..., None]).sum() / ((targets >= 0).sum() + 1)


@pytest.mark.parametrize("ls,use_w", [(0.0, False), (0.1, True)])
def test_focal_loss_against_numpy(ls, use_w):
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (2, 40, 5)).astype(np.float32)
    targets = rng.choice([-2, -1, -1, -1, 0, 1, 2, 3, 4], size=(2, 40)).astype(np.int32)
    weights = rng.uniform(0.2, 2.0, (2, 40)).astype(np.float32) if use_w else None
    fn = tf.function(lambda x, t, w: focal_loss(x, t, alpha=0.25, gamma=1.5, label_smoothing=ls, weights=w))
    got = fn(logits, targets, weights).numpy()
    np.testing.assert_allclose(got, _np_focal(logits, targets, 0.25, 1.5, ls, weights), rtol=1e-5)


def test_box_loss_by_hand():
    codes = np.array([[[0.3, 0.1, 0.0, 0.2], [0.5, 0.5, 0.5, 0.5], [1.0, 1.0, 1.0, 1.0]]], np.float32)
    targets = np.array([[[0.5, 0.0, -0.05, 0.2], [0.0, 0.0, 0.0, 0.0], [2.0, 2.0, 2.0, 2.0]]], np.float32)
    positive = np.array([[True, False, False]])  # anchor 2 has targets but is not positive: excluded
    n_plus = 2.0
    # d = [0.2, masked, -0.05, 0.0]
    huber = (0.1 * (0.2 - 0.05) + 0.5 * 0.05**2 + 0.0) / (4 * n_plus)
    mse = (0.2**2 + 0.05**2) / (4 * n_plus)
    fn = tf.function(lambda k: box_loss(codes, targets, positive, kind=k, delta=0.1))
    assert fn("huber").numpy() == pytest.approx(huber, rel=1e-5)
    assert fn("mse").numpy() == pytest.approx(mse, rel=1e-5)
    assert box_loss(codes, targets, positive, kind="MSE").numpy() == pytest.approx(mse, rel=1e-5)
    w = np.array([[0.5, 1.0, 1.0]], np.float32)
    assert box_loss(codes, targets, positive, kind="mse", weights=w).numpy() == pytest.approx(0.5 * mse, rel=1e-5)
    with pytest.raises(ValueError):
        box_loss(codes, targets, positive, kind="l1")


def test_attenuated_worked_example():
    """Reference §1.3: y=0.5, μ̃=0.3, σ=0.5, MSE -> 0.16 + log 1.25 = 0.38314 per element."""
    y = np.full((1, 2, 4), 0.5, np.float32)
    y[0, 1] = 0.0  # second anchor negative
    positive = np.array([[True, False]])
    sigma = np.full((1, 2, 4), 0.5, np.float32)
    n_plus = 2.0
    per_elem = 0.04 / 0.25 + math.log(1.25)
    assert per_elem == pytest.approx(0.38314, abs=1e-5)
    expected = 0.25 * 4 * per_elem / (4 * n_plus) / 5

    mu = np.full((1, 2, 4), 0.3, np.float32)
    fn = tf.function(
        lambda m, c: attenuated_box_loss(m, sigma, y, positive, kind="mse", compensation=c, num_levels=5)
    )
    terms = attenuated_box_terms(mu, sigma, y, positive, kind="mse", compensation="none").numpy()
    np.testing.assert_allclose(terms[0, 0], 0.38314, atol=1e-5)
    np.testing.assert_array_equal(terms[0, 1], 0.0)
    assert fn(mu, "none").numpy() == pytest.approx(expected, rel=1e-5)
    # with the paper compensation, raw μ_th = μ_tw = 0.3 - σ²/2 gives μ̃ = 0.3 on every channel
    mu_raw = mu.copy()
    mu_raw[..., 2:] -= 0.5**2 / 2
    assert fn(mu_raw, "paper").numpy() == pytest.approx(expected, rel=1e-5)
    # per-level value for a single level
    one_level = attenuated_box_loss(mu, sigma, y, positive, compensation="none", num_levels=1).numpy()
    assert one_level == pytest.approx(0.25 * 4 * per_elem / (4 * n_plus), rel=1e-5)


def test_compensation_hits_th_tw_of_every_anchor():
    rng = np.random.default_rng(1)
    b, n = 2, 18  # two locations' worth of anchors (A = 9): the reference defect would show here
    mu = rng.normal(0, 0.3, (b, n, 4)).astype(np.float32)
    y = rng.normal(0, 0.3, (b, n, 4)).astype(np.float32)
    sigma = rng.uniform(0.2, 0.8, (b, n, 4)).astype(np.float32)
    positive = np.ones((b, n), bool)
    fn = tf.function(lambda c: attenuated_box_terms(mu, sigma, y, positive, kind="mse", compensation=c))
    paper, none = fn("paper").numpy(), fn("none").numpy()
    np.testing.assert_array_equal(paper[..., :2], none[..., :2])
    assert np.all(np.abs(paper[..., 2:] - none[..., 2:]) > 1e-6)
    mu_tilde = mu + np.array([0, 0, 0.5, 0.5]) * sigma**2
    np.testing.assert_allclose(paper, (y - mu_tilde) ** 2 / sigma**2 + np.log1p(sigma**2), rtol=1e-5)
    with pytest.raises(ValueError):
        attenuated_box_terms(mu, sigma, y, positive, compensation="halves")


def test_sigma_from_raw():
    raw = np.array([-3.0, -0.005, 0.0, 0.5, 2000.0], np.float32)
    sp = sigma_from_raw(raw, "softplus", sigma_min=0.01).numpy()
    np.testing.assert_allclose(sp, np.logaddexp(0.0, raw.astype(np.float64)) + 0.01, rtol=1e-5)
    fn = tf.function(lambda r, t: sigma_from_raw(r, "raw_clip", 0.01, 1024.0, training=t))
    np.testing.assert_allclose(fn(raw, True).numpy(), [0.01, 0.01, 0.01, 0.5, 1024.0])
    np.testing.assert_allclose(fn(raw, False).numpy(), np.abs(raw))
    np.testing.assert_allclose(fn(raw, tf.constant(False)).numpy(), np.abs(raw))
    np.testing.assert_allclose(fn(raw, tf.constant(True)).numpy(), [0.01, 0.01, 0.01, 0.5, 1024.0])
    with pytest.raises(ValueError):
        sigma_from_raw(raw, "exp")


def _setup(num_classes=3, seed=0):
    anchors = generate_anchors((128, 128))
    rng = np.random.default_rng(seed)
    gt_boxes = np.array([[[10, 10, 50, 40], [60, 70, 100, 120], [0, 0, 0, 0]],
                         [[30, 30, 90, 60], [0, 0, 0, 0], [0, 0, 0, 0]]], np.float32)
    gt_classes = np.array([[1, 3, -1], [2, -1, -1]], np.int32)
    targets = assign_targets(gt_boxes, gt_classes, anchors, num_classes, gt_weights=np.full((2, 3), 0.8, np.float32))
    n = len(anchors)
    outputs = {
        "cls": tf.constant(rng.normal(0, 4, (2, n, num_classes)), tf.float32),
        "box": tf.constant(rng.normal(0, 0.5, (2, n, 4)), tf.float32),
        "sigma": sigma_from_raw(tf.constant(rng.normal(-3, 2, (2, n, 4)), tf.float32)),
    }
    return outputs, targets


def test_detection_loss_combination_and_metrics():
    outputs, targets = _setup()
    cfg = LossConfig(alpha=0.25, gamma=1.5, box_loss="mse", huber_delta=0.1, box_loss_weight=100.0,
                     compensation="paper")
    fn = tf.function(lambda o, t: detection_loss(o, t, cfg))
    res = {k: v.numpy() for k, v in fn(outputs, targets).items()}
    assert set(res) == {"loss", "cls_loss", "box_loss", "mean_sigma", "rmse"}
    cls = focal_loss(outputs["cls"], targets["cls_targets"], weights=targets["weights"]).numpy()
    box = attenuated_box_loss(outputs["box"], outputs["sigma"], targets["box_targets"], targets["positive"],
                              kind="mse", weights=targets["weights"]).numpy()
    assert res["cls_loss"] == pytest.approx(cls, rel=1e-5)
    assert res["box_loss"] == pytest.approx(box, rel=1e-5)
    assert res["loss"] == pytest.approx(cls + 100.0 * box, rel=1e-5)
    pos = targets["positive"].numpy()
    assert pos.sum() > 0
    d = outputs["box"].numpy()[pos] - targets["box_targets"].numpy()[pos]
    assert res["rmse"] == pytest.approx(np.sqrt(np.mean(d**2)), rel=1e-5)
    assert res["mean_sigma"] == pytest.approx(outputs["sigma"].numpy()[pos].mean(), rel=1e-5)

    plain = {k: v for k, v in outputs.items() if k != "sigma"}
    res2 = detection_loss(plain, targets, LossConfig(box_loss="huber", box_loss_weight=50.0))
    assert set(res2) == {"loss", "cls_loss", "box_loss"}
    hb = box_loss(plain["box"], targets["box_targets"], targets["positive"], "huber", 0.1, targets["weights"])
    assert res2["loss"].numpy() == pytest.approx(cls + 50.0 * hb.numpy(), rel=1e-5)


@pytest.mark.parametrize("param", ["softplus", "raw_clip"])
def test_gradients_finite(param):
    outputs, targets = _setup(seed=2)
    rng = np.random.default_rng(5)
    n = outputs["cls"].shape[1]
    logits = tf.Variable(rng.normal(0, 30, (2, n, 3)).astype(np.float32))  # saturated logits too
    box = tf.Variable(rng.normal(0, 1, (2, n, 4)).astype(np.float32))
    raw = tf.Variable(rng.normal(0, 2, (2, n, 4)).astype(np.float32))

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            sigma = sigma_from_raw(raw, param, training=True)
            res = detection_loss({"cls": logits, "box": box, "sigma": sigma}, targets,
                                 LossConfig(box_loss="huber", box_loss_weight=100.0))
            plain = box_loss(box, targets["box_targets"], targets["positive"], "mse")
            total = res["loss"] + plain
        return total, tape.gradient(total, [logits, box, raw])

    total, grads = step()
    assert np.isfinite(total.numpy())
    for g in grads:
        assert np.all(np.isfinite(g.numpy()))
    assert np.any(grads[2].numpy() != 0)
