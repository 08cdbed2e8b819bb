"""Decoding of box regressions and their aleatoric sigma from anchor space to pixel corner space.

Conventions
-----------
* Anchors and boxes are ``[ymin, xmin, ymax, xmax]`` in model-input pixels.
* Codes are Faster R-CNN ``(ty, tx, th, tw)`` without scale factors::

      ty = (yc - yc_a) / h_a    tx = (xc - xc_a) / w_a    th = log(h / h_a)    tw = log(w / w_a)

* ``sigma`` is a standard deviation per code coordinate (variance ``v = sigma**2``, anchor-space units);
  the four codes are treated as independent Gaussians ``t_k ~ N(codes_k, v_k)``.
* Every decoder returns ``{"boxes": [..., 4], "std": [..., 4] or None}`` in pixels (``std`` is the
  per-corner standard deviation); ``lognormal_full`` adds ``"cov": [..., 4, 4]`` (pixels squared, corner
  order ``[ymin, xmin, ymax, xmax]``).

All arithmetic runs in float64 and is cast back to the dtype of ``codes`` (float32 when ``codes`` is not
floating). Everything is made of TF ops, vectorised over any leading axes (``codes`` ``[N,4]``,
``[B,N,4]``, ``[T,B,N,4]`` with anchors ``[N,4]`` ...) and usable inside ``tf.function`` / a SavedModel.

Methods (registry :data:`DECODERS`, aliases :data:`ALIASES`)
-------------------------------------------------------------
``lognormal`` (alias ``l-norm``, default)
    Closed form: centres are linear in ``ty``/``tx``; sizes ``h = h_a * exp(th)`` are log-normal with
    ``E[h] = h_a exp(mu + v/2)`` and ``Var(h) = h_a^2 (exp(v) - 1) exp(2 mu + v)``; corners are
    ``centre -/+ E[size]/2`` with ``Var(corner) = Var(centre) + Var(size)/4``.
``nflow`` (alias ``n-flow``)
    The same moments via a generic change of variables: ``E[g(t)]`` and ``Var[g(t)]`` of a transform
    ``g`` of a Gaussian by Gauss-Hermite quadrature (:func:`transformed_moments`).
``sample``
    Seeded Monte Carlo: ``samples`` draws of the codes, each decoded with :func:`decode_plain`;
    per-corner mean and population std.
``falsedec``
    The reference's naive baseline: plain box, and the variance vector pushed through the box decoder as
    if it were a code (depends on the absolute anchor position; deliberately wrong).
``lognormal_full``
    ``lognormal`` plus the full 4x4 corner covariance (``Cov(ymin, ymax) = Var(yc) - Var(h)/4``; the y
    and x blocks are independent).

With ``sigma=None`` every method returns the plain decoding (``exp(th)`` sizes, no log-normal shift) and
``std`` (and ``cov``) ``None``.

Saturation: every method clamps the size codes ``th, tw`` at :data:`SIZE_CODE_CLIP` (10: a box at most
``e^10`` ~ 22,000 times its anchor) and the code stds at :data:`SIGMA_CLIP` (``|sigma| <= 3``: a centre known
only to three anchor sizes, a size only up to a factor ``e^3`` ~ 20 either way). Far beyond what a trained
detector predicts for an object, these bounds leave the decoding exact in practice (at ``th = 0, sigma = 1.5``
the tail they cut holds ~1e-7 of the mean size and ~1e-4 of its second moment) and only stop a degenerate
anchor of a barely trained model from overflowing to inf pixel stds (and NaN MC stds, ``inf - inf``) that no
later stage could use: with them every box, std and variance stays finite in float32 (a 1024-px anchor: std
below ~2e11 px).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

__all__ = [
    "ALIASES",
    "DECODERS",
    "decode",
    "decode_plain",
    "decoder_names",
    "encode_boxes",
    "get_decoder",
    "transformed_moments",
]

_F64 = tf.float64

#: Upper bound of the size codes ``th, tw`` before ``exp`` (module docstring, "Saturation").
SIZE_CODE_CLIP = 10.0
#: Upper bound of ``|sigma|`` of every code (anchor-space units; module docstring, "Saturation").
SIGMA_CLIP = 3.0


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
def _out_dtype(x) -> tf.DType:
    """The dtype results are cast back to: that of ``x`` if floating, else float32."""
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        dtype = tf.convert_to_tensor(x).dtype
    dtype = tf.as_dtype(dtype)
    return dtype if dtype.is_floating else tf.float32


def _f64(x, name: str) -> tf.Tensor:
    """``x`` as a float64 tensor whose last axis (when static) is 4."""
    t = tf.cast(tf.convert_to_tensor(x), _F64)
    last = t.shape[-1] if t.shape.rank else None
    if t.shape.rank == 0 or (last is not None and last != 4):
        raise ValueError(f"{name} must have a last axis of size 4, got shape {t.shape}")
    return t


def _codes64(codes) -> tf.Tensor:
    """``codes`` as float64 with ``th, tw`` clamped at :data:`SIZE_CODE_CLIP` (centre codes untouched)."""
    t = _f64(codes, "codes")
    return tf.concat([t[..., :2], tf.minimum(t[..., 2:], SIZE_CODE_CLIP)], axis=-1)


def _sigma64(sigma) -> tf.Tensor:
    """``|sigma|`` as float64, clamped at :data:`SIGMA_CLIP` (the sign of a raw σ output is irrelevant)."""
    return tf.minimum(tf.abs(_f64(sigma, "sigma")), SIGMA_CLIP)


def _unstack4(t: tf.Tensor) -> list[tf.Tensor]:
    return tf.unstack(t, num=4, axis=-1)


def _anchor_geometry(anchors: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """``[..., 4]`` corner anchors -> ``(yc_a, xc_a, h_a, w_a)``, each ``[...]`` (pixels)."""
    ymin, xmin, ymax, xmax = _unstack4(anchors)
    h_a = ymax - ymin
    w_a = xmax - xmin
    return ymin + 0.5 * h_a, xmin + 0.5 * w_a, h_a, w_a


def _corners(yc, xc, h, w) -> tf.Tensor:
    """Centre/size ``[...]`` tensors -> ``[..., 4]`` corners ``[ymin, xmin, ymax, xmax]``."""
    return tf.stack([yc - 0.5 * h, xc - 0.5 * w, yc + 0.5 * h, xc + 0.5 * w], axis=-1)


def _corner_std(var_yc, var_xc, var_h, var_w) -> tf.Tensor:
    """Independent centre/size variances ``[...]`` -> ``[..., 4]`` per-corner std."""
    var_y = var_yc + 0.25 * var_h
    var_x = var_xc + 0.25 * var_w
    return tf.sqrt(tf.stack([var_y, var_x, var_y, var_x], axis=-1))


def _plain_result(codes, anchors, extra_keys=()) -> dict:
    out = {"boxes": decode_plain(codes, anchors), "std": None}
    for k in extra_keys:
        out[k] = None
    return out


# --------------------------------------------------------------------------------------------------
# plain codec
# --------------------------------------------------------------------------------------------------
def decode_plain(codes, anchors) -> tf.Tensor:
    """Standard (point) decoder.

    Args:
        codes: ``[..., 4]`` ``(ty, tx, th, tw)``.
        anchors: broadcastable to ``[..., 4]``, ``[ymin, xmin, ymax, xmax]`` pixels.

    Returns:
        ``[..., 4]`` boxes ``[ymin, xmin, ymax, xmax]`` (pixels) with sizes ``h_a * exp(th)``, in the
        dtype of ``codes``.
    """
    dtype = _out_dtype(codes)
    t = _codes64(codes)
    yc_a, xc_a, h_a, w_a = _anchor_geometry(_f64(anchors, "anchors"))
    ty, tx, th, tw = _unstack4(t)
    boxes = _corners(ty * h_a + yc_a, tx * w_a + xc_a, h_a * tf.exp(th), w_a * tf.exp(tw))
    return tf.cast(boxes, dtype)


def encode_boxes(boxes, anchors) -> tf.Tensor:
    """Inverse of :func:`decode_plain`.

    Args:
        boxes: ``[..., 4]`` ``[ymin, xmin, ymax, xmax]`` pixels (positive sizes).
        anchors: broadcastable to ``[..., 4]``, ``[ymin, xmin, ymax, xmax]`` pixels.

    Returns:
        ``[..., 4]`` codes ``(ty, tx, th, tw)`` in the dtype of ``boxes``.
    """
    dtype = _out_dtype(boxes)
    yc, xc, h, w = _anchor_geometry(_f64(boxes, "boxes"))
    yc_a, xc_a, h_a, w_a = _anchor_geometry(_f64(anchors, "anchors"))
    codes = tf.stack(
        [(yc - yc_a) / h_a, (xc - xc_a) / w_a, tf.math.log(h / h_a), tf.math.log(w / w_a)], axis=-1
    )
    return tf.cast(codes, dtype)


# --------------------------------------------------------------------------------------------------
# generic change of variables (Gauss-Hermite)
# --------------------------------------------------------------------------------------------------
def _hermite_rule(points: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilists' Gauss-Hermite nodes and weights normalised to a N(0, 1) expectation."""
    if int(points) < 1:
        raise ValueError(f"quadrature_points must be >= 1, got {points}")
    nodes, weights = np.polynomial.hermite_e.hermegauss(int(points))
    return nodes, weights / weights.sum()  # sum(weights) = sqrt(2*pi)


