import math

import pytest
import torch
import torch.nn.functional as F

from synthloop.errors import InputError
from synthloop.functional.geometry import AFFINE_PARAM_NAMES, warp
from synthloop.models import (
    PHOTOMETRIC_HEAD_NAMES,
    AffineHead,
    MNISTClassifier,
    MNISTSynthesizer,
    ParamRanges,
    PhotometricRanges,
    SceneSynthesizer,
    freeze,
    to_color_params,
)


def bounds(ranges):
    lo, hi = ranges.bounds()
    return torch.tensor(lo), torch.tensor(hi)


def assert_in_ranges(params, ranges):
    lo, hi = bounds(ranges)
    assert torch.isfinite(params).all()
    assert (params >= lo).all() and (params <= hi).all(), (params.amin(0), params.amax(0))


def digits(n, gen):
    """MNIST-like 28x28 strokes padded by 6 px to 40x40 (TERSE A.1), ``(n, 1, 40, 40)``."""
    img = torch.zeros(n, 1, 40, 40)
    for i in range(n):
        r, c = torch.randint(10, 16, (2,), generator=gen).tolist()
        img[i, 0, r : r + 14, c : c + 3] = 1.0  # vertical bar
        img[i, 0, r : r + 3, c : c + 9 + i % 4] = 1.0  # top bar of varying length
    return img


# ---------------------------------------------------------------- ranges and head


def test_param_range_field_order_matches_geometry():
    assert ParamRanges().names() == AFFINE_PARAM_NAMES
    assert PhotometricRanges().names() == PHOTOMETRIC_HEAD_NAMES


@pytest.mark.parametrize("name", AFFINE_PARAM_NAMES)
def test_min_above_max_names_the_param(name):
    with pytest.raises(InputError, match=rf"'{name}'.*min 2\.0 > max 1\.0") as err:
        ParamRanges(**{name: (2.0, 1.0)})
    assert err.value.field == name
    assert isinstance(err.value, ValueError)


def test_bad_ranges_are_rejected():
    with pytest.raises(InputError, match="finite"):
        PhotometricRanges(brightness=(0.5, math.inf))
    with pytest.raises(InputError, match="pair"):
        ParamRanges(angle=(1.0,))
    with pytest.raises(InputError, match="unknown parameter 'rotation'; valid: angle, tx"):
        ParamRanges.from_dict({"rotation": (0, 1)})
    r = ParamRanges.from_dict({"angle": [-5, 5]})
    assert r.angle == (-5.0, 5.0) and r.sx == ParamRanges().sx
    assert ParamRanges.from_dict(r.to_dict()) == r


def test_head_maps_zero_to_midpoint_and_saturates_exactly():
    ranges = ParamRanges(angle=(-30.0, 10.0), tx=(-0.1, 0.3), shear=(0.7, 0.7))
    head = AffineHead(ranges)
    lo, hi = bounds(ranges)
    mid = head(torch.zeros(1, 6))["params"][0]
    torch.testing.assert_close(mid, (lo + hi) / 2)
    raw = torch.tensor([[1e4] * 6, [-1e4] * 6, [math.inf] * 6, [-math.inf] * 6, [30.0] * 6])
    out = head(raw)["params"]
    assert torch.equal(out[0], hi) and torch.equal(out[2], hi)
    assert torch.equal(out[1], lo) and torch.equal(out[3], lo)
    assert_in_ranges(out, ranges)
    assert (out[:, 3] == torch.tensor(0.7)).all()  # degenerate range: the constant


def test_head_photometric_outputs_and_width_check():
    head = AffineHead(ParamRanges(), PhotometricRanges(brightness=(0.5, 1.5), contrast=(1.0, 2.0)))
    assert head.n_outputs == 8
    out = head(torch.zeros(2, 3, 8))
    assert out["params"].shape == (2, 3, 6) and out["photometric"].shape == (2, 3, 2)
    torch.testing.assert_close(out["photometric"], torch.tensor([1.0, 1.5]).expand(2, 3, 2))
    with pytest.raises(ValueError, match="expects 8 raw outputs"):
        head(torch.zeros(2, 6))
    assert "photometric" not in AffineHead()(torch.zeros(1, 6))


def test_to_color_params():
    out = to_color_params(torch.tensor([[[0.8, 1.2]]]))
    assert torch.equal(out, torch.tensor([[[0.8, 1.2, 1.0, 0.0]]]))


# ---------------------------------------------------------------- MNIST synthesizer


