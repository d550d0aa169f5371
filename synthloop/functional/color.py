"""Photometric adjustments of a foreground, per sample (brightness, contrast, saturation, hue).

Conventions follow torchvision: ``brightness``, ``contrast``, ``saturation`` are multiplicative
factors with 1 = identity; ``hue`` is a shift in turns in [-0.5, 0.5] (0 = identity).

All four are *linear* colour maps, so together they are one affine map per sample,
``x -> M x + c`` with ``M`` 3x3, applied once and clamped to [0, 1] at the end:

- brightness ``b``: ``x * b``;
- contrast ``k``: ``mean + k (x - mean)`` with ``mean`` the mean grey level (inside the mask);
- saturation ``s``: ``grey + s (x - grey)`` (ITU-R 601 luma weights, as torchvision);
- hue ``h``: rotation by ``2 pi h`` of the chroma plane in YIQ space (the classic linear hue
  rotation; it matches an HSV hue shift closely for moderate saturations and costs one 3x3
  matrix instead of an RGB -> HSV round trip, which is why it is written out here instead of
  calling kornia's ``adjust_hue``).

Differentiable with respect to the image and the four factors. The NumPy fast path uses the same
matrices (:func:`photometric_affine`), so both paths agree.
"""

from __future__ import annotations

import math

import torch

PHOTOMETRIC_NAMES: tuple[str, ...] = ("brightness", "contrast", "saturation", "hue")
LUMA = (0.299, 0.587, 0.114)

_RGB2YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]], dtype=torch.float64)
_YIQ2RGB = torch.linalg.inv(_RGB2YIQ)


def identity_photometric(batch: int, *, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """``(B, 4)`` photometric parameters that change nothing."""
    p = torch.ones(batch, 4, dtype=dtype, device=device)
    p[:, 3] = 0.0
    return p


def photometric_affine(params: torch.Tensor, mean_gray: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-sample affine colour map ``(M (B,3,3), c (B,3))`` of ``params`` ``(B, 4)``.

    ``mean_gray`` ``(B,)`` is the mean grey level of the *original* object; contrast pivots on the
    brightened mean ``b * mean_gray``.
    """
    dt, dev = params.dtype, params.device
    b, k, s, h = params.unbind(1)
    eye = torch.eye(3, dtype=dt, device=dev).expand(params.shape[0], 3, 3)
    luma = torch.tensor(LUMA, dtype=dt, device=dev)
    gray_proj = luma.view(1, 1, 3).expand(params.shape[0], 3, 3)  # every row = luma weights
    sat = s.view(-1, 1, 1) * eye + (1 - s).view(-1, 1, 1) * gray_proj
    ang = h * (2.0 * math.pi)
    cos, sin = torch.cos(ang), torch.sin(ang)
    zero, one = torch.zeros_like(ang), torch.ones_like(ang)
    # (I, Q) -> (I cos + Q sin, Q cos - I sin): positive h moves red towards yellow and green, i.e. the
    # HSV hue increases by about h turns, as torchvision's adjust_hue.
    rot = torch.stack([torch.stack([one, zero, zero], 1), torch.stack([zero, cos, sin], 1), torch.stack([zero, -sin, cos], 1)], 1)
    hue = _YIQ2RGB.to(dt).to(dev) @ rot @ _RGB2YIQ.to(dt).to(dev)
    M = (k * b).view(-1, 1, 1) * (hue @ sat)
    pivot = (1 - k) * b * mean_gray.to(dt)
    c = pivot.view(-1, 1).expand(-1, 3)
    return M, c


def photometric(image: torch.Tensor, params: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Apply ``params`` ``Tensor[B, 4]`` (brightness, contrast, saturation, hue) to ``image``.

    Args:
        image: ``Tensor[B, C, H, W]`` with C = 3 (RGB) or 1 (grey: saturation and hue are no-ops).
        mask: optional ``Tensor[B, 1, H, W]``: contrast pivots on the mean grey level inside it, so
            the transparent part of a cut-out does not pull the mean.
    Returns:
        ``Tensor[B, C, H, W]`` clamped to [0, 1].
    """
    if params.ndim != 2 or params.shape[1] != 4 or params.shape[0] != image.shape[0]:
        raise ValueError(f"photometric params must be (B, 4) matching the image batch, got {tuple(params.shape)}")
    if image.shape[1] not in (1, 3):
        raise ValueError(f"photometric expects 1 or 3 channels, got {image.shape[1]}")
    p = params.to(image.dtype)
    if image.shape[1] == 3:
        luma = torch.tensor(LUMA, dtype=image.dtype, device=image.device).view(1, 3, 1, 1)
        gray = (image * luma).sum(1, keepdim=True)
    else:
        gray = image
    if mask is not None:
        w = mask.to(image.dtype)
        mean = (gray * w).sum(dim=(1, 2, 3)) / w.sum(dim=(1, 2, 3)).clamp_min(1e-6)
    else:
        mean = gray.mean(dim=(1, 2, 3))
    if image.shape[1] == 1:
        b, k = p[:, 0].view(-1, 1, 1, 1), p[:, 1].view(-1, 1, 1, 1)
        out = k * b * image + ((1 - k) * b).view(-1, 1, 1, 1) * mean.view(-1, 1, 1, 1)
        return out.clamp(0, 1)
    M, c = photometric_affine(p, mean)
    out = torch.einsum("bij,bjhw->bihw", M, image) + c.view(-1, 3, 1, 1)
    return out.clamp(0, 1)


__all__ = ["LUMA", "PHOTOMETRIC_NAMES", "identity_photometric", "photometric", "photometric_affine"]
