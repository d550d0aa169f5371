import pytest
import torch

from synthloop.models import PatchDiscriminator
from synthloop.models.classifiers import conv_out


def expected_side(n):
    for stride in (2, 2, 2, 1, 1):
        n = conv_out(n, 4, stride, 2)
    return conv_out(n, 3, 2, 1)


@pytest.mark.parametrize(("channels", "size", "side"), [(1, 40, 4), (3, 128, 10)])
def test_patch_logits_shape(channels, size, side, gen):
    assert expected_side(size) == side
    d = PatchDiscriminator(in_channels=channels, width=0.25)
    out = d(torch.rand(2, channels, size, size, generator=gen))
    assert out.shape == (2, 1, side, side)
    assert torch.isfinite(out).all()


def test_layers_match_the_a2_dump():
    d = PatchDiscriminator()
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride[0]) for c in convs] == [
        (3, 64, 2), (64, 128, 2), (128, 256, 2), (256, 512, 1), (512, 1, 1)
    ]
    assert all(c.kernel_size == (4, 4) and c.padding == (2, 2) for c in convs)
    norms = [m for m in d.modules() if isinstance(m, torch.nn.InstanceNorm2d)]
    assert len(norms) == 3 and not any(n.affine or n.track_running_stats for n in norms)
    pool = d[-1]
    assert isinstance(pool, torch.nn.AvgPool2d) and (pool.kernel_size, pool.stride, pool.padding) == (3, 2, 1)
    # conv parameters only: InstanceNorm(affine=False) adds none
    assert sum(p.numel() for p in d.parameters()) == sum(c.weight.numel() + c.bias.numel() for c in convs)


def test_width_multiplier_shrinks_channels():
    d = PatchDiscriminator(in_channels=1, width=0.25)
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 32, 64, 128, 1]
    with pytest.raises(ValueError, match="width"):
        PatchDiscriminator(width=0)


def test_init_is_normal_with_std_002():
    d = PatchDiscriminator()
    w = d[3][0].weight  # 256 -> 512 conv: 2M samples
    assert abs(w.mean().item()) < 1e-3
    assert w.std().item() == pytest.approx(0.02, rel=0.02)
    assert all((m.bias == 0).all() for m in d.modules() if isinstance(m, torch.nn.Conv2d))
    assert PatchDiscriminator(init_std=0.1)[3][0].weight.std().item() == pytest.approx(0.1, rel=0.02)
