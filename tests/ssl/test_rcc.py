"""RCC rare-class crop collages: crop windows, boxes in crops, augmentation, scale layout, collage geometry."""
import numpy as np
import pytest
from PIL import Image

from uncertainty_det.errors import UserError
from uncertainty_det.ssl.rcc import (
    AUGMENT_OPS,
    COLLAGE_FILL,
    RCCInputError,
    augment_crop,
    boxes_in_crop,
    context_crop_box,
    extract_rare_crops,
    make_collages,
    scale_split,
)

RED, GREEN, BLUE, WHITE = (200, 10, 10), (10, 200, 10), (10, 10, 200), (250, 250, 250)


def _solid(h, w, colour):
    return np.broadcast_to(np.array(colour, np.uint8), (h, w, 3)).copy()


def _pil_resize(img, h, w):
    return np.asarray(Image.fromarray(img).resize((w, h), Image.Resampling.BILINEAR))


# ----------------------------------------------------------------------------------------------- crop windows


def test_context_crop_box_arithmetic_and_clipping():
    # h = 20, w = 40, grow 0.5: 10 rows above/below, 20 columns left/right
    np.testing.assert_array_equal(context_crop_box([10, 20, 30, 60], (100, 100), 0.5), [0, 0, 40, 80])
    np.testing.assert_array_equal(context_crop_box([30, 40, 50, 60], (100, 100), 0.25), [25, 35, 55, 65])
    # clipped to the image
    np.testing.assert_array_equal(context_crop_box([5, 5, 25, 95], (50, 100), 1.0), [0, 0, 45, 100])
    # fractional: rounded outwards (floor start, ceil end): h = 9.75, 0.975 -> [9.525, 21.225]
    np.testing.assert_array_equal(context_crop_box([10.5, 10.5, 20.25, 20.25], (40, 40), 0.1), [9, 9, 22, 22])
    np.testing.assert_array_equal(context_crop_box([3, 4, 7, 9], (20, 20), 0.0), [3, 4, 7, 9])
    with pytest.raises(RCCInputError, match="grow"):
        context_crop_box([0, 0, 1, 1], (10, 10), -0.1)
    with pytest.raises(UserError, match="ymax < ymin"):
        context_crop_box([5, 0, 1, 1], (10, 10), 0.5)
    with pytest.raises(RCCInputError, match="one"):
        context_crop_box([0, 0, 1], (10, 10), 0.5)


def test_boxes_in_crop_crafted():
    crop = [10, 10, 50, 50]
    boxes = np.array([
        [20, 20, 30, 30],   # inside
        [0, 0, 100, 100],   # spans the whole crop: kept (the reference's edge test dropped it)
        [20, 49, 30, 60],   # clipped to a 1 px sliver: dropped
        [60, 60, 70, 70],   # outside
        [5, 40, 25, 70],    # partly inside
        [10, 50, 20, 60],   # touches the right edge only: no area
        [12, 12, 14.5, 30],  # clipped height 2.5 > 2: kept
        [12, 12, 14, 30],   # height exactly 2: dropped (strict)
    ], np.float32)
    classes = np.arange(1, 9)
    kb, kc = boxes_in_crop(boxes, classes, crop)
    np.testing.assert_array_equal(kc, [1, 2, 5, 7])
    np.testing.assert_allclose(kb, [[10, 10, 20, 20], [0, 0, 40, 40], [0, 30, 15, 40], [2, 2, 4.5, 20]])
    assert kb.dtype == np.float32 and kc.dtype == np.int64
    kb, kc = boxes_in_crop(boxes, classes, crop, min_size=0)
    assert 3 in kc.tolist() and 8 in kc.tolist() and 6 not in kc.tolist()
    kb, kc = boxes_in_crop(np.zeros((0, 4)), [], crop)
    assert kb.shape == (0, 4) and kc.shape == (0,)
    with pytest.raises(RCCInputError, match="one class id per box"):
        boxes_in_crop(boxes, classes[:3], crop)


def test_extract_rare_crops():
    img = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    boxes = np.array([[20, 30, 30, 40], [0, 0, 60, 80], [50, 70, 55, 75]], np.float32)
    classes = np.array([5, 1, 2])
    crops = extract_rare_crops([img], [boxes], [classes], target_classes=[5], rng=np.random.default_rng(3))
    assert len(crops) == 1
    grow = np.random.default_rng(3).uniform(0.5, 1.0)
    y0, x0, y1, x1 = context_crop_box(boxes[0], (60, 80), grow)
    crop, kb, kc = crops[0]
    np.testing.assert_array_equal(crop, img[y0:y1, x0:x1])
    np.testing.assert_array_equal(kc, [5, 1])  # the rare box and the big box spanning the crop
    np.testing.assert_allclose(kb[0], [20 - y0, 30 - x0, 30 - y0, 40 - x0])
    np.testing.assert_allclose(kb[1], [0, 0, y1 - y0, x1 - x0])
    # seeded: same result again; rare class absent -> nothing
    again = extract_rare_crops([img], [boxes], [classes], [5], rng=3)
    np.testing.assert_array_equal(again[0][0], crops[0][0])
    assert extract_rare_crops([img], [boxes], [classes], [9], rng=3) == []
    # crops with >= max_boxes boxes are skipped
    assert extract_rare_crops([img], [boxes], [classes], [5], rng=3, max_boxes=2) == []
    with pytest.raises(RCCInputError, match="one entry per image"):
        extract_rare_crops([img], [boxes], [], [5], rng=3)
    with pytest.raises(RCCInputError, match="uint8"):
        extract_rare_crops([img.astype(np.float32)], [boxes], [classes], [5], rng=3)