def transformed_moments(
    transform: Callable[[tf.Tensor], tf.Tensor], mean, std, quadrature_points: int = 32
) -> tuple[tf.Tensor, tf.Tensor]:
    """Mean and variance of ``transform(t)`` for ``t ~ N(mean, std**2)``, element-wise.

    ``E[g(t)] = sum_i w_i g(mean + std * x_i)`` with probabilists' Gauss-Hermite nodes ``x_i`` and
    weights ``w_i`` (normalised to sum to 1). The variance is accumulated around the pivot
    ``g(mean)`` (``Var = E[d^2] - E[d]^2`` with ``d = g(t) - g(mean)``), which avoids the cancellation of
    ``E[g^2] - E[g]^2`` when ``std`` is small. Exact for polynomials of degree ``< 2 * points``; for
    smooth transforms such as ``exp`` the error is negligible for ``std`` up to a few units.

    Args:
        transform: an element-wise TF callable ``[...] -> [...]`` (it may close over tensors that
            broadcast with ``mean``, e.g. per-anchor scale/shift). It is evaluated ``points + 1`` times
            on tensors of the broadcast shape of ``mean`` and ``std`` (no extra memory per node).
        mean, std: broadcastable tensors (any float dtype; computed in float64).
        quadrature_points: number of Gauss-Hermite nodes (default 32).

    Returns:
        ``(E[g(t)], Var[g(t)])``, float64 tensors of the broadcast shape.
    """
    nodes, weights = _hermite_rule(quadrature_points)
    mu = tf.cast(tf.convert_to_tensor(mean), _F64)
    sd = tf.cast(tf.convert_to_tensor(std), _F64)
    pivot = transform(mu)
    s1 = tf.zeros_like(pivot + sd)
    s2 = tf.zeros_like(s1)
    for x, w in zip(nodes, weights):
        d = transform(mu + sd * tf.constant(x, _F64)) - pivot
        wt = tf.constant(w, _F64)
        s1 = s1 + wt * d
        s2 = s2 + wt * tf.square(d)
    mean_g = pivot + s1
    var_g = tf.maximum(s2 - tf.square(s1), 0.0)
    return mean_g, var_g


