"""Training: LR schedule, optimizer factory, train_step, divergence stop, checkpoint/resume, init_from,
mirrored strategy, Predictor. Small networks at 64 px on in-memory batches, so the whole file stays fast."""
from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from uncertainty_det.errors import UserError
from uncertainty_det.model.anchors import generate_anchors
from uncertainty_det.model.config import DetectorConfig
from uncertainty_det.model.training import (
    DetectorTrainer,
    TrainerConfig,
    TrainingDivergedError,
    WarmupCosineSchedule,
    _prepare_train_dir,
    build_detector,
    init_from_run,
    make_lr_schedule,
    make_optimizer,
    train_detector,
    trainer_config_from_dict,
    write_detector_config,
)

REPO = Path(__file__).resolve().parents[2]
SIZE = 64


def small_config(num_classes: int = 3, **changes) -> DetectorConfig:
    """The cheapest network to trace: 64 px input, levels 3-6, one BiFPN cell, one head repeat."""
    kwargs = dict(num_classes=num_classes, image_size=(SIZE, SIZE), width_coefficient=0.25, depth_coefficient=0.25,
                  fpn_num_filters=16, fpn_cell_repeats=1, box_class_repeats=1, max_level=6,
                  uncertainty_name="mcdropout_lossatt_head", loss_attenuation=True, box_loss="mse",
                  box_loss_weight=100.0, mc="head", mc_class_head_rate=0.05, mc_box_head_rate=0.05, mc_samples=4)
    kwargs.update(changes)
    return DetectorConfig(**kwargs)


def make_batch(n: int = 2, seed: int = 0) -> dict:
    """``n`` images with two bright rectangles each (classes 1 and 2), in the input-pipeline batch layout."""
    rng = np.random.default_rng(seed)
    images = rng.normal(0.0, 0.3, size=(n, SIZE, SIZE, 3)).astype(np.float32)
    boxes = np.zeros((n, 4, 4), np.float32)
    classes = -np.ones((n, 4), np.int32)
    for i in range(n):
        y0, x0 = rng.integers(2, 20, size=2)
        boxes[i, 0] = [y0, x0, y0 + 24, x0 + 20]
        y1, x1 = rng.integers(34, 44, size=2)
        boxes[i, 1] = [y1, x1, y1 + 18, x1 + 16]
        classes[i, :2] = [1, 2]
        for b, value in ((boxes[i, 0], 2.0), (boxes[i, 1], -2.0)):
            ya, xa, yb, xb = b.astype(int)
            images[i, ya:yb, xa:xb, :] = value
    weights = (classes > 0).astype(np.float32)
    return {"image": images, "boxes": boxes, "classes": classes, "weights": weights,
            "num_boxes": np.full(n, 2, np.int32), "image_id": np.arange(1, n + 1, dtype=np.int64),
            "scale": np.ones(n, np.float32), "image_shape": np.full((n, 2), SIZE, np.int32)}


def make_dataset(num_images: int = 4, batch_size: int = 2) -> tf.data.Dataset:
    batch = make_batch(num_images)
    return tf.data.Dataset.from_tensor_slices(batch).batch(batch_size)


# ----------------------------------------------------------------------------------------------- schedule
def test_lr_schedule_warmup_then_cosine_to_final():
    s = WarmupCosineSchedule(1e-2, total_steps=110, warmup_steps=10, warmup_start_ratio=0.1, final_lr_ratio=0.05)
    lr = lambda step: float(s(step))  # noqa: E731
    assert lr(0) == pytest.approx(1e-3)
    assert lr(5) == pytest.approx(1e-3 + 0.5 * 9e-3)          # linear warm-up
    assert lr(10) == pytest.approx(1e-2)                       # peak right after warm-up
    assert lr(60) == pytest.approx(1e-2 * (0.05 + 0.95 * 0.5))  # half-way through the cosine
    assert lr(110) == pytest.approx(5e-4)                      # cosine end = final_lr_ratio * peak
    assert lr(500) == pytest.approx(5e-4)
    steps = np.arange(10, 111)
    assert np.all(np.diff([lr(int(t)) for t in steps]) <= 1e-9)  # monotone decay
    const = WarmupCosineSchedule(1e-2, total_steps=100, warmup_steps=0, kind="constant")
    assert float(const(0)) == pytest.approx(1e-2) and float(const(99)) == pytest.approx(1e-2)
    again = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(s))
    assert isinstance(again, WarmupCosineSchedule) and again.get_config() == s.get_config()


