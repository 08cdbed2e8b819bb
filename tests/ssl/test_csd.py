"""CSD flip-consistency loss, background mask, ramp weight, and the anchor mirror symmetry it relies on."""
import math

import numpy as np
import pytest
import tensorflow as tf

from uncertainty_det.errors import UserError
from uncertainty_det.model import box_coder
from uncertainty_det.model.anchors import feature_sizes, generate_anchors, num_anchors_per_location
from uncertainty_det.ssl.csd import (
    CSDConfigError,
    background_mask,
    csd_consistency_loss,
    csd_ramp_weight,
    flip_maps,
)

A, C = 2, 3
SHAPES = [(2, 3, 4), (2, 2, 2)]  # (B, h, w) per level, tiny


def _random_maps(seed, channels):
    rng = np.random.default_rng(seed)
    return [tf.constant(rng.normal(size=(b, h, w, channels)).astype(np.float32)) for b, h, w in SHAPES]


def _mirror_views(cls, box, num_anchors):
    """What a perfectly flip-equivariant head would output on the mirrored batch."""
    sign = np.tile(np.array([1.0, -1.0, 1.0, 1.0], np.float32), num_anchors)
    sign = np.concatenate([sign, np.ones(box[0].shape[-1] - 4 * num_anchors, np.float32)])
    return flip_maps(cls), [m * sign for m in flip_maps(box)]


# ----------------------------------------------------------------------------------------------- NumPy reference


def _np_log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _np_mask(cls_levels, threshold, scope):
    out = []
    for lg in cls_levels:
        b, h, w, _ = lg.shape
        m = 1.0 / (1.0 + np.exp(-lg.reshape(b, h, w, A, C).max(axis=-1)))
        axes = (1, 2, 3) if scope == "image" else (0, 1, 2, 3)
        out.append((m > threshold * m.max(axis=axes, keepdims=True)).astype(np.float64))
    return out


def _np_cls_term(cls_o, cls_f_raw, divergence, masks, reduction="anchor"):
    """Per level: the divergence summed over kept anchors, / kept anchors ("anchor") or / B ("image")."""
    vals = []
    for lo, lf, mask in zip(cls_o, cls_f_raw, masks):
        lf = lf[:, :, ::-1]  # flip back along w
        b, h, w, _ = lo.shape
        lp = _np_log_softmax(lo.reshape(b, h, w, A, C).astype(np.float64))
        lq = _np_log_softmax(lf.reshape(b, h, w, A, C).astype(np.float64))
        p, q = np.exp(lp), np.exp(lq)
        if divergence == "kl":
            d = (p * (lp - lq)).sum(-1)
        else:
            m = 0.5 * (p + q)
            d = 0.5 * (p * np.log(p / m)).sum(-1) + 0.5 * (q * np.log(q / m)).sum(-1)
        denom = mask.sum() if reduction == "anchor" else b
        vals.append((d * mask).sum() / denom if denom else 0.0)
    return float(np.mean(vals))


# ----------------------------------------------------------------------------------------------- flip / anchors


def test_flip_maps_reverses_width_only():
    x = tf.reshape(tf.range(2 * 2 * 3 * 2, dtype=tf.float32), (2, 2, 3, 2))
    (y,) = flip_maps([x])
    np.testing.assert_array_equal(y.numpy(), x.numpy()[:, :, ::-1, :])
    np.testing.assert_array_equal(flip_maps(flip_maps([x]))[0].numpy(), x.numpy())


def test_anchor_centres_mirror_symmetric():
    image_size = (64, 96)  # width 96 = 3 * 32, a multiple of the largest stride 2**5
    min_level, max_level = 3, 5
    n_a = num_anchors_per_location()
    anchors = generate_anchors(image_size, min_level, max_level)
    width = image_size[1]
    start = 0
    for (fh, fw) in feature_sizes(image_size, min_level, max_level):
        level = anchors[start:start + fh * fw * n_a].reshape(fh, fw, n_a, 4).astype(np.float64)
        start += fh * fw * n_a
        cx = 0.5 * (level[..., 1] + level[..., 3])
        aw = level[..., 3] - level[..., 1]
        # centre of column j is W - centre of column w_l-1-j, same anchor index, same shape
        np.testing.assert_allclose(cx, width - cx[:, ::-1, :], atol=1e-3)
        np.testing.assert_allclose(aw, aw[:, ::-1, :], atol=1e-3)
        np.testing.assert_allclose(level[..., 1], width - level[:, ::-1, :, 3], atol=1e-3)
    assert start == anchors.shape[0]


