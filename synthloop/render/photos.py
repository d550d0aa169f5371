"""Photo-crop backgrounds of the glyph renderer (:class:`PhotoSource`)."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from synthloop.errors import InputError
from synthloop.render.config import Range


class PhotoSource:
    """Photo-crop backgrounds: photos and crop params from a
    :class:`~synthloop.data.backgrounds.BackgroundBank`, pixels from a mipmap.

    The bank resolves and validates the sources (bundled photos, folders, files) and draws each
    crop's params (``{"kind": "photo", "photo", "box", "flip"}``). Pixels are read here, not with
    ``BackgroundBank.render``, so the crop is resampled together with the 2D augmentation (one
    bilinear lookup per pixel) and the crops of a batch that share a photo and mip level are one
    ``grid_sample`` call. Each photo is decoded once into an area-averaged mip chain; the level
    closest to (not smaller than) the output sampling is read, which keeps minification below 2x
    and so avoids aliasing without a per-crop filter.

    Args:
        sources: ``BackgroundBank`` sources (``"photos"``, folders or image files).
        scale: crop area range as a fraction of the photo's area.
        cache_size: decoded photos kept in memory (least recently used are dropped).
    """

    def __init__(self, sources: Sequence[str | Path] = ("photos",), scale: Range = (0.05, 0.5), cache_size: int = 64):
        from synthloop.data.backgrounds import BackgroundBank, builtin_photos

        self.bank = BackgroundBank(list(sources), scale=(float(scale[0]), float(scale[1])))
        self._builtin = builtin_photos()
        self._cache: OrderedDict[str, list[torch.Tensor]] = OrderedDict()
        self.cache_size = int(cache_size)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_cache"] = OrderedDict()  # workers decode again rather than receive every photo
        return state

    def sample(self, n: int, size: tuple[int, int], generator: torch.Generator) -> list[dict[str, Any]]:
        """``n`` crop params for an output of ``size`` (H, W)."""
        return [dict(s) for s in self.bank.sample_params(n, size, generator).samples]

    def levels(self, key: str) -> list[torch.Tensor]:
        """The mip chain ``[Tensor[1, 3, h, w], ...]`` of photo ``key`` (level 0 = full size)."""
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        from synthloop.data.images import load_image

        path = self._builtin.get(key, Path(key))
        img = load_image(path, mode="RGB").astype(np.float32) / 255.0
        chain = []
        while True:
            chain.append(torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None])
            h, w = img.shape[:2]
            if min(h, w) < 16:
                break
            img = cv2.resize(img, (max(1, round(w / 2)), max(1, round(h / 2))), interpolation=cv2.INTER_AREA)
        self._cache[key] = chain
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return chain

    def render(self, samples: Sequence[dict[str, Any]], qx: torch.Tensor, qy: torch.Tensor) -> torch.Tensor:
        """Crops at canvas coordinates: ``qx``, ``qy`` ``Tensor[n, h, w]`` in [-1, 1] across the
        canvas (the crop box spans [-1, 1]; beyond it the photo continues, mirrored at its
        edges). Returns ``Tensor[n, 3, h, w]``."""
        n, h, w = qx.shape
        out = torch.empty(n, 3, h, w)
        groups: dict[tuple[str, int], list[int]] = {}
        for i, s in enumerate(samples):
            chain = self.levels(s["photo"])
            ph, pw = chain[0].shape[-2:]
            x0, y0, x1, y1 = (int(v) for v in s["box"])
            if not (0 <= x0 < x1 <= pw and 0 <= y0 < y1 <= ph):
                raise InputError(f"crop box {s['box']} lies outside the {pw}x{ph} photo {s['photo']}", field="background.photo.box")
            ratio = max((x1 - x0) / w, (y1 - y0) / h, 1.0)
            level = min(int(math.floor(math.log2(ratio))), len(chain) - 1)
            groups.setdefault((s["photo"], level), []).append(i)
        for (key, level), idx in groups.items():
            src = self.levels(key)[level]
            ph, pw = self.levels(key)[0].shape[-2:]
            box = torch.tensor([samples[i]["box"] for i in idx], dtype=torch.float64)
            flip = torch.tensor([bool(samples[i]["flip"]) for i in idx]).view(-1, 1, 1)
            x = torch.where(flip, -qx[idx], qx[idx])
            # crop-normalised -> photo-normalised coordinates (the same at every mip level)
            sx = ((box[:, 2] - box[:, 0]) / pw).to(torch.float32).view(-1, 1, 1)
            ox = ((box[:, 0] + box[:, 2]) / pw - 1.0).to(torch.float32).view(-1, 1, 1)
            sy = ((box[:, 3] - box[:, 1]) / ph).to(torch.float32).view(-1, 1, 1)
            oy = ((box[:, 1] + box[:, 3]) / ph - 1.0).to(torch.float32).view(-1, 1, 1)
            grid = torch.stack([x * sx + ox, qy[idx] * sy + oy], -1).reshape(1, len(idx) * h, w, 2)
            res = F.grid_sample(src, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
            out[idx] = res.view(3, len(idx), h, w).permute(1, 0, 2, 3)
        return out
