"""Active-learning evaluation by set similarity (reference §4): estimate how AL-selected training sets
rank, and how reliable an evaluation (sub)set is, from the similarity of per-object image features.

NumPy/SciPy/pandas only (matplotlib Figures without pyplot); no TensorFlow, Hydra or MLflow.

* :mod:`.features` — per-crop features ``[aspect ratio, DCT mean, h*w/512]`` of a manifest, per class;
* :mod:`.divergence` — the 1-NN KL estimator and the KDE-resampled JSD between two feature sets;
* :mod:`.similarity` — class weights, size factor, combined dissimilarity ``m`` and set similarity;
* :mod:`.analysis` — rank agreement with AP, random evaluation subsets, evaluation reliability;
* :mod:`.plots` — scatter, per-class, tau-vs-similarity and rank heat-map figures.
"""
from __future__ import annotations

from ._common import AlEvalError
from .analysis import per_class_agreement, random_subsets, rank_agreement, reliability, subset_boundaries
from .divergence import empirical_jsd, knn_kl_divergence
from .features import (
    FEATURE_NAMES, ClassFeatures, crop_features, crop_windows, dct_mean, gather, image_features, manifest_features,
)
from .plots import per_class_figure, rank_heatmap_figure, similarity_vs_performance_figure, tau_similarity_figure
from .similarity import SimilarityResult, class_weights, set_similarity, size_factors

__all__ = [
    "FEATURE_NAMES", "AlEvalError", "ClassFeatures", "SimilarityResult", "class_weights", "crop_features",
    "crop_windows", "dct_mean", "empirical_jsd", "gather", "image_features", "knn_kl_divergence",
    "manifest_features", "per_class_agreement",
    "per_class_figure", "random_subsets", "rank_agreement", "rank_heatmap_figure", "reliability",
    "set_similarity", "similarity_vs_performance_figure", "size_factors", "subset_boundaries",
    "tau_similarity_figure",
]
