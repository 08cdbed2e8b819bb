"""Inference-side post-processing: decoding of box regressions and their aleatoric uncertainty."""
