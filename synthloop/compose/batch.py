"""Differentiable, batched compositing for the learning loops (TERSE and friends).

Everything here is built from :mod:`synthloop.functional` torch ops, so gradients flow from a
loss on the composite back to the affine parameters (the spatial transformer), the photometric
parameters and the foreground pixels. Works on any device; no RNG.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from synthloop.functional.blend import DIFFERENTIABLE_BLEND_MODES, blend
from synthloop.functional.color import photometric
from synthloop.functional.geometry import warp
from synthloop.functional.masks import TERSE_MU, terse_mask_cleanup


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
    cleanup_mu: float = TERSE_MU,
) -> Composite:
    """Warp ``fg`` ``(B, C, h, w)`` with ``affine`` ``(B, 6)`` onto ``bg`` ``(B, C, H, W)`` and blend.

    Args:
        fg_alpha: ``(B, 1, h, w)`` cut-out alpha. For MNIST-style digits pass the digit itself.
        photometric_params: optional ``(B, 4)`` (brightness, contrast, saturation, hue).
        cleanup: TERSE A.2 mask clean-up of the warped alpha (subtract ``cleanup_mu``, ReLU,
            renormalise, Gaussian blur with ``cleanup_sigma``; see
            :func:`~synthloop.functional.masks.terse_mask_cleanup`).
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
    alpha = terse_mask_cleanup(w_alpha, mu=cleanup_mu, blur_sigma=cleanup_sigma) if cleanup else w_alpha
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


# --------------------------------------------------------------------------------------------
# several objects per canvas


@dataclass
class SceneComposite:
    """K objects pasted one after another onto each canvas (see :func:`paste_objects_batch`).

    Attributes:
        image: ``(B, C, H, W)`` the composite (differentiable).
        alphas: ``(B, K, 1, H, W)`` the alpha each object was blended with.
        visible: ``(B, K, 1, H, W)`` each object's own (warped, cleaned-up when asked) mask times
            ``1 - alpha`` of every object pasted after it: the part still visible (detached).
        boxes: ``(B, K, 4)`` xyxy pixel boxes of ``visible > 0.5`` (zeros for an invisible object; detached).
        visibility: ``(B, K)`` visible area (``visible > 0.5``) over the object's full warped area
            (its source area ``> 0.5`` times ``|det|`` of the affine map), in [0, 1]: occlusion and
            cropping by the canvas border both lower it (detached).
    """

    image: torch.Tensor
    alphas: torch.Tensor
    visible: torch.Tensor
    boxes: torch.Tensor
    visibility: torch.Tensor


def letterbox(rgb: torch.Tensor, alpha: torch.Tensor, size: int, fill: float = 0.8) -> tuple[torch.Tensor, torch.Tensor]:
    """A cut-out ``(C, h, w)`` + alpha ``(1, h, w)`` cropped to its alpha's box (alpha > 0), resized
    (bilinear, antialiased, aspect kept) so its longer side is ``fill * size`` px and centred on a
    transparent ``size x size`` square (TERSE A.2: foregrounds are centred and normalised so the
    longer side of their box fills at least 0.7 of the input). Deterministic; an all-transparent
    cut-out is resized whole. Returns ``(rgb (C, size, size), alpha (1, size, size))``."""
    import torch.nn.functional as F

    if rgb.ndim != 3 or alpha.ndim != 3 or alpha.shape[0] != 1 or rgb.shape[-2:] != alpha.shape[-2:]:
        raise ValueError(f"rgb (C, h, w) and alpha (1, h, w) must match, got {tuple(rgb.shape)} and {tuple(alpha.shape)}")
    on = alpha[0] > 0
    if bool(on.any()):
        rows, cols = on.any(1).nonzero().flatten(), on.any(0).nonzero().flatten()
        y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        rgb, alpha = rgb[:, y0:y1, x0:x1], alpha[:, y0:y1, x0:x1]
    h, w = alpha.shape[-2:]
    scale = fill * size / max(h, w)
    nh, nw = max(1, min(size, round(h * scale))), max(1, min(size, round(w * scale)))
    both = torch.cat([rgb.float(), alpha.float()], 0).unsqueeze(0)
    both = F.interpolate(both, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True).clamp_(0.0, 1.0)[0]
    out = both.new_zeros(both.shape[0], size, size)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[:, top : top + nh, left : left + nw] = both
    return out[:-1], out[-1:]