def test_mnist_synthesizer_shapes_and_dump_arithmetic(gen):
    s = MNISTSynthesizer(photometric=PhotometricRanges())
    assert s.flat_features == 1620 and s.regressor[0].in_features == 1620  # A.1: Linear(1620 -> 50)
    assert s.features[0].in_channels == 40  # 20 fg + 20 bg channels
    out = s(torch.rand(3, 1, 40, 40, generator=gen))
    assert set(out) == {"params", "raw", "photometric"}
    assert out["params"].shape == (3, 6) and out["raw"].shape == (3, 8) and out["photometric"].shape == (3, 2)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("scale", [1.0, 1e4, -1e4])
def test_mnist_synthesizer_params_inside_ranges(mode, scale, gen):
    ranges = ParamRanges(angle=(-45.0, 45.0), tx=(-3.0, 5.0), sx=(1.0, 1.0))
    s = MNISTSynthesizer(ranges=ranges)
    getattr(s, mode)()
    x = torch.rand(16, 1, 40, 40, generator=gen) * scale
    params = s(x, torch.rand(16, 1, 40, 40, generator=gen) * scale)["params"]
    assert_in_ranges(params, ranges)
    assert (params[:, 4] == 1.0).all()


def test_missing_background_is_black(gen):
    s = MNISTSynthesizer().eval()
    x = digits(4, gen)
    torch.testing.assert_close(s(x)["params"], s(x, torch.zeros_like(x))["params"], rtol=0, atol=0)
    assert not torch.allclose(s(x)["params"], s(x, torch.rand(4, 1, 40, 40, generator=gen))["params"])


def test_dropout_gives_different_transforms_for_the_same_digit(gen, fixed_dropout):
    s = MNISTSynthesizer().train()
    x = digits(1, gen).expand(8, 1, 40, 40)
    params = s(x)["params"]
    assert params.std(0).min() > 0  # same digit, 8 different placements


def test_noise_input(gen):
    s = MNISTSynthesizer(noise_dim=4).eval()
    assert s.regressor[0].in_features == 1620 + 4
    x = digits(2, gen).repeat(2, 1, 1, 1)
    with pytest.raises(ValueError, match="noise_dim=4"):
        s(x)
    with pytest.raises(ValueError, match=r"shape \(4, 4\)"):
        s(x, noise=torch.zeros(4, 3))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a, b = s(x, generator=g1), s(x, generator=g2)
    assert torch.equal(a["noise"], b["noise"]) and torch.equal(a["params"], b["params"])
    replay = s(x, noise=a["noise"])
    assert torch.equal(replay["params"], a["params"])
    # the same digits with different noise get different placements
    assert not torch.allclose(a["params"][:2], a["params"][2:])
    with pytest.raises(ValueError, match="noise_dim=0"):
        MNISTSynthesizer()(x, noise=torch.zeros(4, 4))


def test_mnist_synthesizer_rejects_bad_inputs():
    s = MNISTSynthesizer()
    with pytest.raises(ValueError, match="40x40"):
        s(torch.rand(2, 1, 28, 28))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        s(torch.rand(2, 3, 40, 40))
    with pytest.raises(ValueError, match="batch mismatch"):
        s(torch.rand(2, 1, 40, 40), torch.rand(3, 1, 40, 40))
    with pytest.raises(ValueError, match="too small"):
        MNISTSynthesizer(input_size=(20, 20))


