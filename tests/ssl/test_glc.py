"""GLC: consistency, the three cleaning rules, clean_labels, synthetic corruptions and recovery."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from uncertainty_det.errors import UserError
from uncertainty_det.ssl.glc import (
    add_missing, add_mistakes, clean_labels, consistency, drop_boxes, fix_noisy, perturb_boxes, recovery,
    remove_unsupported,
)

CORNERS = ["ymin", "xmin", "ymax", "xmax"]


def bx(x0, x1):
    return [0.0, float(x0), 10.0, float(x1)]


def dets(rows, **extra):
    """rows: (image_id, class_id, box[, score[, cons_iou]])."""
    df = pd.DataFrame({
        "image_id": np.array([r[0] for r in rows], dtype=np.int64),
        "class_id": np.array([r[1] for r in rows], dtype=np.int64),
        **{c: np.array([r[2][k] for r in rows], dtype=np.float64) for k, c in enumerate(CORNERS)},
    })
    if rows and len(rows[0]) > 3:
        df["score"] = np.array([r[3] for r in rows], dtype=np.float64)
    if rows and len(rows[0]) > 4:
        df["cons_iou"] = np.array([r[4] for r in rows], dtype=np.float64)
    for k, v in extra.items():
        df[k] = v
    return df


def gts(rows):
    """rows: (gt_id, image_id, class_id, box) -> a frame shaped like gt_frame_from_manifest()."""
    n = len(rows)
    return pd.DataFrame({
        "gt_id": np.array([r[0] for r in rows], dtype=np.int64),
        "image_id": np.array([r[1] for r in rows], dtype=np.int64),
        "class_id": np.array([r[2] for r in rows], dtype=np.int64),
        **{c: np.array([r[3][k] for r in rows], dtype=np.float64) for k, c in enumerate(CORNERS)},
        "occluded": np.zeros(n, dtype=np.int64), "truncated": np.zeros(n, dtype=np.float64),
        "file_name": [f"{r[1]}.png" for r in rows],
    })


# ---------------------------------------------------------------------------------------------
# consistency


def test_consistency_values():
    original = dets([(1, 1, bx(0, 10)), (1, 2, bx(20, 30)), (2, 1, bx(0, 10))], det=[0, 1, 0])
    original.index = [5, 6, 7]
    view1 = dets([(1, 1, bx(0, 8), 0.9), (1, 2, bx(20, 30), 0.9)])              # image 2: nothing
    view2 = dets([(1, 1, bx(0, 10), 0.9), (1, 1, bx(20, 25), 0.9), (2, 1, bx(0, 5), 0.9)])
    out = consistency(original, [view1, view2])
    assert out.index.tolist() == [5, 6, 7] and out["det"].tolist() == [0, 1, 0]
    np.testing.assert_allclose(out["cons_iou"], [(0.8 + 1.0) / 2, (1.0 + 0.5) / 2, (0.0 + 0.5) / 2])
    # B: view 2's best overlap has class 1; C: nothing in view 1
    assert out["cons_cls"].tolist() == [True, False, False]
    # C's view-2 match has IoU 0.5: it counts at threshold 0.5, not above it
    assert consistency(original, [view2], iou_threshold=0.5)["cons_cls"].tolist() == [True, False, True]
    assert consistency(original, [view2], iou_threshold=0.6)["cons_cls"].tolist() == [True, False, False]


def _rank_rule(views):
    """The reference's cons_cls: do same-rank detections of the augmented runs share a class?"""
    k = min(len(v) for v in views)
    classes = np.stack([v["class_id"].to_numpy()[:k] for v in views])
    return (classes == classes[0]).all(axis=0)


def test_consistency_uses_matching_not_rank():
    # Both views swap the classes of the two objects: the rank rule sees agreement (rank 0 is class 1
    # in both views, rank 1 class 2), IoU matching sees that each object changed class.
    original = dets([(1, 1, bx(0, 10)), (1, 2, bx(20, 30))])
    view = dets([(1, 1, bx(20, 30), 0.9), (1, 2, bx(0, 10), 0.8)])
    assert _rank_rule([view, view.copy()]).all()
    out = consistency(original, [view, view.copy()])
    assert out["cons_cls"].tolist() == [False, False]
    np.testing.assert_allclose(out["cons_iou"], [1.0, 1.0])
    # Same objects listed in another order with the right classes: consistent.
    ok_view = dets([(1, 2, bx(20, 30), 0.9), (1, 1, bx(0, 10), 0.8)])
    assert consistency(original, [ok_view, ok_view])["cons_cls"].tolist() == [True, True]