# --------------------------------------------------------------------------------------------------
# decoders
# --------------------------------------------------------------------------------------------------
def decode_lognormal(codes, sigma, anchors) -> dict:
    """Closed-form log-normal decoding (reference "l-norm", the default).

    Args:
        codes: ``[..., 4]`` ``(ty, tx, th, tw)`` means.
        sigma: ``[..., 4]`` stds of the codes (anchor-space units) or ``None``.
        anchors: broadcastable to ``[..., 4]`` (pixels).

    Returns:
        ``{"boxes": [..., 4], "std": [..., 4]}`` in pixels; boxes use the log-normal mean sizes
        ``h_a exp(th + v/2)``.
    """
    if sigma is None:
        return _plain_result(codes, anchors)
    dtype = _out_dtype(codes)
    boxes, std, _ = _lognormal_moments(codes, sigma, anchors)
    return {"boxes": tf.cast(boxes, dtype), "std": tf.cast(std, dtype)}


def _lognormal_moments(codes, sigma, anchors):
    """float64 ``(boxes [...,4], std [...,4], (var_yc, var_xc, var_h, var_w))``."""
    ty, tx, th, tw = _unstack4(_codes64(codes))
    v_ty, v_tx, v_th, v_tw = _unstack4(tf.square(_sigma64(sigma)))
    yc_a, xc_a, h_a, w_a = _anchor_geometry(_f64(anchors, "anchors"))
    yc = ty * h_a + yc_a
    xc = tx * w_a + xc_a
    mean_h = h_a * tf.exp(th + 0.5 * v_th)
    mean_w = w_a * tf.exp(tw + 0.5 * v_tw)
    var_yc = v_ty * tf.square(h_a)
    var_xc = v_tx * tf.square(w_a)
    # Var(h) = h_a^2 (exp(v) - 1) exp(2 mu + v) = E[h]^2 * expm1(v)
    var_h = tf.square(mean_h) * tf.math.expm1(v_th)
    var_w = tf.square(mean_w) * tf.math.expm1(v_tw)
    boxes = _corners(yc, xc, mean_h, mean_w)
    return boxes, _corner_std(var_yc, var_xc, var_h, var_w), (var_yc, var_xc, var_h, var_w)


