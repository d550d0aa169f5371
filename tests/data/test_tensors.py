"""Data sets as tensors."""

import numpy as np
import pytest
import torch

from synthloop.data.dataset import Dataset, ImageEntry
from synthloop.data.images import encode_png
from synthloop.data.tensors import load_images
from synthloop.errors import InputError


def _dataset(tmp_path, sizes):
    rng = np.random.default_rng(0)
    entries, pixels = [], []
    for i, (h, w) in enumerate(sizes):
        img = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
        (tmp_path / f"{i}.png").write_bytes(encode_png(img))
        entries.append(ImageEntry(i + 1, f"{i}.png", w, h, []))
        pixels.append(img)
    return Dataset(tmp_path, [], entries), pixels


def test_load_images_stacks_rgb_in_unit_range(tmp_path):
    ds, pixels = _dataset(tmp_path, [(6, 5)] * 3)
    x = load_images(ds)
    assert x.shape == (3, 3, 6, 5) and x.dtype == torch.float32 and x.is_contiguous()
    assert torch.equal(x, torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float() / 255.0)
    assert torch.equal(load_images(ds, ds.images[1:2]), x[1:2])
    assert load_images(ds, []).shape == (0, 3, 0, 0)


def test_load_images_refuses_mixed_sizes(tmp_path):
    ds, _ = _dataset(tmp_path, [(6, 5), (5, 6)])
    with pytest.raises(InputError, match="several sizes"):
        load_images(ds)
