"""The differentiable batched paste (paste_batch, paste_objects_batch) and letterboxing."""

from __future__ import annotations

import pytest
import torch

from synthloop.compose.batch import letterbox, paste_artefacts_batch, paste_batch, paste_objects_batch


def _square_objects(b: int, k: int, size: int = 16, lo: int = 4, hi: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    fg = torch.rand(b, k, 3, size, size, generator=g)
    alpha = torch.zeros(b, k, 1, size, size)
    alpha[..., lo:hi, lo:hi] = 1.0
    return fg, alpha


def _params(b: int, k: int) -> torch.Tensor:
    p = torch.zeros(b, k, 6)
    p[..., 4:] = 1.0
    return p


def test_matches_sequential_paste_and_later_objects_occlude_earlier_ones():
    fg, alpha = _square_objects(2, 3)
    bg = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    p = _params(2, 3)
    p[:, 1, 1] = 20.0  # object 1 far right: overlaps nothing
    comp = paste_objects_batch(fg, alpha, bg, p, blend_mode="alpha")
    # same image as pasting one object after the other
    image = bg
    for k in range(3):
        image = paste_batch(fg[:, k], alpha[:, k], image, p[:, k]).image
    assert torch.equal(comp.image, image)
    # object 2 sits exactly on object 0: 0 is hidden, 2 fully visible; 1 is cut by the border
    assert comp.visibility[:, 0].max() == 0.0
    assert torch.allclose(comp.visibility[:, 2], torch.ones(2))
    assert torch.equal(comp.boxes[0, 2], torch.tensor([12.0, 12.0, 20.0, 20.0]))
    # object 1's square spans x 32..40 on a 32-wide canvas shifted by 20: x in 32.. -> fully outside
    assert comp.visibility[0, 1] == 0.0
    assert torch.equal(comp.boxes[0, 0], torch.zeros(4))


def test_visibility_counts_cropping_by_the_border():
    fg, alpha = _square_objects(1, 1)
    bg = torch.zeros(1, 3, 32, 32)
    p = _params(1, 1)
    p[0, 0, 1] = 12.0  # square x 24..32 -> fully inside; shift 4 more: half outside
    assert torch.allclose(paste_objects_batch(fg, alpha, bg, p).visibility, torch.ones(1, 1))
    p[0, 0, 1] = 16.0
    comp = paste_objects_batch(fg, alpha, bg, p)
    assert torch.allclose(comp.visibility, torch.full((1, 1), 0.5))
    assert torch.equal(comp.boxes[0, 0], torch.tensor([28.0, 12.0, 32.0, 20.0]))


def test_scaled_object_visibility_uses_the_affine_determinant():
    fg, alpha = _square_objects(1, 1)
    bg = torch.zeros(1, 3, 64, 64)
    p = _params(1, 1)
    p[0, 0, 4:] = 2.0
    comp = paste_objects_batch(fg, alpha, bg, p)
    assert torch.allclose(comp.visibility, torch.ones(1, 1))
    assert torch.equal(comp.boxes[0, 0], torch.tensor([24.0, 24.0, 40.0, 40.0]))


@pytest.mark.parametrize("cleanup", [False, True])
def test_image_is_differentiable_wrt_affine_and_photometric(cleanup):
    fg, alpha = _square_objects(2, 2)
    bg = torch.rand(2, 3, 32, 32)
    p = _params(2, 2)
    p[:, 1, 1] = 3.3
    p.requires_grad_(True)
    photo = torch.tensor([1.1, 0.9, 1.0, 0.0]).repeat(2, 2, 1).requires_grad_(True)
    comp = paste_objects_batch(fg, alpha, bg, p, photometric_params=photo, cleanup=cleanup, blend_mode="gaussian")
    (comp.image * torch.linspace(0, 1, 32)).sum().backward()
    assert p.grad is not None and float(p.grad[:, :, :3].abs().sum()) > 0
    assert photo.grad is not None and float(photo.grad[..., :2].abs().sum()) > 0
    assert not comp.boxes.requires_grad and not comp.visibility.requires_grad


def test_shape_errors():
    fg, alpha = _square_objects(2, 2)
    with pytest.raises(ValueError):
        paste_objects_batch(fg[:, 0], alpha, torch.zeros(2, 3, 8, 8), _params(2, 2))
    with pytest.raises(ValueError):
        paste_objects_batch(fg, alpha, torch.zeros(2, 3, 8, 8), _params(2, 3))


def test_letterbox_crops_to_alpha_keeps_aspect_and_centres():
    rgb = torch.rand(3, 30, 40)
    alpha = torch.zeros(1, 30, 40)
    alpha[:, 5:25, 10:20] = 1.0  # 20 tall, 10 wide
    out_rgb, out_alpha = letterbox(rgb, alpha, 32, fill=0.75)
    assert out_rgb.shape == (3, 32, 32) and out_alpha.shape == (1, 32, 32)
    rows = (out_alpha[0] > 0.5).any(1).nonzero().flatten()
    cols = (out_alpha[0] > 0.5).any(0).nonzero().flatten()
    assert int(rows[-1] - rows[0] + 1) == 24  # 0.75 * 32
    assert int(cols[-1] - cols[0] + 1) == 12
    assert abs((rows[0] + rows[-1]).item() / 2 - 15.5) <= 0.5 and abs((cols[0] + cols[-1]).item() / 2 - 15.5) <= 0.5
    # deterministic
    again = letterbox(rgb, alpha, 32, fill=0.75)
    assert torch.equal(again[0], out_rgb) and torch.equal(again[1], out_alpha)


def test_batched_equals_unbatched():
    fg, alpha = _square_objects(3, 2)
    bg = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    p = _params(3, 2)
    p[:, 0, 1] = torch.tensor([-5.5, 2.25, 7.0])
    p[:, 1, 0] = torch.tensor([10.0, -20.0, 33.0])
    whole = paste_objects_batch(fg, alpha, bg, p, cleanup=True, blend_mode="gaussian")
    for i in range(3):
        one = paste_objects_batch(fg[i : i + 1], alpha[i : i + 1], bg[i : i + 1], p[i : i + 1], cleanup=True, blend_mode="gaussian")
        assert torch.allclose(one.image, whole.image[i : i + 1], atol=1e-6)
        assert torch.equal(one.boxes, whole.boxes[i : i + 1]) and torch.allclose(one.visibility, whole.visibility[i : i + 1])


def test_gradcheck_wrt_affine_float64():
    g = torch.Generator().manual_seed(0)
    fg = torch.rand(1, 2, 3, 8, 8, generator=g, dtype=torch.float64)
    alpha = torch.rand(1, 2, 1, 8, 8, generator=g, dtype=torch.float64)
    bg = torch.rand(1, 3, 12, 12, generator=g, dtype=torch.float64)
    p = torch.tensor([[[7.0, 0.3, -0.4, 0.05, 1.1, 0.9], [-11.0, 1.7, 0.6, -0.1, 0.8, 1.2]]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda q: paste_objects_batch(fg, alpha, bg, q).image, (p,), eps=1e-6, atol=1e-5)


def test_paste_batch_is_differentiable_in_the_affine_params():
    g = torch.Generator().manual_seed(0)
    fg = torch.rand(2, 1, 8, 8, generator=g, dtype=torch.float64)
    bg = torch.rand(2, 1, 10, 10, generator=g, dtype=torch.float64)
    p = torch.tensor([[10.0, 0.5, -0.3, 0.1, 1.1, 0.9], [-5.0, 0.2, 0.4, -0.1, 0.9, 1.2]], dtype=torch.float64, requires_grad=True)
    f = lambda q: paste_batch(fg, fg, bg, q, blend_mode="gaussian", blend_options={"sigma": 1.0}).image
    assert torch.autograd.gradcheck(f, (p,), eps=1e-6, atol=1e-4)
    out = paste_artefacts_batch(bg, torch.ones_like(bg), fg, p)
    assert out.shape == bg.shape
