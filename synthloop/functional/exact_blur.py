"""A per-sample Gaussian blur whose result for one sample does not depend on its batch."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_blur_exact(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-sample Gaussian blur of ``Tensor[B, C, H, W]`` (``sigma`` ``Tensor[B]``, pixels; each
    kernel truncated at ``+-ceil(3 sigma)``, replicate border; ``sigma <= 0`` passes through).

    Same filter as :func:`synthloop.functional.filters.gaussian_blur`, computed as separable
    shifted sums instead of a convolution: torch's ``conv2d`` picks its algorithm by batch size,
    so a convolved sample differs in the last bit depending on the batch it is in, whereas
    shifted sums are elementwise multiplies and adds in a fixed order, so rendering one sample
    alone reproduces its pixels in any batch bit for bit (what replaying params relies on).
    """
    smax = float(sigma.max()) if sigma.numel() else 0.0
    if smax <= 0:
        return x
    H, W = x.shape[-2:]
    R = int(math.ceil(3.0 * smax))
    j = torch.arange(-R, R + 1, dtype=torch.float64, device=sigma.device)
    s = sigma.double().clamp_min(1e-6).view(-1, 1)
    w = torch.exp(-(j * j) / (2.0 * s * s))
    w = torch.where(j.abs() <= torch.ceil(3.0 * s), w, torch.zeros_like(w))
    w = (w / w.sum(1, keepdim=True)).to(x.dtype)
    pad = F.pad(x, (R, R, R, R), mode="replicate")
    rows = pad[..., :, 0:W] * w[:, 0].view(-1, 1, 1, 1)
    for t in range(1, 2 * R + 1):
        rows = rows + pad[..., :, t : t + W] * w[:, t].view(-1, 1, 1, 1)
    out = rows[..., 0:H, :] * w[:, 0].view(-1, 1, 1, 1)
    for t in range(1, 2 * R + 1):
        out = out + rows[..., t : t + H, :] * w[:, t].view(-1, 1, 1, 1)
    return torch.where((sigma <= 0).view(-1, 1, 1, 1), x, out)
