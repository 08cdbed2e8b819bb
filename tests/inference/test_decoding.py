"""Decoding of box codes and their sigma (uncertainty_det.inference.decoding)."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from uncertainty_det.inference import decoding as dec  # noqa: E402

# Reference §2.2 test vector: anchor centre (100, 200), h_a=32, w_a=64.
REF_ANCHOR = np.array([[100 - 16, 200 - 32, 100 + 16, 200 + 32]], dtype=np.float64)
REF_T = np.array([[0.1, -0.2, 0.3, -0.1]])
REF_S = np.array([[0.1, 0.2, 0.3, 0.4]])
REF = {
    "lognormal": ([80.6082, 155.8336, 125.7918, 218.5664], [7.6358, 18.2907, 7.6358, 18.2907]),
    "falsedec": ([81.6023, 158.2452, 124.7977, 216.1548], [9.1002, 12.8455, 10.8548, 15.4956]),
}


def _random_inputs(n=64, seed=1, lead=(), sigma_max=1.5):
    rng = np.random.default_rng(seed)
    yx = rng.uniform(0, 512, (n, 2))
    hw = rng.uniform(8, 256, (n, 2))
    anchors = np.concatenate([yx - hw / 2, yx + hw / 2], axis=1)
    codes = rng.normal(0, 0.5, lead + (n, 4))
    sigma = rng.uniform(0.01, sigma_max, lead + (n, 4))
    return codes, sigma, anchors


def _mc_corners(codes, sigma, anchors, n, seed=123):
    """Numpy Monte Carlo: [n, ..., 4] plain-decoded corners of sampled codes."""
    rng = np.random.default_rng(seed)
    t = codes[None] + sigma[None] * rng.standard_normal((n,) + np.broadcast(codes, sigma).shape)
    return dec.decode_plain(t, anchors).numpy()


@pytest.mark.parametrize("method", ["lognormal", "falsedec", "l-norm"])
def test_reference_vector(method):
    out = dec.decode(method, REF_T, REF_S, REF_ANCHOR)
    boxes, std = REF[dec.ALIASES.get(method, method)]
    np.testing.assert_allclose(out["boxes"].numpy()[0], boxes, atol=1e-3)
    np.testing.assert_allclose(out["std"].numpy()[0], std, atol=1e-3)


def test_sample_converges_to_lognormal():
    ref = dec.decode("lognormal", REF_T, REF_S, REF_ANCHOR)
    out = dec.decode("sample", REF_T, REF_S, REF_ANCHOR, samples=200_000, seed=0)
    np.testing.assert_allclose(out["boxes"].numpy(), ref["boxes"].numpy(), rtol=5e-3)
    np.testing.assert_allclose(out["std"].numpy(), ref["std"].numpy(), rtol=5e-3)
    # several anchors at once, realistic sigma
    codes, sigma, anchors = _random_inputs(n=4, seed=5, sigma_max=0.3)
    ref = dec.decode("lognormal", codes, sigma, anchors)
    out = dec.decode("sample", codes, sigma, anchors, samples=500_000, seed=3)
    scale = ref["std"].numpy()
    # boxes: within 0.5 % relative or well inside the MC error of the mean (std / sqrt(n) ~ 0.2 % of std)
    np.testing.assert_array_less(
        np.abs(out["boxes"].numpy() - ref["boxes"].numpy()),
        np.maximum(5e-3 * np.abs(ref["boxes"].numpy()), 0.02 * scale),
    )
    np.testing.assert_allclose(out["std"].numpy(), scale, rtol=5e-3)


def test_sample_is_seeded_and_reproducible_in_graph():
    codes, sigma, anchors = _random_inputs(n=16)
    a = dec.decode("sample", codes, sigma, anchors, samples=50, seed=7)
    b = tf.function(lambda c, s: dec.decode("sample", c, s, anchors, samples=50, seed=7))(codes, sigma)
    c = dec.decode("sample", codes, sigma, anchors, samples=50, seed=8)
    np.testing.assert_array_equal(a["boxes"].numpy(), b["boxes"].numpy())
    np.testing.assert_array_equal(a["std"].numpy(), b["std"].numpy())
    assert not np.allclose(a["std"].numpy(), c["std"].numpy())


def test_nflow_equals_lognormal():
    codes, sigma, anchors = _random_inputs(n=500, seed=2, sigma_max=1.5)
    ref = dec.decode("lognormal", codes, sigma, anchors)
    for name in ("nflow", "n-flow"):
        out = dec.decode(name, codes, sigma, anchors)
        np.testing.assert_allclose(out["boxes"].numpy(), ref["boxes"].numpy(), rtol=1e-6)
        np.testing.assert_allclose(out["std"].numpy(), ref["std"].numpy(), rtol=1e-6)
    # tiny sigma: the pivoted variance keeps full relative accuracy
    out = dec.decode("nflow", codes, sigma * 1e-4, anchors)
    ref = dec.decode("lognormal", codes, sigma * 1e-4, anchors)
    np.testing.assert_allclose(out["std"].numpy(), ref["std"].numpy(), rtol=1e-6)
    # fewer quadrature points are still accurate for small sigma
    out = dec.decode("nflow", codes, sigma * 0.1, anchors, quadrature_points=8)
    ref = dec.decode("lognormal", codes, sigma * 0.1, anchors)
    np.testing.assert_allclose(out["std"].numpy(), ref["std"].numpy(), rtol=1e-6)


def test_transformed_moments_other_transforms():
    rng = np.random.default_rng(4)
    mu = rng.normal(0, 1, 200)
    sd = rng.uniform(0.01, 1.0, 200)
    # cubic (monotone): exact moments of a Gaussian's third power
    m, v = dec.transformed_moments(lambda t: t**3, mu, sd)
    np.testing.assert_allclose(m.numpy(), mu**3 + 3 * mu * sd**2, rtol=1e-9, atol=1e-12)
    v_ref = 9 * mu**4 * sd**2 + 36 * mu**2 * sd**4 + 15 * sd**6
    np.testing.assert_allclose(v.numpy(), v_ref, rtol=1e-9, atol=1e-12)
    # exp(2t) scaled per element by a closed-over tensor: log-normal with doubled parameters
    a = tf.constant(rng.uniform(1, 10, 200))
    m, v = dec.transformed_moments(lambda t: a * tf.exp(2 * t), mu, sd)
    m_ref = a.numpy() * np.exp(2 * mu + 2 * sd**2)
    v_ref = a.numpy() ** 2 * np.expm1(4 * sd**2) * np.exp(4 * mu + 4 * sd**2)
    np.testing.assert_allclose(m.numpy(), m_ref, rtol=1e-9)
    np.testing.assert_allclose(v.numpy(), v_ref, rtol=1e-9)
    # a transform without a closed form (softplus) against a large Monte Carlo
    mu3, sd3 = np.array([0.3, -1.0]), np.array([0.5, 0.8])
    m, v = dec.transformed_moments(tf.math.softplus, mu3, sd3)
    draws = np.logaddexp(0, mu3 + sd3 * np.random.default_rng(0).standard_normal((400_000, 2)))
    np.testing.assert_allclose(m.numpy(), draws.mean(0), rtol=3e-3)
    np.testing.assert_allclose(v.numpy(), draws.var(0), rtol=1e-2)


def test_lognormal_full_covariance():
    ref = dec.decode("lognormal", REF_T, REF_S, REF_ANCHOR)
    full = dec.decode("lognormal_full", REF_T, REF_S, REF_ANCHOR)
    cov = full["cov"].numpy()
    assert cov.shape == (1, 4, 4)
    np.testing.assert_allclose(np.diagonal(cov, axis1=-2, axis2=-1), ref["std"].numpy() ** 2, rtol=1e-12)
    np.testing.assert_allclose(full["std"].numpy(), ref["std"].numpy(), rtol=1e-12)
    np.testing.assert_allclose(full["boxes"].numpy(), ref["boxes"].numpy(), rtol=1e-12)
    np.testing.assert_allclose(cov, np.swapaxes(cov, -1, -2))
    assert np.all(np.linalg.eigvalsh(cov) >= -1e-9)
    corners = _mc_corners(REF_T, REF_S, REF_ANCHOR, 200_000)[:, 0, :]  # [n, 4]
    mc_cov = np.cov(corners, rowvar=False)
    # 2 % relative plus ~5 standard errors of a sample covariance entry (sqrt(var_i var_j / n))
    d = np.diag(mc_cov)
    tol = 0.02 * np.abs(mc_cov) + 5 * np.sqrt(np.outer(d, d) / len(corners))
    np.testing.assert_array_less(np.abs(cov[0] - mc_cov), tol)
    assert cov[0, 0, 2] < 0  # Var(h)/4 > Var(yc) here: ymin and ymax anti-correlated
    # random anchors / leading axes: diagonal equals lognormal's variance
    codes, sigma, anchors = _random_inputs(n=32, lead=(2, 3))
    ref = dec.decode("lognormal", codes, sigma, anchors)
    full = dec.decode("lognormal_full", codes, sigma, anchors)
    assert full["cov"].shape == (2, 3, 32, 4, 4)
    np.testing.assert_allclose(
        np.diagonal(full["cov"].numpy(), axis1=-2, axis2=-1), ref["std"].numpy() ** 2, rtol=1e-12
    )


def test_sigma_none_gives_plain_decoder():
    codes, _, anchors = _random_inputs(n=16)
    plain = dec.decode_plain(codes, anchors).numpy()
    for name in dec.decoder_names():
        out = dec.decode(name, codes, None, anchors)
        np.testing.assert_allclose(out["boxes"].numpy(), plain)
        assert out["std"] is None
        if name == "lognormal_full":
            assert out["cov"] is None
    yc_a, h_a = (anchors[:, 0] + anchors[:, 2]) / 2, anchors[:, 2] - anchors[:, 0]
    np.testing.assert_allclose(plain[:, 2] - plain[:, 0], h_a * np.exp(codes[:, 2]))
    np.testing.assert_allclose((plain[:, 2] + plain[:, 0]) / 2, yc_a + codes[:, 0] * h_a)


def test_encode_decode_round_trip():
    codes, _, anchors = _random_inputs(n=100)
    boxes = dec.decode_plain(codes, anchors)
    np.testing.assert_allclose(dec.encode_boxes(boxes, anchors).numpy(), codes, atol=1e-10)
    np.testing.assert_allclose(dec.decode_plain(dec.encode_boxes(boxes, anchors), anchors).numpy(),
                               boxes.numpy(), rtol=1e-12)


@pytest.mark.parametrize("method", ["lognormal", "nflow", "sample", "falsedec", "lognormal_full"])
def test_broadcasting_leading_axes_and_tf_function(method):
    codes, sigma, anchors = _random_inputs(n=20, lead=(3, 2))  # [T=3, B=2, N=20, 4], anchors [N, 4]
    opts = {"samples": 20} if method == "sample" else {}
    out = dec.decode(method, codes, sigma, anchors, **opts)
    assert out["boxes"].shape == (3, 2, 20, 4) and out["std"].shape == (3, 2, 20, 4)
    # each slice equals decoding that slice alone (sample: per-slice draws differ, so compare lognormal)
    if method != "sample":
        one = dec.decode(method, codes[1, 0], sigma[1, 0], anchors)
        np.testing.assert_allclose(out["boxes"].numpy()[1, 0], one["boxes"].numpy(), rtol=1e-12)
        np.testing.assert_allclose(out["std"].numpy()[1, 0], one["std"].numpy(), rtol=1e-12)
    # graph mode with unknown leading dims gives the same result
    fn = tf.function(
        lambda c, s, a: dec.decode(method, c, s, a, **opts),
        input_signature=[tf.TensorSpec([None, None, None, 4], tf.float64)] * 2
        + [tf.TensorSpec([None, 4], tf.float64)],
    )
    g = fn(codes, sigma, anchors)
    np.testing.assert_allclose(g["boxes"].numpy(), out["boxes"].numpy(), rtol=1e-12)
    np.testing.assert_allclose(g["std"].numpy(), out["std"].numpy(), rtol=1e-12)


@pytest.mark.parametrize("method", ["lognormal", "nflow", "sample", "falsedec", "lognormal_full"])
def test_float32_in_float32_out(method):
    codes, sigma, anchors = _random_inputs(n=10, sigma_max=0.5)
    opts = {"samples": 10} if method == "sample" else {}
    out = dec.decode(method, codes.astype(np.float32), tf.constant(sigma, tf.float32),
                     anchors.astype(np.float32), **opts)
    ref = dec.decode(method, codes, sigma, anchors, **opts)
    for key, val in out.items():
        assert val.dtype == tf.float32, key
        np.testing.assert_allclose(val.numpy(), ref[key].numpy(), rtol=1e-5, atol=1e-4)
    assert dec.decode_plain(codes.astype(np.float32), anchors).dtype == tf.float32
    assert dec.encode_boxes(anchors.astype(np.float32), anchors).dtype == tf.float32


def test_registry_aliases_and_errors():
    assert dec.decoder_names() == ["lognormal", "nflow", "sample", "falsedec", "lognormal_full"]
    assert dec.ALIASES == {"l-norm": "lognormal", "n-flow": "nflow"}
    assert dec.get_decoder("l-norm") is dec.DECODERS["lognormal"]
    assert dec.get_decoder("n-flow") is dec.DECODERS["nflow"]
    with pytest.raises(ValueError) as err:
        dec.get_decoder("bogus")
    for name in list(dec.DECODERS) + list(dec.ALIASES):
        assert name in str(err.value)
    with pytest.raises(ValueError):
        dec.decode("bogus", REF_T, REF_S, REF_ANCHOR)
    with pytest.raises(TypeError, match="samples"):
        dec.decode("lognormal", REF_T, REF_S, REF_ANCHOR, samples=3)
    with pytest.raises(ValueError, match="last axis"):
        dec.decode("lognormal", np.zeros((2, 3)), None, REF_ANCHOR)


def test_configs_match_decoder_options():
    import inspect
    from pathlib import Path

    import yaml

    conf = Path(__file__).resolve().parents[2] / "conf" / "decoding"
    assert sorted(p.stem for p in conf.glob("*.yaml")) == sorted(dec.decoder_names())
    for name in dec.decoder_names():
        cfg = yaml.safe_load((conf / f"{name}.yaml").read_text())
        assert cfg.pop("name") == name
        params = inspect.signature(dec.DECODERS[name]).parameters
        defaults = {k: p.default for k, p in params.items() if p.kind is p.KEYWORD_ONLY}
        assert cfg == defaults, name


def test_saved_model_round_trip(tmp_path):
    codes, sigma, anchors = _random_inputs(n=12)
    anchors_c = tf.constant(anchors.astype(np.float32))
    module = tf.Module()
    spec = [tf.TensorSpec([None, None, 4], tf.float32)] * 2

    @tf.function(input_signature=spec)
    def serve(c, s):
        out = dec.decode("lognormal", c, s, anchors_c)
        mc = dec.decode("sample", c, s, anchors_c, samples=16, seed=3)
        return {"boxes": out["boxes"], "std": out["std"], "mc_std": mc["std"]}

    module.serve = serve
    tf.saved_model.save(module, str(tmp_path / "m"))
    loaded = tf.saved_model.load(str(tmp_path / "m"))
    c32, s32 = codes[None].astype(np.float32), sigma[None].astype(np.float32)
    got, want = loaded.serve(c32, s32), serve(c32, s32)
    for key in want:
        np.testing.assert_array_equal(got[key].numpy(), want[key].numpy())


def test_time_decoding_reports_milliseconds_for_every_method():
    from uncertainty_det.inference.decoding import DECODERS, time_decoding

    for method in DECODERS:
        options = {"samples": 8} if method == "sample" else None
        ms = time_decoding(method, num_anchors=64, mc_samples=2, options=options, repeats=2)
        assert 0.0 < ms < 10_000.0, method


@pytest.mark.parametrize("method", ["lognormal", "nflow", "sample", "falsedec", "lognormal_full"])
def test_degenerate_codes_saturate_to_finite_float32(method):
    """A degenerate anchor (huge size code, huge or negative σ) decodes to finite boxes and stds in float32,
    equal to the decoding at the bounds; ordinary codes are untouched (the reference vector is exact)."""
    anchor = np.array([[0.0, 0.0, 1024.0, 1024.0]])
    codes = np.array([[0.2, -0.1, 60.0, 25.0]], np.float32)
    sigma = np.array([[-40.0, 900.0, 1e6, 7.0]], np.float32)
    out = dec.decode(method, codes, sigma, anchor)
    for key in ("boxes", "std", "cov"):
        if out.get(key) is not None:
            assert out[key].dtype == tf.float32 and np.all(np.isfinite(out[key].numpy())), key
            if key != "cov":                                            # cov is px^2 already
                assert np.all(np.isfinite(np.square(out[key].numpy()))), key    # MC variances stay finite too
    at_bounds = dec.decode(method, np.array([[0.2, -0.1, dec.SIZE_CODE_CLIP, dec.SIZE_CODE_CLIP]]),
                           np.full((1, 4), dec.SIGMA_CLIP), anchor)
    np.testing.assert_allclose(out["boxes"].numpy(), at_bounds["boxes"].numpy(), rtol=1e-5)
    np.testing.assert_allclose(out["std"].numpy(), at_bounds["std"].numpy(), rtol=1e-5)
    plain = dec.decode_plain(codes, anchor).numpy()
    assert np.all(np.isfinite(plain)) and plain[0, 3] - plain[0, 1] == pytest.approx(1024 * np.exp(10.0), rel=1e-5)


def test_saturation_bounds_leave_ordinary_codes_exact():
    """Inside the bounds the clamp is the identity: σ up to SIGMA_CLIP and size codes up to SIZE_CODE_CLIP decode
    by the closed form (hand-computed log-normal moments)."""
    anchor = np.array([[0.0, 0.0, 10.0, 20.0]])           # h_a 10, w_a 20, centre (5, 10)
    t = np.array([[0.5, -0.5, 2.0, dec.SIZE_CODE_CLIP]])
    s = np.array([[2.9, 0.1, 2.9, 0.2]])
    out = dec.decode("lognormal", t, s, anchor)
    h = 10 * np.exp(2.0 + 0.5 * 2.9 ** 2)
    w = 20 * np.exp(dec.SIZE_CODE_CLIP + 0.5 * 0.2 ** 2)
    yc, xc = 5 + 0.5 * 10, 10 - 0.5 * 20
    np.testing.assert_allclose(out["boxes"].numpy()[0], [yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], rtol=1e-6)
    var_y = (2.9 * 10) ** 2 + 0.25 * h ** 2 * np.expm1(2.9 ** 2)
    var_x = (0.1 * 20) ** 2 + 0.25 * w ** 2 * np.expm1(0.2 ** 2)
    np.testing.assert_allclose(out["std"].numpy()[0], np.sqrt([var_y, var_x, var_y, var_x]), rtol=1e-6)
