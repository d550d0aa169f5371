"""Mask ops: TERSE's spatial-transformer clean-up, boxes from masks."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from synthloop.functional.filters import gaussian_blur

TERSE_MU = 1.0 - 1e-7


def terse_mask_cleanup(mask: torch.Tensor, mu: float = TERSE_MU, blur_sigma: float | torch.Tensor = 1.0) -> torch.Tensor:
    """TERSE supplementary A.2 "Custom Spatial Transformer" mask clean-up.

    Bilinear resampling leaves a fringe of fractional values along a warped mask's edge. TERSE
    subtracts ``mu = 1 - 1e-7`` and applies ReLU (only pixels that were fully inside the mask
    survive), renormalises the result back to a binary image, then Gaussian-blurs it so the
    alpha blend has a smooth transition.

    The renormalisation divides by the per-sample maximum (``1 - mu`` in exact arithmetic), which
    is robust to float32 rounding of ``mu``. Differentiable almost everywhere.

    Args:
        mask: ``Tensor[B, 1, H, W]`` in [0, 1] (typically a warped mask).
        blur_sigma: Gaussian sigma in pixels (float, or ``Tensor[B]``); 0 disables the blur.
    Returns:
        ``Tensor[B, 1, H, W]`` in [0, 1].
    """
    r = F.relu(mask - mu)
    peak = r.amax(dim=(-2, -1), keepdim=True)
    binary = r / torch.where(peak > 0, peak, torch.ones_like(peak))
    return gaussian_blur(binary, blur_sigma)


def masks_to_boxes(masks: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Tight ``xyxy`` boxes ``(N, 4)`` (pixel edges, exclusive max) of ``masks`` ``(N, H, W)``.

    Empty masks give ``[0, 0, 0, 0]``. Not differentiable (boxes are labels, not losses).
    """
    if masks.ndim != 3:
        raise ValueError(f"masks must be (N, H, W), got {tuple(masks.shape)}")
    on = masks > threshold
    n, H, W = on.shape
    boxes = torch.zeros(n, 4, dtype=torch.float32, device=masks.device)
    if n == 0:
        return boxes
    rows = on.any(dim=2)
    cols = on.any(dim=1)
    nonempty = rows.any(dim=1)
    ar_h = torch.arange(H, device=masks.device)
    ar_w = torch.arange(W, device=masks.device)
    big = torch.tensor(10**9, device=masks.device)
    y0 = torch.where(rows, ar_h, big).amin(1)
    y1 = torch.where(rows, ar_h, -big).amax(1) + 1
    x0 = torch.where(cols, ar_w, big).amin(1)
    x1 = torch.where(cols, ar_w, -big).amax(1) + 1
    b = torch.stack([x0, y0, x1, y1], 1).float()
    boxes[nonempty] = b[nonempty]
    return boxes
