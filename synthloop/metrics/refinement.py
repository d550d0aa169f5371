"""Does refinement keep what the labels say? Label preservation and foreground-mask IoU.

A refiner is only useful if a refined image still shows its original class and its object is
still where it was. Two checks:

- :func:`label_preservation`: the fraction of refined samples that a classifier trained on *real*
  data still assigns to the sample's original label (how many labels survived the translation).
- :func:`foreground_iou`: per sample, the IoU of the input's and the refined image's foreground
  masks, each obtained by thresholding the image (mean over channels); with explicit masks for
  the input, those are used instead of thresholding it.
"""

from __future__ import annotations

import torch
from torch import nn

from synthloop.errors import InputError
from synthloop.metrics.classification import accuracy, check_dataset, check_labels, predict_logits


def label_preservation(
    classifier: nn.Module,
    refined: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_classes: int,
    batch_size: int = 1024,
) -> float:
    """Fraction in [0, 1] of ``refined`` ``Tensor[N, C, H, W]`` that ``classifier`` (trained on real
    data) assigns to their original ``labels`` ``Tensor[N]``.

    The classifier runs frozen (eval mode, no gradients; its state is restored afterwards).

    Raises:
        InputError: empty input, mismatched shapes, labels outside ``[0, num_classes)``, or a
            classifier whose output width is not ``num_classes``.
    """
    return accuracy(classifier, refined, labels, num_classes=num_classes, batch_size=batch_size)


def label_preservation_per_class(
    classifier: nn.Module,
    refined: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_classes: int,
    batch_size: int = 1024,
) -> torch.Tensor:
    """Per-class label preservation ``Tensor[num_classes]`` (NaN for a class with no sample)."""
    check_dataset(refined, labels, name="refined")
    labels = check_labels(labels, num_classes)
    pred = predict_logits(classifier, refined, num_classes=num_classes, batch_size=batch_size).argmax(1).cpu()
    labels = labels.cpu()
    hits = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, labels, (pred == labels).double())
    counts = torch.bincount(labels, minlength=num_classes).double()
    return torch.where(counts > 0, hits / counts.clamp(min=1), torch.full_like(counts, float("nan"))).float()


def foreground_masks(images: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """``Tensor[N, C, H, W]`` -> bool ``Tensor[N, H, W]``: channel mean strictly above ``threshold``."""
    if images.ndim != 4:
        raise InputError(f"expected images of shape (N, C, H, W), got {tuple(images.shape)}", field="images")
    return images.float().mean(1) > threshold


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of two bool mask batches ``Tensor[N, H, W]`` -> ``Tensor[N]`` float; two empty masks give 1."""
    if a.shape != b.shape:
        raise InputError(f"mask shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}", field="masks")
    a = a.flatten(1)
    b = b.flatten(1)
    inter = (a & b).sum(1).float()
    union = (a | b).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def foreground_iou(
    inputs: torch.Tensor,
    refined: torch.Tensor,
    *,
    threshold: float = 0.5,
    refined_threshold: float | None = None,
    input_masks: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-sample IoU ``Tensor[N]`` between the foreground of ``inputs`` and of ``refined``.

    Args:
        inputs: ``Tensor[N, C, H, W]`` images before refinement.
        refined: ``Tensor[N, C', H, W]`` the same images after refinement (``C'`` may differ).
        threshold: foreground = channel mean above this (for both unless ``refined_threshold``).
        refined_threshold: a separate threshold for the refined images (their intensities may
            have shifted; e.g. a refiner that darkens digits).
        input_masks: ``Tensor[N, 1, H, W]`` (or ``[N, H, W]``) known foreground masks of the inputs
            (non-zero = foreground), used instead of thresholding ``inputs``.

    Raises:
        InputError: batch or spatial sizes differ, or an empty batch.
    """
    check_dataset(inputs, name="inputs")
    check_dataset(refined, name="refined")
    if inputs.shape[0] != refined.shape[0] or inputs.shape[-2:] != refined.shape[-2:]:
        raise InputError(
            f"inputs {tuple(inputs.shape)} and refined {tuple(refined.shape)} must have the same batch and spatial size",
            field="refined",
        )
    if input_masks is not None:
        m = input_masks.squeeze(1) if input_masks.ndim == 4 else input_masks
        if m.shape != (inputs.shape[0], *inputs.shape[-2:]):
            raise InputError(f"input_masks must be (N, 1, H, W) matching the inputs, got {tuple(input_masks.shape)}", field="input_masks")
        a = m != 0
    else:
        a = foreground_masks(inputs, threshold)
    b = foreground_masks(refined, threshold if refined_threshold is None else refined_threshold)
    return mask_iou(a.cpu(), b.cpu())
