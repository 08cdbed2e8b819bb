"""Anchors, box coder and target assignment."""
import math

import numpy as np
import pytest
import tensorflow as tf

from uncertainty_det.errors import UserError
from uncertainty_det.model import box_coder
from uncertainty_det.model.anchors import (
    AnchorConfigError,
    feature_sizes,
    generate_anchors,
    num_anchors_per_location,
)
from uncertainty_det.model.target_assigner import assign_targets

# ----------------------------------------------------------------------------------------------- anchors


def test_counts_and_feature_sizes():
    assert num_anchors_per_location(3, (1.0, 2.0, 0.5)) == 9
    assert feature_sizes((128, 128)) == [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    assert feature_sizes((256, 512)) == [(32, 64), (16, 32), (8, 16), (4, 8), (2, 4)]
    # repeated ceil-halving: 100 -> 50 -> 25 -> 13, 130 -> 65 -> 33 -> 17
    assert feature_sizes((100, 130), 3, 3) == [(13, 17)]
    assert generate_anchors((128, 128)).shape == ((256 + 64 + 16 + 4 + 1) * 9, 4)
    assert generate_anchors((256, 512)).shape == ((2048 + 512 + 128 + 32 + 8) * 9, 4)
    assert generate_anchors((512, 1024)).shape == (98208, 4)  # reference §1.1
    a = generate_anchors((128, 128), num_scales=2, aspect_ratios=(1.0,))
    assert a.shape == (341 * 2, 4) and a.dtype == np.float32


def test_first_level3_anchors_by_hand():
    a = generate_anchors((128, 128))
    ratios = (1.0, 2.0, 0.5)
    for octave in range(3):
        for ri, r in enumerate(ratios):
            base = 4.0 * 8 * 2 ** (octave / 3)
            w, h = base * math.sqrt(r), base / math.sqrt(r)
            idx = octave * 3 + ri
            np.testing.assert_allclose(a[idx], [4 - h / 2, 4 - w / 2, 4 + h / 2, 4 + w / 2], rtol=1e-6)
            # next location in the same row: x centre 12
            np.testing.assert_allclose(a[9 + idx], [4 - h / 2, 12 - w / 2, 4 + h / 2, 12 + w / 2], rtol=1e-6)
            # first location of the second row (16 columns at level 3): y centre 12
            np.testing.assert_allclose(a[16 * 9 + idx], [12 - h / 2, 4 - w / 2, 12 + h / 2, 4 + w / 2], rtol=1e-6)
    np.testing.assert_allclose(a[0], [-12, -12, 20, 20])
    # first anchor of level 4 follows the 16*16*9 anchors of level 3: centre (8, 8), size 64
    np.testing.assert_allclose(a[16 * 16 * 9], [-24, -24, 40, 40])
    # the last anchor (level 7, single location, octave 2, ratio 0.5) is centred at (64, 64)
    c = (a[-1, :2] + a[-1, 2:]) / 2
    np.testing.assert_allclose(c, [64, 64])


def test_order_matches_head_reshape():
    """Anchor i must be the one a head output [B,h,w,A*k] -> [B,h*w*A,k] puts at row i."""
    h, w = 32, 64
    a = generate_anchors((256, 512))
    level3 = a[: h * w * 9].reshape(h, w, 9, 4)
    centres = (level3[..., :2] + level3[..., 2:]) / 2
    sizes = level3[..., 2:] - level3[..., :2]
    ys, xs = np.meshgrid((np.arange(h) + 0.5) * 8, (np.arange(w) + 0.5) * 8, indexing="ij")
    np.testing.assert_allclose(centres[..., 0], np.broadcast_to(ys[..., None], (h, w, 9)), atol=1e-4)
    np.testing.assert_allclose(centres[..., 1], np.broadcast_to(xs[..., None], (h, w, 9)), atol=1e-4)
    # octave-major: anchors 0-2 share octave 0 (same area), 3-5 octave 1, 6-8 octave 2
    area = sizes[0, 0, :, 0] * sizes[0, 0, :, 1]
    np.testing.assert_allclose(area.reshape(3, 3) / area.reshape(3, 3)[:, :1], 1.0, rtol=1e-5)
    np.testing.assert_allclose(area[[0, 3, 6]], (32 * 2 ** (np.arange(3) / 3)) ** 2, rtol=1e-5)
    ratio = sizes[0, 0, :, 1] / sizes[0, 0, :, 0]  # w / h
    np.testing.assert_allclose(ratio, [1, 2, 0.5] * 3, rtol=1e-5)


def test_non_divisible_raises_and_cache():
    with pytest.raises(ValueError, match=r"\(100, 128\).*multiple of 128.*\(128, 128\)"):
        generate_anchors((100, 128))
    with pytest.raises(UserError):
        generate_anchors((128, 96))
    with pytest.raises(AnchorConfigError):
        generate_anchors((128, 128), min_level=5, max_level=4)
    generate_anchors((32, 32), max_level=5)  # divisible by 2**5: fine
    a1 = generate_anchors((128, 128))
    a2 = generate_anchors([128, 128], aspect_ratios=[1.0, 2.0, 0.5])
    assert a1 is a2 and not a1.flags.writeable


# --------------------------------------------------------------------------------------------- box coder


def test_box_coder_by_hand_and_round_trip():
    anchor = np.array([[0.0, 0.0, 10.0, 20.0]], np.float32)
    box = np.array([[2.0, 4.0, 22.0, 14.0]], np.float32)  # centre (12, 9), size (20, 10)
    codes = box_coder.encode(box, anchor).numpy()
    np.testing.assert_allclose(codes, [[(12 - 5) / 10, (9 - 10) / 20, math.log(2.0), math.log(0.5)]], rtol=1e-6)

    rng = np.random.default_rng(0)
    anchors = generate_anchors((128, 128))
    yx = rng.uniform(-20, 140, (2, len(anchors), 2))
    hw = rng.uniform(0.5, 90, (2, len(anchors), 2))
    boxes = np.concatenate([yx, yx + hw], -1).astype(np.float32)
    enc = tf.function(box_coder.encode)
    dec = tf.function(box_coder.decode)
    codes = enc(boxes, anchors)  # [B,N,4] vs [N,4] broadcast
    assert codes.dtype == tf.float32 and codes.shape == boxes.shape
    np.testing.assert_allclose(dec(codes, anchors).numpy(), boxes, atol=2e-3)
    # zero-size boxes give finite codes
    assert np.all(np.isfinite(box_coder.encode(np.zeros((1, 4)), anchor).numpy()))


def test_box_coder_agrees_with_inference_decoding():
    try:
        from uncertainty_det.inference import decoding
    except Exception:  # written concurrently by another engineer
        pytest.skip("uncertainty_det.inference.decoding not available yet")
    if not (hasattr(decoding, "encode_boxes") and hasattr(decoding, "decode_plain")):
        pytest.skip("decoding.encode_boxes / decode_plain not available yet")
    rng = np.random.default_rng(1)
    anchors = generate_anchors((128, 128))
    yx = rng.uniform(0, 120, (len(anchors), 2))
    boxes = np.concatenate([yx, yx + rng.uniform(1, 60, (len(anchors), 2))], -1).astype(np.float32)
    ours = box_coder.encode(boxes, anchors).numpy()
    theirs = np.asarray(decoding.encode_boxes(boxes, anchors))
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-5)
    codes = rng.normal(0, 0.5, (len(anchors), 4)).astype(np.float32)
    theirs = np.asarray(decoding.decode_plain(codes, anchors))
    np.testing.assert_allclose(theirs, box_coder.decode(codes, anchors).numpy(), rtol=1e-4, atol=1e-3)


