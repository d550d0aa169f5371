"""Built-in assets for demos and benchmarks: MNIST digits as coloured cut-outs, and the background bank.

Each MNIST training digit becomes an RGBA cut-out: alpha is the digit's intensity and the colour
is a flat tint drawn once per digit from a generator seeded with the run's asset seed, so the same
seed always gives the same tinted digit. Digit ``d`` is category ``d + 1`` named ``"d"`` (COCO
reserves nothing for 0, but many detectors treat label 0 as background).
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
import torch

from synthloop.data.dataset import Category
from synthloop.errors import InputError
from synthloop.utils.seeding import make_generator

MNIST_CATEGORIES: list[Category] = [Category(d + 1, str(d), "digit") for d in range(10)]


def random_tints(n: int, generator: torch.Generator) -> np.ndarray:
    """``float32 (n, 3)`` vivid RGB colours: uniform hue, saturation in [0.6, 1], value in [0.75, 1]."""
    u = torch.rand(n, 3, generator=generator, dtype=torch.float64).numpy()
    hsv = np.stack([u[:, 0] * 360.0, 0.6 + 0.4 * u[:, 1], 0.75 + 0.25 * u[:, 2]], 1).astype(np.float32)
    return cv2.cvtColor(hsv[None], cv2.COLOR_HSV2RGB)[0]


@functools.lru_cache(maxsize=1)
def _mnist_uint8(split: str) -> tuple[np.ndarray, np.ndarray]:
    """``uint8 (N, 28, 28)`` digits and labels of a split, decoded once per process (read-only)."""
    from synthloop.data.mnist import load_mnist

    images, labels = load_mnist(split)  # type: ignore[arg-type]
    # load_mnist gives x / 256 with x the stored integer: recover it exactly (in place: the float
    # copy of the training set is 157 MB)
    digits = images[:, 0].mul_(256.0).round_().clamp_(0, 255).to(torch.uint8).numpy()
    del images
    labels_np = labels.numpy()
    digits.setflags(write=False)
    labels_np.setflags(write=False)
    return digits, labels_np


class MnistDigits:
    """MNIST digits as tinted cut-outs; an instance source for the scene renderer.

    Args:
        images: ``uint8 (N, 28, 28)`` or float ``(N, 1, 28, 28)`` digits (white on black).
        labels: ``(N,)`` digit labels 0..9.
        tints: ``float32 (N, 3)`` colour of each cut-out.

    ``arrays(i)`` is ``(rgb float32 (28, 28, 3), alpha float32 (28, 28))`` with rgb the flat tint;
    digits are kept as ``uint8`` (50,000 digits = 39 MB) and converted on each use (a few
    microseconds; caching them as float would take 630 MB per process).
    """

    RECENT = 256

    def __init__(self, images: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, tints: np.ndarray):
        if isinstance(images, torch.Tensor):
            images = images.detach().cpu().numpy()
        images = np.asarray(images)
        if images.ndim == 4:
            images = images[:, 0]
        if images.dtype != np.uint8:
            images = np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8)
        labels = np.asarray(labels.cpu().numpy() if isinstance(labels, torch.Tensor) else labels, dtype=np.int64)
        if images.ndim != 3 or len(images) != len(labels) or tints.shape != (len(labels), 3):
            raise InputError(f"digits {images.shape}, labels {labels.shape} and tints {tints.shape} do not match", field="instances")
        self.images = images
        self.labels = labels
        self.tints = np.asarray(tints, dtype=np.float32)
        self.categories = list(MNIST_CATEGORIES)
        self._recent: dict[int, np.ndarray] = {}

    @classmethod
    def load(cls, seed: int, *, limit: int | None = None, split: str = "train") -> "MnistDigits":
        """The MNIST ``split`` digits (the first ``limit`` of them) with tints drawn from ``seed``."""
        digits, labels = _mnist_uint8(split)
        if limit is not None:
            digits, labels = digits[:limit], labels[:limit]
        return cls(digits, labels, random_tints(len(labels), make_generator(seed, "mnist-tints")))

    def __len__(self) -> int:
        return len(self.labels)

    def category_of(self, index: int) -> int:
        return int(self.labels[index]) + 1

    def arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(rgb (28, 28, 3), alpha (28, 28))`` float32 in [0, 1] (read-only views of :meth:`rgba`)."""
        rgba = self.rgba(index)
        return rgba[..., :3], rgba[..., 3]

    def rgba(self, index: int) -> np.ndarray:
        """``float32 (28, 28, 4)``, read-only: the tint and the digit as alpha. The last
        :data:`RECENT` are kept (a scene asks for each of its digits several times; caching all
        50,000 would hold 630 MB)."""
        hit = self._recent.get(index)
        if hit is not None:
            return hit
        out = np.empty(self.images.shape[1:] + (4,), np.float32)
        out[..., :3] = self.tints[index]
        np.multiply(self.images[index], np.float32(1.0 / 255.0), out=out[..., 3])
        out.setflags(write=False)
        self._recent[index] = out
        if len(self._recent) > self.RECENT:
            del self._recent[next(iter(self._recent))]
        return out

    def tensor(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rgb Tensor[3, 28, 28], alpha Tensor[1, 28, 28])``."""
        rgba = torch.from_numpy(self.rgba(index).copy()).permute(2, 0, 1)  # a copy: the cached array is read-only
        return rgba[:3], rgba[3:]


BUILTIN_BACKGROUND_SOURCES: tuple[str, ...] = ("procedural", "photos")
