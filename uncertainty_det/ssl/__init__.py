"""Semi-supervised detection (DESIGN §10, reference §5): labeled/unlabeled splits, pseudo-label selection and
weighting, batch composition, STAC and CSD losses, and the label-refinement tools (rcc, rcf, glc, pls, noise study).

NumPy/pandas except the CSD loss (TensorFlow). The stage apps live in ``uncertainty_det.apps``."""