def test_consistency_tie_goes_to_higher_score():
    original = dets([(1, 1, bx(0, 10))])
    view = dets([(1, 2, bx(0, 8), 0.5), (1, 1, bx(2, 10), 0.7)])     # both IoU 0.8
    assert consistency(original, [view])["cons_cls"].tolist() == [True]
    view.loc[0, "score"] = 0.9
    assert consistency(original, [view])["cons_cls"].tolist() == [False]


def test_consistency_errors():
    original = dets([(1, 1, bx(0, 10))])
    with pytest.raises(UserError, match="non-empty list"):
        consistency(original, [])
    with pytest.raises(UserError, match="non-empty list"):
        consistency(original, original)
    with pytest.raises(UserError, match="augmented view 1.*'class_id'"):
        consistency(original, [original, original.drop(columns="class_id")])


# ---------------------------------------------------------------------------------------------
# rules


def test_add_missing():
    gt = gts([(1, 1, 1, bx(0, 10))])
    preds = dets([
        (1, 2, bx(50, 60), 0.8, 0.95),    # q0: free spot -> added
        (1, 1, bx(8, 18), 0.9, 0.95),     # q1: IoU 2/18 with the GT
        (1, 2, bx(80, 90), 0.8, 0.85),    # q2: not consistent enough
        (1, 2, bx(100, 110), 0.05, 0.99),  # q3: score too low
        (2, 3, bx(0, 10), 0.5, 0.9),      # q4: image without GT, cons_iou exactly at the threshold -> added
        (1, 1, bx(10, 20), 0.9, 0.95),    # q5: touches the GT edge (IoU 0) -> added
    ])
    new_gt, added = add_missing(gt, preds)
    assert added["gt_id"].tolist() == [-2, -3, -4]
    assert added["image_id"].tolist() == [1, 2, 1]
    assert added["class_id"].tolist() == [2, 3, 1]
    np.testing.assert_array_equal(added[CORNERS].to_numpy(), np.array([bx(50, 60), bx(0, 10), bx(10, 20)]))
    assert added["occluded"].tolist() == [-1] * 3 and added["truncated"].tolist() == [-1.0] * 3
    assert added["file_name"].tolist() == ["1.png", "", "1.png"]
    assert len(new_gt) == 4 and list(new_gt.columns) == list(gt.columns)
    assert new_gt.dtypes.to_dict() == gt.dtypes.to_dict()
    pd.testing.assert_frame_equal(new_gt.iloc[:1], gt)
    _, added2 = add_missing(gt, preds, max_overlap=0.2)
    assert added2["class_id"].tolist() == [2, 1, 3, 1]                   # q1 now qualifies
    _, added3 = add_missing(new_gt, preds.iloc[[0]])
    assert added3.empty                                                  # now overlaps its own GT
    with pytest.raises(UserError, match="'cons_iou'"):
        add_missing(gt, preds.drop(columns="cons_iou"))


def test_add_missing_ids_count_down_from_existing_negatives():
    gt = gts([(-7, 1, 1, bx(0, 10)), (3, 1, 1, bx(20, 30))])
    _, added = add_missing(gt, dets([(1, 1, bx(50, 60), 0.9, 1.0)]))
    assert added["gt_id"].tolist() == [-8]


def test_remove_unsupported():
    gt = gts([(1, 1, 1, bx(0, 10)), (2, 1, 1, bx(50, 60)), (3, 1, 2, bx(100, 110)), (4, 2, 1, bx(0, 10))])
    preds = dets([(1, 1, bx(5, 15), 0.5),       # supports GT 1
                  (1, 1, bx(55, 65), 0.05),     # below min_score: GT 2 unsupported
                  (1, 1, bx(110, 120), 0.9)])   # touches GT 3 only (IoU 0)
    new_gt, removed = remove_unsupported(gt, preds)
    assert new_gt["gt_id"].tolist() == [1]
    assert removed["gt_id"].tolist() == [2, 3, 4]                 # image 2 has no prediction at all
    assert remove_unsupported(gt, preds, min_score=0.0)[0]["gt_id"].tolist() == [1, 2]


