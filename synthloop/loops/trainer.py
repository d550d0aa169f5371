"""The one optimisation loop behind every supervised trainer in synthloop.

:func:`fit` runs ``loss -> zero_grad -> backward -> (clip) -> step -> (scheduler step)`` over an
iterable of batches. Callers keep their own batch plan (step- or epoch-based, mixed sources,
augmentation inside ``loss_fn``), so the random draws that build the batches happen exactly
where and in the order they did before; the loop itself draws nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import torch
from torch import nn

from synthloop.loops.faults import check_step
from synthloop.models.cpu_backend import guard_strided_1x1_convs

B = TypeVar("B")

LossFn = Callable[[nn.Module, Any], torch.Tensor]
"""``loss_fn(model, batch) -> scalar Tensor``."""

OnStep = Callable[[int, torch.Tensor], None]
"""``on_step(step, loss)`` after every optimiser step: ``step`` counts from 1, ``loss`` is detached."""


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[B],
    loss_fn: Callable[[nn.Module, B], torch.Tensor],
    *,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    grad_clip: float | None = None,
    on_step: OnStep | None = None,
    what: str = "training",
) -> list[torch.Tensor]:
    """Train ``model`` in place, one optimiser step per batch, in ``train()`` mode.

    The model is guarded against oneDNN's strided 1x1 convolution bug
    (:func:`~synthloop.models.cpu_backend.guard_strided_1x1_convs`) and left in ``train()`` mode;
    callers that want another mode afterwards set it themselves.

    Args:
        model: the module being trained (``loss_fn`` may call it through an adapter).
        optimizer: over (some of) ``model``'s parameters.
        batches: one entry per step, passed to ``loss_fn`` as is; consumed lazily.
        loss_fn: ``loss_fn(model, batch) -> scalar Tensor``.
        scheduler: stepped after every optimiser step.
        grad_clip: clip the gradient norm of the optimiser's parameters to this value.
        on_step: called after every step with ``(step, detached loss)``.
        what: names the loss in the non-finite-loss error.

    Returns:
        the detached per-step losses (0-dim tensors on the loss's device).

    Raises:
        NonFiniteError: (an ``InputError``) a loss or a gradient is NaN or infinite, naming the
            0-based step (:mod:`~synthloop.loops.faults`); nothing is updated then.
    """
    guard_strided_1x1_convs(model)
    optimizer_params = [p for group in optimizer.param_groups for p in group["params"]]
    params = optimizer_params if grad_clip is not None else []
    owned = {id(p) for p in optimizer_params}
    named = [(n, p) for n, p in model.named_parameters() if id(p) in owned] or optimizer_params  # names for the error
    model.train()
    losses: list[torch.Tensor] = []
    for step, batch in enumerate(batches):
        loss = loss_fn(model, batch)
        optimizer.zero_grad(set_to_none=True)
        check_step(loss, named, step=step, what=what)
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        value = loss.detach()
        losses.append(value)
        if on_step is not None:
            on_step(step + 1, value)
    return losses


__all__ = ["LossFn", "OnStep", "fit"]
