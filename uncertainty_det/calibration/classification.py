"""Class-probability calibrators (reference §3.2, DESIGN §8), scikit-learn style.

Every calibrator has ``fit(logits [N, C], labels [N] 0-based) -> self`` and
``transform(logits [N, C]) -> probs [N, C]`` (rows sum to 1), plus ``to_dict()``/``from_dict()`` whose
values are JSON scalars, lists and NumPy arrays (see :mod:`.registry` for the files):

* ``ts_all``: one temperature, ``softmax(z / T)``;
* ``ts_percls``: one temperature per class, ``softmax(z / T_c)``;
* ``iso_all``: one isotonic map of every ``softmax(z)`` entry to its one-hot target, rows renormalised;
* ``iso_percls``: one-vs-rest isotonic map per class, rows renormalised.

Temperatures minimise the NLL exactly (L-BFGS-B on ``log T`` with the analytic gradient), not by 100
fixed-rate gradient steps as in the reference. :class:`MCClassCalibrator` makes any of them MC-aware:
it calibrates logit samples drawn from each detection's own MC logit std (reference D5 fixed).
"""
from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp
from sklearn.exceptions import NotFittedError

from ..tables import entropy_bits, softmax
from ._common import CalibrationError, IsoMap, PersistentCalibrator, as_float_array, as_labels, warn

LOG_T_BOUNDS = (-7.0, 7.0)          # T in [9e-4, 1.1e3]
MC_CHUNK_ELEMENTS = 4_000_000       # MC transform: at most this many sampled logits in memory at once


class ClassCalibrator(PersistentCalibrator):
    """Base class: logits ``[N, C]`` -> calibrated probabilities ``[N, C]``."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "class"

    n_classes_: int | None = None

    # -- input checks
    def _check_fitted(self) -> None:
        if self.n_classes_ is None:
            raise NotFittedError(f"{type(self).__name__} ({self.name}) is not fitted; call fit() first")

    def _logits(self, logits: Any) -> np.ndarray:
        z = as_float_array(logits, "logits", ndim=2)
        if self.n_classes_ is not None and z.shape[1] != self.n_classes_:
            raise CalibrationError(
                f"logits have {z.shape[1]} classes but the {self.name} calibrator was fitted on {self.n_classes_}")
        return z

    def _fit_inputs(self, logits: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
        z = as_float_array(logits, "logits", ndim=2)
        if z.shape[0] == 0:
            raise CalibrationError(f"cannot fit the {self.name} calibrator on 0 samples")
        return z, as_labels(labels, z.shape[0], z.shape[1])

    # -- API
    def fit(self, logits: np.ndarray, labels: np.ndarray) -> "ClassCalibrator":
        raise NotImplementedError

    def transform(self, logits: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def fit_transform(self, logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """``fit(logits, labels).transform(logits)``: probs ``[N, C]``."""
        return self.fit(logits, labels).transform(logits)


# ---------------------------------------------------------------------------------------------
# Temperature scaling


def temperature_nll(log_t: np.ndarray, logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean NLL (nats) of ``softmax(z / T)`` and its gradient w.r.t. ``log T``.

    log_t: ``[1]`` (one temperature) or ``[C]`` (per class); logits ``[N, C]``; labels ``[N]`` 0-based.
    With ``a = z / T`` and ``p = softmax(a)``: scalar ``dNLL/dlogT = mean(a_y - sum_c p_c a_c)``,
    per class ``dNLL/dlogT_c = mean((1[y = c] - p_c) a_c)``.
    """
    a = logits / np.exp(log_t)                                      # [N, C]
    lse = logsumexp(a, axis=1)
    rows = np.arange(a.shape[0])
    a_y = a[rows, labels]
    value = float(np.mean(lse - a_y))
    p = np.exp(a - lse[:, None])
    if log_t.shape[0] == 1:
        grad = np.array([np.mean(a_y - np.sum(p * a, axis=1))])
    else:
        ind = np.zeros_like(p)
        ind[rows, labels] = 1.0
        grad = np.mean((ind - p) * a, axis=0)
    return value, grad


