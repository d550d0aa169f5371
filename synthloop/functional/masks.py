"""Mask ops: TERSE's spatial-transformer clean-up, boxes from masks."""

from __future__ import annotations

import torch

from synthloop.functional.filters import gaussian_blur

TERSE_MU = 1.0 - 1e-7


def terse_mask_cleanup(mask: torch.Tensor, mu: float = TERSE_MU, blur_sigma: float | torch.Tensor = 1.0) -> torch.Tensor:
    """TERSE supplementary A.2 "Custom Spatial Transformer" mask clean-up.

    Bilinear resampling leaves a fringe of fractional values along a warped mask's edge. TERSE
    subtracts ``mu = 1 - 1e-7``, applies ReLU (only pixels that were fully inside the mask
    survive) and renormalises by ``1 - mu`` back to a binary image, then Gaussian-blurs it so the
    alpha blend has a smooth transition.

    In floating point the interior of a warped mask is 1 only up to rounding (bilinear weights
    sum to ``1 - eps / 2`` as often as to 1), and in float32 ``1 - 1e-7`` is a single ulp below 1.
    Renormalising by ``1 - mu`` (or by the per-image maximum) would then turn interior pixels into
    0.5. So values within ``2 eps`` of 1 count as fully inside, and ``mu`` is lowered to at most
    ``1 - 4 eps`` of the dtype (float64 keeps TERSE's ``mu`` exactly)::

        binary = clamp((mask - lo) / (hi - lo), 0, 1),  lo = min(mu, 1 - 4 eps),  hi = 1 - 2 eps

    Differentiable almost everywhere: the gradient is ``1 / (hi - lo)`` (about 1e7 in float64,
    as in TERSE) for values strictly between ``lo`` and ``hi`` and 0 elsewhere, then blurred.

    Args:
        mask: ``Tensor[B, 1, H, W]`` in [0, 1] (typically a warped mask).
        mu: values at or below ``mu`` (the fringe) become 0.
        blur_sigma: Gaussian sigma in pixels (float, or ``Tensor[B]``); 0 disables the blur.
    Returns:
        ``Tensor[B, 1, H, W]`` in [0, 1]; binary when ``blur_sigma`` is 0.
    """
    if not mask.is_floating_point():
        raise ValueError(f"mask must be a floating-point tensor, got {mask.dtype}")
    eps = torch.finfo(mask.dtype).eps
    hi = 1.0 - 2.0 * eps
    lo = min(float(mu), 1.0 - 4.0 * eps)
    binary = ((mask - lo) / (hi - lo)).clamp(0.0, 1.0)
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
