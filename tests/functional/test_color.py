import math

import kornia.color as KC
import pytest
import torch
from functional_helpers import gradcheck, rand, tol

from synthloop.functional import PHOTOMETRIC_NAMES, identity_photometric, photometric
from synthloop.functional.color import LUMA, photometric_affine


def luma(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def ph(*rows, dtype=torch.float32, device="cpu") -> torch.Tensor:
    return torch.tensor(rows, dtype=dtype, device=device)


def mid_image(gen, dtype=torch.float32, device="cpu", batch=2, channels=3, h=9, w=11) -> torch.Tensor:
    """Values in [0.35, 0.65]: moderate changes never reach the clamp at 0 or 1."""
    return rand(batch, channels, h, w, gen=gen, dtype=dtype, device=device, low=0.35, high=0.65)


def test_names_and_identity_params(device, dtype):
    assert PHOTOMETRIC_NAMES == ("brightness", "contrast", "saturation", "hue")
    p = identity_photometric(3, dtype=dtype, device=device)
    assert p.shape == (3, 4) and p.dtype == dtype and p.tolist() == [[1.0, 1.0, 1.0, 0.0]] * 3


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("with_mask", [False, True])
def test_identity_is_a_no_op(channels, with_mask, device, dtype, gen):
    img = rand(2, channels, 9, 11, gen=gen, dtype=dtype, device=device)
    mask = (rand(2, 1, 9, 11, gen=gen, dtype=dtype, device=device) > 0.5).to(dtype) if with_mask else None
    out = photometric(img, identity_photometric(2, dtype=dtype, device=device), mask)
    torch.testing.assert_close(out, img, atol=1e-6, rtol=0)


def test_identity_affine_map():
    M, c = photometric_affine(identity_photometric(2, dtype=torch.float64), torch.tensor([0.3, 0.7], dtype=torch.float64))
    torch.testing.assert_close(M, torch.eye(3, dtype=torch.float64).expand(2, 3, 3))
    assert c.abs().max() < 1e-12


def test_photometric_is_its_affine_map_then_clamp(device, dtype, gen):
    img = rand(2, 3, 7, 8, gen=gen, dtype=dtype, device=device)
    p = ph([1.3, 1.4, 0.6, 0.2], [0.8, 0.7, 1.5, -0.3], dtype=dtype, device=device)
    M, c = photometric_affine(p, luma(img).mean(dim=(1, 2, 3)))
    expected = (torch.einsum("bij,bjhw->bihw", M, img) + c.view(2, 3, 1, 1)).clamp(0, 1)
    torch.testing.assert_close(photometric(img, p), expected, **tol(dtype))


def test_brightness_scales(device, dtype, gen):
    img = rand(2, 3, 9, 11, gen=gen, dtype=dtype, device=device)
    p = ph([1.4, 1, 1, 0], [0.6, 1, 1, 0], dtype=dtype, device=device)
    out = photometric(img, p)
    torch.testing.assert_close(out[0], (img[0] * 1.4).clamp(0, 1), **tol(dtype))
    torch.testing.assert_close(out[1], img[1] * 0.6, **tol(dtype))
    assert out[0].mean() > img[0].mean() > out[1].mean() * (img[0].mean() / img[1].mean())


def test_contrast_stretches_around_the_mean(device, dtype, gen):
    img = mid_image(gen, dtype, device)
    out = photometric(img, ph([1, 1.5, 1, 0], [1, 0.5, 1, 0], dtype=dtype, device=device))
    g_in, g_out = luma(img), luma(out)
    assert g_out[0].std().item() == pytest.approx(1.5 * g_in[0].std().item(), rel=1e-4)
    assert g_out[1].std().item() == pytest.approx(0.5 * g_in[1].std().item(), rel=1e-4)
    torch.testing.assert_close(g_out.mean(dim=(1, 2, 3)), g_in.mean(dim=(1, 2, 3)), **tol(dtype))  # pivot: the mean


def test_contrast_pivots_on_masked_mean(device, dtype, gen):
    img = rand(1, 3, 10, 10, gen=gen, dtype=dtype, device=device)
    img[..., :, 5:] *= 0.2  # the transparent half is dark: it must not pull the mean
    mask = torch.zeros(1, 1, 10, 10, dtype=dtype, device=device)
    mask[..., :, :5] = 1
    flat = photometric(img, ph([1, 0, 1, 0], dtype=dtype, device=device), mask)  # contrast 0: all the mean
    masked_mean = luma(img)[..., :, :5].mean()
    torch.testing.assert_close(flat, masked_mean.expand_as(flat), **tol(dtype))
    unmasked = photometric(img, ph([1, 0, 1, 0], dtype=dtype, device=device))
    torch.testing.assert_close(unmasked, luma(img).mean().expand_as(flat), **tol(dtype))
    assert (flat - unmasked).abs().min() > 0.05


def test_saturation(device, dtype, gen):
    img = mid_image(gen, dtype, device)
    grey = photometric(img, ph([1, 1, 0, 0], [1, 1, 0, 0], dtype=dtype, device=device))
    torch.testing.assert_close(grey, luma(img).expand_as(img), **tol(dtype))  # s = 0: greyscale
    more = photometric(img, ph([1, 1, 1.5, 0], [1, 1, 1.5, 0], dtype=dtype, device=device))
    torch.testing.assert_close(more - luma(img), 1.5 * (img - luma(img)), **tol(dtype))  # chroma x 1.5
    torch.testing.assert_close(luma(more), luma(img), **tol(dtype))  # luma unchanged


@pytest.mark.parametrize("h", [0.05, 0.1, -0.05, -0.1])
def test_hue_turns_like_torchvision(h, device):
    # moderately saturated colours, away from the gamut's faces: red, green, blue, orange, purple
    rgb = torch.tensor([[0.7, 0.3, 0.3], [0.3, 0.65, 0.35], [0.35, 0.35, 0.7], [0.7, 0.5, 0.3], [0.6, 0.35, 0.65]], dtype=torch.float64)
    img = rgb.T.reshape(1, 3, 5, 1).to(device)
    out = photometric(img, ph([1, 1, 1, h], dtype=torch.float64, device=device))
    shift = torch.remainder(KC.rgb_to_hsv(out)[:, 0] - KC.rgb_to_hsv(img)[:, 0] + math.pi, 2 * math.pi) - math.pi
    turns = shift.flatten() / (2 * math.pi)
    assert (torch.sign(turns) == math.copysign(1.0, h)).all()  # positive h: red -> yellow -> green
    assert (turns - h).abs().max() < 0.5 * abs(h)  # a linear YIQ rotation only approximates HSV
    assert 0 < out.min() and out.max() < 1
    torch.testing.assert_close(luma(out), luma(img))  # the rotation keeps luma


def test_full_hue_turn_is_identity(device, dtype, gen):
    img = rand(2, 3, 6, 6, gen=gen, dtype=dtype, device=device)
    out = photometric(img, ph([1, 1, 1, 1.0], [1, 1, 1, -0.5], dtype=dtype, device=device))
    torch.testing.assert_close(out[0], img[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1], photometric(img[1:], ph([1, 1, 1, 0.5], dtype=dtype, device=device))[0], atol=1e-5, rtol=0)


def test_grey_input_ignores_saturation_and_hue(device, dtype, gen):
    grey = rand(2, 1, 8, 8, gen=gen, dtype=dtype, device=device)
    p = ph([1.2, 0.7, 0.3, 0.25], [0.9, 1.3, 2.0, -0.4], dtype=dtype, device=device)
    neutral = p.clone()
    neutral[:, 2:] = torch.tensor([1.0, 0.0], dtype=dtype)
    out = photometric(grey, p)
    assert out.shape == grey.shape
    torch.testing.assert_close(out, photometric(grey, neutral), **tol(dtype))
    # and a grey image stored as RGB gets exactly the same brightness/contrast
    torch.testing.assert_close(photometric(grey.expand(2, 3, 8, 8), p), out.expand(2, 3, 8, 8), atol=1e-5, rtol=0)


def test_batched_equals_unbatched_and_input_untouched(device, dtype, gen):
    img = rand(3, 3, 6, 7, gen=gen, dtype=dtype, device=device)
    mask = (rand(3, 1, 6, 7, gen=gen, dtype=dtype, device=device) > 0.3).to(dtype)
    p = ph([1.1, 1.2, 0.8, 0.1], [0.9, 0.8, 1.3, -0.2], [1.0, 1.5, 1.0, 0.4], dtype=dtype, device=device)
    img0 = img.clone()
    out = photometric(img, p, mask)
    assert torch.equal(img, img0)
    for i in range(3):
        torch.testing.assert_close(out[i : i + 1], photometric(img[i : i + 1], p[i : i + 1], mask[i : i + 1]), **tol(dtype))


@pytest.mark.parametrize("channels", [1, 3])
def test_gradcheck_image_params_mask(channels, device):
    gen = torch.Generator().manual_seed(5)
    img = mid_image(gen, torch.float64, device, batch=2, channels=channels, h=4, w=5).requires_grad_()
    mask = rand(2, 1, 4, 5, gen=gen, dtype=torch.float64, device=device, low=0.2, high=1.0).requires_grad_()
    p = ph([1.05, 0.9, 1.1, 0.03], [0.95, 1.1, 0.8, -0.05], dtype=torch.float64, device=device).requires_grad_()
    out = photometric(img, p, mask)
    assert 0.05 < out.min() and out.max() < 0.95  # away from the clamps
    assert gradcheck(photometric, (img, p, mask))


@pytest.mark.parametrize(
    ("image_shape", "params_shape", "match"),
    [
        ((2, 3, 4, 4), (2, 3), r"\(B, 4\)"),
        ((2, 3, 4, 4), (3, 4), r"\(B, 4\)"),
        ((2, 3, 4, 4), (4,), r"\(B, 4\)"),
        ((2, 2, 4, 4), (2, 4), "1 or 3 channels"),
    ],
)
def test_bad_shapes(image_shape, params_shape, match):
    with pytest.raises(ValueError, match=match):
        photometric(torch.zeros(image_shape), torch.ones(params_shape))