# ----------------------------------------------------------------------------------------------- augmentation


def test_augment_flip_moves_box():
    img = _solid(10, 20, (0, 0, 0))
    img[1:4, 2:5] = WHITE
    out, b = augment_crop(img, np.array([[1, 2, 4, 5]]), rng=0, op="hflip")
    np.testing.assert_allclose(b, [[1, 15, 4, 18]])
    assert np.all(out[1:4, 15:18] == WHITE) and out.sum() == img.sum()
    assert np.all(out[1:4, 2:5] == 0)


@pytest.mark.parametrize("op", [o for o in AUGMENT_OPS if o != "hflip"])
def test_augment_photometric_ops_keep_boxes(op):
    rng = np.random.default_rng(1)
    img = rng.integers(30, 220, (12, 16, 3), dtype=np.uint8)
    boxes = np.array([[1.0, 2.0, 5.0, 9.0]])
    out, b = augment_crop(img, boxes, np.random.default_rng(7), op=op)
    assert out.dtype == np.uint8 and out.shape == img.shape
    np.testing.assert_allclose(b, boxes)
    assert not np.array_equal(out, img)
    again, _ = augment_crop(img, boxes, np.random.default_rng(7), op=op)
    np.testing.assert_array_equal(out, again)
    if op == "noise":
        assert np.abs(out.astype(int) - img.astype(int)).max() <= 20
    if op == "brightness":
        f = np.random.default_rng(7).uniform(0.7, 1.3)
        np.testing.assert_array_equal(out, np.clip(np.rint(img * f), 0, 255).astype(np.uint8))


def test_augment_random_op_and_bad_op():
    img = _solid(4, 4, RED)
    ops = set()
    for seed in range(40):
        out, _ = augment_crop(img, np.zeros((0, 4)), seed)
        assert out.dtype == np.uint8
        ops.add(int(np.random.default_rng(seed).integers(len(AUGMENT_OPS))))
    assert len(ops) == len(AUGMENT_OPS)
    with pytest.raises(RCCInputError, match="op"):
        augment_crop(img, np.zeros((0, 4)), 0, op="rotate")


# ----------------------------------------------------------------------------------------------- scale layout


def test_scale_split_layout():
    img = _solid(8, 8, GREEN)
    img[:, 4:] = BLUE
    out, b, c = scale_split(img, np.array([[0, 0, 8, 8]]), [3], min_size=0)
    assert out.shape == img.shape and out.dtype == np.uint8
    # cut at ceil(0.75*8) = 6: cells 6x6, 6x2, 2x6, 2x2, each the whole crop resized
    np.testing.assert_allclose(b, [[0, 0, 6, 6], [0, 6, 6, 8], [6, 0, 8, 6], [6, 6, 8, 8]])
    np.testing.assert_array_equal(c, [3, 3, 3, 3])
    np.testing.assert_array_equal(out[:6, :6], _pil_resize(img, 6, 6))
    np.testing.assert_array_equal(out[6:, :6], _pil_resize(img, 2, 6))
    # default min_size 2 drops the 2 px wide/high copies
    _, b2, c2 = scale_split(img, np.array([[0, 0, 8, 8]]), [3])
    np.testing.assert_allclose(b2, [[0, 0, 6, 6]])
    np.testing.assert_array_equal(c2, [3])
    # box scaling: a box in the top-right cell is squashed to a quarter of the width
    _, b3, _ = scale_split(_solid(20, 40, RED), np.array([[4, 8, 12, 24]]), [1], min_size=0)
    np.testing.assert_allclose(b3[1], [4 * 15 / 20, 30 + 8 * 10 / 40, 12 * 15 / 20, 30 + 24 * 10 / 40])


# ----------------------------------------------------------------------------------------------- collages


def test_single_crop_collage_geometry_and_pixels():
    crop = _solid(20, 30, RED)
    crop[:, 15:] = BLUE
    out = make_collages([(crop, np.array([[2, 3, 12, 13]]), np.array([7]))], (40, 100), rng=0)
    assert len(out) == 1
    img, b, c = out[0]
    assert img.shape == (40, 100, 3) and img.dtype == np.uint8
    # resized to height 40, width 30 * 40 / 20 = 60: boxes scaled by 2
    np.testing.assert_allclose(b, [[4, 6, 24, 26]])
    np.testing.assert_array_equal(c, [7])
    np.testing.assert_array_equal(img[:, :60], _pil_resize(crop, 40, 60))
    assert np.all(img[:, :29] == RED) and np.all(img[:, 31:60] == BLUE)
    assert np.all(img[:, 60:] == COLLAGE_FILL)


