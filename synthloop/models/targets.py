"""Target adapters: a uniform view of the network T that synthetic data is made hard *for*.

A loop only needs three things from T: a differentiable loss on a batch (S maximises it, T
minimises it), a per-sample hardness in [0, 1] and a hard/easy decision. :class:`Target` states
that protocol; :class:`ClassifierTarget` implements it for any image classifier.

:func:`freeze` keeps a network out of training while the other player is updated: no
``requires_grad`` (so it stays out of optimisers and gets no gradient) and ``eval()`` mode (so
BatchNorm running statistics stay put and dropout is off), restored exactly afterwards.
Gradients still flow *through* a frozen network to its inputs, which is how S learns from T.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from synthloop.errors import InputError


@runtime_checkable
class Target(Protocol):
    """What a TERSE loop needs from a target network."""

    model: nn.Module

    def loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor: ...

    def hardness(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor: ...

    def is_hard(self, images: torch.Tensor, labels: torch.Tensor, margin: float = 0.05) -> torch.Tensor: ...


def hardness_from_probs(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """TERSE section 4.2 hardness ``1 - p_y`` of ``probs`` ``Tensor[N, C]`` at ``labels`` ``Tensor[N]`` -> ``Tensor[N]``."""
    return 1.0 - probs.gather(1, labels.long().view(-1, 1)).squeeze(1)


def is_hard_from_probs(probs: torch.Tensor, labels: torch.Tensor, margin: float = 0.05) -> torch.Tensor:
    """TERSE A.1 hard-example test: ``max_{c != y} p_c - p_y > margin`` (strict).

    Args:
        probs: ``Tensor[N, C]`` class probabilities, ``C >= 2``.
        labels: ``Tensor[N]`` true classes.
    Returns:
        ``Tensor[N]`` bool.
    """
    idx = labels.long().view(-1, 1)
    p_true = probs.gather(1, idx).squeeze(1)
    others = probs.scatter(1, idx, float("-inf"))
    return (others.amax(1) - p_true) > margin


class ClassifierTarget:
    """Adapter for a classifier ``model``: images ``Tensor[N, ...]`` -> logits ``Tensor[N, num_classes]``.

    Every method runs the model in whatever mode it is in and is differentiable unless stated
    otherwise; wrap calls in ``torch.no_grad()`` when only the numbers are needed.

    Raises (from every method):
        InputError: the model's output is not ``(N, num_classes)``, or a label is outside
            ``[0, num_classes)``.
    """

    def __init__(self, model: nn.Module, num_classes: int, name: str = "target"):
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.model = model
        self.num_classes = num_classes
        self.name = name

    def _check_logits(self, logits: torch.Tensor, batch: int) -> torch.Tensor:
        if logits.ndim != 2 or logits.shape != (batch, self.num_classes):
            raise InputError(
                f"classifier output has shape {tuple(logits.shape)}, expected ({batch}, {self.num_classes}): "
                f"the model's last layer does not match num_classes={self.num_classes}",
                field=f"{self.name}.num_classes",
            )
        return logits

    def _check_labels(self, labels: torch.Tensor, batch: int) -> torch.Tensor:
        if labels.shape != (batch,):
            raise InputError(f"labels must have shape ({batch},), got {tuple(labels.shape)}", field=f"{self.name}.labels")
        if labels.is_floating_point():
            raise InputError(f"labels must be integer class indices, got dtype {labels.dtype}", field=f"{self.name}.labels")
        if batch and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise InputError(
                f"labels must lie in [0, {self.num_classes}), got range [{int(labels.min())}, {int(labels.max())}]",
                field=f"{self.name}.labels",
            )
        return labels

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """``Tensor[N, num_classes]`` logits, shape-checked."""
        return self._check_logits(self.model(images), images.shape[0])

    def check_output(self, images: torch.Tensor) -> None:
        """Run the model once without gradients and raise ``InputError`` if its output width is
        not ``num_classes`` (call it once before a long run)."""
        with torch.no_grad():
            self.logits(images)

    def loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy (TERSE section 3.2) -> scalar."""
        logits = self.logits(images)
        return F.cross_entropy(logits, self._check_labels(labels, images.shape[0]))

    def probs(self, images: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities ``Tensor[N, num_classes]``."""
        return self.logits(images).softmax(1)

    def hardness(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``1 - p(true class)`` per image, ``Tensor[N]`` in [0, 1]."""
        probs = self.probs(images)
        return hardness_from_probs(probs, self._check_labels(labels, images.shape[0]))

    def is_hard(self, images: torch.Tensor, labels: torch.Tensor, margin: float = 0.05) -> torch.Tensor:
        """TERSE A.1: ``max_{c != y} p_c - p_y > margin`` per image, ``Tensor[N]`` bool (no gradient)."""
        with torch.no_grad():
            probs = self.probs(images)
        return is_hard_from_probs(probs, self._check_labels(labels, images.shape[0]), margin)


class _Frozen:
    """Handle returned by :func:`freeze`; as a context manager it unfreezes on exit."""

    def __init__(self, module: nn.Module):
        self.module = module

    def __enter__(self) -> nn.Module:
        return self.module

    def __exit__(self, *exc: object) -> None:
        unfreeze(self.module)


_STATE_ATTR = "_synthloop_frozen_states"


def freeze(module: nn.Module) -> _Frozen:
    """Freeze ``module``: every parameter ``requires_grad=False``, every submodule ``eval()``.

    Use as ``with freeze(net): ...`` (state restored on exit) or call it and later
    :func:`unfreeze`. The previous state (each parameter's ``requires_grad``, each submodule's
    ``training`` flag) is kept on a stack, so nested freezes restore correctly.
    """
    state = (
        [(p, p.requires_grad) for p in module.parameters()],
        [(m, m.training) for m in module.modules()],
    )
    stack = module.__dict__.setdefault(_STATE_ATTR, [])
    stack.append(state)
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return _Frozen(module)


def unfreeze(module: nn.Module) -> nn.Module:
    """Undo the latest :func:`freeze` of ``module``, restoring its exact previous state.

    Raises:
        ValueError: ``module`` is not frozen.
    """
    stack = module.__dict__.get(_STATE_ATTR)
    if not stack:
        raise ValueError(f"{type(module).__name__} is not frozen")
    params, modes = stack.pop()
    if not stack:
        del module.__dict__[_STATE_ATTR]
    for p, flag in params:
        p.requires_grad_(flag)
    for m, training in modes:
        m.training = training
    return module


def is_frozen(module: nn.Module) -> bool:
    """Whether ``module`` is inside a :func:`freeze` that has not been undone."""
    return bool(module.__dict__.get(_STATE_ATTR))


def trainable_parameters(module: nn.Module) -> Iterator[nn.Parameter]:
    """The parameters of ``module`` that require gradients: what an optimiser should get."""
    return (p for p in module.parameters() if p.requires_grad)
