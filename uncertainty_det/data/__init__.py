"""Datasets: manifests, converters, the synthetic generator, corruptions and the tf.data pipeline.

Only ``pipeline``, ``augment`` and ``tfrecord`` import TensorFlow; everything else is NumPy/PIL.
"""