# ------------------------------------------------------------------------------------- target assignment


def _np_iou(a, b):
    ih = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iw = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ih * iw
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def _np_assign(gt_boxes, gt_classes, anchors, match, unmatched, gt_weights):
    """Independent per-image, per-GT loop reference (weight-0 GTs: ignore regions)."""
    n = len(anchors)
    cls = np.full(n, -1, np.int64)
    boxes = np.zeros((n, 4))
    w = np.ones(n)
    real = [j for j in range(len(gt_classes)) if gt_classes[j] > 0 and gt_weights[j] > 0]
    for j in range(len(gt_classes)):
        if gt_classes[j] > 0 and gt_weights[j] <= 0:
            # float32 like the graph, so that its ties among equal anchors (the best anchor) are ties here
            r_iou = _np_iou(anchors.astype(np.float32), gt_boxes[j][None].astype(np.float32))[:, 0]
            cls[(r_iou >= unmatched) | ((r_iou == r_iou.max()) & (r_iou > 0))] = -2
    if not real:
        return cls, boxes, w
    gts = gt_boxes[real].astype(np.float64)
    iou = _np_iou(anchors.astype(np.float64), gts)  # [N, R]
    best = iou.max(1)
    arg = iou.argmax(1)
    cls[(best >= unmatched) & (best < match)] = -2
    matched = {i: arg[i] for i in np.nonzero(best >= match)[0]}  # positives override ignore regions
    claims = {}
    for r in range(len(real)):
        i = int(iou[:, r].argmax())
        if iou[i, r] > 0 and (i not in claims or iou[i, r] > iou[i, claims[i]]):
            claims[i] = r
    matched.update(claims)
    for i, r in matched.items():
        j = real[r]
        cls[i] = gt_classes[j] - 1
        boxes[i] = box_coder.encode(gt_boxes[j][None], anchors[i][None]).numpy()[0]
        w[i] = gt_weights[j]
    return cls, boxes, w


