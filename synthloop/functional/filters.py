"""Blur filters on ``(B, C, H, W)`` tensors with per-sample strengths (thin wrappers over kornia)."""

from __future__ import annotations

import kornia.filters as KF
import torch

from synthloop.functional.numpy_ops import gaussian_kernel_size

__all__ = ["box_blur", "gaussian_blur", "gaussian_kernel_size", "motion_blur"]


def _per_sample(value: float | torch.Tensor, batch: int, like: torch.Tensor) -> torch.Tensor:
    v = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if v.ndim == 0:
        v = v.expand(batch)
    if v.shape != (batch,):
        raise ValueError(f"expected a scalar or a Tensor[{batch}], got shape {tuple(v.shape)}")
    return v


def gaussian_blur(x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """Gaussian blur of ``Tensor[B, C, H, W]`` with per-sample ``sigma`` (float or ``Tensor[B]``, pixels).

    Each sample's kernel is truncated at its own ``+-ceil(3 sigma)`` (see :func:`gaussian_kernel_size`)
    and renormalised, so a sample's result does not depend on the other sigmas in the batch: a
    batched call equals the single calls. Samples with sigma <= 0 pass through. Replicate border.
    Differentiable w.r.t. ``x`` and ``sigma``.
    """
    sig = _per_sample(sigma, x.shape[0], x)
    smax = float(sig.detach().max()) if sig.numel() else 0.0
    if smax <= 0:
        return x
    k = gaussian_kernel_size(smax)
    safe = sig.clamp_min(1e-3)
    kernel = KF.get_gaussian_kernel1d(k, safe.unsqueeze(1))  # (B, k), normalised over the widest window
    # kornia's batched sigma shares one kernel size; cut every kernel back to its own radius.
    radius = torch.ceil(3.0 * sig.detach().double()).clamp_min(1.0).to(x.device)
    offset = (torch.arange(k, device=x.device) - k // 2).abs()
    kernel = torch.where(offset.unsqueeze(0) <= radius.unsqueeze(1), kernel, torch.zeros_like(kernel))
    kernel = kernel / kernel.sum(-1, keepdim=True)
    out = KF.filter2d_separable(x, kernel, kernel, border_type="replicate")
    keep = (sig <= 0).view(-1, *([1] * (x.ndim - 1)))
    return torch.where(keep, x, out)


def box_blur(x: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Box (mean) filter with an odd ``kernel_size`` (1 = identity)."""
    k = int(kernel_size)
    if k <= 1:
        return x
    if k % 2 == 0:
        k += 1
    return KF.box_blur(x, (k, k), border_type="replicate")


def motion_blur(x: torch.Tensor, kernel_size: int, angle: float | torch.Tensor, direction: float | torch.Tensor = 0.0) -> torch.Tensor:
    """Linear motion blur of length ``kernel_size`` (odd) along ``angle`` degrees (per sample allowed)."""
    k = int(kernel_size)
    if k <= 1:
        return x
    if k % 2 == 0:
        k += 1
    ang = _per_sample(angle, x.shape[0], x)
    dirn = _per_sample(direction, x.shape[0], x)
    return KF.motion_blur(x, k, ang, dirn, border_type="replicate")
