import json
import time

import pytest
import torch

from synthloop.data.affnist import (
    AFFNIST_RANGES,
    AFFNIST_SIZE,
    AffnistParams,
    apply_affnist,
    make_affnist,
    sample_affnist_params,
    translation_bounds,
)
from synthloop.data.mnist import load_mnist, mnist_padded
from synthloop.errors import InputError
from synthloop.functional.geometry import AFFINE_PARAM_NAMES, identity_params, warp


@pytest.fixture(scope="module")
def digits():
    x, _ = load_mnist("test")
    return x[:1000]


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_ranges_cover_every_parameter():
    assert set(AFFNIST_RANGES) == set(AFFINE_PARAM_NAMES)
    assert AFFNIST_RANGES["angle"] == (-20.0, 20.0)
    assert AFFNIST_RANGES["shear"] == (-0.2, 0.2)
    assert AFFNIST_RANGES["sx"] == AFFNIST_RANGES["sy"] == (0.8, 1.2)
    assert all(lo < hi for lo, hi in AFFNIST_RANGES.values())


def test_shapes_and_range(digits):
    out, params = make_affnist(digits, _gen(0))
    assert out.shape == (1000, 1, AFFNIST_SIZE, AFFNIST_SIZE) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    assert len(params) == 1000 and params.params.shape == (1000, 6)
    # the warp moves digits around but keeps roughly their ink (scale 0.8..1.2 changes area)
    ratio = out.sum((1, 2, 3)) / digits.sum((1, 2, 3))
    assert ratio.min() > 0.5 and ratio.max() < 1.6


def test_determinism_by_seed(digits):
    a, pa = make_affnist(digits, _gen(7))
    b, pb = make_affnist(digits, _gen(7))
    assert torch.equal(a, b) and torch.equal(pa.params, pb.params)
    c, pc = make_affnist(digits, _gen(8))
    assert not torch.equal(pa.params, pc.params)
    assert (a - c).abs().amax((1, 2, 3)).min() > 0.1  # every digit differs


def test_params_within_ranges_and_spread(digits):
    params = sample_affnist_params(digits, _gen(1))
    for name, (lo, hi) in AFFNIST_RANGES.items():
        col = params.column(name)
        assert col.min() >= lo and col.max() <= hi, name
    for name in ("angle", "shear", "sx", "sy"):
        lo, hi = AFFNIST_RANGES[name]
        col = params.column(name)
        # uniform over the range: both ends are reached and the mean is central
        assert col.min() < lo + 0.05 * (hi - lo) and col.max() > hi - 0.05 * (hi - lo), name
        assert abs(col.mean().item() - (lo + hi) / 2) < 0.05 * (hi - lo), name
    # translations actually use the frame
    assert params.column("tx").abs().max() > 8 and params.column("ty").abs().max() > 6


def test_digit_bbox_inside_frame_by_pixels(digits):
    out, params = make_affnist(digits, _gen(2))
    # render the same placement on a 64x64 canvas: the 40x40 frame is its centre window, and the
    # digit must have no ink outside it (nothing was cut off)
    pad = 12
    big = warp(digits, params.params, (AFFNIST_SIZE + 2 * pad, AFFNIST_SIZE + 2 * pad))
    outside = big.clone()
    outside[..., pad:-pad, pad:-pad] = 0
    assert outside.max() == 0
    assert torch.allclose(big[..., pad:-pad, pad:-pad], out, atol=1e-4)
    # and the frame is used: many digits reach within 2 px of an edge
    ink = out[:, 0] > 0
    rows, cols = ink.any(2), ink.any(1)
    near_edge = rows[:, :2].any(1) | rows[:, -2:].any(1) | cols[:, :2].any(1) | cols[:, -2:].any(1)
    assert near_edge.float().mean() > 0.2


def test_translation_bounds_are_tight():
    # a single lit pixel: its warped footprint may touch column 0 at tx_min and column 39 at tx_max
    img = torch.zeros(1, 1, 28, 28)
    img[0, 0, 10, 17] = 1.0
    p = identity_params(1)
    b = translation_bounds(img, p)
    for tx, edge in ((b[0, 0], 0), (b[0, 1], AFFNIST_SIZE - 1)):
        q = p.clone()
        q[0, 1] = tx
        cols = torch.nonzero(apply_affnist(img, q)[0, 0].sum(0)).flatten()
        assert edge in cols.tolist()
    # an empty image is free to go anywhere; sampling then stays within the ranges
    empty = torch.zeros(2, 1, 28, 28)
    assert torch.isinf(translation_bounds(empty, identity_params(2))).all()
    params = sample_affnist_params(empty, _gen(0))
    assert params.column("tx").abs().max() <= AFFNIST_RANGES["tx"][1]


def test_replay_from_params(digits, tmp_path):
    out, params = make_affnist(digits, _gen(3))
    assert torch.equal(apply_affnist(digits, params), out)
    path = tmp_path / "params.json"
    path.write_text(json.dumps(params.to_dict()))
    restored = AffnistParams.from_dict(json.loads(path.read_text()), file=str(path))
    assert torch.equal(restored.params, params.params)
    assert torch.equal(apply_affnist(digits, restored), out)
    # padded 40x40 sources are centred the same, so they give the same images
    assert torch.allclose(apply_affnist(mnist_padded(digits), params), out, atol=1e-4)


def test_identity_reproduces_padded_digit(digits):
    x = digits[:50]
    ident = identity_params(50)
    assert torch.allclose(apply_affnist(x, ident), mnist_padded(x), atol=1e-6)
    assert torch.allclose(apply_affnist(mnist_padded(x), ident), mnist_padded(x), atol=1e-6)


def test_from_dict_rejects_bad_input():
    with pytest.raises(InputError, match="p.json: field params"):
        AffnistParams.from_dict({"params": [[0.0, 1.0]]}, file="p.json")
    with pytest.raises(InputError, match="field names"):
        AffnistParams.from_dict({"names": ["tx", "ty"], "params": []})
    with pytest.raises(InputError, match="field params"):
        AffnistParams.from_dict({"names": list(AFFINE_PARAM_NAMES)})
    assert len(AffnistParams.from_dict({"params": []})) == 0


def test_ten_thousand_digits_fast():
    x, _ = load_mnist("test")
    make_affnist(x[:100], _gen(0))  # warm-up
    # CPU time of this (single-threaded) process, so other load on the machine does not count
    t = time.process_time()
    out, _ = make_affnist(x, _gen(0))
    elapsed = time.process_time() - t
    assert out.shape == (10_000, 1, 40, 40)
    assert elapsed < 2.0, f"{elapsed:.2f}s CPU for 10,000 digits"