def test_mirrored_box_codes_are_flipped_maps_with_tx_negated():
    """Encoding a box and its mirror image against the anchors gives maps related by flip + tx sign."""
    image_size = (32, 64)
    n_a = num_anchors_per_location()
    anchors = generate_anchors(image_size, 3, 4)
    (fh, fw), _ = feature_sizes(image_size, 3, 4)
    lvl = anchors[: fh * fw * n_a]
    box = np.array([[5.0, 7.0, 20.0, 30.0]], np.float32)
    mirrored = np.array([[5.0, 64 - 30.0, 20.0, 64 - 7.0]], np.float32)
    codes = box_coder.encode(box, lvl).numpy().reshape(fh, fw, n_a, 4)
    codes_m = box_coder.encode(mirrored, lvl).numpy().reshape(fh, fw, n_a, 4)
    back = codes_m[:, ::-1]
    np.testing.assert_allclose(back[..., [0, 2, 3]], codes[..., [0, 2, 3]], atol=1e-5)
    np.testing.assert_allclose(back[..., 1], -codes[..., 1], atol=1e-5)


# ----------------------------------------------------------------------------------------------- loss


@pytest.mark.parametrize("divergence", ["jsd", "kl"])
@pytest.mark.parametrize("box_channels", [4, 8])
def test_identical_views_give_zero_loss(divergence, box_channels):
    cls = _random_maps(0, A * C)
    box = _random_maps(1, A * box_channels)
    cls_f, box_f = _mirror_views(cls, box, A)
    out = csd_consistency_loss(cls, box, cls_f, box_f, A, C, divergence=divergence)
    assert abs(float(out["cls"])) < 1e-6
    assert abs(float(out["box"])) < 1e-6
    assert 0.0 < float(out["mask_fraction"]) <= 1.0
    # sanity: forgetting the tx sign would not be zero
    bad = csd_consistency_loss(cls, box, cls_f, flip_maps(box), A, C, divergence=divergence)
    assert float(bad["box"]) > 1e-2


def _hand_case():
    """1 level, B=1, h=1, w=2, A=1, C=2."""
    cls_o = tf.constant([[[[3.0, 0.0], [-5.0, -6.0]]]])  # col 0 confident, col 1 background
    # flipped view (raw, before flipping back): its col 1 is the original col 0
    cls_f = tf.constant([[[[4.0, 0.0], [-7.0, -8.0]]]])  # back-flipped: col 0 -> [-7,-8], col 1 -> [4, 0]
    box_o = tf.constant([[[[0.1, 0.2, 0.3, 0.4], [1.0, 1.0, 1.0, 1.0]]]])
    box_f = tf.constant([[[[0.0, 0.0, 0.0, 0.0], [0.2, 0.1, 0.0, 0.5]]]])
    return cls_o, box_o, cls_f, box_f


def test_box_term_hand_computed():
    cls_o, box_o, cls_f, box_f = _hand_case()
    # back-flipped box_f: col0 = [0.2, 0.1, 0.0, 0.5], col1 = 0
    # col0: (0.1-0.2)^2=0.01, (0.2+0.1)^2=0.09, (0.3-0)^2=0.09, (0.4-0.5)^2=0.01 -> mean 0.05
    # col1: all differences 1 -> mean 1
    out = csd_consistency_loss([cls_o], [box_o], [cls_f], [box_f], 1, 2, background_elimination=False)
    assert float(out["box"]) == pytest.approx((0.05 + 1.0) / 2, abs=1e-6)
    assert float(out["mask_fraction"]) == pytest.approx(1.0)
    # masked: the ORIGINAL view keeps only col 0 (sigmoid(-5) < 0.4 sigmoid(3)); a mask from the flipped
    # view would keep col 1 instead and give 1.0
    out = csd_consistency_loss([cls_o], [box_o], [cls_f], [box_f], 1, 2, background_elimination=True)
    assert float(out["box"]) == pytest.approx(0.05, abs=1e-6)
    assert float(out["mask_fraction"]) == pytest.approx(0.5)
    # class term on the kept anchor only, checked against NumPy KL
    lp = _np_log_softmax(np.array([3.0, 0.0]))
    lq = _np_log_softmax(np.array([-7.0, -8.0]))
    kl = float((np.exp(lp) * (lp - lq)).sum())
    out = csd_consistency_loss([cls_o], [box_o], [cls_f], [box_f], 1, 2, divergence="kl")
    assert float(out["cls"]) == pytest.approx(kl, rel=1e-5)


