"""EfficientDet network, config and MC-dropout sampling (tiny model at 128 px, few classes)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

tf = pytest.importorskip("tensorflow")
import keras  # noqa: E402

from uncertainty_det.errors import UserError  # noqa: E402
from uncertainty_det.model.config import DetectorConfig, detector_config_from_dicts  # noqa: E402
from uncertainty_det.model.efficientdet import EfficientDet, build_efficientdet, parameter_count  # noqa: E402
from uncertainty_det.model.efficientnet import (  # noqa: E402
    BackboneWeightsError,
    EfficientNetBackbone,
    round_filters,
    round_repeats,
)
from uncertainty_det.model.mc import MCSpatialDropout2D, mc_forward, mc_function  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SIZE = 128
NUM_CLASSES = 3
A = 9
# N = sum over levels 3..7 of h_l * w_l * A at 128 px: (16^2 + 8^2 + 4^2 + 2^2 + 1^2) * 9
N = (16 * 16 + 8 * 8 + 4 * 4 + 2 * 2 + 1) * A
T = 4


def _tiny(**changes) -> DetectorConfig:
    base = dict(num_classes=NUM_CLASSES, image_size=(SIZE, SIZE))
    base.update(changes)
    return DetectorConfig(**base)


# full-MC config with rates high enough that samples differ clearly
ATT_FULL = dict(loss_attenuation=True, mc="full", mc_backbone_rate=0.1, mc_class_head_rate=0.2, mc_box_head_rate=0.2)
ATT_HEAD = dict(loss_attenuation=True, mc="head", mc_backbone_rate=0.0, mc_class_head_rate=0.2, mc_box_head_rate=0.2)


@pytest.fixture(scope="module")
def images():
    return tf.constant(np.random.default_rng(0).standard_normal((2, SIZE, SIZE, 3)).astype(np.float32))


@pytest.fixture(scope="module")
def model_base():
    """Plain tiny EfficientDet (4A box head, no MC)."""
    return build_efficientdet(_tiny())


@pytest.fixture(scope="module")
def model_att():
    """Loss-attenuation head, MC dropout in backbone (0.1) and heads (0.2)."""
    return build_efficientdet(_tiny(**ATT_FULL))


@pytest.fixture(scope="module")
def model_head(model_att):
    """Same weights as ``model_att`` but no backbone dropout (the weights do not depend on the rates)."""
    model = build_efficientdet(_tiny(**ATT_HEAD))
    model.set_weights(model_att.get_weights())
    return model


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a)


# ---------------------------------------------------------------------------------------------- config


def _yaml(path: Path) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)


def test_config_from_every_model_and_uncertainty_file_round_trips_json():
    models = sorted((REPO / "conf" / "model").glob("*.yaml"))
    uncertainties = sorted((REPO / "conf" / "uncertainty").glob("*.yaml"))
    assert models and uncertainties
    for mpath in models:
        model = _yaml(mpath)
        if not isinstance(model["image_size"], list):  # ${dataset.input_size}
            model["image_size"] = [256, 256]
        for upath in uncertainties:
            cfg = detector_config_from_dicts(model, _yaml(upath), num_classes=6)
            assert cfg.mc in ("off", "head", "full")  # YAML reads `off` as False
            assert cfg.name == model["name"] and cfg.uncertainty_name == upath.stem
            back = DetectorConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
            assert back == cfg
    baseline = detector_config_from_dicts(_yaml(REPO / "conf/model/efficientdet_d0.yaml"),
                                          _yaml(REPO / "conf/uncertainty/baseline.yaml"), 6)
    assert baseline.mc == "off" and baseline.image_size == (512, 512) and baseline.num_anchors == 9


def test_config_rejects_bad_input():
    model = _yaml(REPO / "conf/model/tiny.yaml")
    model["image_size"] = [128, 128]
    unc = _yaml(REPO / "conf/uncertainty/baseline.yaml")
    with pytest.raises(ValueError, match="bogus_key.*other_key"):
        detector_config_from_dicts({**model, "bogus_key": 1, "other_key": 2}, unc, 3)
    with pytest.raises(ValueError, match="uncertainty config keys: mc_rate"):
        detector_config_from_dicts(model, {**unc, "mc_rate": 0.1}, 3)
    with pytest.raises(ValueError, match="divisible by 2\\*\\*max_level = 128"):
        detector_config_from_dicts({**model, "image_size": [100, 128]}, unc, 3)
    with pytest.raises(ValueError, match="mc must be one of"):
        detector_config_from_dicts(model, {**unc, "mc": "sometimes"}, 3)
    with pytest.raises(ValueError, match="mc=head needs"):
        detector_config_from_dicts(model, {**unc, "mc": "head"}, 3)
    with pytest.raises(ValueError, match="unknown DetectorConfig keys: nope"):
        DetectorConfig.from_dict({"num_classes": 3, "nope": 1})


def test_efficientnet_scaling_rules():
    # B0 table, widths of B4 (1.4) and the tiny model (0.25); repeats with depth 1.8 and 0.5
    assert [round_filters(f, 1.0) for f in (32, 16, 24, 40, 80, 112, 192, 320)] == [32, 16, 24, 40, 80, 112, 192, 320]
    assert [round_filters(f, 1.4) for f in (32, 40, 112, 320)] == [48, 56, 160, 448]
    assert [round_filters(f, 0.25) for f in (32, 16, 40, 112, 320)] == [8, 8, 16, 32, 80]
    assert [round_repeats(r, 1.8) for r in (1, 2, 3, 4)] == [2, 4, 6, 8]
    assert [round_repeats(r, 0.5) for r in (1, 2, 3, 4)] == [1, 1, 2, 2]
    backbone = EfficientNetBackbone(1.0, 1.0)
    assert backbone.endpoint_channels == (40, 112, 320) and backbone.num_blocks == 16


# ---------------------------------------------------------------------------------------------- shapes


def test_output_shapes_baseline_and_loss_attenuation(model_base, model_att, images):
    base = model_base
    out = base(images)
    assert set(out) == {"cls", "box"}
    assert out["cls"].shape == (2, N, NUM_CLASSES) and out["box"].shape == (2, N, 4)
    assert base.num_anchors_total() == N
    feats = base.features(images)
    assert [tuple(f.shape) for f in feats] == [(2, SIZE >> l, SIZE >> l, 32) for l in range(3, 8)]
    out = model_att(images)
    assert set(out) == {"cls", "box", "sigma_raw"}
    assert out["sigma_raw"].shape == (2, N, 4) and out["box"].shape == (2, N, 4)
    assert all(v.dtype == tf.float32 for v in out.values())
    # class bias: prior probability 0.01
    np.testing.assert_allclose(base.class_head.predict.bias.numpy(), -np.log(99.0), rtol=1e-6)


@pytest.mark.parametrize("max_level,repeats", [(5, 1), (5, 2), (6, 1)])
def test_shorter_pyramids_build_and_run(max_level, repeats, images):
    """Pyramids that stop at C5 (raw backbone width at the top) or P6, with one or two BiFPN cells."""
    model = build_efficientdet(_tiny(max_level=max_level, fpn_cell_repeats=repeats))
    feats = model.features(images)
    assert [tuple(f.shape) for f in feats] == [(2, SIZE >> l, SIZE >> l, 32) for l in range(3, max_level + 1)]
    n = sum((SIZE >> l) ** 2 for l in range(3, max_level + 1)) * A
    assert model(images)["cls"].shape == (2, n, NUM_CLASSES)


@pytest.mark.parametrize("param", ["softplus", "raw_clip"])
def test_sigma_channels_start_near_one(param, images):
    """A fresh loss-attenuation head starts every anchor near σ = 1 (no anchor near the floor, where the
    attenuated loss would be ~1e4); the code channels keep the zero-bias initialisation."""
    from uncertainty_det.model.heads import sigma_bias_for_unit_sigma
    from uncertainty_det.model.losses import sigma_from_raw

    model = build_efficientdet(_tiny(loss_attenuation=True, sigma_param=param))
    out = model(images)
    sigma = sigma_from_raw(out["sigma_raw"], param, 0.01, 1024.0, training=True).numpy()
    assert 0.8 < np.median(sigma) < 1.25 and sigma.min() > 0.3 and sigma.max() < 3.0
    assert np.std(out["box"].numpy()) > 5 * np.std(out["sigma_raw"].numpy())  # σ columns scaled down
    bias = model.box_head.predict.bias.numpy()
    np.testing.assert_array_equal(bias[: 4 * A], 0.0)
    np.testing.assert_allclose(bias[4 * A:], sigma_bias_for_unit_sigma(param, 0.01), rtol=1e-6)
    np.testing.assert_allclose(sigma_from_raw(tf.constant(sigma_bias_for_unit_sigma("softplus", 0.01)),
                                              "softplus", 0.01).numpy(), 1.0, rtol=1e-6)


def test_box_head_8a_layout_codes_then_sigma_per_anchor(model_att, images):
    feats = model_att.features(images)
    maps = model_att.box_head(feats)
    assert [m.shape[-1] for m in maps] == [8 * A] * 5
    out = model_att.heads(feats)
    box, sigma = out["box"].numpy(), out["sigma_raw"].numpy()
    offset = 0
    for level, m in enumerate(maps):
        m = m.numpy()
        _, h, w, _ = m.shape
        for (y, x, a) in [(0, 0, 0), (h - 1, w - 1, A - 1), (h // 2, w - 1, 4)]:
            n = offset + (y * w + x) * A + a  # levels, then row-major locations, then anchors
            np.testing.assert_array_equal(box[:, n], m[:, y, x, 4 * a: 4 * a + 4])
            np.testing.assert_array_equal(sigma[:, n], m[:, y, x, 4 * A + 4 * a: 4 * A + 4 * a + 4])
        offset += h * w * A
    assert offset == N


# ---------------------------------------------------------------------------------------------- MC


def test_dropout_layer_drops_whole_channels_and_rescales():
    layer = MCSpatialDropout2D(0.25, salt=7)
    x = tf.ones([64, 3, 3, 32])
    assert np.array_equal(layer(x), x) and np.array_equal(layer(x, mc=False, training=False), x)
    y = layer(x, mc=True, seed=1).numpy()
    assert set(np.unique(y)) <= {0.0, np.float32(1 / 0.75)}
    assert np.all(y == y[:, :1, :1, :])  # constant over space: channel dropout
    assert 0.15 < (y == 0).mean() < 0.35
    assert np.array_equal(y, layer(x, mc=True, seed=1)) and not np.array_equal(y, layer(x, mc=True, seed=2))
    assert not np.array_equal(layer(x, training=True), layer(x, training=True))  # unseeded: fresh masks
    again = MCSpatialDropout2D.from_config(layer.get_config())
    assert again.rate == 0.25 and again.salt == 7


def test_deterministic_inference_is_bit_stable_and_mc_off_gives_t1(model_att, images):
    det = tf.function(lambda x: model_att(x, training=False))
    a, b = det(images), det(images)
    assert _equal(a, b)
    for mode, samples in (("off", 10), (False, 10), ("head", 1), ("full", 1)):
        out = mc_forward(model_att, images, samples, mode, seed=3)
        assert out["cls"].shape == (1, 2, N, NUM_CLASSES) and out["sigma_raw"].shape == (1, 2, N, 4)
        assert np.all(np.std(out["box"].numpy(), axis=0) == 0)
        np.testing.assert_allclose(out["box"][0], a["box"], atol=1e-6)


def test_head_mode_computes_features_once_and_samples_differ(model_head, images, monkeypatch):
    calls = []
    original = model_head.features

    def counting(x, *args, **kwargs):
        calls.append((int(x.shape[0]), kwargs.get("mc", False)))
        return original(x, *args, **kwargs)

    monkeypatch.setattr(model_head, "features", counting)
    out = mc_forward(model_head, images, T, "head", seed=11)
    assert calls == [(2, False)]  # backbone + BiFPN once, on B images, deterministic
    assert out["cls"].shape == (T, 2, N, NUM_CLASSES) and out["box"].shape == (T, 2, N, 4)
    for key in ("cls", "box", "sigma_raw"):
        v = out[key].numpy()
        assert not np.array_equal(v[0], v[1]) and np.std(v, axis=0).mean() > 1e-4


def test_head_mode_equals_full_mode_when_backbone_is_deterministic(model_head, images):
    """Caching the features changes nothing: same seed -> same masks -> same samples as recomputing them."""
    head = mc_forward(model_head, images, T, "head", seed=5)
    full = mc_forward(model_head, images, T, "full", seed=5)
    for key in head:
        np.testing.assert_allclose(head[key], full[key], rtol=1e-5, atol=1e-5)
    # and the in-head tiling equals heads run on explicitly tiled features
    feats = model_head.features(images)
    tiled = model_head.heads([tf.tile(f, [T, 1, 1, 1]) for f in feats], mc=True, seed=5)
    cached = model_head.heads(feats, mc=True, seed=5, samples=T)
    for key in tiled:
        np.testing.assert_allclose(cached[key], tiled[key], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("repeats", [1, 2, 3])
def test_cached_heads_equal_tiled_heads_for_any_repeat_count(repeats, images):
    """The masks of the first head dropout act after the next separable conv's depthwise step (on B rows);
    with one repeat that conv is the predict conv; later BNs are folded into their convs. Either way the
    samples equal the tiled computation (BN statistics randomised so that a wrong fold shows)."""
    model = build_efficientdet(_tiny(box_class_repeats=repeats, **ATT_HEAD))
    rng = np.random.default_rng(repeats)
    for v in model.variables:
        if "bn_" in v.path and "head" in v.path:
            low = 0.5 if ("variance" in v.path or "gamma" in v.path) else -0.5
            v.assign(rng.uniform(low, low + 1.0, v.shape).astype(np.float32))
    feats = model.features(images)
    tiled = model.heads([tf.tile(f, [T, 1, 1, 1]) for f in feats], mc=True, seed=3)
    cached = model.heads(feats, mc=True, seed=3, samples=T)
    for key in tiled:
        np.testing.assert_allclose(cached[key], tiled[key], rtol=1e-5, atol=1e-5)
    assert not np.allclose(cached["box"][:2], cached["box"][2:4])  # the samples differ


def test_full_mode_samples_differ_and_backbone_dropout_acts(model_att, images):
    out = mc_forward(model_att, images, T, "full", seed=5)
    head = mc_forward(model_att, images, T, "head", seed=5)
    for key in out:
        v = out[key].numpy()
        assert not np.array_equal(v[0], v[1])
    # backbone dropout adds spread on top of the head dropout
    assert np.std(out["cls"].numpy(), 0).mean() > np.std(head["cls"].numpy(), 0).mean()


def test_seeded_sampling_is_reproducible(model_att, images):
    fn = mc_function(model_att, T, "head", seeded=True)  # graph mode, as in an export
    a = fn(images, tf.constant(1, tf.int64))
    b = fn(images, tf.constant(1, tf.int64))
    c = fn(images, tf.constant(2, tf.int64))
    assert _equal(a, b)
    assert all(not np.array_equal(a[k], c[k]) for k in a)
    eager = mc_forward(model_att, images, T, "head", seed=1)  # same masks in eager mode
    for key in a:
        np.testing.assert_allclose(a[key], eager[key], rtol=1e-5, atol=1e-5)
    full = [mc_forward(model_att, images, T, "full", seed=s) for s in (1, 1, 2)]
    assert _equal(full[0], full[1])
    assert all(not np.array_equal(full[0][k], full[2][k]) for k in full[0])
    unseeded = [mc_forward(model_att, images, T, "head")["cls"] for _ in range(2)]
    assert not np.array_equal(unseeded[0], unseeded[1])


def test_mc_mean_matches_deterministic_output(model_head, images):
    """Dropout is rescaled by 1/(1-p): the MC mean is an unbiased-looking estimate of the deterministic output."""
    samples = 128
    det = model_head(images[:1])
    out = mc_forward(model_head, images[:1], samples, "head", seed=7)
    for key in det:
        v = out[key].numpy()
        err = np.abs(v.mean(0) - det[key].numpy())
        stderr = v.std(0) / np.sqrt(samples)
        assert stderr.mean() > 0
        # |mean - det| in units of the standard error: ~0.8 for an unbiased estimate (E|Z| of a normal)
        assert (err / (stderr + 1e-9)).mean() < 1.5, key


# ---------------------------------------------------------------------------------------------- persistence


def test_weights_save_load_round_trip(model_att, images, tmp_path):
    path = tmp_path / "model.weights.h5"
    model_att.save_weights(str(path))
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(model_att.detector_config.to_dict()))
    restored = build_efficientdet(DetectorConfig.from_dict(json.loads(config_path.read_text())))
    assert not _equal(restored(images), model_att(images))
    restored.load_weights(str(path))
    assert _equal(restored(images), model_att(images))
    assert _equal(mc_forward(restored, images, T, "full", seed=9), mc_forward(model_att, images, T, "full", seed=9))
    again = EfficientDet.from_config(model_att.get_config())
    assert again.detector_config == model_att.detector_config


def test_backbone_weights_from_local_file(tmp_path):
    with pytest.raises(BackboneWeightsError, match="never downloaded") as err:
        EfficientDet(_tiny(backbone_weights=str(tmp_path / "missing.weights.h5")))
    assert isinstance(err.value, UserError) and isinstance(err.value, FileNotFoundError)
    source = EfficientNetBackbone(0.25, 0.5)
    source.build((1, 64, 64, 3))
    path = tmp_path / "b0.weights.h5"
    source.save_weights(str(path))
    model = build_efficientdet(_tiny(backbone_weights=str(path)))
    for got, want in zip(model.backbone.weights, source.weights):
        np.testing.assert_array_equal(got.numpy(), want.numpy())


# ---------------------------------------------------------------------------------------------- sizes, precision


def test_parameter_counts_tiny_and_d0(model_base):
    tiny = parameter_count(model_base)["total"]
    assert 180_000 < tiny < 260_000
    d0_yaml = _yaml(REPO / "conf/model/efficientdet_d0.yaml")
    d0_yaml["image_size"] = [256, 256]  # builds at 128 px (weights do not depend on the size)
    d0 = build_efficientdet(detector_config_from_dicts(d0_yaml, _yaml(REPO / "conf/uncertainty/lossatt.yaml"), 6))
    count = parameter_count(d0)["total"]
    assert 3_700_000 < count < 4_000_000, count
    assert d0.backbone.endpoint_channels == (40, 112, 320)


def test_mixed_precision_forward_pass(images):
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_efficientdet(_tiny(**ATT_HEAD))
        assert model.backbone.stem_conv.compute_dtype == "float16"
        feats = model.features(images)
        assert feats[0].dtype == tf.float16
        out = model(images)
        mc = mc_forward(model, images, 2, "head", seed=0)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    for v in list(out.values()) + list(mc.values()):
        assert v.dtype == tf.float32 and np.all(np.isfinite(v.numpy()))
    assert mc["cls"].shape == (2, 2, N, NUM_CLASSES)
