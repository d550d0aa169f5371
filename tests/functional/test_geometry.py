import math

import pytest
import torch
from functional_helpers import gradcheck, rand, tol

from synthloop.functional import (
    AFFINE_PARAM_NAMES,
    affine_matrix,
    affine_theta,
    identity_params,
    matrix_to_params,
    transformed_corners,
    warp,
)


def params(*rows, dtype=torch.float64, device="cpu") -> torch.Tensor:
    return torch.tensor(rows, dtype=dtype, device=device)


def random_params(n: int, gen: torch.Generator, dtype=torch.float64, device="cpu") -> torch.Tensor:
    """Sane placements: any angle (incl. negative), offsets, shear, non-uniform scale."""
    lows = torch.tensor([-179.0, -30.0, -30.0, -0.6, 0.3, 0.3], dtype=torch.float64)
    highs = torch.tensor([179.0, 30.0, 30.0, 0.6, 3.0, 3.0], dtype=torch.float64)
    p = lows + (highs - lows) * torch.rand(n, 6, generator=gen, dtype=torch.float64)
    return p.to(device=device, dtype=dtype)


def test_param_names_and_identity(device, dtype):
    assert AFFINE_PARAM_NAMES == ("angle", "tx", "ty", "shear", "sx", "sy")
    p = identity_params(3, dtype=dtype, device=device)
    assert p.shape == (3, 6) and p.dtype == dtype and p.device.type == device.type
    assert p.tolist() == [[0.0, 0.0, 0.0, 0.0, 1.0, 1.0]] * 3


def test_identity_reproduces_image(device, dtype, gen):
    img = rand(2, 3, 11, 14, gen=gen, dtype=dtype, device=device)
    out = warp(img, identity_params(2, dtype=dtype, device=device), (11, 14))
    torch.testing.assert_close(out, img, **tol(dtype))


def test_identity_centres_on_larger_canvas(device, dtype, gen):
    img = rand(2, 1, 28, 28, gen=gen, dtype=dtype, device=device, low=0.1)
    out = warp(img, identity_params(2, dtype=dtype, device=device), (40, 40))
    assert out.shape == (2, 1, 40, 40)
    torch.testing.assert_close(out[..., 6:34, 6:34], img, **tol(dtype))
    border = out.clone()
    border[..., 6:34, 6:34] = 0
    assert border.abs().max() == 0  # outside the source is exactly zero


def test_outside_source_is_zero(device, dtype):
    img = torch.ones(1, 2, 8, 8, dtype=dtype, device=device)
    out = warp(img, params([0.0, 100.0, 0.0, 0.0, 1.0, 1.0], dtype=dtype, device=device), (16, 16))
    assert out.abs().max() == 0


def test_params_matrix_round_trip(device, dtype, gen):
    p = random_params(64, gen, dtype=dtype, device=device)
    A = affine_matrix(p, (20, 30), (50, 70))
    assert A.shape == (64, 3, 3)
    torch.testing.assert_close(A[:, 2], torch.tensor([0.0, 0.0, 1.0], dtype=dtype, device=device).expand(64, 3))
    atol = 1e-3 if dtype == torch.float32 else 1e-9
    torch.testing.assert_close(matrix_to_params(A, (20, 30), (50, 70)), p, atol=atol, rtol=0)
    torch.testing.assert_close(matrix_to_params(A[:, :2], (20, 30), (50, 70)), p, atol=atol, rtol=0)
    assert (p[:, 0] < 0).any() and (p[:, 3] < 0).any()  # the round trip covered negative angles and shear


def test_matrix_maps_centre_to_centre_plus_offset(dtype):
    p = params([33.0, 4.5, -2.0, 0.2, 1.7, 0.6], dtype=dtype)
    A = affine_matrix(p, (10, 20), (40, 60))
    centre = A[0] @ torch.tensor([10.0, 5.0, 1.0], dtype=dtype)
    torch.testing.assert_close(centre[:2], torch.tensor([30.0 + 4.5, 20.0 - 2.0], dtype=dtype))


def test_integer_translation_moves_one_hot_exactly(device, dtype):
    img = torch.zeros(1, 1, 8, 10, dtype=dtype, device=device)
    img[0, 0, 5, 3] = 1.0
    out = warp(img, params([0.0, 2.0, -3.0, 0.0, 1.0, 1.0], dtype=dtype, device=device), (8, 10))
    expected = torch.zeros_like(img)
    expected[0, 0, 2, 5] = 1.0  # x + 2, y - 3
    torch.testing.assert_close(out, expected, **tol(dtype))