def test_fix_noisy():
    gt = gts([(1, 1, 1, bx(0, 10)), (2, 1, 1, bx(20, 30)), (3, 1, 1, bx(40, 50)), (4, 1, 1, bx(60, 70))])
    preds = dets([
        (1, 1, bx(1, 11), 0.9, 0.95),       # d1: IoU 9/11 with GT 1, loses it to d5
        (1, 1, bx(21, 31), 0.9, 0.9),       # d2: cons_iou not > 0.9
        (1, 1, bx(41, 51), 0.3, 0.95),      # d3: score < 0.4
        (1, 1, bx(60, 70), 0.9, 0.95),      # d4: identical box, nothing to change
        (1, 2, bx(0.5, 10.5), 0.95, 0.95),  # d5: IoU 9.5/10.5 with GT 1 -> GT 1 takes its box
    ])
    new_gt, corrected = fix_noisy(gt, preds)
    expected = gt.copy()
    expected.loc[0, CORNERS] = bx(0.5, 10.5)
    pd.testing.assert_frame_equal(new_gt, expected)             # class and ids stay
    assert corrected["gt_id"].tolist() == [1]
    assert corrected[["prev_xmin", "prev_xmax"]].to_numpy().tolist() == [[0.0, 10.0]]
    assert corrected["iou"].tolist() == pytest.approx([9.5 / 10.5])
    # max_iou below that IoU: GT 1 stays (its one-to-one partner is d5, d1 cannot step in)
    pd.testing.assert_frame_equal(fix_noisy(gt, preds, max_iou=0.9)[0], gt)
    assert fix_noisy(gt, preds, min_score=0.2)[1]["gt_id"].tolist() == [1, 3]


def test_clean_labels_order_counts_and_errors():
    gt = gts([(1, 1, 1, bx(0, 10)), (2, 1, 1, bx(100, 110))])        # GT 2 is a mistake
    preds = dets([(1, 1, bx(1, 11), 0.9, 0.95), (1, 2, bx(50, 60), 0.9, 0.95)])  # 2nd: missing object
    cleaned, counts = clean_labels(gt, preds)
    assert counts == {"added": 1, "removed": 1, "corrected": 1}
    assert cleaned["gt_id"].tolist() == [1, -2]
    np.testing.assert_array_equal(cleaned[CORNERS].to_numpy(), np.array([bx(1, 11), bx(50, 60)]))
    only_noisy, c2 = clean_labels(gt, preds, methods=("noisy",))
    assert c2 == {"added": 0, "removed": 0, "corrected": 1} and len(only_noisy) == 2
    _, c3 = clean_labels(gt, preds, methods=("noisy", "md"), md_iou_consistency=0.99)
    assert c3 == {"added": 0, "removed": 0, "corrected": 1}
    with pytest.raises(UserError, match="unknown GLC method"):
        clean_labels(gt, preds, methods=("md", "typo"))
    with pytest.raises(UserError, match="md_min_score"):
        clean_labels(gt, preds, md_minscore=0.2)


# ---------------------------------------------------------------------------------------------
# synthetic corruptions


def grid_gt(boxes_per_image=(1, 2, 3, 4, 5, 6, 7, 8), spacing=40.0):
    """Non-overlapping 20x20 boxes in a row per image; image k has boxes_per_image[k] boxes."""
    rows, gid = [], 0
    for img, n in enumerate(boxes_per_image):
        for j in range(n):
            rows.append((gid, img, 1 + gid % 3, [10.0, j * spacing, 30.0, j * spacing + 20.0]))
            gid += 1
    return gts(rows)


