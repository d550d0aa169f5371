"""Small in-memory instance and background sources that satisfy the renderer's protocols.

Used for built-in data (MNIST digits as cut-outs), for tests, and as adapters around banks.
"""

from __future__ import annotations

from typing import Any

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
        """``(rgb (h, w, 3), alpha (h, w))`` float32 arrays (cached) for the fast renderer."""
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
    """Adapter: an :class:`~synthloop.data.instances.InstanceBank` as a renderer source."""

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