def test_assign_targets_hand_built():
    anchors = generate_anchors((128, 128))
    k = 16 * 16 * 9 + 5 * 8 * 9 + 4  # a level-4 anchor
    exact = anchors[k].copy()
    tiny = np.array([50.0, 70.0, 53.0, 72.0], np.float32)  # 3x2 px: IoU far below 0.5 with every anchor
    pad = exact.copy()  # padding overlapping everything it could: must never match
    gt_boxes = np.stack([exact, tiny, pad])[None]
    gt_classes = np.array([[3, 1, -1]], np.int32)
    gt_weights = np.array([[0.7, 0.3, 9.0]], np.float32)

    fn = tf.function(
        lambda b, c, w: assign_targets(b, c, anchors, num_classes=4, match_threshold=0.5, unmatched_threshold=0.4,
                                       gt_weights=w)
    )
    t = {key: v.numpy() for key, v in fn(gt_boxes, gt_classes, gt_weights).items()}
    assert t["cls_targets"].shape == (1, len(anchors)) and t["cls_targets"].dtype == np.int32
    assert t["box_targets"].shape == (1, len(anchors), 4)

    # the GT equal to anchor k: positive, class 3 -> 2, zero codes, weight 0.7
    assert t["positive"][0, k] and t["cls_targets"][0, k] == 2
    np.testing.assert_allclose(t["box_targets"][0, k], 0.0, atol=1e-6)
    assert t["weights"][0, k] == pytest.approx(0.7)

    # tiny GT: force-matched to its best anchor only
    iou_tiny = _np_iou(anchors, tiny[None])[:, 0]
    assert iou_tiny.max() < 0.5
    best = int(iou_tiny.argmax())
    assert t["positive"][0, best] and t["cls_targets"][0, best] == 0
    assert t["weights"][0, best] == pytest.approx(0.3)
    assert np.sum(t["cls_targets"][0] == 0) == 1

    # ignore band: best IoU with real GTs in [0.4, 0.5) and not forced
    iou = _np_iou(anchors, np.stack([exact, tiny]))
    bi = iou.max(1)
    band = (bi >= 0.4) & (bi < 0.5)
    assert band.sum() > 0
    np.testing.assert_array_equal(t["cls_targets"][0][band & ~t["positive"][0]], -2)
    np.testing.assert_array_equal(t["positive"][0], (bi >= 0.5) | (np.arange(len(anchors)) == best))
    assert t["num_positives"][0] == t["positive"][0].sum()
    # non-positives: zero codes, weight 1; padding weight 9.0 never appears
    np.testing.assert_array_equal(t["box_targets"][0][~t["positive"][0]], 0.0)
    assert not np.any(t["weights"] == 9.0)

    ref = _np_assign(gt_boxes[0], gt_classes[0], anchors, 0.5, 0.4, gt_weights[0])
    np.testing.assert_array_equal(t["cls_targets"][0], ref[0])
    np.testing.assert_allclose(t["box_targets"][0], ref[1], atol=1e-5)
    np.testing.assert_allclose(t["weights"][0], ref[2])