def test_make_lr_schedule_uses_epochs_and_steps():
    cfg = TrainerConfig(epochs=4, learning_rate=2e-3, warmup_epochs=0.5, warmup_start_ratio=0.0)
    s = make_lr_schedule(cfg, steps_per_epoch=10)
    assert s.total_steps == 40 and s.warmup_steps == 5
    assert float(s(0)) == 0.0 and float(s(5)) == pytest.approx(2e-3) and float(s(40)) == pytest.approx(0.0)


# ----------------------------------------------------------------------------------------------- optimizer
def test_optimizer_factory():
    adamw = make_optimizer(TrainerConfig(optimizer="adamw", weight_decay=1e-4, clip_gradients_norm=5.0,
                                         ema_decay=0.999), 1e-3)
    assert isinstance(adamw, keras.optimizers.AdamW)
    assert adamw.weight_decay == pytest.approx(1e-4) and adamw.global_clipnorm == 5.0
    assert adamw.use_ema and adamw.ema_momentum == pytest.approx(0.999)
    sgd = make_optimizer(TrainerConfig(optimizer="sgd", momentum=0.8, clip_gradients_norm=0), 1e-2)
    assert isinstance(sgd, keras.optimizers.SGD) and sgd.momentum == pytest.approx(0.8)
    assert sgd.global_clipnorm is None and not sgd.use_ema
    # BN scale/offset and biases get no weight decay
    dense = keras.layers.Dense(2)
    dense.build((None, 3))
    adamw.build(dense.trainable_variables)
    kernel, bias = dense.kernel, dense.bias
    assert adamw._use_weight_decay(kernel) and not adamw._use_weight_decay(bias)
    fp16 = make_optimizer(TrainerConfig(mixed_precision="float16"), 1e-3)
    assert isinstance(fp16, keras.optimizers.LossScaleOptimizer)
    assert TrainerConfig(mixed_precision="bfloat16").policy == "mixed_bfloat16"
    assert TrainerConfig(mixed_precision=False).policy is None


def test_trainer_config_errors_name_the_key():
    with pytest.raises(UserError, match="unknown trainer config key.*'epoch'"):
        trainer_config_from_dict({"epoch": 3})
    with pytest.raises(UserError, match="optimizer must be one of"):
        TrainerConfig(optimizer="adam")
    with pytest.raises(UserError, match="mixed_precision"):
        TrainerConfig(mixed_precision="int8")


def test_resume_false_replaces_old_train_folder(tmp_path):
    train = tmp_path / "train"
    (train / "checkpoints").mkdir(parents=True)
    (train / "checkpoints" / "ckpt-3.index").write_text("x")
    _prepare_train_dir(train, resume=True)
    assert (train / "checkpoints" / "ckpt-3.index").exists()
    _prepare_train_dir(train, resume=False)
    assert not train.exists() and not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------------------------- train step
def test_train_step_overfits_one_image():
    keras.utils.set_random_seed(1)
    cfg = small_config()
    trainer = DetectorTrainer(build_detector(cfg), generate_anchors(cfg.image_size, 3, cfg.max_level))
    trainer.compile(optimizer=keras.optimizers.AdamW(3e-3, weight_decay=0.0, global_clipnorm=10.0), jit_compile=False)
    batch = {k: tf.constant(v) for k, v in make_batch(1).items()}
    before = {k: float(v) for k, v in trainer.compute_losses(batch, training=True).items()}
    ds = tf.data.Dataset.from_tensors(make_batch(1)).repeat()
    hist = trainer.fit(ds, epochs=3, steps_per_epoch=10, verbose=0, shuffle=False).history
    after = {k: float(v) for k, v in trainer.compute_losses(batch, training=True).items()}
    assert after["loss"] < 0.3 * before["loss"], (before, after, hist["loss"])
    assert after["cls_loss"] < before["cls_loss"] and after["box_loss"] < before["box_loss"]
    assert hist["loss"][-1] < hist["loss"][0]
    assert set(hist) >= {"loss", "cls_loss", "box_loss", "rmse", "mean_sigma", "grad_norm", "nonfinite_steps"}
    assert hist["nonfinite_steps"][-1] == 0


# ----------------------------------------------------------------------------------------------- resume / NaN
def test_checkpoint_round_trips_every_variable_including_bn_statistics(tmp_path):
    """All variables come back, the BN moving statistics of blocks and per-level head BNs included."""
    from uncertainty_det.model.training import make_checkpoint

    cfg = small_config()
    source = build_detector(cfg)
    rng = np.random.default_rng(0)
    for v in source.variables:
        v.assign(rng.uniform(0.5, 1.5, v.shape).astype(v.dtype))
    path = make_checkpoint(source).write(str(tmp_path / "ckpt"))
    target = build_detector(cfg)
    make_checkpoint(target).read(path).assert_existing_objects_matched()
    moving = [v for v in target.variables if "moving_" in v.path]
    assert len(moving) > 20 and any("head" in v.path for v in moving) and any("block" in v.path for v in moving)
    for a, b in zip(source.variables, target.variables):
        assert a.path == b.path
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)


