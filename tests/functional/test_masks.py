import pytest
import torch
import torchvision
from functional_helpers import gradcheck, rand, tol

from synthloop.functional import gaussian_blur, masks_to_boxes, terse_mask_cleanup, warp
from synthloop.functional.masks import TERSE_MU


def warped_square(dtype, device) -> torch.Tensor:
    """A 16x16 square mask warped (rotated, scaled, sub-pixel shift) with bilinear resampling."""
    src = torch.zeros(2, 1, 24, 24, dtype=dtype, device=device)
    src[..., 4:20, 4:20] = 1.0
    p = torch.tensor([[23.0, 0.37, -0.21, 0.0, 1.3, 1.3], [-61.0, -0.45, 0.13, 0.1, 0.9, 1.1]], dtype=dtype, device=device)
    return warp(src, p, (40, 40))


def test_removes_bilinear_fringe_and_keeps_interior(device, dtype):
    m = warped_square(dtype, device)
    interior = m >= 1 - 1e-6
    fringe = (m > 0) & (m < 0.999)
    assert interior.sum() > 250 and fringe.sum() > 40  # the warp did leave a fractional fringe
    out = terse_mask_cleanup(m, blur_sigma=0)
    assert out.shape == m.shape and out.dtype == dtype
    assert torch.equal(out[interior], torch.ones_like(out[interior]))
    assert torch.equal(out[fringe], torch.zeros_like(out[fringe]))
    assert torch.equal(out, (out > 0.5).to(dtype))  # binary: no 0.5 speckles from rounding at 1


def test_one_ulp_below_one_counts_as_inside():
    # bilinear weights sum to 1 - eps/2 as often as to 1: those interior pixels must survive whole
    below = torch.nextafter(torch.tensor(1.0), torch.tensor(0.0))
    m = torch.stack([torch.tensor(1.0), below, torch.tensor(TERSE_MU), torch.tensor(0.9999), torch.tensor(0.0)]).view(1, 1, 1, 5)
    assert terse_mask_cleanup(m, blur_sigma=0).flatten().tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]


def test_matches_terse_formula_in_float64():
    m = (1.0 - torch.linspace(0, 2e-7, 41, dtype=torch.float64)).view(1, 1, 1, -1)
    terse = (torch.relu(m - TERSE_MU) / (1 - TERSE_MU)).clamp(max=1)
    torch.testing.assert_close(terse_mask_cleanup(m, blur_sigma=0), terse, atol=1e-7, rtol=0)


def test_custom_mu(dtype):
    m = torch.tensor([0.2, 0.5, 0.75, 1.0], dtype=dtype).view(1, 1, 1, 4)
    out = terse_mask_cleanup(m, mu=0.5, blur_sigma=0)
    torch.testing.assert_close(out.flatten(), torch.tensor([0.0, 0.0, 0.5, 1.0], dtype=dtype), atol=1e-6, rtol=0)


def test_blur_is_applied_after_binarisation(device, dtype):
    m = warped_square(dtype, device)
    binary = terse_mask_cleanup(m, blur_sigma=0)
    torch.testing.assert_close(terse_mask_cleanup(m, blur_sigma=1.5), gaussian_blur(binary, 1.5), **tol(dtype))
    sigma = torch.tensor([0.0, 2.0], dtype=dtype, device=device)
    per_sample = terse_mask_cleanup(m, blur_sigma=sigma)
    torch.testing.assert_close(per_sample[0], binary[0], **tol(dtype))
    torch.testing.assert_close(per_sample[1:], gaussian_blur(binary[1:], 2.0), **tol(dtype))
    soft = per_sample[1]
    assert ((soft > 0) & (soft < 1)).any() and soft.min() >= 0 and soft.max() <= 1


def ramp_mask(device) -> torch.Tensor:
    """float64 values strictly inside the ramp (mu, 1 - 2 eps) and well below mu, no kinks nearby."""
    gen = torch.Generator().manual_seed(4)
    ramp = 1.0 - rand(1, 1, 6, 6, gen=gen, dtype=torch.float64, low=2e-8, high=8e-8)
    low = rand(1, 1, 6, 6, gen=gen, dtype=torch.float64, low=0.2, high=0.8)
    pick = rand(1, 1, 6, 6, gen=gen, dtype=torch.float64) < 0.6
    return torch.where(pick, ramp, low).to(device)


