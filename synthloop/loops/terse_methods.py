"""Anchors, objectives and generators of the TERSE classification loop beyond the paper (issue 10).

The paper's synthesizer S maximises the target T's cross-entropy under a range constraint only;
on AffNIST it collapses onto the corners of the ranges and makes hard but unreadable digits
(``benchmarks/results/affnist_efficiency.json``). The pieces here are the options of
:class:`~synthloop.loops.terse_classification.TerseClassificationConfig` that bound it:

- **teacher-bounded objective** (TeachAugment, Suzuki 2022): S minimises
  ``-log(1 - p_T(y|x)) + w * CE(teacher(x), y)`` per sample (:func:`s_sample_loss`): hard for T,
  still readable by a teacher, which is an EMA of T (:func:`make_ema_teacher`, updated after every
  T step) or the frozen reference classifier trained with random in-range augmentation;
- **random anchor**: ``theta = theta_random + delta`` with ``|delta| <= bound`` per parameter, in
  units of the parameter's range (:func:`anchored_params`); S predicts only the bounded delta;
- **worst-of-k** (gradient-free): k recipe draws per digit, keep the one with the lowest S-loss,
  i.e. the highest T loss under the paper objective (:func:`worst_of_k_select`);
- **diversity**: a penalty on S's batch concentrating in parameter space: the mean Gaussian
  kernel between the unit-range parameter vectors of a batch (:func:`concentration_penalty`);
- **replay**: snapshots of S kept in a small buffer that generation draws batches from
  (:class:`SnapshotReplay`).

Parameters in "unit" coordinates: angle, shear, sx, sy as the fraction of their range, tx/ty as
the fraction of each digit's feasible (in-frame) interval, which is how the AffNIST recipe draws
them (:func:`synthloop.data.affnist.sample_affnist_params`), so a uniform draw in unit space is the
recipe.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from synthloop.data.affnist import translation_bounds
from synthloop.loops.cache import HardExampleCache

Range = tuple[float, float]
LINEAR_COLS = (0, 3, 4, 5)
"""Columns of (angle, tx, ty, shear, sx, sy) that do not depend on the digit: angle, shear, sx, sy."""


def _bounds(ranges: Sequence[Range], like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    lo = torch.tensor([r[0] for r in ranges], dtype=like.dtype, device=like.device)
    hi = torch.tensor([r[1] for r in ranges], dtype=like.dtype, device=like.device)
    return lo, hi


def unit_to_linear(u: torch.Tensor, ranges: Sequence[Range]) -> torch.Tensor:
    """``u`` ``Tensor[B, 6]`` in [0, 1] -> parameters ``Tensor[B, 6]`` with every column mapped
    linearly onto its ``ranges`` entry (tx/ty onto the full range; :func:`fit_translation` then
    re-reads them as positions inside the feasible interval)."""
    lo, hi = _bounds(ranges, u)
    return torch.lerp(lo, hi, u)


def params_to_unit(digits: torch.Tensor, params: torch.Tensor, ranges: Sequence[Range], size: int) -> torch.Tensor:
    """Unit coordinates ``Tensor[B, 6]`` in [0, 1] of final ``params`` ``Tensor[B, 6]`` of ``digits``
    ``Tensor[B, 1, S, S]``: linear columns relative to their range, tx/ty relative to each digit's
    feasible interval within the range (0.5 where that interval is empty or a point)."""
    lo, hi = _bounds(ranges, params)
    u = ((params - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1)
    bounds = translation_bounds(digits, params, size=size)
    for k, col in enumerate((1, 2)):
        blo = bounds[:, 2 * k].clamp(float(lo[col]), float(hi[col]))
        bhi = bounds[:, 2 * k + 1].clamp(float(lo[col]), float(hi[col]))
        width = bhi - blo
        pos = torch.where(width > 1e-6, (params[:, col] - blo) / width.clamp_min(1e-6), torch.full_like(width, 0.5))
        u[:, col] = pos.clamp(0, 1)
    return u


def anchored_unit(raw: torch.Tensor, u_random: torch.Tensor, bound: float) -> torch.Tensor:
    """``u_random + bound * tanh(raw)`` clipped to [0, 1]: a bounded move ``|delta| <= bound`` of a
    random recipe draw (``Tensor[B, 6]`` each); ``raw = 0`` (a zero-initialised S) is the draw itself."""
    return (u_random + bound * torch.tanh(raw)).clamp(0.0, 1.0)


def anchored_params(raw: torch.Tensor, u_random: torch.Tensor, bound: float, ranges: Sequence[Range]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(params Tensor[B, 6], u Tensor[B, 6])`` of the anchored draw (see :func:`anchored_unit`)."""
    u = anchored_unit(raw, u_random, bound)
    return unit_to_linear(u, ranges), u


