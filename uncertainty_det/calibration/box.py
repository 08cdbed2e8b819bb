"""Box σ calibrators (reference §3.3, DESIGN §8), scikit-learn style.

``fit(pred_boxes [N, 4], gt_boxes [N, 4], sigma [N, 4], classes [N])`` on matched pairs (pixels, boxes
``[ymin, xmin, ymax, xmax]``, classes 1-based GT ids) and ``transform(pred_boxes [N, 4], sigma [N, 4],
pred_classes [N]) -> sigma_cal [N, 4]`` (pixels; classes are the *predicted* 1-based ids). The residual
is ``r = gt - pred`` per coordinate.

Methods:

* ``ts_all`` / ``ts_percoo``: ``σ_cal = s·σ`` with one scale (or one per coordinate). The scale is the
  closed-form Gaussian-NLL optimum: for ``r ~ N(0, (sσ)^2)``,
  ``d/ds mean(log(sσ) + r^2 / (2 s^2 σ^2)) = 0`` gives ``s^2 = mean(r^2 / σ^2)``. Entries with
  ``σ = 0`` are left out of the fit (no scale can change them).
* ``iso_all`` / ``iso_percoo`` / ``iso_perclscoo``: increasing isotonic regression ``σ -> |r|`` pooled,
  per coordinate, or per class × coordinate (class-major, ``4·(class-1) + k``); outside the fitted
  range the output is clipped to the end values.
* ``rel_iso_perclscoo``: the same per class × coordinate on relative values
  ``σ/size -> |r|/size`` with ``size`` the predicted ``[h, w, h, w]`` (float64, floored at
  ``min_size`` pixels), then multiplied back by ``size``.

Option ``target``: ``"sigma"`` (default) makes the output a Gaussian standard deviation; for isotonic
methods the targets are ``|r|·sqrt(π/2)`` because ``E|r| = σ·sqrt(2/π)`` for ``r ~ N(0, σ²)``.
``"abs_residual"`` reproduces the reference: the isotonic output estimates ``E[|r| | σ]`` (a mean absolute
error, ~0.8σ for Gaussians; reference D10) and the TS output is ``s·σ·sqrt(2/π)``, the same scale.

Per-class groups with fewer than ``min_samples`` fitting pairs (including classes never seen) use the
per-coordinate model of the same kind, with a :class:`CalibrationWarning`; the fit never aborts
(reference D18 fixed).
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from sklearn.exceptions import NotFittedError

from ._common import CalibrationError, IsoMap, PersistentCalibrator, as_float_array, check_choice, warn

TARGETS = ("sigma", "abs_residual")
SIGMA_FROM_ABS = float(np.sqrt(np.pi / 2.0))      # E|r| = σ·sqrt(2/π) for a zero-mean Gaussian


class BoxCalibrator(PersistentCalibrator):
    """Base class: predicted σ ``[N, 4]`` (pixels) -> calibrated σ ``[N, 4]`` (pixels)."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "box"
    relative: ClassVar[bool] = False
    per_class: ClassVar[bool] = False

    def __init__(self, target: str = "sigma"):
        self.target = check_choice(target, TARGETS, f"{self.name} target")
        self.fitted_ = False

    def get_params(self) -> dict[str, Any]:
        """The constructor options (plain JSON values, one-to-one with a config file)."""
        return {"target": self.target}

    # -- input checks
    def _check_fitted(self) -> None:
        if not self.fitted_:
            raise NotFittedError(f"{type(self).__name__} ({self.name}) is not fitted; call fit() first")

    @staticmethod
    def _boxes(a: Any, name: str, n: int | None = None) -> np.ndarray:
        arr = as_float_array(a, name, ndim=2, width=4)
        if n is not None and arr.shape[0] != n:
            raise CalibrationError(f"{name} has {arr.shape[0]} rows, expected {n}")
        return arr

    def _classes(self, classes: Any, n: int, name: str) -> np.ndarray | None:
        if classes is None:
            if self.per_class:
                raise CalibrationError(f"{self.name} is per class: pass the 1-based {name} [{n}]")
            return None
        c = np.asarray(classes)
        if c.shape != (n,) or (c.size and not np.all(np.equal(np.mod(c, 1), 0))):
            raise CalibrationError(f"{name} must be [{n}] integer 1-based class ids, got shape {c.shape}")
        return c.astype(np.int64)

    def _sigma(self, sigma: Any, n: int) -> np.ndarray:
        s = self._boxes(sigma, "sigma", n)
        if np.any(s < 0):
            raise CalibrationError("sigma must be >= 0")
        return s

    # -- API
    def fit(self, pred_boxes: np.ndarray, gt_boxes: np.ndarray, sigma: np.ndarray,
            classes: np.ndarray | None = None) -> "BoxCalibrator":
        """Fit on matched pairs: boxes and σ ``[N, 4]`` pixels, ``classes [N]`` 1-based GT ids; returns self."""
        pred = self._boxes(pred_boxes, "pred_boxes")
        n = pred.shape[0]
        if n == 0:
            raise CalibrationError(f"cannot fit the {self.name} box calibrator on 0 matched pairs")
        gt = self._boxes(gt_boxes, "gt_boxes", n)
        self._fit(pred, gt - pred, self._sigma(sigma, n), self._classes(classes, n, "classes"))
        self.fitted_ = True
        return self

    def transform(self, pred_boxes: np.ndarray | None, sigma: np.ndarray,
                  pred_classes: np.ndarray | None = None) -> np.ndarray:
        """Calibrated σ ``[N, 4]`` (pixels).

        pred_boxes: ``[N, 4]`` pixels (needed by relative methods, else may be ``None``); sigma: ``[N, 4]``
        pixels; pred_classes: ``[N]`` predicted 1-based ids (needed by per-class methods).
        """
        self._check_fitted()
        s = self._boxes(sigma, "sigma")
        n = s.shape[0]
        s = self._sigma(s, n)
        pred = None
        if self.relative or pred_boxes is not None:
            if pred_boxes is None:
                raise CalibrationError(f"{self.name} is relative to the box size: pass pred_boxes [N, 4]")
            pred = self._boxes(pred_boxes, "pred_boxes", n)
        return self._transform(pred, s, self._classes(pred_classes, n, "pred_classes"))

    def fit_transform(self, pred_boxes, gt_boxes, sigma, classes=None) -> np.ndarray:
        """``fit(...)`` then ``transform(pred_boxes, sigma, classes)``: σ_cal ``[N, 4]`` pixels."""
        return self.fit(pred_boxes, gt_boxes, sigma, classes).transform(pred_boxes, sigma, classes)

    def curve(self, sigma: np.ndarray, coord: int = 0, class_id: int | None = None) -> np.ndarray:
        """The fitted mapping of coordinate ``coord`` (and 1-based ``class_id`` for per-class methods) on a
        1-D σ grid (relative σ for relative methods); for plots."""
        raise NotImplementedError

    def _fit(self, pred, residual, sigma, classes) -> None:
        raise NotImplementedError

    def _transform(self, pred, sigma, classes) -> np.ndarray:
        raise NotImplementedError

    def _mark_fitted(self) -> None:
        self.fitted_ = True


