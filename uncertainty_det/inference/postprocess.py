"""Post-processing of raw head outputs into padded detections with their uncertainties.

Runs inside the exported SavedModel (pure TF, graph-compatible; the config is Python-static). Steps,
following reference §1.5/§2.1 with its defects fixed:

1. **Class aggregation over the T MC samples**: mean logits and the per-class population std of the
   logits (zeros when ``T == 1``); ``score = sigmoid(max_c mean logit)``, ``class = argmax_c + 1``.
2. **Pre-NMS top-k** (``max_nms_inputs`` anchors by score; 0 = all): every per-anchor field (codes and σ
   of every sample, logit samples, anchors) is gathered with the same indices.
3. **Decoding** of every MC sample with the configured method (:mod:`.decoding`, with σ when the model
   has loss attenuation): ``box = mean_T(decoded corners)``, ``ep_std = std_T(decoded corners)``
   (zeros when ``T == 1``), ``al_std = mean_T(decoded σ)`` (zeros without σ), optionally
   ``total_std = sqrt(al_std² + ep_std²)``; ``lognormal_full`` also gives ``al_cov = mean_T(cov)``.
4. **NMS** (:mod:`.nms`); every field follows the kept indices (uncertainties, logits and logit std
   belong to the same detection; no first-detection reuse, reference D4/D5).
5. **Rescale and clip**: boxes ÷ ``scale`` to original-image pixels and clipped to the original image
   ``[0, H] x [0, W]`` (not the padded network canvas, reference D24); σ are standard deviations and
   scale linearly (÷ ``scale``), covariances quadratically (÷ ``scale²``); σ are not clipped; the logit
   std is not scaled.

Padding slots (``>= num_detections``) are all zeros (class 0).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

import tensorflow as tf

from .decoding import decode, get_decoder
from .nms import nms, nms_method_name


@dataclass
class PostprocessConfig:
    """Static post-processing settings (one-to-one with ``conf/postprocess/default.yaml``).

    decoding: decoding method name or alias (``lognormal``, ``nflow``, ``sample``, ``falsedec``,
    ``lognormal_full``); decoding_options: its options (``samples``, ``seed``, ``quadrature_points``;
    keys the method does not take, such as the config's ``name``, are ignored); nms_method: ``soft`` or
    ``hard``; iou_threshold, score_threshold, soft_sigma, class_agnostic, max_detections: see
    :func:`uncertainty_det.inference.nms.nms`; max_nms_inputs: pre-NMS top-k (0 = all anchors);
    total_sigma: also output ``total_std = sqrt(al_std² + ep_std²)``.
    """

    decoding: str = "lognormal"
    decoding_options: dict = field(default_factory=dict)
    nms_method: str = "soft"
    iou_threshold: float = 0.5
    score_threshold: float = 0.001
    soft_sigma: float = 0.5
    class_agnostic: bool = True
    max_detections: int = 100
    max_nms_inputs: int = 5000
    total_sigma: bool = False

    def __post_init__(self) -> None:
        get_decoder(self.decoding)                 # raises on an unknown method
        self.nms_method = nms_method_name(self.nms_method)
        self.decoding_options = dict(self.decoding_options or {})
        if int(self.max_detections) < 1:
            raise ValueError(f"postprocess.max_detections must be >= 1, got {self.max_detections}")
        if int(self.max_nms_inputs) < 0:
            raise ValueError(f"postprocess.max_nms_inputs must be >= 0 (0 = all anchors), got {self.max_nms_inputs}")
        if float(self.soft_sigma) <= 0 and self.nms_method == "soft":
            raise ValueError(f"postprocess.soft_sigma must be > 0 for soft NMS, got {self.soft_sigma}")


def postprocess_config_from_dict(d: Mapping[str, Any] | None) -> PostprocessConfig:
    """Build a :class:`PostprocessConfig` from a plain mapping (e.g. the resolved ``postprocess`` config).

    Unknown keys raise ``ValueError`` naming them.
    """
    d = dict(d or {})
    known = {f.name for f in fields(PostprocessConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown postprocess config keys {unknown}; known: {sorted(known)}")
    if "decoding_options" in d:
        d["decoding_options"] = dict(d["decoding_options"] or {})
    return PostprocessConfig(**d)


def decoder_options(method: str, options: Mapping[str, Any] | None) -> dict:
    """The subset of ``options`` that decoding method ``method`` takes (its keyword-only parameters)."""
    params = inspect.signature(get_decoder(method)).parameters
    accepted = {n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    return {k: v for k, v in dict(options or {}).items() if k in accepted}


def _mc_std(x: tf.Tensor) -> tf.Tensor:
    """Population std over axis 0 (the MC axis); exact zeros when T is statically 1."""
    if x.shape[0] == 1:
        return tf.zeros_like(x[0])
    return tf.math.reduce_std(x, axis=0)


def _gather_samples(x: tf.Tensor, idx: tf.Tensor) -> tf.Tensor:
    """``x [T,B,N,...]``, ``idx [B,k]`` -> ``[T,B,k,...]``."""
    t = tf.shape(x)[0]
    idx_t = tf.broadcast_to(idx[None], tf.concat([[t], tf.shape(idx)], 0))
    return tf.gather(x, idx_t, batch_dims=2)


def _check_rank(x: tf.Tensor, rank: int, name: str) -> None:
    if x.shape.rank is not None and x.shape.rank != rank:
        raise ValueError(f"postprocess: raw[{name!r}] must have rank {rank} ([T,B,N,...]), got shape {x.shape}")


def postprocess(
    raw: Mapping[str, Any],
    anchors,
    scale,
    image_shape,
    cfg: PostprocessConfig | None = None,
) -> dict[str, tf.Tensor]:
    """Turn raw head outputs into padded detections (original-image pixels) with uncertainties.

    Args:
        raw: ``{"cls": [T,B,N,C] logits, "box": [T,B,N,4] codes (ty, tx, th, tw), "sigma": [T,B,N,4]}``;
            ``sigma`` (positive σ of the codes, anchor space) is present only with loss attenuation.
            ``T >= 1`` MC samples (the class and box T may differ, e.g. a deterministic class head with
            ``T = 1``).
        anchors: ``[N,4]`` ``[ymin, xmin, ymax, xmax]`` model-input pixels.
        scale: ``[B]`` model-input pixels per original pixel (original = model / scale).
        image_shape: ``[B,2]`` original ``(H, W)`` in pixels.
        cfg: :class:`PostprocessConfig` (defaults when ``None``).

    Returns:
        Dict with ``D = cfg.max_detections``:
        ``boxes [B,D,4]`` float32 original pixels, ``scores [B,D]`` float32 (soft-NMS-decayed),
        ``classes [B,D]`` int32 (1-based, 0 in padding), ``logits [B,D,C]`` (MC mean),
        ``al_std [B,D,4]`` (px, zeros without σ), ``ep_std [B,D,4]`` (px, zeros when T = 1),
        ``ep_logit_std [B,D,C]`` (logit units), ``num_detections [B]`` int32; plus ``total_std [B,D,4]``
        (px) when ``cfg.total_sigma`` and ``al_cov [B,D,4,4]`` (px²) when decoding is ``lognormal_full``
        and σ is present.
    """
    cfg = cfg or PostprocessConfig()
    cls = tf.cast(tf.convert_to_tensor(raw["cls"]), tf.float32)
    codes = tf.cast(tf.convert_to_tensor(raw["box"]), tf.float32)
    sigma = raw.get("sigma")
    sigma = None if sigma is None else tf.cast(tf.convert_to_tensor(sigma), tf.float32)
    _check_rank(cls, 4, "cls")
    _check_rank(codes, 4, "box")
    if sigma is not None:
        _check_rank(sigma, 4, "sigma")
    anchors = tf.cast(tf.convert_to_tensor(anchors), tf.float32)

    # 1. class aggregation (mean logits over T); scores and 1-based classes per anchor
    logit_mean = tf.reduce_mean(cls, axis=0)                                    # [B,N,C]
    scores = tf.sigmoid(tf.reduce_max(logit_mean, axis=-1))                     # [B,N]
    classes = tf.cast(tf.argmax(logit_mean, axis=-1, output_type=tf.int32) + 1, tf.int32)

    # 2. pre-NMS top-k, all per-anchor fields by the same indices
    k = int(cfg.max_nms_inputs)
    if k > 0:
        n_static = scores.shape[-1]
        k_eff = min(k, n_static) if n_static is not None else tf.minimum(k, tf.shape(scores)[-1])
        scores, sel = tf.math.top_k(scores, k=k_eff, sorted=True)               # [B,k]
        classes = tf.gather(classes, sel, batch_dims=1)
        logit_mean = tf.gather(logit_mean, sel, batch_dims=1)                   # [B,k,C]
        cls = _gather_samples(cls, sel)                                         # [T,B,k,C]
        codes = _gather_samples(codes, sel)                                     # [T,B,k,4]
        if sigma is not None:
            sigma = _gather_samples(sigma, sel)
        anchors = tf.gather(anchors, sel)                                       # [B,k,4]
    logit_std = _mc_std(cls)                                                    # [B,k,C]

    # 3. decode every MC sample, then aggregate
    opts = decoder_options(cfg.decoding, cfg.decoding_options)
    dec = decode(cfg.decoding, codes, sigma, anchors, **opts)
    decoded = tf.cast(dec["boxes"], tf.float32)                                 # [T,B,k,4]
    boxes = tf.reduce_mean(decoded, axis=0)                                     # [B,k,4]
    ep_std = _mc_std(decoded)
    if dec.get("std") is not None:
        al_std = tf.reduce_mean(tf.cast(dec["std"], tf.float32), axis=0)
    else:
        al_std = tf.zeros_like(boxes)
    al_cov = dec.get("cov")
    if al_cov is not None:
        al_cov = tf.reduce_mean(tf.cast(al_cov, tf.float32), axis=0)            # [B,k,4,4]

    # 4. NMS in model-input pixels; every field follows the kept indices
    keep, kept_scores, num = nms(
        boxes, scores, classes, method=cfg.nms_method, iou_threshold=cfg.iou_threshold,
        score_threshold=cfg.score_threshold, soft_sigma=cfg.soft_sigma,
        class_agnostic=cfg.class_agnostic, max_detections=cfg.max_detections)
    d = int(cfg.max_detections)
    valid = tf.range(d)[None, :] < num[:, None]                                 # [B,D]
    valid_f = tf.cast(valid, tf.float32)

    def take(x: tf.Tensor) -> tf.Tensor:
        g = tf.gather(x, keep, batch_dims=1)
        mask = valid[(...,) + (None,) * (g.shape.rank - 2)]                   # [B,D,1,...]
        return tf.where(mask, g, tf.zeros_like(g))                              # NaN-safe padding

    # 5. original-image pixels: rescale, then clip boxes to the image
    s = tf.cast(tf.reshape(tf.convert_to_tensor(scale), [-1]), tf.float32)[:, None, None]     # [B,1,1]
    hw = tf.cast(tf.convert_to_tensor(image_shape), tf.float32)                               # [B,2]
    limits = tf.concat([hw, hw], axis=-1)[:, None, :]                                         # [B,1,4] (H,W,H,W)
    out_boxes = tf.minimum(tf.maximum(take(boxes) / s, 0.0), limits)
    out = {
        "boxes": out_boxes,
        "scores": kept_scores * valid_f,
        "classes": tf.where(valid, tf.gather(classes, keep, batch_dims=1), tf.zeros_like(keep)),
        "logits": take(logit_mean),
        "al_std": take(al_std) / s,
        "ep_std": take(ep_std) / s,
        "ep_logit_std": take(logit_std),
        "num_detections": tf.cast(num, tf.int32),
    }
    if cfg.total_sigma:
        out["total_std"] = tf.sqrt(tf.square(out["al_std"]) + tf.square(out["ep_std"]))
    if al_cov is not None:
        out["al_cov"] = take(al_cov) / tf.square(s)[..., None]
    return out
