"""Objectives and sources of the TERSE scene loop beyond the paper (issue 11): the teacher-bounded
objective, worst-of-k selection, S snapshots for the replay buffer.

- Teacher (TeachAugment, CVPR 2022, carried to detection): S maximises T's detection loss while a
  teacher detector -- a frozen copy of T at the start (the baseline) or an EMA of T -- must still
  detect the pasted objects: the teacher's loss on the composite is a penalty in S's loss. The
  teacher's parameters never require gradients and it runs in ``eval()`` mode, so the penalty's
  gradient reaches S only (through the composite), and nothing trains the teacher but the EMA.
- Worst-of-k (OHEM-style, gradient-free): k random scenes per slot, keep the one with T's highest
  detection loss (:func:`pick_worst`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from synthloop.compose.params import SceneParams
from synthloop.loops.terse_detection_scenes import composite_scene
from synthloop.models.detection import DetectionTarget
from synthloop.models.targets import freeze


def make_teacher(target: DetectionTarget, teacher: DetectionTarget | None = None) -> DetectionTarget:
    """A frozen teacher: a deep copy of ``teacher`` (or of ``target``), every parameter without
    ``requires_grad``, in ``eval()`` mode (BatchNorm uses its running statistics)."""
    src = teacher if teacher is not None else target
    out = DetectionTarget(copy.deepcopy(src.model), src.label_map)
    out.model.eval()
    for p in out.model.parameters():
        p.requires_grad_(False)
    return out


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """``teacher <- decay * teacher + (1 - decay) * student`` for floating parameters and buffers
    (integer buffers such as BatchNorm's batch counter are copied)."""
    t_state, s_state = teacher.state_dict(), student.state_dict()
    for k, v in t_state.items():
        s = s_state[k].to(v.device)
        if v.is_floating_point():
            v.mul_(decay).add_(s.to(v.dtype), alpha=1.0 - decay)
        else:
            v.copy_(s)


def per_image_loss(target: DetectionTarget, images: torch.Tensor, targets: Sequence[Mapping[str, torch.Tensor]]) -> torch.Tensor:
    """T's detection loss of every image on its own, ``(B,)`` (no gradient; BatchNorm as the model is set)."""
    with torch.no_grad():
        return torch.stack([target.loss(images[i : i + 1], [targets[i]]).detach().float().cpu() for i in range(images.shape[0])])


def pick_worst(losses: Sequence[float] | torch.Tensor) -> int:
    """Index of the largest loss (NaN counts as the smallest; the first of ties)."""
    t = torch.as_tensor(losses, dtype=torch.float64).reshape(-1)
    if t.numel() == 0:
        raise ValueError("no candidates to pick from")
    t = torch.where(torch.isnan(t), torch.full_like(t, -torch.inf), t)
    return int(torch.argmax(t))


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of ``module``'s state (an S snapshot of the replay buffer)."""
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def zero_last_linear(module: nn.Module) -> None:
    """Zero the last ``nn.Linear`` of ``module`` (a stochastic S then starts at the random sampler's
    centre: every raw output 0, i.e. the middle of each range and translations at their anchors)."""
    last = [m for m in module.modules() if isinstance(m, nn.Linear)][-1]
    nn.init.zeros_(last.weight)
    if last.bias is not None:
        nn.init.zeros_(last.bias)


def pick_synth(loop: Any, g: torch.Generator) -> tuple[nn.Module | None, int]:
    """The S of one generation batch: the current one or (``s_replay``) a snapshot drawn uniformly; ``(S, snapshot index or -1)``."""
    if not loop.config.s_replay or not loop.s_buffer:
        return loop.synthesizer, -1
    j = int(torch.randint(len(loop.s_buffer) + 1, (), generator=g))
    if j == len(loop.s_buffer):
        return loop.synthesizer, -1
    if loop._s_scratch is None:
        loop._s_scratch = copy.deepcopy(loop.synthesizer)
    loop._s_scratch.load_state_dict(loop.s_buffer[j])
    return loop._s_scratch, j


def worst_of_k_layout(loop: Any, g: torch.Generator, cycle: int) -> SceneParams:
    """``worst_of_k`` random layouts, the one with T's highest detection loss (no labelled object: loss NaN, never preferred)."""
    k = loop.config.worst_of_k
    cands = [loop.plausible(loop.sample_layout(g, cycle, random=True)) for _ in range(k)]
    scenes = [composite_scene(p, loop.foregrounds, loop.backgrounds, loop.label_map) for p in cands]
    losses = torch.full((k,), float("nan"))
    has = [i for i, s in enumerate(scenes) if s.target["labels"].numel()]
    if has:
        with freeze(loop.target.model):
            tgts = [{kk: v.to(loop.device) for kk, v in scenes[i].target.items()} for i in has]
            losses[has] = per_image_loss(loop.target, torch.stack([scenes[i].image for i in has]).to(loop.device), tgts)
    best = pick_worst(losses)
    cands[best].meta["worst_of_k"] = {"k": k, "loss": float(losses[best]), "losses": [float(v) for v in losses.tolist()]}
    return cands[best]


__all__ = ["ema_update", "make_teacher", "per_image_loss", "pick_synth", "pick_worst", "snapshot", "worst_of_k_layout", "zero_last_linear"]
