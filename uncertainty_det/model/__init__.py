"""EfficientDet model side: anchors, box coder, target assignment, losses, network and training model.

Conventions: boxes are ``[ymin, xmin, ymax, xmax]`` in model-input pixels; anchor codes are
``[ty, tx, th, tw]``; anchors are flattened level-major (3..7), then row-major over locations, then
octave-major within a location (see :mod:`uncertainty_det.model.anchors`).
"""
