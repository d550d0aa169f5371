"""Differentiable, batched compositing for the learning loops (TERSE and friends).

Everything here is built from :mod:`synthloop.functional` torch ops, so gradients flow from a
loss on the composite back to the affine parameters (the spatial transformer), the photometric
parameters and the foreground pixels. Works on any device; no RNG.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from synthloop.functional.blend import DIFFERENTIABLE_BLEND_MODES, blend
from synthloop.functional.color import photometric
from synthloop.functional.geometry import warp
from synthloop.functional.masks import terse_mask_cleanup


@dataclass
class Composite:
    image: torch.Tensor  # (B, C, H, W)
    alpha: torch.Tensor  # (B, 1, H, W): the alpha the foreground was blended with
    mask: torch.Tensor  # (B, 1, H, W): the warped (hard-edged) object mask before feathering


def paste_batch(
    fg: torch.Tensor,
    fg_alpha: torch.Tensor,
    bg: torch.Tensor,
    affine: torch.Tensor,
    *,
    photometric_params: torch.Tensor | None = None,
    blend_mode: str = "alpha",
    blend_options: dict | None = None,
    cleanup: bool = False,
    cleanup_sigma: float = 1.0,
) -> Composite:
    """Warp ``fg`` ``(B, C, h, w)`` with ``affine`` ``(B, 6)`` onto ``bg`` ``(B, C, H, W)`` and blend.

    Args:
        fg_alpha: ``(B, 1, h, w)`` cut-out alpha. For MNIST-style digits pass the digit itself.
        photometric_params: optional ``(B, 4)`` (brightness, contrast, saturation, hue).
        cleanup: TERSE A.2 mask clean-up of the warped alpha (subtract mu, ReLU, renormalise,
            Gaussian blur with ``cleanup_sigma``).
    Returns:
        :class:`Composite` with the image and the masks used.
    """
    if fg.shape[0] != bg.shape[0] or fg.shape[1] != bg.shape[1]:
        raise ValueError(f"fg {tuple(fg.shape)} and bg {tuple(bg.shape)} must agree in batch and channels")
    H, W = bg.shape[-2:]
    both = warp(torch.cat([fg, fg_alpha], 1), affine, (H, W))
    w_fg, w_alpha = both[:, : fg.shape[1]], both[:, fg.shape[1] :]
    if photometric_params is not None:
        w_fg = photometric(w_fg, photometric_params, mask=w_alpha)
    alpha = terse_mask_cleanup(w_alpha, blur_sigma=cleanup_sigma) if cleanup else w_alpha
    out = blend(w_fg, alpha, bg, blend_mode, **(blend_options or {}))
    return Composite(image=out, alpha=alpha, mask=w_alpha)


def paste_artefacts_batch(
    bg: torch.Tensor,
    other_bg: torch.Tensor,
    shape_alpha: torch.Tensor,
    affine: torch.Tensor,
    *,
    blend_mode: str = "alpha",
    blend_options: dict | None = None,
) -> torch.Tensor:
    """TERSE §3.1 artefacts, batched: paste ``other_bg`` (another background, same size as ``bg``)
    into ``bg`` through a foreground-shaped mask (``shape_alpha`` ``(B, 1, h, w)`` warped with
    ``affine``) using the same blend as the objects, so seams carry no label information."""
    H, W = bg.shape[-2:]
    alpha = warp(shape_alpha, affine, (H, W))
    return blend(other_bg, alpha, bg, blend_mode, **(blend_options or {}))


__all__ = ["Composite", "DIFFERENTIABLE_BLEND_MODES", "paste_artefacts_batch", "paste_batch"]