def test_nothing_kept_gives_zero_not_nan():
    cls_o, box_o, cls_f, box_f = _hand_case()
    out = csd_consistency_loss([cls_o], [box_o], [cls_f], [box_f], 1, 2, background_threshold=1.0)
    assert float(out["box"]) == 0.0 and float(out["cls"]) == 0.0 and float(out["mask_fraction"]) == 0.0


def test_jsd_symmetric_and_matches_numpy():
    cls_a = _random_maps(2, A * C)
    cls_b = _random_maps(3, A * C)
    box = _random_maps(4, A * 4)
    ab = csd_consistency_loss(cls_a, box, flip_maps(cls_b), flip_maps(box), A, C, background_elimination=False)
    ba = csd_consistency_loss(cls_b, box, flip_maps(cls_a), flip_maps(box), A, C, background_elimination=False)
    assert float(ab["cls"]) == pytest.approx(float(ba["cls"]), rel=1e-6)
    assert float(ab["cls"]) > 1e-3
    a_np = [m.numpy() for m in cls_a]
    b_flip_np = [m.numpy() for m in flip_maps(cls_b)]
    ones = [np.ones(m.shape[:3] + (A,)) for m in a_np]
    assert float(ab["cls"]) == pytest.approx(_np_cls_term(a_np, b_flip_np, "jsd", ones), rel=1e-5)
    # with background elimination (both scopes, both class reductions)
    for scope in ("image", "batch"):
        masks = _np_mask(a_np, 0.4, scope)
        for reduction in ("anchor", "image"):
            out = csd_consistency_loss(cls_a, box, flip_maps(cls_b), flip_maps(box), A, C, background_scope=scope,
                                       class_reduction=reduction)
            want = _np_cls_term(a_np, b_flip_np, "jsd", masks, reduction)
            assert float(out["cls"]) == pytest.approx(want, rel=1e-5)
        frac = sum(m.sum() for m in masks) / sum(m.size for m in masks)
        assert float(out["mask_fraction"]) == pytest.approx(frac)


def test_class_reduction_mean_over_kept_anchors_or_sum_per_image():
    """Hand case, no mask, 1 level, B=1, w=2: the two per-anchor KLs are averaged ("anchor") or summed
    ("image": / B = 1); the anchor mean stays bounded by ln 2 for JSD however many anchors are kept."""
    cls_o, box_o, cls_f, box_f = _hand_case()
    # back-flipped flip logits: col 0 -> [-7, -8], col 1 -> [4, 0]
    kls = []
    for lo, lf in (([3.0, 0.0], [-7.0, -8.0]), ([-5.0, -6.0], [4.0, 0.0])):
        lp, lq = _np_log_softmax(np.array(lo)), _np_log_softmax(np.array(lf))
        kls.append(float((np.exp(lp) * (lp - lq)).sum()))
    kw = dict(divergence="kl", background_elimination=False)
    mean = csd_consistency_loss([cls_o], [box_o], [cls_f], [box_f], 1, 2, class_reduction="anchor", **kw)
    total = csd_consistency_loss([cls_o], [box_o], [cls_f], [box_f], 1, 2, class_reduction="image", **kw)
    assert float(mean["cls"]) == pytest.approx(np.mean(kls), rel=1e-5)
    assert float(total["cls"]) == pytest.approx(np.sum(kls), rel=1e-5)
    big = [tf.constant(np.random.default_rng(0).normal(scale=5.0, size=(2, 8, 8, A * C)).astype(np.float32))]
    other = [tf.constant(np.random.default_rng(1).normal(scale=5.0, size=(2, 8, 8, A * C)).astype(np.float32))]
    boxes = [tf.zeros((2, 8, 8, 4 * A))]
    jsd = csd_consistency_loss(big, boxes, other, boxes, A, C, background_elimination=False)
    assert 0.1 < float(jsd["cls"]) <= math.log(2.0)
    summed = csd_consistency_loss(big, boxes, other, boxes, A, C, background_elimination=False,
                                  class_reduction="image")
    assert float(summed["cls"]) == pytest.approx(float(jsd["cls"]) * 8 * 8 * A, rel=1e-5)  # B cancels: 2*64*A/2
    with pytest.raises(CSDConfigError, match="class reduction"):
        csd_consistency_loss(big, boxes, other, boxes, A, C, class_reduction="sum")