# ---------------------------------------------------------------------------------------------
# Scaling (temperature) calibrators


def gaussian_scale(residual: np.ndarray, sigma: np.ndarray, axis: int | None = None) -> np.ndarray:
    """Closed-form NLL-optimal scale ``s = sqrt(mean(r^2 / σ^2))`` over entries with ``σ > 0``.

    residual, sigma: same shape; ``axis=None`` pools everything (scalar), ``axis=0`` gives one scale
    per column. A group without any ``σ > 0`` gets scale 1.
    """
    ok = sigma > 0
    z2 = np.where(ok, residual ** 2 / np.where(ok, sigma, 1.0) ** 2, 0.0)
    n = ok.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.sqrt(z2.sum(axis=axis) / n)
    return np.where(n > 0, s, 1.0)


class _BoxScaling(BoxCalibrator):
    per_coordinate: ClassVar[bool] = False
    scale_: np.ndarray

    def _fit(self, pred, residual, sigma, classes) -> None:
        s = gaussian_scale(residual, sigma, axis=0 if self.per_coordinate else None)
        if self.target == "abs_residual":
            s = s / SIGMA_FROM_ABS
        if np.any(s == 0):
            warn(f"{self.name}: every fitting residual is 0 for some coordinate; its calibrated σ will be 0")
        self.scale_ = np.broadcast_to(np.asarray(s, dtype=np.float64), (4,)).copy()

    def _transform(self, pred, sigma, classes) -> np.ndarray:
        return sigma * self.scale_

    def curve(self, sigma: np.ndarray, coord: int = 0, class_id: int | None = None) -> np.ndarray:
        self._check_fitted()
        return np.asarray(sigma, dtype=np.float64) * self.scale_[coord]


