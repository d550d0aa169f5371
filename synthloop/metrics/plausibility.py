"""Plausibility next to hardness for synthetic detection data (issue 11), and the seed statistics
of the multi-seed benchmark.

A pasted object is *plausible* when a reference detector -- one trained with heavy random
augmentation, so it knows pasted objects in general -- still detects it (confidence >= the
threshold); it is *hard* when the model being trained misses it (confidence below the threshold).
Hard-but-plausible objects are what a hard-example generator should produce: hardness alone is
reached by implausible scenes (squashed, border-cut, overlapping, faint objects) that do not
transfer to test data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from synthloop.errors import InputError


def _conf(values: torch.Tensor | Sequence[float], field: str) -> torch.Tensor:
    c = torch.as_tensor(values, dtype=torch.float64).flatten()
    if c.numel() == 0:
        raise InputError("no confidences: there are no pasted objects to count", field=field)
    if bool(((c < 0) | (c > 1) | torch.isnan(c)).any()):
        raise InputError("confidences must lie in [0, 1]", field=field)
    return c


def plausible_fraction(reference_confidence: torch.Tensor | Sequence[float], threshold: float = 0.5) -> float:
    """Fraction of pasted objects the reference detector still detects (confidence >= ``threshold``)."""
    return float((_conf(reference_confidence, "reference_confidence") >= threshold).double().mean())


def hard_plausible_fraction(confidence: torch.Tensor | Sequence[float], reference_confidence: torch.Tensor | Sequence[float], threshold: float = 0.5) -> float:
    """Fraction of pasted objects that are hard for the model (``confidence < threshold``) *and*
    plausible (the reference detects them): hardness at plausibility."""
    c, r = _conf(confidence, "confidence"), _conf(reference_confidence, "reference_confidence")
    if c.shape != r.shape:
        raise InputError(f"{c.numel()} confidences against {r.numel()} reference confidences", field="reference_confidence")
    return float(((c < threshold) & (r >= threshold)).double().mean())


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``; 0 for a single value) of per-seed results."""
    v = [float(x) for x in values]
    if not v:
        raise InputError("no values to summarise", field="values")
    m = sum(v) / len(v)
    return m, (math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0)


def pooled_std(std_a: float, std_b: float) -> float:
    """Pooled standard deviation of two rows with equal seed counts: ``sqrt((s_a^2 + s_b^2) / 2)``."""
    return math.sqrt((std_a**2 + std_b**2) / 2.0)


def beyond_pooled_std(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether ``mean(a) - mean(b)`` exceeds the pooled std of the two rows (the benchmark's rule for
    a difference that counts), in either direction."""
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    return abs(ma - mb) > pooled_std(sa, sb)


__all__ = ["beyond_pooled_std", "hard_plausible_fraction", "mean_std", "plausible_fraction", "pooled_std"]
