"""The NumPy/OpenCV kernels added for dataset generation agree with the torch references."""

import numpy as np
import pytest
import torch

from synthloop.compose.render import alpha_support, window_of
from synthloop.functional.color import photometric_affine
from synthloop.functional.fast import affine_matrices, blend_into, blend_np, photometric_affine_np, poisson_blend, to_uint8, warp_window
from synthloop.functional.geometry import affine_matrix


def test_affine_matrices_match_the_torch_reference_per_size():
    g = torch.Generator().manual_seed(0)
    params = torch.rand(5, 6, generator=g, dtype=torch.float64) * torch.tensor([360, 80, 60, 0.6, 3, 3], dtype=torch.float64) - torch.tensor([180, 40, 30, 0.3, 0, 0], dtype=torch.float64)
    sizes = [(28, 28), (40, 30), (7, 91), (1, 1), (300, 200)]
    ours = affine_matrices(params.numpy(), np.asarray(sizes), (480, 640))
    for k, hw in enumerate(sizes):
        ref = affine_matrix(params[k : k + 1], hw, (480, 640))[0].numpy()
        assert np.allclose(ours[k], ref, rtol=0, atol=1e-9)


def test_photometric_affine_np_matches_the_torch_reference():
    g = torch.Generator().manual_seed(1)
    p = torch.stack([0.5 + torch.rand(6, generator=g), 0.5 + torch.rand(6, generator=g), torch.rand(6, generator=g) * 2, torch.rand(6, generator=g) - 0.5], 1).double()
    mean = torch.rand(6, generator=g, dtype=torch.float64)
    M, c = photometric_affine(p, mean)
    Mn, cn = photometric_affine_np(p.numpy(), mean.numpy())
    assert np.allclose(Mn, M.numpy(), atol=1e-12) and np.allclose(cn, c.numpy(), atol=1e-12)
    Mi, ci = photometric_affine_np(np.array([[1.0, 1.0, 1.0, 0.0]]), np.array([0.3]))
    assert np.allclose(Mi[0], np.eye(3), atol=1e-12) and np.allclose(ci, 0)


@pytest.mark.parametrize("mode,opts", [("none", {}), ("alpha", {}), ("gaussian", {"sigma": 1.5}), ("box", {"kernel_size": 5}), ("motion", {"kernel_size": 7, "angle": 30.0}), ("pyramid", {"levels": 3}), ("poisson", {})])
def test_blend_into_a_canvas_view_equals_blend_np(mode, opts):
    rng = np.random.default_rng(0)
    canvas = rng.random((60, 70, 3), dtype=np.float32)
    before = canvas.copy()
    fg = rng.random((30, 40, 4), dtype=np.float32)  # RGBA: the alpha channel is ignored
    alpha = np.zeros((30, 40), np.float32)
    alpha[6:24, 8:30] = 1.0
    alpha[10:14, 12:20] = 0.5
    view = canvas[20:50, 15:55]
    ref = blend_np(np.ascontiguousarray(fg[..., :3]), alpha, view.copy(), mode, opts)
    blend_into(view, fg, alpha, mode, opts)
    assert np.abs(view - ref).max() < 1e-6
    assert view.min() >= 0.0 and view.max() <= 1.0
    outside = np.ones(canvas.shape[:2], bool)
    outside[20:50, 15:55] = False
    assert np.array_equal(canvas[outside], before[outside])  # only the view was written
    if mode in ("none", "alpha"):
        assert np.array_equal(view[6:24, 8:10], fg[6:24, 8:10, :3])  # alpha 1: the foreground, exactly
        assert np.array_equal(view[:5], before[20:25, 15:55])  # alpha 0: the background, exactly


def test_poisson_on_a_sliver_mask_pastes_it_hard():
    rng = np.random.default_rng(0)
    fg, bg = rng.random((20, 20, 3), dtype=np.float32), rng.random((20, 20, 3), dtype=np.float32)
    a = np.zeros((20, 20), np.float32)
    a[5:12, 8:10] = 1.0  # 2 px wide: OpenCV's seamlessClone raises on this
    out = poisson_blend(fg, a, bg)
    assert np.array_equal(out[5:12, 8:10], fg[5:12, 8:10]) and np.array_equal(out[:5], bg[:5])


def test_to_uint8_rounds_to_nearest():
    x = np.array([[[0.0, 1.0, 0.5 / 255], [0.4 / 255, 0.6 / 255, 254.6 / 255]]], np.float32)
    assert to_uint8(x).tolist() == [[[0, 255, 0], [0, 1, 255]]]  # 0.5 rounds to even
    img = np.random.default_rng(0).integers(0, 256, (8, 9, 3)).astype(np.uint8)
    assert np.array_equal(to_uint8(img.astype(np.float32) / 255), img)


def test_the_alpha_support_window_holds_every_nonzero_warped_pixel():
    alpha = np.zeros((28, 28), np.float32)
    alpha[6:20, 9:17] = np.random.default_rng(0).random((14, 8), dtype=np.float32) + 0.01
    box = alpha_support(alpha)
    assert box == (8, 5, 18, 21)
    for angle in (0.0, 17.0, 45.0, 133.0):
        A = affine_matrices(np.array([[angle, 3.3, -2.1, 0.1, 4.7, 3.9]]), np.array([[28, 28]]), (200, 220))[0]
        full = warp_window(alpha, A, window_of(A, (28, 28), 1))[..., 0]
        x0, y0, x1, y1 = small = window_of(A, (28, 28), 1, box)
        fx0, fy0, *_ = window_of(A, (28, 28), 1)
        inner = full[y0 - fy0 : y1 - fy0, x0 - fx0 : x1 - fx0]
        assert (full > 0).sum() == (inner > 0).sum() > 0  # nothing non-zero outside the small window
        assert (small[2] - small[0]) * (small[3] - small[1]) < full.size