def test_assign_targets_random_batch_against_loop_reference():
    anchors = generate_anchors((128, 128))
    rng = np.random.default_rng(3)
    b, m = 3, 6
    yx = rng.uniform(0, 110, (b, m, 2))
    hw = rng.uniform(2, 70, (b, m, 2))
    gt_boxes = np.concatenate([yx, yx + hw], -1).astype(np.float32)
    gt_classes = rng.integers(1, 6, (b, m)).astype(np.int32)
    gt_classes[0, 4:] = -1
    gt_classes[2, :] = -1  # an image without objects
    gt_weights = rng.uniform(0.1, 1.0, (b, m)).astype(np.float32)
    out = tf.function(lambda x, y, z: assign_targets(x, y, anchors, 5, 0.5, 0.4, gt_weights=z))(
        gt_boxes, gt_classes, gt_weights
    )
    for i in range(b):
        ref = _np_assign(gt_boxes[i], gt_classes[i], anchors, 0.5, 0.4, gt_weights[i])
        np.testing.assert_array_equal(out["cls_targets"][i].numpy(), ref[0])
        np.testing.assert_allclose(out["box_targets"][i].numpy(), ref[1], atol=1e-4)
        np.testing.assert_allclose(out["weights"][i].numpy(), ref[2], rtol=1e-6)
    assert out["num_positives"][2].numpy() == 0
    np.testing.assert_array_equal(out["cls_targets"][2].numpy(), -1)


def test_zero_weight_gts_are_ignore_regions():
    """A weight-0 GT (an uncertain pseudo-label) turns the anchors it would make positive into ignored ones,
    never into positives or background, and does not take a real GT's anchors."""
    anchors = generate_anchors((128, 128))
    k = 16 * 16 * 9 + 5 * 8 * 9 + 4
    exact = anchors[k].copy()
    tiny = np.array([50.0, 70.0, 53.0, 72.0], np.float32)
    far = np.array([90.0, 10.0, 120.0, 40.0], np.float32)
    boxes = np.stack([exact, tiny, far])[None]
    classes = np.array([[3, 1, 2]], np.int32)
    full = assign_targets(boxes, classes, anchors, 4, 0.5, 0.4, gt_weights=np.ones((1, 3), np.float32))
    part = assign_targets(boxes, classes, anchors, 4, 0.5, 0.4,
                          gt_weights=np.array([[1.0, 0.0, 0.0]], np.float32))
    pos_full, pos_part = full["positive"].numpy()[0], part["positive"].numpy()[0]
    cls_part = part["cls_targets"].numpy()[0]
    iou = _np_iou(anchors, np.stack([exact, tiny, far]))
    # the real GT keeps exactly its positives; the other two GTs' positives become ignored
    np.testing.assert_array_equal(pos_part, iou[:, 0] >= 0.5)
    assert cls_part[k] == 2 and part["num_positives"].numpy()[0] == pos_part.sum()
    gone = pos_full & ~pos_part
    assert gone.sum() >= 2 and np.all(cls_part[gone] == -2)
    assert cls_part[int(iou[:, 1].argmax())] == -2              # the tiny region's best anchor (IoU < 0.4)
    np.testing.assert_array_equal(cls_part[(iou[:, 2] >= 0.4) & ~pos_part], -2)
    # nowhere near a region or a GT, and no region's best anchor (ties included): background as before
    clear = (iou.max(1) < 0.4) & (iou[:, 1] < iou[:, 1].max()) & (iou[:, 2] < iou[:, 2].max())
    np.testing.assert_array_equal(cls_part[clear], -1)
    # against the loop reference on a random batch with some weight-0 GTs
    rng = np.random.default_rng(7)
    yx = rng.uniform(0, 110, (2, 6, 2))
    gt = np.concatenate([yx, yx + rng.uniform(2, 60, (2, 6, 2))], -1).astype(np.float32)
    cl = rng.integers(1, 5, (2, 6)).astype(np.int32)
    wt = np.where(rng.uniform(size=(2, 6)) < 0.4, 0.0, rng.uniform(0.2, 1.0, (2, 6))).astype(np.float32)
    assert (wt == 0).any() and (wt > 0).any()
    out = assign_targets(gt, cl, anchors, 5, 0.5, 0.4, gt_weights=wt)
    for i in range(2):
        ref = _np_assign(gt[i], cl[i], anchors, 0.5, 0.4, wt[i])
        np.testing.assert_array_equal(out["cls_targets"][i].numpy(), ref[0])
        np.testing.assert_allclose(out["box_targets"][i].numpy(), ref[1], atol=1e-4)
        np.testing.assert_allclose(out["weights"][i].numpy(), ref[2], rtol=1e-6)


