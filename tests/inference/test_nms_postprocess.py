"""NMS (hard / Gaussian soft, per class, padding, batch) and post-processing (MC aggregation, decoding,
gathering by kept index, rescaling, graph mode)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from omegaconf import OmegaConf

from uncertainty_det.inference.decoding import decode, decode_plain
from uncertainty_det.inference.nms import nms, offset_boxes_by_class
from uncertainty_det.inference.postprocess import (
    PostprocessConfig,
    decoder_options,
    postprocess,
    postprocess_config_from_dict,
)

REPO = Path(__file__).resolve().parents[2]


def _np(x):
    return {k: v.numpy() for k, v in x.items()}


# ------------------------------------------------------------------------------------------- NMS

def _two_boxes():
    boxes = tf.constant([[[0, 0, 10, 10], [0, 2, 10, 12]]], tf.float32)  # IoU = 80 / 120 = 2/3
    scores = tf.constant([[0.9, 0.8]], tf.float32)
    return boxes, scores


def test_hard_nms_keeps_one_of_two_overlapping_boxes_and_pads():
    boxes, scores = _two_boxes()
    classes = tf.constant([[1, 1]], tf.int32)
    idx, sc, num = nms(boxes, scores, classes, method="hard", max_detections=5)
    assert idx.shape == (1, 5) and sc.shape == (1, 5) and num.shape == (1,)
    assert idx.dtype == tf.int32 and num.dtype == tf.int32
    assert num.numpy().tolist() == [1]
    assert idx.numpy()[0].tolist() == [0, 0, 0, 0, 0]
    np.testing.assert_allclose(sc.numpy()[0], [0.9, 0, 0, 0, 0], rtol=1e-6)


def test_per_class_nms_keeps_boxes_of_different_classes():
    boxes, scores = _two_boxes()
    classes = tf.constant([[1, 2]], tf.int32)
    _, _, num_agnostic = nms(boxes, scores, classes, method="hard", class_agnostic=True, max_detections=5)
    idx, sc, num = nms(boxes, scores, classes, method="hard", class_agnostic=False, max_detections=5)
    assert num_agnostic.numpy().tolist() == [1]
    assert num.numpy().tolist() == [2]
    assert idx.numpy()[0, :2].tolist() == [0, 1]
    np.testing.assert_allclose(sc.numpy()[0, :2], [0.9, 0.8], rtol=1e-6)
    # same class again: per-class NMS suppresses as usual
    _, _, num_same = nms(boxes, scores, tf.constant([[3, 3]]), method="hard", class_agnostic=False)
    assert num_same.numpy().tolist() == [1]


def test_offset_boxes_keep_iou_within_class_and_separate_classes():
    boxes = tf.constant([[[-5, -5, 10, 10], [0, 2, 10, 12], [0, 0, 10, 10]]], tf.float32)
    shifted = offset_boxes_by_class(boxes, tf.constant([[1, 1, 2]])).numpy()[0]
    np.testing.assert_allclose(shifted[1] - shifted[0], (boxes[0, 1] - boxes[0, 0]).numpy(), atol=1e-4)
    assert shifted[2, 0] > shifted[:2, 2].max() and shifted[2, 1] > shifted[:2, 3].max()


def test_soft_nms_decays_score_by_gaussian_of_iou():
    boxes, scores = _two_boxes()
    classes = tf.constant([[1, 1]], tf.int32)
    sigma = 0.5
    idx, sc, num = nms(boxes, scores, classes, method="soft", soft_sigma=sigma, max_detections=4)
    iou = 80.0 / 120.0
    expected = 0.8 * np.exp(-iou ** 2 / sigma)            # = 0.3288..., TF gets sigma/2
    assert num.numpy().tolist() == [2]
    assert idx.numpy()[0].tolist() == [0, 1, 0, 0]
    np.testing.assert_allclose(sc.numpy()[0], [0.9, expected, 0, 0], rtol=1e-5)
    # the reference alias and a decayed score below the threshold drops the box
    _, sc2, num2 = nms(boxes, scores, classes, method="gaussian", soft_sigma=sigma,
                       score_threshold=expected + 0.01, max_detections=4)
    assert num2.numpy().tolist() == [1]


def test_nms_batch_with_different_counts():
    boxes = tf.constant([
        [[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]],
        [[0, 0, 10, 10], [0, 1, 10, 11], [40, 40, 50, 50]],
    ], tf.float32)
    scores = tf.constant([[0.5, 0.7, 0.6], [0.9, 0.8, 0.0001]], tf.float32)
    classes = tf.ones([2, 3], tf.int32)
    idx, sc, num = nms(boxes, scores, classes, method="hard", max_detections=4)
    assert num.numpy().tolist() == [3, 1]
    assert idx.numpy().tolist() == [[1, 2, 0, 0], [0, 0, 0, 0]]
    np.testing.assert_allclose(sc.numpy(), [[0.7, 0.6, 0.5, 0], [0.9, 0, 0, 0]], rtol=1e-6)


def test_nms_rejects_unknown_method():
    boxes, scores = _two_boxes()
    with pytest.raises(ValueError, match="unknown NMS method"):
        nms(boxes, scores, tf.ones([1, 2], tf.int32), method="fancy")


# ---------------------------------------------------------------------------------- postprocess

N_SIDE = 6
N = N_SIDE * N_SIDE
C = 3


def _anchors() -> np.ndarray:
    """Non-overlapping 16 px anchors every 32 px (small codes keep the boxes disjoint)."""
    r, c = np.meshgrid(np.arange(N_SIDE), np.arange(N_SIDE), indexing="ij")
    y, x = 32.0 * r.ravel() + 8, 32.0 * c.ravel() + 8
    return np.stack([y, x, y + 16, x + 16], axis=1).astype(np.float32)


def _raw(t: int, b: int = 2, with_sigma: bool = False, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    cls = rng.uniform(-3, 3, size=(t, b, N, C)).astype(np.float32)
    box = rng.uniform(-0.1, 0.1, size=(t, b, N, 4)).astype(np.float32)
    raw = {"cls": cls, "box": box}
    if with_sigma:
        # unique per anchor (and image), same for all samples up to a small sample-dependent change
        base = 0.01 + 0.002 * np.arange(b * N, dtype=np.float32).reshape(b, N)
        sig = np.stack([base, 2 * base, 3 * base, 4 * base], axis=-1)[None] * (1 + 0.1 * np.arange(t))[:, None, None, None]
        raw["sigma"] = sig.astype(np.float32)
    return raw


def _expected_order(raw: dict, k: int) -> np.ndarray:
    """[B,k] anchor indices by descending sigmoid(max mean logit) (disjoint boxes: no suppression)."""
    score = raw["cls"].mean(0).max(-1)
    return np.argsort(-score, axis=1, kind="stable")[:, :k]


def test_t1_without_sigma_equals_plain_decoding_of_kept_anchors():
    raw = _raw(t=1)
    anchors = _anchors()
    cfg = PostprocessConfig(max_detections=50, max_nms_inputs=0)
    out = _np(postprocess(raw, anchors, scale=np.ones(2, np.float32),
                          image_shape=np.full((2, 2), 1000.0, np.float32), cfg=cfg))
    assert out["boxes"].shape == (2, 50, 4) and out["logits"].shape == (2, 50, C)
    assert out["classes"].dtype == np.int32 and out["num_detections"].dtype == np.int32
    assert out["num_detections"].tolist() == [N, N]
    order = _expected_order(raw, N)
    plain = decode_plain(raw["box"][0], anchors).numpy()                          # [B,N,4]
    for b in range(2):
        kept = order[b]
        np.testing.assert_allclose(out["boxes"][b, :N], plain[b, kept], rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(out["logits"][b, :N], raw["cls"][0, b, kept], rtol=1e-6)
        assert out["classes"][b, :N].tolist() == (raw["cls"][0, b, kept].argmax(-1) + 1).tolist()
        np.testing.assert_allclose(out["scores"][b, :N], 1 / (1 + np.exp(-raw["cls"][0, b, kept].max(-1))), rtol=1e-5)
    for key in ("al_std", "ep_std", "ep_logit_std"):
        assert np.all(out[key] == 0), key
    # padding slots are zeros
    assert np.all(out["boxes"][:, N:] == 0) and np.all(out["classes"][:, N:] == 0) and np.all(out["scores"][:, N:] == 0)


def test_t3_epistemic_std_logit_mean_and_aleatoric_follow_kept_detections():
    t, k = 3, 10
    raw = _raw(t=t, with_sigma=True, seed=1)
    anchors = _anchors()
    cfg = PostprocessConfig(decoding="lognormal", max_detections=20, max_nms_inputs=k, total_sigma=True)
    out = _np(postprocess(raw, anchors, np.ones(2, np.float32), np.full((2, 2), 1000.0, np.float32), cfg))
    assert out["num_detections"].tolist() == [k, k]             # only the top-k anchors reach NMS
    dec = decode("lognormal", raw["box"], raw["sigma"], anchors)
    boxes_t, std_t = dec["boxes"].numpy(), dec["std"].numpy()   # [T,B,N,4]
    order = _expected_order(raw, k)
    for b in range(2):
        kept = order[b]
        np.testing.assert_allclose(out["boxes"][b, :k], boxes_t[:, b, kept].mean(0), rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(out["ep_std"][b, :k], boxes_t[:, b, kept].std(0), rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(out["logits"][b, :k], raw["cls"][:, b, kept].mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out["ep_logit_std"][b, :k], raw["cls"][:, b, kept].std(0), rtol=1e-4, atol=1e-6)
        # aleatoric σ belongs to each detection's own anchor (unique per anchor; reference D4)
        np.testing.assert_allclose(out["al_std"][b, :k], std_t[:, b, kept].mean(0), rtol=1e-5, atol=1e-6)
        assert len(np.unique(out["al_std"][b, :k, 0])) == k
        np.testing.assert_allclose(out["total_std"][b, :k],
                                   np.sqrt(out["al_std"][b, :k] ** 2 + out["ep_std"][b, :k] ** 2), rtol=1e-6)
    assert np.all(out["ep_std"][:, :k] > 0) and np.all(out["ep_logit_std"][:, :k] > 0)


def test_rescaling_and_clipping_to_the_original_image():
    raw = _raw(t=2, with_sigma=True, seed=2)
    anchors = _anchors()
    cfg = PostprocessConfig(decoding="lognormal_full", max_detections=N, max_nms_inputs=0)
    big = np.full((2, 2), 1000.0, np.float32)
    ref = _np(postprocess(raw, anchors, np.ones(2, np.float32), big, cfg))
    scale = np.array([2.0, 0.5], np.float32)
    out = _np(postprocess(raw, anchors, scale, big, cfg))
    for b in range(2):
        np.testing.assert_allclose(out["boxes"][b], ref["boxes"][b] / scale[b], rtol=1e-5, atol=1e-5)
        for key in ("al_std", "ep_std"):
            np.testing.assert_allclose(out[key][b], ref[key][b] / scale[b], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out["al_cov"][b], ref["al_cov"][b] / scale[b] ** 2, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(out["ep_logit_std"][b], ref["ep_logit_std"][b], rtol=1e-6)
    assert out["al_cov"].shape == (2, N, 4, 4)
    # al_cov = mean_T(cov_t) and al_std = mean_T(std_t): sqrt(diag) >= al_std (Jensen), nearly equal here
    diag_std = np.sqrt(np.diagonal(out["al_cov"], axis1=-2, axis2=-1))
    assert np.all(diag_std >= out["al_std"] * (1 - 1e-5))
    np.testing.assert_allclose(diag_std, out["al_std"], rtol=2e-2)
    # clip to a small original image (H=50, W=70): boxes inside, σ untouched
    small = np.array([[50.0, 70.0], [50.0, 70.0]], np.float32)
    clipped = _np(postprocess(raw, anchors, np.ones(2, np.float32), small, cfg))
    assert clipped["boxes"][..., 0::2].max() <= 50.0 and clipped["boxes"][..., 1::2].max() <= 70.0
    assert clipped["boxes"].min() >= 0.0
    np.testing.assert_allclose(clipped["boxes"], np.minimum(ref["boxes"], [50, 70, 50, 70]), atol=1e-5)
    np.testing.assert_allclose(clipped["al_std"], ref["al_std"], rtol=1e-6)


def test_postprocess_in_tf_function_and_saved_model_matches_eager(tmp_path):
    raw = _raw(t=3, with_sigma=True, seed=3)
    anchors = _anchors()
    cfg = PostprocessConfig(decoding="sample", decoding_options={"name": "sample", "samples": 16, "seed": 1},
                            max_detections=12, max_nms_inputs=20)
    args = (np.ones(2, np.float32), np.full((2, 2), 1000.0, np.float32))
    eager = _np(postprocess(raw, anchors, *args, cfg))

    @tf.function(input_signature=[
        tf.TensorSpec([None, None, N, C], tf.float32), tf.TensorSpec([None, None, N, 4], tf.float32),
        tf.TensorSpec([None, None, N, 4], tf.float32), tf.TensorSpec([None], tf.float32),
        tf.TensorSpec([None, 2], tf.float32)])
    def serve(cls, box, sigma, scale, shape):
        return postprocess({"cls": cls, "box": box, "sigma": sigma}, anchors, scale, shape, cfg)

    graph = _np(serve(raw["cls"], raw["box"], raw["sigma"], *args))
    assert set(graph) == set(eager)
    for key in eager:
        np.testing.assert_allclose(graph[key], eager[key], rtol=1e-5, atol=1e-5, err_msg=key)

    module = tf.Module()
    module.serve = serve
    tf.saved_model.save(module, str(tmp_path / "export"))
    loaded = tf.saved_model.load(str(tmp_path / "export"))
    served = _np(loaded.serve(raw["cls"], raw["box"], raw["sigma"], *args))
    for key in eager:
        np.testing.assert_allclose(served[key], eager[key], rtol=1e-5, atol=1e-5, err_msg=key)


def test_config_yaml_resolves_with_a_decoding_group():
    node = OmegaConf.load(REPO / "conf/postprocess/default.yaml")
    root = OmegaConf.create({"decoding": {"name": "nflow", "quadrature_points": 8}, "postprocess": node})
    cfg = postprocess_config_from_dict(OmegaConf.to_container(root.postprocess, resolve=True))
    assert cfg.decoding == "nflow" and cfg.nms_method == "soft" and cfg.max_detections == 100
    assert decoder_options(cfg.decoding, cfg.decoding_options) == {"quadrature_points": 8}
    assert decoder_options("lognormal", {"name": "sample", "samples": 3, "seed": 0}) == {}
    alone = OmegaConf.to_container(OmegaConf.create({"postprocess": node}).postprocess, resolve=True)
    assert postprocess_config_from_dict(alone) == PostprocessConfig()
    with pytest.raises(ValueError, match="unknown postprocess config keys"):
        postprocess_config_from_dict({"nms": "soft"})
    with pytest.raises(ValueError, match="unknown decoding method"):
        PostprocessConfig(decoding="magic")


def test_a_degenerate_anchor_gives_finite_aleatoric_and_epistemic_stds():
    """One anchor with an exploding size code and σ in one MC sample (a barely trained model): every output of
    the kept detections is finite (no inf σ, no NaN MC std from inf - inf), so calibration can use them."""
    raw = _raw(t=3, with_sigma=True, seed=4)
    raw["cls"][:, :, 0] = 8.0                                     # the degenerate anchor is the top detection
    raw["box"][1, :, 0] = [0.0, 0.0, 80.0, 95.0]
    raw["sigma"][2, :, 0] = [3e4, -50.0, 1e8, 60.0]
    cfg = PostprocessConfig(decoding="lognormal", max_detections=20, max_nms_inputs=10, total_sigma=True)
    out = _np(postprocess(raw, _anchors(), np.ones(2, np.float32), np.full((2, 2), 1000.0, np.float32), cfg))
    for key in ("boxes", "al_std", "ep_std", "total_std", "scores"):
        assert np.all(np.isfinite(out[key])), key
    assert np.all(out["ep_std"][:, 0] > 1e3)                      # still flagged as hugely uncertain
