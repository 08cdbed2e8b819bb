"""Semi-supervised train steps: STAC's mixed batches (the parts' losses, λ, the three pseudo weightings), CSD's
flip consistency (the ramp at step 0 and mid-schedule, the supervised part), the level split, and both trainers
through train_detector's trainer_factory with plain validation batches."""
from __future__ import annotations

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.model.test_training import make_batch, small_config
from uncertainty_det.errors import UserError
from uncertainty_det.model.anchors import generate_anchors
from uncertainty_det.model.heads import flatten_levels
from uncertainty_det.model.training import DetectorTrainer, TrainerConfig, build_detector, train_detector
from uncertainty_det.ssl.csd import csd_consistency_loss
from uncertainty_det.ssl.training import (
    CSDTrainer, MixedBatchTrainer, consistency_levels, image_mean_weights, split_levels, zip_streams,
)


@pytest.fixture(scope="module")
def parts():
    keras.utils.set_random_seed(3)
    cfg = small_config()
    detector = build_detector(cfg)
    anchors = generate_anchors(cfg.image_size, 3, cfg.max_level)
    labeled = {k: tf.constant(v) for k, v in make_batch(2, seed=1).items()}
    pseudo = {k: tf.constant(v) for k, v in make_batch(3, seed=2).items()}
    return cfg, detector, anchors, labeled, pseudo


def _plain(detector, anchors, batch):
    return {k: float(v) for k, v in DetectorTrainer(detector, anchors).compute_losses(batch, training=False).items()}


@pytest.mark.parametrize("lam", [1.0, 0.3])
def test_mixed_batch_loss_is_the_sum_of_the_parts_normalised_within_each(parts, lam):
    cfg, detector, anchors, labeled, pseudo = parts
    trainer = MixedBatchTrainer(detector, anchors, unsup_weight=lam, weighting="box")
    mixed = {k: float(v) for k, v in trainer.compute_losses({"labeled": labeled, "pseudo": pseudo}, False).items()}
    sup, uns = _plain(detector, anchors, labeled), _plain(detector, anchors, pseudo)
    assert mixed["sup_loss"] == pytest.approx(sup["loss"], rel=1e-5)
    assert mixed["pseudo_loss"] == pytest.approx(uns["loss"], rel=1e-5)
    for key in ("loss", "cls_loss", "box_loss"):
        assert mixed[key] == pytest.approx(sup[key] + lam * uns[key], rel=1e-5)
    assert mixed["num_positives"] == pytest.approx(sup["num_positives"])


