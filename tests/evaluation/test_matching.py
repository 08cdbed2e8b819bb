"""GT matching: IoU, hand-built cases for both matchers, brute-force references on random data."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from uncertainty_det.data.manifest import ManifestBuilder, categories_from_names
from uncertainty_det.evaluation.matching import (
    MATCH_COLUMNS, MATCHERS, MatchingError, gt_frame_from_manifest, iou, match, match_greedy, match_gt_centric,
    pairwise_iou,
)


def _dets(rows) -> pd.DataFrame:
    """rows: (image_id, det, class_id, score, [ymin, xmin, ymax, xmax]); adds the list/entropy columns."""
    recs = []
    for img, det, cls, score, b in rows:
        recs.append({"image_id": img, "file_name": f"{img}.png", "det": det, "class_id": cls, "score": score,
                     "ymin": b[0], "xmin": b[1], "ymax": b[2], "xmax": b[3], "logits": [0.0, 1.0],
                     "probs": [0.27, 0.73], "entropy": 0.84, "al_ymin": 1.0, "al_xmin": 1.0, "al_ymax": 1.0,
                     "al_xmax": 1.0})
    df = pd.DataFrame(recs)
    return df.astype({"image_id": np.int64, "det": np.int64, "class_id": np.int64})


def _gt(rows, occluded=True) -> pd.DataFrame:
    """rows: (gt_id, image_id, class_id, [ymin, xmin, ymax, xmax])."""
    df = pd.DataFrame([{"gt_id": g, "image_id": i, "class_id": c, "ymin": b[0], "xmin": b[1], "ymax": b[2],
                        "xmax": b[3]} for g, i, c, b in rows])
    if occluded:
        df["occluded"] = np.arange(len(df), dtype=np.int64) % 3
        df["truncated"] = np.linspace(0, 0.5, len(df))
    return df


# image 1: GT a (10), b (11), f (12); image 2: GT c (20) with only a far detection; image 3: GT e (30)
# with two equally good detections of equal score.
GT = _gt([
    (10, 1, 1, [0, 0, 10, 10]),
    (11, 1, 2, [20, 20, 30, 30]),
    (12, 1, 1, [0, 0, 10, 9]),
    (20, 2, 1, [0, 0, 10, 10]),
    (30, 3, 1, [0, 0, 10, 20]),
])
DETS = _dets([
    (1, 0, 1, 0.9, [0, 0, 10, 10]),       # d0: a IoU 1, f IoU 0.9
    (1, 1, 1, 0.8, [20, 20, 30, 30]),     # d1: b IoU 1, wrong class
    (1, 2, 2, 0.7, [0, 0, 10, 5]),        # d2: a IoU 0.5, f IoU 50/90
    (1, 3, 2, 0.3, [50, 50, 60, 60]),     # d3: nothing
    (2, 0, 1, 0.5, [100, 100, 110, 110]), # d4: nothing
    (3, 1, 1, 0.6, [0, 10, 10, 20]),      # d6: e IoU 0.5 (same score as d5, later slot)
    (3, 0, 1, 0.6, [0, 0, 10, 10]),       # d5: e IoU 0.5
])


def _by_gt(m: pd.DataFrame) -> dict:
    g = m[m["kind"] != "background"]
    return {int(r.gt_id): (int(r.image_id), int(r.det), r.kind, round(float(r.iou), 6)) for r in g.itertuples()}


def _background(m: pd.DataFrame) -> set:
    b = m[m["kind"] == "background"]
    return {(int(r.image_id), int(r.det)) for r in b.itertuples()}


def test_iou_aligned_and_pairwise():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 0, 0]], dtype=float)
    b = np.array([[0, 0, 10, 10], [5, 5, 15, 15], [0, 0, 0, 0]], dtype=float)
    np.testing.assert_allclose(iou(a, b), [1.0, 25 / 175, 0.0])
    p = pairwise_iou(a[:2], b)
    assert p.shape == (2, 3)
    np.testing.assert_allclose(p[1], [1.0, 25 / 175, 0.0])


def test_gt_centric_hand_case():
    m = match_gt_centric(DETS, GT)
    assert list(m.columns[-len(MATCH_COLUMNS):]) == list(MATCH_COLUMNS)
    assert list(m.columns[: len(DETS.columns)]) == list(DETS.columns)
    assert _by_gt(m) == {
        10: (1, 0, "matched", 1.0),
        11: (1, 1, "matched", 1.0),        # class ignored
        12: (1, 0, "matched", 0.9),        # one-to-many: d0 again
        20: (2, -1, "missed", 0.0),
        30: (3, 0, "matched", 0.5),        # tie -> lower det slot
    }
    assert len(m) == 5 and not (m["kind"] == "background").any()
    missed = m[m["kind"] == "missed"].iloc[0]
    assert np.isnan(missed["score"]) and missed["class_id"] == -1 and missed["logits"] is None
    assert missed["file_name"] == "2.png" and missed["gt_ymax"] == 10
    # occlusion/truncation carried
    assert m.set_index("gt_id").loc[11, "gt_occluded"] == 1
    assert m.set_index("gt_id").loc[30, "gt_truncated"] == pytest.approx(0.5)


def test_gt_centric_background_and_min_score():
    m = match_gt_centric(DETS, GT, include_background=True)
    assert _background(m) == {(1, 2), (1, 3), (2, 0), (3, 1)}
    assert (m.loc[m["kind"] == "background", "gt_id"] == -1).all()
    assert m["gt_ymin"][m["kind"] == "background"].isna().all()
    # image-major order
    assert m["image_id"].is_monotonic_increasing
    # min_score filters before matching: the 0.6 detections of image 3 are gone, e is missed
    got = _by_gt(match_gt_centric(DETS, GT, min_score=0.65))
    assert got[10] == (1, 0, "matched", 1.0) and got[30] == (3, -1, "missed", 0.0)
    got = _by_gt(match_gt_centric(DETS, GT, min_score=0.85, include_background=True))
    assert got[11] == (1, -1, "missed", 0.0) and got[12] == (1, 0, "matched", 0.9)


def test_greedy_class_agnostic():
    m = match_greedy(DETS, GT, iou_threshold=0.5)
    assert _by_gt(m) == {
        10: (1, 0, "matched", 1.0),
        11: (1, 1, "matched", 1.0),
        12: (1, 2, "matched", round(50 / 90, 6)),  # d2 takes the GT that is still free
        20: (2, -1, "missed", 0.0),
        30: (3, 0, "matched", 0.5),
    }
    assert _background(m) == {(1, 3), (2, 0), (3, 1)}
    assert (m.loc[m["kind"] == "background", "iou"] == 0).all()


def test_greedy_class_aware_and_threshold():
    m = match_greedy(DETS, GT, iou_threshold=0.5, class_aware=True)
    got = _by_gt(m)
    assert got[10][:3] == (1, 0, "matched")
    assert got[11][2] == "missed"            # d1 has the wrong class
    assert got[12][2] == "missed"            # d2 is class 2
    assert _background(m) == {(1, 1), (1, 2), (1, 3), (2, 0), (3, 1)}
    m = match_greedy(DETS, GT, iou_threshold=0.6)
    assert _by_gt(m)[30][2] == "missed" and _by_gt(m)[12][2] == "missed"
    m = match_greedy(DETS, GT, iou_threshold=0.5, min_score=0.65)
    assert set(m["det"][m["image_id"] == 3]) == {-1}   # both 0.6 detections dropped, e missed
    assert len(m) == 5 and not (m["kind"] == "background").any()   # d0, d1, d2 all take a GT
    with pytest.raises(MatchingError):
        match_greedy(DETS, GT, iou_threshold=0.0)


def test_greedy_gt_tie_goes_to_first_gt():
    gt = _gt([(1, 1, 1, [0, 0, 10, 10]), (2, 1, 1, [0, 10, 10, 20])], occluded=False)
    dets = _dets([(1, 0, 1, 0.9, [0, 5, 10, 15])])            # IoU 1/3 with both
    m = match_greedy(dets, gt, iou_threshold=0.3)
    assert _by_gt(m)[1][2] == "matched" and _by_gt(m)[2][2] == "missed"
    assert (m["gt_occluded"] == -1).all() and (m["gt_truncated"] == -1).all()


def test_nan_box_overlaps_nothing():
    dets = _dets([(1, 0, 1, 0.9, [np.nan, 0, 10, 10]), (1, 1, 1, 0.5, [0, 0, 10, 10])])
    gt = _gt([(1, 1, 1, [0, 0, 10, 10])])
    assert _by_gt(match_gt_centric(dets, gt))[1] == (1, 1, "matched", 1.0)
    assert _by_gt(match_greedy(dets, gt))[1] == (1, 1, "matched", 1.0)


def test_empty_inputs_and_registry():
    empty_dets = DETS.iloc[0:0]
    m = match_greedy(empty_dets, GT)
    assert (m["kind"] == "missed").all() and len(m) == len(GT)
    m = match_gt_centric(empty_dets, GT, include_background=True)
    assert (m["kind"] == "missed").all() and m["image_id"].tolist() == [1, 1, 1, 2, 3]
    m = match_greedy(DETS, GT.iloc[0:0])
    assert (m["kind"] == "background").all() and len(m) == len(DETS)
    assert set(MATCHERS) == {"gt_centric", "greedy"}
    assert len(match(DETS, GT, "greedy", class_aware=True)) == len(match_greedy(DETS, GT, class_aware=True))
    with pytest.raises(MatchingError, match="unknown matcher"):
        match(DETS, GT, "hungarian")
    with pytest.raises(MatchingError, match="column"):
        match(DETS.drop(columns=["score"]), GT)


def test_gt_frame_from_manifest():
    b = ManifestBuilder(categories_from_names(["a", "b"]))
    i1 = b.add_image("x.png", 50, 60)
    b.add_image("empty.png", 50, 60)
    i3 = b.add_image("y.png", 50, 60)
    b.add_objects(i1, np.array([[1, 2, 11, 22], [5, 5, 9, 9]], float), [1, 2], occluded=[0, 2], truncated=[0.0, 0.3])
    b.add_objects(i3, np.array([[0, 0, 10, 10]], float), [2])
    gt = gt_frame_from_manifest(b.build())
    assert gt["image_id"].tolist() == [i1, i1, i3]
    assert gt["class_id"].tolist() == [1, 2, 2]
    np.testing.assert_allclose(gt.loc[0, ["ymin", "xmin", "ymax", "xmax"]].to_numpy(float), [1, 2, 11, 22])
    assert gt["occluded"].tolist() == [0, 2, -1] and gt["truncated"].tolist() == [0.0, 0.3, -1.0]
    assert gt["file_name"].tolist() == ["x.png", "x.png", "y.png"]
    assert gt["gt_id"].is_unique


# ---------------------------------------------------------------------------------------------
# Brute-force references on random data


def _random_case(seed: int, n_img: int = 12):
    rng = np.random.default_rng(seed)
    det_rows, gt_rows = [], []
    gid = 0
    for img in range(n_img):
        n_gt = int(rng.integers(0, 6))
        n_det = int(rng.integers(0, 9))
        centres = rng.uniform(10, 60, size=(max(n_gt, 1), 2))
        for _ in range(n_gt):
            c = centres[_]
            s = rng.uniform(4, 15, 2)
            gt_rows.append((gid, img, int(rng.integers(1, 4)), [c[0] - s[0], c[1] - s[1], c[0] + s[0], c[1] + s[1]]))
            gid += 1
        for d in range(n_det):
            c = centres[rng.integers(0, centres.shape[0])] + rng.normal(0, 4, 2)
            s = rng.uniform(4, 15, 2)
            score = float(np.round(rng.uniform(0, 1), 1))           # coarse scores: many ties
            box = [c[0] - s[0], c[1] - s[1], c[0] + s[0], c[1] + s[1]]
            det_rows.append((img, d, int(rng.integers(1, 4)), score, box))
    return _dets(det_rows), _gt(gt_rows)


def _brute_greedy(dets, gt, thr, class_aware, min_score):
    out_gt, out_bg = {}, set()
    for img in sorted(set(dets["image_id"]) | set(gt["image_id"])):
        d = dets[(dets["image_id"] == img) & (dets["score"] >= min_score)]
        d = d.iloc[sorted(range(len(d)), key=lambda k: (-d["score"].iloc[k], d["det"].iloc[k]))]
        g = gt[gt["image_id"] == img]
        taken = [False] * len(g)
        for _, row in d.iterrows():
            best, best_iou = -1, -1.0
            for j in range(len(g)):
                if taken[j] or (class_aware and g["class_id"].iloc[j] != row["class_id"]):
                    continue
                v = float(iou(row[["ymin", "xmin", "ymax", "xmax"]].to_numpy(float),
                              g.iloc[j][["ymin", "xmin", "ymax", "xmax"]].to_numpy(float)))
                if v >= thr and v > best_iou:
                    best, best_iou = j, v
            if best >= 0:
                taken[best] = True
                out_gt[int(g["gt_id"].iloc[best])] = (img, int(row["det"]), "matched", round(best_iou, 6))
            else:
                out_bg.add((img, int(row["det"])))
        for j in range(len(g)):
            if not taken[j]:
                out_gt[int(g["gt_id"].iloc[j])] = (img, -1, "missed", 0.0)
    return out_gt, out_bg


def _brute_gt_centric(dets, gt):
    out = {}
    for _, g in gt.iterrows():
        d = dets[dets["image_id"] == g["image_id"]]
        d = d.iloc[sorted(range(len(d)), key=lambda k: (-d["score"].iloc[k], d["det"].iloc[k]))]
        best, best_iou = -1, 0.0
        for _, row in d.iterrows():
            v = float(iou(row[["ymin", "xmin", "ymax", "xmax"]].to_numpy(float),
                          g[["ymin", "xmin", "ymax", "xmax"]].to_numpy(float)))
            if v > best_iou:
                best, best_iou = int(row["det"]), v
        out[int(g["gt_id"])] = (int(g["image_id"]), best, "matched" if best >= 0 else "missed", round(best_iou, 6))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("class_aware", [False, True])
def test_greedy_equals_brute_force(seed, class_aware):
    dets, gt = _random_case(seed)
    for thr, min_score in ((0.5, 0.0), (0.3, 0.35)):
        m = match_greedy(dets, gt, iou_threshold=thr, class_aware=class_aware, min_score=min_score)
        want_gt, want_bg = _brute_greedy(dets, gt, thr, class_aware, min_score)
        assert _by_gt(m) == want_gt
        assert _background(m) == want_bg
        assert len(m) == len(want_gt) + len(want_bg)


@pytest.mark.parametrize("seed", [3, 4])
def test_gt_centric_equals_brute_force(seed):
    dets, gt = _random_case(seed)
    m = match_gt_centric(dets, gt)
    assert _by_gt(m) == _brute_gt_centric(dets, gt)
    # matched rows carry the detection's own values
    mm = m[m["kind"] == "matched"]
    np.testing.assert_allclose(mm["iou"], iou(mm[["ymin", "xmin", "ymax", "xmax"]].to_numpy(float),
                                              mm[["gt_ymin", "gt_xmin", "gt_ymax", "gt_xmax"]].to_numpy(float)))


def test_chunking_gives_same_result(monkeypatch):
    import uncertainty_det.evaluation.matching as mod

    dets, gt = _random_case(5, n_img=20)
    full_g, full_c = match_greedy(dets, gt, class_aware=True), match_gt_centric(dets, gt, include_background=True)
    monkeypatch.setattr(mod, "_CHUNK_ELEMENTS", 1)   # one image per chunk
    pd.testing.assert_frame_equal(match_greedy(dets, gt, class_aware=True), full_g)
    pd.testing.assert_frame_equal(match_gt_centric(dets, gt, include_background=True), full_c)