def test_gradient_is_the_terse_slope(device):
    # the analytic gradient: 1 / (hi - mu) ~ 1e7 inside the ramp, 0 on the fringe and at 1
    m = ramp_mask(device)
    m[0, 0, 0, 0] = 1.0
    m.requires_grad_()
    (g,) = torch.autograd.grad(terse_mask_cleanup(m, blur_sigma=0).sum(), m)
    eps = torch.finfo(torch.float64).eps
    slope = 1.0 / ((1.0 - 2 * eps) - TERSE_MU)
    in_ramp = (m > TERSE_MU) & (m < 1 - 2 * eps)
    assert 15 < in_ramp.sum() < 35
    torch.testing.assert_close(g[in_ramp], torch.full_like(g[in_ramp], slope))
    assert g[~in_ramp].abs().max() == 0
    assert slope == pytest.approx(1e7, rel=1e-6)


def test_gradcheck_with_blur(device):
    # The ramp is only 1e-7 wide. gradcheck's default step (1e-6) jumps right across it, so the
    # finite differences see a different slope; a 1e-10 step stays inside the ramp, and float64
    # still resolves it (rounding near 1 is 1e-16, i.e. 1e-9 after the 1e7 slope, vs. a 1e-3 change).
    m = ramp_mask(device).requires_grad_()
    fn = lambda x: terse_mask_cleanup(x, blur_sigma=1.0)  # noqa: E731
    # (Jacobian entries reach 1e6, so cuDNN's non-deterministic backward differs by ~1e-9 between runs)
    assert gradcheck(fn, (m,), eps=1e-10, atol=1e-3, rtol=1e-4, nondet_tol=1e-6)
    assert not gradcheck(fn, (m,), raise_exception=False)


def test_gradcheck_blur_sigma():
    m = ramp_mask("cpu")
    sigma = torch.tensor([1.3], dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda s: terse_mask_cleanup(m, blur_sigma=s), (sigma,))


def test_cleanup_rejects_integer_masks():
    with pytest.raises(ValueError, match="floating-point"):
        terse_mask_cleanup(torch.ones(1, 1, 4, 4, dtype=torch.uint8))


def test_masks_to_boxes_exact(device, dtype):
    masks = torch.zeros(5, 10, 12, dtype=dtype, device=device)
    masks[0, 2:5, 3:9] = 1  # rectangle
    masks[1, 7, 4] = 1  # single pixel
    masks[2] = 1  # full canvas
    masks[3, 0, 0] = 1  # two far-apart pixels
    masks[3, 9, 11] = 1
    # masks[4] stays empty
    boxes = masks_to_boxes(masks)
    assert boxes.dtype == torch.float32 and boxes.device.type == device.type
    expected = [[3, 2, 9, 5], [4, 7, 5, 8], [0, 0, 12, 10], [0, 0, 12, 10], [0, 0, 0, 0]]
    assert boxes.tolist() == expected


def test_masks_to_boxes_threshold_and_empty_batch(device):
    soft = torch.zeros(1, 6, 6, device=device)
    soft[0, 1:3, 2:5] = 0.4
    assert masks_to_boxes(soft).tolist() == [[0, 0, 0, 0]]
    assert masks_to_boxes(soft, threshold=0.3).tolist() == [[2, 1, 5, 3]]
    assert masks_to_boxes(torch.zeros(0, 6, 6, device=device)).shape == (0, 4)
    assert masks_to_boxes(torch.zeros(3, 6, 6, dtype=torch.bool, device=device)).tolist() == [[0, 0, 0, 0]] * 3


def test_masks_to_boxes_is_torchvision_plus_one_on_the_max(gen):
    masks = rand(16, 20, 30, gen=gen) > 0.97  # scattered pixels, all non-empty here
    assert masks.flatten(1).any(1).all()
    ours = masks_to_boxes(masks.float())
    theirs = torchvision.ops.masks_to_boxes(masks)  # inclusive max (pixel indices)
    torch.testing.assert_close(ours, theirs + torch.tensor([0.0, 0.0, 1.0, 1.0]))


def test_masks_to_boxes_bad_shape():
    with pytest.raises(ValueError, match=r"masks must be \(N, H, W\)"):
        masks_to_boxes(torch.zeros(1, 1, 4, 4))