def test_pseudo_weightings(parts):
    cfg, detector, anchors, labeled, pseudo = parts
    w = np.array([[0.5, 0.9, 0, 0], [0.2, 0.4, 0, 0], [1.0, 0.6, 0, 0]], np.float32)
    weighted = {**pseudo, "weights": tf.constant(w)}
    np.testing.assert_allclose(image_mean_weights(weighted).numpy(), [0.7, 0.3, 0.8], rtol=1e-6)
    empty = {**pseudo, "classes": -tf.ones_like(pseudo["classes"])}
    np.testing.assert_allclose(image_mean_weights(empty).numpy(), [1.0, 1.0, 1.0])

    def pseudo_loss(weighting, batch):
        trainer = MixedBatchTrainer(detector, anchors, weighting=weighting)
        return {k: float(v) for k, v in trainer.compute_losses({"labeled": labeled, "pseudo": batch}, False).items()}

    off = pseudo_loss("off", weighted)
    assert off["pseudo_loss"] == pytest.approx(_plain(detector, anchors, pseudo)["loss"], rel=1e-5)  # weights ignored
    # box weights of 1 are the plain loss; other box weights change it
    assert pseudo_loss("box", pseudo)["pseudo_loss"] == pytest.approx(off["pseudo_loss"], rel=1e-5)
    assert pseudo_loss("box", weighted)["pseudo_loss"] < off["pseudo_loss"]
    # the same weight w on every box of every image: image weighting scales every anchor term, so the whole loss, by w
    uniform = {**pseudo, "weights": tf.fill(tf.shape(pseudo["weights"]), 0.25)}
    scaled = pseudo_loss("image", uniform)
    assert scaled["pseudo_loss"] == pytest.approx(0.25 * off["pseudo_loss"], rel=1e-5)
    # a weight-0 box is an ignore region whatever the weighting: off keeps it out of the loss (neither object
    # nor background), and image means skip it
    ignored_w = w.copy()
    ignored_w[0, 1] = 0.0
    ignored = {**pseudo, "weights": tf.constant(ignored_w)}
    np.testing.assert_allclose(image_mean_weights(ignored).numpy(), [0.5, 0.3, 0.8], rtol=1e-6)
    as_region = {**pseudo, "weights": tf.constant(np.where(ignored_w > 0, 1.0, 0.0).astype(np.float32))}
    off_ignored = pseudo_loss("off", ignored)["pseudo_loss"]
    assert off_ignored == pytest.approx(_plain(detector, anchors, as_region)["loss"], rel=1e-5)
    assert off_ignored != pytest.approx(off["pseudo_loss"], rel=1e-4)
    with pytest.raises(UserError, match="weighting"):
        MixedBatchTrainer(detector, anchors, weighting="mean")
    with pytest.raises(UserError, match="unsup_weight"):
        MixedBatchTrainer(detector, anchors, unsup_weight=-1.0)


def test_split_levels_inverts_flatten_levels():
    rng = np.random.default_rng(0)
    shapes, a, k = [(8, 6), (4, 3), (2, 2)], 9, 5
    maps = [tf.constant(rng.normal(size=(2, h, w, a * k)).astype(np.float32)) for h, w in shapes]
    back = split_levels(flatten_levels(maps, k), shapes, a)
    for m, b in zip(maps, back):
        np.testing.assert_array_equal(m.numpy(), b.numpy())