def test_kl_one_way_matches_numpy_and_is_asymmetric():
    cls_a = _random_maps(5, A * C)
    cls_b = [2.0 * m for m in _random_maps(6, A * C)]
    box = _random_maps(7, A * 4)
    ab = csd_consistency_loss(cls_a, box, flip_maps(cls_b), flip_maps(box), A, C, divergence="kl",
                              background_elimination=False)
    ba = csd_consistency_loss(cls_b, box, flip_maps(cls_a), flip_maps(box), A, C, divergence="kl",
                              background_elimination=False)
    a_np = [m.numpy() for m in cls_a]
    b_flip_np = [m.numpy() for m in flip_maps(cls_b)]
    ones = [np.ones(m.shape[:3] + (A,)) for m in a_np]
    assert float(ab["cls"]) == pytest.approx(_np_cls_term(a_np, b_flip_np, "kl", ones), rel=1e-5)
    assert abs(float(ab["cls"]) - float(ba["cls"])) > 1e-3


def test_eight_channel_box_maps_use_only_codes():
    cls = _random_maps(8, A * C)
    box4_o, box4_f = _random_maps(9, A * 4), _random_maps(10, A * 4)
    sig_o, sig_f = _random_maps(11, A * 4), _random_maps(12, A * 4)
    box8_o = [tf.concat([b, s], -1) for b, s in zip(box4_o, sig_o)]
    box8_f = [tf.concat([b, s], -1) for b, s in zip(box4_f, sig_f)]
    cls_f = flip_maps(_random_maps(13, A * C))
    r4 = csd_consistency_loss(cls, box4_o, cls_f, box4_f, A, C)
    r8 = csd_consistency_loss(cls, box8_o, cls_f, box8_f, A, C)
    for k in ("cls", "box", "mask_fraction"):
        assert float(r4[k]) == pytest.approx(float(r8[k]), rel=1e-6)
    assert float(r4["box"]) > 0


def test_gradients_flow_to_both_views():
    cls_o = [tf.Variable(m) for m in _random_maps(14, A * C)]
    cls_f = [tf.Variable(m) for m in _random_maps(15, A * C)]
    box_o = [tf.Variable(m) for m in _random_maps(16, A * 4)]
    box_f = [tf.Variable(m) for m in _random_maps(17, A * 4)]
    with tf.GradientTape() as tape:
        out = csd_consistency_loss(cls_o, box_o, cls_f, box_f, A, C)
        loss = out["cls"] + out["box"]
    grads = tape.gradient(loss, cls_o + cls_f + box_o + box_f)
    for g in grads:
        assert g is not None
        g = g.numpy()
        assert np.all(np.isfinite(g)) and np.abs(g).max() > 0


def test_loss_works_inside_tf_function():
    cls = _random_maps(18, A * C)
    box = _random_maps(19, A * 4)
    cls_f = _random_maps(20, A * C)
    fn = tf.function(lambda a, b, c, d: csd_consistency_loss(a, b, c, d, A, C)["cls"])
    eager = csd_consistency_loss(cls, box, cls_f, box, A, C)["cls"]
    assert float(fn(cls, box, cls_f, box)) == pytest.approx(float(eager), rel=1e-6)


def test_bad_inputs_raise_user_errors():
    cls = _random_maps(0, A * C)
    box = _random_maps(1, A * 4)
    with pytest.raises(CSDConfigError, match="channels"):
        csd_consistency_loss(cls, box, cls, box, A, C + 1)
    with pytest.raises(CSDConfigError, match="box_orig"):
        csd_consistency_loss(cls, [b[..., :-1] for b in box], cls, box, A, C)
    with pytest.raises(CSDConfigError, match="divergence"):
        csd_consistency_loss(cls, box, cls, box, A, C, divergence="js")
    with pytest.raises(CSDConfigError, match="levels"):
        csd_consistency_loss(cls, box, cls[:1], box, A, C)
    with pytest.raises(UserError, match="scope"):
        background_mask(cls, A, C, scope="level")
    with pytest.raises(UserError, match="list"):
        flip_maps(cls[0])


# ----------------------------------------------------------------------------------------------- mask


