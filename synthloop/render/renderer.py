"""The glyph renderer: :class:`RenderConfig` and :class:`Renderer` (batched generation in memory).

``Renderer(config)`` rasterises its glyphs once (see :mod:`synthloop.render.glyphs`), then renders
batches in torch: ``sample(n, generator)`` draws :class:`~synthloop.render.params.RenderParams`,
``apply(params)`` turns them into images, labels and masks, and ``to_records`` / ``from_records``
round-trip params through JSON bit-exactly. Writing datasets is :mod:`synthloop.jobs.render`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field

from synthloop.config import Config, image_size_type
from synthloop.errors import InputError
from synthloop.render.apply import Rendered, apply
from synthloop.render.config import VariationConfig
from synthloop.render.glyphs import GlyphSet, find_fonts
from synthloop.render.params import RenderParams, Stage, params_from_records, params_to_records
from synthloop.render.photos import PhotoSource
from synthloop.render.sample import sample_params

TILE_FILL = 0.75
"""Fraction of a glyph tile its longer side spans (the margin leaves room for thicker strokes)."""
TILE_OVERSAMPLE = 1.5
"""Glyph tile pixels per output pixel at the nominal glyph size."""
TILE_MAX = 128
"""Largest glyph tile side. Larger outputs magnify the tile (bilinear); the cap bounds the atlas
and its cached stroke-width levels (about 14 MB per level for the 210 bundled digit glyphs)."""


class ShapeConfig(Config):
    """An extra class drawn from an image: its alpha channel (or the image as a mask)."""

    name: str = Field(min_length=1)
    file: str


class RenderConfig(VariationConfig):
    """The :class:`Renderer`'s settings: what to draw, how large, and the latent variations (the
    ``synthloop render`` job adds what to write: :class:`~synthloop.jobs.render.RenderJobConfig`)."""

    size: image_size_type(4) = Field((28, 28), description="output (H, W); an int means square")
    channels: Literal[1, 3] = 1
    glyph_size: float = Field(20.0 / 28.0, gt=0.0, le=2.0, description="glyph's longer side as a fraction of min(H, W)")
    supersample: int = Field(1, ge=1, le=8)
    fonts: list[str] = Field(default_factory=list, description="font files or folders; empty = matplotlib's bundled fonts")
    chars: str = "0123456789"
    shapes: list[ShapeConfig] = Field(default_factory=list)



@dataclass
class RenderBatch:
    """A rendered batch.

    Attributes:
        image: ``Tensor[B, C, H, W]`` in [0, 1].
        label: ``Tensor[B]`` long.
        mask: ``Tensor[B, 1, H, W]`` visible glyph coverage in [0, 1] (after occluders and crop).
        amodal: ``Tensor[B, 1, H, W]`` glyph coverage without occluders.
        params: the :class:`RenderParams` that replay the batch.
    """

    image: torch.Tensor
    label: torch.Tensor
    mask: torch.Tensor
    amodal: torch.Tensor
    params: RenderParams

    def __len__(self) -> int:
        return int(self.label.shape[0])

    @property
    def visibility(self) -> torch.Tensor:
        """``Tensor[B]``: visible share of each glyph's coverage (1 = unoccluded, uncropped)."""
        full = self.amodal.sum(dim=(1, 2, 3))
        return torch.where(full > 0, self.mask.sum(dim=(1, 2, 3)) / full.clamp_min(1e-12), torch.zeros_like(full))


class Renderer:
    """Batched glyph renderer with MrGAN's latent variations.

    Args:
        config: a :class:`RenderConfig` (defaults: MNIST-like 28x28 grey digits from the bundled
            fonts, every variation on).
    Raises:
        InputError: unreadable or missing fonts, an empty font folder, unusable shapes or photos.
    """

    def __init__(self, config: RenderConfig | None = None):
        self.config = cfg = config or RenderConfig()
        fonts = find_fonts(cfg.fonts, cfg.chars) if cfg.chars else []
        self.glyphs = GlyphSet(fonts, cfg.chars, [(s.name, s.file) for s in cfg.shapes])
        self.photos = PhotoSource(cfg.background.photo_sources, cfg.background.photo_scale) if cfg.uses_photos else None
        H, W = cfg.size
        glyph_px = cfg.glyph_size * min(H, W)
        tile = min(TILE_MAX, max(16, 4 * math.ceil(glyph_px * TILE_OVERSAMPLE / TILE_FILL / 4)))
        tiles, centers = self.glyphs.atlas(tile, TILE_FILL)
        self.stage = Stage(tiles, centers, TILE_FILL, (H, W), cfg.glyph_size, cfg.supersample)
        if cfg.stroke.enabled and cfg.stroke.p > 0:  # build the stroke-width levels up front
            lo, hi = (w * TILE_FILL * tile for w in cfg.stroke.width)
            for k in range(math.floor(min(lo, 0.0)), math.ceil(max(hi, 0.0)) + 1):
                self.stage.dilated(k)
        self._glyph_labels = self.glyphs.labels
        self._keys = [g.key for g in self.glyphs.glyphs]

    @property
    def classes(self) -> list[str]:
        return list(self.glyphs.classes)

    @property
    def num_classes(self) -> int:
        return self.glyphs.num_classes

    def sample(self, n: int, generator: torch.Generator, labels: torch.Tensor | Sequence[int] | None = None) -> RenderParams:
        """Draw the params of ``n`` renders (class-balanced labels unless ``labels`` are given)."""
        return sample_params(
            self.config,
            n,
            generator,
            glyph_labels=self._glyph_labels,
            num_classes=self.num_classes,
            channels=self.config.channels,
            size=self.config.size,
            photos=self.photos,
            labels=labels,
        )

    def apply(self, params: RenderParams) -> RenderBatch:
        """Render ``params`` (pure: the same params give bit-identical pixels)."""
        if params.channels != self.config.channels:
            raise InputError(f"params have {params.channels} colour channels, the renderer {self.config.channels}", field="channels")
        if len(params) and int(params.glyph.max()) >= len(self.glyphs):
            raise InputError(f"glyph index {int(params.glyph.max())} is out of range for {len(self.glyphs)} glyphs", field="glyph")
        out: Rendered = apply(params, self.stage, self.photos)
        return RenderBatch(image=out.image, label=params.label.clone(), mask=out.mask, amodal=out.amodal, params=params)

    def render(self, n: int, generator: torch.Generator, labels: torch.Tensor | Sequence[int] | None = None) -> RenderBatch:
        """``apply(sample(n, generator, labels))``."""
        return self.apply(self.sample(n, generator, labels))

    def to_records(self, params: RenderParams) -> list[dict[str, Any]]:
        """One JSON-ready dict per sample (see :func:`~synthloop.render.params.params_to_records`)."""
        return params_to_records(params, self._keys)

    def from_records(self, records: Sequence[dict[str, Any]]) -> RenderParams:
        """Params from :meth:`to_records` output (``InputError`` naming the bad record and field)."""

        def index(key: Any, where: str) -> int:
            if not isinstance(key, dict):
                raise InputError(f"expected a glyph mapping, got {key!r}", field=where)
            return self.glyphs.index_of(key, field=where)

        return params_from_records(records, index, self.config.channels, self.config)