def decode_nflow(codes, sigma, anchors, *, quadrature_points: int = 32) -> dict:
    """Log-normal moments through a generic change of variables (reference "n-flow").

    Centres use ``g(t) = a * t + b`` (``a = h_a | w_a``, ``b = yc_a | xc_a``), sizes ``g(t) = a * exp(t)``;
    ``E[g(t)]`` and ``Var[g(t)]`` come from :func:`transformed_moments` (Gauss-Hermite with
    ``quadrature_points`` nodes), then corners are combined as in ``lognormal``. Shapes and units as
    :func:`decode_lognormal`.
    """
    if sigma is None:
        return _plain_result(codes, anchors)
    dtype = _out_dtype(codes)
    t = _codes64(codes)
    s = _sigma64(sigma)
    yc_a, xc_a, h_a, w_a = _anchor_geometry(_f64(anchors, "anchors"))
    scale = tf.stack([h_a, w_a], axis=-1)   # [..., 2]
    shift = tf.stack([yc_a, xc_a], axis=-1)  # [..., 2]
    centre, var_centre = transformed_moments(
        lambda u: scale * u + shift, t[..., :2], s[..., :2], quadrature_points
    )
    size, var_size = transformed_moments(
        lambda u: scale * tf.exp(u), t[..., 2:], s[..., 2:], quadrature_points
    )
    yc, xc = tf.unstack(centre, num=2, axis=-1)
    h, w = tf.unstack(size, num=2, axis=-1)
    var_yc, var_xc = tf.unstack(var_centre, num=2, axis=-1)
    var_h, var_w = tf.unstack(var_size, num=2, axis=-1)
    boxes = _corners(yc, xc, h, w)
    std = _corner_std(var_yc, var_xc, var_h, var_w)
    return {"boxes": tf.cast(boxes, dtype), "std": tf.cast(std, dtype)}


def decode_sample(codes, sigma, anchors, *, samples: int = 100, seed: int = 0) -> dict:
    """Seeded Monte-Carlo decoding (reference "sample").

    Draws ``samples`` codes ``t = codes + sigma * eps`` with ``eps`` from
    ``tf.random.stateless_normal(seed=[seed, 0])`` (reproducible, also inside ``tf.function``), decodes
    each with :func:`decode_plain` and returns the per-corner sample mean and population std. Memory is
    ``samples`` times that of the inputs. Shapes and units as :func:`decode_lognormal`.
    """
    if sigma is None:
        return _plain_result(codes, anchors)
    if isinstance(samples, int) and samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    dtype = _out_dtype(codes)
    t = _codes64(codes)
    s = _sigma64(sigma)
    shape = tf.broadcast_dynamic_shape(tf.shape(t), tf.shape(s))
    n = tf.reshape(tf.cast(samples, tf.int32), [1])
    seed_t = tf.stack([tf.cast(seed, tf.int64), tf.constant(0, tf.int64)])
    eps = tf.random.stateless_normal(tf.concat([n, shape], 0), seed=seed_t, dtype=_F64)
    drawn = decode_plain(t[None] + s[None] * eps, _f64(anchors, "anchors"))  # [S, ..., 4] float64
    mean = tf.reduce_mean(drawn, axis=0)
    var = tf.reduce_mean(tf.square(drawn - mean[None]), axis=0)
    return {"boxes": tf.cast(mean, dtype), "std": tf.cast(tf.sqrt(var), dtype)}


