"""The RCF curriculum stream on a crafted 10-image manifest: batch layout [common | rare | strong rare], every
epoch covers every image, determinism per seed, image-score weights computed by hand, default steps."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

tf = pytest.importorskip("tensorflow")

from uncertainty_det.data.manifest import ManifestBuilder, categories_from_names  # noqa: E402
from uncertainty_det.data.pipeline import InputConfig  # noqa: E402
from uncertainty_det.ssl.class_weights import RareCommonSampler  # noqa: E402
from uncertainty_det.ssl.curriculum import CurriculumError, curriculum_dataset  # noqa: E402

# image id -> classes of its objects. Counts: class 1: 8, class 2: 4, class 3: 2 (the rare class).
OBJECTS = {1: [1], 2: [1], 3: [2], 4: [1, 2], 5: [3], 6: [1], 7: [2, 1], 8: [3, 1], 9: [1, 2], 10: [1]}
# log class weights, highest 30: x = 1/ln n = 1/(k ln 2) for n = 2^k, k = 3, 2, 1 -> class 2 lies
# (1/2 - 1/3) / (1 - 1/3) = 1/4 of the way: 1 + 29/4
WEIGHTS = {1: 1.0, 2: 8.25, 3: 30.0}
SCORES = {i: float(np.mean([WEIGHTS[c] for c in cs])) for i, cs in OBJECTS.items()}
RARE = {5, 8}                                       # the 10 // 4 = 2 highest scores (30, 15.5)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("curriculum")
    builder = ManifestBuilder(categories_from_names(["a", "b", "c"]))
    rng = np.random.default_rng(0)
    for i, classes in OBJECTS.items():
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(root / f"{i}.png")
        builder.add_image(f"{i}.png", 24, 32, image_id=i)
        boxes = [[2 + 3 * k, 2 + 4 * k, 14 + 3 * k, 20 + 4 * k] for k in range(len(classes))]
        builder.add_objects(i, np.array(boxes, float), classes)
    return builder.build(image_root=root)


def _cfg(**kw):
    base = dict(image_size=(32, 32), max_boxes=8, augment="standard", seed=5, num_parallel_calls=1)
    return InputConfig(**{**base, **kw})


def _take(ds, n):
    return [{k: v.numpy() for k, v in batch.items()} for batch in ds.take(n)]


def test_info_and_default_steps(manifest):
    _, info = curriculum_dataset(manifest, list(OBJECTS), _cfg(), batch_size=4, seed=0)
    assert info["class_weights"] == WEIGHTS
    assert set(info["rare_ids"]) == RARE and set(info["common_ids"]) == set(OBJECTS) - RARE
    assert info["image_scores"] == pytest.approx(SCORES)
    # coverage: max(ceil(8 common / 3 slots), ceil(2 rare / 1 slot)) = 3
    sampler = RareCommonSampler(info["rare_ids"], info["common_ids"], 4, seed=0)
    assert info["steps_per_epoch"] == sampler.steps_for_coverage() == 3
    _, info = curriculum_dataset(manifest, list(OBJECTS), _cfg(), batch_size=3, seed=0, aug_rare=2)
    # 10 // 3 = 3 rare (scores 30, 15.5, 8.25), 7 common: max(ceil(7 / 2), ceil(3 / 3)) = 4
    assert set(info["rare_ids"]) == RARE | {3} and info["steps_per_epoch"] == 4 and info["batch_width"] == 5
    _, info = curriculum_dataset(manifest, list(OBJECTS), _cfg(), batch_size=4, seed=0, steps_per_epoch=7)
    assert info["steps_per_epoch"] == 7 and info["weight_scale"] == 1.0


@pytest.mark.parametrize("aug_rare", [0, 2])
def test_every_batch_holds_a_rare_image(manifest, aug_rare):
    ds, info = curriculum_dataset(manifest, list(OBJECTS), _cfg(), batch_size=4, seed=1, aug_rare=aug_rare)
    steps = info["steps_per_epoch"]
    batches = _take(ds, 3 * steps)
    assert len(batches) == 3 * steps
    for b in batches:
        ids = b["image_id"].tolist()
        assert b["image"].shape == (4 + aug_rare, 32, 32, 3) and b["boxes"].shape == (4 + aug_rare, 8, 4)
        assert {k: v.shape[0] for k, v in b.items()} == dict.fromkeys(b, 4 + aug_rare)
        assert set(ids[:3]) <= set(OBJECTS) - RARE                    # batch_size - 1 common
        assert set(ids[3:]) <= RARE                                    # 1 rare + the extra (strong) slots
        for k, i in enumerate(ids):                                    # the boxes are the image's
            n = b["num_boxes"][k]
            assert n <= len(OBJECTS[i]) and set(b["classes"][k, :n].tolist()) <= set(OBJECTS[i])
            assert np.all(b["classes"][k, n:] == -1)
    for e in range(3):                                                 # every epoch covers every image
        seen = {i for b in batches[e * steps:(e + 1) * steps] for i in b["image_id"].tolist()}
        assert seen == set(OBJECTS)


def test_deterministic_per_seed(manifest):
    def run(seed, input_seed=5):
        ds, _ = curriculum_dataset(manifest, list(OBJECTS), _cfg(seed=input_seed), batch_size=4, seed=seed,
                                   aug_rare=1)
        return _take(ds, 6)

    a, b = run(3), run(3)
    for x, y in zip(a, b):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
    order = lambda batches: [b["image_id"].tolist() for b in batches]  # noqa: E731
    assert order(run(4)) != order(a)
    other = run(3, input_seed=6)                                       # same draw, other augmentation
    assert order(other) == order(a) and any(not np.array_equal(x["image"], y["image"]) for x, y in zip(a, other))


def test_image_score_weights_by_hand(manifest):
    mean = np.mean(list(SCORES.values()))                                # 71.625 / 10
    assert mean == pytest.approx(7.1625)
    ds, info = curriculum_dataset(manifest, list(OBJECTS), _cfg(augment="none"), batch_size=4, seed=0,
                                  aug_rare=1, image_score_weights=True)
    assert info["weight_scale"] == pytest.approx(mean)
    seen = set()
    for b in _take(ds, info["steps_per_epoch"]):
        for k, i in enumerate(b["image_id"].tolist()):
            n = b["num_boxes"][k]
            np.testing.assert_allclose(b["weights"][k, :n], SCORES[i] / mean, rtol=1e-6)
            assert np.all(b["weights"][k, n:] == 0)
            seen.add(i)
            if k < 4:                                                   # augment none: every box kept
                assert n == len(OBJECTS[i])
    assert seen == set(OBJECTS)
    assert SCORES[5] / mean == pytest.approx(30 / 7.1625) and SCORES[8] / mean == pytest.approx(15.5 / 7.1625)
    ds, _ = curriculum_dataset(manifest, list(OBJECTS), _cfg(augment="none"), batch_size=4, seed=0)
    b = _take(ds, 1)[0]
    assert np.all(b["weights"][b["classes"] > 0] == 1.0)


def test_bad_input(manifest):
    with pytest.raises(CurriculumError, match="batch_size"):
        curriculum_dataset(manifest, list(OBJECTS), _cfg(), batch_size=1, seed=0)
    with pytest.raises(CurriculumError, match="aug_rare"):
        curriculum_dataset(manifest, list(OBJECTS), _cfg(), batch_size=4, seed=0, aug_rare=-1)
    with pytest.raises(CurriculumError, match="labeled_ids"):
        curriculum_dataset(manifest, [1, 1, 2], _cfg(), batch_size=4, seed=0)
    with pytest.raises(Exception, match="no image with id 99"):
        curriculum_dataset(manifest, [1, 99], _cfg(), batch_size=4, seed=0)