def test_drop_boxes_invariants():
    gt = grid_gt()
    corrupted, dropped = drop_boxes(gt, fraction=0.2, rng=np.random.default_rng(0))
    assert len(dropped) == int(0.2 * len(gt)) == 7
    assert len(corrupted) + len(dropped) == len(gt)
    assert set(corrupted["gt_id"]).isdisjoint(dropped["gt_id"])
    assert set(corrupted["image_id"]) == set(gt["image_id"])       # every image keeps a box
    again, dropped2 = drop_boxes(gt, fraction=0.2, rng=0)
    assert dropped2["gt_id"].tolist() == drop_boxes(gt, fraction=0.2, rng=0)[1]["gt_id"].tolist()
    assert len({tuple(drop_boxes(gt, 0.2, rng=s)[1]["gt_id"]) for s in range(5)}) > 1
    all_out, all_dropped = drop_boxes(gt, fraction=1.0, rng=1)
    assert all_out.groupby("image_id").size().tolist() == [1] * 8  # capped at M - #images
    assert len(all_dropped) == len(gt) - 8
    with pytest.raises(UserError, match="fraction"):
        drop_boxes(gt, fraction=1.5)


def _intersection_area(a, b):
    ih = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iw = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    return ih * iw


def test_add_mistakes_invariants():
    gt = grid_gt((1, 3, 5))
    sizes = {0: (200.0, 400.0), 1: (150.0, 300.0), 2: (250.0, 500.0)}
    corrupted, added = add_mistakes(gt, per_image=4, image_sizes=sizes, rng=3, size_range=(10, 100), num_classes=5)
    assert len(added) == 12 and len(corrupted) == len(gt) + 12
    assert added.groupby("image_id").size().to_dict() == {0: 4, 1: 4, 2: 4}
    assert added["gt_id"].tolist() == list(range(-2, -14, -1))
    assert set(added["class_id"]) <= set(range(1, 6))
    h = added["ymax"] - added["ymin"]
    w = added["xmax"] - added["xmin"]
    assert ((h >= 10) & (h <= 100) & (w >= 10) & (w <= 100)).all()
    for img, grp in added.groupby("image_id"):
        H, W = sizes[img]
        assert (grp["ymin"] >= 0).all() and (grp["xmin"] >= 0).all()
        assert (grp["ymax"] <= H).all() and (grp["xmax"] <= W).all()
        g = gt[gt["image_id"] == img][CORNERS].to_numpy()
        assert (_intersection_area(grp[CORNERS].to_numpy(), g) == 0).all()
    assert added["file_name"].tolist() == [f"{i}.png" for i in added["image_id"]]
    frame_sizes = pd.DataFrame({"image_id": [0, 1, 2], "height": [200, 150, 250], "width": [400, 300, 500]})
    _, added_f = add_mistakes(gt, 4, frame_sizes, rng=3, num_classes=5)
    pd.testing.assert_frame_equal(added_f, added)


def test_add_mistakes_gives_up_and_errors():
    full = gts([(1, 0, 1, [0.0, 0.0, 50.0, 50.0]), (2, 1, 1, [0.0, 0.0, 10.0, 10.0])])
    sizes = {0: (50.0, 50.0), 1: (500.0, 500.0)}                  # image 0 is fully covered
    _, added = add_mistakes(full, 3, sizes, rng=0, num_classes=2, max_tries=20)
    assert added["image_id"].tolist() == [1, 1, 1]
    with pytest.raises(UserError, match="no entry"):
        add_mistakes(full, 1, {0: (50.0, 50.0)}, rng=0)
    with pytest.raises(UserError, match="size_range"):
        add_mistakes(full, 1, sizes, size_range=(0, 10))


