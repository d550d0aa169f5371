"""Metrics on data sets under a model: accuracy, hardness (``1 - p(true class)``) and its
histograms, and the reference-classifier check against degenerate synthetic samples."""

from synthloop.metrics.classification import (
    accuracy,
    check_dataset,
    check_labels,
    model_device,
    predict_logits,
    predict_probs,
    unrecognised_fraction,
)
from synthloop.metrics.hardness import HardnessHistogram, hardness_histogram, hardness_scores

__all__ = [
    "HardnessHistogram",
    "accuracy",
    "check_dataset",
    "check_labels",
    "hardness_histogram",
    "hardness_scores",
    "model_device",
    "predict_logits",
    "predict_probs",
    "unrecognised_fraction",
]