class InjectNaN(keras.callbacks.Callback):
    """Sets a head weight to NaN before batch ``step`` (0-based) of epoch ``epoch`` (1-based)."""

    def __init__(self, epoch: int, step: int):
        super().__init__()
        self.epoch, self.step, self.current = epoch, step, -1

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch + 1

    def on_train_batch_begin(self, batch, logs=None):
        if self.current == self.epoch and batch == self.step:
            bias = self.model.detector.box_head.predict.bias
            bias.assign(np.full(bias.shape, np.nan, np.float32))


def _checkpoints(train_dir: Path) -> list[str]:
    return sorted(p.stem for p in (train_dir / "checkpoints").glob("ckpt-*.index"))


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory):
    """A 2-epoch run stopped in epoch 2 by a NaN loss (after the epoch-1 checkpoint), then resumed to the end.

    The divergence stop plays the part of the kill: the process state is gone, only the files on disk remain.
    """
    train_dir = tmp_path_factory.mktemp("resume") / "runs" / "r" / "train"
    cfg = small_config()
    trainer_cfg = TrainerConfig(epochs=2, learning_rate=2e-3, warmup_epochs=0.5, map_every=0, checkpoint_every=1,
                                resume=True, verbose=0)
    record: dict = {"steps": {}}

    def run(phase: str, callbacks=()):
        steps = record["steps"].setdefault(phase, [])
        return train_detector(cfg, trainer_cfg, make_dataset(4, 2), train_dir, num_train_batches=2,
                              log_fn=lambda metrics, step: steps.append((step, dict(metrics))),
                              class_names=["a", "b", "c"], seed=0, callbacks=callbacks)

    with pytest.raises(TrainingDivergedError) as err:
        run("nan", [InjectNaN(epoch=2, step=1)])
    record["nan_error"] = str(err.value)
    record["after_nan"] = _checkpoints(train_dir)
    record["final_after_nan"] = (train_dir / "final.weights.h5").exists()
    record["result"] = run("resumed")
    record["train_dir"] = train_dir
    return record


def test_epoch_metrics_are_logged_until_the_stop(resumed_run):
    assert [s for s, _ in resumed_run["steps"]["nan"]] == [1]     # epoch 1 logged, the NaN epoch not
    metrics = resumed_run["steps"]["nan"][0][1]
    assert {"loss", "cls_loss", "box_loss", "rmse", "mean_sigma", "lr", "grad_norm"} <= set(metrics)
    assert all(math.isfinite(v) for v in metrics.values())


def test_nan_loss_stops_with_user_error_and_no_new_checkpoint(resumed_run):
    msg = resumed_run["nan_error"]
    assert "diverged at epoch 2, step 2" in msg
    assert "last good checkpoint" in msg and msg.split("last good checkpoint: ")[1].startswith(
        str(resumed_run["train_dir"] / "checkpoints" / "ckpt-1"))
    assert "trainer.learning_rate" in msg
    assert resumed_run["after_nan"] == ["ckpt-1"]              # nothing saved from the NaN epoch
    assert not resumed_run["final_after_nan"]


def test_a_failing_final_evaluation_keeps_the_trained_weights(tmp_path):
    """The final weights and detector_config.json are on disk before the final mAP evaluation runs."""
    train_dir = tmp_path / "train"

    def broken_evaluation(detector):
        raise RuntimeError("evaluation failed")

    with pytest.raises(RuntimeError, match="evaluation failed"):
        train_detector(small_config(), TrainerConfig(epochs=1, map_every=0, verbose=0, resume=False),
                       make_dataset(2, 2), train_dir, num_train_batches=1, evaluate_fn=broken_evaluation,
                       class_names=["a", "b", "c"], seed=0)
    assert (train_dir / "final.weights.h5").is_file() and (train_dir / "detector_config.json").is_file()


