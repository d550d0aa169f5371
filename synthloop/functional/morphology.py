"""Dilation and erosion of soft masks ``Tensor[B, 1, H, W]`` by max-pooling, with per-sample
fractional widths (interpolated between whole steps)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def _dilate_step(x: torch.Tensor, step: int) -> torch.Tensor:
    """One 3x3 max-pool dilation; cross and square elements alternate, so repeated steps grow an
    octagon (close to a disk) rather than a square."""
    if step % 2 == 0:
        return torch.maximum(F.max_pool2d(x, (3, 1), 1, (1, 0)), F.max_pool2d(x, (1, 3), 1, (0, 1)))
    return F.max_pool2d(x, 3, 1, 1)


def blend_levels(level: Callable[[int, torch.Tensor], torch.Tensor], width: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """Per-sample interpolation between whole dilation steps.

    ``level(k, idx)`` gives the masks of samples ``idx`` dilated by ``k`` steps (``k < 0``:
    eroded), ``Tensor[len(idx), 1, h, w]``; ``width`` ``Tensor[B]`` is the wanted width in pixels.
    A sample with ``|width|`` in ``(k, k + 1]`` gets ``level(k) + (|width| - k) * (level(k + 1) - level(k))``
    (steps negated for thinning); samples with ``width == 0`` keep ``base``.
    """
    out = base.clone()
    r = width.abs()
    active = width != 0
    upper = torch.where(width < 0, -1, 1) * torch.ceil(r).long()  # signed step just above |width|
    for k in upper[active].unique().tolist():
        idx = (active & (upper == k)).nonzero().flatten()
        lo, hi = level(k - (1 if k > 0 else -1), idx), level(k, idx)
        frac = (r[idx] - (abs(k) - 1)).view(-1, 1, 1, 1)
        out[idx] = lo + frac * (hi - lo)
    return out


def dilate(mask: torch.Tensor, k: int) -> torch.Tensor:
    """``mask`` dilated by ``k`` max-pool steps (``k < 0``: eroded, as the complement dilated)."""
    x = mask if k >= 0 else 1.0 - mask
    for step in range(abs(k)):
        x = _dilate_step(x, step)
    return x if k >= 0 else 1.0 - x


def stroke_width(tiles: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """Thicken (``width > 0``) or thin (``width < 0``) masks ``Tensor[B, 1, h, w]`` by ``|width|``
    pixels per side (``Tensor[B]``; fractional widths interpolate between whole max-pool steps,
    see :func:`blend_levels`). Samples with ``width == 0`` are returned unchanged."""
    if not bool((width != 0).any()):
        return tiles
    return blend_levels(lambda k, idx: dilate(tiles[idx], k), width, tiles)