def test_rotation_90_is_counter_clockwise_like_rot90(device, dtype, gen):
    img = rand(2, 3, 8, 8, gen=gen, dtype=dtype, device=device)
    p = params([90.0, 0, 0, 0, 1, 1], [90.0, 0, 0, 0, 1, 1], dtype=dtype, device=device)
    out = warp(img, p, (8, 8))
    torch.testing.assert_close(out, torch.rot90(img, 1, dims=(-2, -1)), **tol(dtype))
    # counter-clockwise on screen: the top-right pixel ends up top-left, "right" points "up"
    one_hot = torch.zeros(1, 1, 8, 8, dtype=dtype, device=device)
    one_hot[0, 0, 0, 7] = 1.0
    moved = warp(one_hot, p[:1], (8, 8))
    assert moved[0, 0, 0, 0].item() == pytest.approx(1.0, abs=1e-5)
    right = affine_matrix(p[:1], (8, 8), (8, 8))[0, :2, :2] @ torch.tensor([1.0, 0.0], dtype=dtype, device=device)
    torch.testing.assert_close(right, torch.tensor([0.0, -1.0], dtype=dtype, device=device), atol=1e-6, rtol=0)


def test_window_equals_slice_of_full_warp(device, dtype, gen):
    img = rand(2, 3, 12, 9, gen=gen, dtype=dtype, device=device)
    p = params([25.0, 3.3, -1.7, 0.15, 1.4, 0.8], [-60.0, -5.0, 4.0, -0.2, 0.9, 1.2], dtype=dtype, device=device)
    full = warp(img, p, (30, 40))
    offset = torch.tensor([[5, 7], [11, 2]], device=device)
    win = warp(img, p, (30, 40), dst_offset=offset, window=(12, 20))
    assert win.shape == (2, 3, 12, 20)
    for i, (x0, y0) in enumerate(offset.tolist()):
        torch.testing.assert_close(win[i], full[i, :, y0 : y0 + 12, x0 : x0 + 20], **tol(dtype))
    # theta for the window is the same map composed with the window's shift
    theta = affine_theta(p, (12, 9), (30, 40), dst_offset=offset, window=(12, 20))
    assert theta.shape == (2, 2, 3)


def test_transformed_corners_follow_affine_matrix(dtype, gen):
    p = random_params(5, gen, dtype=dtype)
    A = affine_matrix(p, (6, 10), (32, 32))
    corners = transformed_corners(p, (6, 10), (32, 32))
    assert corners.shape == (5, 4, 2)
    src = torch.tensor([[0.0, 0.0, 1.0], [10.0, 0.0, 1.0], [10.0, 6.0, 1.0], [0.0, 6.0, 1.0]], dtype=dtype)
    torch.testing.assert_close(corners, (A @ src.T).transpose(1, 2)[..., :2])


@pytest.mark.parametrize("corner", range(4))
@pytest.mark.parametrize("angle", [0.0, 90.0, 180.0, -90.0])
def test_transformed_corner_is_where_corner_pixel_lands(device, dtype, corner, angle):
    # axis-aligned placements with integer offsets are exact: the bright corner pixel lands on
    # exactly one output pixel, and the transformed corner is one of that pixel's corners.
    h, w = 6, 10
    r, c = [(0, 0), (0, w - 1), (h - 1, w - 1), (h - 1, 0)][corner]
    img = torch.zeros(1, 1, h, w, dtype=dtype, device=device)
    img[0, 0, r, c] = 1.0
    p = params([angle, 3.0, -2.0, 0.0, 1.0, 1.0], dtype=dtype, device=device)
    out = warp(img, p, (24, 24))
    assert out.sum().item() == pytest.approx(1.0, abs=1e-5)
    oy, ox = divmod(int(out.flatten().argmax()), 24)
    assert out[0, 0, oy, ox].item() == pytest.approx(1.0, abs=1e-5)
    cx, cy = transformed_corners(p, (h, w), (24, 24))[0, corner].tolist()
    assert (round(cx), round(cy)) in {(ox, oy), (ox + 1, oy), (ox, oy + 1), (ox + 1, oy + 1)}
    assert abs(cx - round(cx)) < 1e-6 and abs(cy - round(cy)) < 1e-6


@pytest.mark.parametrize("corner", range(4))
def test_transformed_corner_under_rotation_and_scale(dtype, corner):
    # at scale 4 and 30 degrees the corner pixel becomes a 4x4 rotated square with a vertex at the
    # transformed corner: its centroid lies half a diagonal (2 sqrt 2) away from that corner.
    h, w = 5, 7
    r, c = [(0, 0), (0, w - 1), (h - 1, w - 1), (h - 1, 0)][corner]
    img = torch.zeros(1, 1, h, w, dtype=dtype)
    img[0, 0, r, c] = 1.0
    p = params([30.0, 1.5, -0.5, 0.0, 4.0, 4.0], dtype=dtype)
    out = warp(img, p, (64, 64))[0, 0]
    ys, xs = torch.meshgrid(torch.arange(64, dtype=dtype) + 0.5, torch.arange(64, dtype=dtype) + 0.5, indexing="ij")
    mass = out.sum()
    centroid = torch.stack([(out * xs).sum() / mass, (out * ys).sum() / mass])
    expected_centre = (affine_matrix(p, (h, w), (64, 64))[0] @ torch.tensor([c + 0.5, r + 0.5, 1.0], dtype=dtype))[:2]
    torch.testing.assert_close(centroid, expected_centre, atol=0.05, rtol=0)
    corner_xy = transformed_corners(p, (h, w), (64, 64))[0, corner]
    assert torch.linalg.norm(corner_xy - centroid).item() == pytest.approx(2 * math.sqrt(2), abs=0.1)


