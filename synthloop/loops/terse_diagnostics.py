"""Per-cycle diagnostics of the samples a TERSE classification cycle adds (issue 10, item 5).

Recorded in the loop's history for every method (random, worst-of-k, TERSE variants) alike:

- ``readability``: fraction of the added samples the *reference* classifier still reads (the
  reference is an :class:`~synthloop.models.MNISTClassifier` trained on padded MNIST plus one
  random AffNIST-recipe copy of each digit: :func:`synthloop.loops.training.train_reference_classifier`);
- ``hardness``: mean ``1 - p_T(y)`` under T before it trains on them (``cache_hardness_mean``);
- ``param_hist``: 2-D histograms (``bins x bins``, fractions) of the unit-range positions of
  (angle, shear), (sx, sy) and (tx, ty) (tx/ty relative to each digit's feasible interval), plus
  ``edge_frac`` (share of angle/shear/sx/sy values in the outer 10 % of their range; 0.2 for the
  recipe) and ``corner_frac`` (samples with all four there; 0.0016 for the recipe);
- ``affinity`` (Gontijo-Lopes et al. 2020): accuracy of a model trained on clean data (the
  MNIST-only baseline) on the added samples, divided by its accuracy on the clean source digits;
- ``diversity`` (same paper, training-loss form): T's mean loss on the added samples after the T
  phase divided by its mean loss on the real digits; ``param_spread``: the per-parameter standard
  deviation of the unit coordinates times sqrt(12) (1.0 for the uniform recipe, 0 for one point).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from synthloop.loops.terse_methods import LINEAR_COLS, Range, params_to_unit
from synthloop.metrics.classification import accuracy, predict_logits

PAIRS = {"angle_shear": (0, 3), "sx_sy": (4, 5), "tx_ty": (1, 2)}


def param_histograms(unit: torch.Tensor, bins: int = 5) -> dict[str, object]:
    """Histograms and edge statistics of unit coordinates ``Tensor[N, 6]`` (see the module docstring)."""
    u = unit.detach().float().cpu().clamp(0, 1)
    out: dict[str, object] = {}
    for name, (a, b) in PAIRS.items():
        ia = (u[:, a] * bins).long().clamp(max=bins - 1)
        ib = (u[:, b] * bins).long().clamp(max=bins - 1)
        h = torch.bincount(ia * bins + ib, minlength=bins * bins).float() / max(len(u), 1)
        out[name] = [[round(float(v), 4) for v in row] for row in h.reshape(bins, bins)]
    lin = u[:, list(LINEAR_COLS)]
    edge = (lin < 0.1) | (lin > 0.9)
    out["edge_frac"] = float(edge.float().mean())
    out["corner_frac"] = float(edge.all(1).float().mean())
    out["param_spread"] = float(u.std(0, unbiased=False).mean() * math.sqrt(12.0)) if len(u) > 1 else 0.0
    return out


def _mean_loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, num_classes: int, batch_size: int) -> float:
    logits = predict_logits(model, images, num_classes=num_classes, batch_size=batch_size)
    return float(F.cross_entropy(logits, labels.to(logits.device)))


def added_set_diagnostics(
    images: torch.Tensor,
    labels: torch.Tensor,
    params: torch.Tensor,
    digits: torch.Tensor,
    *,
    ranges: Sequence[Range],
    reference: nn.Module | None,
    clean: nn.Module | None,
    clean_real_acc: float | None,
    num_classes: int,
    batch_size: int,
) -> dict[str, object]:
    """Diagnostics of one cycle's added set (``images`` ``Tensor[N, 1, S, S]``, ``labels``, final
    ``params`` ``Tensor[N, 6]``, source ``digits`` ``Tensor[N, 1, S, S]``) before T trains on it."""
    out: dict[str, object] = {"param_hist": param_histograms(params_to_unit(digits, params, ranges, digits.shape[-1]))}
    if reference is not None:
        out["readability"] = accuracy(reference, images, labels, num_classes=num_classes, batch_size=batch_size)
    if clean is not None:
        acc = accuracy(clean, images, labels, num_classes=num_classes, batch_size=batch_size)
        out["clean_acc_added"] = acc
        if clean_real_acc:
            out["affinity"] = acc / clean_real_acc
    return out


def diversity_ratio(
    target: nn.Module, added: tuple[torch.Tensor, torch.Tensor], real: tuple[torch.Tensor, torch.Tensor], *, num_classes: int, batch_size: int
) -> float:
    """T's mean cross-entropy on the ``added`` set over its mean on ``real`` (both ``(images, labels)``)."""
    a = _mean_loss(target, *added, num_classes, batch_size)
    r = _mean_loss(target, *real, num_classes, batch_size)
    return a / max(r, 1e-8)