def test_perturb_boxes_bounds():
    gt = grid_gt()
    dev = 0.1
    corrupted, ids = perturb_boxes(gt, fraction=0.2, deviation=dev, rng=5)
    assert ids.size == int(0.2 * len(gt)) and np.all(np.diff(ids) > 0)
    changed = (corrupted[CORNERS].to_numpy() != gt[CORNERS].to_numpy()).any(axis=1)
    assert sorted(gt["gt_id"][changed]) == ids.tolist()
    pd.testing.assert_frame_equal(corrupted.drop(columns=CORNERS), gt.drop(columns=CORNERS))
    old, new = gt[CORNERS].to_numpy(), corrupted[CORNERS].to_numpy()
    h, w = old[:, 2] - old[:, 0], old[:, 3] - old[:, 1]
    assert np.all(np.abs((new[:, 0] + new[:, 2]) / 2 - (old[:, 0] + old[:, 2]) / 2) <= dev / 2 * h + 1e-9)
    assert np.all(np.abs((new[:, 1] + new[:, 3]) / 2 - (old[:, 1] + old[:, 3]) / 2) <= dev / 2 * w + 1e-9)
    assert np.all(np.abs((new[:, 2] - new[:, 0]) / h - 1) <= dev + 1e-9)
    assert np.all(np.abs((new[:, 3] - new[:, 1]) / w - 1) <= dev + 1e-9)
    with pytest.raises(UserError, match="unique"):
        perturb_boxes(pd.concat([gt, gt]), rng=0)


# ---------------------------------------------------------------------------------------------
# recovery


def _oracle_predictions(clean):
    return clean.assign(score=1.0, cons_iou=1.0)


def test_recovery_drop():
    clean = grid_gt()
    corrupted, _ = drop_boxes(clean, 0.2, rng=2)
    oracle = recovery(clean, corrupted, clean, "drop")
    assert oracle == {"n_dropped": 7, "n_added": 7, "n_recovered": 7, "recovered_share": 1.0, "n_spurious": 0}
    cleaned, added = add_missing(corrupted, _oracle_predictions(clean))   # the md rule with perfect predictions
    assert len(added) == 7
    rec = recovery(clean, corrupted, cleaned, "drop")
    assert rec["recovered_share"] == 1.0 and rec["n_spurious"] == 0
    wrong_class = cleaned.copy()
    wrong_class.loc[wrong_class["gt_id"] < 0, "class_id"] += 10
    assert recovery(clean, corrupted, wrong_class, "drop")["recovered_share"] == 0.0
    assert recovery(clean, corrupted, wrong_class, "drop")["n_spurious"] == 7
    assert recovery(clean, corrupted, corrupted, "drop")["recovered_share"] == 0.0


def test_recovery_mistakes():
    clean = grid_gt((2, 3, 4))
    sizes = {i: (300.0, 400.0) for i in range(3)}
    corrupted, planted = add_mistakes(clean, 2, sizes, rng=4, num_classes=3)
    assert recovery(clean, corrupted, clean, "mistakes") == {
        "n_planted": 6, "n_planted_removed": 6, "removed_share": 1.0, "n_true_removed": 0}
    cleaned, removed = remove_unsupported(corrupted, _oracle_predictions(clean))
    assert recovery(clean, corrupted, cleaned, "mistakes")["removed_share"] == 1.0
    assert recovery(clean, corrupted, corrupted, "mistakes")["removed_share"] == 0.0
    too_much = cleaned.iloc[1:]
    assert recovery(clean, corrupted, too_much, "mistakes")["n_true_removed"] == 1


def test_recovery_noise():
    clean = grid_gt()
    corrupted, ids = perturb_boxes(clean, 0.3, deviation=0.2, rng=7)
    oracle = recovery(clean, corrupted, clean, "noise")
    assert oracle["n_perturbed"] == ids.size and oracle["mean_iou_after"] == 1.0
    assert oracle["mean_iou_before"] < 1.0 and oracle["n_corrected"] == ids.size
    cleaned, corrected = fix_noisy(corrupted, _oracle_predictions(clean), iou_consistency=0.5)
    assert len(corrected) == ids.size
    assert recovery(clean, corrupted, cleaned, "noise")["mean_iou_after"] == pytest.approx(1.0)
    same = recovery(clean, corrupted, corrupted, "noise")
    assert same["mean_iou_after"] == pytest.approx(same["mean_iou_before"]) and same["n_corrected"] == 0
    dropped = recovery(clean, corrupted, clean[~clean["gt_id"].isin(ids[:1])], "noise")
    assert dropped["n_missing"] == 1
    assert dropped["mean_iou_after"] == pytest.approx((ids.size - 1) / ids.size)
    with pytest.raises(UserError, match="unknown recovery kind"):
        recovery(clean, corrupted, clean, "blur")