def test_csd_trainer_losses_and_ramp(parts):
    cfg, detector, anchors, labeled, unlabeled = parts
    trainer = CSDTrainer(detector, anchors, total_steps=1200)
    trainer.compile(optimizer=keras.optimizers.SGD(0.0))
    data = {"labeled": labeled, "unlabeled": unlabeled}
    at0 = {k: float(v) for k, v in trainer.compute_losses(data, False).items()}
    sup = _plain(detector, anchors, labeled)
    assert at0["sup_loss"] == pytest.approx(sup["loss"], rel=1e-5)
    assert at0["cons_weight"] == 0.0 and at0["loss"] == pytest.approx(sup["loss"], rel=1e-5)
    # the consistency terms are those of the library loss on the two views' per-level maps
    images = tf.concat([labeled["image"], unlabeled["image"]], 0)
    o, f = detector(images, training=False), detector(tf.image.flip_left_right(images), training=False)
    shapes, a = trainer.level_shapes, cfg.num_anchors
    ref = csd_consistency_loss(split_levels(o["cls"], shapes, a), split_levels(o["box"], shapes, a),
                               split_levels(f["cls"], shapes, a), split_levels(f["box"], shapes, a), a, cfg.num_classes)
    assert at0["cons_cls"] == pytest.approx(float(ref["cls"]), rel=1e-5) and at0["cons_cls"] > 0
    assert at0["cons_box"] == pytest.approx(float(ref["box"]), rel=1e-5) and at0["cons_box"] > 0
    trainer.optimizer.iterations.assign(600)          # between ramp-up (320) and ramp-down (1000): weight 1
    mid = {k: float(v) for k, v in trainer.compute_losses(data, False).items()}
    assert mid["cons_weight"] == 1.0
    assert mid["loss"] == pytest.approx(sup["loss"] + mid["cons_cls"] + mid["cons_box"], rel=1e-5)
    no_ramp = CSDTrainer(detector, anchors, ramp=False, consistency_weight=2.0)
    no_ramp.compile(optimizer=keras.optimizers.SGD(0.0))
    assert float(no_ramp.compute_losses(data, False)["cons_weight"]) == 2.0
    summed = CSDTrainer(detector, anchors, ramp=False, class_reduction="image")
    summed.compile(optimizer=keras.optimizers.SGD(0.0))
    ref_sum = csd_consistency_loss(split_levels(o["cls"], shapes, a), split_levels(o["box"], shapes, a),
                                   split_levels(f["cls"], shapes, a), split_levels(f["box"], shapes, a), a,
                                   cfg.num_classes, class_reduction="image")
    assert float(summed.compute_losses(data, False)["cons_cls"]) == pytest.approx(float(ref_sum["cls"]), rel=1e-5)
    assert float(ref_sum["cls"]) > 2 * float(ref["cls"])
    with pytest.raises(UserError, match="total_steps"):
        CSDTrainer(detector, anchors, total_steps=None)
    with pytest.raises(UserError, match="class reduction"):
        CSDTrainer(detector, anchors, total_steps=10, class_reduction="sum")
    # csd levels: the consistency of the chosen pyramid levels only (the small config has levels 3..max)
    fine = CSDTrainer(detector, anchors, ramp=False, levels=[4, 3])
    fine.compile(optimizer=keras.optimizers.SGD(0.0))
    assert fine.consistency_levels == (3, 4)
    maps = [split_levels(t, shapes, a)[:2] for t in (o["cls"], o["box"], f["cls"], f["box"])]
    ref_fine = csd_consistency_loss(*maps, a, cfg.num_classes)
    got = fine.compute_losses(data, False)
    assert float(got["cons_cls"]) == pytest.approx(float(ref_fine["cls"]), rel=1e-5)
    assert float(got["cons_box"]) == pytest.approx(float(ref_fine["box"]), rel=1e-5)
    assert float(got["cons_box"]) != pytest.approx(at0["cons_box"], rel=1e-3)


@pytest.mark.parametrize("levels, message", [
    ([2], r"integer in \[3, 5\]"), ([3, 3], "repeats"), ([], "no level"), ("3", "list"), ([True], "integer"),
])
def test_consistency_levels_checked(levels, message):
    assert consistency_levels(None, 3, 5) == (3, 4, 5) and consistency_levels([5, 3], 3, 5) == (3, 5)
    with pytest.raises(UserError, match=message):
        consistency_levels(levels, 3, 5)


def _stream(n, seed):
    return tf.data.Dataset.from_tensor_slices(make_batch(n, seed=seed)).batch(2)


# CSD through train_detector (with val_loss) runs in tests/apps/test_csd_app.py
@pytest.mark.parametrize("kind", ["stac"])
def test_semi_supervised_trainers_through_train_detector(tmp_path, kind):
    if kind == "stac":
        factory = functools.partial(MixedBatchTrainer, weighting="image")
        data, extra = zip_streams(_stream(4, 1), _stream(4, 2)), {"sup_loss", "pseudo_loss"}
    else:
        factory = CSDTrainer
        data = zip_streams(_stream(4, 1), _stream(4, 2), names=("labeled", "unlabeled"))
        extra = {"sup_loss", "cons_cls", "cons_box", "cons_weight", "mask_fraction"}
    cfg = TrainerConfig(epochs=2, steps_per_epoch=3, map_every=0, verbose=0, resume=False, validation_loss=True,
                        learning_rate=1e-3, warmup_epochs=0)
    result = train_detector(small_config(), cfg, data, tmp_path / "train", val_dataset=_stream(2, 5),
                            trainer_factory=factory)
    last = result.history[-1]
    assert extra <= set(last) and "val_loss" in last and np.isfinite(last["loss"])
    assert (tmp_path / "train" / "final.weights.h5").is_file()
