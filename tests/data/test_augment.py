"""Box-aware augmentation: every geometric op must keep each box on its object's pixels."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from uncertainty_det.data import augment as aug

# One colour per object; class id k (1-based) is drawn in COLOURS[k - 1].
COLOURS = np.array(
    [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255)], dtype=np.float32
)


def draw_scene(height: int, width: int, objects: list[tuple]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A black ``[H,W,3]`` float32 image with solid objects and their exact boxes.

    objects: ``("rect", ymin, xmin, ymax, xmax)`` (integer pixel edges) or ``("disc", cy, cx, r)``;
    object k gets class k + 1 and colour ``COLOURS[k]``. Returns ``(image, boxes [N,4], classes [N])``.
    """
    image = np.zeros((height, width, 3), np.float32)
    rows = np.arange(height)[:, None] + 0.5
    cols = np.arange(width)[None, :] + 0.5
    boxes = []
    for k, obj in enumerate(objects):
        if obj[0] == "rect":
            _, y0, x0, y1, x1 = obj
            mask = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)
        else:
            _, cy, cx, r = obj
            mask = (rows - cy) ** 2 + (cols - cx) ** 2 <= r * r
        image[mask] = COLOURS[k]
        ys, xs = np.nonzero(mask)
        boxes.append([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1])
    return image, np.array(boxes, np.float32).reshape(-1, 4), np.arange(1, len(objects) + 1, dtype=np.int32)


def object_mask(image: np.ndarray, class_id: int, tol: float = 60.0) -> np.ndarray:
    """``[H,W]`` bool: pixels within ``tol`` (every channel) of the colour of ``class_id``."""
    return np.all(np.abs(np.asarray(image) - COLOURS[class_id - 1]) < tol, axis=-1)


def assert_boxes_on_objects(image, boxes, classes, tight: bool, tol_px: float = 2.0, min_inside: float = 0.95):
    """For each box: >= ``min_inside`` of its object's pixels have their centre inside the box (0.5 px
    slack); with ``tight`` the box edges are within ``tol_px`` of the object's pixel extent."""
    image, boxes, classes = np.asarray(image), np.asarray(boxes), np.asarray(classes)
    assert boxes.shape[0] == classes.shape[0]
    for box, cls in zip(boxes, classes):
        ys, xs = np.nonzero(object_mask(image, int(cls)))
        assert ys.size > 0, f"class {cls}: no pixels of its object in the image but its box {box} was kept"
        cy, cx = ys + 0.5, xs + 0.5
        inside = (cy >= box[0] - 0.5) & (cy <= box[2] + 0.5) & (cx >= box[1] - 0.5) & (cx <= box[3] + 0.5)
        assert inside.mean() >= min_inside, f"class {cls}: only {inside.mean():.2%} of its pixels in box {box}"
        if tight:
            extent = np.array([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1], np.float32)
            assert np.all(np.abs(extent - box) <= tol_px), f"class {cls}: box {box} vs pixel extent {extent}"


@pytest.fixture(scope="module")
def scene():
    """A 96x128 image with two rectangles and a disc near the centre."""
    return draw_scene(96, 128, [("rect", 20, 30, 44, 62), ("disc", 60.0, 80.0, 13.0), ("rect", 40, 98, 70, 118)])


def test_draw_scene_boxes_are_tight(scene):
    image, boxes, classes = scene
    assert_boxes_on_objects(image, boxes, classes, tight=True, tol_px=0.0, min_inside=1.0)


@pytest.mark.parametrize("seed", [(0, 0), (0, 1), (5, 3)])
def test_horizontal_flip_keeps_boxes_on_objects(scene, seed):
    image, boxes, classes = scene
    out, new_boxes = aug.random_horizontal_flip(tf.constant(image), tf.constant(boxes), 1.0, seed)
    assert_boxes_on_objects(out, new_boxes, classes, tight=True, tol_px=0.0, min_inside=1.0)
    np.testing.assert_allclose(new_boxes.numpy()[:, 1], 128 - boxes[:, 3])
    same, same_boxes = aug.random_horizontal_flip(tf.constant(image), tf.constant(boxes), 0.0, seed)
    np.testing.assert_array_equal(same.numpy(), image)
    np.testing.assert_array_equal(same_boxes.numpy(), boxes)