class BoxTSAll(_BoxScaling):
    """``ts_all``: ``σ_cal = s·σ`` with one scale for all coordinates (``scale_`` ``[4]``, all equal)."""

    name = "ts_all"

    def _state(self) -> dict[str, Any]:
        return {"scale": float(self.scale_[0])}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.scale_ = np.full(4, float(state["scale"]))


class BoxTSPerCoo(_BoxScaling):
    """``ts_percoo``: ``σ_cal,k = s_k·σ_k`` with one scale per coordinate (``scale_`` ``[4]``)."""

    name = "ts_percoo"
    per_coordinate = True

    def _state(self) -> dict[str, Any]:
        return {"scale": self.scale_.copy()}

    def _set_state(self, state: dict[str, Any]) -> None:
        s = np.asarray(state["scale"], dtype=np.float64).reshape(-1)
        if s.shape != (4,):
            raise CalibrationError(f"ts_percoo: need 4 scales, got {s.shape}")
        self.scale_ = s


# ---------------------------------------------------------------------------------------------
# Isotonic calibrators


class _BoxIsotonic(BoxCalibrator):
    grouping: ClassVar[str] = "all"             # all | coo | clscoo

    def __init__(self, target: str = "sigma", min_sigma: float = 0.5):
        super().__init__(target)
        if not float(min_sigma) >= 0:
            raise CalibrationError(f"{self.name}: min_sigma must be >= 0 pixels, got {min_sigma}")
        # Isotonic fits reach 0 where the residuals of the smallest σ are 0 (e.g. boxes clipped to the image
        # border exactly like their GT); a zero σ makes any later error infinitely unlikely, so calibrated σ
        # is floored (pixels; 0.5 px = the label quantisation of pixel-aligned boxes).
        self.min_sigma = float(min_sigma)
        self.maps_: list[IsoMap] = []           # 1 (all) or 4 (per coordinate, the per-class fallback)

    def get_params(self) -> dict[str, Any]:
        return {**super().get_params(), "min_sigma": self.min_sigma}

    def _xy(self, pred: np.ndarray | None, sigma: np.ndarray, abs_res: np.ndarray | None = None):
        """Inputs (and targets) in the fitting space; also the size to scale back with."""
        return sigma, abs_res, None

    def _fit(self, pred, residual, sigma, classes) -> None:
        x, y, _ = self._xy(pred, sigma, np.abs(residual))
        if self.target == "sigma":
            y = y * SIGMA_FROM_ABS
        if self.grouping == "all":
            self.maps_ = [IsoMap.fit(x.ravel(), y.ravel(), y_min=0.0)]
        else:
            self.maps_ = [IsoMap.fit(x[:, k], y[:, k], y_min=0.0) for k in range(4)]
        if self.grouping == "clscoo":
            self._fit_classes(x, y, classes)

    def _apply_coordinates(self, x: np.ndarray) -> np.ndarray:
        if len(self.maps_) == 1:
            return self.maps_[0](x)
        return np.stack([m(x[:, k]) for k, m in enumerate(self.maps_)], axis=1) if x.size else x.copy()

    def _transform(self, pred, sigma, classes) -> np.ndarray:
        x, _, size = self._xy(pred, sigma)
        out = self._apply_classes(x, classes) if self.grouping == "clscoo" else self._apply_coordinates(x)
        return np.maximum(out * size if size is not None else out, self.min_sigma)

    def curve(self, sigma: np.ndarray, coord: int = 0, class_id: int | None = None) -> np.ndarray:
        self._check_fitted()
        x = np.asarray(sigma, dtype=np.float64)
        if self.grouping == "clscoo" and class_id is not None:
            m = self._class_map(int(class_id), coord)
            if m is not None:
                return m(x)
        return self.maps_[0 if len(self.maps_) == 1 else coord](x)

    def _class_map(self, class_id: int, coord: int) -> IsoMap | None:
        return None

    def _fit_classes(self, x, y, classes) -> None:
        raise NotImplementedError

    def _apply_classes(self, x, classes) -> np.ndarray:
        raise NotImplementedError

    def _state(self) -> dict[str, Any]:
        return {"maps": [m.to_dict() for m in self.maps_]}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.maps_ = [IsoMap.from_dict(m) for m in state["maps"]]
        if len(self.maps_) != (1 if self.grouping == "all" else 4):
            raise CalibrationError(f"{self.name}: wrong number of isotonic maps ({len(self.maps_)})")


