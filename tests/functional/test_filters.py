import kornia.filters as KF
import pytest
import torch
from functional_helpers import gradcheck, rand, tol

from synthloop.functional import box_blur, gaussian_blur, motion_blur
from synthloop.functional.filters import gaussian_kernel_size


@pytest.mark.parametrize(("sigma", "size"), [(0.1, 3), (0.33, 3), (0.34, 5), (1.0, 7), (2.5, 17)])
def test_gaussian_kernel_size_covers_three_sigma(sigma, size):
    assert gaussian_kernel_size(sigma) == size


def test_gaussian_matches_kornia_reference(device, dtype, gen):
    x = rand(2, 3, 16, 17, gen=gen, dtype=dtype, device=device)
    ref = KF.gaussian_blur2d(x, (9, 9), (1.2, 1.2), border_type="replicate")
    torch.testing.assert_close(gaussian_blur(x, 1.2), ref, **tol(dtype))


def test_gaussian_per_sample_sigma_equals_single_calls(device, dtype, gen):
    # the wide sigma widens the shared kernel; the narrow sample must not notice
    x = rand(3, 2, 20, 23, gen=gen, dtype=dtype, device=device)
    sigma = torch.tensor([0.8, 3.0, 1.7], dtype=dtype, device=device)
    out = gaussian_blur(x, sigma)
    for i in range(3):
        torch.testing.assert_close(out[i : i + 1], gaussian_blur(x[i : i + 1], float(sigma[i])), **tol(dtype))
    assert not torch.allclose(out[0], out[1])


def test_gaussian_sigma_zero_passes_through(device, dtype, gen):
    x = rand(3, 1, 8, 8, gen=gen, dtype=dtype, device=device)
    assert torch.equal(gaussian_blur(x, 0.0), x)
    assert torch.equal(gaussian_blur(x, torch.zeros(3, dtype=dtype, device=device)), x)
    out = gaussian_blur(x, torch.tensor([0.0, 1.0, -1.0], dtype=dtype, device=device))
    assert torch.equal(out[0], x[0]) and torch.equal(out[2], x[2]) and not torch.equal(out[1], x[1])


def test_gaussian_preserves_constants_and_mass(gen):
    const = torch.full((1, 1, 12, 12), 0.37, dtype=torch.float64)
    torch.testing.assert_close(gaussian_blur(const, 2.0), const)
    impulse = torch.zeros(1, 1, 31, 31, dtype=torch.float64)
    impulse[..., 15, 15] = 1.0
    out = gaussian_blur(impulse, 2.0)
    assert out.sum().item() == pytest.approx(1.0, abs=1e-12)  # normalised kernel, far from the border
    assert out[0, 0, 15, 15] == out.max() and out[0, 0, 15, 15 + 7] == 0  # truncated at ceil(3 sigma) = 6


def test_gaussian_gradcheck_image_and_sigma(device):
    gen = torch.Generator().manual_seed(6)
    x = rand(2, 1, 7, 8, gen=gen, dtype=torch.float64, device=device).requires_grad_()
    sigma = torch.tensor([0.7, 1.3], dtype=torch.float64, device=device, requires_grad=True)
    assert gradcheck(gaussian_blur, (x, sigma))


def test_gaussian_bad_sigma_shape():
    with pytest.raises(ValueError, match=r"scalar or a Tensor\[2\]"):
        gaussian_blur(torch.zeros(2, 1, 4, 4), torch.ones(3))


@pytest.mark.parametrize("fn", [box_blur, lambda x, k: motion_blur(x, k, 30.0)], ids=["box", "motion"])
def test_kernel_size_one_passes_through(fn, device, dtype, gen):
    x = rand(2, 3, 8, 9, gen=gen, dtype=dtype, device=device)
    assert torch.equal(fn(x, 1), x)


def test_box_blur_is_a_mean_filter(device, dtype, gen):
    x = rand(1, 2, 10, 10, gen=gen, dtype=dtype, device=device)
    out = box_blur(x, 3)
    torch.testing.assert_close(out[..., 4, 5], x[..., 3:6, 4:7].mean(dim=(-2, -1)), **tol(dtype))
    torch.testing.assert_close(box_blur(x, 4), box_blur(x, 5))  # even sizes round up to odd
    const = torch.full_like(x, 0.6)
    torch.testing.assert_close(box_blur(const, 5), const, **tol(dtype))  # replicate border


def test_motion_blur_smears_along_its_angle(device, dtype):
    x = torch.zeros(1, 1, 15, 15, dtype=dtype, device=device)
    x[..., 7, 7] = 1.0
    horizontal = motion_blur(x, 5, 0.0)[0, 0]
    vertical = motion_blur(x, 5, 90.0)[0, 0]
    assert (horizontal[7, 5:10] > 0).all() and horizontal[6].abs().max() < 1e-6 and horizontal[8].abs().max() < 1e-6
    assert (vertical[5:10, 7] > 0).all() and vertical[:, 6].abs().max() < 1e-6
    assert horizontal.sum().item() == pytest.approx(1.0, abs=1e-5)


def test_motion_blur_per_sample_angle_equals_single_calls(device, dtype, gen):
    x = rand(3, 2, 16, 16, gen=gen, dtype=dtype, device=device)
    angle = torch.tensor([0.0, 45.0, -70.0], dtype=dtype, device=device)
    direction = torch.tensor([0.0, 0.5, -0.3], dtype=dtype, device=device)
    out = motion_blur(x, 7, angle, direction)
    for i in range(3):
        single = motion_blur(x[i : i + 1], 7, float(angle[i]), float(direction[i]))
        torch.testing.assert_close(out[i : i + 1], single, **tol(dtype))
