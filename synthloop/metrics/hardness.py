"""Hardness of a data set for a classifier (TERSE section 4.2, adapted to classification).

The hardness of a sample ``(x, y)`` under a model is ``1 - p(y | x)``: 0 for a sample the model
gets right with full confidence, 1 for one it gives no probability at all. Comparing the
distribution of hardness of two data sets under one model (TERSE Fig. 8 for detection; here
TERSE's synthesized digits vs random AffNIST-recipe digits) shows which set carries more signal
for that model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from synthloop.errors import InputError
from synthloop.metrics.classification import check_dataset, check_labels, predict_probs
from synthloop.models.targets import hardness_from_probs


def hardness_scores(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, num_classes: int, batch_size: int = 1024
) -> torch.Tensor:
    """Per-sample hardness ``1 - p(true class)``, ``Tensor[N]`` float32 in [0, 1].

    Args:
        model: classifier ``Tensor[B, C, H, W] -> logits Tensor[B, num_classes]`` (run frozen).
        images: ``Tensor[N, C, H, W]``.
        labels: ``Tensor[N]`` integer classes in ``[0, num_classes)``.

    Raises:
        InputError: empty data set, mismatched labels, or a model whose output width is not
            ``num_classes``.
    """
    check_dataset(images, labels)
    labels = check_labels(labels, num_classes)
    probs = predict_probs(model, images, num_classes=num_classes, batch_size=batch_size)
    return hardness_from_probs(probs, labels.to(probs.device)).clamp_(0.0, 1.0)


@dataclass(frozen=True)
class HardnessHistogram:
    """Histograms of hardness on shared bins.

    ``edges`` has ``bins + 1`` entries from 0 to 1; ``fractions[name]`` has ``bins`` entries that
    sum to 1 (the fraction of that set's samples in each bin); ``means[name]`` and ``counts[name]``
    summarise each set.
    """

    edges: list[float]
    fractions: dict[str, list[float]]
    means: dict[str, float]
    counts: dict[str, int]

    def to_dict(self) -> dict:
        return {"edges": self.edges, "fractions": self.fractions, "means": self.means, "counts": self.counts}


def hardness_histogram(scores: Mapping[str, torch.Tensor], bins: int = 20) -> HardnessHistogram:
    """Bin several sets of hardness scores (each ``Tensor[N_k]`` in [0, 1]) on ``bins`` equal bins.

    Raises:
        InputError: no sets, or an empty set (there is nothing to compare).
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    if not scores:
        raise InputError("no hardness scores to compare", field="scores")
    edges = torch.linspace(0.0, 1.0, bins + 1)
    fractions: dict[str, list[float]] = {}
    means: dict[str, float] = {}
    counts: dict[str, int] = {}
    for name, values in scores.items():
        v = values.detach().float().flatten().cpu()
        if v.numel() == 0:
            raise InputError("no samples to histogram", field=f"scores.{name}")
        hist = torch.histc(v.clamp(0.0, 1.0), bins=bins, min=0.0, max=1.0)
        fractions[name] = (hist / v.numel()).tolist()
        means[name] = float(v.mean())
        counts[name] = int(v.numel())
    return HardnessHistogram(edges=edges.tolist(), fractions=fractions, means=means, counts=counts)