def test_assign_targets_edge_cases():
    anchors = generate_anchors((128, 128))
    # no GT columns at all
    out = assign_targets(np.zeros((2, 0, 4), np.float32), np.zeros((2, 0), np.int32), anchors, 3)
    assert out["cls_targets"].shape == (2, len(anchors))
    np.testing.assert_array_equal(out["cls_targets"].numpy(), -1)
    np.testing.assert_array_equal(out["weights"].numpy(), 1.0)
    # unbatched input
    one = assign_targets(np.array([[0, 0, 32, 32]], np.float32), np.array([2], np.int32), anchors, 3)
    assert one["cls_targets"].shape == (len(anchors),) and one["num_positives"].shape == ()
    assert one["cls_targets"].numpy()[np.argmax(np.all(anchors == [-4, -4, 28, 28], axis=1))] == 1
    assert one["num_positives"].numpy() >= 1
    # two tiny GTs claiming the same best anchor: the higher IoU wins; exact duplicates: the lower index wins
    small = np.array([60.0, 60.0, 64.0, 64.0], np.float32)
    smaller = np.array([61.0, 61.0, 63.0, 63.0], np.float32)
    iou = _np_iou(anchors, np.stack([small, smaller]))
    k = int(iou[:, 0].argmax())
    assert int(iou[:, 1].argmax()) == k and iou[k, 0] > iou[k, 1]
    out = assign_targets(np.stack([smaller, small, small])[None], np.array([[1, 2, 3]], np.int32), anchors, 3)
    assert out["cls_targets"].numpy()[0, k] == 1 and out["num_positives"].numpy()[0] == 1
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_classes"):
        assign_targets(np.array([[[0, 0, 32, 32]]], np.float32), np.array([[7]], np.int32), anchors, 3)
    with pytest.raises(ValueError):
        assign_targets(np.zeros((1, 1, 4)), np.ones((1, 1)), anchors, 3, match_threshold=0.4, unmatched_threshold=0.5)


def test_assign_targets_ignores_padding_columns_wherever_they_are():
    # the assigner drops the columns after the batch's last real GT: heavy trailing padding, padding between
    # real GTs and a class-less image must give the same targets as the loop reference on the real GTs
    anchors = generate_anchors((128, 128))
    rng = np.random.default_rng(11)
    b, m = 3, 100
    yx = rng.uniform(0, 110, (b, m, 2))
    hw = rng.uniform(12, 70, (b, m, 2))  # not so small that two anchors tie for a GT's force match
    gt_boxes = np.concatenate([yx, yx + hw], -1).astype(np.float32)
    gt_classes = np.full((b, m), -1, np.int32)
    gt_classes[0, [0, 1, 2]] = [1, 2, 3]
    gt_classes[1, [0, 3, 7]] = [4, 1, 2]  # padding in between; the batch's last real GT is column 7
    gt_weights = rng.uniform(0.1, 1.0, (b, m)).astype(np.float32)
    fn = tf.function(lambda x, y, z: assign_targets(x, y, anchors, 5, 0.5, 0.4, gt_weights=z))
    out = fn(gt_boxes, gt_classes, gt_weights)
    for i in range(b):
        ref = _np_assign(gt_boxes[i], gt_classes[i], anchors, 0.5, 0.4, gt_weights[i])
        np.testing.assert_array_equal(out["cls_targets"][i].numpy(), ref[0])
        np.testing.assert_allclose(out["box_targets"][i].numpy(), ref[1], atol=1e-4)
        np.testing.assert_allclose(out["weights"][i].numpy(), ref[2], rtol=1e-6)
    compact = fn(gt_boxes[:, :8], gt_classes[:, :8], gt_weights[:, :8])
    for key in out:
        np.testing.assert_array_equal(out[key].numpy(), compact[key].numpy())
    np.testing.assert_array_equal(out["cls_targets"][2].numpy(), -1)
