"""Photometric adjustments of a foreground, per sample (brightness, contrast, saturation, hue).

Conventions follow torchvision: ``brightness``, ``contrast``, ``saturation`` are multiplicative
factors with 1 = identity; ``hue`` is a shift in turns in [-0.5, 0.5] (0 = identity). All four
are differentiable with respect to the image and the factors.
"""

from __future__ import annotations

import math

import kornia.enhance as KE
import torch

from synthloop.functional.filters import _per_sample

PHOTOMETRIC_NAMES: tuple[str, ...] = ("brightness", "contrast", "saturation", "hue")


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return 0.299 * r + 0.587 * g + 0.114 * b


def identity_photometric(batch: int, *, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """``(B, 4)`` photometric parameters that change nothing."""
    p = torch.ones(batch, 4, dtype=dtype, device=device)
    p[:, 3] = 0.0
    return p


def photometric(image: torch.Tensor, params: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Apply ``params`` ``Tensor[B, 4]`` (brightness, contrast, saturation, hue) to ``image``.

    Contrast blends with the mean grey level of the object (inside ``mask`` when given, so the
    transparent part of a cut-out does not pull the mean). Saturation and hue are no-ops on
    single-channel images. Output is clamped to [0, 1].
    """
    if params.ndim != 2 or params.shape[1] != 4 or params.shape[0] != image.shape[0]:
        raise ValueError(f"photometric params must be (B, 4) matching the image batch, got {tuple(params.shape)}")
    b, c, s, h = params.to(image.dtype).unbind(1)
    view = (-1, 1, 1, 1)
    x = (image * b.view(view)).clamp(0, 1)
    g = _gray(x)
    if mask is not None:
        w = mask.to(x.dtype)
        mean = (g * w).sum(dim=(1, 2, 3), keepdim=True) / w.sum(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    else:
        mean = g.mean(dim=(1, 2, 3), keepdim=True)
    x = (mean + c.view(view) * (x - mean)).clamp(0, 1)
    if image.shape[1] == 3:
        x = KE.adjust_saturation(x, s)
        x = KE.adjust_hue(x, h * (2.0 * math.pi))
    return x.clamp(0, 1)


__all__ = ["PHOTOMETRIC_NAMES", "identity_photometric", "photometric", "_per_sample"]
