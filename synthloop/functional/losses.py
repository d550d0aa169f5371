"""GAN, refiner and discriminator losses: pure functions of their tensor arguments.

- :func:`d_loss` / :func:`g_loss`: TERSE's discriminator and synthesizer losses on logits
  (binary cross-entropy, the negative of TERSE eq. 2 and the non-saturating form of eq. 3).
- :func:`lsgan_loss`: least-squares GAN loss (CycleGAN, MrGAN).
- :func:`masked_pmse`: PixelDA's content-similarity loss inside a foreground mask.
- :func:`background_l1`, :func:`foreground_hue_l1`: Wang et al.'s separate background and
  foreground cycle losses.
"""

from __future__ import annotations

import math

import kornia.color
import torch
import torch.nn.functional as F


def d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator loss, the negative of TERSE eq. 2: ``BCE(D(r), 1) + BCE(D(f), 0)``.

    Minimising it maximises ``E_r log D(r) + E_f log(1 - D(f))``; each term is a mean over
    images and patches. Detach ``fake_logits``' input when updating D alone.

    Shapes: any two logit tensors (e.g. ``Tensor[N, 1, h, w]``) -> scalar.
    """
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real + fake


def g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Synthesizer (generator) adversarial loss: ``BCE(D(f), 1)`` = ``-E_f log D(f)``.

    This is the non-saturating form of S's side of eq. 3 (``min_S E_f log(1 - D(f))``): same
    fixed point, but strong gradients when D confidently rejects the composites.

    Shapes: ``Tensor[N, 1, h, w]`` (any shape) -> scalar.
    """
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def lsgan_loss(pred: torch.Tensor, target: float | torch.Tensor) -> torch.Tensor:
    """Least-squares GAN loss ``mean((pred - target)^2)``; ``target`` a number or ``Tensor[N, 1, 1, 1]``."""
    if not isinstance(target, torch.Tensor):
        target = torch.full_like(pred, float(target))
    return (pred - target.to(pred.dtype)).pow(2).mean()


def masked_pmse(refined: torch.Tensor, source: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """PixelDA's content-similarity loss (pairwise mean squared error) inside a foreground mask.

    With ``d = source - refined`` restricted to the ``k`` masked entries of a sample,
    ``(1/k) sum d_i^2 - (1/k^2) (sum d_i)^2``, i.e. ``1/(2k^2) sum_ij (d_i - d_j)^2``: it penalises
    differences *between* pixel changes, not a uniform change of the object. With a full mask
    this is exactly the paper's ``1/k ||d||^2 - 1/k^2 (d^T 1)^2``; the paper's masked form keeps
    ``k`` = all pixels, which also penalises a uniform shift inside the mask relative to the zeros
    outside it, so ``k`` here is the mask's size. Averaged over the batch; a sample with an empty
    mask contributes 0.

    Args:
        refined, source: ``Tensor[N, C, H, W]``.
        mask: ``Tensor[N, 1, H, W]`` (or ``[N, C, H, W]``), 1 = foreground; ``None`` = whole image.
    Returns:
        scalar.
    """
    d = (source - refined).flatten(1)
    if mask is None:
        m = torch.ones_like(d)
    else:
        m = mask.to(d.dtype).expand_as(source).flatten(1)
    k = m.sum(1)
    kc = k.clamp(min=1.0)
    per = (m * d * d).sum(1) / kc - ((m * d).sum(1) / kc).pow(2)
    return torch.where(k > 0, per, torch.zeros_like(per)).mean()


def background_l1(reconstructed: torch.Tensor, original: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cycle-consistency L1 on the background only (Wang et al.'s ``L_bg``): mean of
    ``|rec - x|`` over pixels where ``mask`` ``Tensor[N, 1, H, W]`` is 0. Images ``Tensor[N, C, H, W]`` -> scalar."""
    w = (1.0 - mask).expand_as(original)
    return (w * (reconstructed - original).abs()).sum() / w.sum().clamp(min=1.0)


def foreground_hue_l1(reconstructed: torch.Tensor, original: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Wang et al.'s foreground loss ``L_fg``: hue difference inside the mask.

    RGB: hue from :func:`kornia.color.rgb_to_hsv`, circular difference ``min(|dh|, 2 pi - |dh|)``
    scaled to [0, 1]. Grey images have no hue, so the intensity L1 is used. Mean over masked
    pixels. ``Tensor[N, C, H, W]`` images, ``Tensor[N, 1, H, W]`` mask -> scalar.
    """
    if original.shape[1] == 3:
        h_rec = kornia.color.rgb_to_hsv(reconstructed)[:, :1]
        h_org = kornia.color.rgb_to_hsv(original)[:, :1]
        dh = (h_rec - h_org).abs()
        diff = torch.minimum(dh, 2 * math.pi - dh) / math.pi
        w = mask
    else:
        diff = (reconstructed - original).abs()
        w = mask.expand_as(original)
    return (w * diff).sum() / w.sum().clamp(min=1.0)


__all__ = ["background_l1", "d_loss", "foreground_hue_l1", "g_loss", "lsgan_loss", "masked_pmse"]