def test_collage_fill_order_and_cut_last_crop():
    colours = [RED, GREEN, BLUE]
    boxes = [
        np.array([[1, 1, 9, 9]]),
        np.array([[0, 0, 10, 10]]),
        np.array([[0, 0, 10, 10], [0, 6, 10, 10], [0, 4.5, 10, 6], [0, 4, 10, 6]]),
    ]
    crops = [(_solid(10, 10, col), bx, np.array([i + 1] * len(bx))) for i, (col, bx) in enumerate(zip(colours, boxes))]
    # collage 20 x 50: each crop becomes 20 x 20, so the third one is cut to 10 columns
    out = make_collages(crops, (20, 50), rng=np.random.default_rng(5))
    order = np.random.default_rng(5).permutation(3)
    assert len(out) == 1
    img, b, c = out[0]
    assert img.shape == (20, 50, 3)
    for slot, k in enumerate(order):
        lo, hi = 20 * slot, min(20 * slot + 20, 50)
        assert np.all(img[:, lo:hi] == colours[k])
    expected_b, expected_c = [], []
    for slot, k in enumerate(order):
        off = 20 * slot
        for bx in boxes[k]:
            y0, x0, y1, x1 = np.asarray(bx, float) * 2 + [0, off, 0, off]
            x0, x1 = min(x0, 50), min(x1, 50)
            if slot == 2 and x1 - x0 < 2:
                continue
            expected_b.append([y0, x0, y1, x1])
            expected_c.append(k + 1)
    np.testing.assert_allclose(b, expected_b)
    np.testing.assert_array_equal(c, expected_c)


def _random_crops(n, seed):
    rng = np.random.default_rng(seed)
    crops = []
    for i in range(n):
        h, w = int(rng.integers(8, 30)), int(rng.integers(8, 40))
        k = int(rng.integers(1, 5))
        y0 = rng.uniform(0, h - 4, k)
        x0 = rng.uniform(0, w - 4, k)
        bx = np.stack([y0, x0, np.minimum(y0 + rng.uniform(3, 10, k), h), np.minimum(x0 + rng.uniform(3, 10, k), w)], 1)
        crops.append((rng.integers(0, 255, (h, w, 3), dtype=np.uint8), bx, rng.integers(1, 8, k)))
    return crops


@pytest.mark.parametrize("opts", [{}, {"augment": True}, {"scale": True}, {"augment": True, "scale": True}])
def test_collages_boxes_inside_and_limits(opts):
    crops = _random_crops(12, 0)
    out = make_collages(crops, (24, 64), rng=1, max_boxes=6, **opts)
    assert out
    for img, b, c in out:
        assert img.shape == (24, 64, 3) and img.dtype == np.uint8
        assert b.shape[0] == c.shape[0] <= 6
        assert np.all(b[:, 0] >= 0) and np.all(b[:, 2] <= 24) and np.all(b[:, 1] >= 0) and np.all(b[:, 3] <= 64)
        assert np.all(b[:, 2] > b[:, 0]) and np.all(b[:, 3] > b[:, 1])


def test_max_boxes_starts_new_collage():
    crops = [(_solid(10, 10, RED), np.array([[0, 0, 5, 5]] * 3), np.array([1, 2, 3])) for _ in range(3)]
    out = make_collages(crops, (10, 1000), rng=0, max_boxes=5)
    assert len(out) == 3  # 3 + 3 > 5: one crop per collage, no box lost
    for img, b, _ in out:
        assert b.shape == (3, 4) and np.all(img[:, 10:] == COLLAGE_FILL)
    # a crop with more boxes than max_boxes on its own is skipped
    assert make_collages(crops[:1], (10, 100), rng=0, max_boxes=2) == []
    assert make_collages([], (10, 100), rng=0) == []


def test_collages_deterministic_per_seed():
    crops = [(_solid(10, 12, (20 * i, 10, 10)), np.array([[1, 1, 8, 8]]), np.array([i + 1])) for i in range(6)]
    a = make_collages(crops, (10, 40), rng=11, augment=True)
    b = make_collages(crops, (10, 40), rng=11, augment=True)
    assert len(a) == len(b)
    for (ia, ba, ca), (ib, bb, cb) in zip(a, b):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(ba, bb)
        np.testing.assert_array_equal(ca, cb)
    other = make_collages(crops, (10, 40), rng=12, augment=True)
    assert any(not np.array_equal(x[0], y[0]) for x, y in zip(a, other))


def test_collage_bad_inputs():
    with pytest.raises(RCCInputError, match="collage_hw"):
        make_collages([], (0, 10), rng=0)
    with pytest.raises(RCCInputError, match="rng"):
        make_collages([], (10, 10), rng="seed")
    with pytest.raises(RCCInputError, match="triple"):
        make_collages([(_solid(2, 2, RED),)], (10, 10), rng=0)