@pytest.mark.parametrize("seed", [(0, k) for k in range(6)])
def test_scale_jitter_crop_keeps_boxes_on_objects(scene, seed):
    image, boxes, classes = scene
    weights = classes.astype(np.float32) / 10.0
    out, new_boxes, new_classes, new_weights, scale = aug.scale_jitter_crop(
        tf.constant(image), tf.constant(boxes), tf.constant(classes), tf.constant(weights), (64, 80), (0.5, 2.5), seed
    )
    assert out.shape == (64, 80, 3)
    new_classes = new_classes.numpy()
    np.testing.assert_allclose(new_weights.numpy(), new_classes / 10.0)  # dropped together
    assert_boxes_on_objects(out, new_boxes, new_classes, tight=True)
    assert np.all(new_boxes.numpy() >= 0) and np.all(new_boxes.numpy()[:, [2, 3]] <= [64, 80])
    # no box dropped whose object is still at least half visible
    s = float(scale)
    for cls, box in zip(classes, boxes):
        expected = (box[2] - box[0]) * (box[3] - box[1]) * s * s
        visible = object_mask(out.numpy(), int(cls)).sum()
        if visible >= 0.5 * expected and min(box[2] - box[0], box[3] - box[1]) * s >= 4:
            assert cls in new_classes, f"class {cls} dropped but {visible}/{expected:.0f} px visible"


def test_scale_jitter_crop_at_unit_scale_is_the_letterbox(scene):
    image, boxes, classes = scene
    weights = np.ones(len(classes), np.float32)
    out, new_boxes, _, _, scale = aug.scale_jitter_crop(
        tf.constant(image), tf.constant(boxes), tf.constant(classes), tf.constant(weights), (64, 64), (1.0, 1.0), (1, 2)
    )
    lb_image, lb_boxes, lb_scale = aug.letterbox(tf.constant(image), tf.constant(boxes), (64, 64))
    np.testing.assert_allclose(out.numpy(), lb_image.numpy(), atol=1e-4)
    np.testing.assert_allclose(new_boxes.numpy(), lb_boxes.numpy(), atol=1e-4)
    assert float(scale) == pytest.approx(0.5) and float(lb_scale) == pytest.approx(0.5)
    np.testing.assert_allclose(lb_boxes.numpy(), boxes * 0.5)
    assert np.all(lb_image.numpy()[48:] == 0.0)  # 96 * 0.5 = 48 rows of content, then padding
    assert_boxes_on_objects(lb_image, lb_boxes, classes, tight=True)


@pytest.mark.parametrize("name", list(aug.GEOMETRIC_OPS))
@pytest.mark.parametrize("seed", [(0, 0), (1, 1), (2, 7)])
def test_geometric_ops_keep_boxes_on_objects(scene, name, seed):
    image, boxes, classes = scene
    out, new_boxes, keep = aug.apply_strong_op(name, tf.constant(image), tf.constant(boxes), 1.0, seed, fill=(0, 0, 0))
    keep = keep.numpy()
    assert keep.any(), "every box dropped; the test scene should keep some"
    assert not np.allclose(new_boxes.numpy(), boxes), f"{name} did not move the boxes"
    tight = name in ("translate_x", "translate_y", "scale")
    assert_boxes_on_objects(out, new_boxes.numpy()[keep], classes[keep], tight=tight)


def test_geometric_op_fill_colour(scene):
    image, boxes, _ = scene
    out, _, _ = aug.apply_strong_op("rotate", tf.constant(image), tf.constant(boxes), 1.0, (0, 0), fill=(10, 20, 30))
    np.testing.assert_allclose(out.numpy()[0, 0], [10, 20, 30], atol=1e-3)  # corner uncovered by a 30 deg turn


@pytest.mark.parametrize("name", list(aug.COLOR_OPS) + ["cutout"])
def test_colour_ops_leave_boxes_unchanged(scene, name):
    image, boxes, _ = scene
    out, new_boxes, keep = aug.apply_strong_op(name, tf.constant(image), tf.constant(boxes), 0.8, (3, 4))
    np.testing.assert_array_equal(new_boxes.numpy(), boxes)
    assert keep.numpy().all()
    out = out.numpy()
    assert out.shape == image.shape and np.all(out >= 0) and np.all(out <= 255)


