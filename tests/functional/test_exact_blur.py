import torch

from synthloop.functional.exact_blur import gaussian_blur_exact


def test_exact_blur_matches_the_functional_blur_and_is_batch_independent():
    from synthloop.functional.filters import gaussian_blur

    x = torch.rand(8, 3, 20, 24, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.0, 0.3, 0.8, 1.0, 1.5, 2.0, 0.5, 1.2])
    out = gaussian_blur_exact(x, sigma)
    assert torch.allclose(out, gaussian_blur(x, sigma), atol=1e-6)
    assert torch.equal(out[0], x[0])
    for i in range(8):
        assert torch.equal(gaussian_blur_exact(x[i : i + 1], sigma[i : i + 1])[0], out[i])
