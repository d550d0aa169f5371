"""Batched evaluation of image classifiers: logits, accuracy, and the degenerate-sample check.

Every function runs the model frozen (``eval()`` mode, no gradients; its previous state is
restored afterwards), in batches, on the model's device, and validates the model's output width
and the labels with :class:`synthloop.models.ClassifierTarget`, so a classifier whose last layer
does not match ``num_classes`` is a clear :class:`~synthloop.errors.InputError`.
"""

from __future__ import annotations

import torch
from torch import nn

from synthloop.errors import InputError
from synthloop.models.targets import ClassifierTarget, freeze


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter or buffer (CPU for a model without any)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def check_dataset(images: torch.Tensor, labels: torch.Tensor | None = None, *, name: str = "images") -> None:
    """Raise :class:`InputError` unless ``images`` is a non-empty ``Tensor[N, C, H, W]`` and
    ``labels`` (when given) is a ``Tensor[N]`` of integers."""
    if images.ndim != 4:
        raise InputError(f"expected images of shape (N, C, H, W), got {tuple(images.shape)}", field=name)
    if images.shape[0] == 0:
        raise InputError("the data set is empty (0 images)", field=name)
    if labels is not None:
        if labels.shape != (images.shape[0],):
            raise InputError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}", field=f"{name}.labels")
        if labels.is_floating_point():
            raise InputError(f"labels must be integer class indices, got dtype {labels.dtype}", field=f"{name}.labels")


def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    *,
    num_classes: int,
    batch_size: int = 1024,
) -> torch.Tensor:
    """Logits ``Tensor[N, num_classes]`` (float32, on the images' device) of ``images`` ``Tensor[N, C, H, W]``.

    Raises:
        InputError: empty input, or the model's output is not ``(batch, num_classes)``.
    """
    check_dataset(images)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    target = ClassifierTarget(model, num_classes)
    device = model_device(model)
    out = []
    with freeze(model), torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            chunk = images[start : start + batch_size].to(device, non_blocking=True)
            out.append(target.logits(chunk).float().to(images.device))
    return torch.cat(out)


def predict_probs(model: nn.Module, images: torch.Tensor, *, num_classes: int, batch_size: int = 1024) -> torch.Tensor:
    """Softmax probabilities ``Tensor[N, num_classes]`` of ``images`` ``Tensor[N, C, H, W]``."""
    return predict_logits(model, images, num_classes=num_classes, batch_size=batch_size).softmax(1)


def check_labels(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``labels`` as int64 after checking every class lies in ``[0, num_classes)`` (else :class:`InputError`)."""
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise InputError(
            f"labels must lie in [0, {num_classes}), got range [{int(labels.min())}, {int(labels.max())}]", field="labels"
        )
    return labels.long()


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, num_classes: int, batch_size: int = 1024) -> float:
    """Top-1 accuracy in [0, 1] of ``model`` on ``images`` ``Tensor[N, C, H, W]`` with ``labels`` ``Tensor[N]``."""
    check_dataset(images, labels)
    labels = check_labels(labels, num_classes)
    pred = predict_logits(model, images, num_classes=num_classes, batch_size=batch_size).argmax(1)
    return float((pred == labels.to(pred.device)).float().mean())


def unrecognised_fraction(
    reference: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, num_classes: int, batch_size: int = 1024
) -> float:
    """Fraction in [0, 1] of ``images`` whose label a *reference* classifier no longer predicts.

    The guard against degenerate synthesis: the reference is trained on clean data (padded MNIST
    plus random AffNIST-recipe digits), so a synthesized digit it cannot read (pushed off the
    canvas, shrunk to a speck, turned into another digit) counts here. A hard example that is
    still a recognisable digit does not. ``1 - accuracy(reference, ...)``.
    """
    return 1.0 - accuracy(reference, images, labels, num_classes=num_classes, batch_size=batch_size)