def fit_temperature(logits: np.ndarray, labels: np.ndarray, per_class: bool = False) -> np.ndarray:
    """NLL-optimal temperature(s): ``[1]`` or ``[C]`` (L-BFGS-B on ``log T`` within ``LOG_T_BOUNDS``)."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    k = z.shape[1] if per_class else 1
    res = minimize(temperature_nll, np.zeros(k), args=(z, y), jac=True, method="L-BFGS-B",
                   bounds=[LOG_T_BOUNDS] * k, options={"maxiter": 1000, "ftol": 1e-15, "gtol": 1e-10})
    return np.exp(res.x)


class _TemperatureScaling(ClassCalibrator):
    per_class: ClassVar[bool] = False
    temperature_: np.ndarray | None = None

    def fit(self, logits: np.ndarray, labels: np.ndarray) -> "_TemperatureScaling":
        """Fit the temperature(s) on ``logits [N, C]`` and 0-based ``labels [N]``; returns self."""
        z, y = self._fit_inputs(logits, labels)
        self.temperature_ = fit_temperature(z, y, self.per_class)
        self.n_classes_ = z.shape[1]
        return self

    def transform(self, logits: np.ndarray) -> np.ndarray:
        """``softmax(z / T)``: logits ``[N, C]`` -> probs ``[N, C]``."""
        self._check_fitted()
        return softmax(self._logits(logits) / self.temperature_)

    def _set_state(self, state: dict[str, Any]) -> None:
        self.n_classes_ = int(state["n_classes"])
        t = np.asarray(state["temperature"], dtype=np.float64).reshape(-1)
        if t.shape[0] != (self.n_classes_ if self.per_class else 1) or np.any(~np.isfinite(t)) or np.any(t <= 0):
            raise CalibrationError(f"{self.name}: bad temperature {t.tolist()} for {self.n_classes_} classes")
        self.temperature_ = t


class TSAll(_TemperatureScaling):
    """``ts_all``: one temperature for all classes (``temperature_`` ``[1]``)."""

    name = "ts_all"

    def _state(self) -> dict[str, Any]:
        return {"n_classes": int(self.n_classes_), "temperature": float(self.temperature_[0])}


class TSPerClass(_TemperatureScaling):
    """``ts_percls``: one temperature per class column (``temperature_`` ``[C]``)."""

    name = "ts_percls"
    per_class = True

    def _state(self) -> dict[str, Any]:
        return {"n_classes": int(self.n_classes_), "temperature": self.temperature_.copy()}


# ---------------------------------------------------------------------------------------------
# Isotonic regression


def _renormalise(q: np.ndarray) -> np.ndarray:
    """Rows divided by their sum; an all-zero row becomes uniform."""
    s = q.sum(axis=1, keepdims=True)
    return np.where(s > 0, q / np.where(s > 0, s, 1.0), 1.0 / q.shape[1])


def _one_hot(y: np.ndarray, c: int) -> np.ndarray:
    out = np.zeros((y.shape[0], c), dtype=np.float64)
    out[np.arange(y.shape[0]), y] = 1.0
    return out


class IsoAll(ClassCalibrator):
    """``iso_all``: one isotonic map of all flattened ``softmax(z)`` entries to one-hot, then renormalised."""

    name = "iso_all"
    map_: IsoMap | None = None

    def fit(self, logits: np.ndarray, labels: np.ndarray) -> "IsoAll":
        """Fit on ``logits [N, C]`` and 0-based ``labels [N]``; returns self."""
        z, y = self._fit_inputs(logits, labels)
        self.map_ = IsoMap.fit(softmax(z).ravel(), _one_hot(y, z.shape[1]).ravel(), 0.0, 1.0)
        self.n_classes_ = z.shape[1]
        return self

    def transform(self, logits: np.ndarray) -> np.ndarray:
        """logits ``[N, C]`` -> probs ``[N, C]`` (``iso(softmax(z))`` renormalised per row)."""
        self._check_fitted()
        return _renormalise(self.map_(softmax(self._logits(logits))))

    def _state(self) -> dict[str, Any]:
        return {"n_classes": int(self.n_classes_), "map": self.map_.to_dict()}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.map_ = IsoMap.from_dict(state["map"])
        self.n_classes_ = int(state["n_classes"])


class IsoPerClass(ClassCalibrator):
    """``iso_percls``: one-vs-rest isotonic map per class, then renormalised.

    A class without positive or without negative fitting samples uses the ``iso_all`` map instead
    (with a :class:`CalibrationWarning` naming it); ``fallback_`` lists those 0-based classes.
    """

    name = "iso_percls"
    maps_: list[IsoMap] | None = None
    fallback_: list[int] | None = None

    def fit(self, logits: np.ndarray, labels: np.ndarray) -> "IsoPerClass":
        """Fit on ``logits [N, C]`` and 0-based ``labels [N]``; returns self."""
        z, y = self._fit_inputs(logits, labels)
        c = z.shape[1]
        p = softmax(z)
        onehot = _one_hot(y, c)
        pos = onehot.sum(axis=0)
        fallback = [k for k in range(c) if pos[k] == 0 or pos[k] == z.shape[0]]
        shared = IsoMap.fit(p.ravel(), onehot.ravel(), 0.0, 1.0) if fallback else None
        for k in fallback:
            warn(f"iso_percls: class index {k} (0-based) has {'no' if pos[k] == 0 else 'only'} positive fitting "
                 f"samples; it uses the iso_all mapping")
        self.maps_ = [shared if k in fallback else IsoMap.fit(p[:, k], onehot[:, k], 0.0, 1.0) for k in range(c)]
        self.fallback_ = fallback
        self.n_classes_ = c
        return self

    def transform(self, logits: np.ndarray) -> np.ndarray:
        """logits ``[N, C]`` -> probs ``[N, C]`` (``iso_c(softmax(z)_c)`` renormalised per row)."""
        self._check_fitted()
        p = softmax(self._logits(logits))
        q = np.stack([m(p[:, k]) for k, m in enumerate(self.maps_)], axis=1) if p.shape[0] else p
        return _renormalise(q) if q.size else q

    def _state(self) -> dict[str, Any]:
        return {"n_classes": int(self.n_classes_), "maps": [m.to_dict() for m in self.maps_],
                "fallback": [int(k) for k in self.fallback_]}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.n_classes_ = int(state["n_classes"])
        self.maps_ = [IsoMap.from_dict(m) for m in state["maps"]]
        self.fallback_ = [int(k) for k in state.get("fallback", [])]
        if len(self.maps_) != self.n_classes_:
            raise CalibrationError(f"iso_percls: {len(self.maps_)} maps for {self.n_classes_} classes")


# ---------------------------------------------------------------------------------------------
# MC-aware wrapper


class MCProbs(NamedTuple):
    """Output of :meth:`MCClassCalibrator.transform_mc` for ``N`` detections and ``C`` classes."""

    probs: np.ndarray        # [N, C] mean over samples of the calibrated probabilities
    probs_std: np.ndarray    # [N, C] std over samples of the calibrated probabilities
    entropy: np.ndarray      # [N] entropy (bits) of ``probs``


class MCClassCalibrator(ClassCalibrator):
    """MC-aware calibration (reference ``unc_`` calibrators, D5/D6 fixed).

    ``fit`` draws ``samples`` logit vectors per detection from ``N(logits, logit_std)`` (each detection's
    own per-class std), repeats the labels and fits ``base`` on them. ``transform_mc`` draws samples
    again (seeded), calibrates each with ``base`` and returns the mean probabilities, their std over
    samples and the entropy of the mean. A zero std everywhere reduces exactly to ``base``.
    """

    name = "mc"

    def __init__(self, base: ClassCalibrator, samples: int = 10, seed: int = 0):
        if not isinstance(base, ClassCalibrator) or isinstance(base, MCClassCalibrator):
            raise CalibrationError(f"MCClassCalibrator needs a plain class calibrator as base, got {base!r}")
        if int(samples) < 1:
            raise CalibrationError(f"MC calibration needs samples >= 1, got {samples}")
        self.base = base
        self.samples = int(samples)
        self.seed = int(seed)

    def get_params(self) -> dict[str, Any]:
        return {"samples": self.samples, "seed": self.seed}

    @property
    def n_classes_(self) -> int | None:                       # type: ignore[override]
        return self.base.n_classes_

    def _std(self, logit_std: Any, z: np.ndarray) -> np.ndarray:
        if logit_std is None:
            return np.zeros_like(z)
        s = as_float_array(logit_std, "logit_std", ndim=2)
        if s.shape != z.shape:
            raise CalibrationError(f"logit_std {s.shape} must have the shape of the logits {z.shape}")
        if np.any(s < 0):
            raise CalibrationError("logit_std must be >= 0")
        return s

    def fit(self, logits: np.ndarray, labels: np.ndarray, logit_std: np.ndarray | None = None) -> "MCClassCalibrator":
        """Fit ``base`` on MC samples of ``logits [N, C]`` (std ``logit_std [N, C]``), labels ``[N]`` 0-based."""
        z, y = self._fit_inputs(logits, labels)
        s = self._std(logit_std, z)
        if not np.any(s > 0):
            self.base.fit(z, y)
        else:
            rng = np.random.default_rng([self.seed, 0])
            draws = z[None] + s[None] * rng.standard_normal((self.samples, *z.shape))     # [S, N, C]
            self.base.fit(draws.reshape(-1, z.shape[1]), np.tile(y, self.samples))
        return self

    def transform_mc(self, logits: np.ndarray, logit_std: np.ndarray | None = None) -> MCProbs:
        """Calibrated mean probs ``[N, C]``, their std over samples ``[N, C]`` and entropy (bits) ``[N]``."""
        self._check_fitted()
        z = self._logits(logits)
        s = self._std(logit_std, z)
        if not np.any(s > 0):
            p = self.base.transform(z)
            return MCProbs(p, np.zeros_like(p), entropy_bits(p))
        rng = np.random.default_rng([self.seed, 1])
        p, p_std = np.empty_like(z), np.empty_like(z)
        step = max(1, MC_CHUNK_ELEMENTS // (self.samples * z.shape[1]))      # bounds the [S, n, C] memory
        for lo in range(0, z.shape[0], step):
            zc, sc = z[lo:lo + step], s[lo:lo + step]
            draws = zc[None] + sc[None] * rng.standard_normal((self.samples, *zc.shape))
            ps = self.base.transform(draws.reshape(-1, z.shape[1])).reshape(draws.shape)
            p[lo:lo + step], p_std[lo:lo + step] = ps.mean(axis=0), ps.std(axis=0)
        return MCProbs(p, p_std, entropy_bits(p))

    def transform(self, logits: np.ndarray, logit_std: np.ndarray | None = None) -> np.ndarray:
        """Mean calibrated probabilities ``[N, C]`` (see :meth:`transform_mc`)."""
        return self.transform_mc(logits, logit_std).probs

    def _state(self) -> dict[str, Any]:
        return {"base": self.base.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MCClassCalibrator":
        from .registry import calibrator_from_dict

        base = calibrator_from_dict(d["params"]["base"])
        if not isinstance(base, ClassCalibrator):
            raise CalibrationError("the base of an MC class calibrator must be a class calibrator")
        return cls(base, **d.get("options", {}))