def s_sample_loss(
    target_logits: torch.Tensor, labels: torch.Tensor, objective: str, teacher_logits: torch.Tensor | None = None, teacher_weight: float = 1.0
) -> torch.Tensor:
    """Per-sample loss ``Tensor[B]`` that S minimises.

    ``"paper"``: ``-CE(T(x), y)`` (maximise T's loss). ``"teacher"``:
    ``-log(1 - p_T(y|x)) + teacher_weight * CE(teacher(x), y)`` (TeachAugment's bounded form; the
    first term saturates instead of rewarding ever more extreme samples, the second keeps the
    sample readable). ``teacher_logits`` is required for ``"teacher"``.
    """
    if objective == "paper":
        return -F.cross_entropy(target_logits, labels, reduction="none")
    if objective != "teacher":
        raise ValueError(f"unknown objective {objective!r}; expected paper or teacher")
    if teacher_logits is None:
        raise ValueError("the teacher objective needs the teacher's logits")
    log_p = target_logits.log_softmax(1).gather(1, labels.unsqueeze(1)).squeeze(1)
    # log(1 - p) computed stably from log p: log(-expm1(log p))
    hard_term = -torch.log(-torch.expm1(log_p.clamp(max=-1e-6)))
    return hard_term + teacher_weight * F.cross_entropy(teacher_logits, labels, reduction="none")


def concentration_penalty(u: torch.Tensor, sigma: float = 0.1) -> torch.Tensor:
    """Mean Gaussian kernel ``exp(-|u_i - u_j|^2 / (2 sigma^2 d))`` over distinct pairs of a batch of
    unit parameter vectors ``Tensor[B, d]`` (scalar in (0, 1]): 1 when the batch collapses onto
    one point, near 0 when it is spread. Differentiable; S adds ``weight * penalty`` to its loss."""
    b, d = u.shape
    if b < 2:
        return u.sum() * 0.0
    d2 = torch.cdist(u, u).pow(2) / d
    k = torch.exp(-d2 / (2 * sigma**2))
    return (k.sum() - k.diagonal().sum()) / (b * (b - 1))


def worst_of_k_select(scores: torch.Tensor) -> torch.Tensor:
    """``scores`` ``Tensor[B, k]`` (S-loss of each of k candidates per digit; lower = harder) ->
    ``Tensor[B]`` index of the chosen candidate (the argmin; ties: the first)."""
    return scores.argmin(1)


def make_ema_teacher(target: nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of ``target`` (weights and BatchNorm buffers; torch's
    ``AveragedModel``); call ``.update_parameters(target)`` after every T step."""
    return AveragedModel(target, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


class SnapshotReplay:
    """At most ``size`` snapshots of S (state dicts, oldest dropped first) and a spare copy of S to
    run one: generation draws each batch from a snapshot or the current S (TERSE S as a
    distribution over time, not only its latest answer)."""

    def __init__(self, synthesizer: nn.Module, size: int):
        self.size = size
        self.states: list[dict[str, torch.Tensor]] = []
        self._model = copy.deepcopy(synthesizer) if size > 0 else None

    def __len__(self) -> int:
        return len(self.states)

    def push(self, synthesizer: nn.Module) -> None:
        if self.size <= 0:
            return
        self.states.append({k: v.detach().clone() for k, v in synthesizer.state_dict().items()})
        del self.states[: max(0, len(self.states) - self.size)]

    def model(self, i: int) -> nn.Module:
        """The spare S loaded with snapshot ``i``."""
        assert self._model is not None
        self._model.load_state_dict(self.states[i])
        return self._model

    def state_dict(self) -> list[dict[str, torch.Tensor]]:
        return self.states

    def load_state_dict(self, states: list[dict[str, torch.Tensor]]) -> None:
        self.states = list(states)


def merge_caches(caches: Sequence[HardExampleCache], num_classes: int, per_class: int, device: torch.device | str) -> HardExampleCache:
    """One cache of at most ``per_class`` per class holding the non-empty ``caches`` in order."""
    out = HardExampleCache(num_classes, per_class, device=device)
    for c in caches:
        if len(c):
            out.add(c.images, c.labels, c.params, c.source_index, c.hardness)
    return out