def decode_falsedec(codes, sigma, anchors) -> dict:
    """Naive baseline of the reference ("false decoding"), reproduced exactly.

    Box: :func:`decode_plain`. "Std": the variance vector ``v`` is decoded as if it were a code,
    ``dh = exp(v_th) h_a``, ``dw = exp(v_tw) w_a``, ``dyc = v_ty h_a + yc_a``, ``dxc = v_tx w_a + xc_a``;
    ``std = sqrt([|dyc - dh/2|, |dxc - dw/2|, dyc + dh/2, dxc + dw/2])``. It depends on the absolute
    anchor position (and is NaN for the max corners of anchors centred at negative coordinates) and is
    only meant as a comparison baseline. Shapes and units as :func:`decode_lognormal`.
    """
    if sigma is None:
        return _plain_result(codes, anchors)
    dtype = _out_dtype(codes)
    v_ty, v_tx, v_th, v_tw = _unstack4(tf.square(_sigma64(sigma)))
    yc_a, xc_a, h_a, w_a = _anchor_geometry(_f64(anchors, "anchors"))
    dh = tf.exp(v_th) * h_a
    dw = tf.exp(v_tw) * w_a
    dyc = v_ty * h_a + yc_a
    dxc = v_tx * w_a + xc_a
    pseudo_var = tf.stack(
        [tf.abs(dyc - 0.5 * dh), tf.abs(dxc - 0.5 * dw), dyc + 0.5 * dh, dxc + 0.5 * dw], axis=-1
    )
    return {"boxes": decode_plain(codes, anchors), "std": tf.cast(tf.sqrt(pseudo_var), dtype)}


def decode_lognormal_full(codes, sigma, anchors) -> dict:
    """``lognormal`` plus the full corner covariance.

    Returns:
        ``{"boxes": [..., 4], "std": [..., 4], "cov": [..., 4, 4]}``; ``cov`` (pixels squared) is indexed
        ``[ymin, xmin, ymax, xmax]`` x ``[ymin, xmin, ymax, xmax]`` with
        ``Var(ymin) = Var(ymax) = Var(yc) + Var(h)/4``, ``Cov(ymin, ymax) = Var(yc) - Var(h)/4`` (x alike)
        and zero between the y and x corners; ``std`` is the square root of its diagonal (equal to
        ``lognormal``'s std). With ``sigma=None``: plain boxes, ``std`` and ``cov`` ``None``.
    """
    if sigma is None:
        return _plain_result(codes, anchors, extra_keys=("cov",))
    dtype = _out_dtype(codes)
    boxes, std, (var_yc, var_xc, var_h, var_w) = _lognormal_moments(codes, sigma, anchors)
    var_y = var_yc + 0.25 * var_h
    var_x = var_xc + 0.25 * var_w
    cov_y = var_yc - 0.25 * var_h
    cov_x = var_xc - 0.25 * var_w
    zero = tf.zeros_like(var_y)
    rows = [
        [var_y, zero, cov_y, zero],
        [zero, var_x, zero, cov_x],
        [cov_y, zero, var_y, zero],
        [zero, cov_x, zero, var_x],
    ]
    cov = tf.stack([tf.stack(r, axis=-1) for r in rows], axis=-2)
    return {"boxes": tf.cast(boxes, dtype), "std": tf.cast(std, dtype), "cov": tf.cast(cov, dtype)}


