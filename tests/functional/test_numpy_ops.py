"""The NumPy/OpenCV kernels used for dataset generation agree with the torch references."""

import numpy as np
import torch

from synthloop.functional.color import photometric_affine
from synthloop.functional.geometry import affine_matrix, warp
from synthloop.functional.numpy_ops import affine_matrices, photometric_affine_np, poisson_blend, to_uint8, warp_window


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


def test_warp_window_matches_spatial_transformer():
    g = torch.Generator().manual_seed(0)
    src = torch.rand(1, 1, 20, 16, generator=g)
    p = torch.tensor([[17.0, 3.0, -2.0, 0.1, 1.3, 0.9]])
    ref = warp(src, p, (40, 50))[0, 0].numpy()
    A = affine_matrix(p.double(), (20, 16), (40, 50))[0].numpy()
    fast = warp_window(np.ascontiguousarray(src[0, 0].numpy()), A, (0, 0, 50, 40))[..., 0]
    assert np.abs(fast - ref)[2:-2, 2:-2].max() < 0.05  # OpenCV uses 1/32-pixel interpolation weights
