"""Small in-memory instance and background sources that satisfy the compositor's protocols
(:mod:`synthloop.compose.apply`).

Used for built-in data (MNIST digits as cut-outs), for tests, and as adapters around banks.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

import cv2
import numpy as np
import torch

from synthloop.errors import InputError


class TensorInstances:
    """Cut-outs held as tensors: ``rgbs[i]`` ``(3, h, w)``, ``alphas[i]`` ``(1, h, w)`` in [0, 1]."""

    def __init__(self, rgbs: list[torch.Tensor] | torch.Tensor, alphas: list[torch.Tensor] | torch.Tensor, category_ids: list[int] | torch.Tensor):
        self.rgbs = list(rgbs)
        self.alphas = list(alphas)
        self.category_ids = [int(c) for c in category_ids]
        if not (len(self.rgbs) == len(self.alphas) == len(self.category_ids)):
            raise InputError(f"rgbs ({len(self.rgbs)}), alphas ({len(self.alphas)}) and category_ids ({len(self.category_ids)}) differ in length")
        for i, (r, a) in enumerate(zip(self.rgbs, self.alphas)):
            if r.ndim != 3 or a.ndim != 3 or a.shape[0] != 1 or r.shape[-2:] != a.shape[-2:]:
                raise InputError(f"instance {i}: rgb {tuple(r.shape)} and alpha {tuple(a.shape)} do not match", field=f"instances[{i}]")
        self._arrays: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.rgbs)

    def tensor(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.rgbs[index], self.alphas[index]

    def arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(rgb (h, w, 3), alpha (h, w))`` float32 arrays (cached) for the NumPy compositor."""
        hit = self._arrays.get(index)
        if hit is None:
            rgb, alpha = self.rgbs[index], self.alphas[index]
            if rgb.shape[0] == 1:
                rgb = rgb.expand(3, -1, -1)
            hit = (np.ascontiguousarray(rgb.permute(1, 2, 0).numpy(), dtype=np.float32), np.ascontiguousarray(alpha[0].numpy(), dtype=np.float32))
            self._arrays[index] = hit
        return hit

    def category_of(self, index: int) -> int:
        return self.category_ids[index]


class BankInstances:
    """Adapter: an :class:`~synthloop.data.instances.InstanceBank` as a compositor source."""

    def __init__(self, bank: Any):
        self.bank = bank
        self._arrays: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.bank)

    def tensor(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.bank.tensor(index)

    def arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        hit = self._arrays.get(index)
        if hit is None:
            inst = self.bank[index]
            hit = (np.ascontiguousarray(inst.rgb, dtype=np.float32) / 255.0, np.ascontiguousarray(inst.alpha, dtype=np.float32))
            self._arrays[index] = hit
        return hit

    def category_of(self, index: int) -> int:
        return int(self.bank[index].category_id)


class SolidBackgrounds:
    """Plain backgrounds of a fixed colour (e.g. black for AffNIST-style digits)."""

    def __init__(self, color: tuple[float, float, float] = (0.0, 0.0, 0.0)):
        self.color = tuple(float(c) for c in color)

    def sample_one(self, size: tuple[int, int], generator: torch.Generator) -> dict[str, Any]:
        return {"kind": "solid", "color": list(self.color)}

    def render_one(self, params: dict[str, Any], size: tuple[int, int]) -> np.ndarray:
        out = np.empty((int(size[0]), int(size[1]), 3), np.float32)
        out[:] = np.asarray(params["color"], np.float32)
        return out


class PooledBackgrounds:
    """A pool of ``pool`` backgrounds rendered once by another background source and reused.

    Rendering a background from a bank (procedural textures, or a photo crop resized with
    antialiasing) takes 5-40 ms at 640x480, far more than compositing a scene. A generator that
    writes many images per background can instead draw from a fixed pool, as Cut-Paste-Learn draws
    from a fixed set of background photos: entry ``k``'s params are drawn once from a generator
    seeded with ``(seed, k, H, W)``; an image picks an entry and a horizontal flip.

    Per-image params: ``{"kind": "pooled", "index": k, "flip": bool, "source": <the wrapped
    source's params>}``; rendering depends only on ``source`` and ``flip``, so a scene replays
    from its params alone. Rendered entries are kept as ``uint8 (H, W, 3)`` (quantised to 8 bits,
    as the written images are; 0.9 MB each at 640x480), at most ``pool`` of them.
    """

    def __init__(self, source: Any, pool: int, seed: int):
        if int(pool) < 1:
            raise InputError(f"background pool size must be at least 1, got {pool}", field="backgrounds.pool")
        self.source = source
        self.pool = int(pool)
        self.seed = int(seed)
        self._params: dict[tuple[int, int, int], dict[str, Any]] = {}
        self._rendered: OrderedDict[str, np.ndarray] = OrderedDict()

    def entry(self, index: int, size: tuple[int, int]) -> dict[str, Any]:
        """The wrapped source's params of pool entry ``index`` at ``size`` (H, W)."""
        key = (int(index), int(size[0]), int(size[1]))
        hit = self._params.get(key)
        if hit is None:
            from synthloop.utils.seeding import make_generator

            hit = self._params[key] = self.source.sample_one(tuple(key[1:]), make_generator(self.seed, "background-pool", *key))
        return hit

    def sample_one(self, size: tuple[int, int], generator: torch.Generator) -> dict[str, Any]:
        index = int(torch.randint(0, self.pool, (), generator=generator))
        flip = bool(torch.rand((), generator=generator) < 0.5)
        return {"kind": "pooled", "index": index, "flip": flip, "source": self.entry(index, size)}

    def render_one(self, params: dict[str, Any], size: tuple[int, int]) -> np.ndarray:
        """``uint8 (H, W, 3)`` (read-only; the compositor reads uint8 backgrounds as value / 255)."""
        if params.get("kind") != "pooled" or "source" not in params:
            raise InputError(f"not a pooled background: {params!r}", field="background")
        H, W = int(size[0]), int(size[1])
        key = json.dumps([params["source"], H, W], sort_keys=True)
        img = self._rendered.get(key)
        if img is None:
            rendered = np.asarray(self.source.render_one(params["source"], (H, W)))
            img = rendered if rendered.dtype == np.uint8 else cv2.convertScaleAbs(np.clip(rendered, 0.0, 1.0).astype(np.float32), alpha=255.0)
            img.setflags(write=False)
            self._rendered[key] = img
            if len(self._rendered) > self.pool:
                self._rendered.popitem(last=False)
        else:
            self._rendered.move_to_end(key)
        return cv2.flip(img, 1) if params.get("flip") else img

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_rendered"] = OrderedDict()  # each process renders its own entries
        return state