# --------------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------------
DECODERS: dict[str, Callable] = {
    "lognormal": decode_lognormal,
    "nflow": decode_nflow,
    "sample": decode_sample,
    "falsedec": decode_falsedec,
    "lognormal_full": decode_lognormal_full,
}
"""Method name -> ``fn(codes, sigma, anchors, **options) -> dict`` (see the module docstring)."""

ALIASES: dict[str, str] = {"l-norm": "lognormal", "n-flow": "nflow"}
"""Reference spellings -> registry names."""

DEFAULT_DECODER = "lognormal"


def decoder_names() -> list[str]:
    """Registered method names (aliases excluded), in registry order."""
    return list(DECODERS)


def get_decoder(name: str) -> Callable:
    """The decoder registered under ``name`` or one of its :data:`ALIASES` (case-insensitive).

    Raises:
        ValueError: unknown name; the message lists the methods and aliases.
    """
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in DECODERS:
        aliases = ", ".join(f"{a} -> {t}" for a, t in ALIASES.items())
        raise ValueError(
            f"unknown decoding method {name!r}; available: {', '.join(DECODERS)} (aliases: {aliases})"
        )
    return DECODERS[key]


def decode(method: str, codes, sigma, anchors, **options) -> dict[str, tf.Tensor]:
    """Decode codes and their sigma with the method ``method`` (name or alias).

    Args:
        method: a key of :data:`DECODERS` or :data:`ALIASES`.
        codes: ``[..., 4]`` ``(ty, tx, th, tw)``.
        sigma: ``[..., 4]`` std per code coordinate (anchor space), or ``None`` for plain decoding.
        anchors: broadcastable to ``[..., 4]`` (typically ``[N, 4]`` with codes ``[B, N, 4]`` or
            ``[T, B, N, 4]``), ``[ymin, xmin, ymax, xmax]`` model-input pixels.
        **options: method options (``sample``: ``samples``, ``seed``; ``nflow``: ``quadrature_points``).
            An option the method does not take raises ``TypeError``.

    Returns:
        ``{"boxes": [..., 4], "std": [..., 4] or None}`` (pixels, dtype of ``codes``), plus
        ``"cov": [..., 4, 4] or None`` for ``lognormal_full``.
    """
    fn = get_decoder(method)
    try:
        return fn(codes, sigma, anchors, **options)
    except TypeError as err:
        if options and "unexpected keyword argument" in str(err):
            raise TypeError(
                f"decoding method {method!r} got an unsupported option: {err}"
            ) from err
        raise



def time_decoding(method: str, num_anchors: int, mc_samples: int = 1, options: dict | None = None,
                  repeats: int = 5, seed: int = 0) -> float:
    """Median wall time (ms) of decoding ``mc_samples`` x ``num_anchors`` anchors with ``method`` (``options``:
    its keyword options, e.g. ``{"samples": 100}`` for ``sample``).

    Decodes random codes ``N(0, 0.5)`` with σ ~ U(0.01, 1) on random anchors (decoding cost does not
    depend on the values) inside a ``tf.function``, shape ``[mc_samples, 1, num_anchors, 4]`` as the
    post-processing decodes one image's pre-NMS candidates of every MC sample. Tracing and one warm-up call
    are excluded. Used to report the decoding cost per image next to a method's accuracy.
    """
    import statistics
    import time

    rng = np.random.default_rng(seed)
    codes = tf.constant(rng.normal(0.0, 0.5, (mc_samples, 1, num_anchors, 4)), tf.float32)
    sigma = tf.constant(rng.uniform(0.01, 1.0, (mc_samples, 1, num_anchors, 4)), tf.float32)
    yx = rng.uniform(0, 200, (num_anchors, 2))
    anchors = tf.constant(np.concatenate([yx, yx + rng.uniform(8, 64, (num_anchors, 2))], 1), tf.float32)
    fn = tf.function(lambda c, s: decode(method, c, s, anchors, **(options or {}))["boxes"])
    fn(codes, sigma).numpy()
    fn(codes, sigma).numpy()
    times = []
    for _ in range(max(1, int(repeats))):
        start = time.perf_counter()
        fn(codes, sigma).numpy()
        times.append(1e3 * (time.perf_counter() - start))
    return float(statistics.median(times))
