"""Data sets as tensors: the images of a :class:`~synthloop.data.dataset.Dataset` as one batch."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from synthloop.data.dataset import Dataset, ImageEntry
from synthloop.data.images import load_image
from synthloop.errors import InputError


def load_images(dataset: Dataset, entries: Sequence[ImageEntry] | None = None) -> torch.Tensor:
    """The images of ``dataset`` (or of ``entries``) as ``Tensor[N, 3, H, W]`` float32 in [0, 1];
    they must all have one size."""
    entries = list(dataset.images if entries is None else entries)
    if not entries:
        return torch.empty(0, 3, 0, 0)
    sizes = {(im.height, im.width) for im in entries}
    if len(sizes) != 1:
        raise InputError(f"images of several sizes {sorted(sizes)} cannot be stacked", field="images")
    arrays = [load_image(dataset.image_path(im), mode="RGB") for im in entries]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous().float().div_(255.0)