def test_batched_equals_unbatched(device, dtype, gen):
    img = rand(4, 3, 9, 13, gen=gen, dtype=dtype, device=device)
    p = random_params(4, gen, dtype=dtype, device=device)
    batched = warp(img, p, (21, 17))
    for i in range(4):
        torch.testing.assert_close(batched[i : i + 1], warp(img[i : i + 1], p[i : i + 1], (21, 17)), **tol(dtype))


def test_warp_does_not_modify_inputs(device, dtype, gen):
    img = rand(2, 3, 8, 8, gen=gen, dtype=dtype, device=device)
    p = random_params(2, gen, dtype=dtype, device=device)
    offset = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=dtype, device=device)
    img0, p0, offset0 = img.clone(), p.clone(), offset.clone()
    warp(img, p, (10, 10), dst_offset=offset, window=(5, 6))
    assert torch.equal(img, img0) and torch.equal(p, p0) and torch.equal(offset, offset0)


def test_float32_params_with_float64_image():
    img = torch.rand(1, 1, 6, 6, dtype=torch.float64)
    out = warp(img, identity_params(1), (6, 6))
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, img)


def test_gradcheck_image_and_params(device):
    gen = torch.Generator().manual_seed(1)
    img = rand(1, 1, 6, 6, gen=gen, dtype=torch.float64, device=device).requires_grad_()
    # generic placement: no sample point sits on a pixel boundary (bilinear kinks)
    p = params([17.0, 0.3, -0.2, 0.1, 1.1, 0.9], dtype=torch.float64, device=device).requires_grad_()
    assert gradcheck(lambda i, q: warp(i, q, (7, 7)), (img, p))


def test_gradcheck_window(device):
    gen = torch.Generator().manual_seed(2)
    img = rand(2, 1, 5, 5, gen=gen, dtype=torch.float64, device=device).requires_grad_()
    p = params([-23.0, 0.7, 0.4, -0.15, 0.8, 1.2], [41.0, -0.6, 0.2, 0.05, 1.3, 0.7], dtype=torch.float64, device=device)
    p.requires_grad_()
    offset = torch.tensor([[1, 2], [2, 1]], device=device)
    assert gradcheck(lambda i, q: warp(i, q, (9, 9), dst_offset=offset, window=(5, 6)), (img, p))


@pytest.mark.parametrize(
    ("image_shape", "params_shape", "kwargs", "match"),
    [
        ((3, 8, 8), (1, 6), {}, r"image must be \(B, C, h, w\)"),
        ((1, 1, 8, 8), (1, 5), {}, r"shape \(B, 6\)"),
        ((1, 1, 8, 8), (6,), {}, r"shape \(B, 6\)"),
        ((2, 1, 8, 8), (3, 6), {}, "batch mismatch"),
        ((1, 1, 8, 8), (1, 6), {"dst_offset": torch.zeros(1, 3)}, r"dst_offset must have shape \(1, 2\)"),
        ((1, 1, 8, 8), (1, 6), {"window": (0, 4), "dst_offset": torch.zeros(1, 2)}, "window must be two positive"),
    ],
)
def test_warp_bad_shapes(image_shape, params_shape, kwargs, match):
    with pytest.raises(ValueError, match=match):
        warp(torch.zeros(image_shape), torch.ones(params_shape), (8, 8), **kwargs)


def test_bad_sizes_and_matrices():
    with pytest.raises(ValueError, match="dst_size must be two positive"):
        warp(torch.zeros(1, 1, 4, 4), identity_params(1), (0, 4))
    with pytest.raises(ValueError, match=r"shape \(B, 6\)"):
        affine_matrix(torch.zeros(2, 7), (4, 4), (4, 4))
    with pytest.raises(ValueError, match=r"\(B, 2, 3\) or \(B, 3, 3\)"):
        matrix_to_params(torch.eye(3), (4, 4), (4, 4))
    with pytest.raises(ValueError, match=r"\(B, 2, 3\) or \(B, 3, 3\)"):
        matrix_to_params(torch.zeros(1, 3, 2), (4, 4), (4, 4))