def test_colour_ops_change_pixels():
    rng = np.random.default_rng(0)
    image = tf.constant(rng.uniform(20, 200, (32, 40, 3)).astype(np.float32))
    boxes = tf.zeros([0, 4])
    for name in aug.COLOR_OPS:
        out, _, _ = aug.apply_strong_op(name, image, boxes, 1.0, (0, 1))
        assert not np.allclose(out.numpy(), image.numpy()), name


def test_clip_boxes_drops_mostly_outside_and_tiny():
    boxes = tf.constant(
        [[10, 10, 20, 20], [-40, 0, 10, 10], [-5, 0, 10, 10], [5, 5, 6.5, 20], [0, 0, 50, 50]], tf.float32
    )
    clipped, keep = aug.clip_boxes(boxes, 40, 40)
    np.testing.assert_array_equal(keep.numpy(), [True, False, True, False, True])
    np.testing.assert_allclose(clipped.numpy()[4], [0, 0, 40, 40])


def test_strong_augment_is_seeded_and_drops_classes_with_boxes(scene):
    image, boxes, classes = scene
    weights = classes.astype(np.float32) / 10.0
    run = tf.function(lambda seed: aug.strong_augment(
        tf.constant(image), tf.constant(boxes), tf.constant(classes), tf.constant(weights), 3, 1.0, seed,
        fill=(0.0, 0.0, 0.0),
    ))
    seen_drop = False
    for k in range(8):
        seed = tf.constant([7, k], tf.int64)
        a, b = run(seed), run(seed)
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x.numpy(), y.numpy())
        out, new_boxes, new_classes, new_weights = (t.numpy() for t in a)
        assert out.shape == image.shape
        assert new_boxes.shape[0] == new_classes.shape[0] == new_weights.shape[0]
        np.testing.assert_allclose(new_weights, new_classes / 10.0)
        seen_drop |= new_boxes.shape[0] < len(classes)
    assert seen_drop, "no seed pushed a box out of the image; the drop path is untested"
    different = run(tf.constant([8, 0], tf.int64))[0].numpy()
    assert not np.array_equal(different, run(tf.constant([7, 0], tf.int64))[0].numpy())


def test_strong_augment_rejects_unknown_op(scene):
    image, boxes, _ = scene
    with pytest.raises(ValueError, match="unknown strong augmentation op 'blur'"):
        aug.apply_strong_op("blur", tf.constant(image), tf.constant(boxes), 0.5, (0, 0))


@pytest.mark.parametrize("size", [(96, 128), (97, 131)])
def test_fast_letterbox_matches_exact_letterbox(size):
    image, boxes, classes = draw_scene(*size, [("rect", 20, 30, 44, 62), ("disc", 60.0, 80.0, 13.0)])
    exact = aug.letterbox(tf.constant(image), tf.constant(boxes), (64, 64), exact=True)
    fast = aug.letterbox(tf.constant(image), tf.constant(boxes), (64, 64), exact=False)
    assert float(exact[2]) == float(fast[2])
    np.testing.assert_allclose(fast[1].numpy(), exact[1].numpy(), atol=0.5)
    for out, out_boxes, _ in (exact, fast):
        assert_boxes_on_objects(out, out_boxes, classes, tight=True)
    if size == (96, 128):  # integer scaled size: both resample identically
        np.testing.assert_allclose(fast[0].numpy(), exact[0].numpy(), atol=1e-3)


def test_cutout_fills_a_square_with_the_fill_colour():
    image = tf.zeros([60, 80, 3])
    out = aug.cutout(image, 1.0, (0, 3), fill=(10.0, 20.0, 30.0)).numpy()
    filled = np.all(out == [10.0, 20.0, 30.0], axis=-1)
    untouched = np.all(out == 0.0, axis=-1)
    assert np.all(filled | untouched) and 0 < filled.sum() <= 18 * 18  # side 0.3 * 60
    ys, xs = np.nonzero(filled)
    assert filled.sum() == (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)  # one solid rectangle