def test_resume_continues_at_the_checkpoint_epoch(resumed_run):
    result = resumed_run["result"]
    assert result.initial_epoch == 1                           # not restarted from 0
    assert [s for s, _ in resumed_run["steps"]["resumed"]] == [2]
    assert [row["epoch"] for row in result.history] == [1, 2]
    assert _checkpoints(resumed_run["train_dir"])[-1] == "ckpt-2"
    train_dir = resumed_run["train_dir"]
    for name in ("final.weights.h5", "detector_config.json", "history.csv"):
        assert (train_dir / name).is_file()
    info = json.loads((train_dir / "detector_config.json").read_text())
    assert info["class_names"] == ["a", "b", "c"] and info["input_size"] == [SIZE, SIZE]
    assert DetectorConfig.from_dict(info["detector"]) == small_config()
    lines = (train_dir / "history.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,") and [ln.split(",")[0] for ln in lines[1:]] == ["1", "2"]
    assert all(np.all(np.isfinite(np.asarray(v))) for v in result.model.weights)


def test_resume_with_another_model_config_is_refused(resumed_run):
    from uncertainty_det.model.training import CheckpointMismatchError

    with pytest.raises(CheckpointMismatchError, match="num_classes.*trainer.resume=false"):
        train_detector(small_config(num_classes=4), TrainerConfig(epochs=3, verbose=0), make_dataset(2, 2),
                       resumed_run["train_dir"], num_train_batches=1)
    assert _checkpoints(resumed_run["train_dir"])[-1] == "ckpt-2"


def test_predictor_on_trained_model(resumed_run):
    from uncertainty_det.inference.predictor import Predictor

    predictor = Predictor.from_train_dir(resumed_run["train_dir"])
    assert predictor.has_aleatoric and predictor.has_epistemic and predictor.mc_samples == 4
    ds = make_dataset(3, 2)
    out = predictor.predict_dataset(ds, progress=False)
    again = predictor.predict_dataset(ds, progress=False)
    assert out["image_id"].tolist() == [1, 2, 3]
    d = predictor.postprocess_cfg.max_detections
    assert out["boxes"].shape == (3, d, 4) and out["logits"].shape == (3, d, 3) and out["al_std"].shape == (3, d, 4)
    np.testing.assert_array_equal(out["boxes"], again["boxes"])   # seeded MC masks: reproducible
    n = int(out["num_detections"][0])
    assert n > 0 and np.all(out["al_std"][0, :n] > 0) and np.all(out["ep_std"][0, :n] >= 0)


# ----------------------------------------------------------------------------------------------- init_from
def test_init_from_skips_heads_of_another_class_count(tmp_path, caplog):
    src_cfg = small_config(num_classes=3)
    source = build_detector(src_cfg)
    src_dir = tmp_path / "src" / "train"
    src_dir.mkdir(parents=True)
    source.save_weights(str(src_dir / "final.weights.h5"))
    write_detector_config(src_dir / "detector_config.json", src_cfg, ["a", "b", "c"], [SIZE, SIZE])
    target = build_detector(small_config(num_classes=5))
    with caplog.at_level(logging.INFO, logger="uncertainty_det.model.training"):
        loaded, skipped = init_from_run(target, src_dir)
    assert skipped and all("class_head/predict" in s for s in skipped)
    assert any("class_head/predict/pointwise_kernel" in s for s in skipped)
    assert len(loaded) == len(target.weights) - len(skipped)
    line = "\n".join(r.getMessage() for r in caplog.records)
    assert "skipped" in line and "class_head/predict" in line
    src_vars = {v.path: v for v in source.weights}
    for v in target.weights:
        if v.path in loaded:
            np.testing.assert_array_equal(np.asarray(v), np.asarray(src_vars[v.path]))


# ----------------------------------------------------------------------------------------------- mirrored
MIRRORED_SCRIPT = textwrap.dedent("""
    import sys, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, {repo!r})
    from tests.model.test_training import make_dataset, small_config
    from uncertainty_det.model.training import TrainerConfig, make_strategy, train_detector
    assert make_strategy("mirrored").num_replicas_in_sync == 2
    cfg = TrainerConfig(epochs=1, strategy="mirrored", map_every=0, verbose=0, learning_rate=1e-3)
    steps = []
    result = train_detector(small_config(), cfg, make_dataset(8, 4), {out!r}, num_train_batches=2,
                            log_fn=lambda m, s: steps.append((s, m["loss"])), seed=0)
    print("REPLICAS", "STEPS", steps, "EPOCHS", len(result.history))
""")


def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
    script = MIRRORED_SCRIPT.format(repo=str(REPO), out=str(tmp_path / "train"))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("REPLICAS")][-1]
    assert "EPOCHS 1" in line and "STEPS [(1, " in line
    assert (tmp_path / "train" / "final.weights.h5").is_file()
    assert (tmp_path / "train" / "checkpoints" / "ckpt-1.index").is_file()
