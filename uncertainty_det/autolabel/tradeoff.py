"""The auto-labeling trade-off: share of images accepted vs precision/recall of their labels as the operating
threshold moves (images with ground truth)."""
from __future__ import annotations

import numpy as np
import pandas as pd


def per_image_counts(matches: pd.DataFrame, decisions: pd.DataFrame, dets: pd.DataFrame) -> pd.DataFrame:
    """``decisions`` plus ``n_labels``, ``n_tp`` (labels matching a GT of their class) and ``n_gt`` per image,
    counted from ``matches`` (:func:`.quality.label_matches`); ``max_uncertainty`` becomes +inf for images
    with a NaN combined uncertainty in ``dets`` (never accepted). dets: the above-floor detections of
    :func:`.decision.decide_images`."""
    ids = decisions["image_id"].to_numpy(dtype=np.int64)
    kind = matches["kind"].to_numpy(dtype=object)
    pos = pd.Index(ids).get_indexer(matches["image_id"].to_numpy(dtype=np.int64))

    def count(mask: np.ndarray) -> np.ndarray:
        return np.bincount(pos[mask & (pos >= 0)], minlength=ids.size).astype(np.int64)

    out = decisions.copy()
    # a NaN uncertainty sends its image to review at every threshold
    nan_images = dets.loc[~np.isfinite(dets["combined"].to_numpy(dtype=np.float64)), "image_id"].unique()
    out.loc[out["image_id"].isin(nan_images), "max_uncertainty"] = np.inf
    out["n_labels"] = count(kind != "missed")
    out["n_tp"] = count(kind == "matched")
    out["n_gt"] = count(kind != "background")
    return out


def tradeoff_curve(counts: pd.DataFrame, operating_threshold: float, empty_accepted: bool = False) -> pd.DataFrame:
    """Share of images accepted and precision/recall of their labels for every operating threshold.

    counts: :func:`per_image_counts` output (``max_uncertainty`` NaN = no detection above the floor, or a NaN
    uncertainty). An image is accepted at threshold ``θ`` when ``max_uncertainty < θ``; images without
    detections count as accepted only with ``empty_accepted`` (and then only when ``n_labels == 0``).
    Returns one row per distinct threshold (each just above an image's ``max_uncertainty``) plus the
    operating threshold (``operating`` True): ``threshold, auto_share, accepted_images, labels, precision,
    recall``.
    """
    u = counts["max_uncertainty"].to_numpy(dtype=np.float64)
    labels = counts["n_labels"].to_numpy(dtype=np.float64)
    tp = counts["n_tp"].to_numpy(dtype=np.float64)
    gt = counts["n_gt"].to_numpy(dtype=np.float64)
    n = u.size
    always = np.isnan(u) & (labels == 0) & bool(empty_accepted)
    finite = np.isfinite(u)
    levels = np.unique(u[finite])
    thresholds = np.concatenate([np.nextafter(levels, np.inf), [float(operating_threshold)]])
    order = np.argsort(u[finite], kind="stable")
    us = u[finite][order]
    cum = [np.concatenate([[0.0], np.cumsum(x[finite][order])]) for x in (np.ones(n), labels, tp, gt)]
    k = np.searchsorted(us, thresholds, side="left")                              # images with u < threshold
    base = [float(x[always].sum()) for x in (np.ones(n), labels, tp, gt)]
    acc_images, acc_labels, acc_tp, acc_gt = (c[k] + b for c, b in zip(cum, base))
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(acc_labels > 0, acc_tp / np.maximum(acc_labels, 1), np.nan)
        recall = np.where(acc_gt > 0, acc_tp / np.maximum(acc_gt, 1), np.nan)
    frame = pd.DataFrame({"threshold": thresholds, "auto_share": acc_images / max(n, 1),
                          "accepted_images": acc_images.astype(np.int64), "labels": acc_labels.astype(np.int64),
                          "precision": precision, "recall": recall,
                          "operating": np.arange(thresholds.size) == thresholds.size - 1})
    return frame.sort_values(["threshold", "operating"], kind="stable").reset_index(drop=True)


def tradeoff_figure(curve: pd.DataFrame, baseline_precision: float | None = None, title: str | None = None):
    """Precision (and recall) of the accepted labels against the share of images auto-labelled; the
    operating point marked; ``baseline_precision`` (every prediction above the floor) as a line."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    c = curve.loc[~curve["operating"]]
    ax.plot(c["auto_share"], c["precision"], drawstyle="steps-post", label="precision of accepted labels")
    ax.plot(c["auto_share"], c["recall"], drawstyle="steps-post", alpha=0.6, label="recall on accepted images")
    op = curve.loc[curve["operating"]]
    if len(op):
        ax.scatter(op["auto_share"], op["precision"], color="red", zorder=3,
                   label=f"operating threshold {float(op['threshold'].iloc[0]):.3f}")
    if baseline_precision is not None and np.isfinite(baseline_precision):
        ax.axhline(baseline_precision, color="grey", linestyle="--", label="all predictions above the floor")
    ax.set_xlabel("share of images auto-labelled")
    ax.set_ylabel("precision / recall")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