@pytest.fixture
def fixed_dropout():
    """Dropout draws from torch's global generator: pin it inside the test, restore it after."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        yield


def test_gradient_flows_from_classifier_through_warp_into_every_parameter(gen, fixed_dropout):
    s = MNISTSynthesizer().train()
    target = MNISTClassifier()
    x = digits(8, gen)
    labels = torch.randint(0, 10, (8,), generator=gen)
    opt = torch.optim.Adam(s.parameters(), lr=1e-3)
    before = {n: p.detach().clone() for n, p in s.named_parameters()}
    with freeze(target):
        params = s(x)["params"]
        composite = warp(x, params, (40, 40))
        loss = -F.cross_entropy(target(composite), labels)  # S maximises T's loss
        opt.zero_grad()
        loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is None for p in target.parameters())
    grads = {n: p.grad for n, p in s.named_parameters()}
    missing = [n for n, g in grads.items() if g is None or not torch.isfinite(g).all()]
    assert not missing
    assert sum(int((g != 0).any()) for g in grads.values()) >= 0.9 * len(grads)
    opt.step()
    changed = [n for n, p in s.named_parameters() if not torch.equal(p, before[n])]
    nonzero = [n for n, g in grads.items() if (g != 0).any()]
    assert set(nonzero) <= set(changed) and "regressor.8.weight" in changed
    assert all(torch.isfinite(p).all() for p in s.parameters())


# ---------------------------------------------------------------- scene synthesizer


SMALL = dict(channels=(8, 16), branch_channels=16, input_size=(32, 32))


def test_scene_synthesizer_shapes_single_and_multi_object(gen):
    s = SceneSynthesizer(**SMALL)
    out = s(torch.rand(2, 4, 32, 32, generator=gen), torch.rand(2, 3, 48, 64, generator=gen))
    assert out["params"].shape == (2, 1, 6) and out["raw"].shape == (2, 1, 6)
    s3 = SceneSynthesizer(num_objects=3, photometric=PhotometricRanges(), **SMALL)
    assert s3.features[1].in_channels == 20 * 4
    out = s3(torch.rand(2, 3, 4, 20, 24, generator=gen), torch.rand(2, 3, 32, 32, generator=gen))
    assert out["params"].shape == (2, 3, 6) and out["raw"].shape == (2, 3, 8) and out["photometric"].shape == (2, 3, 2)


def test_scene_flatten_follows_the_paper_arithmetic():
    # A.2: 224x224 through VGG's five stages is 7x7, 1x1 after the branches -> Linear(64 -> 128)
    s = SceneSynthesizer(channels=(4, 4, 4, 4, 4), branch_channels=4, input_size=(224, 224))
    assert s.flat_features == 64 and s.regressor[0].in_features == 64
    with pytest.raises(ValueError, match="too small"):
        SceneSynthesizer(channels=(4, 4, 4, 4, 4), input_size=(200, 200))


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_scene_params_inside_ranges(mode, gen):
    ranges = ParamRanges(tx=(-100.0, 100.0), ty=(-50.0, 0.0), sx=(0.2, 2.0), sy=(0.2, 2.0))
    photo = PhotometricRanges(brightness=(0.9, 1.1))
    s = getattr(SceneSynthesizer(ranges=ranges, photometric=photo, num_objects=2, **SMALL), mode)()
    for scale in (1.0, 1e4):
        out = s(torch.rand(4, 2, 4, 32, 32, generator=gen) * scale, torch.rand(4, 3, 32, 32, generator=gen) * scale)
        assert_in_ranges(out["params"].reshape(-1, 6), ranges)
        assert_in_ranges(out["photometric"].reshape(-1, 2), photo)


def test_scene_output_depends_on_background_and_alpha(gen):
    s = SceneSynthesizer(dropout=0.0, **SMALL)
    fg = torch.rand(2, 4, 32, 32, generator=gen)
    bg = torch.rand(2, 3, 32, 32, generator=gen)
    for m in s.modules():  # calibrate BatchNorm statistics: exact averages over a few batches
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
    with torch.no_grad():
        for _ in range(5):
            s(torch.rand(8, 4, 32, 32, generator=gen), torch.rand(8, 3, 32, 32, generator=gen))
    s.eval()
    base = s(fg, bg)["raw"]
    assert not torch.allclose(base, s(fg, torch.rand(2, 3, 32, 32, generator=gen))["raw"], rtol=1e-3, atol=1e-4)
    hidden = fg.clone()
    hidden[:, 3] = 0.0  # fully transparent cut-out: its colours must not matter
    recoloured = hidden.clone()
    recoloured[:, :3] = torch.rand(2, 3, 32, 32, generator=gen)
    torch.testing.assert_close(s(hidden, bg)["raw"], s(recoloured, bg)["raw"])
    assert not torch.allclose(s(hidden, bg)["raw"], base, rtol=1e-3, atol=1e-4)


def test_scene_synthesizer_rejects_bad_inputs():
    s = SceneSynthesizer(num_objects=2, **SMALL)
    with pytest.raises(ValueError, match=r"RGBA \(B, 2, 4, h, w\)"):
        s(torch.rand(2, 4, 32, 32), torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match="batch mismatch"):
        s(torch.rand(2, 2, 4, 32, 32), torch.rand(3, 3, 32, 32))
    with pytest.raises(ValueError, match="num_objects"):
        SceneSynthesizer(num_objects=0)


def test_init_xavier_gain():
    s = MNISTSynthesizer(init_gain=0.4)
    for m in s.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(m.weight)
            bound = 0.4 * math.sqrt(6.0 / (fan_in + fan_out))
            assert m.weight.abs().max() <= bound and m.weight.abs().max() > 0.8 * bound
            assert (m.bias == 0).all()
    head = s.regressor[8]
    assert head.weight.abs().max() < MNISTSynthesizer(init_gain=1.0).regressor[8].weight.abs().max()