def paste_objects_batch(
    fg: torch.Tensor,
    fg_alpha: torch.Tensor,
    bg: torch.Tensor,
    affine: torch.Tensor,
    *,
    photometric_params: torch.Tensor | None = None,
    threshold: float = 0.5,
    **options: Any,
) -> SceneComposite:
    """Paste K cut-outs per canvas one after another (object ``k + 1`` over object ``k``) with
    :func:`paste_batch`, keeping track of what stays visible.

    Args:
        fg: ``(B, K, C, h, w)`` cut-outs; ``fg_alpha`` ``(B, K, 1, h, w)`` their alphas.
        bg: ``(B, C, H, W)`` canvases.
        affine: ``(B, K, 6)`` placements (see :mod:`synthloop.functional.geometry`).
        photometric_params: optional ``(B, K, 4)``.
        threshold: mask level that counts as object for boxes and areas.
        options: the other keywords of :func:`paste_batch` (``blend_mode``, ``blend_options``,
            ``cleanup``, ``cleanup_sigma``, ``cleanup_mu``), passed on as they are: one blend for all K.

    The image is differentiable w.r.t. ``fg``, ``bg``, ``affine`` and ``photometric_params``;
    the bookkeeping (visible masks, boxes, visibility) is detached. An object's own mask is its
    warped alpha before clean-up, occluded by ``1 - alpha`` of every later object (the mask before clean-up, because the clean-up's threshold at ``1 - 1e-7`` also drops edge pixels that bilinear
    resampling leaves a rounding error below 1, which would shrink boxes by a pixel).
    """
    from synthloop.functional.masks import masks_to_boxes

    if fg.ndim != 5 or fg_alpha.ndim != 5 or affine.ndim != 3 or affine.shape[-1] != 6:
        raise ValueError(f"fg (B, K, C, h, w), fg_alpha (B, K, 1, h, w), affine (B, K, 6) expected, got {tuple(fg.shape)}, {tuple(fg_alpha.shape)}, {tuple(affine.shape)}")
    b, k = fg.shape[:2]
    if affine.shape[:2] != (b, k) or fg_alpha.shape[:2] != (b, k) or bg.shape[0] != b:
        raise ValueError(f"batch/object counts disagree: fg {tuple(fg.shape[:2])}, fg_alpha {tuple(fg_alpha.shape[:2])}, affine {tuple(affine.shape[:2])}, bg {bg.shape[0]}")
    image = bg
    alphas, owns = [], []
    for j in range(k):
        comp = paste_batch(
            fg[:, j],
            fg_alpha[:, j],
            image,
            affine[:, j],
            photometric_params=None if photometric_params is None else photometric_params[:, j],
            **options,
        )
        image = comp.image
        alphas.append(comp.alpha)
        with torch.no_grad():
            owns.append(comp.mask.detach())
    alpha_t = torch.stack(alphas, 1)
    with torch.no_grad():
        vis = []
        cover = torch.zeros_like(owns[0])
        for j in reversed(range(k)):
            vis.append(owns[j] * (1.0 - cover))
            cover = 1.0 - (1.0 - cover) * (1.0 - alpha_t[:, j].detach())
        visible = torch.stack(vis[::-1], 1)
        H, W = bg.shape[-2:]
        boxes = masks_to_boxes(visible.reshape(b * k, H, W), threshold).reshape(b, k, 4)
        src_area = (fg_alpha.detach() > threshold).flatten(2).sum(-1).to(bg.dtype)  # (B, K)
        p = affine.detach()
        det = (p[..., 4] * p[..., 5]).abs()  # |det(R . Shear . S)| = sx * sy
        full = src_area * det
        seen = (visible > threshold).flatten(2).sum(-1).to(bg.dtype)
        visibility = torch.where(full > 0, (seen / full.clamp_min(1e-12)).clamp(0.0, 1.0), torch.zeros_like(full))
    return SceneComposite(image=image, alphas=alpha_t, visible=visible, boxes=boxes, visibility=visibility)


__all__ += ["SceneComposite", "letterbox", "paste_objects_batch"]