class BoxIsoAll(_BoxIsotonic):
    """``iso_all``: one isotonic map ``σ -> |r|`` (or ``-> |r|·sqrt(π/2)``) for all coordinates."""

    name = "iso_all"


class BoxIsoPerCoo(_BoxIsotonic):
    """``iso_percoo``: one isotonic map per coordinate (ymin, xmin, ymax, xmax)."""

    name = "iso_percoo"
    grouping = "coo"


class BoxIsoPerClsCoo(_BoxIsotonic):
    """``iso_perclscoo``: one isotonic map per class × coordinate, class-major (index ``4·(class-1) + k``).

    ``num_classes`` (``None``: the largest fitting class id) fixes ``C``; groups with fewer than
    ``min_samples`` pairs use the per-coordinate map (``fallback_`` lists their indices). At transform
    time predicted classes outside ``1..C`` use the per-coordinate map too.
    """

    name = "iso_perclscoo"
    grouping = "clscoo"
    per_class = True

    def __init__(self, target: str = "sigma", min_samples: int = 5, num_classes: int | None = None,
                 min_sigma: float = 0.5):
        super().__init__(target, min_sigma)
        if int(min_samples) < 1:
            raise CalibrationError(f"{self.name}: min_samples must be >= 1, got {min_samples}")
        if num_classes is not None and int(num_classes) < 1:
            raise CalibrationError(f"{self.name}: num_classes must be >= 1, got {num_classes}")
        self.min_samples = int(min_samples)
        self.num_classes = None if num_classes is None else int(num_classes)
        self.class_maps_: list[IsoMap | None] = []
        self.fallback_: list[int] = []

    def get_params(self) -> dict[str, Any]:
        return {**super().get_params(), "min_samples": self.min_samples, "num_classes": self.num_classes}

    @property
    def n_classes_(self) -> int:
        return len(self.class_maps_) // 4

    def _fit_classes(self, x, y, classes) -> None:
        if classes.size and classes.min() < 1:
            raise CalibrationError(f"{self.name}: classes must be 1-based ids >= 1, got {classes.min()}")
        c_max = int(classes.max())
        n_cls = self.num_classes if self.num_classes is not None else c_max
        if c_max > n_cls:
            raise CalibrationError(f"{self.name}: class id {c_max} exceeds num_classes={n_cls}")
        counts = np.bincount(classes - 1, minlength=n_cls)
        self.class_maps_, self.fallback_ = [], []
        for c in range(n_cls):
            rows = classes == c + 1
            for k in range(4):
                if counts[c] < self.min_samples:
                    self.class_maps_.append(None)
                    self.fallback_.append(4 * c + k)
                else:
                    self.class_maps_.append(IsoMap.fit(x[rows, k], y[rows, k], y_min=0.0))
            if counts[c] < self.min_samples:
                warn(f"{self.name}: class {c + 1} has {counts[c]} fitting pair(s) (< min_samples="
                     f"{self.min_samples}); it uses the per-coordinate calibration")

    def _class_map(self, class_id: int, coord: int) -> IsoMap | None:
        if 1 <= class_id <= self.n_classes_:
            return self.class_maps_[4 * (class_id - 1) + coord]
        return None

    def _apply_classes(self, x, classes) -> np.ndarray:
        n_cls = self.n_classes_
        unknown = (classes < 1) | (classes > n_cls)
        if np.any(unknown):
            warn(f"{self.name}: {int(unknown.sum())} detection(s) have a class outside 1..{n_cls} "
                 f"(e.g. {int(classes[unknown][0])}); they use the per-coordinate calibration")
        # one stable sort by class (0 = unknown) so every (class, coordinate) map runs on a contiguous slice
        group = np.where(unknown, 0, classes)
        order = np.argsort(group, kind="stable")
        xs = np.ascontiguousarray(x[order].T)                          # [4, N], sorted by class
        bounds = np.searchsorted(group[order], np.arange(n_cls + 2))
        res = np.empty_like(xs)
        for c in range(n_cls + 1):
            start, end = bounds[c], bounds[c + 1]
            if start == end:
                continue
            for k in range(4):
                m = self.class_maps_[4 * (c - 1) + k] if c >= 1 else None
                res[k, start:end] = (m if m is not None else self.maps_[k])(xs[k, start:end])
        out = np.empty_like(x)
        out[order] = res.T
        return out

    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "class_maps": [None if m is None else m.to_dict() for m in self.class_maps_],
                "fallback": [int(i) for i in self.fallback_]}

    def _set_state(self, state: dict[str, Any]) -> None:
        super()._set_state(state)
        self.class_maps_ = [None if m is None else IsoMap.from_dict(m) for m in state["class_maps"]]
        self.fallback_ = [int(i) for i in state.get("fallback", [])]
        if len(self.class_maps_) % 4:
            raise CalibrationError(f"{self.name}: {len(self.class_maps_)} class maps is not a multiple of 4")


class BoxRelIsoPerClsCoo(BoxIsoPerClsCoo):
    """``rel_iso_perclscoo``: ``iso_perclscoo`` on ``σ/size -> |r|/size``, size = predicted ``[h, w, h, w]``.

    Sizes are floored at ``min_size`` pixels so degenerate boxes stay finite; the per-coordinate
    fallback is relative too.
    """

    name = "rel_iso_perclscoo"
    relative = True

    def __init__(self, target: str = "sigma", min_samples: int = 5, num_classes: int | None = None,
                 min_size: float = 1.0, min_sigma: float = 0.5):
        super().__init__(target, min_samples, num_classes, min_sigma)
        if not float(min_size) > 0:
            raise CalibrationError(f"{self.name}: min_size must be > 0 pixels, got {min_size}")
        self.min_size = float(min_size)

    def get_params(self) -> dict[str, Any]:
        return {**super().get_params(), "min_size": self.min_size}

    def _xy(self, pred, sigma, abs_res=None):
        h = np.maximum(pred[:, 2] - pred[:, 0], self.min_size)
        w = np.maximum(pred[:, 3] - pred[:, 1], self.min_size)
        size = np.stack([h, w, h, w], axis=1)
        return sigma / size, None if abs_res is None else abs_res / size, size