def test_background_mask_scopes_differ():
    # A=1, C=2, B=2, one level 1x2. image 0: confident anchor (sigmoid 5 = 0.9933) and a background one;
    # image 1: sigmoid(0)=0.5 and sigmoid(-1)=0.2689
    logits = tf.constant([
        [[[5.0, -9.0], [-8.0, -9.0]]],
        [[[0.0, -3.0], [-1.0, -4.0]]],
    ])
    (img,) = background_mask([logits], 1, 2, 0.4, "image")
    (bat,) = background_mask([logits], 1, 2, 0.4, "batch")
    assert img.shape == (2, 1, 2, 1)
    # image scope: image 1's bar is 0.4 * 0.5 = 0.2, both its anchors pass
    np.testing.assert_array_equal(img.numpy()[..., 0], [[[1, 0]], [[1, 1]]])
    # batch scope: the bar is 0.4 * 0.9933 = 0.397 for both images; 0.2689 fails
    np.testing.assert_array_equal(bat.numpy()[..., 0], [[[1, 0]], [[1, 0]]])


def test_background_mask_uses_max_over_classes_per_anchor():
    # A=2, C=2 on a 1x1 map: anchor 0 = channels 0,1; anchor 1 = channels 2,3
    logits = tf.constant([[[[-6.0, 2.0, -6.0, -5.0]]]])
    (mask,) = background_mask([logits], 2, 2)
    np.testing.assert_array_equal(mask.numpy().reshape(-1), [1, 0])


# ----------------------------------------------------------------------------------------------- ramp


def test_ramp_values_paper_schedule():
    big_t = 120000  # T_up = 32000, T_down = 100000, ramp-down length 20000
    assert float(csd_ramp_weight(0, big_t)) == 0.0
    assert float(csd_ramp_weight(16000, big_t)) == pytest.approx(math.exp(-5 * 0.25), rel=1e-6)
    assert float(csd_ramp_weight(31999, big_t)) == pytest.approx(math.exp(-5 * (1 / 32000) ** 2), rel=1e-6)
    assert float(csd_ramp_weight(32000, big_t)) == 1.0
    assert float(csd_ramp_weight(60000, big_t)) == 1.0
    assert float(csd_ramp_weight(100000, big_t)) == 1.0
    assert float(csd_ramp_weight(110000, big_t)) == pytest.approx(math.exp(-12.5 * 0.25), rel=1e-6)
    assert float(csd_ramp_weight(big_t, big_t)) == pytest.approx(math.exp(-12.5), rel=1e-5)


def test_ramp_integer_boundaries_and_tensors():
    big_t = 1000  # T_up = int(32000*1000/120000) = 266, T_down = 833, ramp-down length 166
    assert float(csd_ramp_weight(1, big_t)) == pytest.approx(math.exp(-5 * (1 - 1 / 266) ** 2), rel=1e-6)
    assert float(csd_ramp_weight(266, big_t)) == 1.0
    assert float(csd_ramp_weight(833, big_t)) == 1.0
    assert float(csd_ramp_weight(834, big_t)) == pytest.approx(math.exp(-12.5 * (1 - 166 / 166) ** 2), rel=1e-6)
    assert float(csd_ramp_weight(900, big_t)) == pytest.approx(math.exp(-12.5 * (1 - 100 / 166) ** 2), rel=1e-6)
    step = tf.Variable(900, dtype=tf.int64)
    fn = tf.function(lambda s: csd_ramp_weight(s, tf.constant(big_t)))
    assert float(fn(step)) == pytest.approx(float(csd_ramp_weight(900, big_t)), rel=1e-6)
    assert float(csd_ramp_weight(tf.constant(0), big_t)) == 0.0


@pytest.mark.parametrize("big_t", [1, 2, 3, 5, 7])
def test_ramp_tiny_totals_are_finite(big_t):
    for t in range(big_t + 2):
        w = float(csd_ramp_weight(t, big_t))
        assert math.isfinite(w) and 0.0 <= w <= 1.0
    assert float(csd_ramp_weight(0, big_t)) == 0.0


def test_ramp_bad_args():
    with pytest.raises(CSDConfigError, match="total_steps"):
        csd_ramp_weight(0, 0)
    with pytest.raises(CSDConfigError, match="step"):
        csd_ramp_weight(-1, 10)
    with pytest.raises(CSDConfigError, match="step"):
        csd_ramp_weight(1.5, 10)
