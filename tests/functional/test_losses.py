"""The GAN, refiner and discriminator losses of :mod:`synthloop.functional.losses`."""

import math

import pytest
import torch

from synthloop.functional.losses import (
    background_l1,
    d_loss,
    foreground_hue_l1,
    g_loss,
    lsgan_loss,
    masked_pmse,
)
from synthloop.models import PatchDiscriminator


def test_losses_follow_eq2():
    zero = torch.zeros(2, 1, 4, 4)
    assert d_loss(zero, zero).item() == pytest.approx(2 * math.log(2))
    assert g_loss(zero).item() == pytest.approx(math.log(2))
    big = torch.full((2, 1, 4, 4), 30.0)
    assert d_loss(big, -big).item() < 1e-6  # D sure and right
    assert d_loss(-big, big).item() == pytest.approx(60.0, rel=1e-4)  # D sure and wrong
    assert g_loss(big).item() < 1e-6 and g_loss(-big).item() == pytest.approx(30.0, rel=1e-4)
    # D(r) = sigmoid(l): the loss equals -(log D(r) + log(1 - D(f))) averaged over patches
    r, f = torch.tensor([0.3, -1.2]), torch.tensor([2.0, 0.5])
    manual = -(torch.log(torch.sigmoid(r)).mean() + torch.log(1 - torch.sigmoid(f)).mean())
    torch.testing.assert_close(d_loss(r, f), manual)


def test_generator_loss_pushes_fakes_towards_real(gen):
    d = PatchDiscriminator(in_channels=1, width=0.25)
    fake = torch.rand(2, 1, 40, 40, generator=gen, requires_grad=True)
    g_loss(d(fake)).backward()
    step = fake - 1.0 * fake.grad / fake.grad.norm()
    with torch.no_grad():
        assert g_loss(d(step)) < g_loss(d(fake))


def test_lsgan_loss_number_or_tensor_target():
    pred = torch.tensor([[0.5], [1.5]]).view(2, 1, 1, 1)
    assert lsgan_loss(pred, 1.0).item() == pytest.approx(0.25)
    target = torch.tensor([0.5, 1.5]).view(2, 1, 1, 1)
    assert lsgan_loss(pred, target).item() == 0.0


def test_masked_pmse():
    g = torch.Generator().manual_seed(0)
    src = torch.rand(3, 2, 5, 5, generator=g)
    mask = torch.zeros(3, 1, 5, 5)
    mask[:, :, 1:4, 1:4] = 1
    # a uniform change of the object costs nothing; changes outside the mask cost nothing
    shifted = src + 0.3 * mask + 0.7 * (1 - mask) * torch.rand(3, 2, 5, 5, generator=g)
    assert masked_pmse(shifted, src, mask).item() == pytest.approx(0.0, abs=1e-6)
    # full mask: the paper's 1/k ||d||^2 - 1/k^2 (d.1)^2
    refined = torch.rand(3, 2, 5, 5, generator=g)
    d = (src - refined).flatten(1)
    k = d.shape[1]
    paper = ((d * d).sum(1) / k - d.sum(1).pow(2) / k**2).mean()
    assert masked_pmse(refined, src).item() == pytest.approx(paper.item(), rel=1e-5)
    # = mean over pairs of (d_i - d_j)^2 / 2
    pairs = ((d[:, :, None] - d[:, None, :]) ** 2).sum((1, 2)) / (2 * k**2)
    assert masked_pmse(refined, src).item() == pytest.approx(pairs.mean().item(), rel=1e-5)
    assert masked_pmse(refined, src, torch.zeros(3, 1, 5, 5)).item() == 0.0


def test_foreground_background_losses():
    g = torch.Generator().manual_seed(0)
    x = 0.2 + 0.6 * torch.rand(2, 3, 6, 6, generator=g)
    mask = torch.zeros(2, 1, 6, 6)
    mask[..., :3, :] = 1
    rec = x.clone()
    rec[..., :3, :] = x[..., :3, :] * 0.5  # darker foreground, same hue
    assert background_l1(rec, x, mask).item() == 0.0
    assert foreground_hue_l1(rec, x, mask).item() == pytest.approx(0.0, abs=1e-4)
    recoloured = x.clone()
    recoloured[..., :3, :] = x[..., :3, :].flip(1)  # swap red and blue: the hue moves
    assert foreground_hue_l1(recoloured, x, mask).item() > 0.05
    rec_bg = x.clone()
    rec_bg[..., 3:, :] += 0.1
    assert background_l1(rec_bg, x, mask).item() == pytest.approx(0.1, rel=1e-4)
    assert foreground_hue_l1(rec_bg, x, mask).item() == 0.0
    grey = x[:, :1]
    assert foreground_hue_l1(grey * 0.5, grey, mask).item() == pytest.approx((grey * 0.5 * mask).sum().item() / mask.sum().item(), rel=1e-5)
